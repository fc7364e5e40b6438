"""A small class-conditional U-Net for low-resolution images (the digits' denoiser / velocity net).

Convolutional and resolution-agnostic: a model trained on 8×8 runs on 16×16
(what upsample guidance relies on). Time enters through sinusoidal features
and an MLP, the class through a learned embedding with one extra "null"
class (index ``num_classes``) for classifier-free guidance; their sum
modulates every residual block by a per-channel scale and shift (FiLM).
The last convolution starts at zero, so an untrained network outputs 0.

Precision (:mod:`jaxlab.nn.precision`): convolutions and the feature maps in
``dtype``, parameters in ``param_dtype``; the time embedding, the label
embedding, the GroupNorm statistics with their FiLM modulation and the
output stay float32.

References:
  Ronneberger, Fischer, Brox 2015, "U-Net".
  Ho, Jain, Abbeel 2020, "DDPM" (the time-conditioned residual U-Net).
  Dhariwal, Nichol 2021, "Diffusion Models Beat GANs" (scale-shift conditioning).
  Ho, Salimans 2022, "Classifier-Free Diffusion Guidance" (the null class).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array

from jaxlab.nn.embeddings import sinusoidal_embedding
from jaxlab.nn.precision import compute_dtype
from jaxlab.nn.sharding import BATCH, EMBED, HEIGHT, WIDTH, constrain

IMAGE = (BATCH, HEIGHT, WIDTH, EMBED)  # (b, H, W, c)


def _group_norm(h: Array, groups: int, param_dtype: Any) -> Array:
    """GroupNorm of (b, H, W, c) with statistics in float32 (a bf16 variance over a group loses small features); float32 out."""
    return nn.GroupNorm(num_groups=groups, dtype=jnp.float32, param_dtype=param_dtype)(h.astype(jnp.float32))


class ConditionedResBlock(nn.Module):
    """GroupNorm → SiLU → conv → FiLM(cond) → SiLU → conv, plus a (projected) skip.

    Attributes:
      channels: output channels.
      groups: GroupNorm groups.
      dtype: compute dtype of the convolutions; normalization and FiLM in float32.
      param_dtype: parameter dtype.
    """

    channels: int
    groups: int = 8
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: Array, cond: Array) -> Array:  # (b, H, W, c_in), (b, e) -> (b, H, W, channels) in dtype
        dtype = compute_dtype("dtype", self.dtype)
        compute_dtype("param_dtype", self.param_dtype)
        conv = functools.partial(nn.Conv, self.channels, dtype=dtype, param_dtype=self.param_dtype)
        y = conv((3, 3))(nn.silu(_group_norm(h, self.groups, self.param_dtype)).astype(dtype))
        film = constrain(nn.Dense(2 * self.channels, dtype=dtype, param_dtype=self.param_dtype)(nn.silu(cond)), (BATCH, EMBED))
        scale, shift = jnp.split(film.astype(jnp.float32), 2, axis=-1)  # (b, channels) each
        y = _group_norm(y, self.groups, self.param_dtype) * (1.0 + scale[:, None, None]) + shift[:, None, None]
        y = conv((3, 3), kernel_init=nn.initializers.zeros)(nn.silu(y).astype(dtype))
        skip = h.astype(dtype) if h.shape[-1] == self.channels else conv((1, 1))(h)
        return skip + y


class UNet(nn.Module):
    """``f(x, t[, labels]) -> same shape as x``: a residual U-Net on NHWC images.

    Attributes:
      channels: feature channels per resolution level; the image is halved
        between levels, so height and width must be divisible by
        ``2 ** (len(channels) − 1)``. Each must be divisible by ``groups``.
      blocks_per_level: residual blocks per level on the way down (and up).
      num_classes: number of classes; 0 for an unconditional net. Label
        ``num_classes`` is the null class of classifier-free guidance.
      time_features: size of the sinusoidal time features.
      embed_dim: width of the conditioning vector.
      groups: GroupNorm groups.
      dtype: compute dtype (float32, bfloat16 or float16) of the convolutions
        and feature maps; the conditioning, normalization statistics and the
        output stay float32.
      param_dtype: parameter dtype.
    """

    channels: tuple[int, ...] = (32, 64)
    blocks_per_level: int = 1
    num_classes: int = 0
    time_features: int = 64
    embed_dim: int = 128
    groups: int = 8
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def _check(self, x: Array, labels: Array | None) -> None:
        factor = 2 ** (len(self.channels) - 1)
        if x.ndim != 4 or x.shape[1] % factor or x.shape[2] % factor:
            raise ValueError(f"x must have shape (batch, height, width, channels) with height and width divisible by {factor}, got {x.shape}")
        if self.num_classes and (labels is None or labels.shape != x.shape[:1]):
            raise ValueError(f"labels must have shape {x.shape[:1]} for a class-conditional UNet, got {getattr(labels, 'shape', None)}")

    @nn.compact
    def __call__(self, x: Array, t: Array, labels: Array | None = None) -> Array:  # (b, H, W, c), (b,), (b,) -> (b, H, W, c) float32
        dtype = compute_dtype("dtype", self.dtype)
        compute_dtype("param_dtype", self.param_dtype)
        self._check(x, labels)
        # The condition is embedded in float32 (t must keep its grid) and cast where the blocks project it.
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), x.shape[:1])
        dense32 = functools.partial(nn.Dense, self.embed_dim, dtype=jnp.float32, param_dtype=self.param_dtype)
        features = constrain(sinusoidal_embedding(t, self.time_features), (BATCH, EMBED))
        cond = dense32()(nn.silu(constrain(dense32()(features), (BATCH, EMBED))))
        if self.num_classes:
            cond = cond + nn.Embed(self.num_classes + 1, self.embed_dim, dtype=jnp.float32, param_dtype=self.param_dtype)(labels)  # (b, e)
        cond = constrain(cond.astype(dtype), (BATCH, EMBED))
        block = functools.partial(ConditionedResBlock, groups=self.groups, dtype=dtype, param_dtype=self.param_dtype)
        conv = functools.partial(nn.Conv, dtype=dtype, param_dtype=self.param_dtype)

        h = conv(self.channels[0], (3, 3))(x.astype(dtype))
        skips = []
        for level, width in enumerate(self.channels):
            for _ in range(self.blocks_per_level):
                h = constrain(block(width)(h, cond), IMAGE)
            skips.append(h)
            if level < len(self.channels) - 1:
                h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        h = constrain(block(self.channels[-1])(h, cond), IMAGE)
        for level in reversed(range(len(self.channels))):
            h = block(self.channels[level])(jnp.concatenate([h, skips[level]], axis=-1), cond)
            h = constrain(h, IMAGE)
            if level > 0:
                b, height, width, c = h.shape
                h = jax.image.resize(h, (b, 2 * height, 2 * width, c), method="nearest")
                h = conv(self.channels[level - 1], (3, 3))(h)
        h = nn.silu(_group_norm(h, self.groups, self.param_dtype)).astype(dtype)
        out = conv(x.shape[-1], (3, 3), kernel_init=nn.initializers.zeros)(h)
        return out.astype(jnp.float32)
