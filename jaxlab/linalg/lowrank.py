"""Low-rank approximation: pseudo-inverse, truncated and randomized SVD, CR sampling.

All functions take matrices ``(..., m, n)`` (batched over leading axes, except
:func:`cr_approx`, which is 2-D), validate their arguments before tracing and
work under ``jit``. Ranks are static Python ints (they fix output shapes).

* :func:`truncated_svd` — the best rank-``k`` approximation (Eckart–Young):
  ``|x - x_k|_F = sqrt(sum_{i > k} sigma_i^2)``.
* :func:`randomized_svd` — Halko, Martinsson & Tropp's range finder: a
  Gaussian sketch ``x Omega`` with ``oversample`` extra columns, ``power_iters``
  re-orthonormalized power steps, then an exact SVD of the small projection.
* :func:`cr_approx` — Drineas, Kannan & Mahoney's sampled product: ``c``
  column/row pairs drawn with probabilities ``p_i ∝ |a_{:,i}| |b_{i,:}|``,
  rescaled so that ``E[C R] = a b``.
* :func:`pinv` — Moore–Penrose pseudo-inverse from the SVD with a relative cut-off.

The interpolative decomposition lives in :mod:`jaxlab.linalg.interpolative`.

References:
    Eckart & Young, "The approximation of one matrix by another of lower
    rank", Psychometrika 1936.

    Halko, Martinsson & Tropp, "Finding structure with randomness:
    Probabilistic algorithms for constructing approximate matrix
    decompositions", SIAM Review 53(2), 2011. https://arxiv.org/abs/0909.4061

    Drineas, Kannan & Mahoney, "Fast Monte Carlo Algorithms for Matrices I:
    Approximating Matrix Multiplication", SIAM J. Comput. 36(1), 2006.

    Golub & Van Loan, "Matrix Computations", 4th ed., 2013, section 5.5.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["cr_approx", "cr_probabilities", "pinv", "randomized_svd", "truncated_svd"]

_HI = jax.lax.Precision.HIGHEST


def _check_matrix(x, fn: str, name: str = "x", *, batched: bool = True) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim < 2 or (not batched and x.ndim != 2):
        want = "(..., m, n)" if batched else "(m, n)"
        raise ValueError(f"{fn}: {name} must have shape {want}, got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{fn}: {name} must be a floating-point array, got dtype {x.dtype}")
    return x


def _check_rank(rank, upper: int, fn: str, what: str = "min(m, n)") -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= upper:
        raise ValueError(f"{fn}: rank must be a Python int in [1, {what} = {upper}], got {rank!r}")
    return rank


def _check_key(key, fn: str) -> None:
    if not (isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise TypeError(f"{fn}: key must be a typed PRNG key (jax.random.key(seed)), got {key!r}")
    if key.shape != ():
        raise ValueError(f"{fn}: key must be a single key of shape (), got shape {key.shape}")


def pinv(x: jax.Array, *, rtol=None) -> jax.Array:
    """Moore–Penrose pseudo-inverse ``x^+`` by SVD, with a relative singular-value cut-off.

    ``x^+ = V diag(1/sigma_i if sigma_i > rtol * sigma_1 else 0) U^T``. Unlike the
    truncation in :func:`truncated_svd`, the cut-off discards only singular values
    that are zero up to rounding, so a rank-deficient ``x`` gets the pseudo-inverse
    of its exact-rank part.

    Args:
        x: matrices, shape ``(..., m, n)``.
        rtol: relative cut-off (scalar). ``None`` uses ``10 * max(m, n) * eps``
            (as ``jnp.linalg.pinv``), ``eps`` the machine epsilon of ``x``'s dtype.

    Returns:
        Array of shape ``(..., n, m)`` and the dtype of ``x``; zeros for a zero matrix.

    Raises:
        ValueError: if ``x`` is not at least 2-D or ``rtol`` is negative.
        TypeError: if ``x`` is not floating point.

    References:
        Golub & Van Loan, "Matrix Computations", 4th ed., 2013, section 5.5.2.
    """
    x = _check_matrix(x, "pinv")
    m, n = x.shape[-2:]
    if rtol is None:
        rtol = 10.0 * max(m, n) * float(jnp.finfo(x.dtype).eps)
    elif isinstance(rtol, (int, float)) and rtol < 0:
        raise ValueError(f"pinv: rtol must be >= 0, got {rtol!r}")
    u, s, vh = jnp.linalg.svd(x, full_matrices=False)  # (..., m, k), (..., k), (..., k, n)
    keep = s > rtol * s[..., :1]
    inv = jnp.where(keep, 1.0 / jnp.where(keep, s, 1.0), 0.0)
    return jnp.matmul(jnp.swapaxes(vh, -1, -2) * inv[..., None, :], jnp.swapaxes(u, -1, -2), precision=_HI)


def truncated_svd(x: jax.Array, rank: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The best rank-``rank`` approximation ``u diag(s) vh`` of ``x`` (Eckart–Young).

    In Frobenius norm ``|x - u diag(s) vh|_F = sqrt(sum_{i > rank} sigma_i^2)``, the
    smallest error of any matrix of rank ``<= rank`` (also optimal in spectral norm).

    Args:
        x: matrices, shape ``(..., m, n)``.
        rank: number ``k`` of singular triples kept, ``1 <= k <= min(m, n)``.

    Returns:
        ``(u, s, vh)`` of shapes ``(..., m, k)``, ``(..., k)`` (descending) and
        ``(..., k, n)``, in the dtype of ``x``.

    Raises:
        ValueError: for a non-matrix ``x`` or a bad ``rank``.
        TypeError: if ``x`` is not floating point.

    References:
        Eckart & Young, Psychometrika 1936.
    """
    x = _check_matrix(x, "truncated_svd")
    rank = _check_rank(rank, min(x.shape[-2:]), "truncated_svd")
    u, s, vh = jnp.linalg.svd(x, full_matrices=False)
    return u[..., :rank], s[..., :rank], vh[..., :rank, :]


