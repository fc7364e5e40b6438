"""MLPs for vector data: a residual MLP conditioned on time (the velocity / denoiser network) and a plain classifier."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import Array

from jaxlab.nn.embeddings import sinusoidal_embedding
from jaxlab.nn.sharding import BATCH, EMBED, constrain

VECTOR = (BATCH, EMBED)  # (b, width)


class ResidualBlock(nn.Module):
    """Pre-norm residual block whose hidden layer is shifted by a projection of the condition."""

    width: int

    @nn.compact
    def __call__(self, h: Array, cond: Array) -> Array:  # (b, w), (b, c) -> (b, w)
        y = nn.LayerNorm()(h)
        y = nn.Dense(self.width)(y) + constrain(nn.Dense(self.width)(cond), VECTOR)
        y = nn.silu(constrain(y, VECTOR))
        y = nn.Dense(self.width, kernel_init=nn.initializers.zeros)(y)
        return h + y


class TimeMLP(nn.Module):
    """``f(x, t[, *extra]) -> R^dim(x)``: a residual MLP with sinusoidal time features.

    Extra scalar conditions per example (a shortcut model's step size, say)
    are embedded the same way and added to the time embedding. With
    ``num_classes > 0`` the network also takes integer ``labels`` in
    ``[0, num_classes]``, where ``num_classes`` itself is the null label of
    classifier-free guidance (a learned embedding added to the condition).

    Attributes:
      width: hidden width.
      depth: number of residual blocks.
      time_features: size of each sinusoidal embedding.
      num_classes: number of class labels (0: unconditional, ``labels`` must be None).
      separate_conditions: embed t and each extra condition with its own
        two-layer MLP and sum the results (as DiT-style shortcut models embed
        t and the step size d), instead of summing the sinusoidal features
        before one shared MLP. The shared sum is symmetric in (t, d), so the
        separate embedding is the better choice for a second time-like input.
    """

    width: int = 256
    depth: int = 3
    time_features: int = 64
    num_classes: int = 0
    separate_conditions: bool = False

    @nn.compact
    def __call__(self, x: Array, t: Array, *conditions: Array, labels: Array | None = None) -> Array:  # (b, d), (b,) -> (b, d)
        if x.ndim != 2:
            raise ValueError(f"x must have shape (batch, features), got {x.shape}")
        if (labels is None) != (self.num_classes == 0):
            raise ValueError(f"labels must be given exactly when num_classes > 0; num_classes={self.num_classes}, labels={labels is not None}")
        if labels is not None and labels.shape != x.shape[:1]:
            raise ValueError(f"labels must have shape {x.shape[:1]}, got {labels.shape}")
        scalars = [jnp.broadcast_to(jnp.asarray(c, x.dtype), x.shape[:1]) for c in (t, *conditions)]  # each (b,)
        cond: Array
        if self.separate_conditions:
            cond = jnp.zeros((), x.dtype)
            for i, c in enumerate(scalars):
                hidden = nn.Dense(self.width, name=f"cond{i}_in")(sinusoidal_embedding(c, self.time_features))
                cond = cond + nn.Dense(self.width, name=f"cond{i}_out")(nn.silu(hidden))  # (b, w)
            if labels is not None:
                cond = cond + nn.Embed(self.num_classes + 1, self.width)(labels)
        else:
            cond = functools.reduce(jnp.add, [sinusoidal_embedding(c, self.time_features) for c in scalars])  # (b, time_features)
            if labels is not None:
                cond = cond + nn.Embed(self.num_classes + 1, self.time_features)(labels)
            hidden = constrain(nn.Dense(self.width)(constrain(cond, VECTOR)), VECTOR)
            cond = nn.Dense(self.width)(nn.silu(hidden))  # (b, w)
        cond = constrain(cond, VECTOR)
        h = constrain(nn.Dense(self.width)(x), VECTOR)
        for _ in range(self.depth):
            h = constrain(ResidualBlock(self.width)(h, cond), VECTOR)
        h = nn.silu(nn.LayerNorm()(h))
        return nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros)(h)


class ClassifierMLP(nn.Module):
    """``x (b, features) -> logits (b, num_classes)``: ``depth`` hidden ReLU layers ``Dense_i`` and a linear ``head``.

    Attributes:
      width: hidden width.
      depth: number of hidden layers.
      num_classes: number of outputs.
      dtype: the compute dtype (None: the input's); parameters stay float32.
    """

    width: int
    depth: int = 2
    num_classes: int = 10
    dtype: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:  # (b, features) -> (b, num_classes)
        for i in range(self.depth):
            x = nn.relu(nn.Dense(self.width, dtype=self.dtype, name=f"Dense_{i}")(x))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x)
