"""Discretization of continuous-time linear state-space models.

A continuous system ``x' = A x + B u`` sampled with step ``Δ`` becomes the
recurrence ``x_k = Ā x_{k-1} + B̄ u_k``. Dense systems (HiPPO, NPLR) use
:func:`discretize`; diagonal systems (S4D) use :func:`discretize_diag`, which
is elementwise.

References:
    Gu et al. "HiPPO: Recurrent Memory with Optimal Polynomial Projections."
    NeurIPS 2020 (Appendix B.3, generalized bilinear transform).
    Gu, Goel, Ré. "Efficiently Modeling Long Sequences with Structured State
    Spaces." ICLR 2022 (Eq. 3, bilinear).
    Gu, Gupta, Goel, Ré. "On the Parameterization and Initialization of
    Diagonal State Space Models." NeurIPS 2022 (Section 3.1, ZOH and
    bilinear for diagonal systems).
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jax import Array
from jax.typing import ArrayLike

from jaxlab._checks import check_choice, check_ndim

METHODS = ("euler", "backward", "bilinear", "zoh")
DIAG_METHODS = ("zoh", "bilinear")


def discretize(A: ArrayLike, B: ArrayLike, dt: ArrayLike, method: str = "bilinear") -> tuple[Array, Array]:
    """Discretize ``x' = A x + B u`` with step ``dt``.

    Args:
        A: state matrix, ``(N, N)``.
        B: input matrix, ``(N,)`` or ``(N, P)``.
        dt: step size Δ, a scalar.
        method: ``"euler"`` (Ā = I + ΔA, B̄ = ΔB), ``"backward"``
            (Ā = (I − ΔA)⁻¹, B̄ = (I − ΔA)⁻¹ΔB), ``"bilinear"``
            (Ā = (I − Δ/2 A)⁻¹(I + Δ/2 A), B̄ = (I − Δ/2 A)⁻¹ΔB, as in
            ``scipy.signal.cont2discrete(..., method="bilinear")``) or
            ``"zoh"`` (Ā = exp(ΔA), B̄ = ∫₀^Δ exp(sA) ds B, computed from the
            exponential of the augmented matrix ``[[A, B], [0, 0]]`` so that a
            singular ``A`` is fine).

    Returns:
        ``(Ā, B̄)`` with the shapes of ``A`` and ``B``.

    Raises:
        ValueError: on an unknown ``method`` or mismatched shapes.

    References:
        Gu et al. HiPPO (NeurIPS 2020), Appendix B.3; Gu, Goel, Ré. S4
        (ICLR 2022), Eq. 3.
    """
    check_choice("method", method, METHODS)
    A, B = jnp.asarray(A), jnp.asarray(B)
    check_ndim("A", A.shape, 2, "(N, N)")
    n = A.shape[0]
    if A.shape != (n, n):
        raise ValueError(f"A: expected a square matrix (N, N), received {A.shape}")
    vector = B.ndim == 1
    B2 = B[:, None] if vector else B  # (N, P)
    if B2.ndim != 2 or B2.shape[0] != n:
        raise ValueError(f"B: expected shape (N,) or (N, P) with N = {n}, received {B.shape}")
    dt = jnp.asarray(dt)
    if dt.ndim != 0:
        raise ValueError(f"dt: expected a scalar, received shape {dt.shape}")
    dtype = jnp.result_type(A, B2, dt)
    A, B2 = A.astype(dtype), B2.astype(dtype)
    eye = jnp.eye(n, dtype=dtype)
    if method == "euler":
        Ab, Bb = eye + dt * A, dt * B2
    elif method == "backward":
        inv = jnp.linalg.inv(eye - dt * A)
        Ab, Bb = inv, inv @ (dt * B2)
    elif method == "bilinear":
        left = eye - (dt / 2) * A
        Ab = jnp.linalg.solve(left, eye + (dt / 2) * A)
        Bb = jnp.linalg.solve(left, dt * B2)
    else:  # zoh
        p = B2.shape[1]
        aug = jnp.zeros((n + p, n + p), dtype).at[:n, :n].set(A).at[:n, n:].set(B2)
        e = jsl.expm(dt * aug)
        Ab, Bb = e[:n, :n], e[:n, n:]
    return Ab, (Bb[:, 0] if vector else Bb)


def discretize_diag(lambda_: ArrayLike, B: ArrayLike, step: ArrayLike, method: str = "zoh") -> tuple[Array, Array]:
    """Discretize a diagonal system ``x_n' = λ_n x_n + B_n u`` elementwise.

    Args:
        lambda_: diagonal of ``A`` (complex), any shape ``(..., M)``.
        B: input vector, broadcastable against ``lambda_``.
        step: step sizes Δ, broadcastable against ``lambda_`` (e.g. ``(H, 1)``
            for one step per channel).
        method: ``"zoh"`` (Ā = exp(Δλ), B̄ = (exp(Δλ) − 1)/λ · B) or
            ``"bilinear"`` (Ā = (1 + Δλ/2)/(1 − Δλ/2), B̄ = ΔB/(1 − Δλ/2)).

    Returns:
        ``(Ā, B̄)`` broadcast to a common shape.

    References:
        Gu, Gupta, Goel, Ré. "On the Parameterization and Initialization of
        Diagonal State Space Models." NeurIPS 2022, Section 3.1.
    """
    check_choice("method", method, DIAG_METHODS)
    lam, B, step = jnp.asarray(lambda_), jnp.asarray(B), jnp.asarray(step)
    dl = step * lam
    if method == "zoh":
        Ab = jnp.exp(dl)
        return Ab, (Ab - 1.0) / lam * B
    denom = 1.0 - dl / 2
    return (1.0 + dl / 2) / denom, step * B / denom
