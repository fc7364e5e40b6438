"""Noise schedules of Gaussian diffusion and the straight flow path, as pure functions of t.

Convention (DESIGN.md): t ∈ [0, 1], **t = 0 is data, t = 1 is noise**. Every
schedule describes the forward marginal

    x_t = α_t · x0 + σ_t · ε,      ε ~ N(0, I),

and is a function ``schedule(t) -> ScheduleValues(alpha, sigma, logsnr)`` with
``logsnr = log(α_t² / σ_t²)``, decreasing in t. Variance-preserving (VP)
schedules have α² + σ² = 1 and are defined here through their logSNR:
α² = sigmoid(λ), σ² = sigmoid(−λ). The straight flow path α = 1 − t, σ = t
(rectified flow) is not VP.

Papers that run time the other way (DDPM counts steps from data, so its
step i is our t = i / N; EDM indexes σ from large to small) are rewritten in
this convention, not ported literally.

References:
  Ho, Jain, Abbeel 2020, "Denoising Diffusion Probabilistic Models" (linear β).
  Song et al. 2021, "Score-Based Generative Modeling through SDEs" (the
  continuous VP form of the linear β schedule).
  Nichol, Dhariwal 2021, "Improved Denoising Diffusion Probabilistic Models" (cosine).
  Kingma et al. 2021, "Variational Diffusion Models" (logSNR parameterisation).
  Hoogeboom, Heek, Salimans 2023, "simple diffusion: End-to-end diffusion for
  high resolution images" (logSNR-cosine, its resolution shift and interpolation).
  Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
  Generative Models" (the σ grid).
  Liu, Gong, Liu 2022, "Flow Straight and Fast" (the straight path).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array


class ScheduleValues(NamedTuple):
    """α_t, σ_t and logSNR_t, each of the shape of ``t``."""

    alpha: Array
    sigma: Array
    logsnr: Array


Schedule = Callable[[Array], ScheduleValues]

LOGSNR_MIN, LOGSNR_MAX = -15.0, 15.0


def vp_from_logsnr(logsnr: Array) -> ScheduleValues:
    """The variance-preserving (α, σ) of a logSNR: α² = sigmoid(λ), σ² = sigmoid(−λ)."""
    logsnr = jnp.asarray(logsnr, jnp.float32)
    return ScheduleValues(jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr)), logsnr)


def _cosine_endpoints(logsnr_min: float, logsnr_max: float) -> tuple[float, float]:
    """The angles b = atan(e^{−λmax/2}) and a = atan(e^{−λmin/2}) − b of the clipped cosine."""
    if not logsnr_min < logsnr_max:
        raise ValueError(f"logsnr_min must be < logsnr_max, got {logsnr_min} and {logsnr_max}")
    start = math.atan(math.exp(-0.5 * logsnr_max))
    return start, math.atan(math.exp(-0.5 * logsnr_min)) - start


def logsnr_cosine(t: Array, *, logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX) -> Array:
    """logSNR of the cosine schedule, −2·log tan(a·t + b), clipped to [logsnr_min, logsnr_max].

    Unclipped (a = π/2, b = 0) this is α = cos(πt/2), σ = sin(πt/2). The
    clipping maps t = 0 to ``logsnr_max`` and t = 1 to ``logsnr_min`` exactly,
    so α and σ never vanish.

    Args:
      t: times in [0, 1], any shape.
      logsnr_min: logSNR at t = 1 (noise end).
      logsnr_max: logSNR at t = 0 (data end).

    Returns:
      logSNR, the shape of ``t``.

    References:
      Hoogeboom, Heek, Salimans 2023, "simple diffusion".
    """
    start, width = _cosine_endpoints(logsnr_min, logsnr_max)
    return -2.0 * jnp.log(jnp.tan(start + width * jnp.asarray(t, jnp.float32)))


def logsnr_cosine_inverse(logsnr: Array, *, logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX) -> Array:
    """The t at which :func:`logsnr_cosine` equals ``logsnr`` (clipped to [0, 1])."""
    start, width = _cosine_endpoints(logsnr_min, logsnr_max)
    t = (jnp.arctan(jnp.exp(-0.5 * jnp.asarray(logsnr, jnp.float32))) - start) / width
    return jnp.clip(t, 0.0, 1.0)


def logsnr_cosine_shifted(
    t: Array,
    *,
    image_d: int,
    noise_d: int = 64,
    logsnr_min: float = LOGSNR_MIN,
    logsnr_max: float = LOGSNR_MAX,
) -> Array:
    """The cosine logSNR shifted for resolution: ``logsnr_cosine(t) + 2·log(noise_d / image_d)``.

    At resolution ``image_d`` the shifted schedule has, after average-pooling
    to ``noise_d``, the SNR the plain schedule has at ``noise_d``: pooling
    k×k pixels divides the noise variance by k² and so adds 2·log k to logSNR.

    Args:
      t: times in [0, 1].
      image_d: side length of the images being generated.
      noise_d: side length the unshifted schedule is tuned for.
      logsnr_min: logSNR of the base (unshifted) schedule at t = 1.
      logsnr_max: logSNR of the base schedule at t = 0.

    References:
      Hoogeboom, Heek, Salimans 2023, "simple diffusion", Section 3.1.
    """
    for name, value in (("image_d", image_d), ("noise_d", noise_d)):
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")
    return logsnr_cosine(t, logsnr_min=logsnr_min, logsnr_max=logsnr_max) + 2.0 * math.log(noise_d / image_d)


def logsnr_cosine_interpolated(t: Array, *, image_d: int, noise_d_low: int = 32, noise_d_high: int = 256) -> Array:
    """``t·shifted(noise_d_low) + (1 − t)·shifted(noise_d_high)``: more shift near noise, less near data.

    References:
      Hoogeboom, Heek, Salimans 2023, "simple diffusion", Section 3.1.
    """
    t = jnp.asarray(t, jnp.float32)
    low = logsnr_cosine_shifted(t, image_d=image_d, noise_d=noise_d_low)
    high = logsnr_cosine_shifted(t, image_d=image_d, noise_d=noise_d_high)
    return t * low + (1.0 - t) * high


def cosine(t: Array, *, logsnr_min: float = LOGSNR_MIN, logsnr_max: float = LOGSNR_MAX) -> ScheduleValues:
    """VP schedule of :func:`logsnr_cosine` (the default of jaxlab's diffusion models)."""
    return vp_from_logsnr(logsnr_cosine(t, logsnr_min=logsnr_min, logsnr_max=logsnr_max))


def cosine_shifted(t: Array, *, image_d: int, noise_d: int = 64) -> ScheduleValues:
    """VP schedule of :func:`logsnr_cosine_shifted`."""
    return vp_from_logsnr(logsnr_cosine_shifted(t, image_d=image_d, noise_d=noise_d))


def cosine_interpolated(t: Array, *, image_d: int, noise_d_low: int = 32, noise_d_high: int = 256) -> ScheduleValues:
    """VP schedule of :func:`logsnr_cosine_interpolated`."""
    return vp_from_logsnr(logsnr_cosine_interpolated(t, image_d=image_d, noise_d_low=noise_d_low, noise_d_high=noise_d_high))


def cosine_nichol(t: Array, *, offset: float = 0.008) -> ScheduleValues:
    """Nichol & Dhariwal's cosine: ᾱ(t) = f(t)/f(0), f(t) = cos²(π/2 · (t + s)/(1 + s)).

    α reaches 0 at t = 1 (logSNR −∞), so sample from t slightly below 1 or
    use a prediction that does not divide by α there.

    References:
      Nichol, Dhariwal 2021, "Improved DDPM", eq. 17.
    """
    t = jnp.asarray(t, jnp.float32)
    angle = lambda u: 0.5 * math.pi * (u + offset) / (1.0 + offset)
    alpha = jnp.clip(jnp.cos(angle(t)) / math.cos(angle(0.0)), 0.0, 1.0)
    sigma = jnp.sqrt(1.0 - jnp.square(alpha))
    return ScheduleValues(alpha, sigma, 2.0 * (jnp.log(alpha) - jnp.log(sigma)))


def _vp_from_log_alpha_bar(log_alpha_bar: Array) -> ScheduleValues:
    """VP values from log ᾱ = log α², with σ² = −expm1(log ᾱ) computed without cancellation."""
    sigma_sq = -jnp.expm1(log_alpha_bar)
    return ScheduleValues(jnp.exp(0.5 * log_alpha_bar), jnp.sqrt(sigma_sq), log_alpha_bar - jnp.log(sigma_sq))


def ddpm_linear(t: Array, *, beta_min: float = 0.1, beta_max: float = 20.0) -> ScheduleValues:
    """The continuous linear-β (VP-SDE) schedule: log ᾱ(t) = −(β_min·t + (β_max − β_min)·t²/2).

    It is the N → ∞ limit of DDPM's discrete β_i = linspace(β_min/N, β_max/N, N);
    σ(0) = 0, so logSNR(0) = +∞.

    References:
      Song et al. 2021, "Score-Based Generative Modeling through SDEs", eq. 33.
    """
    t = jnp.asarray(t, jnp.float32)
    return _vp_from_log_alpha_bar(-(beta_min * t + 0.5 * (beta_max - beta_min) * jnp.square(t)))


def ddpm_log_alpha_bars(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Array:
    """log ᾱ_i = Σ_{j ≤ i} log(1 − β_j) for i = 0 … N, with ᾱ_0 = 1 (clean data); shape (N + 1,)."""
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    betas = jnp.linspace(beta_start, beta_end, num_steps, dtype=jnp.float32)
    return jnp.concatenate([jnp.zeros(1), jnp.cumsum(jnp.log1p(-betas))])


def ddpm_linear_discrete(t: Array, *, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> ScheduleValues:
    """DDPM's discrete linear-β schedule: step i is t = i / N, exact on that grid.

    Between grid points log ᾱ is interpolated linearly, so the schedule is
    continuous in t and has the derivative the probability-flow ODE needs.

    References:
      Ho, Jain, Abbeel 2020, "DDPM", Section 4 (β from 1e-4 to 0.02, N = 1000).
    """
    grid = ddpm_log_alpha_bars(num_steps, beta_start, beta_end)  # (N + 1,)
    position = jnp.clip(jnp.asarray(t, jnp.float32), 0.0, 1.0) * num_steps
    return _vp_from_log_alpha_bar(jnp.interp(position, jnp.arange(num_steps + 1, dtype=jnp.float32), grid))


def linear_path(t: Array) -> ScheduleValues:
    """The straight path of rectified flow / flow matching: α = 1 − t, σ = t (not VP)."""
    t = jnp.asarray(t, jnp.float32)
    return ScheduleValues(1.0 - t, t, 2.0 * (jnp.log1p(-t) - jnp.log(t)))


def karras_sigmas(num_steps: int, *, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> Array:
    """EDM's σ grid σ_i = (σ_max^{1/ρ} + i/(n−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, decreasing; shape (n,).

    EDM's σ is the noise-to-signal ratio σ_t/α_t, so logSNR = −2·log σ; use
    :func:`times_for_sigmas` to turn the grid into times of a schedule.

    References:
      Karras et al. 2022, "Elucidating the Design Space", eq. 5.
    """
    if not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"num_steps must be an int >= 2, got {num_steps!r}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
    ramp = jnp.linspace(0.0, 1.0, num_steps)
    inv_max, inv_min = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return (inv_max + ramp * (inv_min - inv_max)) ** rho


def time_at_logsnr(schedule: Schedule, logsnr: Array, *, iterations: int = 40) -> Array:
    """The t ∈ [0, 1] with ``schedule(t).logsnr == logsnr``, by bisection (logSNR decreasing in t).

    Targets above logSNR(0) give 0 and below logSNR(1) give 1.
    """
    target = jnp.asarray(logsnr, jnp.float32)

    def body(_, bounds):
        low, high = bounds
        middle = 0.5 * (low + high)
        too_noisy = schedule(middle).logsnr < target  # the answer lies at smaller t
        return jnp.where(too_noisy, low, middle), jnp.where(too_noisy, middle, high)

    low, high = jax.lax.fori_loop(0, iterations, body, (jnp.zeros_like(target), jnp.ones_like(target)))
    return 0.5 * (low + high)


def times_for_sigmas(schedule: Schedule, sigmas: Array) -> Array:
    """Times at which ``schedule`` has EDM noise level σ = σ_t/α_t (i.e. logSNR = −2·log σ)."""
    return time_at_logsnr(schedule, -2.0 * jnp.log(jnp.asarray(sigmas, jnp.float32)))


# --- Conversions between what a network predicts ----------------------------------------------

Prediction = str  # "eps" | "x0" | "v" | "velocity"
PREDICTIONS = ("eps", "x0", "v", "velocity")


class Coefficients(NamedTuple):
    """α_t, σ_t and their time derivatives, broadcast against a batch (b, 1, …, 1)."""

    alpha: Array
    sigma: Array
    dalpha: Array
    dsigma: Array


def check_prediction(prediction: str) -> None:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def coefficients(schedule: Schedule, t: Array, ndim: int) -> Coefficients:
    """α, σ, dα/dt, dσ/dt at times ``t`` (b,), reshaped to (b, 1, …, 1) for a batch of rank ``ndim``.

    The derivatives come from forward-mode autodiff of the schedule.
    """
    t = jnp.asarray(t, jnp.float32)

    def alpha_sigma(u):
        values = schedule(u)
        return values.alpha, values.sigma

    (alpha, sigma), (dalpha, dsigma) = jax.jvp(alpha_sigma, (t,), (jnp.ones_like(t),))
    shape = t.shape + (1,) * (ndim - t.ndim)
    return Coefficients(*(jnp.reshape(c, shape) for c in (alpha, sigma, dalpha, dsigma)))


def to_x0_eps(prediction: Prediction, output: Array, x_t: Array, c: Coefficients) -> tuple[Array, Array]:
    """(x0, ε) implied by a network ``output`` of kind ``prediction`` at the point ``x_t``.

    With x_t = α·x0 + σ·ε:
      * ``"eps"``: x0 = (x_t − σ·ε)/α;
      * ``"x0"``: ε = (x_t − α·x0)/σ;
      * ``"v"`` (Salimans & Ho 2022, v = α·ε − σ·x0): x0 = (α·x_t − σ·v)/(α² + σ²),
        ε = (σ·x_t + α·v)/(α² + σ²);
      * ``"velocity"`` (u = dx_t/dt = α'·x0 + σ'·ε, the flow-matching target):
        solve the 2×2 system with determinant α·σ' − σ·α'.

    References:
      Salimans, Ho 2022, "Progressive Distillation for Fast Sampling of Diffusion Models" (v).
    """
    check_prediction(prediction)
    if prediction == "eps":
        return (x_t - c.sigma * output) / c.alpha, output
    if prediction == "x0":
        return output, (x_t - c.alpha * output) / c.sigma
    if prediction == "v":
        norm = jnp.square(c.alpha) + jnp.square(c.sigma)
        return (c.alpha * x_t - c.sigma * output) / norm, (c.sigma * x_t + c.alpha * output) / norm
    det = c.alpha * c.dsigma - c.sigma * c.dalpha
    return (c.dsigma * x_t - c.sigma * output) / det, (c.alpha * output - c.dalpha * x_t) / det


def from_x0_eps(prediction: Prediction, x0: Array, eps: Array, c: Coefficients) -> Array:
    """The target of kind ``prediction`` for a clean sample ``x0`` and its noise ``eps``."""
    check_prediction(prediction)
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return c.alpha * eps - c.sigma * x0
    return c.dalpha * x0 + c.dsigma * eps


def convert_prediction(output: Array, x_t: Array, t: Array, *, schedule: Schedule, source: Prediction, target: Prediction) -> Array:
    """Re-expresses a network output of kind ``source`` as kind ``target`` at (x_t, t)."""
    c = coefficients(schedule, t, x_t.ndim)
    return from_x0_eps(target, *to_x0_eps(source, output, x_t, c), c)


def eps_error_scale(prediction: Prediction, c: Coefficients) -> Array:
    """``s`` with ‖Δε‖² = s·‖Δoutput‖² at fixed x_t: converts an output-space MSE to an ε-space MSE.

    eps: 1; x0: α²/σ²; v: α²/(α² + σ²)²; velocity: α²/(α·σ' − σ·α')².
    """
    check_prediction(prediction)
    if prediction == "eps":
        return jnp.ones_like(c.alpha)
    if prediction == "x0":
        return jnp.square(c.alpha / c.sigma)
    if prediction == "v":
        return jnp.square(c.alpha / (jnp.square(c.alpha) + jnp.square(c.sigma)))
    return jnp.square(c.alpha / (c.alpha * c.dsigma - c.sigma * c.dalpha))
