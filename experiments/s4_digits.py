"""s4-digits: sequential digit classification with a residual S4/S4D classifier.

Each 8×8 digit is read one pixel at a time in raster order — a length-64
sequence of scalars — and classified by :class:`jaxlab.ssm.SSMClassifier`
(Dense encoder → pre-norm residual S4D or S4 blocks → mean pooling → Dense).
The model only sees the image through its SSM layers' convolutions, so it must
integrate information across the sequence. Training uses AdamW with the SSM
parameters (Δ, Λ, B, P) at 0.1× the learning rate and without weight decay
(:func:`jaxlab.ssm.ssm_adamw`); evaluation uses the EMA parameters on the
held-out 20% of the digits (a stratified split fixed by ``split_seed``).

Sequential MNIST (length 784): set ``data_dir`` to a folder holding the MNIST
IDX files (see :func:`jaxlab.data.load_mnist`; missing files give its error
naming what to put where). The model and training fields are the same; for
MNIST a longer run (``steps`` of several thousand, ``batch_size`` 64) is
needed and is best done on an accelerator.

Results: ``test_accuracy`` (EMA parameters; target ≥ 0.95), ``test_accuracy_raw``
(the raw parameters), ``train_accuracy``, ``test_loss``, ``num_test``,
``sequence_length``, ``num_params``. Chance is 0.1.

References: Gu, Goel, Ré 2022, "Efficiently Modeling Long Sequences with
Structured State Spaces" (S4, Section 4.2: sequential image classification);
Gu, Gupta, Goel, Ré 2022, "On the Parameterization and Initialization of
Diagonal State Space Models" (S4D).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.figure import Figure

from jaxlab.data import digits_split, epoch_permutation_batch, load_mnist
from jaxlab.nn.precision import dtype_name
from jaxlab.ssm import SSMClassifier, ssm_adamw
from jaxlab.tasks import SequenceClassifier
from jaxlab.train import Experiment, TrainConfig, save_figure, train

NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    """s4-digits configuration (trainer fields from :class:`TrainConfig`).

    Attributes:
      d_model: channels H of the residual stream.
      n_layers: residual S4 blocks.
      d_state: state size N of each SSM.
      kind: ``"s4d"`` (diagonal) or ``"s4"`` (DPLR LegS).
      init_scheme: S4D initialization (``"legs"``, ``"lin"``, ``"inv"``, ``"real"``).
      dt_min, dt_max: range of the log-uniform initial step sizes Δ.
      dropout: dropout rate inside the blocks.
      weight_decay: AdamW weight decay of the non-SSM parameters.
      ssm_lr_scale: learning-rate multiplier of the SSM parameters.
      split_seed: seed of the stratified digits train/test split (kept apart
        from ``seed`` so every seed is scored on the same held-out digits).
      data_dir: a folder with the MNIST IDX files for sequential MNIST; None
        (default) uses the embedded 8×8 digits.
      eval_batch_size: batch size of the evaluation passes.
      dtype: compute dtype of the dense layers (float32, bfloat16 or
        float16); the SSMs, their parameters and the logits stay float32.
    """

    steps: int = 1500
    batch_size: int = 64
    learning_rate: float = 4e-3
    warmup_steps: int = 100
    ema_decay: float = 0.995
    checkpoint_every: int = 500
    log_every: int = 50
    d_model: int = 64
    n_layers: int = 3
    d_state: int = 32
    kind: Literal["s4d", "s4"] = "s4d"
    init_scheme: Literal["legs", "lin", "inv", "real"] = "legs"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dropout: float = 0.1
    weight_decay: float = 0.05
    ssm_lr_scale: float = 0.1
    split_seed: int = 0
    data_dir: str | None = None
    eval_batch_size: int = 512
    dtype: str = "float32"

    def __post_init__(self) -> None:
        super().__post_init__()
        dtype_name("dtype", self.dtype)  # a bad name exits 2 before anything is compiled


def load_data(config: Config) -> dict[str, np.ndarray]:
    """Train/test sequences ``(n, L)`` float32 in [0, 1] and int32 labels."""
    if config.data_dir is None:
        split = digits_split(seed=config.split_seed)
        scale = 16.0
    else:
        (train_x, train_y), (test_x, test_y) = (load_mnist(config.data_dir, s) for s in ("train", "test"))
        split = {"train_images": train_x, "train_labels": train_y, "test_images": test_x, "test_labels": test_y}
        scale = 255.0
    out = {}
    for part in ("train", "test"):
        images = split[f"{part}_images"]
        out[f"{part}_x"] = (images.reshape(images.shape[0], -1) / scale).astype(np.float32)
        out[f"{part}_y"] = split[f"{part}_labels"].astype(np.int32)
    return out


def build_method(config: Config, length: int) -> SequenceClassifier:
    model = SSMClassifier(
        num_classes=NUM_CLASSES,
        d_model=config.d_model,
        n_layers=config.n_layers,
        d_state=config.d_state,
        kind=config.kind,
        init_scheme=config.init_scheme,
        dt_min=config.dt_min,
        dt_max=config.dt_max,
        l_max=length if config.kind == "s4" else None,
        dropout=config.dropout,
        pool="mean",
        dtype=config.dtype,
    )
    return SequenceClassifier(apply_fn=model.apply, init_fn=model.init, dropout=config.dropout)


def build_optimizer(config: TrainConfig, *, weight_decay: float, ssm_lr_scale: float) -> optax.GradientTransformation:
    """Gradient clipping, then AdamW with the SSM parameters at ``ssm_lr_scale``× lr and no decay.

    Linear warm-up then a constant rate (independent of ``steps``, so a run
    can be extended by resuming with a larger ``steps``).
    """
    schedule = optax.linear_schedule(0.0, config.learning_rate, max(config.warmup_steps, 1))
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        ssm_adamw(schedule, weight_decay=weight_decay, ssm_lr_scale=ssm_lr_scale),
    )


def make_batches(config: Config, x: np.ndarray, y: np.ndarray):
    """``step -> {"x", "y"}``: epoch-wise permutations, a pure function of (seed, step)."""

    def batches(step: int) -> dict[str, np.ndarray]:
        index = epoch_permutation_batch(x.shape[0], config.batch_size, seed=config.seed, step=step)
        return {"x": x[index], "y": y[index]}

    return batches


def pad_to(x: np.ndarray, size: int) -> np.ndarray:
    """``x`` zero-padded along the first axis to ``size`` rows."""
    return np.concatenate([x, np.zeros((size - x.shape[0], *x.shape[1:]), x.dtype)])


def evaluate(logits_fn: Callable, params: Any, x: np.ndarray, y: np.ndarray, batch_size: int) -> dict[str, float]:
    """Accuracy and mean cross-entropy over ``(x, y)``; ``logits_fn(params, x)`` is deterministic.

    Every batch is padded to ``batch_size`` so ``logits_fn`` compiles once.
    """
    correct, total_loss = 0, 0.0
    for start in range(0, x.shape[0], batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        logits = np.asarray(logits_fn(params, jnp.asarray(pad_to(xb, batch_size))))[: xb.shape[0]]
        correct += int(np.sum(logits.argmax(-1) == yb))
        total_loss += float(optax.softmax_cross_entropy_with_integer_labels(logits, yb).sum())
    return {"accuracy": correct / x.shape[0], "loss": total_loss / x.shape[0]}


def plot_predictions(probs: np.ndarray, x: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """The first test images with their predicted class probabilities (a sanity picture)."""
    num = min(8, x.shape[0], probs.shape[0])
    side = round(np.sqrt(x.shape[1]))
    fig = Figure(figsize=(1.6 * num, 3.4))
    axes = fig.subplots(2, num, squeeze=False)
    for i in range(num):
        axes[0, i].imshow(x[i].reshape(side, side), cmap="gray_r")
        axes[0, i].set_axis_off()
        axes[1, i].bar(range(NUM_CLASSES), probs[i])
        axes[1, i].set_ylim(0, 1)
        axes[1, i].set_xticks(range(NUM_CLASSES), [str(c) for c in range(NUM_CLASSES)], fontsize=6)
        axes[1, i].set_yticks([])
        wrong = probs[i].argmax() != labels[i]
        title = f"pred {probs[i].argmax()} / true {labels[i]}"
        axes[0, i].set_title(title, fontsize=8, color="red" if wrong else "black")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def run(config: Config, workdir: Path) -> dict[str, Any]:
    data = load_data(config)
    length = data["train_x"].shape[1]
    method = build_method(config, length)
    optimizer = build_optimizer(config, weight_decay=config.weight_decay, ssm_lr_scale=config.ssm_lr_scale)
    state = train(method, optimizer, make_batches(config, data["train_x"], data["train_y"]), config, workdir)
    params, raw = jax.device_get(state.ema_params), jax.device_get(state.params)

    logits_fn = jax.jit(lambda p, x: method.logits(p, x))
    size = config.eval_batch_size
    test = evaluate(logits_fn, params, data["test_x"], data["test_y"], size)
    test_raw = evaluate(logits_fn, raw, data["test_x"], data["test_y"], size)
    num_train_eval = min(data["train_x"].shape[0], 10 * size)  # at most 10 batches (MNIST has 60,000)
    train_eval = evaluate(logits_fn, params, data["train_x"][:num_train_eval], data["train_y"][:num_train_eval], size)
    probs = jax.nn.softmax(logits_fn(params, jnp.asarray(pad_to(data["test_x"][:size], size))), -1)
    plot_predictions(np.asarray(probs), data["test_x"], data["test_y"], Path(workdir) / "predictions.png")
    results = {
        "test_accuracy": test["accuracy"],
        "test_accuracy_raw": test_raw["accuracy"],
        "test_loss": test["loss"],
        "train_accuracy": train_eval["accuracy"],
        "num_test": int(data["test_x"].shape[0]),
        "sequence_length": int(length),
        "num_params": int(sum(leaf.size for leaf in jax.tree.leaves(params))),
        "dataset": "digits" if config.data_dir is None else "mnist",
    }
    print(
        f"{results['dataset']} (L={length}): test accuracy {test['accuracy']:.4f} (EMA), "
        f"{test_raw['accuracy']:.4f} (raw); train accuracy {train_eval['accuracy']:.4f}"
    )
    return results


EXPERIMENTS = [
    Experiment(
        name="s4-digits",
        description="sequential 8x8 digits (length 64) with a residual S4D classifier; held-out accuracy",
        config=Config(),
        run=run,
    )
]
