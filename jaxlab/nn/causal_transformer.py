"""A small causal transformer over a sequence of vectors, with an optional KV cache.

The network maps a sequence ``x`` (b, L, d_in) to outputs (b, L, d_out) where
output ``i`` depends only on inputs ``0..i`` (causal self-attention). It is
the conditioner of a TARFLOW block, but knows nothing about flows.

One ``__call__`` serves three uses (all pure; the cache is an explicit value):

* ``apply(params, x, labels)`` — the full causal pass, ``x`` (b, L', d_in)
  with ``L' ≤ max_len``, positions ``0..L'-1``.
* ``apply(params, x, labels, return_cache=True)`` — the same pass plus the
  per-layer keys and values, a tuple of ``(k, v)`` pairs of shape
  (b, L', heads, head_dim) each. Its ``jax.eval_shape`` at ``L' = max_len``
  gives the layout of an empty cache.
* ``apply(params, token, labels, cache=cache, position=i)`` — one decoding
  step: ``token`` (b, 1, d_in) is placed at position ``i``; its keys and
  values are written into the cache (b, max_len, heads, head_dim) and it
  attends to positions ``0..i``. Returns ``(out (b, 1, d_out), new_cache)``,
  equal to position ``i`` of the full pass on the same prefix. A position
  past the cache (or ``max_len``) raises a ``ValueError`` when concrete and is
  a ``checkify`` check under ``jit`` (:func:`jaxlab.nn.kv_cache.with_cache_checks`).

Any other network can serve as a TARFLOW conditioner through the plain call
alone; the two cached calls are what the ``"cached"`` TARFLOW sampler needs
(the *cache protocol*).

Class conditioning: with ``num_classes > 0`` a learned embedding of the label
(b,) is added to every position; label ``num_classes`` is the "null" class
used for classifier-free guidance.

References:
  Vaswani et al. 2017, "Attention Is All You Need" (arXiv:1706.03762).
  Radford et al. 2019, "Language Models are Unsupervised Multitask Learners"
  (pre-norm decoder-only transformer).
"""

from __future__ import annotations

from typing import Any, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array

from jaxlab.nn.attention_core import KernelImpl, check_attention_impl
from jaxlab.nn.kv_cache import check_room
from jaxlab.nn.precision import compute_dtype, dtype_name
from jaxlab.nn.sharding import BATCH, EMBED, LENGTH, constrain

SEQUENCE = (BATCH, LENGTH, EMBED)  # (b, L, w)

KVCache = tuple[tuple[Array, Array], ...]  # per layer: (k, v), each (b, max_len, heads, head_dim)


