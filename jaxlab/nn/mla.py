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
from jaxlab.nn.kv_cache import LatentCache
from jaxlab.nn.precision import compute_dtype, dtype_name
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


def decompressed_attention(
    q: Array,
    k_rope: Array,
    c_kv: Array,
    w_uk: Array,
    w_uv: Array,
    *,
    scale: float,
    causal: bool,
    positions: Array | None,
    padding: Array | None,
    impl: str | None,
) -> Array:
    """MLA without a cache through ``jax.nn.dot_product_attention``: the keys and values re-expanded from the latents.

    Args:
      q: (b, t, h, n + r) queries ``[q_C, RoPE(q_R)]``, logit factors folded in.
      k_rope: (b, t, r) rotated shared RoPE keys; c_kv: (b, t, c) latents.
      w_uk: (c, h, n), w_uv: (c, h, v) up-projections.
      scale, causal, positions, padding, impl: as :func:`~jaxlab.nn.attention_core.fused_attention`.

    Returns:
      (b, t, h, v) per-head outputs.
    """
    b, t, h, qk = q.shape
    k_nope = jnp.einsum("bsc,chn->bshn", c_kv, w_uk)  # (b, t, h, n)
    k = jnp.concatenate([k_nope, jnp.broadcast_to(k_rope[:, :, None], (b, t, h, k_rope.shape[-1]))], axis=-1)
    v = jnp.einsum("bsc,chv->bshv", c_kv, w_uv)  # (b, t, h, v)
    # the kernel wants one head dim for q, k and v: zero channels change neither the logits nor the outputs
    width = max(qk, v.shape[-1])
    pad = lambda a: jnp.pad(a, ((0, 0), (0, 0), (0, 0), (0, width - a.shape[-1])))
    out = fused_attention(pad(q), pad(k), pad(v), scale=scale, causal=causal, positions=positions, padding=padding, impl=impl)
    return out[..., : v.shape[-1]]


class MultiHeadLatentAttention(nn.Module):
    """DeepSeek-V2's MLA with a :class:`LatentCache`; same calling convention as :class:`MultiHeadAttention`.

    Attributes:
      config: the layer's :class:`MLAConfig` (its ``mode`` picks naive or
        absorbed evaluation; parameters do not depend on it).
      dtype: compute dtype (float32, bfloat16 or float16); logits, softmax
        and the RMSNorm statistics stay float32. Store the cache in it.
      param_dtype: dtype of the weights (float32).
      attention_impl: a call without a cache goes through
        ``jax.nn.dot_product_attention`` (``None``, ``"xla"``, ``"cudnn"``) in the
        decompressed form (keys and values re-expanded from the latents,
        whatever ``mode``); ``"reference"`` keeps the explicit softmax. Calls
        with a cache (prefill and the absorbed latent decode) use the
        reference path. Forward-mode autodiff works through the reference and
        the ``None``/``"xla"`` paths, not through ``"cudnn"`` (see
        :class:`~jaxlab.nn.MultiHeadAttention`).

    Call ``(x, cache=None, *, positions=None, mask=None) -> (y, cache)`` with x (b, t, D)
    and an optional (b, t) padding ``mask`` (see :class:`~jaxlab.nn.MultiHeadAttention`).
    """

    config: MLAConfig
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention_impl: str | None = None

    def __post_init__(self) -> None:
        check_attention_impl(self.attention_impl, compute_dtype("dtype", self.dtype))
        dtype_name("param_dtype", self.param_dtype)
        super().__post_init__()

    def _weight(self, name: str, shape: tuple[int, ...]) -> Array:
        """A float32 (``param_dtype``) parameter, used in the compute dtype."""
        return self.param(name, _init(), shape, self.param_dtype).astype(self.dtype)

    def _norm(self, name: str, x: Array) -> Array:
        return nn.RMSNorm(epsilon=self.config.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype, name=name)(x)

    def _queries(self, x: Array) -> Array:
        cfg, (b, t, features) = self.config, x.shape
        width = cfg.num_heads * cfg.qk_head_dim
        if cfg.q_lora_rank is None:
            return (x @ self._weight("w_q", (features, width))).reshape(b, t, cfg.num_heads, cfg.qk_head_dim)
        c_q = self._norm("q_norm", x @ self._weight("w_dq", (features, cfg.q_lora_rank)))
        return (c_q @ self._weight("w_uq", (cfg.q_lora_rank, width))).reshape(b, t, cfg.num_heads, cfg.qk_head_dim)  # (b, t, h, n + r)

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
        x = x.astype(self.dtype)
        q = self._queries(x)
        q_nope, q_rope = q[..., : cfg.qk_nope_dim], q[..., cfg.qk_nope_dim :]
        # weights are stored as 2-D matrices (per-head blocks side by side) and viewed per head below
        kv = x @ self._weight("w_dkv", (features, c + r))  # (b, t, c + r): W_DKV and W_KR in one matrix
        c_kv = self._norm("kv_norm", kv[..., :c])
        w_uk = self._weight("w_uk", (c, h * cfg.qk_nope_dim)).reshape(c, h, -1)
        w_uv = self._weight("w_uv", (c, h * cfg.v_head_dim)).reshape(c, h, -1)
        w_o = self._weight("w_o", (h * cfg.v_head_dim, features))

        q_pos = query_positions(t, None if cache is None else cache.index, positions)
        length = t if cache is None else cache.max_len
        q_rope = rotate(q_rope, q_pos, cfg.rope, length=length)  # (b, t, h, r)
        k_rope = rotate(kv[..., c:], q_pos, cfg.rope, length=length)  # (b, t, r)
        if cache is None and self.attention_impl != "reference":
            query = fold_logit_scale(jnp.concatenate([q_nope, q_rope], axis=-1), cfg.rope, q_pos)
            out = decompressed_attention(
                query, k_rope, c_kv, w_uk, w_uv, scale=cfg.qk_head_dim**-0.5, causal=cfg.causal,
                positions=positions, padding=mask, impl=self.attention_impl,
            )  # fmt: skip
            return out.reshape(b, t, -1) @ w_o, None
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
