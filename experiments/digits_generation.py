"""ddpm-digits / flow-digits: class-conditional diffusion and rectified flow on the 8×8 digits.

Both train the same small class-conditional U-Net of
:mod:`jaxlab.recipes.digits` with 10 % label dropout, so one network is both
the conditional and the unconditional model of classifier-free guidance. ``ddpm-digits`` is a
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

import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.data import digits_split
from jaxlab.eval.features import classify_digits, digits_frechet_distance
from jaxlab.generative import Diffusion, bits_per_dim
from jaxlab.recipes.digits import (
    BIN_WIDTH,
    NUM_CLASSES,
    Config,
    build_method,
    dequantize,
    draw_digits,
    make_batches,
    plot_grids,
    plot_samples,
    restore_model,
)
from jaxlab.train import Experiment, adamw_with_warmup, is_writer, named_key, save_array, train, write_json_atomic, write_text_atomic


def sample(config: Config, workdir: Path, *, num: int, steps: int | None = None, seed: int = 0) -> np.ndarray:
    """``num`` samples (classes 0, 1, …, 9, 0, …) at the first guidance scale, as levels (num, 8, 8)."""
    method, params = restore_model(config, workdir)
    labels = np.arange(num) % NUM_CLASSES
    return draw_digits(method, params, key=jax.random.key(seed), labels=labels, steps=steps or config.sample_steps, guidance_scale=config.guidance_scales[0])


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
    write_text_atomic(workdir / "guidance_table.md", f"{name}: samples vs test digits\n\n" + "\n".join(lines) + f"\n\n{footer}\n")


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
        save_array(workdir / f"samples_w{scale:g}.npy", digits)
    subset = slice(0, config.nll_images)
    results["bits_per_dim"] = bits_per_dim_of(method, params, config, test_images[subset], test_labels[subset])
    results["bits_per_dim_uncond"] = bits_per_dim_of(method, params, config, test_images[subset], None)
    results["bits_per_dim_uniform"] = math.log2(17)
    _write_table(results, config, workdir, name)
    plot_grids(grids, workdir / "samples.png")
    if is_writer():  # only process 0 wrote it
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
