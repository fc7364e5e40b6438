"""Multi-head attention with grouped key-value heads: MHA, GQA and MQA, with RoPE and a KV cache.

``num_heads`` query heads share ``num_kv_heads`` key-value heads in groups of
``g = num_heads / num_kv_heads``: MHA is ``num_kv_heads = num_heads``, MQA is
``num_kv_heads = 1``, GQA anything between. Attention is computed head-major —
queries (b, kv, g, t, d), cached keys (b, kv, d, s) and values (b, kv, s, d)
— so keys and values are never repeated in memory and a decode step reads
the cache without transposing it (a group's g·t query rows meet the shared
keys in one matrix product).

Calling convention (every attention layer in :mod:`jaxlab.nn`)::

    y, _ = layer.apply(params, x)                    # full causal forward, (b, t, D)
    cache = init_cache(config, batch, max_len)
    y, cache = layer.apply(params, prompt, cache)    # prefill
    y, cache = layer.apply(params, token, cache)     # one decode step, (b, 1, D)

    cache = init_cache(config, batch, max_len, per_sequence=True)   # ragged batch
    y, cache = layer.apply(params, prompts, cache, mask=real)        # real (b, t): True = token, right-padded

With a cache the layer attends over the slots written before (every slot is
read, the unwritten ones masked, so a decode step has static shapes) and
over the chunk itself, then writes the chunk's rotated keys and values at
``cache.index``.

References:
  Vaswani et al. 2017, "Attention Is All You Need" (arXiv:1706.03762).
  Shazeer 2019, "Fast Transformer Decoding: One Write-Head is All You Need"
  (arXiv:1911.02150) — MQA.
  Ainslie et al. 2023, "GQA: Training Generalized Multi-Query Transformer
  Models from Multi-Head Checkpoints" (arXiv:2305.13245).
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import flax.linen as nn
import jax.numpy as jnp
from jax import Array

from jaxlab.nn.attention_core import (
    cache_mask,
    check_attention_impl,
    check_cache,
    check_padding_mask,
    check_sequence_input,
    chunk_mask,
    expand_mask,
    fold_logit_scale,
    fused_attention,
    logit_scale,
    query_positions,
    softmax_parts,
)
from jaxlab.nn.kv_cache import KVCache
from jaxlab.nn.precision import compute_dtype, dtype_name
from jaxlab.nn.rerope import grouped_logits, rerope_logits
from jaxlab.nn.rope_scaling import RopeConfig, rotate, scaled_frequencies
from jaxlab.nn.sharding import BATCH, HEADS, KV_HEADS, LENGTH, constrain


def _check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive int; got {value!r}.")


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
    """Shape of an MHA / GQA / MQA layer (static, hashable).

    Attributes:
      num_heads: query heads h.
      head_dim: per-head dimension d (even, for RoPE).
      num_kv_heads: key-value heads; ``None`` means ``num_heads`` (MHA),
        1 is MQA; must divide ``num_heads``.
      rope: how RoPE is applied (a context extension, log-n scaling).
      causal: mask keys after the query.
    """

    num_heads: int = 8
    head_dim: int = 64
    num_kv_heads: int | None = None
    rope: RopeConfig = RopeConfig()
    causal: bool = True

    def __post_init__(self) -> None:
        _check_positive("num_heads", self.num_heads)
        _check_positive("head_dim", self.head_dim)
        if self.head_dim % 2:
            raise ValueError(f"`head_dim` must be even for RoPE; got {self.head_dim}.")
        if self.num_kv_heads is not None:
            _check_positive("num_kv_heads", self.num_kv_heads)
            if self.num_heads % self.num_kv_heads:
                raise ValueError(f"`num_kv_heads` must divide num_heads = {self.num_heads}; got {self.num_kv_heads}.")
        if not isinstance(self.rope, RopeConfig):
            raise ValueError(f"`rope` must be a RopeConfig; got {type(self.rope).__name__}.")

    @property
    def kv_heads(self) -> int:
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    @property
    def kind(self) -> str:
        """``"mha"``, ``"gqa"`` or ``"mqa"``."""
        return "mha" if self.kv_heads == self.num_heads else "mqa" if self.kv_heads == 1 else "gqa"

    def empty_cache(self, batch: int, max_len: int, dtype: Any = jnp.float32) -> KVCache:
        keys = jnp.zeros((batch, self.kv_heads, self.head_dim, max_len), dtype)  # stored transposed
        values = jnp.zeros((batch, self.kv_heads, max_len, self.head_dim), dtype)
        return KVCache(keys, values, jnp.zeros((), jnp.int32))


class MultiHeadAttention(nn.Module):
    """MHA / GQA / MQA with RoPE (and its extensions) and an optional KV cache.

    Attributes:
      config: the layer's :class:`AttentionConfig`.
      dtype: compute dtype of the projections and of q, k, v (float32,
        bfloat16 or float16); logits and softmax are float32 whatever it is.
      param_dtype: dtype of the projection weights (float32).
      attention_impl: how a full-sequence call (no cache) attends: ``None``,
        ``"xla"`` or ``"cudnn"`` go through ``jax.nn.dot_product_attention``
        with that ``implementation`` (None: JAX's default, XLA; ``"cudnn"``
        needs a 16-bit ``dtype`` and an NVIDIA GPU); ``"reference"`` keeps the
        explicit softmax. Calls with a cache and ReRoPE always use the
        reference path. YaRN's ``qk_scale²`` and the log-n multiplier are
        folded into q, so the kernel's scale stays ``1/√d``.

    Forward-mode autodiff (``jax.jvp``, as consistency / sCM / MeanFlow
    training needs): the reference path and the ``None`` / ``"xla"`` fused
    path support it (the XLA kernel is plain ``jnp``); cuDNN's kernel defines
    only a VJP, so ``jax.jvp`` through ``"cudnn"`` raises — use ``"xla"`` there.

    Call ``(x, cache=None, *, positions=None, mask=None) -> (y, cache)``:

    * ``x``: (b, t, D) inputs.
    * ``cache``: a :class:`KVCache` from ``init_cache(config, b, max_len)``, or
      None for a full-sequence forward (then the returned cache is None).
      Store it in the compute dtype (``init_cache(..., dtype=dtype)``).
    * ``positions``: (t,) or (b, t) RoPE positions without a cache (default
      ``arange(t)``); the causal mask compares them too.
    * ``mask``: (b, t) bool padding mask, True for real tokens, which come first
      in each row; padded keys are ignored and, with a per-sequence cache
      (``init_cache(..., per_sequence=True)``), each sequence's index
      advances by its number of real tokens. Outputs at padded positions
      are meaningless.

    Returns y (b, t, D) in ``dtype``.

    Raises:
      ValueError: on bad shapes, dtypes or ``attention_impl`` (at construction),
        or when the chunk does not fit in the cache (eager; under ``jit`` see
        :func:`~jaxlab.nn.kv_cache.with_cache_checks`).
    """

    config: AttentionConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention_impl: str | None = None

    def __post_init__(self) -> None:
        check_attention_impl(self.attention_impl, compute_dtype("dtype", self.dtype))
        dtype_name("param_dtype", self.param_dtype)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Array, cache: KVCache | None = None, *, positions: Array | None = None, mask: Array | None = None):
        check_sequence_input(x)
        cfg = self.config
        b, t, features = x.shape
        h, kv, d = cfg.num_heads, cfg.kv_heads, cfg.head_dim
        if cache is not None:
            expected = ((b, kv, d, cache.max_len), (b, kv, cache.max_len, d))
            check_cache(cache[:2], expected, x, cache.max_len, cache.index)
            if cfg.rope.rectified:
                raise ValueError("ReRoPE needs the unrotated keys and is supported without a cache only.")
        if mask is not None:
            mask = check_padding_mask(mask, x, None if cache is None else cache.index)
        dtype = compute_dtype("dtype", self.dtype)
        # 2-D kernels (D, heads·d): the same maps as per-head tensors, and much cheaper to compile at init
        dense = lambda width, name: nn.Dense(width, use_bias=False, dtype=dtype, param_dtype=self.param_dtype, name=name)
        # Megatron-style tensor parallelism: heads split over "tensor", one all-reduce after "out".
        q = constrain(dense(h * d, "query")(x).reshape(b, t, h, d), (BATCH, LENGTH, HEADS, None))
        k = constrain(dense(kv * d, "key")(x).reshape(b, t, kv, d), (BATCH, LENGTH, KV_HEADS, None))
        v = constrain(dense(kv * d, "value")(x).reshape(b, t, kv, d), (BATCH, LENGTH, KV_HEADS, None))

        q_pos = query_positions(t, None if cache is None else cache.index, positions)
        length = t if cache is None else cache.max_len  # for dynamic NTK
        if not cfg.rope.rectified:
            q = rotate(q, q_pos, cfg.rope, length=length)
            k = rotate(k, q_pos, cfg.rope, length=length)
        if cache is None and not cfg.rope.rectified and self.attention_impl != "reference":
            q = fold_logit_scale(q, cfg.rope, q_pos)
            out = fused_attention(q, k, v, scale=d**-0.5, causal=cfg.causal, positions=positions, padding=mask, impl=self.attention_impl)  # (b, t, h, d)
            out = constrain(out.reshape(b, t, h * d), (BATCH, LENGTH, HEADS))
            return dense(features, "out")(out), None
        q = q.reshape(b, t, kv, h // kv, d).transpose(0, 2, 3, 1, 4)  # (b, kv, g, t, d)
        k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # (b, kv, t, d)
        if cfg.rope.rectified:
            frequencies = scaled_frequencies(cfg.rope, d, length=length)
            own = rerope_logits(q, k, q_pos, q_pos, frequencies, window=cfg.rope.window, slope=cfg.rope.slope)
        else:
            own = grouped_logits(q, k)  # (b, kv, g, t, t)
        parts, masks, values = [own], [chunk_mask(q_pos, cfg.causal, mask)], [v]
        if cache is not None:  # the slots written before: read here, written only below
            parts.insert(0, jnp.einsum("bkgtd,bkds->bkgts", q, cache.k, preferred_element_type=jnp.float32))
            masks.insert(0, cache_mask(cache.index, cache.max_len))
            values.insert(0, cache.v)
        scale = logit_scale(cfg.rope, q_pos, d, own.ndim)
        probs = softmax_parts([p * scale for p in parts], [expand_mask(m, own.ndim) for m in masks])
        out = cast(Array, sum(jnp.einsum("bkgts,bksd->bkgtd", p.astype(val.dtype), val) for p, val in zip(probs, values)))  # values is non-empty
        out = constrain(out.transpose(0, 3, 1, 2, 4).reshape(b, t, h * d), (BATCH, LENGTH, HEADS))  # heads concatenated
        y = dense(features, "out")(out)
        counts = None if mask is None else jnp.sum(mask, axis=1, dtype=jnp.int32)
        return y, None if cache is None else cache.append(k, v, counts)
