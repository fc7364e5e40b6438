"""A small decoder-only language model over any attention layer of :mod:`jaxlab.nn`.

Pre-norm blocks ``h + Attn(RMSNorm(h))`` then ``h + SwiGLU(RMSNorm(h))``,
token embeddings, no absolute positions (RoPE inside attention), a final
RMSNorm and an untied output projection. The attention layer is chosen by
the type of ``config.attention``: :class:`AttentionConfig` (MHA/GQA/MQA) or
:class:`MLAConfig`. Like the layers, the model decodes with explicit caches:
``logits, caches = model.apply(params, tokens, caches)``.

Also here: the next-token loss and greedy generation (prefill then a ``lax.scan`` of one-token steps).

References:
  Radford et al. 2019, "Language Models are Unsupervised Multitask Learners"
  (GPT-2: decoder-only pre-norm transformer).
  Shazeer 2020, "GLU Variants Improve Transformer" (arXiv:2002.05202) — SwiGLU.
  Zhang, Sennrich 2019, "Root Mean Square Layer Normalization" (arXiv:1910.07467).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax import Array

from jaxlab.nn.attention import AttentionConfig, MultiHeadAttention
from jaxlab.nn.attention_core import check_attention_impl
from jaxlab.nn.kv_cache import init_cache
from jaxlab.nn.mla import MLAConfig, MultiHeadLatentAttention
from jaxlab.nn.precision import compute_dtype, dtype_name
from jaxlab.nn.rope_scaling import RopeConfig
from jaxlab.nn.sharding import BATCH, EMBED, LENGTH, MLP, constrain

ACTIVATION = (BATCH, LENGTH, EMBED)  # (b, t, D), and (b, t, V) for the logits


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Decoder-only LM hyperparameters (static, hashable).

    Attributes:
      attention: the attention layer's config; its type picks the layer.
      vocab_size: number of token ids.
      d_model: residual width.
      num_layers: number of blocks.
      d_ff: hidden width of the SwiGLU feed-forward.
      norm_eps: RMSNorm epsilon.
      dtype: compute dtype of every matmul (float32, bfloat16 or float16);
        RMSNorm statistics, softmax and the logits stay float32.
      param_dtype: parameter dtype (float32).
      attention_impl: the attention layers' ``attention_impl``: ``None``,
        ``"xla"``, ``"cudnn"`` (``jax.nn.dot_product_attention`` for calls
        without a cache) or ``"reference"`` (the explicit softmax); see
        :class:`~jaxlab.nn.MultiHeadAttention` for which support ``jax.jvp``.
    """

    attention: AttentionConfig | MLAConfig = AttentionConfig(num_heads=4, head_dim=32)
    vocab_size: int = 256
    d_model: int = 128
    num_layers: int = 2
    d_ff: int = 384
    norm_eps: float = 1e-6
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    attention_impl: str | None = None

    def __post_init__(self) -> None:
        check_attention_impl(self.attention_impl, compute_dtype("dtype", self.dtype))
        dtype_name("param_dtype", self.param_dtype)
        if not isinstance(self.attention, (AttentionConfig, MLAConfig)):
            raise ValueError(f"`attention` must be an AttentionConfig or MLAConfig; got {type(self.attention).__name__}.")
        for name in ("vocab_size", "d_model", "num_layers", "d_ff"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive int; got {value!r}.")

    def with_rope(self, rope: RopeConfig) -> TransformerConfig:
        """The same model with another RoPE setting (parameters are unchanged)."""
        return dataclasses.replace(self, attention=dataclasses.replace(self.attention, rope=rope))


def attention_layer(config: AttentionConfig | MLAConfig, name: str | None = None, **precision: Any) -> nn.Module:
    """The Linen attention module for an attention config; ``precision``: its ``dtype``, ``param_dtype``, ``attention_impl``."""
    if isinstance(config, MLAConfig):
        return MultiHeadLatentAttention(config, name=name, **precision)
    if isinstance(config, AttentionConfig):
        return MultiHeadAttention(config, name=name, **precision)
    raise ValueError(f"`config` must be an AttentionConfig or MLAConfig; got {type(config).__name__}.")


class SwiGLU(nn.Module):
    """``(silu(x W_1) ⊙ x W_2) W_3``."""

    hidden: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:  # (b, t, D) -> (b, t, D)
        hidden = (BATCH, LENGTH, MLP)  # split over "tensor": column-parallel gate/up, row-parallel down
        dense = lambda width, name: nn.Dense(width, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype, name=name)
        gate = constrain(dense(self.hidden, "gate")(x), hidden)
        up = constrain(dense(self.hidden, "up")(x), hidden)
        return dense(x.shape[-1], "down")(nn.silu(gate) * up)


class DecoderBlock(nn.Module):
    """Pre-norm attention + SwiGLU block."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, h: Array, cache: Any = None, *, positions: Array | None = None):
        cfg = self.config
        dtype = compute_dtype("dtype", cfg.dtype)
        norm = lambda name: nn.RMSNorm(epsilon=cfg.norm_eps, dtype=dtype, param_dtype=cfg.param_dtype, name=name)  # float32 statistics
        layer = attention_layer(cfg.attention, "attention", dtype=dtype, param_dtype=cfg.param_dtype, attention_impl=cfg.attention_impl)
        attended, cache = layer(norm("attention_norm")(h), cache, positions=positions)
        h = h + attended
        h = h + SwiGLU(cfg.d_ff, dtype, cfg.param_dtype, name="mlp")(norm("mlp_norm")(h))
        return h, cache


class DecoderLM(nn.Module):
    """Decoder-only LM: ``(tokens (b, t), caches=None, *, positions=None) -> (logits (b, t, V) float32, caches)``.

    Precision: parameters in ``config.param_dtype``, the residual stream and
    every matmul in ``config.dtype``, RMSNorm statistics and softmax in
    float32, the logits cast to float32; caches from :func:`init_caches` are
    stored in the compute dtype.
    """

    config: TransformerConfig

    @nn.compact
    def __call__(self, tokens: Array, caches: tuple | None = None, *, positions: Array | None = None):
        cfg = self.config
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"`tokens` must be an integer array (batch, time); got {tokens.dtype} {tokens.shape}.")
        if caches is not None and len(caches) != cfg.num_layers:
            raise ValueError(f"`caches` must hold num_layers = {cfg.num_layers} caches; got {len(caches)}.")
        dtype = compute_dtype("dtype", cfg.dtype)
        embed = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=dtype, param_dtype=cfg.param_dtype, name="embed")
        h = embed(tokens.astype(jnp.int32))  # (b, t, D) in the compute dtype
        h = constrain(h, ACTIVATION)
        new_caches = []
        for i in range(cfg.num_layers):
            h, cache = DecoderBlock(cfg, name=f"block_{i}")(h, None if caches is None else caches[i], positions=positions)
            h = constrain(h, ACTIVATION)
            new_caches.append(cache)
        h = nn.RMSNorm(epsilon=cfg.norm_eps, dtype=dtype, param_dtype=cfg.param_dtype, name="final_norm")(h)
        unembed = nn.Dense(cfg.vocab_size, use_bias=False, dtype=dtype, param_dtype=cfg.param_dtype, name="unembed")
        logits = constrain(unembed(h).astype(jnp.float32), ACTIVATION)  # the loss sees float32 logits
        return logits, None if caches is None else tuple(new_caches)


def init_caches(config: TransformerConfig, batch: int, max_len: int, dtype: Any = None) -> tuple:
    """One empty cache per layer, stored in ``dtype`` (default: the model's compute dtype)."""
    dtype = compute_dtype("dtype", config.dtype if dtype is None else dtype)
    return tuple(init_cache(config.attention, batch, max_len, dtype) for _ in range(config.num_layers))


def token_losses(apply_fn: Callable, params: Any, windows: Array) -> Array:
    """Next-token cross-entropy (nats) at every position of (b, t + 1) windows → (b, t)."""
    if windows.ndim != 2 or windows.shape[1] < 2:
        raise ValueError(f"`windows` must have shape (batch, time + 1) with time >= 1; got {windows.shape}.")
    windows = windows.astype(jnp.int32)
    logits, _ = apply_fn(params, windows[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, windows[:, 1:])


def greedy_generate(apply_fn: Callable, params: Any, prompt: Array, caches: tuple, *, steps: int) -> tuple[Array, tuple]:
    """Prefills ``caches`` with ``prompt`` (b, p), then decodes ``steps`` tokens greedily one at a time.

    Args:
      apply_fn: ``DecoderLM(config).apply``.
      params: model parameters.
      prompt: (b, p) integer tokens.
      caches: empty caches with ``max_len >= p + steps``.
      steps: number of new tokens (static).

    Returns:
      ``(tokens (b, steps) int32, caches)``.

    Raises:
      ValueError: if ``prompt`` is not a 2-D integer array or the caches are too short.
    """
    if prompt.ndim != 2 or not jnp.issubdtype(prompt.dtype, jnp.integer):
        raise ValueError(f"`prompt` must be an integer array (batch, time); got {prompt.dtype} {prompt.shape}.")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be a positive int; got {steps!r}.")
    max_len = min(cache.max_len for cache in caches)
    if prompt.shape[1] + steps > max_len:
        raise ValueError(f"`caches` hold {max_len} tokens; prompt ({prompt.shape[1]}) + steps ({steps}) do not fit.")
    logits, caches = apply_fn(params, prompt.astype(jnp.int32), caches)
    first = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)  # (b,)

    def step(carry, _):
        token, caches = carry
        logits, caches = apply_fn(params, token[:, None], caches)
        next_token = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
        return (next_token, caches), token

    (_, caches), tokens = jax.lax.scan(step, (first, caches), None, length=steps)
    return tokens.T, caches


def count_params(params: Any) -> int:
    """Number of scalars in a parameter tree."""
    return sum(leaf.size for leaf in jax.tree.leaves(params))
