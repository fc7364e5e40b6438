"""Dense NumPy (float64) reference implementations of attention, RoPE and multi-head latent attention.

Each oracle is the textbook formula written out with explicit per-head
arrays and a full (t × s) logit matrix — O(t·s) memory, no blocking, no
caching, no weight absorption — so it shares no code path with a fast
implementation under test. Inputs may be NumPy or JAX arrays of any float
dtype; everything is computed and returned in float64.

Layout conventions (jaxlab's):

* queries (b, t, h, d), keys (b, s, kv, d), values (b, s, kv, dv); with
  grouped heads (GQA/MQA, ``kv`` divides ``h``) key head j serves query heads
  ``j·g … j·g + g − 1`` with ``g = h // kv`` (``np.repeat`` order);
* a causal mask aligns the queries with the *end* of the keys: query i sits
  at position ``s − t + i`` (``t = s`` is ordinary self-attention, ``t < s``
  a chunk after ``s − t`` cached tokens);
* masks are boolean, True = attend;
* RoPE rotates the pairs ``(x_i, x_{i + d/2})`` (the "half-split" pairing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "attention_from_logits",
    "causal_mask",
    "dot_product_attention",
    "masked_softmax",
    "mla_attention",
    "rms_norm",
    "rope",
]


def causal_mask(t: int, s: int | None = None) -> np.ndarray:
    """(t, s) boolean mask, True where key n may be seen by query m: ``n ≤ m + (s − t)``.

    Args:
      t: number of queries.
      s: number of keys (``t`` by default); queries align with the last ``t`` keys.
    """
    s = t if s is None else s
    if t > s:
        raise ValueError(f"a causal mask needs t <= s (queries align with the last keys); got t={t}, s={s}")
    return np.arange(s)[None, :] <= (s - t + np.arange(t))[:, None]


def masked_softmax(logits: ArrayLike, mask: ArrayLike | None = None) -> np.ndarray:
    """Softmax over the last axis in float64, masked entries exactly 0.

    Args:
      logits: (..., s) logits.
      mask: boolean, broadcastable to ``logits``; True = keep. ``None`` keeps all.

    Raises:
      ValueError: if some row keeps no entry (its softmax is undefined).
    """
    logits = np.asarray(logits, np.float64)
    if mask is not None:
        keep = np.broadcast_to(np.asarray(mask, bool), logits.shape)
        if not keep.any(axis=-1).all():
            rows = np.argwhere(~keep.any(axis=-1))
            raise ValueError(f"`mask` keeps no key in {len(rows)} row(s), e.g. at index {tuple(rows[0])}")
        logits = np.where(keep, logits, -np.inf)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def attention_from_logits(logits: ArrayLike, v: ArrayLike, *, causal: bool = False, mask: ArrayLike | None = None) -> np.ndarray:
    """Softmax-weighted values for precomputed (already scaled) logits.

    Use it when the logits are not a plain dot product (relative-position
    phases, ReRoPE's clipped positions, a learned bias).

    Args:
      logits: (b, h, t, s) scaled logits.
      v: (b, s, kv, dv) values; kv divides h.
      causal: also apply :func:`causal_mask`.
      mask: boolean, broadcastable to (b, h, t, s); True = attend.

    Returns:
      (b, t, h, dv) float64 outputs.
    """
    logits = np.asarray(logits, np.float64)
    v = np.asarray(v, np.float64)
    if logits.ndim != 4 or v.ndim != 4 or logits.shape[0] != v.shape[0] or logits.shape[3] != v.shape[1]:
        raise ValueError(f"`logits` must be (b, h, t, s) and `v` (b, s, kv, dv); got {logits.shape} and {v.shape}")
    _, h, t, s = logits.shape
    keep = np.ones((1, 1, t, s), bool)
    if causal:
        keep = keep & causal_mask(t, s)
    if mask is not None:
        keep = keep & np.asarray(mask, bool)
    probs = masked_softmax(logits, keep)  # (b, h, t, s)
    return np.einsum("bhts,bshe->bthe", probs, _repeat_heads(v, h, "v"))


def dot_product_attention(
    q: ArrayLike,
    k: ArrayLike,
    v: ArrayLike,
    *,
    causal: bool = False,
    mask: ArrayLike | None = None,
    scale: float | ArrayLike | None = None,
) -> np.ndarray:
    """Dense softmax attention ``softmax(scale · q kᵀ) v`` with optional causal/padding masks and grouped heads.

    Args:
      q: (b, t, h, d) queries.
      k: (b, s, kv, d) keys; kv divides h (kv = h: MHA, 1 < kv < h: GQA, kv = 1: MQA).
      v: (b, s, kv, dv) values.
      causal: mask keys after each query (queries aligned with the last keys).
      mask: boolean, broadcastable to (b, h, t, s); True = attend. A key
        padding mask ``valid`` (b, s) is ``valid[:, None, None, :]``.
      scale: logit multiplier, a float or an array broadcastable to
        (b, h, t, s) (e.g. a per-query (t, 1) factor); ``1/√d`` by default.

    Returns:
      (b, t, h, dv) float64 outputs.

    References:
      Vaswani et al. 2017, "Attention Is All You Need" (arXiv:1706.03762), eq. (1).
      Ainslie et al. 2023, "GQA: Training Generalized Multi-Query Transformer
      Models from Multi-Head Checkpoints" (arXiv:2305.13245).
    """
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    if q.ndim != 4 or k.ndim != 4 or q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"`q` must be (b, t, h, d) and `k` (b, s, kv, d); got {q.shape} and {k.shape}")
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else np.asarray(scale, np.float64)
    logits = np.einsum("bthd,bshd->bhts", q, _repeat_heads(k, q.shape[2], "k")) * scale
    return attention_from_logits(logits, v, causal=causal, mask=mask)


def rope(x: ArrayLike, positions: ArrayLike, frequencies: ArrayLike) -> np.ndarray:
    """Rotary position embedding as a complex rotation: ``(x_i + i·x_{i+d/2})·exp(i·p·ω_i)``.

    Args:
      x: (..., d) vectors, d even.
      positions: positions broadcastable to ``x.shape[:-1]`` (e.g. (t, 1) for x (b, t, h, d)).
      frequencies: (d/2,) angular frequencies ω.

    Returns:
      (..., d) float64 rotated vectors, real parts first.

    References:
      Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position
      Embedding" (arXiv:2104.09864), eq. (34).
    """
    x = np.asarray(x, np.float64)
    half = x.shape[-1] // 2
    if x.shape[-1] % 2 or np.shape(frequencies) != (half,):
        raise ValueError(f"`x` needs an even last axis and `frequencies` shape (d/2,); got {x.shape}, {np.shape(frequencies)}")
    angle = np.asarray(positions, np.float64)[..., None] * np.asarray(frequencies, np.float64)
    z = (x[..., :half] + 1j * x[..., half:]) * np.exp(1j * angle)
    return np.concatenate([z.real, z.imag], axis=-1)


def rms_norm(x: ArrayLike, scale: ArrayLike, eps: float) -> np.ndarray:
    """``x / √(mean(x²) + eps) · scale`` over the last axis, in float64."""
    x = np.asarray(x, np.float64)
    return x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + eps) * np.asarray(scale, np.float64)


def mla_attention(
    params: Mapping[str, Any],
    x: ArrayLike,
    *,
    num_heads: int,
    kv_lora_rank: int,
    qk_nope_dim: int,
    frequencies: ArrayLike,
    scale: float | ArrayLike | None = None,
    positions: ArrayLike | None = None,
    causal: bool = True,
    mask: ArrayLike | None = None,
    norm_eps: float = 1e-6,
) -> np.ndarray:
    """Multi-head latent attention written naively: explicit per-head keys ``[k_C; k_R]`` and values.

    Per token, with h heads, latent d_c, no-RoPE dim n and RoPE dim r::

        q        = x W_Q                or  RMSNorm(x W_DQ) W_UQ         (h, n + r)
        c_KV     = RMSNorm(x W_DKV)     k_R = RoPE(x W_KR)               (d_c,), (r,)
        k_C      = c_KV W_UK            v   = c_KV W_UV                  (h, n), (h, dv)
        key_j    = [k_C,j ; k_R]        query_j = [q_C,j ; RoPE(q_R,j)]  (one k_R for all heads)
        y        = concat_j softmax(scale · query_j · key_jᵀ) v_j  W_O

    and then ordinary dense attention (:func:`dot_product_attention`) over
    these expanded heads — no latent cache, no weight absorption.

    Args:
      params: the weights, in the layout of :class:`jaxlab.nn.MultiHeadLatentAttention`
        (a Linen ``params`` dict, with or without the outer ``"params"``):
        ``w_dkv`` (D, d_c + r) = [W_DKV | W_KR], ``kv_norm/scale`` (d_c,),
        ``w_uk`` (d_c, h·n), ``w_uv`` (d_c, h·dv), ``w_o`` (h·dv, D), and
        either ``w_q`` (D, h·(n + r)) or ``w_dq`` (D, d_c'), ``q_norm/scale``
        (d_c',), ``w_uq`` (d_c', h·(n + r)). 2-D weights hold the heads side by side.
      x: (b, t, D) inputs.
      num_heads: h.
      kv_lora_rank: d_c.
      qk_nope_dim: n.
      frequencies: (r/2,) RoPE frequencies of the decoupled part.
      scale: logit multiplier (float, or broadcastable to (b, h, t, t));
        ``1/√(n + r)`` by default.
      positions: (t,) or (b, t) token positions; ``arange(t)`` by default.
      causal: mask keys after each query.
      mask: boolean, broadcastable to (b, h, t, t); True = attend.
      norm_eps: epsilon of both RMSNorms.

    Returns:
      (b, t, D) float64 outputs.

    References:
      DeepSeek-AI 2024, "DeepSeek-V2: A Strong, Economical, and Efficient
      Mixture-of-Experts Language Model" (arXiv:2405.04434), §2.1, eqs. (9)–(19).
    """
    p = params.get("params", params)
    w = {name: np.asarray(value, np.float64) for name, value in p.items() if not isinstance(value, Mapping)}
    x = np.asarray(x, np.float64)
    b, t, _ = x.shape
    h, c, n = num_heads, kv_lora_rank, qk_nope_dim
    per_head = lambda m: m.reshape(m.shape[0], h, -1)  # (rows, h·e) -> (rows, h, e)
    if "w_q" in w:
        q = np.einsum("btf,fhe->bthe", x, per_head(w["w_q"]))  # (b, t, h, n + r)
    else:
        c_q = rms_norm(x @ w["w_dq"], p["q_norm"]["scale"], norm_eps)
        q = np.einsum("btc,che->bthe", c_q, per_head(w["w_uq"]))
    pos = np.arange(t, dtype=np.float64) if positions is None else np.asarray(positions, np.float64)
    pos = np.broadcast_to(pos, (b, t))
    kv = x @ w["w_dkv"]  # (b, t, d_c + r)
    c_kv = rms_norm(kv[..., :c], p["kv_norm"]["scale"], norm_eps)  # (b, t, d_c)
    k_rope = rope(kv[..., c:], pos, frequencies)  # (b, t, r): shared by all heads
    k_nope = np.einsum("bsc,chn->bshn", c_kv, per_head(w["w_uk"]))  # (b, t, h, n)
    keys = np.concatenate([k_nope, np.broadcast_to(k_rope[:, :, None], (b, t, h, k_rope.shape[-1]))], axis=-1)
    queries = np.concatenate([q[..., :n], rope(q[..., n:], pos[..., None], frequencies)], axis=-1)
    values = np.einsum("bsc,chv->bshv", c_kv, per_head(w["w_uv"]))  # (b, t, h, dv)
    out = dot_product_attention(queries, keys, values, causal=causal, mask=mask, scale=scale)
    return out.reshape(b, t, -1) @ w["w_o"]


def _repeat_heads(a: np.ndarray, heads: int, name: str) -> np.ndarray:
    """(b, s, kv, e) -> (b, s, heads, e), kv head j repeated for query heads j·g … j·g + g − 1."""
    if heads % a.shape[2]:
        raise ValueError(f"`{name}` heads ({a.shape[2]}) must divide the query heads ({heads})")
    return np.repeat(np.asarray(a, np.float64), heads // a.shape[2], axis=2)
