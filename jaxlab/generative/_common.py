"""What the generative adapters share: the data check, per-example broadcasting, label dropout and guidance mixing."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

from jaxlab.base import ApplyFn, Params


def check_data(name: str, x: Any) -> None:
    """Raises ``ValueError`` unless ``x`` is a floating batch ``(batch, *features)``."""
    if not hasattr(x, "ndim") or x.ndim < 2:
        raise ValueError(f"{name} must have shape (batch, *features), got {getattr(x, 'shape', type(x).__name__)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name} must be a floating array, got dtype {x.dtype}")


def along_batch(v: Array, x: Array) -> Array:
    """(b,) -> (b, 1, ..., 1) to multiply a batch of shape ``(b, *features)``."""
    return v.reshape(v.shape + (1,) * (x.ndim - 1))


def drop_labels(labels: Array, *, key: Array, rate: float, null_label: int) -> Array:
    """Replaces each label by ``null_label`` with probability ``rate`` (trains the unconditional model)."""
    return jnp.where(jax.random.bernoulli(key, rate, labels.shape), null_label, labels)


def guide(conditional: Array, unconditional: Array, scale: float | Array) -> Array:
    """Classifier-free guidance ``u + w·(c − u)``; linear, so the same in ε, x0, v or velocity space."""
    return unconditional + scale * (conditional - unconditional)


def classifier_free_guidance(apply_fn: ApplyFn, *, scale: float, null_label: int) -> ApplyFn:
    """``(params, x, t, labels) -> uncond + scale·(cond − uncond)`` in one batched call.

    ``scale = 1`` is the conditional model, ``0`` the unconditional one.

    References:
      Ho, Salimans 2022, "Classifier-Free Diffusion Guidance", eq. 6.
    """

    def guided(params: Params, x: Array, t: Array, labels: Array) -> Array:
        if scale == 1.0:
            return apply_fn(params, x, t, labels)
        both = apply_fn(
            params,
            jnp.concatenate([x, x]),
            jnp.concatenate([t, t]),
            jnp.concatenate([labels, jnp.full_like(labels, null_label)]),
        )
        cond, uncond = jnp.split(both, 2)
        return guide(cond, uncond, scale)

    return guided
