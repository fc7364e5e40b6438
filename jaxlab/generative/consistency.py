"""Consistency models: the EDM-parametrized consistency function, training schedules and sampling.

A consistency function maps any point of a probability-flow ODE trajectory
to the trajectory's origin, the data point. It is written in EDM's σ
coordinates, ``x̃ = x0 + σ·z`` (σ ∈ [ε, σ_max]), as

    f_θ(x̃, σ) = c_skip(σ)·x̃ + c_out(σ)·F_θ(c_in(σ)·x̃, t(σ)),
    c_skip = σ_d² / ((σ − ε)² + σ_d²),   c_out = (σ − ε)·σ_d / √(σ² + σ_d²),
    c_in = 1 / √(σ² + σ_d²),

so ``c_skip(ε) = 1`` and ``c_out(ε) = 0``: the boundary condition
``f(x, ε) = x`` holds exactly, for any network. jaxlab's time convention
(t = 0 data, t = 1 noise) meets EDM's σ through the straight flow path:
``x_t = (1 − t)·x0 + t·z`` rescaled by ``1/(1 − t)`` is ``x0 + σ·z`` with
``σ = t/(1 − t)``. The network is therefore conditioned on the flow time
``t(σ) = σ/(1 + σ) ∈ (0, 1)`` (where EDM uses ¼·log σ), so the same
``TimeMLP`` that serves as a flow-matching velocity network serves here, and a
flow-matching teacher can be distilled (:mod:`jaxlab.generative.consistency_distillation`).

This module holds the parametrization, the σ grids and N(k)/μ(k) schedules
of consistency training (CT) and improved consistency training (iCT), their
losses and adapters, and one-step / multistep sampling.

References:
  Song, Dhariwal, Chen, Sutskever 2023, "Consistency Models" (arXiv:2303.01469).
  Song, Dhariwal 2023, "Improved Techniques for Training Consistency Models"
  (arXiv:2310.14189).
  Karras, Aittala, Aila, Laine 2022, "Elucidating the Design Space of
  Diffusion-Based Generative Models" (arXiv:2206.00364).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Literal, cast, overload

import jax
import jax.numpy as jnp
import optax
from jax import Array

from jaxlab.base import ApplyFn, Context, Params
from jaxlab.generative._common import along_batch, check_data

Metric = Literal["l2", "pseudo_huber"]

SIGMA_DATA = 0.5
EPS = 0.002
SIGMA_MAX = 80.0
RHO = 7.0


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def scalings(sigma: Array, *, sigma_data: float = SIGMA_DATA, eps: float = EPS) -> tuple[Array, Array, Array]:
    """The consistency-model skip/output/input scalings at noise level ``sigma``.

    Args:
      sigma: noise levels σ ≥ ε, any shape.
      sigma_data: the data standard deviation σ_d.
      eps: the smallest noise level ε, where ``c_skip = 1`` and ``c_out = 0``.

    Returns:
      ``(c_skip, c_out, c_in)``, each of ``sigma``'s shape.

    References:
      Song et al. 2023, "Consistency Models", Appendix C (arXiv:2303.01469).
    """
    sigma = jnp.asarray(sigma, jnp.float32)
    sd2 = sigma_data**2
    c_skip = sd2 / ((sigma - eps) ** 2 + sd2)
    c_out = (sigma - eps) * sigma_data / jnp.sqrt(sigma**2 + sd2)
    c_in = 1.0 / jnp.sqrt(sigma**2 + sd2)
    return c_skip, c_out, c_in


@overload
def sigma_to_time(sigma: float) -> float: ...
@overload
def sigma_to_time(sigma: Array) -> Array: ...
def sigma_to_time(sigma: float | Array) -> float | Array:
    """Flow time ``t = σ/(1 + σ)`` of EDM noise level σ on the straight path."""
    return sigma / (1.0 + sigma)


def _check_scale_range(s0: Any, s1: Any) -> None:
    """The discretization's initial and final counts: integers with 1 ≤ s0 ≤ s1."""
    _check_positive_int("s0", s0)
    _check_positive_int("s1", s1)
    if s1 < s0:
        raise ValueError(f"s1 must be >= s0 (the final number of scales is at least the initial one), got s0={s0}, s1={s1}")


