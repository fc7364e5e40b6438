"""S4: the convolution kernel of a diagonal-plus-low-rank SSM via Cauchy + Woodbury.

For ``A = Λ - P Q*`` (here ``Q = P``), bilinear discretization with step Δ and
``C̃ = C̄ (I - Ā^L)``, the truncated generating function of the kernel at the
``L``-th roots of unity ``z_k = exp(-2πik/L)`` is

    K̂(z) = Σ_ℓ K_ℓ z^ℓ = 2/(1+z) · C̃ (g(z) - A)⁻¹ B,   g(z) = (2/Δ)(1-z)/(1+z),

and the Woodbury identity reduces the resolvent of ``Λ - PQ*`` to four
Cauchy sums over the diagonal. Writing ``R'_m = 1/((1-z)/Δ - (1+z)λ_m/2)``
(finite also at ``z = -1``) and ``s = (1+z)/2``,

    K̂ = C̃R'B - s (C̃R'P)(Q*R'B) / (1 + s Q*R'P),

so the kernel is an inverse real FFT of ``K̂`` at ``z_0..z_{L/2}``. Each
parameter stores one of each conjugate pair of the real system (``M = N/2``);
the sums run over both halves.

References:
    Gu, Goel, Ré. "Efficiently Modeling Long Sequences with Structured State
    Spaces." ICLR 2022 (Section 3.3, Algorithm 1, Lemmas C.2-C.4).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jaxlab._checks import check_positive_int


class S4Params(NamedTuple):
    """Continuous-time DPLR parameters of ``H`` SSMs, conjugate-half form (``M = N/2``).

    Attributes:
        lambda_: diagonal ``(H, M)`` complex, real part negative.
        p: low-rank factor ``(H, M)`` complex (``A = Λ - p p*`` over the full basis).
        b: input vector ``(H, M)`` complex.
        c: ``C̃ = C̄ (I - Ā^L)`` for the kernel length ``L``, ``(H, M)`` complex.
        step: step sizes Δ ``(H,)``, positive.

    References:
        Gu, Goel, Ré. S4 (ICLR 2022), Section 3.3 and Appendix C.3.
    """

    lambda_: Array
    p: Array
    b: Array
    c: Array
    step: Array


def _full(x: Array) -> Array:
    """Append the conjugate half: ``(…, M) -> (…, 2M)``."""
    return jnp.concatenate([x, jnp.conj(x)], axis=-1)


def cauchy(v: ArrayLike, alpha: ArrayLike, beta: ArrayLike, lambda_: ArrayLike) -> Array:
    """Generalized Cauchy sums ``out[..., l, k] = Σ_m v[..., m, k] / (α[..., l] - β[l] λ[..., m])``.

    With ``β = 1`` this is the Cauchy kernel of the S4 paper; a general ``β``
    keeps the bilinear generating function finite at ``z = -1``.

    Args:
        v: numerators ``(..., M, K)`` (``K`` vectors share the denominators).
        alpha: ``(..., F)``.
        beta: ``(F,)``.
        lambda_: poles ``(..., M)``.

    Returns:
        ``(..., F, K)`` complex sums.

    References:
        Gu, Goel, Ré. S4 (ICLR 2022), Section 3.3 (Cauchy kernel).
    """
    v, alpha, beta, lam = (jnp.asarray(x) for x in (v, alpha, beta, lambda_))
    r = 1.0 / (alpha[..., :, None] - beta[:, None] * lam[..., None, :])  # (..., F, M)
    return jnp.einsum("...fm,...mk->...fk", r, v, precision=jax.lax.Precision.HIGHEST)


def _check(params: S4Params) -> None:
    shape = jnp.shape(params.lambda_)
    if len(shape) != 2:
        raise ValueError(f"params.lambda_: expected shape (H, M), received {shape}")
    for name in ("p", "b", "c"):
        got = jnp.shape(getattr(params, name))
        if got != shape:
            raise ValueError(f"params.{name}: expected shape (H, M) = {shape}, received {got}")
    if jnp.shape(params.step) != shape[:1]:
        raise ValueError(f"params.step: expected shape (H,) = {shape[:1]}, received {jnp.shape(params.step)}")


def s4_kernel(params: S4Params, L: int) -> Array:
    """The S4 convolution kernel ``K_ℓ = C̄ Ā^ℓ B̄``, ``ℓ < L``, in ``O(H (N + L) log L)``-ish work.

    Args:
        params: :class:`S4Params`; ``params.c`` is ``C̃ = C̄ (I - Ā^L)`` for
            this ``L``.
        L: kernel length.

    Returns:
        ``(H, L)`` real kernel.

    Raises:
        ValueError: on mismatched parameter shapes or a non-positive ``L``.

    References:
        Gu, Goel, Ré. S4 (ICLR 2022), Algorithm 1.
    """
    check_positive_int("L", L)
    _check(params)
    lam, p, b, c = (_full(x) for x in (params.lambda_, params.p, params.b, params.c))  # (H, N)
    dtype = lam.dtype
    z = jnp.exp(-2j * jnp.pi * jnp.arange(L // 2 + 1) / L).astype(dtype)  # (F,)
    alpha = (1 - z)[None, :] / params.step[:, None].astype(dtype)  # (H, F)
    s = (1 + z) / 2  # (F,)
    num = jnp.stack([c * b, c * p, jnp.conj(p) * b, jnp.conj(p) * p], axis=-1)  # (H, N, 4)
    r = cauchy(num, alpha, s, lam)  # (H, F, 4)
    k_hat = r[..., 0] - s * r[..., 1] * r[..., 2] / (1 + s * r[..., 3])  # (H, F)
    return jnp.fft.irfft(k_hat, n=L)


def s4_dense(params: S4Params) -> tuple[Array, Array, Array]:
    """The full (``N = 2M``) continuous system ``(A, B, C̃)`` over the eigenbasis, dense.

    Args:
        params: :class:`S4Params` of ``H`` systems with ``M`` stored modes.

    Returns:
        ``A`` ``(H, N, N)`` = ``diag([λ, λ̄]) - [p, p̄][p, p̄]*``, ``B`` and ``C̃``
        ``(H, N)``, all complex.

    References:
        Gu, Goel, Ré. S4 (ICLR 2022), Section 3.3.
    """
    _check(params)
    lam, p = _full(params.lambda_), _full(params.p)
    A = jax.vmap(jnp.diag)(lam) - p[:, :, None] * jnp.conj(p)[:, None, :]
    return A, _full(params.b), _full(params.c)


def s4_recurrence(params: S4Params, L: int) -> tuple[Array, Array, Array]:
    """Discrete recurrent view ``(Ā, B̄, C̄)`` of S4: bilinear, and ``C̄ = C̃ (I - Ā^L)⁻¹``.

    The state is the full complex ``N``-vector over the eigenbasis (conjugate
    symmetric for real inputs); the output is ``Re(C̄ x)``. A step costs
    ``O(N²)`` per channel.

    Args:
        params: :class:`S4Params` (``c`` holds ``C̃`` for kernel length ``L``).
        L: the kernel length ``C̃`` refers to.

    Returns:
        ``Ā`` ``(H, N, N)``, ``B̄`` ``(H, N)``, ``C̄`` ``(H, N)``, complex.

    References:
        Gu, Goel, Ré. S4 (ICLR 2022), Section 3.3 and Appendix C.2.
    """
    check_positive_int("L", L)
    A, B, Ct = s4_dense(params)
    n = A.shape[-1]
    eye = jnp.eye(n, dtype=A.dtype)
    half = (params.step.astype(A.dtype) / 2)[:, None, None]
    left = eye - half * A
    Ab = jnp.linalg.solve(left, eye + half * A)
    Bb = jnp.linalg.solve(left, (2 * half[..., 0] * B)[..., None])[..., 0]
    power = jnp.linalg.matrix_power(Ab, L)  # (H, N, N) by repeated squaring
    Cb = jnp.linalg.solve(jnp.swapaxes(eye - power, -1, -2), Ct[..., None])[..., 0]  # C̄ (I - Ā^L) = C̃
    return Ab, Bb, Cb
