"""MLPs for vector data: a residual MLP conditioned on time (the velocity / denoiser network) and a plain classifier.

Precision (:mod:`jaxlab.nn.precision`): parameters in ``param_dtype``, the
matrix products and the residual stream in ``dtype``; the time and step
embeddings, the label embedding and LayerNorm statistics stay float32, and the
output is float32.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import Array

from jaxlab.nn.embeddings import sinusoidal_embedding
from jaxlab.nn.precision import compute_dtype
from jaxlab.nn.sharding import BATCH, EMBED, constrain

VECTOR = (BATCH, EMBED)  # (b, width)


def _layer_norm(h: Array, dtype: Any, param_dtype: Any) -> Array:
    """LayerNorm with its statistics in float32 (bf16 means and variances lose the small components), cast to ``dtype``."""
    return nn.LayerNorm(dtype=jnp.float32, param_dtype=param_dtype)(h.astype(jnp.float32)).astype(dtype)


class ResidualBlock(nn.Module):
    """Pre-norm residual block whose hidden layer is shifted by a projection of the condition.

    Attributes:
      width: hidden width.
      dtype: compute dtype (float32, bfloat16 or float16); LayerNorm statistics stay float32.
      param_dtype: parameter dtype.
    """

    width: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: Array, cond: Array) -> Array:  # (b, w), (b, c) -> (b, w) in dtype
        dtype = compute_dtype("dtype", self.dtype)
        compute_dtype("param_dtype", self.param_dtype)
        dense = functools.partial(nn.Dense, self.width, dtype=dtype, param_dtype=self.param_dtype)
        y = _layer_norm(h, dtype, self.param_dtype)
        y = dense()(y) + constrain(dense()(cond), VECTOR)
        y = nn.silu(constrain(y, VECTOR))
        y = dense(kernel_init=nn.initializers.zeros)(y)
        return h.astype(dtype) + y


class TimeMLP(nn.Module):
    """``f(x, t[, *extra]) -> R^dim(x)`` float32: a residual MLP with sinusoidal time features.

    Extra scalar conditions per example (a shortcut model's step size, say)
    are embedded the same way and added to the time embedding. With
    ``num_classes > 0`` the network also takes integer ``labels`` in
    ``[0, num_classes]``, where ``num_classes`` itself is the null label of
    classifier-free guidance (a learned embedding added to the condition).
    The conditions are embedded in float32 whatever ``dtype`` is (a bfloat16
    t holds 8 bits of mantissa: not the shortcut model's 1/128 grid) and
    cast to ``dtype`` only where they enter the residual blocks.

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
      dtype: compute dtype of the residual stream (float32, bfloat16 or float16).
      param_dtype: parameter dtype.
    """

    width: int = 256
    depth: int = 3
    time_features: int = 64
    num_classes: int = 0
    separate_conditions: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, t: Array, *conditions: Array, labels: Array | None = None) -> Array:  # (b, d), (b,) -> (b, d) float32
        dtype = compute_dtype("dtype", self.dtype)
        compute_dtype("param_dtype", self.param_dtype)
        if x.ndim != 2:
            raise ValueError(f"x must have shape (batch, features), got {x.shape}")
        if (labels is None) != (self.num_classes == 0):
            raise ValueError(f"labels must be given exactly when num_classes > 0; num_classes={self.num_classes}, labels={labels is not None}")
        if labels is not None and labels.shape != x.shape[:1]:
            raise ValueError(f"labels must have shape {x.shape[:1]}, got {labels.shape}")
        scalars = [jnp.broadcast_to(jnp.asarray(c, jnp.float32), x.shape[:1]) for c in (t, *conditions)]  # each (b,) float32
        dense32 = functools.partial(nn.Dense, self.width, dtype=jnp.float32, param_dtype=self.param_dtype)
        embed = functools.partial(nn.Embed, self.num_classes + 1, dtype=jnp.float32, param_dtype=self.param_dtype)
        cond: Array
        if self.separate_conditions:
            cond = jnp.zeros((), jnp.float32)
            for i, c in enumerate(scalars):
                hidden = dense32(name=f"cond{i}_in")(sinusoidal_embedding(c, self.time_features))
                cond = cond + dense32(name=f"cond{i}_out")(nn.silu(hidden))  # (b, w)
            if labels is not None:
                cond = cond + embed(self.width)(labels)
        else:
            cond = functools.reduce(jnp.add, [sinusoidal_embedding(c, self.time_features) for c in scalars])  # (b, time_features)
            if labels is not None:
                cond = cond + embed(self.time_features)(labels)
            hidden = constrain(dense32()(constrain(cond, VECTOR)), VECTOR)
            cond = dense32()(nn.silu(hidden))  # (b, w)
        cond = constrain(cond.astype(dtype), VECTOR)
        h = constrain(nn.Dense(self.width, dtype=dtype, param_dtype=self.param_dtype)(x.astype(dtype)), VECTOR)
        for _ in range(self.depth):
            h = constrain(ResidualBlock(self.width, dtype, self.param_dtype)(h, cond), VECTOR)
        h = nn.silu(_layer_norm(h, dtype, self.param_dtype))
        out = nn.Dense(x.shape[-1], dtype=dtype, param_dtype=self.param_dtype, kernel_init=nn.initializers.zeros)(h)
        return out.astype(jnp.float32)


class ClassifierMLP(nn.Module):
    """``x (b, features) -> logits (b, num_classes)`` float32: ``depth`` hidden ReLU layers ``Dense_i`` and a linear ``head``.

    Attributes:
      width: hidden width.
      depth: number of hidden layers.
      num_classes: number of outputs.
      dtype: compute dtype (float32, bfloat16 or float16); the logits are float32 (the softmax's input).
      param_dtype: parameter dtype.
    """

    width: int
    depth: int = 2
    num_classes: int = 10
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:  # (b, features) -> (b, num_classes)
        dtype = compute_dtype("dtype", self.dtype)
        compute_dtype("param_dtype", self.param_dtype)
        x = x.astype(dtype)
        for i in range(self.depth):
            x = nn.relu(nn.Dense(self.width, dtype=dtype, param_dtype=self.param_dtype, name=f"Dense_{i}")(x))
        return nn.Dense(self.num_classes, dtype=dtype, param_dtype=self.param_dtype, name="head")(x).astype(jnp.float32)
