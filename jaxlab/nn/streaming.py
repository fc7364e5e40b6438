"""Streaming attention: softmax attention over key blocks with an online-softmax carry, and linear attention.

Softmax attention over s keys can be evaluated one key block at a time by
carrying, per query, the running maximum ``m``, the running normalizer
``l = Σ exp(logit − m)`` and the unnormalized output ``a = Σ exp(logit − m)·v``;
a new block with maximum ``m'`` rescales the carry by ``exp(m − max(m, m'))``.
The result equals dense attention exactly (up to rounding) while only a
(t × block) slice of logits ever exists, so working memory does not grow
with the number of keys. Here the loop is a ``lax.scan`` over block indices
that slices the keys in place.

Linear attention replaces ``exp(q·k)`` by ``φ(q)·φ(k)`` with a positive
feature map φ; causal linear attention is then an RNN with a (d × d_v)
matrix state ``S_t = S_{t−1} + φ(k_t) v_tᵀ`` and normalizer
``z_t = z_{t−1} + φ(k_t)``: ``y_t = φ(q_t)ᵀ S_t / φ(q_t)ᵀ z_t``.

References:
  Milakov, Gimelshein 2018, "Online normalizer calculation for softmax"
  (arXiv:1805.02867).
  Rabe, Staats 2021, "Self-attention Does Not Need O(n²) Memory"
  (arXiv:2112.05682).
  Dao, Fu, Ermon, Rudra, Ré 2022, "FlashAttention" (arXiv:2205.14135).
  Katharopoulos, Vyas, Pappas, Fleuret 2020, "Transformers are RNNs: Fast
  Autoregressive Transformers with Linear Attention" (arXiv:2006.16236).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array


def _check_qkv(q: Array, k: Array, v: Array) -> None:
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"`q`, `k`, `v` must be (batch, time, heads, dim); got {q.shape}, {k.shape}, {v.shape}.")
    if k.shape[:3] != v.shape[:3] or q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"`q` {q.shape}, `k` {k.shape} and `v` {v.shape} have incompatible shapes.")
    if q.shape[2] % k.shape[2]:
        raise ValueError(f"key heads ({k.shape[2]}) must divide query heads ({q.shape[2]}).")


class _Carry(NamedTuple):
    maximum: Array  # (b, kv, g, t) running max of the logits
    normalizer: Array  # (b, kv, g, t) Σ exp(logit − maximum)
    output: Array  # (b, kv, g, t, dv) Σ exp(logit − maximum)·v


def streaming_attention(q: Array, k: Array, v: Array, *, block_size: int = 512, causal: bool = True, scale: float | None = None) -> Array:
    """Softmax attention evaluated over key blocks with an online softmax.

    Queries are aligned with the *end* of the keys: query i sits at position
    ``s − t + i``, so ``t = s`` is ordinary causal self-attention and
    ``t < s`` a chunk of new tokens after ``s − t`` cached ones.

    Args:
      q: (b, t, h, d) queries.
      k: (b, s, kv, d) keys; kv divides h (grouped heads).
      v: (b, s, kv, dv) values.
      block_size: keys per block; when it does not divide s the keys are
        padded (a copy) and the padding masked.
      causal: mask keys after each query.
      scale: logit scale; ``1/√d`` by default.

    Returns:
      (b, t, h, dv) outputs in the dtype of ``v``.

    Raises:
      ValueError: on malformed shapes, ``t > s`` or a non-positive block size.
    """
    _check_qkv(q, k, v)
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"`block_size` must be a positive int; got {block_size!r}.")
    b, t, h, d = q.shape
    s, kv, dv = k.shape[1], k.shape[2], v.shape[-1]
    if t > s:
        raise ValueError(f"`q` has {t} positions but `k` only {s}; queries align with the last keys.")
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    num_blocks = -(-s // block_size)
    padded = num_blocks * block_size
    if padded != s:
        pad = ((0, 0), (0, padded - s), (0, 0), (0, 0))
        k, v = jnp.pad(k, pad), jnp.pad(v, pad)
    qg = (q.astype(jnp.float32) * scale).reshape(b, t, kv, h // kv, d)  # (b, t, kv, g, d)
    q_pos = s - t + jnp.arange(t)  # (t,)

    def step(carry: _Carry, block: Array) -> tuple[_Carry, None]:
        start = block * block_size
        k_blk = jax.lax.dynamic_slice_in_dim(k, start, block_size, axis=1)  # (b, B, kv, d)
        v_blk = jax.lax.dynamic_slice_in_dim(v, start, block_size, axis=1)  # (b, B, kv, dv)
        logits = jnp.einsum("btkgd,bskd->bkgts", qg, k_blk, preferred_element_type=jnp.float32)
        k_pos = start + jnp.arange(block_size)  # (B,)
        valid = k_pos[None, :] < s
        if causal:
            valid = valid & (k_pos[None, :] <= q_pos[:, None])  # (t, B)
        logits = jnp.where(valid, logits, -jnp.inf)
        new_max = jnp.maximum(carry.maximum, logits.max(axis=-1))
        safe = jnp.where(jnp.isfinite(new_max), new_max, 0.0)  # rows with no key yet
        weights = jnp.exp(logits - safe[..., None])  # (b, kv, g, t, B)
        correction = jnp.exp(carry.maximum - safe)
        normalizer = carry.normalizer * correction + weights.sum(axis=-1)
        update = jnp.einsum("bkgts,bskd->bkgtd", weights, v_blk.astype(jnp.float32))
        output = carry.output * correction[..., None] + update
        return _Carry(new_max, normalizer, output), None

    shape = (b, kv, h // kv, t)
    init = _Carry(jnp.full(shape, -jnp.inf), jnp.zeros(shape), jnp.zeros(shape + (dv,)))
    final, _ = jax.lax.scan(step, init, jnp.arange(num_blocks))
    out = final.output / final.normalizer[..., None]  # (b, kv, g, t, dv)
    return jnp.moveaxis(out, 3, 1).reshape(b, t, h, dv).astype(v.dtype)


def elu_feature_map(x: Array) -> Array:
    """``φ(x) = elu(x) + 1`` (positive), the feature map of Katharopoulos et al."""
    return jax.nn.elu(x) + 1.0


class LinearAttentionState(NamedTuple):
    """Recurrent state of causal linear attention.

    Attributes:
      kv: (b, h, d, dv) ``Σ φ(k) vᵀ``.
      k_sum: (b, h, d) ``Σ φ(k)``.
    """

    kv: Array
    k_sum: Array


def linear_attention_state(batch: int, heads: int, dim: int, value_dim: int) -> LinearAttentionState:
    """The zero state (no tokens seen)."""
    return LinearAttentionState(jnp.zeros((batch, heads, dim, value_dim)), jnp.zeros((batch, heads, dim)))


def linear_attention_recurrent(
    q: Array,
    k: Array,
    v: Array,
    state: LinearAttentionState | None = None,
    *,
    feature_map: Callable[[Array], Array] = elu_feature_map,
    eps: float = 1e-6,
) -> tuple[Array, LinearAttentionState]:
    """Causal linear attention in its recurrent form (a ``lax.scan`` over time).

    Args:
      q, k: (b, t, h, d); v: (b, t, h, dv).
      state: the state after earlier tokens (zero by default); passing the
        returned state on continues the sequence.
      feature_map: positive feature map φ.
      eps: added to the normalizer.

    Returns:
      ``(y (b, t, h, dv), state)``.

    References:
      Katharopoulos et al. 2020 (arXiv:2006.16236), §3.4, eqs. (16)–(20).
    """
    _check_qkv(q, k, v)
    if q.shape[2] != k.shape[2]:
        raise ValueError(f"linear attention needs as many key heads as query heads; got {k.shape[2]} and {q.shape[2]}.")
    b, _, h, d = q.shape
    state = linear_attention_state(b, h, d, v.shape[-1]) if state is None else state
    fq = feature_map(q.astype(jnp.float32))
    fk = feature_map(k.astype(jnp.float32))

    def step(carry: LinearAttentionState, inputs: tuple[Array, Array, Array]):
        q_t, k_t, v_t = inputs  # (b, h, d), (b, h, d), (b, h, dv)
        kv = carry.kv + k_t[..., :, None] * v_t[..., None, :]
        k_sum = carry.k_sum + k_t
        numerator = jnp.einsum("bhd,bhde->bhe", q_t, kv)
        denominator = jnp.einsum("bhd,bhd->bh", q_t, k_sum)[..., None] + eps
        return LinearAttentionState(kv, k_sum), numerator / denominator

    time_major = lambda a: jnp.moveaxis(a, 1, 0)
    final_state, ys = jax.lax.scan(step, state, (time_major(fq), time_major(fk), time_major(v.astype(jnp.float32))))
    return jnp.moveaxis(ys, 0, 1).astype(v.dtype), final_state


def linear_attention_parallel(q: Array, k: Array, v: Array, *, feature_map: Callable[[Array], Array] = elu_feature_map, eps: float = 1e-6) -> Array:
    """Causal linear attention in its parallel (masked quadratic) form, (b, t, h, dv)."""
    _check_qkv(q, k, v)
    fq, fk = feature_map(q.astype(jnp.float32)), feature_map(k.astype(jnp.float32))
    t = q.shape[1]
    weights = jnp.einsum("bthd,bshd->bhts", fq, fk) * jnp.tril(jnp.ones((t, t)))
    numerator = jnp.einsum("bhts,bshe->bthe", weights, v.astype(jnp.float32))
    return (numerator / (weights.sum(-1).transpose(0, 2, 1)[..., None] + eps)).astype(v.dtype)
