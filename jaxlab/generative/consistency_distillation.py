"""Consistency distillation (CD) from a flow-matching (or EDM denoiser) teacher.

CD trains the consistency function f_θ of :mod:`jaxlab.generative.consistency`
so that adjacent points of the *teacher's* probability-flow ODE map to the same
origin: with ``x̃_{i+1} = x0 + σ_{i+1}·z``, one Heun step of the teacher's ODE
``dx̃/dσ = (x̃ − D(x̃, σ))/σ`` gives ``x̂_i`` at σ_i, and the loss is
``d(f_θ(x̃_{i+1}, σ_{i+1}), f_θ⁻(x̂_i, σ_i))``.

The teacher is by default a jaxlab flow-matching velocity network
``v(x_t, t)`` (t = 0 data, ``x_t = (1 − t)·x0 + t·z``). On the straight path,
``x̃ = x_t/(1 − t) = x0 + σ·z`` with ``σ = t/(1 − t)``, so the teacher's
denoiser in EDM coordinates is

    D(x̃, σ) = x_t − t·v(x_t, t),   t = σ/(1 + σ),   x_t = x̃/(1 + σ),

and CD runs entirely in EDM's σ coordinates with EDM's Heun step and the
consistency scalings of the paper. A teacher that already is an EDM denoiser
``D(x̃, σ)`` can be used with ``teacher_parametrization="denoiser"``.

The target network θ⁻ is either the stop-gradient online network
(``target="online"``, μ = 0, which Song & Dhariwal 2023 found better for CT)
or the trainer's EMA parameters (``target="ema"``, μ = the trainer's
``ema_decay``; the paper's CD used a fixed μ = 0.95 on CIFAR-10).

References:
  Song, Dhariwal, Chen, Sutskever 2023, "Consistency Models", Algorithm 2
  (arXiv:2303.01469).
  Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
  Generative Models", Algorithm 1 (Heun step) (arXiv:2206.00364).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal, cast

import jax
import jax.numpy as jnp
from jax import Array

from jaxlab.base import Context
from jaxlab.generative._common import along_batch, check_data
from jaxlab.generative.consistency import (
    EPS,
    RHO,
    SIGMA_DATA,
    SIGMA_MAX,
    ApplyFn,
    Metric,
    Params,
    _check_positive_int,
    _ConsistencyAdapter,
    consistency_function,
    distance,
    karras_sigma,
    sigma_to_time,
)

TeacherParametrization = Literal["velocity", "denoiser"]
Target = Literal["online", "ema"]


def velocity_denoiser(teacher_apply_fn: ApplyFn, teacher_params: Params, x: Array, sigma: Array) -> Array:
    """EDM denoiser ``D(x̃, σ)`` of a flow-matching velocity network on the straight path.

    Args:
      teacher_apply_fn: ``v = teacher_apply_fn(params, x_t, t)`` (jaxlab's flow convention).
      teacher_params: its parameters.
      x: ``(b, *features)`` points ``x̃ = x0 + σ·z``.
      sigma: (b,) noise levels.

    Returns:
      ``(b, *features)`` data estimates ``x_t − t·v(x_t, t)``.
    """
    t = sigma_to_time(sigma)  # (b,)
    x_t = x / along_batch(1.0 + sigma, x)
    return x_t - along_batch(t, x) * teacher_apply_fn(teacher_params, x_t, t)


def heun_step(denoiser: Callable[[Array, Array], Array], x: Array, sigma_from: Array, sigma_to: Array) -> Array:
    """One Heun step of ``dx̃/dσ = (x̃ − D(x̃, σ))/σ`` from ``sigma_from`` to ``sigma_to`` (both (b,), > 0)."""
    s_from, s_to = along_batch(sigma_from, x), along_batch(sigma_to, x)
    slope = (x - denoiser(x, sigma_from)) / s_from
    x_euler = x + (s_to - s_from) * slope
    slope_end = (x_euler - denoiser(x_euler, sigma_to)) / s_to
    return x + (s_to - s_from) * 0.5 * (slope + slope_end)


def consistency_distillation_loss(
    apply_fn: ApplyFn,
    params: Params,
    target_params: Params,
    teacher_apply_fn: ApplyFn,
    teacher_params: Params,
    x0: Array,
    *,
    key: Array,
    num_scales: int = 18,
    teacher_parametrization: TeacherParametrization = "velocity",
    metric: Metric = "l2",
    sigma_data: float = SIGMA_DATA,
    eps: float = EPS,
    sigma_max: float = SIGMA_MAX,
    rho: float = RHO,
) -> tuple[Array, dict[str, Array]]:
    """CD loss ``d(f_θ(x̃_{i+1}, σ_{i+1}), f_θ⁻(Heun_teacher(x̃_{i+1}; σ_{i+1} → σ_i), σ_i))``, i uniform.

    Args:
      apply_fn: the consistency network ``F_θ``.
      params: online parameters θ (differentiated).
      target_params: target parameters θ⁻ (never differentiated).
      teacher_apply_fn: the teacher network (velocity ``v(x_t, t)`` or denoiser ``D(x̃, σ)``).
      teacher_params: its parameters (never differentiated).
      x0: ``(b, *features)`` data batch.
      key: typed PRNG key.
      num_scales: N of the fixed Karras σ grid (the paper uses 18 on CIFAR-10).
      teacher_parametrization: ``"velocity"`` or ``"denoiser"``.
      metric: ``"l2"`` (mean squared error) or ``"pseudo_huber"``.
      sigma_data, eps, sigma_max, rho: the σ grid and scalings.

    Returns:
      ``(loss, {"mean_sigma"})``.
    """
    check_data("x0", x0)
    _check_positive_int("num_scales", num_scales, minimum=2)
    if teacher_parametrization not in ("velocity", "denoiser"):
        raise ValueError(f"teacher_parametrization must be 'velocity' or 'denoiser', got {teacher_parametrization!r}")
    if metric not in ("l2", "pseudo_huber"):
        raise ValueError(f"metric must be 'l2' or 'pseudo_huber', got {metric!r}")
    grid = dict(eps=eps, sigma_max=sigma_max, rho=rho)
    noise_key, index_key = jax.random.split(key)
    i = jax.random.randint(index_key, (x0.shape[0],), 0, num_scales - 1)  # (b,)
    sigma_lo, sigma_hi = karras_sigma(i, num_scales, **grid), karras_sigma(i + 1, num_scales, **grid)
    z = jax.random.normal(noise_key, x0.shape, x0.dtype)
    x_hi = x0 + along_batch(sigma_hi, x0) * z

    teacher_params = jax.lax.stop_gradient(teacher_params)
    if teacher_parametrization == "velocity":

        def denoiser(x, sigma):
            return velocity_denoiser(teacher_apply_fn, teacher_params, x, sigma)
    else:

        def denoiser(x, sigma):
            return teacher_apply_fn(teacher_params, x, sigma)

    x_lo = jax.lax.stop_gradient(heun_step(denoiser, x_hi, sigma_hi, sigma_lo))
    online = consistency_function(apply_fn, params, x_hi, sigma_hi, sigma_data=sigma_data, eps=eps)
    target = consistency_function(apply_fn, target_params, x_lo, sigma_lo, sigma_data=sigma_data, eps=eps)
    loss = jnp.mean(distance(online, jax.lax.stop_gradient(target), metric))
    return loss, {"mean_sigma": jnp.mean(sigma_hi)}


@dataclasses.dataclass(frozen=True)
class ConsistencyDistillation(_ConsistencyAdapter):
    """CD method adapter; the teacher's parameters come in ``ctx.frozen`` (``train(..., frozen=teacher_params)``).

    Attributes (beyond the shared ``apply_fn``, ``init_fn``, ``data_shape``, σ grid):
      teacher_apply_fn: the teacher network's apply function.
      teacher_parametrization: ``"velocity"`` (a jaxlab flow-matching model) or ``"denoiser"``.
      num_scales: N of the σ grid.
      target: ``"online"`` (stop-gradient θ) or ``"ema"`` (``ctx.ema_params``).
      metric: ``"l2"`` or ``"pseudo_huber"``.
    """

    teacher_apply_fn: ApplyFn | None = None
    teacher_parametrization: TeacherParametrization = "velocity"
    num_scales: int = 18
    target: Target = "online"
    metric: Metric = "l2"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.teacher_apply_fn is None:
            raise ValueError("teacher_apply_fn must be the teacher network's apply function, got None")
        _check_positive_int("num_scales", self.num_scales, minimum=2)
        if self.target not in ("online", "ema"):
            raise ValueError(f"target must be 'online' or 'ema', got {self.target!r}")

    def loss(self, params: Params, batch: dict[str, Array], *, key: Array, ctx: Context) -> tuple[Array, dict]:
        if ctx.frozen is None:
            raise ValueError("ConsistencyDistillation needs the teacher's parameters as ctx.frozen (train(..., frozen=...)), got None")
        target_params = params if self.target == "online" else ctx.ema_params
        return consistency_distillation_loss(
            self.apply_fn, params, target_params, cast(ApplyFn, self.teacher_apply_fn), ctx.frozen, batch["x"], key=key,
            num_scales=self.num_scales, teacher_parametrization=self.teacher_parametrization, metric=self.metric,
            **self._grid(),
        )  # fmt: skip
