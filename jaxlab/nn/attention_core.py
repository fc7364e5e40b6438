"""Pieces shared by the attention layers: input checks, positions, masks, a split softmax, logit scaling.

With a cache, a layer attends over two key blocks — the cache slots written
before this call and the chunk's own keys — and writes the chunk into the
cache only afterwards. The softmax runs jointly over both blocks without
concatenating them (:func:`softmax_parts`), so the cache is only *read* by
the attention and only *written* by the update: on CPU this lets XLA keep
the update in place instead of copying the cache around a
read-after-write.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
from jax import Array

from jaxlab.nn.rope_scaling import RopeConfig, qk_scale, query_logit_scale


def check_sequence_input(x: Any, name: str = "x") -> None:
    """Raises ValueError unless ``x`` is a floating (batch, time, features) array."""
    if not hasattr(x, "ndim") or x.ndim != 3:
        raise ValueError(f"`{name}` must have shape (batch, time, features); got {getattr(x, 'shape', type(x).__name__)}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"`{name}` must be floating; got dtype {x.dtype}.")


def check_cache(arrays: Sequence[Array], expected: Sequence[tuple[int, ...]], x: Array, max_len: int) -> None:
    """Raises ValueError unless each cache array has its expected shape and ``x`` fits in the cache."""
    for array, shape in zip(arrays, expected):
        if tuple(array.shape) != tuple(shape):
            raise ValueError(f"`cache` arrays must have shape {shape} for x of shape {x.shape}; got {array.shape}.")
    if x.shape[1] > max_len:
        raise ValueError(f"`x` has {x.shape[1]} tokens, more than the cache's max_len = {max_len}.")


def query_positions(t: int, cache_index: Array | None, positions: Array | None) -> Array:
    """(t,) or (b, t) positions of the chunk: ``positions`` (default ``arange(t)``), or ``index + arange(t)`` with a cache."""
    if cache_index is not None:
        if positions is not None:
            raise ValueError("`positions` must be None with a cache (they are cache.index + arange(t)).")
        return cache_index + jnp.arange(t)
    return jnp.arange(t) if positions is None else jnp.asarray(positions)


def chunk_mask(q_positions: Array, causal: bool) -> Array | None:
    """Mask of the chunk's own keys: (t, t) or (b, t, t) ``key position <= query position``, or None."""
    if not causal:
        return None
    return q_positions[..., None, :] <= q_positions[..., :, None]


def cache_mask(cache_index: Array, max_len: int) -> Array:
    """Mask (1, max_len) of the cache slots written before this call."""
    return (jnp.arange(max_len) < cache_index)[None, :]


def expand_mask(mask: Array | None, ndim: int) -> Array | None:
    """(t, s) or (b, t, s) -> broadcastable to logits (b, *heads, t, s) of rank ``ndim``."""
    if mask is None:
        return None
    batch = mask.shape[0] if mask.ndim == 3 else 1
    return mask.reshape((batch,) + (1,) * (ndim - 3) + mask.shape[-2:])


def softmax_parts(parts: Sequence[Array], masks: Sequence[Array | None]) -> list[Array]:
    """Softmax over the concatenation of logit blocks along their last axes, returned block by block.

    Args:
      parts: float32 logits (..., s_i) with equal leading shapes.
      masks: per block, a boolean mask broadcastable to it (True = keep) or None.

    Returns:
      probabilities (..., s_i) per block; together they sum to 1 over all
      blocks. Every row must keep at least one key.
    """
    masked = [p if m is None else jnp.where(m, p, -jnp.inf) for p, m in zip(parts, masks)]
    maximum = masked[0].max(axis=-1, keepdims=True)
    for block in masked[1:]:
        maximum = jnp.maximum(maximum, block.max(axis=-1, keepdims=True))
    exps = [jnp.exp(block - maximum) for block in masked]
    total = sum(e.sum(axis=-1, keepdims=True) for e in exps)
    return [e / total for e in exps]


def logit_scale(rope: RopeConfig, q_positions: Array, dim: int, ndim: int) -> Array:
    """``qk_scale²/√dim`` times the per-query log-n multiplier, broadcastable to logits (b, *heads, t, s).

    ``qk_scale`` is YaRN's multiplier of q and of k (1 for other RoPE settings).
    """
    constant = qk_scale(rope) ** 2 / math.sqrt(dim)
    scale = jnp.asarray(query_logit_scale(rope, q_positions), jnp.float32) * constant
    if scale.ndim == 0:
        return scale
    batch = scale.shape[0] if scale.ndim == 2 else 1
    return scale.reshape((batch,) + (1,) * (ndim - 3) + (scale.shape[-1], 1))
