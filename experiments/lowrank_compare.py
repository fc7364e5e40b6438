"""lowrank-compare: error and time vs rank of four low-rank approximations on two real matrices.

Matrices:

* ``digits``: the embedded digits data matrix, ``(1797, 64)``, pixel levels / 16;
* ``weight``: the hidden-to-hidden kernel ``Dense_1/kernel`` ``(width, width)`` of a
  small digits MLP (64 → width → width → 10) trained here for ``steps`` Adam
  steps by :func:`jaxlab.train.train` in ``workdir/mlp`` (resumable; seconds on
  a CPU; the trained test accuracy is reported).

Methods, each at every rank ``k`` in ``ranks``:

* ``tsvd`` — :func:`jaxlab.linalg.truncated_svd` (the Eckart–Young optimum);
* ``rsvd`` — :func:`jaxlab.linalg.randomized_svd` (``oversample``, ``power_iters``);
* ``id`` — :func:`jaxlab.linalg.interpolative` (``k`` actual columns);
* ``cr`` — :func:`jaxlab.linalg.cr_approx`, which approximates a *product*, not a
  matrix: it estimates the Gram matrix ``M^T M`` from ``k`` sampled rows of ``M``.

Two errors (relative Frobenius): ``matrix_error = |M - M_k| / |M|`` for the three
factorizations, and ``gram_error = |M^T M - approx| / |M^T M|`` for all four, the
factorizations using ``M_k^T M_k``. For the random methods the errors are
averaged over ``repeats`` keys. Times are the fastest of ``repeats`` calls of the
jitted function (compilation excluded; the minimum is the least sensitive to
other load on the machine), in milliseconds, including forming ``M_k``.

On a CPU shared with other processes, multi-threaded OpenBLAS (which JAX's CPU
SVD and QR call) can spin and make a small SVD many times slower (``docs/results.md``);
run with ``OPENBLAS_NUM_THREADS=1`` for meaningful times there. The errors do not
depend on it.

Outputs: ``errors_vs_rank.png``, ``time_vs_rank.png``, ``table.md``, ``curves.json``
(every figure), ``results.json`` (flat: ``{matrix}_{method}_rank{k}_{error|gram_error|ms}``).

References:
    Halko, Martinsson & Tropp, SIAM Review 2011; Drineas, Kannan & Mahoney,
    SIAM J. Comput. 2006; Cheng, Gimbutas, Martinsson & Rokhlin, SIAM J. Sci.
    Comput. 2005.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.figure import Figure

from jaxlab.data import digits_split, load_digits
from jaxlab.linalg import cr_approx, interpolative, randomized_svd, truncated_svd
from jaxlab.nn import ClassifierMLP
from jaxlab.tasks import Classifier
from jaxlab.train import Experiment, TrainConfig, named_key, save_figure, train, write_json_atomic, write_text_atomic

METHODS = ("tsvd", "rsvd", "id", "cr")
LABELS = {"tsvd": "truncated SVD", "rsvd": "randomized SVD", "id": "interpolative (pivoted QR)", "cr": "CR sampling"}


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    """lowrank-compare configuration (``steps``, ``batch_size``, ``learning_rate``, ``seed`` train the MLP).

    Attributes:
      ranks: ranks ``k`` to evaluate (each must be <= min of both matrices' sides).
      width: hidden width of the MLP whose ``Dense_1`` kernel is the second matrix.
      oversample, power_iters: :func:`jaxlab.linalg.randomized_svd` settings.
      repeats: keys per random method (errors averaged) and timed calls per method (fastest kept).
    """

    steps: int = 300
    batch_size: int = 128
    learning_rate: float = 3e-3
    warmup_steps: int = 0
    ranks: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    width: int = 128
    oversample: int = 10
    power_iters: int = 2
    repeats: int = 5

    NONNEGATIVE: ClassVar[frozenset[str]] = TrainConfig.NONNEGATIVE | {"oversample", "power_iters"}

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("width", "repeats"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("oversample", "power_iters"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an int >= 0, got {getattr(self, name)!r}")
        limit = min(64, self.width)
        if not self.ranks or any(not isinstance(k, int) or not 1 <= k <= limit for k in self.ranks):
            raise ValueError(f"ranks must be non-empty ints in [1, min(64, width) = {limit}], got {self.ranks!r}")


def train_weight(config: Config, workdir: Path) -> tuple[np.ndarray, float]:
    """Trains the MLP with Adam on the digits train split (in ``workdir/mlp``, resumable); returns ``Dense_1/kernel`` and test accuracy."""
    split = digits_split(seed=0)
    scale = lambda im: im.reshape(len(im), -1).astype(np.float32) / 8.0 - 1.0
    x, y = scale(split["train_images"]), np.asarray(split["train_labels"])
    net = ClassifierMLP(config.width)  # the lora-compare network (64 → width → width → 10)
    keys = jax.random.split(named_key(config.seed, "batches"), config.steps)
    choose = jax.vmap(lambda key: jax.random.choice(key, x.shape[0], (config.batch_size,), replace=False))
    indices = np.asarray(jax.jit(choose)(keys))  # (steps, batch), drawn once rather than one device call per step

    def batches(step: int) -> dict[str, np.ndarray]:
        return {"x": x[indices[step]], "y": y[indices[step]]}

    state = train(Classifier(apply_fn=net.apply, init_fn=net.init), optax.adam(config.learning_rate), batches, config, Path(workdir) / "mlp")
    params = jax.device_get(state.params)
    logits = net.apply(params, scale(split["test_images"]))
    accuracy = float(jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(split["test_labels"])))
    return np.asarray(params["params"]["Dense_1"]["kernel"]), accuracy


def approximations(k: int, config: Config):
    """Jitted ``(m, key) -> (M_k, Gram approximation)`` for every method at rank ``k`` (``M_k = 0`` for CR)."""

    def tsvd(m, key):
        u, s, vh = truncated_svd(m, k)
        return (u * s) @ vh

    def rsvd(m, key):
        u, s, vh = randomized_svd(m, k, key=key, oversample=config.oversample, power_iters=config.power_iters)
        return (u * s) @ vh

    def id_(m, key):
        idx, proj = interpolative(m, k)
        return m[:, idx] @ proj

    def with_gram(factorize):
        def fn(m, key):
            mk = factorize(m, key)
            return mk, mk.T @ mk

        return jax.jit(fn)

    def cr(m, key):
        c, r = cr_approx(m.T, m, k, key=key)
        return jnp.zeros_like(m), c @ r

    return {"tsvd": with_gram(tsvd), "rsvd": with_gram(rsvd), "id": with_gram(id_), "cr": jax.jit(cr)}


def evaluate(name: str, m: np.ndarray, config: Config) -> list[dict[str, Any]]:
    """Errors and times of every method and rank on one matrix."""
    m = jnp.asarray(m, jnp.float32)
    norm, gram = float(jnp.linalg.norm(m)), m.T @ m
    gram_norm = float(jnp.linalg.norm(gram))
    rows = []
    for k in config.ranks:
        for method, fn in approximations(k, config).items():
            keys = [named_key(config.seed, f"{name}/{method}/{k}/{i}") for i in range(config.repeats)]
            jax.block_until_ready(fn(m, keys[0]))  # compile
            errors, gram_errors, times = [], [], []
            for key in keys:
                start = time.perf_counter()
                mk, approx = jax.block_until_ready(fn(m, key))
                times.append(1e3 * (time.perf_counter() - start))
                errors.append(float(jnp.linalg.norm(m - mk)) / norm)
                gram_errors.append(float(jnp.linalg.norm(gram - approx)) / gram_norm)
            rows.append(
                {
                    "matrix": name,
                    "method": method,
                    "rank": k,
                    "error": None if method == "cr" else statistics.fmean(errors),
                    "gram_error": statistics.fmean(gram_errors),
                    "ms": min(times),
                }
            )
    return rows


def plot(rows: list[dict[str, Any]], matrices: list[str], path: Path, *, field: str, ylabel: str) -> None:
    fig = Figure(figsize=(10, 3.6))
    axes = fig.subplots(1, len(matrices) * (2 if field == "error" else 1), squeeze=False)
    panels = [(mat, f) for mat in matrices for f in (("error", "gram_error") if field == "error" else (field,))]
    for ax, (mat, f) in zip(axes[0], panels):
        for color, method in zip(("C0", "C1", "C2", "C3"), METHODS):
            pts = [(r["rank"], r[f]) for r in rows if r["matrix"] == mat and r["method"] == method and r[f] is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", color=color, label=LABELS[method])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("rank k")
        ax.set_ylabel({"error": "|M - M_k| / |M|", "gram_error": "|MᵀM - approx| / |MᵀM|"}.get(f, ylabel))
        ax.set_title(f"{mat}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0][min(1, len(panels) - 1)].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def table(rows: list[dict[str, Any]], shapes: dict[str, tuple[int, int]]) -> str:
    lines = ["| matrix | method | rank | matrix error | Gram error | ms |", "|---|---|---|---|---|---|"]
    for r in rows:
        err = "—" if r["error"] is None else f"{r['error']:.4f}"
        lines.append(f"| {r['matrix']} {shapes[r['matrix']]} | {LABELS[r['method']]} | {r['rank']} | {err} "
                     f"| {r['gram_error']:.4f} | {r['ms']:.3f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def run(config: Config, workdir: Path) -> dict[str, Any]:
    workdir = Path(workdir)
    images, _ = load_digits()
    weight, accuracy = train_weight(config, workdir)
    matrices = {"digits": images.reshape(len(images), -1).astype(np.float32) / 16.0, "weight": weight}
    rows = [row for name, m in matrices.items() for row in evaluate(name, m, config)]
    shapes = {name: tuple(m.shape) for name, m in matrices.items()}
    plot(rows, list(matrices), workdir / "errors_vs_rank.png", field="error", ylabel="")
    plot(rows, list(matrices), workdir / "time_vs_rank.png", field="ms", ylabel="ms per call (fastest)")
    text = table(rows, shapes)
    write_text_atomic(workdir / "table.md", text)
    write_json_atomic(workdir / "curves.json", {"shapes": shapes, "rows": rows})
    print(text)
    results: dict[str, Any] = {"mlp_test_accuracy": accuracy}
    for r in rows:
        stem = f"{r['matrix']}_{r['method']}_rank{r['rank']}"
        if r["error"] is not None:
            results[f"{stem}_error"] = r["error"]
        results[f"{stem}_gram_error"] = r["gram_error"]
        results[f"{stem}_ms"] = r["ms"]
    return results


EXPERIMENTS = [
    Experiment(
        name="lowrank-compare",
        description="truncated/randomized SVD, interpolative decomposition, CR sampling: error and time vs rank",
        config=Config(),
        run=run,
    )
]
