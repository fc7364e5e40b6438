"""Samplers of Gaussian diffusion: ancestral DDPM, DDIM with η, and the probability-flow ODE.

Every sampler runs a decreasing time grid ``times`` (n + 1,) from noise
(``times[0]``, usually 1) to data (``times[-1]``, usually 0) and calls the
network as ``apply_fn(params, x, t)`` with ``t`` of shape (b,); the output is
read as ``prediction`` ("eps", "x0", "v" or "velocity") and turned into the
pair (x̂0, ε̂) by :func:`jaxlab.generative.schedules.to_x0_eps`. Class labels
or guidance go into ``apply_fn`` (close over them).

For one step t → s (s < t) write r = 1 − exp(λ_t − λ_s) ∈ [0, 1], the share
of σ_s² that the posterior q(x_s | x_t, x0) leaves uncertain. Then

* DDPM (ancestral):  x_s = (α_t σ_s² / (α_s σ_t²))·x_t + α_s·r·x̂0 + σ_s·√r·z,
* DDIM (η):          x_s = α_s·x̂0 + √(σ_s² − c²)·ε̂ + c·z,  c = η·σ_s·√r,
* PF-ODE:            dx/dt = α'·x̂0 + σ'·ε̂ (Euler or Heun on the grid),

and DDIM with η = 1 is algebraically the ancestral step. No noise is added
on the last step, so the output is the model's estimate at ``times[-1]``.

References:
  Ho, Jain, Abbeel 2020, "Denoising Diffusion Probabilistic Models".
  Song, Meng, Ermon 2021, "Denoising Diffusion Implicit Models".
  Song et al. 2021, "Score-Based Generative Modeling through SDEs" (probability-flow ODE).
  Karras et al. 2022, "Elucidating the Design Space" (Heun, Euler on the last step).
"""

from __future__ import annotations

from typing import Any, cast

import jax
import jax.numpy as jnp
from jax import Array

from jaxlab.base import ApplyFn, Params
from jaxlab.generative.schedules import Prediction, Schedule, check_prediction, coefficients, to_x0_eps

ODE_SOLVERS = ("euler", "heun")


def uniform_times(steps: int, *, t_max: float = 1.0, t_min: float = 0.0) -> Array:
    """The grid t_max = τ_0 > τ_1 > … > τ_steps = t_min; shape (steps + 1,)."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not 0.0 <= t_min < t_max <= 1.0:
        raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    return jnp.linspace(t_max, t_min, steps + 1, dtype=jnp.float32)


def _check_inputs(x_start: Array, times: Array, prediction: str) -> None:
    if not hasattr(x_start, "ndim") or x_start.ndim < 2:
        raise ValueError(f"x_start must have shape (batch, *features), got {getattr(x_start, 'shape', x_start)}")
    if not jnp.issubdtype(x_start.dtype, jnp.floating):
        raise ValueError(f"x_start must be a floating array, got dtype {x_start.dtype}")
    if getattr(times, "ndim", None) != 1 or times.shape[0] < 2:
        raise ValueError(f"times must have shape (steps + 1,) with steps >= 1, got {getattr(times, 'shape', times)}")
    check_prediction(prediction)


def denoise(
    apply_fn: ApplyFn,
    params: Params,
    x: Array,
    t: Array,
    *,
    schedule: Schedule,
    prediction: Prediction,
    clip_x0: float | None = None,
) -> tuple[Array, Array]:
    """The model's (x̂0, ε̂) at (x, t), t a scalar; with ``clip_x0`` x̂0 is clipped and ε̂ recomputed."""
    tb = jnp.full(x.shape[:1], t, jnp.float32)
    c = coefficients(schedule, tb, x.ndim)
    x0, eps = to_x0_eps(prediction, apply_fn(params, x, tb), x, c)
    if clip_x0 is not None:
        x0 = jnp.clip(x0, -clip_x0, clip_x0)
        eps = (x - c.alpha * x0) / c.sigma
    return x0, eps


def _posterior_share(schedule: Schedule, t: Array, s: Array) -> tuple[Any, Any, Array]:
    """Schedule values at t and s, and r = 1 − exp(λ_t − λ_s) (clipped to [0, 1])."""
    at_t, at_s = schedule(t), schedule(s)
    r = jnp.clip(-jnp.expm1(at_t.logsnr - at_s.logsnr), 0.0, 1.0)
    return at_t, at_s, r


