"""s4-long: long-range tasks at L = 1,024 that an LTI SSM solves and a windowed model cannot.

Two synthetic tasks (``task``), both read off a residual S4D sequence model
(Dense encoder → pre-norm S4 blocks → LayerNorm → Dense to one scalar per
position; every map is causal):

``"delay"`` (default) — fixed-delay copy of a low-passed signal. The input is
white noise ``x_t ~ N(0, 1)``; the target is the input delayed by ``delay``
steps and smoothed by a unit-energy Hann window ``h`` of ``delay_width`` taps,
``y_t = Σ_j h_j x_{t−delay−j}`` (variance 1). It is scored on the positions
whose whole window lies inside the sequence (``t ≥ delay + delay_width − 1``).
The map ``x → y`` is itself linear and time invariant — a convolution with the
bump ``h`` placed at lag ``delay`` — so an SSM whose kernel approximates that
bump solves it (the bump is smooth, so a few dozen modes suffice). Chance and windows: ``y_t`` depends only on inputs at least
``delay`` steps old, which are independent of everything a model with a
window ``W ≤ delay`` sees, so any such model (sliding-window or local
attention, a CNN with receptive field ≤ ``delay``) has normalized MSE ≥ 1,
the same as predicting 0. ``test_metric`` is the normalized MSE
(``"nmse"`` = MSE / Var y on the test set): chance 1, target well below 0.1.
With ``delay_width=1`` this is the exact fixed-delay copy, whose kernel is a
single spike; a realization of a ``delay``-step delay needs ``delay`` states,
so that variant is far harder.

``"adding"`` — the adding problem (Hochreiter & Schmidhuber 1997; version of
Arjovsky et al. 2016): pairs ``(v_t, m_t)`` with ``v_t ~ U(0, 1)`` and a
marker that is 1 at one position of the first half and one of the second;
the target, read at the last position, is the sum of the two marked values;
``test_metric`` is the MSE. Chance (predict 1) is Var(v₁ + v₂) = 1/6 ≈ 0.167;
a model with window ``W ≤ L/2`` never sees ``v₁`` and has MSE ≥ Var v₁ = 1/12
≈ 0.083. This task needs a product (value × marker, formed by the GLU after an
SSM) before the long sum, and at this model size training sits on the chance
plateau for a number of steps that depends on the initialization (runs in
``docs/results.md``). It is therefore an option for longer runs
(``--set task=adding --set batch_size=32 --steps 5000`` or more, best on an
accelerator), not the default.

Training uses AdamW with the SSM parameters (Δ, Λ, B) at 0.1× the learning
rate and without weight decay (:func:`jaxlab.ssm.ssm_adamw`); Δ starts
log-uniform in [1e-4, 1e-1] (the lower end scaled to L = 1,024, so some
channels remember the whole sequence). Evaluation uses the EMA parameters on
``num_test`` fresh sequences from the seed's ``"test"`` stream.

References: Gu, Goel, Ré 2022, "Efficiently Modeling Long Sequences with
Structured State Spaces" (S4); Voelker, Kajić, Eliasmith 2019, "Legendre
Memory Units" (the delay task); Arjovsky, Shah, Bengio 2016, "Unitary
Evolution Recurrent Neural Networks" (the adding problem).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.figure import Figure

from jaxlab.nn.precision import compute_dtype, dtype_name
from jaxlab.nn.sharding import BATCH, EMBED, LENGTH, constrain
from jaxlab.ssm import S4Block, ssm_adamw
from jaxlab.tasks import WeightedRegression
from jaxlab.train import Experiment, TrainConfig, named_key, save_figure, train

ADDING_CHANCE_MSE = 1.0 / 6.0  # Var(v1 + v2), v ~ U(0, 1): predicting the mean target 1
ADDING_WINDOWED_MSE = 1.0 / 12.0  # Var(v1): the first marked value lies outside any window W <= L/2
ADDING_TOLERANCE = 0.04  # |error| counted as solved in adding-problem reports
SEQUENCE = (BATCH, LENGTH, EMBED)  # (B, L, H): logical names of the activations


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    """s4-long configuration (trainer fields from :class:`TrainConfig`).

    Attributes:
      task: ``"delay"`` (delayed low-pass copy) or ``"adding"`` (the adding problem).
      seq_len: sequence length L (the issue asks for L >= 1,024).
      delay: delay of the copy task (the longest window that must fail).
      delay_width: taps of the Hann smoothing window of the copy task (1 = exact copy).
      d_model: channels H.
      n_layers: residual S4 blocks.
      d_state: state size N of each SSM.
      kind: ``"s4d"`` (diagonal) or ``"s4"`` (DPLR LegS).
      init_scheme: S4D initialization.
      dt_min, dt_max: range of the log-uniform initial step sizes Δ.
      weight_decay: AdamW weight decay of the non-SSM parameters.
      ssm_lr_scale: learning-rate multiplier of the SSM parameters.
      num_test: number of test sequences.
      dtype: compute dtype of the dense layers (float32, bfloat16 or
        float16); the SSMs, their parameters and the predictions stay float32.
    """

    steps: int = 800
    batch_size: int = 16
    learning_rate: float = 1e-2
    warmup_steps: int = 100
    ema_decay: float = 0.99
    checkpoint_every: int = 400
    log_every: int = 50
    task: Literal["delay", "adding"] = "delay"
    seq_len: int = 1024
    delay: int = 512
    delay_width: int = 64
    d_model: int = 32
    n_layers: int = 2
    d_state: int = 64
    kind: Literal["s4d", "s4"] = "s4d"
    init_scheme: Literal["legs", "lin", "inv", "real"] = "legs"
    dt_min: float = 1e-4
    dt_max: float = 1e-1
    weight_decay: float = 0.0
    ssm_lr_scale: float = 0.1
    num_test: int = 512
    dtype: str = "float32"

    NONNEGATIVE: ClassVar[frozenset[str]] = TrainConfig.NONNEGATIVE | {"delay"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.seq_len, int) or self.seq_len < 4:
            raise ValueError(f"seq_len must be an int >= 4, got {self.seq_len!r}")
        if self.task == "delay" and not (1 <= self.delay_width and self.delay + self.delay_width <= self.seq_len):
            raise ValueError(
                f"delay and delay_width must satisfy delay_width >= 1 and delay + delay_width <= seq_len = "
                f"{self.seq_len}, got delay={self.delay!r}, delay_width={self.delay_width!r}"
            )
        if not isinstance(self.num_test, int) or self.num_test < 1:
            raise ValueError(f"num_test must be a positive int, got {self.num_test!r}")
        dtype_name("dtype", self.dtype)  # a bad name exits 2 before anything is compiled


def hann_window(width: int) -> np.ndarray:
    """Unit-energy Hann window of ``width`` positive taps (``[1.0]`` for width 1)."""
    h = np.hanning(width + 2)[1:-1]
    return (h / np.sqrt(np.sum(h**2))).astype(np.float32)


def delay_task(key: jax.Array, num: int, length: int, *, delay: int, width: int) -> dict[str, jax.Array]:
    """Delayed low-pass copy: ``x`` ``(num, length, 1)``, ``y`` and scoring weights ``w`` ``(num, length)``.

    ``y_t = Σ_j h_j x_{t−delay−j}`` (zero history before the start), scored
    where ``t ≥ delay + width − 1``; there ``Var y_t = 1``.
    """
    x = jax.random.normal(named_key(key, "input"), (num, length))
    smooth = jax.vmap(lambda row: jnp.convolve(row, jnp.asarray(hann_window(width)), mode="full")[:length])(x)
    y = jnp.pad(smooth, ((0, 0), (delay, 0)))[:, :length]
    w = jnp.broadcast_to(jnp.arange(length) >= delay + width - 1, (num, length)).astype(jnp.float32)
    return {"x": x[..., None], "y": y, "w": w}


def adding_problem(key: jax.Array, num: int, length: int) -> dict[str, jax.Array]:
    """The adding problem: ``x`` ``(num, length, 2)`` (value, marker); ``y``, ``w`` ``(num, length)``.

    The target (the sum of the two marked values) sits at the last position,
    the only one with weight 1.
    """
    half = length // 2
    values = jax.random.uniform(named_key(key, "value"), (num, length))
    first = jax.random.randint(named_key(key, "first"), (num,), 0, half)
    second = jax.random.randint(named_key(key, "second"), (num,), half, length)
    positions = jnp.arange(length)
    markers = (positions == first[:, None]) | (positions == second[:, None])
    total = jnp.sum(jnp.where(markers, values, 0.0), axis=1)
    last = (positions == length - 1).astype(jnp.float32)
    return {
        "x": jnp.stack([values, markers.astype(jnp.float32)], axis=-1),
        "y": total[:, None] * last,
        "w": jnp.broadcast_to(last, (num, length)),
    }


def make_task(config: Config, key: jax.Array, num: int) -> dict[str, jax.Array]:
    if config.task == "adding":
        return adding_problem(key, num, config.seq_len)
    return delay_task(key, num, config.seq_len, delay=config.delay, width=config.delay_width)


class SequenceRegressor(nn.Module):
    """Causal sequence-to-sequence regressor: Dense → S4 blocks → LayerNorm → Dense(1) per position."""

    d_model: int
    n_layers: int
    block: dict
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``x`` ``(B, L, d_in)`` → ``(B, L)`` float32 (the loss's input)."""
        dtype = compute_dtype("dtype", self.dtype)
        h = constrain(nn.Dense(self.d_model, dtype=dtype, name="encoder")(x.astype(dtype)), SEQUENCE)
        for i in range(self.n_layers):
            h = S4Block(self.d_model, **self.block, dtype=dtype, name=f"block_{i}")(h)
        h = nn.LayerNorm(dtype=jnp.float32, name="norm")(h.astype(jnp.float32))  # statistics in float32
        return nn.Dense(1, dtype=dtype, name="decoder")(h.astype(dtype))[..., 0].astype(jnp.float32)