def time_to_sigma(t: Array) -> Array:
    """EDM noise level ``σ = t/(1 − t)`` of flow time t < 1 on the straight path."""
    return t / (1.0 - t)


def consistency_function(apply_fn: ApplyFn, params: Params, x: Array, sigma: Array, *, sigma_data: float = SIGMA_DATA, eps: float = EPS) -> Array:
    """``f_θ(x̃, σ) = c_skip·x̃ + c_out·F_θ(c_in·x̃, t(σ))``: the estimate of the trajectory's origin.

    Args:
      apply_fn: ``apply_fn(params, x, t) -> F`` with ``F.shape == x.shape``.
      params: network parameters.
      x: ``(b, *features)`` noisy points ``x0 + σ·z``.
      sigma: (b,) noise levels in [ε, σ_max].
      sigma_data: σ_d of the scalings.
      eps: ε of the scalings (``f(x, ε) = x`` exactly).

    Returns:
      ``(b, *features)`` data estimates.
    """
    c_skip, c_out, c_in = (along_batch(c, x) for c in scalings(sigma, sigma_data=sigma_data, eps=eps))
    out = apply_fn(params, c_in * x, sigma_to_time(sigma))
    return c_skip * x + c_out * out


def karras_sigma(index: Array, num_scales: int | Array, *, eps: float = EPS, sigma_max: float = SIGMA_MAX, rho: float = RHO) -> Array:
    """σ_i = (ε^{1/ρ} + i/(N−1)·(σ_max^{1/ρ} − ε^{1/ρ}))^ρ, increasing in i = 0 … N−1 (N may be traced)."""
    ramp = jnp.asarray(index, jnp.float32) / (jnp.asarray(num_scales, jnp.float32) - 1.0)
    lo, hi = eps ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return (lo + ramp * (hi - lo)) ** rho


def ct_num_scales(step: Array, total_steps: int, *, s0: int = 2, s1: int = 150) -> Array:
    """CT's discretization ``N(k) = max(⌈√(k/K·((s1+1)² − s0²) + s0²) − 1⌉, 1) + 1`` (int32).

    The clamp keeps N ≥ 2 (one σ interval) when s0 = 1, as the authors' code
    does; without it N(0) = 1 and the σ grid divides by N − 1 = 0.

    References: Song et al. 2023, Appendix C (arXiv:2303.01469).
    """
    _check_scale_range(s0, s1)
    _check_positive_int("total_steps", total_steps)
    k = jnp.minimum(jnp.asarray(step, jnp.float32), float(total_steps))
    root = jnp.sqrt(k / total_steps * ((s1 + 1) ** 2 - s0**2) + s0**2)
    return (jnp.maximum(jnp.ceil(root - 1.0), 1.0) + 1.0).astype(jnp.int32)


def ct_target_decay(num_scales: Array, *, s0: int = 2, mu0: float = 0.9) -> Array:
    """CT's target-network EMA decay ``μ(k) = exp(s0·log μ0 / N(k))``."""
    return jnp.exp(s0 * math.log(mu0) / jnp.asarray(num_scales, jnp.float32))


