"""Fixed-size key-value caches for autoregressive decoding.

A cache is a NamedTuple (a pytree) of per-token arrays with a batch axis
first and a ``max_len`` token axis, and an ``index``: the number of positions
written, either one scalar shared by the batch or one per sequence (b,) for
ragged batches (``init_cache(..., per_sequence=True)``). Decoding writes the
new entries at ``index`` with ``lax.dynamic_update_slice`` — shapes never
change, so one compiled step serves every position — and attends over all
``max_len`` slots with the unwritten ones masked out.

A per-sequence index lets sequences of different lengths share a batch: the
layers take a padding ``mask`` (b, t) (True for real tokens, real tokens
first), write the whole chunk at each sequence's own index and advance it by
that sequence's number of real tokens, so the padding slots are masked and
overwritten by the next write.

Overflow: writing past ``max_len`` would silently clamp the write onto the
last slots. With a concrete index (eager code) :func:`check_room` raises a
``ValueError`` on the host; under ``jit`` the index is traced, so the check is
a ``checkify.debug_check`` — free under plain ``jit``, and an error returned by
:func:`with_cache_checks` (``err.throw()`` raises it).

Two layouts:

* :class:`KVCache` (MHA / GQA / MQA): rotated keys and values,
  ``2 · num_kv_heads · head_dim`` values per token per layer.
* :class:`LatentCache` (MLA): the normalized key-value latent c_KV and the
  shared rotated RoPE key, ``kv_lora_rank + qk_rope_dim`` values per token
  per layer (576 for DeepSeek-V2, against 2·128·128 = 32,768 for its MHA
  equivalent).

:func:`cache_size_per_token` counts the values from the arrays the layer's
config actually allocates, not from a formula.

References:
  Pope et al. 2022, "Efficiently Scaling Transformer Inference"
  (arXiv:2211.05102) — KV caches and their memory cost.
  DeepSeek-AI 2024, "DeepSeek-V2" (arXiv:2405.04434), §2.1 and Table 1.
  Kwon et al. 2023, "Efficient Memory Management for Large Language Model
  Serving with PagedAttention" (arXiv:2309.06180) — per-sequence lengths in
  batched decoding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.experimental import checkify


def check_room(index: Array | int, tokens: int, max_len: int) -> None:
    """Raises unless ``tokens`` new tokens written at ``index`` fit in ``max_len`` slots.

    Args:
      index: () or (b,) int, the positions written so far (per sequence).
      tokens: the number of tokens of the write (static).
      max_len: the cache's number of slots.

    Raises:
      ValueError: on the host when ``index`` is concrete (eager code) and
        ``index + tokens > max_len`` for some sequence. When ``index`` is
        traced (under ``jit`` / ``scan``) the same condition is a
        ``checkify.debug_check``: ignored by plain ``jit``, reported by
        :func:`with_cache_checks`.
    """
    if isinstance(index, jax.core.Tracer):
        needed = jnp.max(index) + tokens
        checkify.debug_check(
            needed <= max_len,
            "cache overflow: writing {tokens} token(s) needs a cache of length {needed}, more than max_len = {max_len}",
            tokens=jnp.int32(tokens), needed=needed, max_len=jnp.int32(max_len),
        )  # fmt: skip
        return
    length = int(np.max(np.asarray(index))) + tokens
    if length > max_len:
        raise ValueError(
            f"`cache` overflow: writing {tokens} token(s) at index {np.asarray(index).tolist()} needs a cache of "
            f"length {length}, more than its max_len = {max_len}; allocate a longer cache (init_cache(..., max_len))."
        )


def with_cache_checks(fn: Callable[..., Any]) -> Callable[..., tuple[checkify.Error, Any]]:
    """``fn`` with the cache overflow checks made visible under ``jit``.

    Under ``jit`` a cache index is traced and an overflow cannot be raised on
    the host; the layers then leave ``checkify.debug_check`` s, which this
    wrapper functionalizes (``jax.experimental.checkify``).

    Example::

        step = jax.jit(with_cache_checks(layer.apply))
        err, (y, cache) = step(params, token, cache)
        err.throw()  # raises JaxRuntimeError "cache overflow: ... max_len = ..."

    Args:
      fn: any function whose computation writes caches (a layer's or a
        model's ``apply``, a decoding loop).

    Returns:
      ``checked(*args, **kwargs) -> (error, fn(*args, **kwargs))``.
    """
    return checkify.checkify(fn, errors=checkify.user_checks)


def _write(array: Array, entry: Array, index: Array, axis: int) -> Array:
    """``entry`` written into ``array`` at ``index`` along ``axis``; a (b,) index writes each row at its own."""
    entry = entry.astype(array.dtype)
    if jnp.ndim(index) == 0:
        return jax.lax.dynamic_update_slice_in_dim(array, entry, index, axis=axis)
    row = lambda a, e, i: jax.lax.dynamic_update_slice_in_dim(a, e, i, axis=axis - 1)
    return jax.vmap(row)(array, entry, index)


def _append(arrays: tuple[Array, ...], entries: tuple[Array, ...], index: Array, axis: int, counts: Array | None) -> tuple[tuple[Array, ...], Array]:
    """Writes each entry into its array at ``index`` along the token axis ``axis``; returns (arrays, new index)."""
    for array, entry in zip(arrays, entries):
        if entry.ndim != array.ndim or any(e != a for i, (e, a) in enumerate(zip(entry.shape, array.shape)) if i != axis):
            raise ValueError(f"cache entry of shape {entry.shape} does not fit a cache array of shape {array.shape}.")
    tokens, batch = entries[0].shape[axis], entries[0].shape[0]
    if jnp.ndim(index) not in (0, 1) or (jnp.ndim(index) == 1 and jnp.shape(index) != (batch,)):
        raise ValueError(f"cache `index` must have shape () or ({batch},); got {jnp.shape(index)}.")
    if counts is not None:
        if jnp.ndim(index) == 0:
            raise ValueError("per-sequence `counts` need a per-sequence index: init_cache(..., per_sequence=True).")
        if jnp.shape(counts) != (batch,):
            raise ValueError(f"`counts` must have shape ({batch},); got {jnp.shape(counts)}.")
    check_room(index, tokens, arrays[0].shape[axis])
    out = tuple(_write(array, entry, index, axis) for array, entry in zip(arrays, entries))
    return out, index + (tokens if counts is None else jnp.asarray(counts, jnp.int32))


class KVCache(NamedTuple):
    """Keys and values of MHA / GQA / MQA, head-major, keys transposed.

    Each head's cached keys are the columns of a (head_dim × max_len)
    matrix and its values the rows of a (max_len × head_dim) one — the
    layouts in which a decode step's ``q·Kᵀ`` and ``p·V`` are plain batched
    matrix products over (batch, kv head), with no transpose of the cache.

    Attributes:
      k: (b, num_kv_heads, head_dim, max_len) keys, already rotated by RoPE.
      v: (b, num_kv_heads, max_len, head_dim) values.
      index: () int32, positions written so far, or (b,) int32 per sequence.
    """

    k: Array
    v: Array
    index: Array  # type: ignore[assignment]  # the field deliberately shadows tuple.index

    @property
    def max_len(self) -> int:
        return self.v.shape[2]

    def append(self, k: Array, v: Array, counts: Array | None = None) -> KVCache:
        """The cache with (b, kv, t, d) keys and values written at ``index``.

        Args:
          k, v: (b, kv, t, d) new keys and values.
          counts: (b,) the number of real (non-padding) tokens of each
            sequence, by which a per-sequence index advances; None advances by t.

        Raises:
          ValueError: on mismatched shapes, or (concrete index) if the write
            runs past ``max_len`` (see :func:`check_room`).
        """
        (new_k,), _ = _append((self.k,), (k.transpose(0, 1, 3, 2),), self.index, 3, counts)
        (new_v,), index = _append((self.v,), (v,), self.index, 2, counts)
        return KVCache(new_k, new_v, index)


class LatentCache(NamedTuple):
    """Compressed cache of multi-head latent attention.

    Attributes:
      c_kv: (b, max_len, kv_lora_rank) RMS-normalized key-value latents.
      k_rope: (b, max_len, qk_rope_dim) rotated RoPE key shared by all heads.
      index: () int32, positions written so far, or (b,) int32 per sequence.
    """

    c_kv: Array
    k_rope: Array
    index: Array  # type: ignore[assignment]  # the field deliberately shadows tuple.index

    @property
    def max_len(self) -> int:
        return self.c_kv.shape[1]

    def append(self, c_kv: Array, k_rope: Array, counts: Array | None = None) -> LatentCache:
        """The cache with (b, t, ·) entries written at ``index``; ``counts`` as in :meth:`KVCache.append`."""
        (new_c, new_k), index = _append((self.c_kv, self.k_rope), (c_kv, k_rope), self.index, 1, counts)
        return LatentCache(new_c, new_k, index)


def init_cache(config: Any, batch: int, max_len: int, dtype: Any = jnp.float32, *, per_sequence: bool = False) -> KVCache | LatentCache:
    """An empty cache for one attention layer of ``config``.

    Args:
      config: an :class:`~jaxlab.nn.AttentionConfig` or
        :class:`~jaxlab.nn.MLAConfig` (anything with ``empty_cache``).
      batch: batch size.
      max_len: number of token slots.
      dtype: storage dtype.
      per_sequence: give every sequence its own index (b,), for ragged
        batches decoded with a padding ``mask``; default one shared index ().

    Returns:
      the zero-filled cache with ``index == 0``.

    Raises:
      ValueError: if ``batch`` or ``max_len`` is not a positive int or the
        config cannot build a cache.
    """
    for name, value in (("batch", batch), ("max_len", max_len)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"`{name}` must be a positive int; got {value!r}.")
    if not callable(getattr(config, "empty_cache", None)):
        raise ValueError(f"`config` must be an AttentionConfig or MLAConfig; got {type(config).__name__}.")
    cache = config.empty_cache(batch, max_len, dtype)
    return cache._replace(index=jnp.zeros((batch,), jnp.int32)) if per_sequence else cache


def _per_token_leaves(cache: Any) -> list[Any]:
    return [leaf for leaf in jax.tree.leaves(cache) if leaf.ndim >= 2]


def cache_size_per_token(config: Any) -> int:
    """Cached values per token per layer, counted from the arrays ``config`` allocates.

    Builds (abstractly, with no allocation) the cache of one sequence of one
    token and sums the sizes of its per-token arrays.

    Returns:
      e.g. ``2·num_kv_heads·head_dim`` for MHA/GQA/MQA and
      ``kv_lora_rank + qk_rope_dim`` for MLA.
    """
    abstract = jax.eval_shape(lambda: init_cache(config, 1, 1))
    return sum(leaf.size for leaf in _per_token_leaves(abstract))


def cache_bytes_per_token(config: Any, dtype: Any = jnp.float32) -> int:
    """Bytes per token per layer of the cache of ``config`` stored in ``dtype``."""
    abstract = jax.eval_shape(lambda: init_cache(config, 1, 1, dtype))
    return sum(leaf.size * leaf.dtype.itemsize for leaf in _per_token_leaves(abstract))


def cache_bytes(cache: Any) -> int:
    """Bytes held by the per-token arrays of a cache (or a tuple of per-layer caches)."""
    return sum(leaf.size * leaf.dtype.itemsize for leaf in _per_token_leaves(cache))
