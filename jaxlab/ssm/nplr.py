"""Normal-plus-low-rank (NPLR) and diagonal-plus-low-rank (DPLR) forms of HiPPO-LegS.

With ``P_n = √(n + 1/2)``, the LegS matrix satisfies

    A + P Pᵀ = -½ I + S,    S_nk = -½ √(2n+1) √(2k+1) sign(n - k),

and ``S`` is skew-symmetric, hence unitarily diagonalizable with imaginary
eigenvalues: ``S = V diag(iω) V*``. So ``A = V (Λ - p p*) V*`` with
``Λ = -½ + iω``, ``p = V* P``, and the input vector is ``b = V* B``. Because
``A`` is real the spectrum comes in conjugate pairs; the DPLR form keeps one
of each pair (``Im λ > 0``), the other half being its complex conjugate.

Constants are built in float64 numpy (once, at initialization time).

References:
    Gu, Goel, Ré. "Efficiently Modeling Long Sequences with Structured State
    Spaces." ICLR 2022 (Theorem 1, Section 3.3, Appendix C.1).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxlab._checks import check_positive_int
from jaxlab.ssm.hippo import hippo


class NPLR(NamedTuple):
    """``A = V (diag(lambda_) - p p*) V*`` and ``B = V b`` (``V`` unitary).

    Attributes:
        lambda_: eigenvalues of the normal part, ``(M,)`` complex.
        p: low-rank factor in the eigenbasis, ``(M,)`` complex.
        b: input vector in the eigenbasis, ``(M,)`` complex.
        v: eigenvectors, ``(N, M)`` complex (``M = N``, or ``N/2`` for the
            DPLR half form, whose full basis is ``[v, conj(v)]``).

    References:
        Gu, Goel, Ré. S4 (ICLR 2022), Theorem 1.
    """

    lambda_: np.ndarray
    p: np.ndarray
    b: np.ndarray
    v: np.ndarray


def legs_low_rank(N: int) -> np.ndarray:
    """Rank-1 correction of LegS: ``A_LegS + P Pᵀ`` is normal.

    Args:
        N: state size.

    Returns:
        ``(N,)`` float64 vector ``P_n = √(n + 1/2)``.

    References:
        Gu, Goel, Ré. S4 (ICLR 2022), Section 3.3.
    """
    check_positive_int("N", N)
    return np.sqrt(np.arange(N) + 0.5)


def _normal_part(N: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    A, B = hippo("legs", N)
    P = legs_low_rank(N)
    normal = A + np.outer(P, P)  # -½ I + S
    skew = normal + 0.5 * np.eye(N)
    w, v = np.linalg.eigh(1j * skew)  # i S = V diag(w) V*  =>  S = V diag(-i w) V*
    return -0.5 - 1j * w, v, np.stack([P, B])


def nplr_legs(N: int) -> NPLR:
    """The NPLR form of LegS over the full basis of ``N`` eigenvectors.

    Args:
        N: state size.

    Returns:
        :class:`NPLR` with ``M = N`` such that
        ``hippo("legs", N)[0] == v @ (diag(lambda_) - outer(p, p.conj())) @ v.conj().T``.

    References:
        Gu, Goel, Ré. S4 (ICLR 2022), Theorem 1.
    """
    lam, v, pb = _normal_part(N)
    p, b = v.conj().T @ pb[0], v.conj().T @ pb[1]
    return NPLR(lam, p, b, v)


def dplr_legs(N: int) -> NPLR:
    """The conjugate-half (DPLR) form of LegS: ``N/2`` eigenvalues with ``Im λ > 0``.

    The full system is recovered with ``λ_full = [λ, λ̄]``, ``p_full = [p, p̄]``,
    ``b_full = [b, b̄]`` and ``V_full = [v, v̄]``; ordering is by increasing
    frequency ``Im λ``.

    Args:
        N: state size, a positive even int.

    Returns:
        :class:`NPLR` with ``M = N/2`` and ``v`` of shape ``(N, N/2)``.

    Raises:
        ValueError: if ``N`` is not a positive even int.

    References:
        Gu, Goel, Ré. S4 (ICLR 2022), Section 3.3 and Appendix C.1.
    """
    check_positive_int("N", N, even=True)
    lam, v, pb = _normal_part(N)
    keep = np.argsort(lam.imag)[N // 2 :]  # Im λ > 0 (S has no zero eigenvalue for even N)
    lam, v = lam[keep], v[:, keep]
    p, b = v.conj().T @ pb[0], v.conj().T @ pb[1]
    return NPLR(lam, p, b, v)
