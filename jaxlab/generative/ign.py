"""Idempotent Generative Network (IGN): a map f with f(f(z)) = f(z) whose image is the data.

IGN trains one network ``f`` on three losses (Shocher et al. 2023, Eqs. 5–9),
with the distance ``D`` the mean L1 distance:

* reconstruction ``L_rec = D(f(x), x)`` on data x — data are fixed points;
* idempotence ``L_idem = D(f_θ'(f_θ(z)), f_θ(z))`` on noise z, where θ' is a
  stop-gradient copy of θ: the gradient only moves the inner ``f_θ(z)`` onto
  the set of fixed points;
* tightness ``L_tight = −D(f_θ(y), y)`` with ``y = stop_gradient(f_θ(z))``: the
  gradient only moves the outer f, shrinking the set of fixed points — smoothed
  and clamped as ``tanh(L_tight / (a·L_rec)) · a·L_rec`` with ``L_rec`` held
  constant (stop-gradient) and a = 1.5.

Total: ``λ_rec·L_rec + λ_idem·L_idem + λ_tight·L_tight`` with the paper's
weights 20 / 20 / 2.5. Sampling is ``f(z)`` for z ~ N(0, I), optionally
applied k times (f should be idempotent, so more applications refine).

Reference:
  Shocher, Dravid, Gandelsman, Mosseri, Rubinstein, Efros 2023,
  "Idempotent Generative Network" (arXiv:2311.01462).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import Array

from jaxlab.base import ApplyFn, Context, Params


def l1_distance(a: Array, b: Array) -> Array:
    """Mean absolute difference over all elements (the paper's D)."""
    return jnp.mean(jnp.abs(a - b))


def ign_loss_terms(
    apply_fn: ApplyFn,
    params: Params,
    x: Array,
    z: Array,
    *,
    tightness_clamp: float = 1.5,
) -> dict[str, Array]:
    """The three IGN losses on data ``x`` and noise ``z`` (both ``(b, *f)``), deterministic.

    Args:
      apply_fn: ``apply_fn(params, x) -> f(x)``, same shape as x.
      params: θ.
      x: ``(b, *f)`` data.
      z: ``(b', *f)`` noise (latents).
      tightness_clamp: the paper's a in ``tanh(L_tight/(a·L_rec))·a·L_rec``.

    Returns:
      ``{"rec", "idem", "tight_raw", "tight"}`` — scalars; ``tight`` is the
      smoothed, clamped tightness that enters the objective.
    """
    if x.ndim < 2 or z.shape[1:] != x.shape[1:]:
        raise ValueError(f"x and z must have shapes (b, *features) with equal features, got {x.shape} and {z.shape}")
    frozen = jax.lax.stop_gradient(params)
    fx = apply_fn(params, x)
    if fx.shape != x.shape:
        raise ValueError(f"apply_fn must return the shape of its input {x.shape}, got {fx.shape}")
    fz = apply_fn(params, z)  # (b', *f), differentiable
    fz_const = jax.lax.stop_gradient(fz)
    rec = l1_distance(fx, x)
    idem = l1_distance(apply_fn(frozen, fz), fz)
    tight_raw = -l1_distance(apply_fn(params, fz_const), fz_const)
    scale = tightness_clamp * jax.lax.stop_gradient(rec)
    tight = jnp.tanh(tight_raw / jnp.maximum(scale, 1e-12)) * scale
    return {"rec": rec, "idem": idem, "tight_raw": tight_raw, "tight": tight}


def ign_loss(
    apply_fn: ApplyFn,
    params: Params,
    x: Array,
    *,
    key: Array,
    rec_weight: float = 20.0,
    idem_weight: float = 20.0,
    tight_weight: float = 2.5,
    tightness_clamp: float = 1.5,
) -> tuple[Array, dict[str, Array]]:
    """The weighted IGN objective with z ~ N(0, I) of the shape of ``x`` ``(b, *f)``.

    Returns:
      ``(loss, {"rec", "idem", "tight", "tight_raw"})``.
    """
    z = jax.random.normal(key, x.shape, x.dtype)
    terms = ign_loss_terms(apply_fn, params, x, z, tightness_clamp=tightness_clamp)
    loss = rec_weight * terms["rec"] + idem_weight * terms["idem"] + tight_weight * terms["tight"]
    return loss, terms


def apply_repeatedly(apply_fn: ApplyFn, params: Params, z: Array, *, times: int) -> Array:
    """``f^times(z)``; z: ``(b, *f)``."""
    if not isinstance(times, int) or times < 1:
        raise ValueError(f"times must be a positive int, got {times!r}")
    return jax.lax.fori_loop(0, times, lambda _, y: apply_fn(params, y), z)


@dataclasses.dataclass(frozen=True)
class IGN:
    """Method adapter: IGN on batches ``{"x": (b, *data_shape)}``.

    Attributes:
      apply_fn: ``apply_fn(params, x) -> f(x)``.
      init_fn: ``init_fn(key, x) -> params``.
      data_shape: shape of one example.
      rec_weight, idem_weight, tight_weight: λ_rec, λ_idem, λ_tight (20, 20, 2.5).
      tightness_clamp: a (1.5).
    """

    apply_fn: ApplyFn
    init_fn: Callable[..., Params]
    data_shape: tuple[int, ...]
    rec_weight: float = 20.0
    idem_weight: float = 20.0
    tight_weight: float = 2.5
    tightness_clamp: float = 1.5

    def init(self, key: Array, batch: dict[str, Array]) -> Params:
        return self.init_fn(key, batch["x"])

    def loss(self, params: Params, batch: dict[str, Array], *, key: Array, ctx: Context) -> tuple[Array, dict]:
        del ctx
        return ign_loss(
            self.apply_fn, params, batch["x"], key=key, rec_weight=self.rec_weight, idem_weight=self.idem_weight,
            tight_weight=self.tight_weight, tightness_clamp=self.tightness_clamp,
        )  # fmt: skip

    def sample(self, params: Params, *, key: Array, num: int, steps: int = 1) -> Array:
        """``f`` applied ``steps`` times to z ~ N(0, I): ``(num, *data_shape)``."""
        z = jax.random.normal(key, (num, *self.data_shape))
        return apply_repeatedly(self.apply_fn, params, z, times=steps)
