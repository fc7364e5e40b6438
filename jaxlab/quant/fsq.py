"""Finite scalar quantization (FSQ): each latent channel rounded to a few fixed levels.

Channel i of z is squashed into a bounded interval and rounded to one of
L_i integer levels; the code space is the grid Π L_i (e.g. [8, 5, 5, 5] has
1000 codes) and needs no codebook, no auxiliary loss and no codebook tricks.

Bounding, with half = (L − 1)(1 − ε)/2:

* odd L: f(z) = half·tanh(z), rounded to {−(L−1)/2, …, (L−1)/2};
* even L: f(z) = half·tanh(z + s) − ½ with s = atanh(½ / half), rounded
  to {−L/2, …, L/2 − 1}. The half-level offset makes the L levels
  symmetric around the interval's centre (without it an even L would only
  reach L − 1 of them), and the shift s keeps f(0) = 0 (for L = 2, where
  ½ > half, there is no such shift: s = 0 and f(0) = −½ rounds to 0).

Rounding uses the straight-through estimator, and the rounded level k is
returned normalised as k / ⌊L/2⌋ (within [−1, 1]). The index of a code is
the mixed-radix number of its digits k + ⌊L/2⌋ ∈ {0, …, L − 1} (channel 0
is the least significant digit).

References:
  Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple",
  arXiv:2309.15505.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxlab._checks import check_floating

EPS = 1e-3


class FSQOutput(NamedTuple):
    """``codes`` (..., D) normalised levels (straight-through gradient) and ``indices`` (...,) int32."""

    codes: Array
    indices: Array


def _check_levels(levels: Sequence[int]) -> tuple[int, ...]:
    levels = tuple(levels) if isinstance(levels, (list, tuple)) else levels
    if not isinstance(levels, tuple) or not levels or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 2 for v in levels):
        raise ValueError(f"levels must be a non-empty sequence of ints >= 2, got {levels!r}")
    return levels


def fsq_num_codes(levels: Sequence[int]) -> int:
    """Π L_i, the size of the implicit codebook."""
    return math.prod(_check_levels(levels))


def _check_z(z: Any, levels: tuple[int, ...]) -> None:
    check_floating("z", z)
    if z.shape[-1] != len(levels):
        raise ValueError(f"z must have last dimension len(levels) = {len(levels)}, got shape {z.shape}")


def fsq_bound(z: Array, levels: Sequence[int], *, eps: float = EPS) -> Array:
    """The bounded, unrounded values f(z) (..., D) whose rounding reaches every level exactly."""
    levels = _check_levels(levels)
    _check_z(z, levels)
    L = np.asarray(levels, np.float64)
    half = (L - 1.0) * (1.0 - eps) / 2.0
    offset = np.where(L % 2 == 0, 0.5, 0.0)
    ratio = offset / half
    shift = np.where(ratio < 1.0, np.arctanh(np.minimum(ratio, 0.999)), 0.0)  # L = 2: no shift reaches f(0) = 0
    return (jnp.tanh(z + shift.astype(np.float32)) * half.astype(np.float32) - offset.astype(np.float32)).astype(z.dtype)


def round_ste(x: Array) -> Array:
    """``round(x)`` in the forward pass, identity gradient."""
    return x + jax.lax.stop_gradient(jnp.round(x) - x)


def _half_width(levels: tuple[int, ...]) -> np.ndarray:
    return np.asarray([L // 2 for L in levels], np.float32)


def _basis(levels: tuple[int, ...]) -> np.ndarray:
    return np.concatenate([[1], np.cumprod(levels[:-1])]).astype(np.int32)


def fsq_quantize(z: Array, levels: Sequence[int]) -> FSQOutput:
    """Bounds, rounds (straight-through) and normalises ``z`` (..., D); D = len(levels).

    Args:
      z: (..., D) encoder outputs (unbounded).
      levels: the number of levels per channel, e.g. (8, 5, 5, 5).

    Returns:
      :class:`FSQOutput` with ``codes`` in [−1, 1] and their ``indices``.

    References:
      Mentzer et al. 2023, "FSQ", arXiv:2309.15505.
    """
    levels = _check_levels(levels)
    codes = round_ste(fsq_bound(z, levels)) / _half_width(levels)
    return FSQOutput(codes, fsq_codes_to_indices(jax.lax.stop_gradient(codes), levels))


def fsq_codes_to_indices(codes: Array, levels: Sequence[int]) -> Array:
    """Normalised codes (..., D) -> (...,) int32 indices in [0, Π L_i)."""
    levels = _check_levels(levels)
    _check_z(codes, levels)
    half = _half_width(levels)
    digits = jnp.round(codes * half + half).astype(jnp.int32)
    return jnp.sum(digits * _basis(levels), axis=-1).astype(jnp.int32)


def fsq_indices_to_codes(indices: Array, levels: Sequence[int]) -> Array:
    """(...,) integer indices -> (..., D) float32 normalised codes (the inverse of :func:`fsq_codes_to_indices`)."""
    levels = _check_levels(levels)
    indices = jnp.asarray(indices)
    if not jnp.issubdtype(indices.dtype, jnp.integer):
        raise TypeError(f"indices must be an integer array, got dtype {indices.dtype}")
    digits = (indices[..., None] // _basis(levels)) % np.asarray(levels, np.int32)
    half = _half_width(levels)
    return (digits.astype(jnp.float32) - half) / half
