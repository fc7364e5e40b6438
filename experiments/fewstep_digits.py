"""fewstep-digits: few-step generators side by side on the 8×8 digits (unconditional).

The digits counterpart of ``fewstep-toy2d``: flow matching (baseline, Euler),
CT, iCT, CD, shortcut, SiD and IGN, each trained with the same small U-Net
(``jaxlab.nn.UNet``, same channels) for the same number of steps in
``workdir/<method>``, CD and SiD distilling the flow baseline. Samples at 1,
2, 4 and 128 steps (where the method allows) are scored with the digits
feature-Fréchet proxy (``jaxlab.eval.digits_frechet_distance``; a small
classifier's features, not FID) against the test digits, beside the proxy's
floor ``frechet_train_vs_test``, with the wall time of one sample batch.

The shortcut model needs a step-size input the U-Net lacks; it reuses the
U-Net's label embedding as a step-size embedding (d on the power-of-two grid
→ index log2(d·M), d = 0 → 0), which adds one small embedding table.

Training data: the digits' training split, dequantized as in
``digits_generation.py``. Writes ``results.json`` (``frechet_<method>_<steps>``,
``wall_<method>_<steps>``, ``frechet_teacher_128``, ``target_*`` ratios),
``fewstep_table.json`` / ``fewstep_table.md`` and ``samples.png``.

References: see ``fewstep_toy2d.py``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.data import digits_split, epoch_permutation_batch, unit_to_digits
from jaxlab.eval import digits_frechet_distance
from jaxlab.nn import UNet
from jaxlab.recipes import digits, fewstep
from jaxlab.train import Experiment, is_writer, named_key, restore_params


@dataclasses.dataclass(frozen=True)
class Config(digits.DigitsTrainConfig, fewstep.MethodConfig):
    """fewstep-digits configuration; the trainer fields (those of digits-generation) apply to every method alike."""

    eval_samples: int = 500
    sid: fewstep.SiDConfig = dataclasses.field(default_factory=lambda: fewstep.SiDConfig(ema_decay=0.99))
    # The shortcut row already uses the paper's independent coupling (MethodConfig's default), so no second row.
    methods: tuple[str, ...] = tuple(m for m in fewstep.METHODS if m != "shortcut_independent")


def networks(config: Config) -> fewstep.Networks:
    net = UNet(channels=tuple(config.channels), dtype=config.dtype)
    levels = round(math.log2(config.shortcut.max_steps))
    step_net = UNet(channels=tuple(config.channels), num_classes=max(levels, 1), dtype=config.dtype)

    def step_index(d, x):  # d on {0} ∪ {2^k / M} -> 0 .. log2(M)
        d = jnp.broadcast_to(jnp.asarray(d, x.dtype), x.shape[:1])
        index = jnp.round(jnp.log2(jnp.maximum(d, 1e-12) * config.shortcut.max_steps))
        return jnp.where(d > 0, jnp.clip(index, 0, levels), 0).astype(jnp.int32)

    def apply_step(params, x, t, d):
        return step_net.apply(params, x, t, step_index(d, x))

    def init_step(key, x, t, d):
        return step_net.init(key, x, t, step_index(d, x))

    def apply_map(params, x):
        return net.apply(params, x, jnp.ones(x.shape[:1], x.dtype))

    def init_map(key, x):
        return net.init(key, x, jnp.ones(x.shape[:1], x.dtype))

    return fewstep.Networks(velocity=(net.apply, net.init), shortcut=(apply_step, init_step), mapping=(apply_map, init_map), data_shape=(8, 8, 1))


def make_batches(config: Config, split: dict[str, np.ndarray]):
    """``step -> {"x": (b, 8, 8, 1)}`` dequantized training digits, a pure function of (seed, step)."""
    images = split["train_images"]

    def batches(step: int) -> dict[str, np.ndarray]:
        index = epoch_permutation_batch(images.shape[0], config.batch_size, seed=config.seed, step=step)
        return {"x": digits.dequantize(images[index], np.random.default_rng((config.seed, step, 1)))}

    return batches


def to_levels(x: np.ndarray) -> np.ndarray:
    """(n, 8, 8, 1) floats on [-1, 1] -> (n, 8, 8) digit levels."""
    return np.asarray(unit_to_digits(np.asarray(x)[..., 0]))


def sample(config: Config, workdir: Path, *, num: int, steps: int | None = None, seed: int = 0) -> np.ndarray:
    """Digit levels (num, 8, 8) from the last selected method's checkpoint (``steps`` or 1)."""
    name = config.methods[-1]
    method, _ = fewstep.build_method(name, networks(config), config)
    draw = jax.jit(lambda p, k: method.sample(p, key=k, num=num, steps=steps or 1))
    return to_levels(draw(restore_params(Path(workdir) / name), jax.random.key(seed)))


def plot_samples(samples: np.ndarray, path: Path) -> None:
    digits.plot_grids({"samples": samples}, path)


def run(config: Config, workdir: Path, *, progress: bool = True) -> dict[str, float | None]:
    split = digits_split(seed=config.seed)
    trained = fewstep.train_methods(config, workdir, networks(config), make_batches(config, split), progress=progress)
    test_images = split["test_images"]

    def metric(x: np.ndarray) -> float:
        return float(digits_frechet_distance(to_levels(x), test_images))

    results, samples = fewstep.evaluate(trained, metric, prefix="frechet", key=named_key(config.seed, "eval/sample"), num=config.eval_samples)
    results["frechet_train_vs_test"] = float(digits_frechet_distance(split["train_images"], test_images))
    fewstep.add_target_ratios(results, "frechet")
    fewstep.write_tables(results, tuple(trained), tuple(config.step_counts), "frechet", "fewstep-digits: feature-Fréchet proxy to test digits", workdir)
    grids = {"test digits": test_images[:100]}
    for name in trained:
        for steps in sorted({min(trained[name].step_counts), max(trained[name].step_counts)}):
            grids[f"{name}, {steps}"] = to_levels(samples[(name, steps)])
    digits.plot_grids(grids, workdir / "samples.png")
    if is_writer():  # only process 0 wrote it
        print((workdir / "fewstep_table.md").read_text())
    return results


EXPERIMENTS = [
    Experiment(
        name="fewstep-digits",
        description="flow, CT, iCT, CD, shortcut, SiD, IGN on 8x8 digits: feature-Frechet proxy at 1/2/4/128 steps",
        config=Config(),
        run=run,
        sample=sample,
        plot_samples=plot_samples,
    )
]
