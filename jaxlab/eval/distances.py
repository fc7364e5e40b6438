"""Sample-based distances between distributions: energy, MMD, sliced Wasserstein.

Each function compares two sets of samples ``x`` (n, d) and ``y`` (m, d),
e.g. model samples against data, and is jittable and differentiable. Inputs
are validated before tracing: both must be 2-D with the same feature
dimension, else a ``ValueError`` names them and their shapes. Computations
run in at least float32.

Energy distance and MMD default to the V-statistic (all pairs, including a
point with itself): it is the exact distance between the two empirical
distributions, so it is non-negative and 0 for identical sets (up to
round-off), but
biased upward by O(1/n) for finite samples of one distribution. Pass
``unbiased=True`` for the U-statistic (self-pairs left out of the
within-set means): unbiased, so it averages to 0 over samples of one
distribution, but it can be negative.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxlab.eval.pairwise import mean_pairwise, safe_sqrt

Array = jax.Array

DEFAULT_BANDWIDTHS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def _as_samples(x: Array, y: Array, *, min_samples: int = 1) -> tuple[Array, Array]:
    """Checks that ``x`` (n, d) and ``y`` (m, d) are 2-D with one feature dim; casts to >= float32."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    for name, value in (("x", x), ("y", y)):
        if value.ndim != 2 or value.shape[0] < min_samples:
            raise ValueError(f"`{name}` must be a 2-D array (num_samples, dim) with num_samples >= {min_samples}; got shape {value.shape}.")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"`x` and `y` must have the same feature dimension; got x {x.shape} and y {y.shape}.")
    dtype = jnp.result_type(x.dtype, y.dtype, jnp.float32)
    return x.astype(dtype), y.astype(dtype)