def build_method(config: Config) -> WeightedRegression:
    block = {
        "d_state": config.d_state,
        "kind": config.kind,
        "init_scheme": config.init_scheme,
        "dt_min": config.dt_min,
        "dt_max": config.dt_max,
        "l_max": config.seq_len if config.kind == "s4" else None,
    }
    model = SequenceRegressor(d_model=config.d_model, n_layers=config.n_layers, block=block, dtype=config.dtype)
    return WeightedRegression(apply_fn=model.apply, init_fn=model.init)


def build_optimizer(config: Config) -> optax.GradientTransformation:
    """Clipping, then AdamW with SSM parameters at ``ssm_lr_scale``× lr, no decay; warm-up then constant."""
    schedule = optax.linear_schedule(0.0, config.learning_rate, max(config.warmup_steps, 1))
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        ssm_adamw(schedule, weight_decay=config.weight_decay, ssm_lr_scale=config.ssm_lr_scale),
    )


def make_batches(config: Config):
    """``step -> {"x", "y", "w"}`` fresh sequences, a pure function of (seed, step)."""
    data_key = named_key(config.seed, "data")
    draw = jax.jit(lambda key: make_task(config, key, config.batch_size))

    def batches(step: int) -> dict[str, np.ndarray]:
        return {name: np.asarray(value) for name, value in draw(jax.random.fold_in(data_key, step)).items()}

    return batches


