"""vq-digits: a small VQ autoencoder on the 8×8 digits with five quantizers at one code count.

An MLP encoder maps a digit (64 pixels on [−1, 1]) to ``num_tokens`` latent
vectors of dimension D = len(levels); each is quantized and an MLP decoder
reconstructs the image. Every method has the same latent shape and the same
number of codes K = Π levels (default FSQ levels [8, 5, 5, 5]: K = 1000, so
an image costs num_tokens·log2 K ≈ 39.9 bits):

* ``ste``: nearest-code VQ, straight-through estimator, VQ-VAE codebook and
  commitment losses (β = 0.25), codebook initialised N(0, 1);
* ``ste_restart``: the same with k-means initialisation of the codebook (on
  the initial encoder's outputs over the training set) and dead-code
  replacement every ``replace_every`` steps;
* ``rotation``: the rotation trick instead of the straight-through copy
  (same losses and initialisation as ``ste``);
* ``simvq``: codes = frozen random C times a learned W (SimVQ);
* ``fsq``: finite scalar quantization with ``levels`` (no codebook, no
  auxiliary loss).

Reported per method: test reconstruction MSE (on the [−1, 1] scale) and
PSNR, and over the codes the training set selects: perplexity, utilisation
(share of the K codes used) and dead codes. Writes ``results.json``,
``vq_table.json`` / ``vq_table.md`` and ``reconstructions.png`` (test digits
and each method's reconstructions), and each method's trainer files in
``<method>/`` (one checkpoint at the end or at Ctrl-C, from which a re-run
resumes).

References:
  van den Oord et al. 2017, "Neural Discrete Representation Learning" (VQ-VAE);
  Fifty et al. 2024, "Restructuring Vector Quantization with the Rotation Trick", arXiv:2410.06424;
  Zhu et al. 2024, "Addressing Representation Collapse in Vector Quantized Models with One
  Linear Layer" (SimVQ), arXiv:2411.02038;
  Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple", arXiv:2309.15505;
  Zeghidour et al. 2021, "SoundStream" (k-means init, dead-code replacement).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.figure import Figure

from jaxlab import quant
from jaxlab.data import digits_split, digits_to_unit, epoch_permutation_batch
from jaxlab.train import Experiment, MetricsLog, TrainConfig, check_fields, named_key, save_figure, train, write_json_atomic, write_text_atomic

METHODS = ("ste", "ste_restart", "rotation", "simvq", "fsq")


@dataclasses.dataclass(frozen=True)
class Config:
    """vq-digits configuration.

    Attributes:
      steps: Adam steps per method.
      seed: seeds data order, initialisation and every stream.
      batch_size: images per step.
      learning_rate: Adam learning rate.
      methods: which of :data:`METHODS` to train.
      levels: FSQ levels; K = Π levels for every method and D = len(levels).
      num_tokens: latent vectors per image.
      hidden: width of the encoder's and decoder's two hidden layers.
      beta: commitment weight of the VQ losses.
      kmeans_iterations: Lloyd iterations of ``ste_restart``'s initialisation.
      replace_every: ``ste_restart`` re-seeds codes unused over this many steps.
      grid_images: test digits shown in ``reconstructions.png``.
    """

    steps: int = 3000
    seed: int = 0
    batch_size: int = 128
    learning_rate: float = 2e-3
    methods: tuple[str, ...] = METHODS
    levels: tuple[int, ...] = (8, 5, 5, 5)
    num_tokens: int = 4
    hidden: int = 256
    beta: float = 0.25
    kmeans_iterations: int = 10
    replace_every: int = 200
    grid_images: int = 12

    def __post_init__(self) -> None:
        check_fields(self, nonnegative={"seed", "kmeans_iterations"})
        for name in ("steps", "batch_size", "num_tokens", "hidden", "replace_every", "grid_images"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {self.methods!r}")
        quant.fsq_num_codes(self.levels)  # validates the levels


class MLP(nn.Module):
    """Two hidden GELU layers and a linear output of ``out`` features."""

    hidden: int
    out: int

    @nn.compact
    def __call__(self, x):
        x = nn.gelu(nn.Dense(self.hidden)(x))
        x = nn.gelu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.out)(x)


@dataclasses.dataclass(frozen=True)
class VQAutoencoder:
    """Encoder -> quantizer -> decoder on flattened digits (b, 64); one instance per method."""

    method: str
    levels: tuple[int, ...]
    num_tokens: int
    hidden: int
    beta: float

    @property
    def dim(self) -> int:
        return len(self.levels)

    @property
    def num_codes(self) -> int:
        return quant.fsq_num_codes(self.levels)

    @property
    def encoder(self) -> MLP:
        return MLP(self.hidden, self.num_tokens * self.dim)

    @property
    def decoder(self) -> MLP:
        return MLP(self.hidden, 64)

    def init(self, key):
        params = {
            "encoder": self.encoder.init(named_key(key, "encoder"), jnp.zeros((1, 64))),
            "decoder": self.decoder.init(named_key(key, "decoder"), jnp.zeros((1, self.num_tokens * self.dim))),
        }
        if self.method in ("ste", "ste_restart", "rotation"):
            params["codebook"] = jax.random.normal(named_key(key, "codebook"), (self.num_codes, self.dim))
        if self.method == "simvq":
            params["projection"] = quant.simvq_init(named_key(key, "simvq"), self.num_codes, self.dim)[1]
        return params

    def frozen(self, key):
        """SimVQ's frozen basis C (a constant, not a parameter)."""
        return quant.simvq_init(named_key(key, "simvq"), self.num_codes, self.dim)[0]

    def encode(self, params, x):  # (b, 64) -> (b, T, D)
        return self.encoder.apply(params["encoder"], x).reshape(x.shape[0], self.num_tokens, self.dim)

    def quantize(self, params, z, frozen):
        """(codes (b, T, D), indices (b, T), auxiliary loss)."""
        if self.method == "fsq":
            out = quant.fsq_quantize(z, self.levels)
            return out.codes, out.indices, jnp.zeros(())
        if self.method == "simvq":
            out = quant.simvq_quantize(z, frozen, params["projection"], beta=self.beta)
        else:
            estimator = "rotation" if self.method == "rotation" else "ste"
            out = quant.vector_quantize(z, params["codebook"], beta=self.beta, estimator=estimator)
        return out.quantized, out.indices, out.loss

    def reconstruct(self, params, x, frozen):
        codes, indices, aux = self.quantize(params, self.encode(params, x), frozen)
        return self.decoder.apply(params["decoder"], codes.reshape(x.shape[0], -1)), indices, aux

    def loss(self, params, x, frozen):
        recon, indices, aux = self.reconstruct(params, x, frozen)
        mse = jnp.mean(jnp.square(recon - x))
        return mse + aux, {"mse": mse, "indices": indices}