def _orthonormal(y: jax.Array) -> jax.Array:
    return jnp.linalg.qr(y, mode="reduced")[0]


def randomized_svd(x: jax.Array, rank: int, *, key: jax.Array, oversample: int = 10, power_iters: int = 2) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Approximate rank-``rank`` SVD by a randomized range finder (Halko et al. 2011).

    With ``l = min(rank + oversample, m, n)`` and ``Omega`` an ``n x l`` standard
    Gaussian matrix: ``Q = orth(x Omega)``, then ``power_iters`` times
    ``Q = orth(x orth(x^T Q))`` (subspace iteration, re-orthonormalized at each
    half-step so small singular values are not lost to rounding), and finally the
    exact SVD of the ``l x n`` matrix ``Q^T x = U_b S V^T`` gives
    ``(Q U_b, S, V^T)`` truncated to ``rank``. Cost ``O(mnl)`` per pass instead of
    ``O(mn min(m, n))``. The expected error is within a factor
    ``1 + O(sqrt(rank / oversample))`` of the optimum for ``power_iters = 0`` and
    tends to it as the power steps sharpen the spectrum (Halko et al., Thm 10.5–10.6).

    Args:
        x: matrices, shape ``(..., m, n)`` (one key for the whole batch).
        rank: number ``k`` of singular triples returned, ``1 <= k <= min(m, n)``.
        key: typed PRNG key (``jax.random.key``) for the Gaussian sketch.
        oversample: extra sketch columns ``p >= 0`` (10 is Halko et al.'s default).
        power_iters: number ``q >= 0`` of power (subspace) iterations.

    Returns:
        ``(u, s, vh)`` of shapes ``(..., m, k)``, ``(..., k)`` (descending),
        ``(..., k, n)`` in the dtype of ``x`` (computed in at least float32);
        ``u`` and ``vh`` have orthonormal columns/rows.

    Raises:
        ValueError: for a non-matrix ``x``, a bad ``rank``, ``oversample`` or
            ``power_iters``.
        TypeError: for a non-float ``x`` or an untyped/non-scalar ``key``.

    References:
        Halko, Martinsson & Tropp, SIAM Review 2011, Algorithms 4.4 and 5.1.
    """
    x = _check_matrix(x, "randomized_svd")
    m, n = x.shape[-2:]
    rank = _check_rank(rank, min(m, n), "randomized_svd")
    _check_key(key, "randomized_svd")
    for name, value in (("oversample", oversample), ("power_iters", power_iters)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"randomized_svd: {name} must be an int >= 0, got {value!r}")
    width = min(rank + oversample, m, n)
    out_dtype, dtype = x.dtype, jnp.promote_types(x.dtype, jnp.float32)
    xt = jnp.swapaxes(x, -1, -2).astype(dtype)
    x = x.astype(dtype)
    omega = jax.random.normal(key, (*x.shape[:-2], n, width), dtype)  # (..., n, l)
    q = _orthonormal(jnp.matmul(x, omega, precision=_HI))  # (..., m, l)
    for _ in range(power_iters):
        z = _orthonormal(jnp.matmul(xt, q, precision=_HI))  # (..., n, l)
        q = _orthonormal(jnp.matmul(x, z, precision=_HI))
    small = jnp.matmul(jnp.swapaxes(q, -1, -2), x, precision=_HI)  # (..., l, n)
    ub, s, vh = jnp.linalg.svd(small, full_matrices=False)
    u = jnp.matmul(q, ub[..., :rank], precision=_HI)
    return u.astype(out_dtype), s[..., :rank].astype(out_dtype), vh[..., :rank, :].astype(out_dtype)


def cr_probabilities(a: jax.Array, b: jax.Array) -> jax.Array:
    """Drineas–Kannan–Mahoney sampling probabilities ``p_i ∝ |a_{:,i}|_2 |b_{i,:}|_2``, shape ``(k,)``.

    These minimize the expected squared Frobenius error of :func:`cr_approx` among
    all sampling distributions; a zero product of norms gets probability 0 (uniform
    if every product is zero).
    """
    weights = jnp.linalg.norm(a, axis=0) * jnp.linalg.norm(b, axis=1)  # (k,)
    total = jnp.sum(weights)
    uniform = jnp.full_like(weights, 1.0 / weights.shape[0])
    return jnp.where(total > 0, weights / jnp.where(total > 0, total, 1.0), uniform)


def cr_approx(a: jax.Array, b: jax.Array, rank: int, *, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Randomized column/row sampling factors ``(C, R)`` with ``C @ R`` an unbiased estimate of ``a @ b``.

    Draws ``c = rank`` indices ``i_1..i_c`` i.i.d. (with replacement) from
    :func:`cr_probabilities` and returns ``C[:, t] = a[:, i_t] / sqrt(c p_{i_t})`` and
    ``R[t, :] = b[i_t, :] / sqrt(c p_{i_t})``, so ``C R = (1/c) sum_t a_{:,i_t} b_{i_t,:} / p_{i_t}``
    and ``E[C R] = a b``. With these probabilities
    ``E|a b - C R|_F^2 = ((sum_i |a_{:,i}| |b_{i,:}|)^2 - |a b|_F^2) / c`` (DKM Lemma 4).

    Args:
        a: matrix ``(m, k)``.
        b: matrix ``(k, n)``.
        rank: number of samples ``c >= 1`` (the rank of ``C R`` is at most ``c``;
            ``c`` may exceed ``k``, since sampling is with replacement).
        key: typed PRNG key.

    Returns:
        ``(C, R)`` of shapes ``(m, c)`` and ``(c, n)`` in the promoted dtype of ``a`` and ``b``.

    Raises:
        ValueError: if ``a`` or ``b`` is not 2-D, their inner dimensions differ, or
            ``rank`` is not a positive int.
        TypeError: for non-float inputs or an untyped/non-scalar ``key``.

    References:
        Drineas, Kannan & Mahoney, SIAM J. Comput. 36(1), 2006, Algorithm 1 (BasicMatrixMultiplication).
    """
    a = _check_matrix(a, "cr_approx", "a", batched=False)
    b = _check_matrix(b, "cr_approx", "b", batched=False)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"cr_approx: a (m, k) and b (k, n) must share k, got shapes {a.shape} and {b.shape}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"cr_approx: rank (number of samples) must be a Python int >= 1, got {rank!r}")
    _check_key(key, "cr_approx")
    dtype = jnp.promote_types(jnp.promote_types(a.dtype, b.dtype), jnp.float32)
    a, b = a.astype(dtype), b.astype(dtype)
    p = cr_probabilities(a, b)
    idx = jax.random.choice(key, p.shape[0], (rank,), replace=True, p=p)  # (c,)
    scale = jax.lax.rsqrt(rank * jnp.maximum(p[idx], jnp.finfo(dtype).tiny))  # (c,)
    return a[:, idx] * scale[None, :], b[idx, :] * scale[:, None]
