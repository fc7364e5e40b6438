"""Closed-form denoisers, velocity fields and flow maps for Gaussian and point-mass data.

When the data is Gaussian, x0 ~ N(μ, Σ), and the noise standard normal,
every quantity a diffusion or flow network learns has a closed form, so the
exact "network" can stand in for a trained one: a sampler must then
reproduce (μ, Σ), a loss must vanish or be minimal, an ODE likelihood must
equal log N(x; μ, Σ). For x_t = α·x0 + σ·ε the pair (x0, x_t) is jointly
Gaussian and

    E[x0 | x_t] = μ + αΣ(α²Σ + σ²I)⁻¹(x_t − αμ),
    E[ε  | x_t] = σ(α²Σ + σ²I)⁻¹(x_t − αμ).

Conventions (jaxlab's): t ∈ [0, 1], **t = 0 is data, t = 1 is noise**;
flows interpolate x_t = (1 − t)·x0 + t·x1 with velocity v = x1 − x0, so
α = 1 − t, σ = t and the marginal velocity is E[x1 − x0 | x_t] = E[ε | x_t] − E[x0 | x_t].

The functions are written in ``jax.numpy`` so they trace under ``jit``,
``vmap`` and ``grad`` and can be passed (wrapped as ``lambda params, x, t: …``)
wherever jaxlab expects an ``apply_fn``. Features are the last axis (d,);
per-example coefficients (``t``, ``alpha``, ``sigma`` of shape (b,)) are
aligned with the *leading* axis of ``x``. The covariance ``cov`` is a
scalar (isotropic variance), a (d,) vector of per-coordinate variances or
a full (d, d) matrix; a concrete matrix is diagonalized once in float64.

References:
  Lipman et al. 2023, "Flow Matching for Generative Modeling" (arXiv:2210.02747).
  Liu, Gong, Liu 2023, "Flow Straight and Fast: Learning to Generate and
  Transfer Data with Rectified Flow" (arXiv:2209.03003).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

__all__ = [
    "gaussian_flow_velocity",
    "gaussian_log_density",
    "gaussian_posterior",
    "gaussian_reflow_velocity",
    "gaussian_transport_map",
    "point_mass_velocity",
]


def gaussian_posterior(x_t: ArrayLike, alpha: ArrayLike, sigma: ArrayLike, *, mean: ArrayLike, cov: ArrayLike) -> tuple[Array, Array]:
    """Posterior means ``(E[x0 | x_t], E[ε | x_t])`` for x_t = α·x0 + σ·ε, x0 ~ N(mean, cov), ε ~ N(0, I).

    Args:
      x_t: (..., d) noisy points.
      alpha: data coefficient, a scalar, (b,) per example, or broadcastable to ``x_t``.
      sigma: noise coefficient, same forms as ``alpha``.
      mean: (d,) data mean.
      cov: data covariance: scalar, (d,) variances or (d, d).

    Returns:
      ``(x0_hat, eps_hat)``, each shaped like ``x_t``. Any prediction kind
      (v, velocity, score = −eps_hat/σ) is a linear combination of these.
    """
    x_t = jnp.asarray(x_t)
    alpha, sigma = _per_example(alpha, x_t.ndim), _per_example(sigma, x_t.ndim)
    eigenvalues, rotation = _eigen(cov, x_t.shape[-1])
    # (α²Σ + σ²I)⁻¹(x − αμ), diagonal in Σ's eigenbasis
    residual = _apply(1.0 / (alpha**2 * eigenvalues + sigma**2), x_t - alpha * mean, rotation)
    x0_hat = alpha * _apply(eigenvalues, residual, rotation) + mean
    return x0_hat, sigma * residual


def gaussian_flow_velocity(x_t: ArrayLike, t: ArrayLike, *, mean: ArrayLike, cov: ArrayLike) -> Array:
    """The exact flow-matching velocity ``E[x1 − x0 | x_t]`` of x_t = (1 − t)·x0 + t·x1 for Gaussian data.

    The data is x0 ~ N(mean, cov), the noise x1 ~ N(0, I), independent.

    Args:
      x_t: (..., d) points on the path.
      t: time (scalar or (b,)); 0 is data, 1 is noise. Singular at t = 0 only
        when ``cov`` is singular.
      mean: (d,) data mean.
      cov: data covariance: scalar, (d,) variances or (d, d).

    Returns:
      Velocity shaped like ``x_t``; integrating it from t = 1 to 0 maps noise
      z to :func:`gaussian_transport_map` ``(z)``.
    """
    t = jnp.asarray(t)
    x0_hat, x1_hat = gaussian_posterior(x_t, 1.0 - t, t, mean=mean, cov=cov)
    return x1_hat - x0_hat


def point_mass_velocity(x_t: ArrayLike, t: ArrayLike, *, point: ArrayLike) -> Array:
    """The flow-matching velocity ``(x_t − a)/t`` when the data is the single point a (x0 = a).

    Every path is straight, so one Euler step from any t lands on a.

    Args:
      x_t: (..., d) points.
      t: time (scalar or (b,)) in (0, 1].
      point: (d,) the data point a.
    """
    x_t = jnp.asarray(x_t)
    return (x_t - point) / _per_example(t, x_t.ndim)


def gaussian_transport_map(z: ArrayLike, *, mean: ArrayLike, cov: ArrayLike) -> Array:
    """``mean + Σ^{1/2} z`` (symmetric root): where the flow ODE of :func:`gaussian_flow_velocity` takes noise z.

    All the path's covariances (1 − t)²Σ + t²I commute with Σ, so the ODE
    acts independently along Σ's eigenvectors as the monotone 1-D map
    z ↦ √λ·z.

    Args:
      z: (..., d) noise (the t = 1 end).
      mean: (d,) data mean.
      cov: data covariance: scalar, (d,) variances or (d, d).
    """
    z = jnp.asarray(z)
    eigenvalues, rotation = _eigen(cov, z.shape[-1])
    return _apply(jnp.sqrt(eigenvalues), z, rotation) + mean


def gaussian_reflow_velocity(x_t: ArrayLike, t: ArrayLike, *, mean: ArrayLike, cov: ArrayLike) -> Array:
    """The straight field of the deterministic coupling x0 = :func:`gaussian_transport_map` ``(x1)``.

    On the path x_t = (1 − t)·x0 + t·x1 = (1 − t)·μ + ((1 − t)Σ^{1/2} + tI)·x1
    the noise x1 is recovered from x_t, and the velocity is x1 − x0: what one
    round of ReFlow converges to. One Euler step from t = 1 is exact.

    Args:
      x_t: (..., d) points; t: time (scalar or (b,)); mean, cov: as in :func:`gaussian_flow_velocity`.
    """
    x_t = jnp.asarray(x_t)
    t = _per_example(t, x_t.ndim)
    eigenvalues, rotation = _eigen(cov, x_t.shape[-1])
    root = jnp.sqrt(eigenvalues)
    x1 = _apply(1.0 / ((1.0 - t) * root + t), x_t - (1.0 - t) * mean, rotation)
    return x1 - (mean + _apply(root, x1, rotation))


def gaussian_log_density(x: ArrayLike, *, mean: ArrayLike, cov: ArrayLike) -> Array:
    """log N(x; mean, cov) over the last axis, shape ``x.shape[:-1]``: the target of an exact ODE likelihood."""
    x = jnp.asarray(x)
    d = x.shape[-1]
    eigenvalues, rotation = _eigen(cov, d)
    diff = x - mean
    whitened = _apply(1.0 / jnp.sqrt(eigenvalues), diff, rotation)
    return -0.5 * jnp.sum(whitened**2, axis=-1) - 0.5 * jnp.sum(jnp.log(eigenvalues)) - 0.5 * d * math.log(2 * math.pi)


def _per_example(a: ArrayLike, ndim: int) -> Array:
    """Right-pads ``a``'s shape with ones to rank ``ndim`` (scalars stay scalars)."""
    a = jnp.asarray(a)
    return a.reshape(a.shape + (1,) * (ndim - a.ndim)) if 0 < a.ndim < ndim else a


def _eigen(cov: ArrayLike, d: int) -> tuple[Array, Array | None]:
    """(eigenvalues (d,), rotation (d, d) with cov = R diag(λ) Rᵀ), or rotation None for a diagonal cov."""
    if jnp.ndim(cov) <= 1:
        return jnp.broadcast_to(jnp.asarray(cov), (d,)), None
    if jnp.shape(cov) != (d, d):
        raise ValueError(f"`cov` must be a scalar, ({d},) or ({d}, {d}); got shape {jnp.shape(cov)}")
    if isinstance(cov, jax.core.Tracer):
        eigenvalues, rotation = jnp.linalg.eigh((cov + cov.T) / 2)
        return eigenvalues, rotation
    sym = np.asarray(cov, np.float64)
    eigenvalues, rotation = np.linalg.eigh((sym + sym.T) / 2)
    return jnp.asarray(eigenvalues), jnp.asarray(rotation)


def _apply(values: Array, x: Array, rotation: Array | None) -> Array:
    """f(Σ)·x for f(Σ) = R diag(values) Rᵀ, on the last axis (values broadcast against x)."""
    if rotation is None:
        return values * x
    return (x @ rotation * values) @ rotation.T
