"""ddcm-digits: compress held-out 8×8 digits with a diffusion codebook (DDCM): rate against PSNR.

The DDPM is ddpm-digits' class-conditional U-Net (v-prediction, cosine
schedule), trained here into ``workdir/ddpm`` (re-run to reuse it) or
restored from a finished ddpm-digits run given as ``base_workdir``; it is
used unconditionally (the null label of classifier-free guidance), so no
label is transmitted. Each test digit (levels mapped to [−1, 1]) is then
encoded by DDCM with ``ddcm_steps`` ancestral steps:

* plain DDCM at each K in ``codes``: (steps − 1)·log2 K bits per image
  (K = 1 is the 0-bit baseline: one fixed sample for every image; a digit
  stored losslessly takes 64·log2 17 ≈ 261.6 bits);
* matching pursuit at K = ``mp_codes`` with M ∈ ``atoms`` atoms per step and
  the coefficient set ``coefficients``.

Reported: bits per image, PSNR (dB, peak-to-peak 2) and MSE of each setting
on ``encode_images`` test digits, and whether decoding the indices
reproduced the encoder's images bit for bit. Writes ``results.json``,
``rate_psnr.json`` / ``rate_psnr.md``, ``rate_psnr.png`` and
``reconstructions.png``.

References:
  Ohayon, Manor, Michaeli, Elad 2025, "Compressed Image Generation with
  Denoising Diffusion Codebook Models", arXiv:2502.01189.
  Ho, Jain, Abbeel 2020, "DDPM".
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from jaxlab.data import digits_split, digits_to_unit
from jaxlab.generative import uniform_times
from jaxlab.generative.ddcm import ddcm_bits, ddcm_decode, ddcm_encode, psnr
from jaxlab.recipes import digits
from jaxlab.train import Experiment, named_key, save_figure, write_json_atomic, write_text_atomic


@dataclasses.dataclass(frozen=True)
class Config(digits.Config):
    """ddcm-digits configuration: ddpm-digits' model and trainer fields plus the codec's.

    Attributes:
      ddcm_steps: ancestral sampler steps of the codec (steps − 1 carry indices).
      codes: codebook sizes K of plain DDCM.
      mp_codes: K of the matching-pursuit runs.
      atoms: numbers of atoms M of the matching-pursuit runs (M = 1 is plain DDCM).
      coefficients: the quantized coefficient set of atoms 2..M.
      encode_images: number of test digits encoded.
      clip_x0: clip the model's x̂0 to [−clip_x0, clip_x0] (0: no clipping).
      base_workdir: a finished ddpm-digits run to reuse instead of training in ``workdir/ddpm``.
    """

    ddcm_steps: int = 20
    codes: tuple[int, ...] = (1, 2, 4, 16, 256)
    mp_codes: int = 4
    atoms: tuple[int, ...] = (2, 3)
    coefficients: tuple[float, ...] = (-1.0, -0.5, 0.5, 1.0)
    encode_images: int = 120
    clip_x0: float = 1.0
    base_workdir: str = ""


def settings(config: Config) -> list[tuple[int, int]]:
    """(K, M) pairs: plain DDCM at every K, then matching pursuit at ``mp_codes``."""
    return [(k, 1) for k in config.codes] + [(config.mp_codes, m) for m in config.atoms if m > 1]


def plot_rate_psnr(rows: dict[str, dict], path: Path) -> None:
    fig = Figure(figsize=(5.0, 3.6))
    ax = fig.subplots()
    for label, select in (("DDCM (M = 1)", lambda r: r["atoms"] == 1), ("matching pursuit", lambda r: r["atoms"] > 1)):
        points = sorted((r["bits_per_image"], r["psnr"], r) for r in rows.values() if select(r))
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=label)
            for bits, value, r in points:
                ax.annotate(f"K={r['codes']}" + (f",M={r['atoms']}" if r["atoms"] > 1 else ""), (bits, value), fontsize=7)
    ax.set_xlabel("bits per image")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("ddcm-digits: rate vs distortion", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=130)


def plot_reconstructions(grid: dict[str, np.ndarray], path: Path) -> None:
    fig = Figure(figsize=(6.0, 0.7 * len(grid)))
    axes = fig.subplots(len(grid), 1, squeeze=False)
    for ax, (title, images) in zip(axes[:, 0], grid.items()):
        row = np.concatenate([np.pad(image, ((0, 0), (0, 1)), constant_values=np.nan) for image in images], axis=1)
        ax.imshow(row, cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=7, loc="left")
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=130)


def write_table(rows: dict[str, dict], config: Config, workdir: Path) -> str:
    write_json_atomic(workdir / "rate_psnr.json", {"experiment": "ddcm-digits", "ddcm_steps": config.ddcm_steps, "rows": rows})
    lines = ["| K | atoms M | bits/image | bits/pixel | PSNR (dB) | MSE | encode s | exact decode |", "|---|---|---|---|---|---|---|---|"]
    lines += [
        f"| {r['codes']} | {r['atoms']} | {r['bits_per_image']:.1f} | {r['bits_per_image'] / 64:.3f} | {r['psnr']:.2f} | "
        f"{r['mse']:.4f} | {r['encode_seconds']:.1f} | {r['exact']} |"
        for r in rows.values()
    ]
    text = f"ddcm-digits: {config.encode_images} test digits, {config.ddcm_steps} DDPM steps\n\n" + "\n".join(lines) + "\n"
    text += f"\nFor scale: a digit stored losslessly takes 64·log2 17 = {64 * math.log2(17):.1f} bits.\n"
    write_text_atomic(workdir / "rate_psnr.md", text)
    return text


def run(config: Config, workdir: Path) -> dict[str, float]:
    workdir = Path(workdir)
    method, params = digits.base_model(config, workdir / "ddpm", base_workdir=config.base_workdir)
    split = digits_split(seed=config.seed)
    targets = jnp.asarray(digits_to_unit(split["test_images"][: config.encode_images]))[..., None]  # (n, 8, 8, 1)
    n = targets.shape[0]
    network = method.network(jnp.full((n,), digits.NUM_CLASSES), guidance_scale=1.0)  # unconditional
    common = dict(
        key=named_key(config.seed, "ddcm/codebook"), schedule=method.schedule, times=uniform_times(config.ddcm_steps),
        prediction=method.prediction, clip_x0=config.clip_x0 or None, coefficients=config.coefficients,
    )  # fmt: skip
    rows, results, grid = {}, {}, {"test digits": np.asarray(targets[:12, ..., 0])}
    for codes, atoms in settings(config):
        start = time.perf_counter()
        code = ddcm_encode(network, params, targets, num_codes=codes, num_atoms=atoms, **common)
        seconds = time.perf_counter() - start
        decoded = ddcm_decode(
            network, params, code.indices, coefficient_indices=code.coefficient_indices, num_codes=codes, data_shape=targets.shape[1:], **common
        )
        name = f"K{codes}_M{atoms}"
        rows[name] = {
            "codes": codes,
            "atoms": atoms,
            "bits_per_image": ddcm_bits(config.ddcm_steps, codes, num_atoms=atoms, num_coefficients=len(config.coefficients)),
            "psnr": float(jnp.mean(psnr(code.reconstruction, targets))),
            "mse": float(jnp.mean(jnp.square(code.reconstruction - targets))),
            "encode_seconds": seconds,
            "exact": bool(np.array_equal(np.asarray(decoded), np.asarray(code.reconstruction))),
        }
        results.update({f"{name}_{k}": v for k, v in rows[name].items() if k in ("bits_per_image", "psnr", "mse")})
        grid[f"K={codes}, M={atoms}: {rows[name]['bits_per_image']:.0f} bits"] = np.asarray(code.reconstruction[:12, ..., 0])
    results["roundtrip_exact"] = all(r["exact"] for r in rows.values())
    print(write_table(rows, config, workdir))
    plot_rate_psnr(rows, workdir / "rate_psnr.png")
    plot_reconstructions(grid, workdir / "reconstructions.png")
    return results


EXPERIMENTS = [
    Experiment(
        name="ddcm-digits",
        description="DDCM compression of 8x8 digits with a DDPM's noise codebooks: bits/image vs PSNR (plain and matching pursuit)",
        config=Config(),
        run=run,
    )
]
