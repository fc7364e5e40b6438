"""Pieces shared by the attention layers: input checks, positions, masks, a split softmax, logit scaling.

Padding: a ``mask`` (b, t) marks the real tokens of a right-padded batch
(True, real tokens first in each row). Padded keys are masked out; every
query still keeps its own key, so a padded row has a finite (ignored) output
instead of a softmax over nothing.

With a cache, a layer attends over two key blocks — the cache slots written
before this call and the chunk's own keys — and writes the chunk into the
cache only afterwards. The softmax runs jointly over both blocks without
concatenating them (:func:`softmax_parts`), so the cache is only *read* by
the attention and only *written* by the update: on CPU this lets XLA keep
the update in place instead of copying the cache around a
read-after-write.

Without a cache the layers can instead call ``jax.nn.dot_product_attention``
(:func:`fused_attention`, ``attention_impl`` None / ``"xla"`` / ``"cudnn"``):
RoPE is applied to q and k first and YaRN's / log-n's logit factors are
folded into q (:func:`fold_logit_scale`), so the kernel's scale is the plain
``1/√d``. Its XLA implementation still forms the (b, h, t, t) float32 logits
and probabilities (it is written in ``jnp``, which is also why it supports
``jax.jvp``); cuDNN's does not, but defines only a VJP.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.experimental import checkify

from jaxlab.nn.kv_cache import check_room
from jaxlab.nn.rope_scaling import RopeConfig, qk_scale, query_logit_scale


def check_sequence_input(x: Any, name: str = "x") -> None:
    """Raises ValueError unless ``x`` is a floating (batch, time, features) array."""
    if not hasattr(x, "ndim") or x.ndim != 3:
        raise ValueError(f"`{name}` must have shape (batch, time, features); got {getattr(x, 'shape', type(x).__name__)}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"`{name}` must be floating; got dtype {x.dtype}.")


def check_cache(arrays: Sequence[Array], expected: Sequence[tuple[int, ...]], x: Array, max_len: int, index: Array | None = None) -> None:
    """Raises ValueError unless each cache array has its expected shape and ``x`` fits in the cache.

    With ``index`` (the cache's () or (b,) index), also checks that the
    ``x.shape[1]`` new tokens fit after it (:func:`~jaxlab.nn.kv_cache.check_room`).
    """
    for array, shape in zip(arrays, expected):
        if tuple(array.shape) != tuple(shape):
            raise ValueError(f"`cache` arrays must have shape {shape} for x of shape {x.shape}; got {array.shape}.")
    if x.shape[1] > max_len:
        raise ValueError(f"`x` has {x.shape[1]} tokens, more than the cache's max_len = {max_len}.")
    if index is not None:
        if jnp.shape(index) not in ((), (x.shape[0],)):
            raise ValueError(f"`cache.index` must have shape () or ({x.shape[0]},); got {jnp.shape(index)}.")
        check_room(index, x.shape[1], max_len)


def check_padding_mask(mask: Any, x: Array, cache_index: Array | None) -> Array:
    """Validates a padding mask (b, t) for ``x`` (b, t, ·); returns it as a bool array.

    Raises:
      ValueError: if the shape is not (b, t), the dtype not bool, the cache
        has one shared index (a mask needs ``init_cache(..., per_sequence=True)``),
        or (concrete mask) a real token follows a padding one. Under ``jit``
        the last condition is a ``checkify.debug_check``.
    """
    b, t = x.shape[:2]
    if not hasattr(mask, "shape") or tuple(mask.shape) != (b, t) or mask.dtype != jnp.bool_:
        raise ValueError(
            f"`mask` must be a bool array of shape ({b}, {t}) (True = real token); "
            f"got {getattr(mask, 'dtype', type(mask).__name__)} {getattr(mask, 'shape', '')}."
        )
    if cache_index is not None and jnp.ndim(cache_index) == 0:
        raise ValueError("a padding `mask` with a cache needs one index per sequence: init_cache(..., per_sequence=True).")
    mask = jnp.asarray(mask)
    if isinstance(mask, jax.core.Tracer):
        checkify.debug_check(jnp.all(mask[:, 1:] <= mask[:, :-1]), "`mask`: real tokens must come first in each row")
    elif not np.all(np.asarray(mask)[:, 1:] <= np.asarray(mask)[:, :-1]):
        raise ValueError("`mask` must be right-padded: in each row the real tokens (True) come first.")
    return mask


def query_positions(t: int, cache_index: Array | None, positions: Array | None) -> Array:
    """(t,) or (b, t) positions of the chunk: ``positions`` (default ``arange(t)``), or ``index + arange(t)`` with a cache.

    A per-sequence cache index (b,) gives (b, t) positions.
    """
    if cache_index is not None:
        if positions is not None:
            raise ValueError("`positions` must be None with a cache (they are cache.index + arange(t)).")
        return jnp.asarray(cache_index)[..., None] + jnp.arange(t)
    return jnp.arange(t) if positions is None else jnp.asarray(positions)


def chunk_mask(q_positions: Array, causal: bool, padding: Array | None = None) -> Array | None:
    """Mask of the chunk's own keys: (t, t) or (b, t, t), or None for no masking.

    Causal: ``key position <= query position``. With a padding mask (b, t),
    also drops the padded keys, except each query's own.
    """
    mask = q_positions[..., None, :] <= q_positions[..., :, None] if causal else None
    if padding is None:
        return mask
    t = padding.shape[1]
    keep = padding[:, None, :] | jnp.eye(t, dtype=bool)  # (b, t, t)
    return keep if mask is None else mask & keep


def cache_mask(cache_index: Array, max_len: int) -> Array:
    """Mask of the cache slots written before this call: (1, max_len), or (b, 1, max_len) for a (b,) index."""
    written = jnp.arange(max_len) < jnp.asarray(cache_index)[..., None]  # (max_len,) or (b, max_len)
    return written[..., None, :]


def expand_mask(mask: Array | None, ndim: int) -> Array | None:
    """(t, s) or (b, t, s) -> broadcastable to logits ``(b, *heads, t, s)`` of rank ``ndim``."""
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
    """``qk_scale²/√dim`` times the per-query log-n multiplier, broadcastable to logits ``(b, *heads, t, s)``.

    ``qk_scale`` is YaRN's multiplier of q and of k (1 for other RoPE settings).
    """
    constant = qk_scale(rope) ** 2 / math.sqrt(dim)
    scale = jnp.asarray(query_logit_scale(rope, q_positions), jnp.float32) * constant
    if scale.ndim == 0:
        return scale
    batch = scale.shape[0] if scale.ndim == 2 else 1
    return scale.reshape((batch,) + (1,) * (ndim - 3) + (scale.shape[-1], 1))


# The fused path: ``jax.nn.dot_product_attention`` over the whole sequence (no cache).
ATTENTION_IMPLS = (None, "reference", "xla", "cudnn")
AttentionImpl = Literal["reference", "xla", "cudnn"] | None
KernelImpl = Literal["xla", "cudnn"] | None  # what jax.nn.dot_product_attention accepts


def check_attention_impl(impl: Any, dtype: Any) -> None:
    """Raises ValueError unless ``impl`` is in :data:`ATTENTION_IMPLS` and, for ``"cudnn"``, ``dtype`` is 16-bit.

    ``None``, ``"xla"`` and ``"cudnn"`` are the ``implementation`` of
    ``jax.nn.dot_product_attention`` (None lets JAX choose, today XLA);
    ``"reference"`` keeps the explicit softmax of :func:`softmax_parts`.
    """
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"`attention_impl` must be one of {ATTENTION_IMPLS}; got {impl!r}.")
    if impl == "cudnn" and jnp.dtype(dtype) == jnp.float32:
        raise ValueError("`attention_impl` 'cudnn' needs dtype bfloat16 or float16; got float32.")


def fold_logit_scale(q: Array, rope: RopeConfig, q_positions: Array) -> Array:
    """q (b, t, h, d) times YaRN's ``qk_scale²`` and the per-query log-n multiplier.

    Both scale whole logit rows, so folding them into the query leaves the
    kernel's own ``scale`` the plain ``1/√d``. The product is taken in float32.
    """
    factor = jnp.asarray(query_logit_scale(rope, q_positions), jnp.float32) * qk_scale(rope) ** 2  # () or (t,) or (b, t)
    factor = factor.reshape(factor.shape + (1, 1))  # broadcast over (h, d)
    return (q.astype(jnp.float32) * factor).astype(q.dtype)


def fused_attention(
    q: Array,
    k: Array,
    v: Array,
    *,
    scale: float,
    causal: bool,
    positions: Array | None,
    padding: Array | None,
    impl: str | None,
) -> Array:
    """``jax.nn.dot_product_attention`` of a full sequence: q (b, t, h, d), k/v (b, t, kv, d) -> (b, t, h, d).

    Args:
      q, k, v: rotated queries (logit factors already folded in) and keys,
        values; grouped kv heads (kv divides h) are passed as they are.
      scale: the logit scale (1/√d of the layer).
      causal: mask keys after the query; with the default positions this is
        ``is_causal=True``, with explicit ``positions`` (t,) or (b, t) a mask
        comparing them (as :func:`chunk_mask`).
      positions: the layer's explicit positions, or None for ``arange(t)``.
      padding: (b, t) bool padding mask (right-padded) or None; passed as
        ``key_value_seq_lengths``. Outputs at padded positions differ from the
        reference path (which also keeps each query's own key) and are
        meaningless in both.
      impl: ``implementation`` of ``jax.nn.dot_product_attention``.
    """
    mask = None
    is_causal = causal and positions is None
    if causal and positions is not None:
        mask = expand_mask(chunk_mask(jnp.asarray(positions), True), 4)  # (1 | b, 1, t, t)
    lengths = None if padding is None else jnp.sum(padding, axis=1, dtype=jnp.int32)
    return jax.nn.dot_product_attention(
        q, k, v, mask=mask, scale=scale, is_causal=is_causal, key_value_seq_lengths=lengths, implementation=cast(KernelImpl, impl)
    )
