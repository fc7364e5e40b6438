"""Multi-head latent attention (MLA, DeepSeek-V2) with a latent KV cache and weight absorption.

Per token (h heads, latent d_c = ``kv_lora_rank``, RoPE dim d_r):

    c_Q  = RMSNorm(x W_DQ)                      (optional query low rank)
    q_C  = c_Q W_UQ,  q_R = RoPE(c_Q W_QR)      (h, qk_nope_dim), (h, d_r)
    c_KV = RMSNorm(x W_DKV)                     (d_c,)   ← cached
    k_R  = RoPE(x W_KR)                         (d_r,)   ← cached, shared by all heads
    k_C  = c_KV W_UK,  v = c_KV W_UV            (h, qk_nope_dim), (h, v_head_dim)
    logit = (q_C·k_C + q_R·k_R) / √(qk_nope_dim + d_r)
    y = concat_h(softmax · v) W_O

Only c_KV and k_R are cached: d_c + d_r values per token per layer.

Two evaluation modes with identical parameters and outputs:

* ``"naive"`` re-expands k_C and v for every cached token from the latent
  (cost ∝ L·d_c·h·(qk_nope_dim + v_head_dim) per decoded token).
* ``"absorbed"`` uses associativity: ``q_C·(W_UK c) = (W_UKᵀ q_C)·c``, so
  W_UK is folded into the query and every head attends directly over the
  d_c-dim latents; ``softmax·(c W_UV) = (softmax·c) W_UV``, so W_UV moves to
  the output side (it can be merged into W_O ahead of time). The latent
  cache is read once for all heads: attention becomes a matrix-matrix
  product of arithmetic intensity ∝ h instead of h matrix-vector products.

References:
  DeepSeek-AI 2024, "DeepSeek-V2: A Strong, Economical, and Efficient
  Mixture-of-Experts Language Model" (arXiv:2405.04434), §2.1, eqs. (9)–(19).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, cast

import flax.linen as nn
import jax.numpy as jnp
from jax import Array

from jaxlab.nn.attention_core import (
    cache_mask,
    check_cache,
    check_padding_mask,
    check_sequence_input,
    chunk_mask,
    expand_mask,
    logit_scale,
    query_positions,
    softmax_parts,
)
from jaxlab.nn.kv_cache import LatentCache
from jaxlab.nn.rope_scaling import RopeConfig, rotate

MLAMode = Literal["naive", "absorbed"]


@dataclasses.dataclass(frozen=True)
class MLAConfig:
    """Shape of a multi-head latent attention layer (static, hashable).

    Attributes:
      num_heads: heads h.
      kv_lora_rank: d_c, the key-value latent dimension (cached).
      qk_nope_dim: per-head query/key dimension without RoPE.
      qk_rope_dim: d_r, the decoupled RoPE dimension (one key shared by all heads; even).
      v_head_dim: per-head value dimension.
      q_lora_rank: d_c' of the query compression; ``None`` projects queries at full rank.
      mode: ``"naive"`` or ``"absorbed"`` evaluation (same parameters).
      rope: RoPE settings for the decoupled part (ReRoPE is not supported).
      causal: mask keys after the query.
      norm_eps: epsilon of the latent RMSNorms.
    """

    num_heads: int = 16
    kv_lora_rank: int = 512
    qk_nope_dim: int = 128
    qk_rope_dim: int = 64
    v_head_dim: int = 128
    q_lora_rank: int | None = None
    mode: MLAMode = "naive"
    rope: RopeConfig = RopeConfig()
    causal: bool = True
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("num_heads", "kv_lora_rank", "qk_nope_dim", "qk_rope_dim", "v_head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive int; got {value!r}.")
        if self.qk_rope_dim % 2:
            raise ValueError(f"`qk_rope_dim` must be even for RoPE; got {self.qk_rope_dim}.")
        if self.q_lora_rank is not None and (not isinstance(self.q_lora_rank, int) or self.q_lora_rank < 1):
            raise ValueError(f"`q_lora_rank` must be None or a positive int; got {self.q_lora_rank!r}.")
        if self.mode not in ("naive", "absorbed"):
            raise ValueError(f"`mode` must be 'naive' or 'absorbed'; got {self.mode!r}.")
        if not isinstance(self.rope, RopeConfig) or self.rope.rectified:
            raise ValueError(f"`rope` must be a RopeConfig without ReRoPE; got {self.rope!r}.")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_dim + self.qk_rope_dim

    def empty_cache(self, batch: int, max_len: int, dtype: Any = jnp.float32) -> LatentCache:
        return LatentCache(
            jnp.zeros((batch, max_len, self.kv_lora_rank), dtype),
            jnp.zeros((batch, max_len, self.qk_rope_dim), dtype),
            jnp.zeros((), jnp.int32),
        )


DEEPSEEK_V2 = MLAConfig(
    num_heads=128, kv_lora_rank=512, qk_nope_dim=128, qk_rope_dim=64, v_head_dim=128, q_lora_rank=1536
)  # the attention dimensions of DeepSeek-V2 (Table in §2.1 / Appendix)


def _init():
    return nn.initializers.lecun_normal()  # fan-in = rows of the 2-D weight


def latent_scores(query: Array, q_rope: Array, c_kv: Array, k_rope: Array, w_uk: Array, mode: MLAMode) -> Array:
    """Unscaled float32 logits (b, h, t, s) of MLA against one block of latents.

    Args:
      query: (b, t, h, n) queries without RoPE (``"naive"``), or their
        absorbed form (b, t, h, c) = ``q_C W_UKᵀ`` (``"absorbed"``).
      q_rope: (b, t, h, r) rotated RoPE queries.
      c_kv: (b, s, c) latents; k_rope: (b, s, r) rotated shared RoPE keys.
      w_uk: (c, h, n) key up-projection (used by ``"naive"``).
      mode: ``"naive"`` expands the keys ``c W_UK``; ``"absorbed"`` dots the
        absorbed query with the latents directly.
    """
    rope_part = jnp.einsum("bthr,bsr->bhts", q_rope, k_rope, preferred_element_type=jnp.float32)
    if mode == "naive":
        k_nope = jnp.einsum("bsc,chn->bshn", c_kv, w_uk)  # (b, s, h, n): the re-expanded keys
        return jnp.einsum("bthn,bshn->bhts", query, k_nope, preferred_element_type=jnp.float32) + rope_part
    return jnp.einsum("bthc,bsc->bhts", query, c_kv, preferred_element_type=jnp.float32) + rope_part


def latent_values(probs: Array, c_kv: Array, w_uv: Array, mode: MLAMode) -> Array:
    """One block's contribution to the per-head outputs.

    ``"naive"``: (b, t, h, v) from the re-expanded values ``c W_UV``.
    ``"absorbed"``: (b, t, h, c), the probability-weighted latents; summed
    over blocks, W_UV is applied once afterwards.
    """
    probs = probs.astype(c_kv.dtype)
    if mode == "naive":
        values = jnp.einsum("bsc,chv->bshv", c_kv, w_uv)  # (b, s, h, v): the re-expanded values
        return jnp.einsum("bhts,bshv->bthv", probs, values)
    return jnp.einsum("bhts,bsc->bthc", probs, c_kv)  # attention in latent space


class MultiHeadLatentAttention(nn.Module):
    """DeepSeek-V2's MLA with a :class:`LatentCache`; same calling convention as :class:`MultiHeadAttention`.

    Attributes:
      config: the layer's :class:`MLAConfig` (its ``mode`` picks naive or
        absorbed evaluation; parameters do not depend on it).
      param_dtype: dtype of the weights.

    Call ``(x, cache=None, *, positions=None, mask=None) -> (y, cache)`` with x (b, t, D)
    and an optional (b, t) padding ``mask`` (see :class:`~jaxlab.nn.MultiHeadAttention`).
    """

    config: MLAConfig
    param_dtype: Any = jnp.float32

    def _queries(self, x: Array) -> Array:
        cfg, (b, t, features) = self.config, x.shape
        width = cfg.num_heads * cfg.qk_head_dim
        if cfg.q_lora_rank is None:
            w_q = self.param("w_q", _init(), (features, width), self.param_dtype)
            return (x @ w_q).reshape(b, t, cfg.num_heads, cfg.qk_head_dim)
        w_dq = self.param("w_dq", _init(), (features, cfg.q_lora_rank), self.param_dtype)
        c_q = nn.RMSNorm(epsilon=cfg.norm_eps, param_dtype=self.param_dtype, name="q_norm")(x @ w_dq)
        w_uq = self.param("w_uq", _init(), (cfg.q_lora_rank, width), self.param_dtype)
        return (c_q @ w_uq).reshape(b, t, cfg.num_heads, cfg.qk_head_dim)  # (b, t, h, n + r)

    @nn.compact
    def __call__(self, x: Array, cache: LatentCache | None = None, *, positions: Array | None = None, mask: Array | None = None):
        check_sequence_input(x)
        cfg = self.config
        b, t, features = x.shape
        h, c, r = cfg.num_heads, cfg.kv_lora_rank, cfg.qk_rope_dim
        if cache is not None:
            check_cache(cache[:2], ((b, cache.max_len, c), (b, cache.max_len, r)), x, cache.max_len, cache.index)
        if mask is not None:
            mask = check_padding_mask(mask, x, None if cache is None else cache.index)
        q = self._queries(x)
        q_nope, q_rope = q[..., : cfg.qk_nope_dim], q[..., cfg.qk_nope_dim :]
        # weights are stored as 2-D matrices (per-head blocks side by side) and viewed per head below
        w_dkv = self.param("w_dkv", _init(), (features, c + r), self.param_dtype)
        kv = x @ w_dkv  # (b, t, c + r): W_DKV and W_KR in one matrix
        c_kv = nn.RMSNorm(epsilon=cfg.norm_eps, param_dtype=self.param_dtype, name="kv_norm")(kv[..., :c])
        w_uk = self.param("w_uk", _init(), (c, h * cfg.qk_nope_dim), self.param_dtype).reshape(c, h, -1)
        w_uv = self.param("w_uv", _init(), (c, h * cfg.v_head_dim), self.param_dtype).reshape(c, h, -1)
        w_o = self.param("w_o", _init(), (h * cfg.v_head_dim, features), self.param_dtype)

        q_pos = query_positions(t, None if cache is None else cache.index, positions)
        length = t if cache is None else cache.max_len
        q_rope = rotate(q_rope, q_pos, cfg.rope, length=length)  # (b, t, h, r)
        k_rope = rotate(kv[..., c:], q_pos, cfg.rope, length=length)  # (b, t, r)
        query = q_nope if cfg.mode == "naive" else jnp.einsum("bthn,chn->bthc", q_nope, w_uk)  # W_UK absorbed

        blocks = [(c_kv, k_rope, chunk_mask(q_pos, cfg.causal, mask))]
        if cache is not None:  # the slots written before: read here, written only below
            blocks.insert(0, (cache.c_kv, cache.k_rope, cache_mask(cache.index, cache.max_len)))
        parts = [latent_scores(query, q_rope, latents, keys, w_uk, cfg.mode) for latents, keys, _ in blocks]
        scale = logit_scale(cfg.rope, q_pos, cfg.qk_head_dim, parts[0].ndim)
        probs = softmax_parts([p * scale for p in parts], [expand_mask(m, parts[0].ndim) for _, _, m in blocks])
        out = cast(Array, sum(latent_values(p, latents, w_uv, cfg.mode) for p, (latents, _, _) in zip(probs, blocks)))  # blocks is non-empty
        if cfg.mode == "absorbed":
            out = jnp.einsum("bthc,chv->bthv", out, w_uv)  # W_UV on the output side
        y = out.reshape(b, t, -1) @ w_o
        counts = None if mask is None else jnp.sum(mask, axis=1, dtype=jnp.int32)
        return y, None if cache is None else cache.append(c_kv, k_rope, counts)
