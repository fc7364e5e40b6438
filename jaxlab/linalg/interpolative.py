"""Interpolative decomposition (ID) from a column-pivoted QR written with ``lax`` loops.

``x ≈ x[:, idx] @ proj``: ``rank`` actual columns of ``x`` (the skeleton) and an
interpolation matrix ``proj`` with ``proj[:, idx] = I``, so the chosen columns
are reproduced exactly and the others are combinations of them.

JAX has no pivoted QR (``jnp.linalg.qr`` does not pivot, and
``jax.scipy.linalg.qr(pivoting=True)`` is not implemented on every backend), so the
pivoting is done here by Businger–Golub column pivoting on a Gram–Schmidt
residual, one ``lax.fori_loop`` step per chosen column:

1. pick the column ``p`` of the current residual with the largest norm;
2. ``q = residual[:, p] / |residual[:, p]|``, re-orthogonalized once against the
   previous ``q``'s (classical Gram–Schmidt twice, which keeps ``Q`` orthonormal
   to working precision);
3. record the row ``R[j, :] = q^T x`` and subtract ``q q^T residual``.

After ``k`` steps ``x ≈ Q R`` (the residual is ``x - Q Q^T x``), ``R11 = R[:, idx]``
is upper triangular in pivot order, and ``proj = R11^{-1} R`` (a triangular
solve), so ``x[:, idx] proj = Q R11 R11^{-1} R = Q R``: the ID error equals the
pivoted-QR residual ``|x - Q Q^T x|``. Column pivoting has no tight worst-case
bound (Kahan's matrices defeat it), but on typical matrices its error is close to
the truncated SVD's; the tests compare it with ``scipy.linalg.interpolative``.
A column whose residual is zero to working precision (``x`` of rank ``< k``)
gets ``q = 0`` and a unit row, so ``proj`` stays finite.

References:
    Cheng, Gimbutas, Martinsson & Rokhlin, "On the compression of low rank
    matrices", SIAM J. Sci. Comput. 26(4), 2005.

    Businger & Golub, "Linear least squares solutions by Householder
    transformations", Numer. Math. 7, 1965 (column pivoting).

    Golub & Van Loan, "Matrix Computations", 4th ed., 2013, section 5.4.2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlab.linalg.lowrank import _check_matrix, _check_rank

__all__ = ["interpolative", "pivoted_qr"]

_HI = jax.lax.Precision.HIGHEST


def pivoted_qr(x: jax.Array, rank: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The first ``rank`` steps of a column-pivoted QR: ``x[:, idx] ≈ Q R[:, idx]`` and ``x ≈ Q R``.

    Args:
        x: matrix ``(m, n)`` (use ``jax.vmap`` for batches).
        rank: number ``k`` of pivot steps, ``1 <= k <= min(m, n)``.

    Returns:
        ``(idx, q, r)``: int32 pivot columns ``(k,)`` in the order chosen,
        orthonormal ``q`` ``(m, k)`` (a zero column for a step whose residual
        vanished) and ``r = q^T x`` ``(k, n)``, upper triangular on ``idx``
        (``r[i, idx[j]] ≈ 0`` for ``i > j``).

    Raises:
        ValueError: if ``x`` is not 2-D or ``rank`` is out of range.
        TypeError: if ``x`` is not floating point.

    References:
        Businger & Golub, Numer. Math. 1965; Golub & Van Loan, section 5.4.2.
    """
    x = _check_matrix(x, "pivoted_qr", batched=False)
    m, n = x.shape
    rank = _check_rank(rank, min(m, n), "pivoted_qr")
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    x = x.astype(dtype)
    col_norm2 = jnp.sum(jnp.square(x), axis=0)  # (n,)
    tol = 10.0 * max(m, n) * float(jnp.finfo(dtype).eps) * jnp.sqrt(jnp.max(col_norm2))

    def step(j, carry):
        residual, q_mat, r_mat, idx, taken = carry
        norm2 = jnp.where(taken, -1.0, jnp.sum(jnp.square(residual), axis=0))
        p = jnp.argmax(norm2)
        norm = jnp.sqrt(jnp.maximum(norm2[p], 0.0))
        ok = norm > tol
        q = residual[:, p] / jnp.where(ok, norm, 1.0)
        q = q - jnp.matmul(q_mat, jnp.matmul(q, q_mat, precision=_HI), precision=_HI)  # re-orthogonalize
        q = jnp.where(ok, q / jnp.maximum(jnp.linalg.norm(q), jnp.finfo(dtype).tiny), 0.0)
        row = jnp.where(ok, jnp.matmul(q, x, precision=_HI), jax.nn.one_hot(p, n, dtype=dtype))
        residual = residual - jnp.outer(q, jnp.matmul(q, residual, precision=_HI))
        return (
            residual,
            q_mat.at[:, j].set(q),
            r_mat.at[j].set(row),
            idx.at[j].set(p.astype(jnp.int32)),
            taken.at[p].set(True),
        )

    init = (x, jnp.zeros((m, rank), dtype), jnp.zeros((rank, n), dtype), jnp.zeros((rank,), jnp.int32),
            jnp.zeros((n,), bool))  # fmt: skip
    _, q_mat, r_mat, idx, _ = jax.lax.fori_loop(0, rank, step, init)
    return idx, q_mat, r_mat


def interpolative(x: jax.Array, rank: int) -> tuple[jax.Array, jax.Array]:
    """Rank-``rank`` interpolative decomposition ``x ≈ x[:, idx] @ proj`` from a column-pivoted QR.

    Deterministic (no sketch): the skeleton columns are the first ``rank`` pivots of
    :func:`pivoted_qr` and ``proj = R11^{-1} R``. The error
    ``|x - x[:, idx] proj|`` equals the pivoted-QR residual ``|x - Q Q^T x|``, at
    least the truncated-SVD error and, for typical (non-Kahan) matrices, close to it.

    Args:
        x: matrix ``(m, n)`` (use ``jax.vmap`` for batches).
        rank: number ``k`` of skeleton columns, ``1 <= k <= min(m, n)``.

    Returns:
        ``(idx, proj)``: int32 column indices ``(k,)`` in pivot order and the
        interpolation matrix ``(k, n)`` in the dtype of ``x``, with
        ``proj[:, idx]`` exactly the identity.

    Raises:
        ValueError: if ``x`` is not 2-D or ``rank`` is out of range.
        TypeError: if ``x`` is not floating point.

    References:
        Cheng, Gimbutas, Martinsson & Rokhlin, SIAM J. Sci. Comput. 2005.
    """
    x = _check_matrix(x, "interpolative", batched=False)
    _check_rank(rank, min(x.shape), "interpolative")
    idx, _, r_mat = pivoted_qr(x, rank)
    r11 = r_mat[:, idx]  # (k, k), upper triangular in pivot order
    proj = jax.scipy.linalg.solve_triangular(r11, r_mat, lower=False)  # (k, n)
    proj = proj.at[:, idx].set(jnp.eye(rank, dtype=proj.dtype))
    return idx, proj.astype(x.dtype)
