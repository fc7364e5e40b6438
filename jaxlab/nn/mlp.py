"""A residual MLP conditioned on time: the velocity / denoiser network for vector data."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
from jax import Array

from jaxlab.nn.embeddings import sinusoidal_embedding


class ResidualBlock(nn.Module):
    """Pre-norm residual block whose hidden layer is shifted by a projection of the condition."""

    width: int

    @nn.compact
    def __call__(self, h: Array, cond: Array) -> Array:  # (b, w), (b, c) -> (b, w)
        y = nn.LayerNorm()(h)
        y = nn.Dense(self.width)(y) + nn.Dense(self.width)(cond)
        y = nn.silu(y)
        y = nn.Dense(self.width, kernel_init=nn.initializers.zeros)(y)
        return h + y


class TimeMLP(nn.Module):
    """``f(x, t[, *extra]) -> R^dim(x)``: a residual MLP with sinusoidal time features.

    Extra scalar conditions per example (a shortcut model's step size, say)
    are embedded the same way and added to the time embedding.

    Attributes:
      width: hidden width.
      depth: number of residual blocks.
      time_features: size of each sinusoidal embedding.
    """

    width: int = 256
    depth: int = 3
    time_features: int = 64

    @nn.compact
    def __call__(self, x: Array, t: Array, *conditions: Array) -> Array:  # (b, d), (b,) -> (b, d)
        if x.ndim != 2:
            raise ValueError(f"x must have shape (batch, features), got {x.shape}")
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
        cond = sinusoidal_embedding(t, self.time_features)
        for c in conditions:
            cond = cond + sinusoidal_embedding(jnp.broadcast_to(c, x.shape[:1]), self.time_features)
        cond = nn.Dense(self.width)(nn.silu(nn.Dense(self.width)(cond)))  # (b, w)
        h = nn.Dense(self.width)(x)
        for _ in range(self.depth):
            h = ResidualBlock(self.width)(h, cond)
        h = nn.silu(nn.LayerNorm()(h))
        return nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros)(h)
