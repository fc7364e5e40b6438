"""upsample-digits: 16×16 digits from an 8×8 diffusion model, with and without upsample guidance.

Trains the ddpm-digits model (class-conditional U-Net, v-prediction, cosine
schedule; see ``digits_generation.py``) in ``workdir/base`` — or loads a
finished ddpm-digits run given as ``base_workdir`` with the same model
fields — then samples 16×16 images (factor m = 2) from the same noise twice:
the plain convolutional model run at the new size, and with upsample
guidance (Hwang, Park, Jo 2024) on the noisiest ``fraction`` of the
trajectory. There are no 16×16 digits to compare with, so each 16×16 sample
is average-pooled back to 8×8 and scored like ddpm-digits samples: the
digits classifier's accuracy on the conditioning class and the
feature-Fréchet proxy against the test digits (``accuracy_*``,
``frechet_*``; ``*_8x8`` is the model at its own resolution, for reference).

Writes ``results.json``, ``upsample_table.json`` / ``upsample_table.md`` and
``upsample_grid.png`` (8×8 samples | 16×16 plain | 16×16 guided, one column
per class).

Reference: Hwang, Park, Jo 2024, "Upsample Guidance: Scale Up Diffusion
Models without Training" (arXiv:2404.01709).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.data import digits_split, unit_to_digits
from jaxlab.eval.features import classify_digits, digits_frechet_distance
from jaxlab.generative import sample_ddim, sample_ddpm, uniform_times
from jaxlab.generative.upsample_guidance import OUTPUT_PREDICTION, average_pool, upsample_guidance
from jaxlab.recipes import digits
from jaxlab.train import Experiment, is_writer, named_key, save_array, write_json_atomic, write_text_atomic


@dataclasses.dataclass(frozen=True)
class Config(digits.Config):
    """upsample-digits configuration: the ddpm-digits fields plus the upsampling ones."""

    factor: int = 2
    guidance: float = 1.0
    fraction: float = 0.8
    cfg_scale: float = 1.0
    samples_per_class: int = 10
    base_workdir: str = ""


def sample_upsampled(method, params, config: Config, labels: np.ndarray, *, guidance: float) -> np.ndarray:
    """(n, 8m, 8m) levels from the 8×8 model, upsample-guided with weight ``guidance`` (0: plain)."""
    network = method.network(jnp.asarray(labels), config.cfg_scale)
    guided = upsample_guidance(network, schedule=method.schedule, prediction=method.prediction, factor=config.factor, scale=guidance, fraction=config.fraction)
    side = 8 * config.factor
    times = uniform_times(config.sample_steps)
    x_start = method.schedule(times[0]).sigma * jax.random.normal(named_key(config.seed, "eval/noise"), (labels.shape[0], side, side, 1))
    common = dict(schedule=method.schedule, times=times, prediction=OUTPUT_PREDICTION)
    key = named_key(config.seed, "eval/sampler")
    if config.sampler == "ddpm":
        run = jax.jit(lambda p, x: sample_ddpm(guided, p, x, key=key, **common))
    else:
        run = jax.jit(lambda p, x: sample_ddim(guided, p, x, key=key, **common))
    return np.asarray(run(params, x_start)[..., 0])


def to_levels(images: np.ndarray, factor: int) -> np.ndarray:
    """Unit-range images (n, 8m, 8m) average-pooled to 8×8 levels (n, 8, 8)."""
    return np.asarray(unit_to_digits(average_pool(jnp.asarray(images)[..., None], factor)[..., 0]))


def run(config: Config, workdir: Path) -> dict[str, float]:
    if config.sampler not in ("ddpm", "ddim"):
        raise ValueError(f"sampler must be 'ddpm' or 'ddim' for upsample-digits, got {config.sampler!r}")
    method, params = digits.base_model(config, workdir / "base", base_workdir=config.base_workdir)
    split = digits_split(seed=config.seed)
    labels = np.tile(np.arange(digits.NUM_CLASSES), config.samples_per_class)
    low = digits.draw_digits(method, params, key=named_key(config.seed, "eval/low"), labels=labels, steps=config.sample_steps, guidance_scale=config.cfg_scale)
    panels = {"8x8": (low, low.astype(np.float32))}
    for name, weight in (("plain", 0.0), ("guided", config.guidance)):
        images = sample_upsampled(method, params, config, labels, guidance=weight)
        panels[name] = (to_levels(images, config.factor), np.asarray(unit_to_digits(images), np.float32))
        save_array(workdir / f"samples_{name}_{8 * config.factor}.npy", images)

    results = {}
    for name, (levels, _) in panels.items():
        results[f"accuracy_{name}"] = float(np.mean(np.asarray(classify_digits(levels)) == labels))
        results[f"frechet_{name}"] = digits_frechet_distance(levels, split["test_images"])
    write_json_atomic(workdir / "upsample_table.json", {"factor": config.factor, "rows": results})
    lines = ["| samples | classifier accuracy | feature-Fréchet (proxy) |", "|---|---|---|"]
    lines += [f"| {name} | {results[f'accuracy_{name}']:.3f} | {results[f'frechet_{name}']:.3f} |" for name in panels]
    title = f"upsample-digits: {8 * config.factor}x{8 * config.factor} samples pooled to 8x8 vs test digits"
    write_text_atomic(workdir / "upsample_table.md", title + "\n\n" + "\n".join(lines) + "\n")
    side = 8 * config.factor
    digits.plot_grids(
        {"8x8 model": panels["8x8"][1], f"{side}x{side}, no guidance": panels["plain"][1], f"{side}x{side}, upsample guidance": panels["guided"][1]},
        workdir / "upsample_grid.png",
    )
    if is_writer():  # only process 0 wrote it
        print((workdir / "upsample_table.md").read_text())
    return results


def sample(config: Config, workdir: Path, *, num: int, steps: int | None = None, seed: int = 0) -> np.ndarray:
    """``num`` upsample-guided samples (classes 0, 1, …) at 8m×8m, as levels."""
    method, params = digits.restore_model(config, Path(config.base_workdir or Path(workdir) / "base"))
    config = dataclasses.replace(config, seed=seed, sample_steps=steps or config.sample_steps)
    images = sample_upsampled(method, params, config, np.arange(num) % digits.NUM_CLASSES, guidance=config.guidance)
    return np.asarray(unit_to_digits(images))


EXPERIMENTS = [
    Experiment(
        name="upsample-digits",
        description="16x16 digits from the 8x8 diffusion model with and without upsample guidance (side-by-side grid)",
        config=Config(),
        run=run,
        sample=sample,
        plot_samples=digits.plot_samples,
    )
]
