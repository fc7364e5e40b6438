"""Tolerances for comparing two floating-point computations that agree in exact arithmetic.

Two programs that sum the same n terms in a different order (a merged kernel
against a factored one, a jitted program against an eager one) differ by
rounding only. Under the usual probabilistic model of rounding errors, the
error of an n-term sum grows like ``eps·√n`` relative to the size of its terms
rather than the worst-case ``n·eps``; a small safety factor covers the
constant. The comparison is normwise (against the largest entry of the
expected array) because an entry near zero, the result of cancellation,
carries the rounding error of its large terms.

References:
  Higham & Mary 2019, "A New Approach to Probabilistic Rounding Error
  Analysis", SIAM J. Sci. Comput. 41(5).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike
from numpy.typing import ArrayLike

SAFETY = 4.0


def rounding_tolerance(dtype: DTypeLike, terms: int, *, safety: float = SAFETY) -> float:
    """Relative tolerance ``safety·eps(dtype)·√terms`` of an n-term sum's rounding error.

    Args:
      dtype: the floating dtype the computations run in (bfloat16 included).
      terms: the number of terms accumulated along the longest chain of the
        computation (for a stack of matmuls, the sum of their contracted sizes).
      safety: the constant in front of ``eps·√terms``.

    Returns:
      The relative tolerance, a Python float.
    """
    if not isinstance(terms, int) or isinstance(terms, bool) or terms < 1:
        raise ValueError(f"terms must be an int >= 1, got {terms!r}")
    if safety <= 0:
        raise ValueError(f"safety must be > 0, got {safety!r}")
    return safety * float(_finfo(dtype).eps) * math.sqrt(terms)


def assert_close_up_to_rounding(actual: ArrayLike, desired: ArrayLike, *, terms: int, dtype: DTypeLike | None = None, safety: float = SAFETY) -> None:
    """Asserts ``max|actual − desired| ≤ rounding_tolerance(dtype, terms)·max|desired|``.

    Args:
      actual: the computed array.
      desired: the reference array, same shape.
      terms: see :func:`rounding_tolerance`.
      dtype: the dtype of the computation; defaults to ``actual``'s dtype.
      safety: see :func:`rounding_tolerance`.

    Raises:
      AssertionError: naming the error, the bound and the number of ulps.
    """
    a, d = np.asarray(actual), np.asarray(desired)
    if a.shape != d.shape:
        raise AssertionError(f"shapes differ: actual {a.shape}, desired {d.shape}")
    dtype = a.dtype if dtype is None else dtype
    eps = float(_finfo(dtype).eps)
    tol = rounding_tolerance(dtype, terms, safety=safety)
    scale = float(np.max(np.abs(d.astype(np.float64)))) if d.size else 0.0
    error = float(np.max(np.abs(a.astype(np.float64) - d.astype(np.float64)))) if d.size else 0.0
    if not error <= tol * scale:
        raise AssertionError(
            f"max|actual - desired| = {error:.3e} exceeds {tol:.3e} * max|desired| = {tol * scale:.3e} "
            f"({error / (eps * scale) if scale else math.inf:.1f} eps of the scale; terms={terms}, safety={safety})"
        )


def _finfo(dtype: DTypeLike) -> jnp.finfo:
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating dtype, got {np.dtype(dtype)}")
    return jnp.finfo(dtype)
