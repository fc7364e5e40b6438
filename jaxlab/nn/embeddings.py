"""Embeddings of scalar conditioning values (diffusion/flow time, step size)."""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array


def sinusoidal_embedding(t: Array, dim: int, *, max_period: float = 10_000.0, scale: float = 1000.0) -> Array:
    """Transformer-style sinusoidal features of a scalar per example.

    ``t`` in [0, 1] is first multiplied by ``scale`` so that the lowest
    frequencies still resolve small time differences (the DDPM convention of
    embedding the integer step t·1000).

    The features are float32 whatever the dtype of ``t`` or of the network
    around it: in bfloat16 (8 bits of mantissa) 1000·t near t = 1 rounds to
    a multiple of 4, so the fast features of the shortcut model's steps k/128
    (7.8 apart after scaling) would be rounding noise.

    Args:
      t: shape (b,) or () — values to embed.
      dim: even number of output features.
      max_period: the longest wavelength.
      scale: multiplier applied to ``t`` first.

    Returns:
      (b, dim) float32 features ``[cos(ω_k t), sin(ω_k t)]`` with ω_k geometric in
      [1/max_period, 1].

    References:
      Vaswani et al. 2017, "Attention Is All You Need"; Ho et al. 2020, "DDPM".
    """
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    t = jnp.atleast_1d(jnp.asarray(t).astype(jnp.float32)) * scale  # (b,) float32, also for a bf16 or f64 t
    half = dim // 2
    frequencies = jnp.exp(-jnp.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)  # (half,)
    angles = t[:, None] * frequencies[None, :]  # (b, half)
    return jnp.concatenate([jnp.cos(angles), jnp.sin(angles)], axis=-1)
