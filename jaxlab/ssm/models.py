"""Residual S4/S4D sequence models: a pooled classifier and a causal autoregressive model.

Both stack :class:`jaxlab.ssm.S4Block` layers (pre-norm residual) between an
input encoder and a final LayerNorm + linear decoder. The SSM convolution is
causal, so the autoregressive model's output at position ``ℓ`` depends only on
inputs ``<= ℓ``; its :meth:`SSMAutoregressive.step` decodes one token at a
time from carried per-layer states and agrees with the full-sequence modes.

Precision (:mod:`jaxlab.nn.precision`): ``dtype`` is the compute dtype of the
encoder, the blocks' projections and the decoder; the SSMs, the LayerNorm
statistics and the pooling run in float32 and the logits are float32.

References:
    Gu, Goel, Ré. "Efficiently Modeling Long Sequences with Structured State
    Spaces." ICLR 2022 (Section 4: sequence classification, generation).
    Gu et al. "On the Parameterization and Initialization of Diagonal State
    Space Models." NeurIPS 2022 (Section 5).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import Array

from jaxlab._checks import check_choice
from jaxlab.nn.precision import compute_dtype
from jaxlab.nn.sharding import BATCH, EMBED, constrain
from jaxlab.ssm.block import S4Block, float32_norm, sequence_names, token_names
from jaxlab.ssm.layers import zero_state

POOLINGS = ("mean", "last")


class _Stack(nn.Module):
    """``n_layers`` :class:`S4Block` s followed by a LayerNorm."""

    d_model: int
    n_layers: int
    d_state: int
    kind: str
    init_scheme: str
    discretization: str
    dt_min: float
    dt_max: float
    l_max: int | None
    dropout: float
    dtype: Any
    param_dtype: Any

    def setup(self):
        self.compute = compute_dtype("dtype", self.dtype)
        compute_dtype("param_dtype", self.param_dtype)
        self.blocks = [S4Block(self.d_model, **_block_kwargs(self)) for _ in range(self.n_layers)]
        self.norm = nn.LayerNorm(dtype=jnp.float32, param_dtype=self.param_dtype)

    def __call__(self, x: Array, *, mode: str, deterministic: bool) -> Array:  # (B, L, H) -> (B, L, H) in dtype
        x = constrain(x.astype(self.compute), sequence_names(x.ndim))
        for blk in self.blocks:
            x = blk(x, mode=mode, deterministic=deterministic)
        return constrain(float32_norm(self.norm, x, self.compute), sequence_names(x.ndim))

    def step(self, x_t: Array, states: tuple[Array, ...]) -> tuple[Array, tuple[Array, ...]]:
        x_t = x_t.astype(self.compute)
        new = []
        for blk, st in zip(self.blocks, states):
            x_t, st = blk.step(x_t, st)
            new.append(st)
        return constrain(float32_norm(self.norm, x_t, self.compute), token_names(x_t.ndim)), tuple(new)


def _block_kwargs(m) -> dict:
    names = ("d_state", "kind", "init_scheme", "discretization", "dt_min", "dt_max", "l_max", "dropout", "dtype", "param_dtype")
    return {n: getattr(m, n) for n in names}


class SSMClassifier(nn.Module):
    """Sequence classifier: Dense encoder → S4 blocks → LayerNorm → pooling → Dense.

    Attributes:
        num_classes: number of output logits.
        d_model: channels ``H``.
        n_layers: number of residual blocks.
        pool: ``"mean"`` over time or ``"last"`` (the final position).
        d_state, kind, init_scheme, discretization, dt_min, dt_max, l_max, dropout: block
            settings (see :class:`jaxlab.ssm.SSM`).
        dtype: compute dtype (float32, bfloat16 or float16) of the dense
            layers; the SSMs compute in float32 and the logits are float32.
        param_dtype: dtype of the dense and norm parameters (the SSMs' stay float32).

    References:
        Gu, Goel, Ré. S4 (ICLR 2022), Section 4.2 (sequential image
        classification).
    """

    num_classes: int
    d_model: int = 128
    n_layers: int = 4
    pool: str = "mean"
    d_state: int = 64
    kind: str = "s4d"
    init_scheme: str = "legs"
    discretization: str = "zoh"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    l_max: int | None = None
    dropout: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, mode: str = "conv", deterministic: bool = True) -> Array:
        """``x`` ``(B, L)`` or ``(B, L, d_in)`` floats → float32 logits ``(B, num_classes)``."""
        dtype = compute_dtype("dtype", self.dtype)
        compute_dtype("param_dtype", self.param_dtype)
        check_choice("pool", self.pool, POOLINGS)
        if x.ndim == 2:
            x = x[..., None]
        if x.ndim != 3:
            raise ValueError(f"x: expected shape (B, L) or (B, L, d_in), received {x.shape}")
        h = nn.Dense(self.d_model, dtype=dtype, param_dtype=self.param_dtype, name="encoder")(x.astype(dtype))
        h = _Stack(self.d_model, self.n_layers, **_block_kwargs(self), name="stack")(h, mode=mode, deterministic=deterministic)
        # the mean over L in float32: a bf16 running sum over a long sequence drops the late terms
        h = jnp.mean(h.astype(jnp.float32), axis=-2) if self.pool == "mean" else h[..., -1, :]
        h = constrain(h.astype(dtype), (BATCH, EMBED))
        return nn.Dense(self.num_classes, dtype=dtype, param_dtype=self.param_dtype, name="decoder")(h).astype(jnp.float32)


class SSMAutoregressive(nn.Module):
    """Causal token model: Embed → S4 blocks → LayerNorm → Dense over the vocabulary.

    ``__call__`` maps tokens ``(B, L)`` to next-token logits ``(B, L, V)``
    (position ``ℓ`` predicts token ``ℓ+1``); :meth:`step` does the same for
    one token with carried states from :meth:`initial_state`.

    Attributes:
        vocab_size: number of tokens ``V``.
        d_model, n_layers, d_state, kind, init_scheme, discretization, dt_min, dt_max, l_max,
        dropout, dtype, param_dtype: as in :class:`SSMClassifier`.

    References:
        Gu, Goel, Ré. S4 (ICLR 2022), Sections 3.4 and 4.3 (autoregressive
        generation with the recurrent view).
    """

    vocab_size: int
    d_model: int = 128
    n_layers: int = 4
    d_state: int = 64
    kind: str = "s4d"
    init_scheme: str = "legs"
    discretization: str = "zoh"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    l_max: int | None = None
    dropout: float = 0.0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        dtype = compute_dtype("dtype", self.dtype)
        compute_dtype("param_dtype", self.param_dtype)
        self.embed = nn.Embed(self.vocab_size, self.d_model, dtype=dtype, param_dtype=self.param_dtype)
        self.stack = _Stack(self.d_model, self.n_layers, **_block_kwargs(self))
        self.decoder = nn.Dense(self.vocab_size, dtype=dtype, param_dtype=self.param_dtype)

    def __call__(self, tokens: Array, *, mode: str = "conv", deterministic: bool = True) -> Array:
        """``tokens`` ``(B, L)`` ints → float32 logits ``(B, L, V)``."""
        if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"tokens: expected integer shape (B, L), received {tokens.dtype} {tokens.shape}")
        h = self.stack(self.embed(tokens), mode=mode, deterministic=deterministic)
        return self.decoder(h).astype(jnp.float32)

    def step(self, token: Array, states: tuple[Array, ...]) -> tuple[Array, tuple[Array, ...]]:
        """``token`` ``(B,)`` ints and per-layer states → (float32 logits ``(B, V)``, new states)."""
        h, states = self.stack.step(self.embed(token), states)
        return self.decoder(h).astype(jnp.float32), states

    def initial_state(self, batch_size: int) -> tuple[Array, ...]:
        """Zero decoding states, one ``(B, H, N/2)`` (S4D) or ``(B, H, N)`` (S4) per layer."""
        return tuple(zero_state((batch_size,), self.d_model, self.d_state, self.kind) for _ in range(self.n_layers))