@dataclasses.dataclass(frozen=True)
class VQTraining:
    """Trainer method: Adam on the autoencoder, with ``ste_restart``'s code counts and dead-code restarts inside the step.

    The trainer's ``frozen`` argument is ``{"basis": SimVQ's frozen C, "pool":
    the training images}``; the pool seeds the k-means initialisation and the
    restarted codes. Initialisation and restarts draw from the method's own
    stream ``named_key(seed, "vq-digits/<method>")``, so every method keeps
    the initial weights it had before it ran on the trainer.
    """

    model: VQAutoencoder
    seed: int
    learning_rate: float
    replace_every: int
    kmeans_iterations: int
    steps: int

    @property
    def key(self) -> jax.Array:
        return named_key(self.seed, f"vq-digits/{self.model.method}")

    @property
    def optimizer(self) -> optax.GradientTransformation:
        return optax.adam(self.learning_rate)

    def init(self, key, batch, *, frozen):
        del key, batch  # the method's own stream, see above
        model, params = self.model, self.model.init(self.key)
        if model.method == "ste_restart":
            z = model.encode(params, frozen["pool"]).reshape(-1, model.dim)
            params["codebook"] = quant.kmeans(z, model.num_codes, key=named_key(self.key, "kmeans"), iterations=self.kmeans_iterations).centroids
        return params

    def init_opt_state(self, params):
        return {"adam": self.optimizer.init(params), "counts": jnp.zeros(self.model.num_codes)}

    def train_step(self, params, opt_state, batch, *, key, ctx):
        model = self.model
        (loss, aux), grads = jax.value_and_grad(model.loss, has_aux=True)(params, batch["x"], ctx.frozen["basis"])
        updates, adam = self.optimizer.update(grads, opt_state["adam"], params)
        params = optax.apply_updates(params, updates)
        counts = opt_state["counts"] + quant.code_counts(aux["indices"], model.num_codes)
        window_ends = (ctx.step + 1) % self.replace_every == 0
        if model.method == "ste_restart":
            # re-seeded codes keep their Adam moments (a simplification; they are re-fitted within a few steps)
            restart_key = jax.random.fold_in(named_key(self.key, "restart"), ctx.step)
            params = jax.lax.cond(
                window_ends & (ctx.step + 1 < self.steps), lambda p: self._restart(p, counts, ctx.frozen["pool"], restart_key), lambda p: p, params
            )
        counts = jnp.where(window_ends, 0.0, counts)
        return params, {"adam": adam, "counts": counts}, {"loss": loss, "mse": aux["mse"]}

    def _restart(self, params, counts, pool, key):
        codes = self.model.encode(params, pool).reshape(-1, self.model.dim)
        return {**params, "codebook": quant.replace_dead_codes(params["codebook"], counts, codes, key=key)}


