"""Denoising Diffusion Codebook Models (DDCM): DDPM sampling whose noises come from fixed codebooks.

Ancestral DDPM (see :func:`jaxlab.generative.sample_ddpm`) adds fresh
Gaussian noise z at every step t → s:

    x_s = (α_t σ_s² / (α_s σ_t²))·x_t + α_s·r·x̂0 + σ_s·√r·z,   r = 1 − e^{λ_t − λ_s}.

DDCM draws z instead from a codebook of K fixed noises per step,
``C_i = N(0, I)`` samples from ``jax.random.fold_in(key, i)`` — so the whole
codebook is the key, portable between encoder and decoder — and the start
x_T = σ(times[0])·N(0, I) is fixed by the same key. With n sampler steps the
last one adds no noise, so an image is the n − 1 indices of its noises.

* **Generation**: indices drawn uniformly at random (:func:`ddcm_generate`);
  with large K this is ordinary DDPM sampling.
* **Compression** (:func:`ddcm_encode`): at each step pick the code best
  aligned with the direction to the target, k = argmax_k ⟨C_i[k], x0 − x̂0⟩,
  where x̂0 is the model's prediction at the current point: each step nudges
  the trajectory towards the target. Rate: (n − 1)·log2 K bits per image.
* **Decompression** (:func:`ddcm_decode`): rerun the sampler with the stored
  indices. The loop over steps runs on the host and calls compiled per-step
  programs that the encoder and the decoder share (the encoder's choice is a
  separate program that only outputs indices), so the decoded image equals
  the encoder's reconstruction bit for bit on the same backend. Do not wrap
  the two in an outer ``jax.jit``: XLA would then fuse each differently and
  they would agree only to rounding (~1e-7).
* **Matching pursuit** (``num_atoms = M > 1``): the noise of a step is a
  combination z = (C[k_1] + Σ_{m≥2} γ_m·C[k_m]) / √(1 + Σ γ_m²) with
  coefficients from a small quantized set; atoms are chosen greedily, each
  (k_m, γ_m) maximizing the cosine between the running combination and the
  residual x0 − x̂0. Rate: (n − 1)·(log2 K + (M − 1)·log2(K·|γ set|)) bits.

Time follows jaxlab's convention (t = 0 data, t = 1 noise; the grid runs from
1 down to 0); the paper's DDPM step index counts the other way.

References:
  Ohayon, Manor, Michaeli, Elad 2025, "Compressed Image Generation with
  Denoising Diffusion Codebook Models", arXiv:2502.01189 (DDCM sampling,
  compression by noise selection, and its matching-pursuit generalisation).
  Ho, Jain, Abbeel 2020, "Denoising Diffusion Probabilistic Models", Algorithm 2.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from jaxlab.base import ApplyFn, Params, named_key
from jaxlab.generative.samplers import _posterior_share, denoise
from jaxlab.generative.schedules import Prediction, Schedule, check_prediction

DEFAULT_COEFFICIENTS = (-1.0, -0.5, 0.5, 1.0)

__all__ = [
    "DDCMCode",
    "ddcm_bits",
    "ddcm_codebook",
    "ddcm_decode",
    "ddcm_encode",
    "ddcm_generate",
    "ddcm_start",
    "psnr",
]


class DDCMCode(NamedTuple):
    """The compressed representation and the encoder's own reconstruction.

    Attributes:
      indices: (b, n − 1, M) int32 code index of each atom at each noisy step.
      coefficient_indices: (b, n − 1, M) int32 index into the coefficient set
        (atom 0 always has coefficient 1 and index 0; it costs no bits).
      reconstruction: ``(b, *features)`` the image the indices decode to.
    """

    indices: Array
    coefficient_indices: Array
    reconstruction: Array


def ddcm_codebook(key: Array, step: int | Array, num_codes: int, shape: Sequence[int]) -> Array:
    """The K fixed noises of step ``step``: ``normal(fold_in(key, step), (K, *shape))``."""
    return jax.random.normal(jax.random.fold_in(key, step), (num_codes, *shape), jnp.float32)


def ddcm_start(key: Array, shape: Sequence[int], *, schedule: Schedule, times: Array) -> Array:
    """The fixed start x_T = σ(times[0])·N(0, I) of shape ``shape`` (one per example), shared by every image."""
    noise = jax.random.normal(named_key(key, "ddcm/start"), tuple(shape[1:]), jnp.float32)
    return jnp.broadcast_to(schedule(times[0]).sigma * noise, tuple(shape))


def ddcm_bits(num_steps: int, num_codes: int, *, num_atoms: int = 1, num_coefficients: int = 1) -> float:
    """Bits per image: (n − 1)·(log2 K + (M − 1)·log2(K·C)) for n sampler steps."""
    per_step = math.log2(num_codes) + (num_atoms - 1) * math.log2(num_codes * num_coefficients)
    return (num_steps - 1) * per_step


def psnr(x: Array, target: Array, *, data_range: float = 2.0) -> Array:
    """(b,) peak signal-to-noise ratio in dB, 10·log10(range² / MSE), per example (data in [−1, 1]: range 2)."""
    mse = jnp.mean(jnp.square(x - target).reshape(x.shape[0], -1), axis=-1)
    return 10.0 * jnp.log10(data_range**2 / jnp.maximum(mse, 1e-20))


def _check_common(times: Array, prediction: str, num_codes: int, num_atoms: int, coefficients: Sequence[float]) -> None:
    if getattr(times, "ndim", None) != 1 or times.shape[0] < 2:
        raise ValueError(f"times must have shape (steps + 1,) with steps >= 1, got {getattr(times, 'shape', times)}")
    check_prediction(prediction)
    if not isinstance(num_codes, int) or isinstance(num_codes, bool) or num_codes < 1:
        raise ValueError(f"num_codes must be a positive int, got {num_codes!r}")
    if not isinstance(num_atoms, int) or isinstance(num_atoms, bool) or num_atoms < 1:
        raise ValueError(f"num_atoms must be a positive int, got {num_atoms!r}")
    if num_atoms > 1 and (len(coefficients) < 1 or any(c == 0 for c in coefficients)):
        raise ValueError(f"coefficients must be a non-empty sequence of non-zero numbers, got {coefficients!r}")


@functools.partial(jax.jit, static_argnames=("apply_fn", "schedule", "prediction", "clip_x0"))
def _predict(params, x, times, i, *, apply_fn, schedule, prediction, clip_x0):
    """x̂0 at (x, times[i]): one compiled program shared by the encoder and the decoder."""
    return denoise(apply_fn, params, x, times[i], schedule=schedule, prediction=prediction, clip_x0=clip_x0)[0]


@functools.partial(jax.jit, static_argnames=("schedule", "num_codes", "noisy"))
def _update(x, x0, times, i, key, idx, cidx, gammas, *, schedule, num_codes, noisy):
    """One ancestral step t = times[i] → s = times[i + 1] with the codebook noise (idx, cidx) (b, M)."""
    t, s = times[i], times[i + 1]
    at_t, at_s, r = _posterior_share(schedule, t, s)
    keep = at_t.alpha * jnp.square(at_s.sigma) / (at_s.alpha * jnp.square(at_t.sigma))
    mean = keep * x + at_s.alpha * r * x0
    if not noisy:
        return mean
    codebook = ddcm_codebook(key, i, num_codes, x.shape[1:]).reshape(num_codes, -1)  # (K, d)
    g = gammas[cidx]  # (b, M)
    noise = jnp.einsum("bm,bmd->bd", g, codebook[idx]) / jnp.sqrt(jnp.sum(jnp.square(g), axis=-1, keepdims=True))
    return mean + at_s.sigma * jnp.sqrt(r) * noise.reshape(x.shape)


@functools.partial(jax.jit, static_argnames=("num_codes", "num_atoms"))
def _choose(target, x0_hat, key, i, coefficients, *, num_codes, num_atoms):
    """The encoder's (idx, cidx) (b, M): atoms aligned with the residual target − x̂0 (matching pursuit for M > 1)."""
    b = target.shape[0]
    codebook = ddcm_codebook(key, i, num_codes, target.shape[1:]).reshape(num_codes, -1)  # (K, d)
    residual = (target - x0_hat).reshape(b, -1)  # (b, d)
    along = residual @ codebook.T  # (b, K): ⟨C[k], r⟩
    first = jnp.argmax(along, axis=-1).astype(jnp.int32)
    indices, coef_indices = [first], [jnp.zeros((b,), jnp.int32)]
    z = codebook[first]  # (b, d) the running (unnormalised) combination
    code_sq = jnp.sum(jnp.square(codebook), axis=-1)  # (K,)
    num_coefficients = coefficients.shape[0]
    for _ in range(num_atoms - 1):
        z_r = jnp.sum(z * residual, axis=-1)  # (b,)
        z_sq = jnp.sum(jnp.square(z), axis=-1)
        z_c = z @ codebook.T  # (b, K)
        g = coefficients[None, None, :]
        numerator = z_r[:, None, None] + g * along[:, :, None]  # (b, K, C)
        norm_sq = z_sq[:, None, None] + 2.0 * g * z_c[:, :, None] + jnp.square(g) * code_sq[None, :, None]
        score = numerator * jax.lax.rsqrt(jnp.maximum(norm_sq, 1e-12))  # cosine with r, up to ‖r‖
        best = jnp.argmax(score.reshape(b, -1), axis=-1)
        k, c = (best // num_coefficients).astype(jnp.int32), (best % num_coefficients).astype(jnp.int32)
        z = z + coefficients[c][:, None] * codebook[k]
        indices.append(k)
        coef_indices.append(c + 1)  # shift past atom 0's fixed coefficient 1
    return jnp.stack(indices, axis=-1), jnp.stack(coef_indices, axis=-1)


def _sampler(apply_fn, params, x_start, choose, *, key, schedule, times, prediction, clip_x0, num_codes, num_atoms, coefficients):
    """The shared DDCM sampling loop; ``choose(i, x0_hat) -> (idx, cidx)`` each (b, M).

    The loop runs on the host over compiled per-step programs (:func:`_predict`,
    :func:`_update`) that the encoder and the decoder share, so both compute
    the image with the same executables, hence bit for bit alike; the
    encoder's choice is a separate program that only produces indices. The
    programs are cached on ``apply_fn`` and ``schedule`` (static arguments):
    pass the same function objects across calls to compile once.
    """
    times = jnp.asarray(times, jnp.float32)
    gammas = jnp.asarray((1.0, *coefficients), jnp.float32)  # coefficient index 0 is atom 0's fixed 1
    n_noisy = times.shape[0] - 2
    static = dict(apply_fn=apply_fn, schedule=schedule, prediction=prediction, clip_x0=clip_x0)
    x, chosen = x_start, []
    for i in range(n_noisy):
        x0 = _predict(params, x, times, i, **static)
        idx, cidx = choose(i, x0)
        chosen.append((idx, cidx))
        x = _update(x, x0, times, i, key, idx, cidx, gammas, schedule=schedule, num_codes=num_codes, noisy=True)
    x0 = _predict(params, x, times, n_noisy, **static)  # the last step adds no noise
    x = _update(x, x0, times, n_noisy, key, None, None, gammas, schedule=schedule, num_codes=num_codes, noisy=False)
    if not chosen:
        empty = jnp.zeros((x_start.shape[0], 0, num_atoms), jnp.int32)
        return DDCMCode(empty, empty, x)
    return DDCMCode(jnp.stack([c[0] for c in chosen], axis=1), jnp.stack([c[1] for c in chosen], axis=1), x)


def ddcm_encode(
    apply_fn: ApplyFn,
    params: Params,
    x0: Array,
    *,
    key: Array,
    schedule: Schedule,
    times: Array,
    num_codes: int,
    prediction: Prediction = "eps",
    clip_x0: float | None = None,
    num_atoms: int = 1,
    coefficients: Sequence[float] = DEFAULT_COEFFICIENTS,
) -> DDCMCode:
    """Compresses images ``x0`` to the codebook indices that steer DDPM sampling towards them.

    Args:
      apply_fn: ``apply_fn(params, x, t) -> output`` (close over labels).
      params: network parameters.
      x0: ``(b, *features)`` targets.
      key: typed PRNG key that defines the codebooks and the start (shared with the decoder).
      schedule: ``t -> (α, σ, logSNR)``.
      times: (n + 1,) decreasing time grid (n sampler steps, n − 1 of them noisy).
      num_codes: K noises per step.
      prediction: what ``apply_fn`` predicts.
      clip_x0: clip x̂0 to [−clip_x0, clip_x0].
      num_atoms: M atoms per step (1: plain DDCM; > 1: matching pursuit).
      coefficients: the quantized coefficient set of atoms 2..M.

    Returns:
      :class:`DDCMCode` (indices, coefficient indices, reconstruction).

    References:
      Ohayon et al. 2025, "DDCM", arXiv:2502.01189.
    """
    _check_common(times, prediction, num_codes, num_atoms, coefficients)
    if not hasattr(x0, "ndim") or x0.ndim < 2 or not jnp.issubdtype(x0.dtype, jnp.floating):
        raise ValueError(f"x0 must be a floating array of shape (batch, *features), got {getattr(x0, 'shape', x0)}")
    gammas = jnp.asarray(tuple(coefficients), jnp.float32)

    def choose(i, x0_hat):
        return _choose(x0, x0_hat, key, i, gammas, num_codes=num_codes, num_atoms=num_atoms)

    return _sampler(
        apply_fn, params, ddcm_start(key, x0.shape, schedule=schedule, times=times), choose, key=key, schedule=schedule,
        times=times, prediction=prediction, clip_x0=clip_x0, num_codes=num_codes, num_atoms=num_atoms,
        coefficients=tuple(coefficients),
    )  # fmt: skip


def ddcm_decode(
    apply_fn: ApplyFn,
    params: Params,
    indices: Array,
    *,
    key: Array,
    schedule: Schedule,
    times: Array,
    num_codes: int,
    data_shape: Sequence[int],
    coefficient_indices: Array | None = None,
    prediction: Prediction = "eps",
    clip_x0: float | None = None,
    coefficients: Sequence[float] = DEFAULT_COEFFICIENTS,
) -> Array:
    """Reproduces the images of :func:`ddcm_encode` from their indices (same key, grid, K and model).

    Args:
      apply_fn, params, key, schedule, times, num_codes, prediction, clip_x0, coefficients: as given
        to :func:`ddcm_encode`.
      indices: (b, n − 1, M) int code indices.
      data_shape: shape of one example.
      coefficient_indices: (b, n − 1, M) coefficient indices; required when M > 1.

    Returns:
      ``(b, *data_shape)`` decoded images.

    References:
      Ohayon et al. 2025, "DDCM", arXiv:2502.01189.
    """
    indices = jnp.asarray(indices)
    if indices.ndim != 3 or not jnp.issubdtype(indices.dtype, jnp.integer):
        raise ValueError(f"indices must be an integer array of shape (batch, steps - 1, atoms), got {indices.shape} {indices.dtype}")
    num_atoms = indices.shape[-1]
    _check_common(times, prediction, num_codes, num_atoms, coefficients)
    if indices.shape[1] != times.shape[0] - 2:
        raise ValueError(f"indices must have {times.shape[0] - 2} steps (times has {times.shape[0]} points), got shape {indices.shape}")
    if coefficient_indices is None:
        if num_atoms > 1:
            raise ValueError("coefficient_indices are required when indices has more than one atom")
        coefficient_indices = jnp.zeros_like(indices)
    coefficient_indices = jnp.asarray(coefficient_indices)
    if coefficient_indices.shape != indices.shape:
        raise ValueError(f"coefficient_indices must have the shape of indices {indices.shape}, got {coefficient_indices.shape}")
    if not isinstance(indices, jax.core.Tracer) and indices.size and (int(indices.min()) < 0 or int(indices.max()) >= num_codes):
        raise ValueError(f"indices must lie in [0, {num_codes}), got range [{int(indices.min())}, {int(indices.max())}]")

    indices, coefficient_indices = indices.astype(jnp.int32), coefficient_indices.astype(jnp.int32)

    def choose(i, x0_hat):
        del x0_hat
        return indices[:, i], coefficient_indices[:, i]

    shape = (indices.shape[0], *data_shape)
    return _sampler(
        apply_fn, params, ddcm_start(key, shape, schedule=schedule, times=times), choose, key=key, schedule=schedule,
        times=times, prediction=prediction, clip_x0=clip_x0, num_codes=num_codes, num_atoms=num_atoms,
        coefficients=tuple(coefficients),
    ).reconstruction  # fmt: skip


def ddcm_generate(
    apply_fn: ApplyFn,
    params: Params,
    num: int,
    *,
    key: Array,
    index_key: Array,
    schedule: Schedule,
    times: Array,
    num_codes: int,
    data_shape: Sequence[int],
    prediction: Prediction = "eps",
    clip_x0: float | None = None,
) -> Array:
    """``num`` samples of the codebook sampler: uniformly random indices (from ``index_key``), decoded.

    References:
      Ohayon et al. 2025, "DDCM", arXiv:2502.01189.
    """
    indices = jax.random.randint(index_key, (num, times.shape[0] - 2, 1), 0, num_codes, jnp.int32)
    return ddcm_decode(
        apply_fn, params, indices, key=key, schedule=schedule, times=times, num_codes=num_codes,
        data_shape=data_shape, prediction=prediction, clip_x0=clip_x0,
    )  # fmt: skip
