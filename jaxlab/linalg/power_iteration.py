"""Power iteration for the top singular triple and the top eigenvalue of a PSD matrix."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.linalg._sharding import sharding_like

__all__ = ["power_iteration", "psd_eigenvalue_lower_bound"]

_TINY = 1e-30


@functools.lru_cache(maxsize=64)
def _fixed_start(n: int) -> np.ndarray:
    """A fixed, well-spread unit start vector of length ``n`` (NumPy seed 0).

    A structured start such as the all-ones vector can be orthogonal to the top
    singular vector (e.g. for centred data); a fixed Gaussian draw is not, except
    with probability zero, and keeps every call deterministic.
    """
    v = np.random.default_rng(0).standard_normal(n)
    return v / np.linalg.norm(v)


def _check_steps(steps, fn: str) -> None:
    if isinstance(steps, bool) or not (isinstance(steps, int) or hasattr(steps, "dtype")):
        raise ValueError(f"{fn}: steps must be an int >= 1, got {steps!r}")
    if isinstance(steps, int) and steps < 1:
        raise ValueError(f"{fn}: steps must be an int >= 1, got {steps}")
    if hasattr(steps, "dtype") and (jnp.ndim(steps) != 0 or not jnp.issubdtype(steps.dtype, jnp.integer)):
        raise ValueError(f"{fn}: steps must be a scalar integer, got dtype {steps.dtype} shape {jnp.shape(steps)}")


def _unit(v: jax.Array, fallback: jax.Array) -> jax.Array:
    """``v / |v|`` along the last axis; ``fallback`` where ``v`` is (numerically) zero."""
    norm = jnp.linalg.norm(v, axis=-1, keepdims=True)
    ok = norm > _TINY
    return jnp.where(ok, v / jnp.where(ok, norm, 1.0), fallback)


def power_iteration(x: jax.Array, *, steps, v0: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Top singular triple ``(sigma_1, u_1, v_1)`` of ``x`` by power iteration on ``x^T x``.

    Each step is ``u <- x v / |x v|``, ``v <- x^T u / |x^T u|``; the returned
    ``sigma = |x v|`` is a lower bound on ``sigma_1`` that converges to it at the
    rate ``(sigma_2 / sigma_1)^(2 steps)``. Batched over leading axes; works
    under ``jit``/``vmap``/``grad``; ``steps`` may be a traced integer.

    Args:
        x: matrices, shape ``(..., m, n)``.
        steps: number of power steps (``>= 1``).
        v0: start vector(s), shape ``(n,)`` or ``(..., n)``. ``None`` uses a fixed
            pseudo-random unit vector, so results are deterministic. Pass the
            previous ``v`` to warm-start across calls.

    Returns:
        ``sigma`` of shape ``(...)``, ``u`` of shape ``(..., m)`` and ``v`` of shape
        ``(..., n)``, with ``|u| = |v| = 1``. For a zero matrix ``sigma = 0``,
        ``u = 0`` and ``v`` is the start vector (never NaN).

    Raises:
        ValueError: if ``x`` is not at least 2-D, ``v0`` has the wrong shape, or
            ``steps`` is not a positive integer.

    References:
        Golub & Van Loan, "Matrix Computations", 4th ed., 2013, section 8.2.1.
    """
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"power_iteration: x must have shape (..., m, n), got shape {x.shape}")
    _check_steps(steps, "power_iteration")
    *batch, _, n = x.shape
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    x = x.astype(dtype)
    if v0 is None:
        v = jnp.broadcast_to(jnp.asarray(_fixed_start(n), dtype), (*batch, n))
    else:
        v0 = jnp.asarray(v0, dtype)
        if v0.shape not in ((n,), (*batch, n)):
            raise ValueError(f"power_iteration: v0 must have shape ({n},) or {(*batch, n)}, got {v0.shape}")
        v = jnp.broadcast_to(_unit(v0, jnp.asarray(_fixed_start(n), dtype)), (*batch, n))
    # explicit sharding: vectors follow x's row / column sharding
    u_out = sharding_like(x, lambda spec: spec[:-1])
    v_out = sharding_like(x, lambda spec: (*spec[:-2], spec[-1]))
    if v_out is not None:
        v = jax.sharding.reshard(v, v_out)

    def xv(v):  # (..., m)
        return jnp.einsum("...mn,...n->...m", x, v, out_sharding=u_out)

    def step(_, v):  # v: (..., n)
        return _unit(jnp.einsum("...mn,...m->...n", x, xv(v), out_sharding=v_out), v)

    if isinstance(steps, int):
        for i in range(steps):
            v = step(i, v)
    else:
        v = jax.lax.fori_loop(0, steps, step, v)
    w = xv(v)  # (..., m)
    sigma = jnp.linalg.norm(w, axis=-1)
    return sigma, _unit(w, jnp.zeros_like(w)), v


@functools.lru_cache(maxsize=64)
def _fixed_block(k: int, width: int) -> np.ndarray:
    """``width`` fixed pseudo-random unit columns of length ``k`` (NumPy seed 1)."""
    v = np.random.default_rng(1).standard_normal((k, width))
    return v / np.linalg.norm(v, axis=0)


def psd_eigenvalue_lower_bound(a: jax.Array, *, steps: int, width: int = 4) -> jax.Array:
    """Lower bound on the top eigenvalue of symmetric PSD ``a`` from ``width`` power iterations.

    Used by :func:`jaxlab.linalg.msign` to estimate ``sigma_1^4`` from the Gram
    square it computes anyway. Each of ``width`` fixed pseudo-random start vectors
    runs ``steps`` products with ``a`` (one ``(k, k) @ (k, width)`` matmul per
    step); for a unit ``v``, ``v^T a v <= |a v| <= lambda_max``, and ``max_i a_ii``
    is also a lower bound; the largest of these is returned. Several starts make a
    start nearly orthogonal to the top eigenvector (which a single fixed vector
    meets systematically when that eigenvector changes slowly across calls)
    improbable.

    Args:
        a: symmetric positive semi-definite matrices, shape ``(..., k, k)``.
        steps: number of products with ``a`` (static int ``>= 1``).
        width: number of start vectors.

    Returns:
        Lower bounds on ``lambda_max(a)``, shape ``(...)``.
    """
    k = a.shape[-1]
    width = min(width, k)
    v = jnp.zeros_like(a[..., :width]) + jnp.asarray(_fixed_block(k, width), a.dtype)  # (..., k, w), a's sharding

    def step(_, v):
        av = jnp.einsum("...ij,...jw->...iw", a, v)
        norm = jnp.linalg.norm(av, axis=-2, keepdims=True)
        return jnp.where(norm > _TINY, av / jnp.where(norm > _TINY, norm, 1.0), v)

    v = jax.lax.fori_loop(0, steps - 1, step, v)
    estimate = jnp.max(jnp.linalg.norm(jnp.einsum("...ij,...jw->...iw", a, v), axis=-2), axis=-1)
    return jnp.maximum(estimate, jnp.max(jnp.diagonal(a, axis1=-2, axis2=-1), axis=-1))