def ict_num_scales(step: Array, total_steps: int, *, s0: int = 10, s1: int = 1280) -> Array:
    """iCT's doubling discretization ``N(k) = min(s0·2^⌊k/K'⌋, s1) + 1``, ``K' = ⌊K/(log2⌊s1/s0⌋ + 1)⌋``.

    The logarithm is not floored: for s1/s0 not a power of two (10 → 1000)
    K' is shorter than with ⌊log2⌋, so N reaches s1 + 1 before the last step.

    References: Song & Dhariwal 2023, Sec. 3.4 (arXiv:2310.14189).
    """
    _check_scale_range(s0, s1)
    _check_positive_int("total_steps", total_steps)
    k_prime = max(math.floor(total_steps / (math.log2(s1 // s0) + 1.0)), 1)
    doublings = jnp.asarray(step, jnp.int32) // k_prime
    return jnp.minimum(s0 * 2 ** jnp.minimum(doublings, 30), s1) + 1


def _lognormal_index(key: Array, num: int, num_scales: Array, max_scales: int, p_mean: float, p_std: float, **grid) -> Array:
    """iCT's index i of (σ_i, σ_{i+1}), P(i) ∝ erf((log σ_{i+1} − P_mean)/(√2 P_std)) − erf((log σ_i − …)/…)."""
    i = jnp.arange(max_scales - 1)
    cdf = jax.scipy.special.erf((jnp.log(karras_sigma(jnp.arange(max_scales), num_scales, **grid)) - p_mean) / (math.sqrt(2.0) * p_std))
    weights = jnp.where(i < num_scales - 1, cdf[1:] - cdf[:-1], 0.0)
    return jax.random.categorical(key, jnp.log(jnp.maximum(weights, 1e-30)), shape=(num,))


def distance(a: Array, b: Array, metric: Metric) -> Array:
    """Per-example distance (b,): mean squared error, or pseudo-Huber ``√(‖a−b‖² + c²) − c``, c = 0.00054·√d."""
    diff = (a - b).reshape(a.shape[0], -1)
    if metric == "l2":
        return jnp.mean(jnp.square(diff), axis=-1)
    c = 0.00054 * math.sqrt(diff.shape[-1])
    return jnp.sqrt(jnp.sum(jnp.square(diff), axis=-1) + c**2) - c


def consistency_training_loss(
    apply_fn: ApplyFn,
    params: Params,
    target_params: Params,
    x0: Array,
    *,
    key: Array,
    step: Array,
    total_steps: int,
    improved: bool = False,
    sigma_data: float = SIGMA_DATA,
    eps: float = EPS,
    sigma_max: float = SIGMA_MAX,
    rho: float = RHO,
    s0: int | None = None,
    s1: int | None = None,
    p_mean: float = -1.1,
    p_std: float = 2.0,
) -> tuple[Array, dict[str, Array]]:
    """Consistency training: ``d(f_θ(x0 + σ_{i+1}z, σ_{i+1}), f_θ⁻(x0 + σ_i z, σ_i))`` on a growing σ grid.

    CT (``improved=False``): N(k) of :func:`ct_num_scales` (s0 = 2, s1 = 150),
    i uniform, squared-L2 metric, unit weight; ``target_params`` is the
    μ(k)-EMA target network θ⁻. iCT (``improved=True``): N(k) of
    :func:`ict_num_scales` (s0 = 10, s1 = 1280), lognormal i (P_mean, P_std),
    pseudo-Huber metric, weight 1/(σ_{i+1} − σ_i); pass ``target_params =
    params`` (iCT's teacher is the stop-gradient online network, μ = 0).

    Args:
      apply_fn: the network ``F_θ``.
      params: online parameters θ (differentiated).
      target_params: target parameters θ⁻ (never differentiated).
      x0: ``(b, *features)`` data batch.
      key: typed PRNG key.
      step: training step k (traced).
      total_steps: K of the schedules.
      improved: iCT instead of CT.
      sigma_data, eps, sigma_max, rho: the σ grid and scalings.
      s0, s1: N(k) schedule endpoints (None: the variant's paper values).
      p_mean, p_std: iCT's lognormal σ proposal.

    Returns:
      ``(loss, {"num_scales", "mean_sigma"})``.
    """
    check_data("x0", x0)
    _check_positive_int("total_steps", total_steps)
    grid = dict(eps=eps, sigma_max=sigma_max, rho=rho)
    noise_key, index_key = jax.random.split(key)
    num = x0.shape[0]
    if improved:
        s0, s1 = s0 or 10, s1 or 1280
        num_scales = ict_num_scales(step, total_steps, s0=s0, s1=s1)
        i = _lognormal_index(index_key, num, num_scales, s1 + 1, p_mean, p_std, **grid)
    else:
        s0, s1 = s0 or 2, s1 or 150
        num_scales = ct_num_scales(step, total_steps, s0=s0, s1=s1)
        i = jnp.floor(jax.random.uniform(index_key, (num,)) * (num_scales - 1)).astype(jnp.int32)
    sigma_lo, sigma_hi = karras_sigma(i, num_scales, **grid), karras_sigma(i + 1, num_scales, **grid)  # (b,)
    z = jax.random.normal(noise_key, x0.shape, x0.dtype)
    online = consistency_function(apply_fn, params, x0 + along_batch(sigma_hi, x0) * z, sigma_hi, sigma_data=sigma_data, eps=eps)
    target = consistency_function(apply_fn, target_params, x0 + along_batch(sigma_lo, x0) * z, sigma_lo, sigma_data=sigma_data, eps=eps)
    target = jax.lax.stop_gradient(target)
    if improved:
        per_example = distance(online, target, "pseudo_huber") / (sigma_hi - sigma_lo)
    else:
        per_example = distance(online, target, "l2")
    return jnp.mean(per_example), {"num_scales": num_scales, "mean_sigma": jnp.mean(sigma_hi)}


def sampling_sigmas(steps: int, *, sigma_max: float = SIGMA_MAX) -> Array:
    """The ``steps`` decreasing noise levels of multistep sampling, uniform in flow time.

    ``σ_i = σ(t_i)`` with ``t_i = t(σ_max)·i/steps``, i = steps … 1: one step
    uses σ_max, two use σ ≈ 0.98 (near the 0.821 Song et al. found best for
    2-step CD on CIFAR-10). A Karras ρ = 7 grid would put most of many steps
    at σ ≪ 0.1, where repeated re-noising and jumping accumulates errors.
    """
    _check_positive_int("steps", steps)
    t_max = sigma_to_time(sigma_max)
    return time_to_sigma(t_max * jnp.arange(steps, 0, -1, dtype=jnp.float32) / steps)


def sample_consistency(
    apply_fn: ApplyFn,
    params: Params,
    noise: Array,
    *,
    key: Array,
    steps: int,
    sigma_data: float = SIGMA_DATA,
    eps: float = EPS,
    sigma_max: float = SIGMA_MAX,
) -> Array:
    """One-step (``steps=1``: ``f(σ_max·z, σ_max)``) or multistep consistency sampling.

    Multistep (Song et al. 2023, Algorithm 1): after each jump to the data,
    re-noise to the next level τ of :func:`sampling_sigmas` with
    ``x + √(τ² − ε²)·z`` and jump again.

    Args:
      apply_fn, params: the consistency network.
      noise: ``(b, *features)`` standard normal start.
      key: typed PRNG key for the re-noising.
      steps: number of network evaluations (static).

    Returns:
      ``(b, *features)`` samples.
    """
    check_data("noise", noise)
    _check_positive_int("steps", steps)
    sigmas = sampling_sigmas(steps, sigma_max=sigma_max)  # (steps,)
    num = noise.shape[0]

    def jump(x, sigma):
        return consistency_function(apply_fn, params, x, jnp.full((num,), sigma), sigma_data=sigma_data, eps=eps)

    x = jump(sigma_max * noise, sigmas[0])

    def body(i, x):
        z = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
        return jump(x + jnp.sqrt(sigmas[i] ** 2 - eps**2) * z, sigmas[i])

    return jax.lax.fori_loop(1, steps, body, x)


@dataclasses.dataclass(frozen=True)
class _ConsistencyAdapter:
    """Shared fields and sampling of the consistency adapters (batches ``{"x": (b, *data_shape)}``).

    Attributes:
      apply_fn: the network ``F_θ(params, c_in·x̃, t(σ))`` (e.g. ``TimeMLP.apply``).
      init_fn: ``init_fn(key, x, t) -> params``.
      data_shape: shape of one example.
      total_steps: K of the N(k) schedules (set it to the run's number of steps).
      sigma_data, eps, sigma_max, rho: scalings and the Karras training grid.
    """

    apply_fn: ApplyFn
    init_fn: Callable[..., Params]
    data_shape: tuple[int, ...]
    total_steps: int = 8000
    sigma_data: float = SIGMA_DATA
    eps: float = EPS
    sigma_max: float = SIGMA_MAX
    rho: float = RHO

    def __post_init__(self) -> None:
        _check_positive_int("total_steps", self.total_steps)
        if not 0 < self.eps < self.sigma_max:
            raise ValueError(f"need 0 < eps < sigma_max, got eps={self.eps}, sigma_max={self.sigma_max}")
        if not self.sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {self.sigma_data}")

    def _grid(self) -> dict[str, float]:
        return dict(sigma_data=self.sigma_data, eps=self.eps, sigma_max=self.sigma_max, rho=self.rho)

    def _network_params(self, params: Params) -> Params:
        return params

    def init(self, key: Array, batch: dict[str, Array]) -> Params:
        x = batch["x"]
        return self.init_fn(key, x, jnp.zeros(x.shape[:1]))

    def sample(self, params: Params, *, key: Array, num: int, steps: int) -> Array:
        noise_key, renoise_key = jax.random.split(key)
        noise = jax.random.normal(noise_key, (num, *self.data_shape))
        return sample_consistency(
            self.apply_fn, self._network_params(params), noise, key=renoise_key, steps=steps,
            sigma_data=self.sigma_data, eps=self.eps, sigma_max=self.sigma_max,
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ImprovedConsistencyTraining(_ConsistencyAdapter):
    """iCT (Song & Dhariwal 2023): no EMA teacher, pseudo-Huber, lognormal σ, doubling N(k).

    Attributes (beyond the shared ones): s0, s1 of the N(k) schedule; p_mean,
    p_std of the σ proposal. ``total_steps`` is K (set it to the run's steps).
    """

    s0: int = 10
    s1: int = 1280
    p_mean: float = -1.1
    p_std: float = 2.0

    def loss(self, params: Params, batch: dict[str, Array], *, key: Array, ctx: Context) -> tuple[Array, dict]:
        return consistency_training_loss(
            self.apply_fn, params, params, batch["x"], key=key, step=ctx.step, total_steps=self.total_steps,
            improved=True, s0=self.s0, s1=self.s1, p_mean=self.p_mean, p_std=self.p_std, **self._grid(),
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ConsistencyTraining(_ConsistencyAdapter):
    """CT (Song et al. 2023) with its μ(k)-EMA target network, via the method's own ``train_step``.

    The target network θ⁻ follows ``θ⁻ ← μ(k)·θ⁻ + (1 − μ(k))·θ``, a decay
    that changes with the step, so it cannot be the trainer's fixed-decay
    ``ema_params``. The parameters are ``{"online": θ, "target": θ⁻}``;
    ``optimizer`` updates only ``online`` (the trainer's optimizer argument is
    unused), then θ⁻ is updated. The trainer's EMA of the whole dict still
    runs; :meth:`sample` uses the ``"online"`` entry of whatever tree it gets
    (pass ``state.ema_params`` for the EMA of θ, as the paper samples).

    Attributes (beyond the shared ones): optimizer: the optax optimizer of θ;
    s0, s1, mu0: the N(k) and μ(k) schedules.
    """

    optimizer: optax.GradientTransformation | None = None
    s0: int = 2
    s1: int = 150
    mu0: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.optimizer is None:
            raise ValueError("optimizer must be an optax.GradientTransformation, got None")

    def _network_params(self, params: Params) -> Params:
        return params["online"]

    def init(self, key: Array, batch: dict[str, Array]) -> Params:
        online = super().init(key, batch)
        return {"online": online, "target": jax.tree.map(jnp.copy, online)}

    def init_opt_state(self, params: Params) -> Any:
        return cast(optax.GradientTransformation, self.optimizer).init(params["online"])  # __post_init__ refused None

    def loss(self, params: Params, batch: dict[str, Array], *, key: Array, ctx: Context) -> tuple[Array, dict]:
        return consistency_training_loss(
            self.apply_fn, params["online"], params["target"], batch["x"], key=key, step=ctx.step,
            total_steps=self.total_steps, improved=False, s0=self.s0, s1=self.s1, **self._grid(),
        )  # fmt: skip

    def train_step(self, params: Params, opt_state: Any, batch: dict[str, Array], *, key: Array, ctx: Context) -> tuple[Params, Any, dict]:
        def loss_fn(online):
            return self.loss({"online": online, "target": params["target"]}, batch, key=key, ctx=ctx)

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params["online"])
        optimizer = cast(optax.GradientTransformation, self.optimizer)  # __post_init__ refused None
        updates, opt_state = optimizer.update(grads, opt_state, params["online"])
        online = optax.apply_updates(params["online"], updates)
        mu = ct_target_decay(aux["num_scales"], s0=self.s0, mu0=self.mu0)
        target = jax.tree.map(lambda t, p: mu * t + (1.0 - mu) * p, params["target"], online)
        metrics = {"loss": loss, **aux, "target_decay": mu, "grad_norm": optax.tree.norm(grads)}
        return {"online": online, "target": target}, opt_state, metrics
