"""ddpm-digits / flow-digits: class-conditional diffusion and rectified flow on the 8×8 digits.

Both train the same small class-conditional U-Net (``jaxlab.nn.UNet``) with
10 % label dropout, so one network is both the conditional and the
unconditional model of classifier-free guidance. ``ddpm-digits`` is a
Gaussian diffusion on the clipped logSNR-cosine schedule with v-prediction,
sampled by ancestral DDPM; ``flow-digits`` is a rectified flow (straight
path, velocity prediction; the flow-matching loss), sampled by Heun.

Training data are the digits' training split, dequantized: level k ∈ 0..16
becomes k/8 − 1 + (U − ½)/8 with U ~ U(0, 1), so each level owns a cell of
width 1/8 on [−1 − 1/16, 1 + 1/16]. Reported:

* ``bits_per_dim`` (and ``bits_per_dim_uncond``): the probability-flow ODE
  likelihood of dequantized test digits (Hutchinson trace) turned into bits
  per pixel over the 17 levels (the uniform baseline is log2 17 ≈ 4.09);
* ``frechet_w{scale}``: the digits feature-Fréchet distance (a proxy from a
  small digits classifier, not FID; see ``jaxlab.eval.features``) of samples
  at each guidance scale to the test digits, beside ``frechet_train_vs_test``
  (the proxy's floor for real digits) — and ``accuracy_w{scale}``, how often
  the classifier recognises the class a sample was conditioned on.

Writes ``results.json``, ``guidance_table.json`` / ``guidance_table.md`` and
``samples.png`` (one row per class, one panel per guidance scale).

References:
  Ho, Jain, Abbeel 2020, "DDPM"; Salimans, Ho 2022 (v-prediction);
  Liu, Gong, Liu 2022, "Flow Straight and Fast"; Ho, Salimans 2022,
  "Classifier-Free Diffusion Guidance"; Theis et al. 2016 (dequantization).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from jaxlab.data import digits_split, digits_to_unit, epoch_permutation_batch, unit_to_digits  # noqa: E402
from jaxlab.eval.features import classify_digits, digits_frechet_distance  # noqa: E402
from jaxlab.generative import Diffusion, bits_per_dim, schedules  # noqa: E402
from jaxlab.nn import UNet  # noqa: E402
from jaxlab.train import Experiment, TrainConfig, adamw_with_warmup, named_key, restore_state, train, write_json_atomic  # noqa: E402

NUM_CLASSES = 10
BIN_WIDTH = 1.0 / 8.0  # one of 17 levels on [-1, 1] after digits_to_unit
SCHEDULES = {"cosine": schedules.cosine, "linear_path": schedules.linear_path}


@dataclasses.dataclass(frozen=True)
class DigitsTrainConfig(TrainConfig):
    """Trainer defaults of a small U-Net (``channels``) on the 8×8 digits, shared by the digits generators."""

    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup_steps: int = 100
    ema_decay: float = 0.995
    checkpoint_every: int = 500
    log_every: int = 50
    channels: tuple[int, ...] = (32, 64)


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
    network = UNet(channels=tuple(config.channels), num_classes=NUM_CLASSES)
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


def restore_params(config: Config, workdir: Path):
    split = digits_split(seed=config.seed)
    method = build_method(config)
    state = restore_state(method, adamw_with_warmup(config), make_batches(config, split)(0), config, Path(workdir))
    return method, state.ema_params


def base_model(config: Config, run_dir: Path, *, base_workdir: str = ""):
    """(method, EMA params) of the model that ``config``'s digits fields describe, for experiments built on it.

    ``config`` may be a subclass's config (its extra fields are dropped). The
    model is restored from ``base_workdir`` when given, else trained (or
    resumed) in ``run_dir``.
    """
    base_config = Config(**{f.name: getattr(config, f.name) for f in dataclasses.fields(Config)})
    if base_workdir:
        return restore_params(base_config, Path(base_workdir))
    split = digits_split(seed=base_config.seed)
    method = build_method(base_config)
    state = train(method, adamw_with_warmup(base_config), make_batches(base_config, split), base_config, run_dir)
    return method, state.ema_params


def draw_digits(method: Diffusion, params, *, key, labels, steps: int, guidance_scale: float) -> np.ndarray:
    """Class-conditional samples as digit levels (n, 8, 8) uint8."""
    draw = jax.jit(functools.partial(method.sample, num=labels.shape[0], steps=steps, guidance_scale=guidance_scale))
    return np.asarray(unit_to_digits(draw(params, key=key, labels=jnp.asarray(labels))[..., 0]))


def sample(config: Config, workdir: Path, *, num: int, steps: int | None = None, seed: int = 0) -> np.ndarray:
    """``num`` samples (classes 0, 1, …, 9, 0, …) at the first guidance scale, as levels (num, 8, 8)."""
    method, params = restore_params(config, workdir)
    labels = np.arange(num) % NUM_CLASSES
    return draw_digits(
        method, params, key=jax.random.key(seed), labels=labels, steps=steps or config.sample_steps, guidance_scale=config.guidance_scales[0]
    )


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
    fig, axes = plt.subplots(1, len(grids), figsize=(3.2 * len(grids), 3.4), squeeze=False)
    for ax, (title, images) in zip(axes[0], grids.items()):
        ax.imshow(_tile(images[:100]), cmap="gray_r", vmin=0, vmax=16, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def bits_per_dim_of(method: Diffusion, params, config: Config, images: np.ndarray, labels: np.ndarray | None) -> float:
    x = jnp.asarray(dequantize(images, np.random.default_rng((config.seed, 2))))
    labels = jnp.full(images.shape[:1], NUM_CLASSES) if labels is None else jnp.asarray(labels)
    log_prob = jax.jit(functools.partial(method.log_prob, steps=config.nll_steps, trace="hutchinson"))
    log_density = log_prob(params, x, labels=labels, key=named_key(config.seed, "eval/hutchinson"))
    return float(jnp.mean(bits_per_dim(log_density, 64, bin_width=BIN_WIDTH)))


def _write_table(results: dict, config: Config, workdir: Path, name: str) -> None:
    rows = {f"{w:g}": {"frechet": results[f"frechet_w{w:g}"], "accuracy": results[f"accuracy_w{w:g}"]} for w in config.guidance_scales}
    write_json_atomic(workdir / "guidance_table.json", {"experiment": name, "rows": rows})
    lines = ["| guidance scale | feature-Fréchet (proxy) | classifier accuracy |", "|---|---|---|"]
    lines += [f"| {w} | {row['frechet']:.3f} | {row['accuracy']:.3f} |" for w, row in rows.items()]
    footer = (
        f"train-vs-test Fréchet {results['frechet_train_vs_test']:.3f}; bits/dim {results['bits_per_dim']:.3f} "
        f"(unconditional {results['bits_per_dim_uncond']:.3f}; uniform {math.log2(17):.3f})"
    )
    (workdir / "guidance_table.md").write_text(f"{name}: samples vs test digits\n\n" + "\n".join(lines) + f"\n\n{footer}\n")


def run_named(name: str, config: Config, workdir: Path) -> dict[str, float]:
    split = digits_split(seed=config.seed)
    method = build_method(config)
    params = train(method, adamw_with_warmup(config), make_batches(config, split), config, workdir).ema_params

    test_images, test_labels = split["test_images"], split["test_labels"]
    results = {"frechet_train_vs_test": digits_frechet_distance(split["train_images"], test_images)}
    labels = np.tile(np.arange(NUM_CLASSES), config.samples_per_class)
    by_class = np.stack([test_images[test_labels == c][:10] for c in range(NUM_CLASSES)], axis=1)  # (10, 10, 8, 8)
    grids = {"test digits": by_class.reshape(-1, 8, 8)}
    for scale in config.guidance_scales:
        key = named_key(config.seed, "eval/sample")
        digits = draw_digits(method, params, key=key, labels=labels, steps=config.sample_steps, guidance_scale=scale)
        results[f"frechet_w{scale:g}"] = digits_frechet_distance(digits, test_images)
        results[f"accuracy_w{scale:g}"] = float(np.mean(np.asarray(classify_digits(digits)) == labels))
        grids[f"guidance {scale:g}"] = digits
        np.save(workdir / f"samples_w{scale:g}.npy", digits)
    subset = slice(0, config.nll_images)
    results["bits_per_dim"] = bits_per_dim_of(method, params, config, test_images[subset], test_labels[subset])
    results["bits_per_dim_uncond"] = bits_per_dim_of(method, params, config, test_images[subset], None)
    results["bits_per_dim_uniform"] = math.log2(17)
    _write_table(results, config, workdir, name)
    plot_grids(grids, workdir / "samples.png")
    print((workdir / "guidance_table.md").read_text())
    return results


FLOW_CONFIG = Config(schedule="linear_path", prediction="velocity", sampler="heun", sample_steps=16)

EXPERIMENTS = [
    Experiment(
        name="ddpm-digits",
        description="class-conditional diffusion (v-pred, cosine) on 8x8 digits: bits/dim, feature-Frechet proxy, CFG",
        config=Config(),
        run=functools.partial(run_named, "ddpm-digits"),
        sample=sample,
        plot_samples=plot_samples,
    ),
    Experiment(
        name="flow-digits",
        description="class-conditional rectified flow on 8x8 digits: bits/dim, feature-Frechet proxy, CFG",
        config=FLOW_CONFIG,
        run=functools.partial(run_named, "flow-digits"),
        sample=sample,
        plot_samples=plot_samples,
    ),
]
