"""Fixed-size key-value caches for autoregressive decoding.

A cache is a NamedTuple (a pytree) of per-token arrays with a batch axis
first and a ``max_len`` token axis, and a scalar ``index``: the number of positions
written. Decoding writes the new entries at ``index`` with
``lax.dynamic_update_slice`` — shapes never change, so one compiled step
serves every position — and attends over all ``max_len`` slots with the
unwritten ones masked out.

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
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array


def _append(arrays: tuple[Array, ...], entries: tuple[Array, ...], index: Array, axis: int) -> tuple[Array, ...]:
    """Writes each entry into its array at ``index`` along the token axis ``axis``."""
    out = []
    for array, entry in zip(arrays, entries):
        if entry.ndim != array.ndim or any(e != a for i, (e, a) in enumerate(zip(entry.shape, array.shape)) if i != axis):
            raise ValueError(f"cache entry of shape {entry.shape} does not fit a cache array of shape {array.shape}.")
        start = [0] * array.ndim
        start[axis] = index
        out.append(jax.lax.dynamic_update_slice(array, entry.astype(array.dtype), tuple(start)))
    return tuple(out)


class KVCache(NamedTuple):
    """Keys and values of MHA / GQA / MQA, head-major, keys transposed.

    Each head's cached keys are the columns of a (head_dim × max_len)
    matrix and its values the rows of a (max_len × head_dim) one — the
    layouts in which a decode step's ``q·Kᵀ`` and ``p·V`` are plain batched
    matrix products over (batch, kv head), with no transpose of the cache.

    Attributes:
      k: (b, num_kv_heads, head_dim, max_len) keys, already rotated by RoPE.
      v: (b, num_kv_heads, max_len, head_dim) values.
      index: () int32, positions written so far.
    """

    k: Array
    v: Array
    index: Array

    @property
    def max_len(self) -> int:
        return self.v.shape[2]

    def append(self, k: Array, v: Array) -> KVCache:
        """The cache with (b, kv, t, d) keys and values written at ``index`` and ``index`` advanced by t."""
        (new_k,) = _append((self.k,), (k.transpose(0, 1, 3, 2),), self.index, axis=3)
        (new_v,) = _append((self.v,), (v,), self.index, axis=2)
        return KVCache(new_k, new_v, self.index + v.shape[2])


class LatentCache(NamedTuple):
    """Compressed cache of multi-head latent attention.

    Attributes:
      c_kv: (b, max_len, kv_lora_rank) RMS-normalized key-value latents.
      k_rope: (b, max_len, qk_rope_dim) rotated RoPE key shared by all heads.
      index: () int32, positions written so far.
    """

    c_kv: Array
    k_rope: Array
    index: Array

    @property
    def max_len(self) -> int:
        return self.c_kv.shape[1]

    def append(self, c_kv: Array, k_rope: Array) -> LatentCache:
        """The cache with (b, t, ·) entries written at ``index`` and ``index`` advanced by t."""
        new_c, new_k = _append((self.c_kv, self.k_rope), (c_kv, k_rope), self.index, axis=1)
        return LatentCache(new_c, new_k, self.index + c_kv.shape[1])


def init_cache(config: Any, batch: int, max_len: int, dtype: Any = jnp.float32) -> KVCache | LatentCache:
    """An empty cache for one attention layer of ``config``.

    Args:
      config: an :class:`~jaxlab.nn.AttentionConfig` or
        :class:`~jaxlab.nn.MLAConfig` (anything with ``empty_cache``).
      batch: batch size.
      max_len: number of token slots.
      dtype: storage dtype.

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
    return config.empty_cache(batch, max_len, dtype)


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