def _check_positive_int(name: str, value: object) -> int:
    """Returns ``value`` as an int if it is a positive integer, else raises a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
    return int(value)


def _is_positive_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 < value < math.inf  # type: ignore[operator]  # typeshed's Real lacks __gt__


def _check_bandwidths(bandwidths: object) -> tuple[float, ...]:
    """Returns the bandwidths as a hashable tuple of floats, else raises a ValueError."""
    values = tuple(bandwidths) if isinstance(bandwidths, (tuple, list)) else (bandwidths,)
    if not values or not all(_is_positive_number(b) for b in values):
        raise ValueError(f"`bandwidths` must be a non-empty tuple of positive finite numbers; got {bandwidths!r}.")
    return tuple(float(b) for b in values)


def _center(x: Array, y: Array) -> tuple[Array, Array]:
    """Subtracts the pooled mean: distances are unchanged, round-off is smaller."""
    mean = (jnp.sum(x, axis=0) + jnp.sum(y, axis=0)) / (x.shape[0] + y.shape[0])
    return x - mean, y - mean


def _two_sample_statistic(fn: Callable[[Array], Array], x: Array, y: Array, *, unbiased: bool, chunk_size: int) -> Array:
    """``E fn(X, X') + E fn(Y, Y') - 2 E fn(X, Y)`` over squared distances, as a V- or U-statistic."""
    x, y = _center(x, y)
    mean = functools.partial(mean_pairwise, fn, chunk_size=chunk_size)
    within = mean(x, x, exclude_diagonal=unbiased) + mean(y, y, exclude_diagonal=unbiased)
    return within - 2 * mean(x, y)


@functools.partial(jax.jit, static_argnames=("unbiased", "chunk_size"))
def _energy_distance(x: Array, y: Array, unbiased: bool, chunk_size: int) -> Array:
    # Energy distance is 2 E|X - Y| - E|X - X'| - E|Y - Y'|: the generic
    # statistic with fn = -distance.
    value = _two_sample_statistic(lambda sq: -safe_sqrt(sq), x, y, unbiased=unbiased, chunk_size=chunk_size)
    return value if unbiased else jnp.maximum(value, 0)


def energy_distance(x: Array, y: Array, *, unbiased: bool = False, chunk_size: int = 1024) -> Array:
    """Squared energy distance ``2 E|X - Y| - E|X - X'| - E|Y - Y'|``.

    It is 0 if and only if the two distributions are equal (given finite
    first moments). ``scipy.stats.energy_distance`` on 1-D data returns the
    square root of the default (V-statistic) value.

    Args:
      x: (n, d) samples of the first distribution.
      y: (m, d) samples of the second; ``m`` may differ from ``n``.
      unbiased: use the U-statistic (needs n, m >= 2; may be negative)
        instead of the V-statistic (clamped at 0 against round-off).
      chunk_size: rows per block of the pairwise computation (memory
        ``O(chunk_size * max(n, m))``).

    Returns:
      scalar, in squared units of the data.

    Raises:
      ValueError: if ``x`` or ``y`` is not 2-D, or their feature dims differ.

    References:
      G. J. Szekely, M. L. Rizzo, "Energy statistics: A class of statistics
      based on distances", J. Statistical Planning and Inference, 2013.
    """
    x, y = _as_samples(x, y, min_samples=2 if unbiased else 1)
    return _energy_distance(x, y, bool(unbiased), _check_positive_int("chunk_size", chunk_size))


@functools.partial(jax.jit, static_argnames=("bandwidths", "unbiased", "chunk_size"))
def _mmd_rbf(x: Array, y: Array, bandwidths: tuple[float, ...], unbiased: bool, chunk_size: int) -> Array:
    inverse_two_variances = jnp.asarray([1.0 / (2.0 * b * b) for b in bandwidths], x.dtype)  # (k,)

    def kernel(sq: Array) -> Array:  # (...,) -> (...,)
        return jnp.sum(jnp.exp(-sq[..., None] * inverse_two_variances), axis=-1)

    value = _two_sample_statistic(kernel, x, y, unbiased=unbiased, chunk_size=chunk_size)
    return value if unbiased else jnp.maximum(value, 0)


def mmd_rbf(
    x: Array,
    y: Array,
    *,
    bandwidths: tuple[float, ...] = DEFAULT_BANDWIDTHS,
    unbiased: bool = False,
    chunk_size: int = 1024,
) -> Array:
    """Squared maximum mean discrepancy with a sum of Gaussian (RBF) kernels.

    ``MMD^2 = E k(X, X') + E k(Y, Y') - 2 E k(X, Y)`` with
    ``k(a, b) = sum_s exp(-|a - b|^2 / (2 s^2))`` over the bandwidths ``s``.
    A sum of characteristic kernels is characteristic, and several
    bandwidths keep the test sensitive at several length scales. The
    defaults suit data of roughly unit scale per coordinate.

    Args:
      x: (n, d) samples of the first distribution.
      y: (m, d) samples of the second; ``m`` may differ from ``n``.
      bandwidths: positive length scales ``s`` in data units, a tuple of
        Python floats (static: a new tuple compiles anew).
      unbiased: use the U-statistic (needs n, m >= 2; may be negative)
        instead of the V-statistic (clamped at 0 against round-off).
      chunk_size: rows per block of the pairwise computation.

    Returns:
      scalar MMD^2 (at most ``2 * len(bandwidths)``).

    Raises:
      ValueError: if ``x`` or ``y`` is not 2-D, their feature dims differ,
        or a bandwidth is not a positive number.

    References:
      A. Gretton, K. M. Borgwardt, M. J. Rasch, B. Scholkopf, A. Smola,
      "A Kernel Two-Sample Test", JMLR 2012.
    """
    x, y = _as_samples(x, y, min_samples=2 if unbiased else 1)
    bandwidths = _check_bandwidths(bandwidths)
    return _mmd_rbf(x, y, bandwidths, bool(unbiased), _check_positive_int("chunk_size", chunk_size))


@functools.partial(jax.jit, static_argnames=("num_projections", "p"))
def _sliced_wasserstein(x: Array, y: Array, key: Array, num_projections: int, p: float) -> Array:
    directions = jax.random.normal(key, (num_projections, x.shape[1]), x.dtype)
    directions = directions / jnp.linalg.norm(directions, axis=-1, keepdims=True)  # (k, d), unit rows
    project = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)
    x_sorted = jnp.sort(project(x, directions.T), axis=0)  # (n, k)
    y_sorted = jnp.sort(project(y, directions.T), axis=0)  # (n, k)
    # In 1-D the optimal coupling of two equal-size samples matches them in
    # sorted order, so W_p^p is the mean of |x_(i) - y_(i)|^p.
    cost = jnp.mean(jnp.abs(x_sorted - y_sorted) ** p)  # mean over directions of W_p^p
    positive = cost > 0
    return jnp.where(positive, jnp.where(positive, cost, 1) ** (1 / p), 0)  # finite gradient at 0


def sliced_wasserstein(x: Array, y: Array, *, key: Array, num_projections: int = 128, p: float = 2) -> Array:
    """Sliced p-Wasserstein distance ``(E_theta W_p^p(theta.X, theta.Y))^(1/p)``.

    The expectation over directions ``theta`` uniform on the unit sphere is
    estimated with ``num_projections`` random directions; each 1-D
    Wasserstein distance is computed exactly by sorting. For two Gaussians
    that differ only by a shift ``delta``, SW_2 is ``|delta| / sqrt(d)``.

    Args:
      x: (n, d) samples of the first distribution.
      y: (n, d) samples of the second (same shape as ``x``).
      key: PRNG key drawing the directions; keep it fixed to compare models.
      num_projections: number of random directions (static).
      p: order, a Python number >= 1 (static).

    Returns:
      scalar SW_p, in units of the data.

    Raises:
      ValueError: if ``x`` and ``y`` are not 2-D arrays of one shape, or
        ``num_projections`` or ``p`` is out of range.

    References:
      N. Bonneel, J. Rabin, G. Peyre, H. Pfister, "Sliced and Radon
      Wasserstein Barycenters of Measures", J. Math. Imaging Vision, 2015.
    """
    x, y = _as_samples(x, y)
    if x.shape != y.shape:
        raise ValueError(f"`x` and `y` must have the same shape (equal sample sizes); got x {x.shape} and y {y.shape}.")
    if not _is_positive_number(p) or p < 1:
        raise ValueError(f"`p` must be a finite number >= 1; got {p!r}.")
    num_projections = _check_positive_int("num_projections", num_projections)
    return _sliced_wasserstein(x, y, key, num_projections, float(p))