def plot_predictions(config: Config, test: dict, predictions: np.ndarray, path: Path, *, metric: float) -> None:
    if config.task == "adding":
        fig = Figure(figsize=(4.5, 4.5))
        ax = fig.subplots()
        ax.scatter(test["y"][:, -1], predictions[:, -1], s=3, alpha=0.5)
        ax.plot([0, 2], [0, 2], color="gray", lw=0.8)
        ax.set_xlabel("target v1 + v2")
        ax.set_ylabel("prediction")
        ax.set_title(f"adding, L={config.seq_len}: MSE {metric:.4f} (windowed ≥ {ADDING_WINDOWED_MSE:.3f})", fontsize=9)
    else:
        fig = Figure(figsize=(10, 3.5))
        ax = fig.subplots()
        t = np.arange(config.seq_len)
        ax.plot(t, test["x"][0, :, 0], color="lightgray", lw=0.6, label="input x (white noise)")
        ax.plot(t, test["y"][0], color="black", lw=1.5, label=f"target: x low-passed, delayed {config.delay}")
        ax.plot(t, predictions[0], color="C3", lw=1.0, label="S4D output")
        ax.axvspan(0, config.delay + config.delay_width - 1, color="gray", alpha=0.12, label="not scored")
        ax.set_ylim(-4, 4)
        ax.set_xlabel("position")
        title = f"delay copy, L={config.seq_len}: normalized MSE {metric:.4f} (any window W ≤ {config.delay}: ≥ 1)"
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="upper left", ncol=4)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def run(config: Config, workdir: Path) -> dict[str, Any]:
    method = build_method(config)
    state = train(method, build_optimizer(config), make_batches(config), config, workdir)
    params = jax.device_get(state.ema_params)

    test = {k: np.asarray(v) for k, v in make_task(config, named_key(config.seed, "test"), config.num_test).items()}
    predict = jax.jit(method.predict)
    chunk = min(64, config.num_test)
    predictions = np.concatenate([np.asarray(predict(params, test["x"][i : i + chunk])) for i in range(0, config.num_test, chunk)])
    scored = test["w"] > 0
    error, target = (predictions - test["y"])[scored], test["y"][scored]
    mse = float(np.mean(error**2))
    results: dict[str, Any] = {"task": config.task, "seq_len": config.seq_len}
    if config.task == "adding":
        results |= {
            "test_metric": mse,
            "test_metric_name": "mse",
            "chance_metric": ADDING_CHANCE_MSE,
            "windowed_bound": ADDING_WINDOWED_MSE,
            "test_within_tol": float(np.mean(np.abs(error) < ADDING_TOLERANCE)),
        }
    else:
        results |= {
            "test_metric": mse / float(np.var(target)),
            "test_metric_name": "nmse",
            "chance_metric": 1.0,
            "windowed_bound": 1.0,
            "test_mse": mse,
            "delay": config.delay,
            "delay_width": config.delay_width,
        }
    results |= {"num_test": config.num_test, "num_params": int(sum(leaf.size for leaf in jax.tree.leaves(params)))}
    plot_predictions(config, test, predictions, Path(workdir) / "predictions.png", metric=results["test_metric"])
    print(
        f"{config.task} (L={config.seq_len}): test {results['test_metric_name']} {results['test_metric']:.5f} "
        f"(chance {results['chance_metric']:.4f}, any window-limited model >= {results['windowed_bound']:.4f})"
    )
    return results


EXPERIMENTS = [
    Experiment(
        name="s4-long",
        description="long-range delayed copy (or adding problem) at L=1024 with S4D; test metric vs chance/windowed",
        config=Config(),
        run=run,
    )
]