def sample_ddpm(
    apply_fn: ApplyFn,
    params: Params,
    x_start: Array,
    *,
    key: Array,
    schedule: Schedule,
    times: Array,
    prediction: Prediction = "eps",
    clip_x0: float | None = None,
) -> Array:
    """Ancestral sampling: draws x_s ~ q(x_s | x_t, x0 = x̂0) down the grid.

    Args:
      apply_fn: ``apply_fn(params, x, t) -> output``.
      params: network parameters.
      x_start: ``(b, *features)`` start at ``times[0]`` (σ(times[0])·N(0, I)).
      key: typed PRNG key for the per-step noise.
      schedule: ``t -> (α, σ, logSNR)``.
      times: (n + 1,) decreasing grid.
      prediction: what ``apply_fn`` predicts.
      clip_x0: clip x̂0 to [−clip_x0, clip_x0] (e.g. 1 for data in [−1, 1]).

    Returns:
      ``(b, *features)`` samples at ``times[-1]``.

    References:
      Ho, Jain, Abbeel 2020, "DDPM", eq. 6–7 and Algorithm 2.
    """
    _check_inputs(x_start, times, prediction)
    last = times.shape[0] - 2

    def body(i, x):
        t, s = times[i], times[i + 1]
        x0, _ = denoise(apply_fn, params, x, t, schedule=schedule, prediction=prediction, clip_x0=clip_x0)
        at_t, at_s, r = _posterior_share(schedule, t, s)
        # α_t σ_s² / (α_s σ_t²) = α_{t|s}·σ_s²/σ_t², written without dividing by a vanishing α_t.
        keep = at_t.alpha * jnp.square(at_s.sigma) / (at_s.alpha * jnp.square(at_t.sigma))
        mean = keep * x + at_s.alpha * r * x0
        noise = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
        return mean + jnp.where(i < last, at_s.sigma * jnp.sqrt(r), 0.0) * noise

    return jax.lax.fori_loop(0, times.shape[0] - 1, body, x_start)


def sample_ddim(
    apply_fn: ApplyFn,
    params: Params,
    x_start: Array,
    *,
    schedule: Schedule,
    times: Array,
    prediction: Prediction = "eps",
    eta: float = 0.0,
    key: Array | None = None,
    clip_x0: float | None = None,
) -> Array:
    """DDIM: x_s = α_s·x̂0 + √(σ_s² − c²)·ε̂ + c·z with c = η·σ_s·√r.

    η = 0 is deterministic (the DDIM ODE step; no key needed), η = 1 is
    ancestral DDPM.

    Args:
      apply_fn, params, x_start, schedule, times, prediction, clip_x0: as in :func:`sample_ddpm`.
      eta: stochasticity in [0, 1].
      key: typed PRNG key; required when ``eta > 0``.

    Returns:
      ``(b, *features)`` samples at ``times[-1]``.

    References:
      Song, Meng, Ermon 2021, "DDIM", eq. 12 and 16.
    """
    _check_inputs(x_start, times, prediction)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta!r}")
    if eta > 0 and key is None:
        raise ValueError("key is required when eta > 0")
    last = times.shape[0] - 2

    def body(i, x):
        t, s = times[i], times[i + 1]
        x0, eps = denoise(apply_fn, params, x, t, schedule=schedule, prediction=prediction, clip_x0=clip_x0)
        _, at_s, r = _posterior_share(schedule, t, s)
        if eta == 0:  # deterministic: no noise is drawn at all
            return at_s.alpha * x0 + at_s.sigma * eps
        c = jnp.where(i < last, eta * at_s.sigma * jnp.sqrt(r), 0.0)
        direction = jnp.sqrt(jnp.maximum(jnp.square(at_s.sigma) - jnp.square(c), 0.0))
        noise = jax.random.normal(jax.random.fold_in(cast(Array, key), i), x.shape, x.dtype)  # eta > 0: key was checked
        return at_s.alpha * x0 + direction * eps + c * noise

    return jax.lax.fori_loop(0, times.shape[0] - 1, body, x_start)


def velocity(apply_fn: ApplyFn, params: Params, x: Array, t: Array, *, schedule: Schedule, prediction: Prediction) -> Array:
    """The probability-flow velocity dx/dt = α'·x̂0 + σ'·ε̂ at (x, t), t of shape (b,)."""
    output = apply_fn(params, x, t)
    if prediction == "velocity":
        return output
    c = coefficients(schedule, t, x.ndim)
    x0, eps = to_x0_eps(prediction, output, x, c)
    return c.dalpha * x0 + c.dsigma * eps


def sample_pf_ode(
    apply_fn: ApplyFn,
    params: Params,
    x_start: Array,
    *,
    schedule: Schedule,
    times: Array,
    prediction: Prediction = "eps",
    solver: str = "heun",
) -> Array:
    """Integrates the probability-flow ODE dx/dt = α'·x̂0 + σ'·ε̂ down the grid.

    Heun's corrector is skipped on a step that ends at t = 0, where σ may
    vanish (as in EDM's Algorithm 1).

    Args:
      apply_fn, params, x_start, schedule, times, prediction: as in :func:`sample_ddpm`.
      solver: ``"euler"`` or ``"heun"`` (two evaluations per step).

    Returns:
      ``(b, *features)`` samples at ``times[-1]``.

    References:
      Song et al. 2021, "Score SDE", eq. 13; Karras et al. 2022, "EDM", Algorithm 1.
    """
    _check_inputs(x_start, times, prediction)
    if solver not in ODE_SOLVERS:
        raise ValueError(f"solver must be one of {ODE_SOLVERS}, got {solver!r}")

    def field(x, t):
        return velocity(apply_fn, params, x, jnp.full(x.shape[:1], t, jnp.float32), schedule=schedule, prediction=prediction)

    def body(i, x):
        t, s = times[i], times[i + 1]
        u = field(x, t)
        x_euler = x + (s - t) * u
        if solver == "euler":
            return x_euler
        x_heun = x + 0.5 * (s - t) * (u + field(x_euler, s))
        return jnp.where(s > 0, x_heun, x_euler)

    return jax.lax.fori_loop(0, times.shape[0] - 1, body, x_start)
