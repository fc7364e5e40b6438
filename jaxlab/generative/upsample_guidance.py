"""Upsample guidance: sample at m× the training resolution with a low-resolution diffusion model.

A convolutional denoiser trained on H×W images can be run on mH×mW noise,
but alone it produces textures without global structure. Upsample guidance
(Hwang, Park, Jo 2024) adds one term per step: average-pooling the noisy
high-resolution image, D(x_t) = α_t·D(x0) + σ_t·D(ε), divides the noise
variance by m², so D(x_t) is a *low-resolution* noisy image at a time τ
with higher SNR,

    logSNR(τ) = logSNR(t) + 2·log m        (time adjustment),

once rescaled by c = √((α_τ² + σ_τ²)/(α_t² + σ_t²/m²)) so that
c·D(x_t) = α_τ·D(x0) + σ_τ·ε' (power adjustment; c = 1/√(α_t² + σ_t²/m²)
for VP schedules). The model's prediction ε̂' there says what D(ε) should
be, ε̂'/m, and the guided noise prediction replaces the low-frequency part
of the high-resolution one by it:

    ε̃ = ε̂ + w_t · U(ε̂'/m − D(ε̂)),

with U nearest-neighbour upsampling (D∘U = id) and w_t = w on the noisiest
fraction η of the trajectory (t ≥ 1 − η), 0 after. At the same x_t this is
exactly x̃0 = x̂0 + w_t·U(x̂0' − D(x̂0)) (x̂0' the low-resolution model's
clean estimate), and the guided pair is returned as a v-prediction, which
samplers convert back without dividing by a vanishing α_t. With m = 1,
τ = t and the term vanishes: plain sampling.

Time runs from data (t = 0) to noise (t = 1), as in the paper's sampler.

References:
  Hwang, Park, Jo 2024, "Upsample Guidance: Scale Up Diffusion Models
  without Training" (arXiv:2404.01709).
  Hoogeboom, Heek, Salimans 2023, "simple diffusion" (SNR under average pooling).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

from jaxlab.base import ApplyFn, Params
from jaxlab.generative.schedules import Prediction, Schedule, check_prediction, coefficients, from_x0_eps, time_at_logsnr, to_x0_eps

OUTPUT_PREDICTION = "v"


def _check_factor(x: Array, factor: int) -> None:
    if not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be a positive int, got {factor!r}")
    if x.ndim != 4 or x.shape[1] % factor or x.shape[2] % factor:
        raise ValueError(f"x must have shape (batch, height, width, channels) with height and width divisible by {factor}, got {x.shape}")


def average_pool(x: Array, factor: int) -> Array:
    """D: the mean of each factor×factor block; (b, H, W, c) -> (b, H/m, W/m, c)."""
    _check_factor(x, factor)
    b, h, w, c = x.shape
    return x.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def nearest_upsample(x: Array, factor: int) -> Array:
    """U: repeat each pixel factor×factor times; (b, h, w, c) -> (b, m·h, m·w, c), with D(U(x)) = x."""
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def snr_matched_time(t: Array, *, schedule: Schedule, factor: int) -> Array:
    """τ with logSNR(τ) = logSNR(t) + 2·log(factor): the time of an average-pooled x_t (0 if off the schedule)."""
    return time_at_logsnr(schedule, schedule(t).logsnr + 2.0 * jnp.log(jnp.float32(factor)))


def guidance_weight(t: Array, *, scale: float, fraction: float) -> Array:
    """w_t = scale on the noisiest ``fraction`` of the trajectory (t ≥ 1 − fraction), else 0."""
    return jnp.where(t >= 1.0 - fraction, scale, 0.0)


def upsample_guidance(
    apply_fn: ApplyFn,
    *,
    schedule: Schedule,
    prediction: Prediction,
    factor: int,
    scale: float = 1.0,
    fraction: float = 0.6,
) -> ApplyFn:
    """Wraps a low-resolution network into ``(params, x, t) -> guided v-prediction`` at m× resolution.

    Args:
      apply_fn: ``apply_fn(params, x, t) -> output`` of kind ``prediction``,
        convolutional so it runs at both resolutions (labels and classifier-
        free guidance closed over, e.g. ``Diffusion.network(labels)``).
      schedule: the model's schedule.
      prediction: what ``apply_fn`` predicts.
      factor: m, the resolution multiplier (height and width of x divisible by it).
      scale: guidance weight w (0 turns the guidance off).
      fraction: η, the share of the trajectory nearest to noise that is guided.

    Returns:
      ``guided(params, x, t)`` returning a ``"v"`` prediction (see
      :data:`OUTPUT_PREDICTION`); sample with ``prediction="v"``.

    References:
      Hwang, Park, Jo 2024, "Upsample Guidance", eq. for ε̃ with the time and power adjustments.
    """
    check_prediction(prediction)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction!r}")

    def guided(params: Params, x: Array, t: Array) -> Array:  # (b, mH, mW, c), (b,) -> (b, mH, mW, c)
        _check_factor(x, factor)
        c_high = coefficients(schedule, t, x.ndim)
        x0, eps = to_x0_eps(prediction, apply_fn(params, x, t), x, c_high)
        tau = snr_matched_time(t, schedule=schedule, factor=factor)
        c_low = coefficients(schedule, tau, x.ndim)
        power = jnp.sqrt((c_low.alpha**2 + c_low.sigma**2) / (c_high.alpha**2 + (c_high.sigma / factor) ** 2))
        x_low = power * average_pool(x, factor)
        x0_low, eps_low = to_x0_eps(prediction, apply_fn(params, x_low, tau), x_low, c_low)
        weight = guidance_weight(t, scale=scale, fraction=fraction).reshape(c_high.alpha.shape)
        x0 = x0 + weight * nearest_upsample(x0_low - average_pool(x0, factor), factor)
        eps = eps + weight * nearest_upsample(eps_low / factor - average_pool(eps, factor), factor)
        return from_x0_eps(OUTPUT_PREDICTION, x0, eps, c_high)

    return guided