def _attend(q: Array, k: Array, v: Array, mask: Array) -> Array:
    """Reference softmax attention, logits in float32. q (b, Lq, h, e), k/v (b, Lk, h, e), mask (Lq, Lk) bool -> (b, Lq, h, e)."""
    logits = jnp.einsum("bqhe,bkhe->bhqk", q, k, preferred_element_type=jnp.float32) / jnp.sqrt(jnp.float32(q.shape[-1]))
    logits = jnp.where(mask[None, None], logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bhqk,bkhe->bqhe", weights.astype(v.dtype), v)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention that can read and write a KV cache.

    The full pass goes through ``jax.nn.dot_product_attention`` (``is_causal``)
    unless ``attention_impl == "reference"``; a decoding step always uses
    the reference softmax over the cache.
    """

    width: int
    num_heads: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, h: Array, *, cache: tuple[Array, Array] | None = None, position: Array | None = None):
        # h: (b, L, w) full pass, or (b, 1, w) with a cache at ``position``.
        head_dim = self.width // self.num_heads
        dense = lambda features, axis, name: nn.DenseGeneral(features, axis=axis, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        qkv = dense((3, self.num_heads, head_dim), -1, "qkv")(h)  # (b, L, 3, h, e)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if cache is None:
            if self.attention_impl == "reference":
                length = h.shape[1]
                out = _attend(q, k, v, jnp.tril(jnp.ones((length, length), bool)))
            else:
                out = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=cast(KernelImpl, self.attention_impl))
            new_kv = (k, v)
        else:
            if position is None:
                raise ValueError("decoding with a cache needs a position")
            cached_k, cached_v = cache
            cached_k = jax.lax.dynamic_update_slice_in_dim(cached_k, k.astype(cached_k.dtype), position, axis=1)
            cached_v = jax.lax.dynamic_update_slice_in_dim(cached_v, v.astype(cached_v.dtype), position, axis=1)
            mask = (jnp.arange(cached_k.shape[1]) <= position)[None, :]  # (1, max_len)
            out, new_kv = _attend(q, cached_k, cached_v, mask), (cached_k, cached_v)
        out = dense(self.width, (-2, -1), "out")(out)  # (b, L, w)
        return out, new_kv


class TransformerLayer(nn.Module):
    """Pre-norm residual layer: causal attention then a GELU MLP (LayerNorm statistics in float32)."""

    width: int
    num_heads: int
    mlp_ratio: int = 4
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, h: Array, *, cache=None, position=None):
        precision = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        attention = CausalSelfAttention(self.width, self.num_heads, attention_impl=self.attention_impl, **precision)
        attended, kv = attention(nn.LayerNorm(**precision)(h), cache=cache, position=position)
        h = h + attended
        y = nn.Dense(self.mlp_ratio * self.width, **precision)(nn.LayerNorm(**precision)(h))
        h = h + nn.Dense(self.width, **precision)(nn.gelu(y))
        return h, kv


class CausalTransformer(nn.Module):
    """Causal transformer ``(b, L, d_in) -> (b, L, d_out)`` with learned positions.

    The output projection starts at zero, so a fresh network outputs zeros
    (a TARFLOW block built on it starts as the identity map).

    Attributes:
      out_features: d_out.
      max_len: the longest sequence (size of the position table and the cache).
      width: model width (divisible by ``num_heads``).
      depth: number of transformer layers.
      num_heads: attention heads.
      num_classes: 0 for an unconditional network; otherwise labels in
        ``0..num_classes`` are embedded, ``num_classes`` being the null class.
      mlp_ratio: hidden size of the MLP as a multiple of ``width``.
      dtype: compute dtype (float32, bfloat16 or float16); LayerNorm
        statistics and softmax stay float32 and the output is float32 (a
        TARFLOW block sums its log-scales into a log-determinant). The cache
        holds keys and values in this dtype.
      param_dtype: parameter dtype (float32).
      attention_impl: the full pass's attention: ``None``, ``"xla"``,
        ``"cudnn"`` (``jax.nn.dot_product_attention``) or ``"reference"``;
        decoding steps always use the reference. ``jax.jvp`` works through
        all but ``"cudnn"``.
    """

    out_features: int
    max_len: int
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    num_classes: int = 0
    mlp_ratio: int = 4
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention_impl: str | None = None

    def __post_init__(self) -> None:
        check_attention_impl(self.attention_impl, compute_dtype("dtype", self.dtype))
        dtype_name("param_dtype", self.param_dtype)
        super().__post_init__()

    @nn.compact
    def __call__(
        self,
        x: Array,
        labels: Array | None = None,
        *,
        cache: KVCache | None = None,
        position: Array | int | None = None,
        return_cache: bool = False,
    ):
        if self.width % self.num_heads:
            raise ValueError(f"width must be divisible by num_heads, got width={self.width}, num_heads={self.num_heads}")
        if x.ndim != 3:
            raise ValueError(f"x must have shape (batch, length, features), got {x.shape}")
        if cache is not None:
            if x.shape[1] != 1 or position is None:
                raise ValueError(f"decoding takes one token (batch, 1, features) and a position, got x {x.shape}, position {position}")
            check_room(position, 1, min(self.max_len, cache[0][0].shape[1]))
        elif x.shape[1] > self.max_len:
            raise ValueError(f"x has length {x.shape[1]}, more than max_len={self.max_len}")
        precision = {"dtype": compute_dtype("dtype", self.dtype), "param_dtype": self.param_dtype}
        positions_table = self.param("positions", nn.initializers.normal(0.02), (self.max_len, self.width), self.param_dtype)
        positions_table = positions_table.astype(precision["dtype"])
        if cache is not None and position is not None:  # position is never None with a cache (checked above)
            positions = jax.lax.dynamic_slice_in_dim(positions_table, position, 1, axis=0)  # (1, w)
        else:
            positions = positions_table[: x.shape[1]]  # (L, w)
        h = nn.Dense(self.width, name="embed", **precision)(x) + positions[None]  # (b, L, w) in the compute dtype
        if self.num_classes:
            if labels is None:
                labels = jnp.full(x.shape[:1], self.num_classes, jnp.int32)  # the null class
            h = h + nn.Embed(self.num_classes + 1, self.width, name="classes", **precision)(labels)[:, None, :]
        new_cache = []
        for layer in range(self.depth):
            block = TransformerLayer(self.width, self.num_heads, self.mlp_ratio, attention_impl=self.attention_impl, name=f"layer_{layer}", **precision)
            h, kv = block(constrain(h, SEQUENCE), cache=cache[layer] if cache is not None else None, position=position)
            new_cache.append(kv)
        h = constrain(h, SEQUENCE)
        head = nn.Dense(self.out_features, kernel_init=nn.initializers.zeros, name="head", **precision)
        out = head(nn.LayerNorm(**precision)(h)).astype(jnp.float32)  # (b, L, d_out) float32
        if cache is not None or return_cache:
            return out, tuple(new_cache)
        return out


def empty_cache(apply_fn, params, batch_size: int, max_len: int, features: int, labels: Array | None = None) -> KVCache:
    """A zero KV cache for ``apply_fn`` (a :class:`CausalTransformer`'s ``apply``), shaped by ``jax.eval_shape``.

    Args:
      apply_fn: ``apply_fn(params, x, labels, return_cache=True) -> (out, cache)``.
      params: the network's parameters.
      batch_size: b.
      max_len: the sequence length to cache.
      features: d_in.
      labels: (b,) labels or None (only their shape matters).

    Returns:
      A tuple per layer of zero ``(k, v)`` arrays (b, max_len, heads, head_dim).

    Raises:
      TypeError: if ``apply_fn`` does not accept ``return_cache=True`` or does
        not return a pair ``(out, cache)`` with it (it does not follow the
        cache protocol of :class:`CausalTransformer`).
    """
    probe = jax.ShapeDtypeStruct((batch_size, max_len, features), jnp.float32)
    result = jax.eval_shape(lambda p, x, y: apply_fn(p, x, y, return_cache=True), params, probe, labels)
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], jax.ShapeDtypeStruct)):
        raise TypeError(
            "apply_fn(params, x, labels, return_cache=True) must return (out, cache) (the cache protocol of "
            f"CausalTransformer); got {jax.tree.structure(result)}."
        )
    return jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), result[1])
