"""Squared Euclidean distances between two sets of rows, and a square root safe at zero."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

# Distances by |a|^2 + |b|^2 - 2 a.b cancel catastrophically if the matmul
# runs in reduced precision (TF32 / bf16 passes on GPUs and TPUs).
_PRECISION = jax.lax.Precision.HIGHEST


def safe_sqrt(x: Array) -> Array:
    """Square root with a finite (zero) gradient at 0.

    ``jnp.sqrt`` has an infinite derivative at 0, which turns gradients
    through a zero distance (e.g. a point paired with itself) into NaN. Here
    the value is ``sqrt(max(x, 0))`` and the gradient at ``x <= 0`` is 0.

    Args:
      x: array of any shape.

    Returns:
      array of the same shape and dtype.
    """
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1)), 0)


def pairwise_sq_distances(x: Array, y: Array) -> Array:
    """Squared Euclidean distances between the rows of ``x`` and ``y``.

    Uses ``|a|^2 + |b|^2 - 2 a.b`` (one matmul, at full float32 precision)
    and clamps the round-off negatives at 0.

    Args:
      x: (n, d) array.
      y: (m, d) array.

    Returns:
      (n, m) array of ``|x_i - y_j|^2 >= 0``.
    """
    x_sq = jnp.sum(x * x, axis=-1)  # (n,)
    y_sq = jnp.sum(y * y, axis=-1)  # (m,)
    cross = jnp.matmul(x, y.T, precision=_PRECISION)  # (n, m)
    return jnp.maximum(x_sq[:, None] + y_sq[None, :] - 2 * cross, 0)
