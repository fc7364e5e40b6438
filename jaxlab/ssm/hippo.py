"""HiPPO transition matrices for the LegS, LegT, LagT and FouT measures.

Every matrix pair ``(A, B)`` returned here is written so that the projection
coefficients ``c(t)`` of an input ``f`` onto ``N`` orthonormal basis functions
follow

    d/dt c(t) = (1/t) (A c(t) + B f(t))      for ``"legs"`` (scaled measure),
    d/dt c(t) = (1/θ) (A c(t) + B f(t))      for ``"legt"``, ``"lagt"``, ``"fout"``,

i.e. the minus sign of the HiPPO paper is folded into ``A`` (the S4 papers'
convention), and ``θ`` is the window length (LegT, FouT) or the time scale of
the exponential decay (LagT). The basis functions that go with each measure are
evaluated by :func:`jaxlab.ssm.hippo_basis`.

References:
    Gu, Dao, Ermon, Rudra, Ré. "HiPPO: Recurrent Memory with Optimal Polynomial
    Projections." NeurIPS 2020 (Sections 2-3, Appendix D).
    Gu, Goel, Ré. "Efficiently Modeling Long Sequences with Structured State
    Spaces." ICLR 2022 (Section 3.1, Eq. 2).
"""

from __future__ import annotations

import numpy as np

from jaxlab._checks import check_choice, check_positive_int

MEASURES = ("legs", "legt", "lagt", "fout")


def _legs(n: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.sqrt(2.0 * np.arange(n) + 1.0)  # (N,)
    a = -np.tril(np.outer(r, r), k=-1) - np.diag(np.arange(n) + 1.0)
    return a, r.copy()


def _legt(n: int) -> tuple[np.ndarray, np.ndarray]:
    # Derivation (Legendre on the window [t-θ, t], f(t-θ) read back from c):
    # θ c_n' = √(2n+1) f - Σ_k √(2n+1)√(2k+1) [(-1)^(n+k) + 2·1{k<n, n-k odd}] c_k,
    # and the bracket is 1 below the diagonal and (-1)^(n-k) on and above it.
    r = np.sqrt(2.0 * np.arange(n) + 1.0)
    row, col = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    sign = np.where(col < row, 1.0, (-1.0) ** (col - row))
    return -np.outer(r, r) * sign, r.copy()


def _lagt(n: int) -> tuple[np.ndarray, np.ndarray]:
    # Laguerre polynomials L_n with L_n(0) = 1 and L_n' = -Σ_{k<n} L_k give
    # θ c_n' = f - Σ_{k<=n} c_k.
    return -np.tril(np.ones((n, n))), np.ones(n)


def _fout(n: int) -> tuple[np.ndarray, np.ndarray]:
    # Basis on the window [t-θ, t] (u = (s-t)/θ ∈ [-1, 0]): index 0 is 1,
    # index 2k-1 is √2 cos(2πku), index 2k is √2 sin(2πku). Differentiating
    # c_n = (1/θ)∫ f g_n gives θ c' = b (f(t) - f(t-θ)) + J c with b = g(0) and
    # J the rotation generator. The truncated series evaluated at the window
    # edge converges to the midpoint (f(t) + f(t-θ))/2, so f(t-θ) is read back
    # as 2 bᵀc - f(t): θ c' = (J - 2bbᵀ) c + 2b f.
    b = np.zeros(n)
    b[0] = 1.0
    b[1::2] = np.sqrt(2.0)
    j = np.zeros((n, n))
    for k in range(1, (n - 1) // 2 + 1):  # complete (cos_k, sin_k) pairs
        c, s = 2 * k - 1, 2 * k
        j[c, s] = 2.0 * np.pi * k
        j[s, c] = -2.0 * np.pi * k
    return j - 2.0 * np.outer(b, b), 2.0 * b


_BUILDERS = {"legs": _legs, "legt": _legt, "lagt": _lagt, "fout": _fout}


def hippo(measure: str, N: int) -> tuple[np.ndarray, np.ndarray]:
    """HiPPO state matrix ``A`` and input vector ``B`` for a measure.

    Args:
        measure: ``"legs"`` (scaled Legendre: uniform on ``[0, t]``),
            ``"legt"`` (translated Legendre: uniform on ``[t-θ, t]``),
            ``"lagt"`` (translated Laguerre: ``exp(-(t-s)/θ)/θ`` on
            ``(-∞, t]``) or ``"fout"`` (translated Fourier: uniform on
            ``[t-θ, t]``, basis ``1, √2cos, √2sin, …``).
        N: number of coefficients (state size).

    Returns:
        ``(A, B)``: float64 numpy arrays of shapes ``(N, N)`` and ``(N,)``
        with the dynamics described in the module docstring. For LegS,
        ``A[n, k] = -√(2n+1)√(2k+1)`` for ``n > k``, ``-(n+1)`` on the
        diagonal, ``0`` above it, and ``B[n] = √(2n+1)``.

    Raises:
        ValueError: if ``measure`` is unknown or ``N`` is not a positive int.

    References:
        Gu et al. "HiPPO: Recurrent Memory with Optimal Polynomial
        Projections." NeurIPS 2020 (Theorem 1, Theorem 2, Appendix D).
    """
    check_choice("measure", measure, MEASURES)
    check_positive_int("N", N)
    return _BUILDERS[measure](N)
