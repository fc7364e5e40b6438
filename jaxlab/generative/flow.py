"""Rectified flow / flow matching on the straight path from data to noise.

Convention (DESIGN.md): t = 0 is data, t = 1 is noise,

    x_t = (1 − t)·x0 + t·x1,     v = dx_t/dt = x1 − x0,

the network regresses v, and sampling integrates dx/dt = v(x, t) from t = 1
(Gaussian noise) down to t = 0.

References:
  Liu, Gong, Liu 2022, "Flow Straight and Fast: Learning to Generate and
  Transfer Data with Rectified Flow" (arXiv:2209.03003).
  Lipman et al. 2022, "Flow Matching for Generative Modeling" (arXiv:2210.02747).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
from jax import Array

from jaxlab.base import ApplyFn, Context, Params
from jaxlab.generative._common import along_batch, check_data

TimeSampling = Literal["uniform", "logit_normal"]
Solver = Literal["euler", "heun"]


def interpolate(x0: Array, x1: Array, t: Array) -> Array:
    """``x_t = (1 − t)·x0 + t·x1`` for a batch; ``t`` has shape (b,)."""
    tb = along_batch(t, x0)
    return (1.0 - tb) * x0 + tb * x1


def sample_time(key: Array, num: int, how: TimeSampling = "uniform") -> Array:
    """Training times in (0, 1): uniform, or logit-normal (Esser et al. 2024, SD3) with (0, 1)."""
    if how == "uniform":
        return jax.random.uniform(key, (num,))
    if how == "logit_normal":
        return jax.nn.sigmoid(jax.random.normal(key, (num,)))
    raise ValueError(f"time sampling must be 'uniform' or 'logit_normal', got {how!r}")


def flow_matching_loss(
    apply_fn: ApplyFn,
    params: Params,
    x0: Array,
    *,
    key: Array,
    time_sampling: TimeSampling = "uniform",
) -> tuple[Array, dict[str, Array]]:
    """Mean squared error between the predicted and the true velocity ``x1 − x0``.

    Args:
      apply_fn: ``apply_fn(params, x_t, t) -> v`` with ``v.shape == x_t.shape``.
      params: network parameters.
      x0: ``(b, *features)`` data batch.
      key: typed PRNG key (noise and times).
      time_sampling: distribution of t.

    Returns:
      ``(loss, {"mse": loss})``.
    """
    check_data("x0", x0)
    noise_key, time_key = jax.random.split(key)
    x1 = jax.random.normal(noise_key, x0.shape, x0.dtype)
    t = sample_time(time_key, x0.shape[0], time_sampling)
    prediction = apply_fn(params, interpolate(x0, x1, t), t)
    if prediction.shape != x0.shape:
        raise ValueError(f"apply_fn must return the shape of x_t {x0.shape}, got {prediction.shape}")
    loss = jnp.mean(jnp.square(prediction - (x1 - x0)))
    return loss, {"mse": loss}


def _euler_step(apply_fn: ApplyFn, params: Params, x: Array, t: float | Array, h: float | Array) -> Array:
    """One step from t to t − h: x − h·v(x, t)."""
    return x - h * apply_fn(params, x, jnp.full(x.shape[:1], t))


def _heun_step(apply_fn: ApplyFn, params: Params, x: Array, t: float | Array, h: float | Array) -> Array:
    """Heun's second-order step from t to t − h (trapezoidal corrector)."""
    v_start = apply_fn(params, x, jnp.full(x.shape[:1], t))
    x_euler = x - h * v_start
    v_end = apply_fn(params, x_euler, jnp.full(x.shape[:1], t - h))
    return x - 0.5 * h * (v_start + v_end)


def sample_ode(
    apply_fn: ApplyFn,
    params: Params,
    x1: Array,
    *,
    steps: int,
    solver: Solver = "euler",
) -> Array:
    """Integrates dx/dt = v(x, t) from t = 1 (``x1``) to t = 0 on a uniform grid.

    Args:
      apply_fn: the velocity network.
      params: its parameters.
      x1: ``(b, *features)`` starting noise.
      steps: number of solver steps (static; Heun costs two evaluations each).
      solver: ``"euler"`` or ``"heun"``.

    Returns:
      ``(b, *features)`` samples at t = 0.
    """
    check_data("x1", x1)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    step_fns = {"euler": _euler_step, "heun": _heun_step}
    if solver not in step_fns:
        raise ValueError(f"solver must be one of {tuple(step_fns)}, got {solver!r}")
    step_fn = step_fns[solver]
    h = 1.0 / steps

    def body(i, x):
        return step_fn(apply_fn, params, x, 1.0 - i * h, h)

    return jax.lax.fori_loop(0, steps, body, x1)


@dataclasses.dataclass(frozen=True)
class RectifiedFlow:
    """Method adapter: rectified flow on batches ``{"x": (b, *data_shape)}``.

    Attributes:
      apply_fn: ``apply_fn(params, x_t, t) -> velocity``.
      init_fn: ``init_fn(key, x, t) -> params`` (a Linen module's ``init``).
      data_shape: shape of one example.
      time_sampling: training-time distribution.
      solver: default ODE solver for :meth:`sample`.
    """

    apply_fn: ApplyFn
    init_fn: Callable[..., Params]
    data_shape: tuple[int, ...]
    time_sampling: TimeSampling = "uniform"
    solver: Solver = "euler"

    def init(self, key: Array, batch: dict[str, Array]) -> Params:
        x = batch["x"]
        return self.init_fn(key, x, jnp.zeros(x.shape[:1]))

    def loss(self, params: Params, batch: dict[str, Array], *, key: Array, ctx: Context) -> tuple[Array, dict]:
        del ctx
        return flow_matching_loss(self.apply_fn, params, batch["x"], key=key, time_sampling=self.time_sampling)

    def sample(self, params: Params, *, key: Array, num: int, steps: int) -> Array:
        x1 = jax.random.normal(key, (num, *self.data_shape))
        return sample_ode(self.apply_fn, params, x1, steps=steps, solver=self.solver)
