"""The class-conditional digits generator that ddpm-digits, flow-digits and the experiments built on them share.

One small class-conditional U-Net (``jaxlab.nn.UNet``) trained with label
dropout, so one network is both the conditional and the unconditional model of
classifier-free guidance. Training data are the digits' training split,
dequantized: level k ∈ 0..16 becomes k/8 − 1 + (U − ½)/8 with U ~ U(0, 1), so
each level owns a cell of width 1/8 on [−1 − 1/16, 1 + 1/16].

References:
  Ho, Salimans 2022, "Classifier-Free Diffusion Guidance"; Theis et al. 2016
  (dequantization).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any, Literal

import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from jaxlab.data import digits_split, digits_to_unit, epoch_permutation_batch, unit_to_digits
from jaxlab.generative import Diffusion, schedules
from jaxlab.nn import UNet
from jaxlab.nn.precision import dtype_name
from jaxlab.parallel import sharded_sampler
from jaxlab.train import TrainConfig, adamw_with_warmup, restore_params, save_figure, train

NUM_CLASSES = 10
BIN_WIDTH = 1.0 / 8.0  # one of 17 levels on [-1, 1] after digits_to_unit
SCHEDULES = {"cosine": schedules.cosine, "linear_path": schedules.linear_path}


@dataclasses.dataclass(frozen=True)
class DigitsTrainConfig(TrainConfig):
    """Trainer defaults of a small U-Net (``channels``) on the 8×8 digits, shared by the digits generators.

    ``dtype`` is the U-Net's compute dtype (float32, bfloat16 or float16); its
    parameters, conditioning, normalization and output stay float32
    (:mod:`jaxlab.nn.precision`).
    """

    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    ema_decay: float = 0.995
    checkpoint_every: int = 500
    log_every: int = 50
    channels: tuple[int, ...] = (32, 64)
    dtype: str = "float32"

    def __post_init__(self) -> None:
        super().__post_init__()
        dtype_name("dtype", self.dtype)  # a bad name exits 2 before anything is compiled


@dataclasses.dataclass(frozen=True)
class Config(DigitsTrainConfig):
    """Shared configuration of ddpm-digits and flow-digits (trainer and U-Net fields from :class:`DigitsTrainConfig`)."""

    schedule: Literal["cosine", "linear_path"] = "cosine"
    prediction: Literal["eps", "x0", "v", "velocity"] = "v"
    sampler: Literal["ddpm", "ddim", "euler", "heun"] = "ddpm"
    sample_steps: int = 64
    label_dropout: float = 0.1
    guidance_scales: tuple[float, ...] = (1.0, 2.0)
    samples_per_class: int = 30
    nll_images: int = 120
    nll_steps: int = 32


def build_method(config: Config, *, guidance_scale: float = 1.0) -> Diffusion:
    network = UNet(channels=tuple(config.channels), num_classes=NUM_CLASSES, dtype=config.dtype)
    return Diffusion(
        apply_fn=network.apply,
        init_fn=network.init,
        data_shape=(8, 8, 1),
        schedule=SCHEDULES[config.schedule],
        prediction=config.prediction,
        sampler=config.sampler,
        num_classes=NUM_CLASSES,
        label_dropout=config.label_dropout,
        guidance_scale=guidance_scale,
    )


def dequantize(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Levels (n, 8, 8) -> (n, 8, 8, 1) floats: k/8 − 1 + (U − ½)/8."""
    noise = rng.uniform(size=images.shape).astype(np.float32)
    return (np.asarray(digits_to_unit(images)) + (noise - 0.5) * BIN_WIDTH)[..., None]


def make_batches(config: Config, split: dict[str, np.ndarray]):
    """``step -> {"x": (b, 8, 8, 1), "label": (b,)}``, a pure function of (seed, step)."""
    images, labels = split["train_images"], split["train_labels"]

    def batches(step: int) -> dict[str, np.ndarray]:
        index = epoch_permutation_batch(images.shape[0], config.batch_size, seed=config.seed, step=step)
        rng = np.random.default_rng((config.seed, step, 1))
        return {"x": dequantize(images[index], rng), "label": labels[index]}

    return batches


def restore_model(config: Config, workdir: Path) -> tuple[Diffusion, Any]:
    """(method, EMA params) of the newest checkpoint in ``workdir``."""
    return build_method(config), restore_params(workdir)


def base_model(config: Config, run_dir: Path, *, base_workdir: str = "") -> tuple[Diffusion, Any]:
    """(method, EMA params) of the model that ``config``'s digits fields describe, for experiments built on it.

    ``config`` may be a subclass's config (its extra fields are dropped). The
    model is restored from ``base_workdir`` when given, else trained (or
    resumed) in ``run_dir``.
    """
    base_config = Config(**{f.name: getattr(config, f.name) for f in dataclasses.fields(Config)})
    if base_workdir:
        return restore_model(base_config, Path(base_workdir))
    split = digits_split(seed=base_config.seed)
    method = build_method(base_config)
    state = train(method, adamw_with_warmup(base_config), make_batches(base_config, split), base_config, run_dir)
    return method, state.ema_params


def draw_digits(method: Diffusion, params, *, key, labels, steps: int, guidance_scale: float) -> np.ndarray:
    """Class-conditional samples as digit levels (n, 8, 8) uint8."""
    draw = sharded_sampler(functools.partial(method.sample, num=labels.shape[0], steps=steps, guidance_scale=guidance_scale))
    return np.asarray(unit_to_digits(draw(params, key=key, labels=jnp.asarray(labels))[..., 0]))


def plot_samples(samples: np.ndarray, path: Path) -> None:
    """A grid of digit levels (n, 8, 8), ten per row."""
    plot_grids({"samples": samples}, path)


def _tile(images: np.ndarray, columns: int = NUM_CLASSES) -> np.ndarray:
    """(n, h, w) -> one (rows·(h+1), columns·(w+1)) image, column c holding samples with label c."""
    n, h, w = images.shape
    rows = math.ceil(n / columns)
    canvas = np.full((rows * (h + 1), columns * (w + 1)), np.nan)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = image
    return canvas


def plot_grids(grids: dict[str, np.ndarray], path: Path) -> None:
    """One panel per entry of ``grids`` (title -> digit levels (n, 8, 8)), the first 100 of each, to a PNG."""
    fig = Figure(figsize=(3.2 * len(grids), 3.4))
    axes = fig.subplots(1, len(grids), squeeze=False)
    for ax, (title, images) in zip(axes[0], grids.items(), strict=True):
        ax.imshow(_tile(images[:100]), cmap="gray_r", vmin=0, vmax=16, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=130)
