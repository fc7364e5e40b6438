"""Pairwise squared distances and memory-bounded means over all pairs.

The sample-based distances in ``jaxlab.eval`` average a function of
``|x_i - y_j|`` over all pairs. ``mean_pairwise`` does so a block of rows at
a time, so two sets of 5,000 points never materialize more than
``chunk_size x 5,000`` values at once.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxlab.linalg.distances import pairwise_sq_distances, safe_sqrt

__all__ = ["mean_pairwise", "pairwise_sq_distances", "safe_sqrt"]

Array = jax.Array


def mean_pairwise(
    fn: Callable[[Array], Array],
    x: Array,
    y: Array,
    *,
    exclude_diagonal: bool = False,
    chunk_size: int = 1024,
) -> Array:
    """Mean of ``fn(|x_i - y_j|^2)`` over all pairs ``(i, j)``.

    Rows of ``x`` are processed ``chunk_size`` at a time (``jax.lax.map``), so
    memory is ``O(chunk_size * m)`` rather than ``O(n * m)``.

    Args:
      fn: elementwise map from squared distances to values, e.g. a kernel.
      x: (n, d) array.
      y: (m, d) array.
      exclude_diagonal: average over ``i != j`` only (for ``y`` being ``x``,
        as in U-statistics); needs ``n == m >= 2``.
      chunk_size: rows of ``x`` per block.

    Returns:
      scalar mean.

    Raises:
      ValueError: if ``chunk_size`` is not a positive int, or
        ``exclude_diagonal`` is set for sets of different sizes.
    """
    n, m = x.shape[0], y.shape[0]
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive integer; got {chunk_size!r}.")
    if exclude_diagonal and (n != m or n < 2):
        raise ValueError(f"`exclude_diagonal` needs x and y with the same n >= 2 rows; got {x.shape} and {y.shape}.")

    def row_sum(row_and_index: tuple[Array, Array]) -> Array:
        row, i = row_and_index  # (d,), ()
        values = fn(pairwise_sq_distances(row[None], y)[0])  # (m,)
        if exclude_diagonal:
            values = jnp.where(jnp.arange(m) == i, 0, values)
        return jnp.sum(values)

    row_sums = jax.lax.map(row_sum, (x, jnp.arange(n)), batch_size=min(int(chunk_size), n))  # (n,)
    num_pairs = n * (n - 1) if exclude_diagonal else n * m
    return jnp.sum(row_sums) / float(num_pairs)  # a Python int over 2**31 would not fit the traced int32