def train_method(model: VQAutoencoder, config: Config, train_x: np.ndarray, workdir: Path):
    """Trains one method with :func:`jaxlab.train.train` in ``workdir/<method>`` (resumable); returns (params, frozen, seconds)."""
    method = VQTraining(model, config.seed, config.learning_rate, config.replace_every, config.kmeans_iterations, config.steps)
    frozen = {"basis": model.frozen(method.key), "pool": jnp.asarray(train_x)}
    window = min(config.replace_every, config.steps)
    trainer = TrainConfig(
        steps=config.steps, seed=config.seed, batch_size=config.batch_size, learning_rate=config.learning_rate,
        log_every=window, checkpoint_every=config.steps, steps_per_execution=window,
    )  # fmt: skip
    batches = lambda step: {"x": train_x[epoch_permutation_batch(train_x.shape[0], config.batch_size, seed=config.seed, step=step)]}
    state = train(method, method.optimizer, batches, trainer, workdir / model.method, frozen=frozen, progress=False)
    return state.params, frozen["basis"], MetricsLog(workdir / model.method / "metrics.jsonl").training_seconds()


def evaluate(model: VQAutoencoder, params, frozen, train_x: np.ndarray, test_x: np.ndarray) -> tuple[dict, np.ndarray]:
    recon_fn = jax.jit(functools.partial(model.reconstruct, frozen=frozen))
    recon, indices, _ = recon_fn(params, jnp.concatenate([jnp.asarray(test_x), jnp.asarray(train_x)]))  # one compile
    test_recon, train_indices = recon[: test_x.shape[0]], indices[test_x.shape[0] :]
    mse = float(jnp.mean(jnp.square(test_recon - test_x)))
    row = {
        "codes": model.num_codes,
        "bits_per_image": model.num_tokens * math.log2(model.num_codes),
        "test_mse": mse,
        "test_psnr": 10.0 * math.log10(4.0 / mse),
        **quant.codebook_metrics(train_indices, model.num_codes),
    }
    return row, np.asarray(test_recon)


def _tile(images: np.ndarray) -> np.ndarray:
    """(n, 8, 8) -> one row (8, n·9 − 1) with one blank column between images."""
    n = images.shape[0]
    canvas = np.full((8, n * 9 - 1), np.nan)
    for i, image in enumerate(images):
        canvas[:, i * 9 : i * 9 + 8] = image
    return canvas


def plot_reconstructions(rows: dict[str, np.ndarray], path: Path) -> None:
    fig = Figure(figsize=(0.6 * next(iter(rows.values())).shape[0], 0.75 * len(rows)))
    axes = fig.subplots(len(rows), 1, squeeze=False)
    for ax, (title, images) in zip(axes[:, 0], rows.items()):
        ax.imshow(_tile(images.reshape(-1, 8, 8)), cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=8, loc="left")
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=130)


def write_table(table: dict[str, dict], config: Config, workdir: Path) -> str:
    write_json_atomic(workdir / "vq_table.json", {"experiment": "vq-digits", "levels": list(config.levels), "rows": table})
    lines = [
        "| method | K | bits/image | test MSE | test PSNR (dB) | perplexity | utilization | dead codes | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {r['codes']} | {r['bits_per_image']:.1f} | {r['test_mse']:.4f} | {r['test_psnr']:.2f} | "
        f"{r['perplexity']:.1f} | {r['utilization']:.3f} | {r['dead_codes']} | {r['train_seconds']:.1f} |"
        for name, r in table.items()
    ]
    text = f"vq-digits: {config.num_tokens} tokens × D = {len(config.levels)}, FSQ levels {list(config.levels)}, {config.steps} steps\n\n"
    text += "\n".join(lines) + "\n\nMSE on the [-1, 1] pixel scale (PSNR peak-to-peak 2); code usage over the training set.\n"
    write_text_atomic(workdir / "vq_table.md", text)
    return text


def run(config: Config, workdir: Path) -> dict[str, float]:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    split = digits_split(seed=config.seed)
    train_x = np.asarray(digits_to_unit(split["train_images"])).reshape(-1, 64)
    test_x = np.asarray(digits_to_unit(split["test_images"])).reshape(-1, 64)
    table, grid, results = {}, {"test digits": test_x[: config.grid_images]}, {}
    for method in config.methods:
        model = VQAutoencoder(method, tuple(config.levels), config.num_tokens, config.hidden, config.beta)
        params, frozen, seconds = train_method(model, config, train_x, workdir)
        row, recon = evaluate(model, params, frozen, train_x, test_x)
        table[method] = {**row, "train_seconds": seconds}
        grid[method] = recon[: config.grid_images]
        results.update({f"{method}_{name}": value for name, value in table[method].items() if name != "codes"})
    results["num_codes"] = quant.fsq_num_codes(config.levels)
    print(write_table(table, config, workdir))
    plot_reconstructions(grid, workdir / "reconstructions.png")
    return results


EXPERIMENTS = [
    Experiment(
        name="vq-digits",
        description="VQ autoencoder on 8x8 digits: STE, STE+kmeans/restarts, rotation trick, SimVQ, FSQ at equal K",
        config=Config(),
        run=run,
        sharded_fields=("batch_size",),
    )
]
