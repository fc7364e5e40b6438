"""S4D: diagonal state-space kernels, their initializations and the Vandermonde kernel.

A diagonal SSM with ``M = N/2`` complex modes (the other half are their
complex conjugates, so the system is real) has the convolution kernel

    K_ℓ = 2 Re Σ_m C_m B̄_m Ā_m^ℓ,       ℓ = 0..L-1,

a Vandermonde product. :func:`vandermonde_kernel` evaluates it with the
factorization ``ℓ = a·s + r`` (``s ≈ √L``): ``Ā^ℓ = (Ā^s)^a · Ā^r``, so
``K[a·s + r] = 2 Re Σ_m (W_m Ā_m^{s·a}) Ā_m^r`` is one real matrix product
per channel with ``O(M·√L)`` exponentials instead of ``O(M·L)``.

References:
    Gu, Gupta, Goel, Ré. "On the Parameterization and Initialization of
    Diagonal State Space Models." NeurIPS 2022 (Sections 3-4).
    Gupta, Gu, Berant. "Diagonal State Spaces are as Effective as Structured
    State Spaces." NeurIPS 2022.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from jaxlab._checks import check_choice, check_positive_int
from jaxlab.ssm.discretize import DIAG_METHODS, discretize_diag
from jaxlab.ssm.nplr import dplr_legs

S4D_INITS = ("lin", "inv", "legs", "real")
_LOG_ZERO = -1e4  # stands in for log 0: exp(0·_LOG_ZERO) = 1 and exp(ℓ·_LOG_ZERO) = 0 for ℓ >= 1


class S4DParams(NamedTuple):
    """Continuous-time parameters of ``H`` diagonal SSMs with ``M`` modes each.

    Attributes:
        lambda_: eigenvalues ``(H, M)`` complex, real part negative.
        b: input vector ``(H, M)`` complex.
        c: output vector ``(H, M)`` complex.
        step: step sizes Δ ``(H,)``, positive.

    References:
        Gu et al. S4D (NeurIPS 2022), Section 3.
    """

    lambda_: Array
    b: Array
    c: Array
    step: Array


def s4d_init(init: str, N: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and input vector of an S4D initialization (``N/2`` modes).

    Args:
        init: ``"lin"`` (λ_n = -½ + iπn, B = 1), ``"inv"``
            (λ_n = -½ + i(N/π)(N/(2n+1) - 1), B = 1), ``"legs"`` (the diagonal
            part of the DPLR form of HiPPO-LegS with B = V*B_LegS, see
            :func:`jaxlab.ssm.dplr_legs`) or ``"real"`` (λ_n = -(n+1), B = 1).
        N: state size, a positive even int; ``n = 0..N/2-1``.

    Returns:
        ``(lambda_, b)``: complex128 numpy arrays of shape ``(N/2,)``.

    Raises:
        ValueError: on an unknown ``init`` or odd ``N``.

    References:
        Gu et al. S4D (NeurIPS 2022), Section 4 (S4D-Lin, S4D-Inv, S4D-LegS,
        S4D-Real).
    """
    check_choice("init", init, S4D_INITS)
    check_positive_int("N", N, even=True)
    n = np.arange(N // 2)
    ones = np.ones(N // 2, np.complex128)
    if init == "lin":
        return -0.5 + 1j * np.pi * n, ones
    if init == "inv":
        return -0.5 + 1j * (N / np.pi) * (N / (2 * n + 1) - 1), ones
    if init == "real":
        return -(n + 1.0) + 0j, ones
    form = dplr_legs(N)
    return form.lambda_, form.b


def vandermonde_kernel(w: ArrayLike, log_a: ArrayLike, L: int) -> Array:
    """``K[..., ℓ] = 2 Re Σ_m w[..., m] exp(ℓ · log_a[..., m])`` for ``ℓ < L``.

    Args:
        w: weights ``(..., M)`` complex (``C ⊙ B̄`` for an SSM).
        log_a: logarithms of the discrete eigenvalues ``(..., M)`` complex.
        L: kernel length.

    Returns:
        ``(..., L)`` real kernel.

    References:
        Gu et al. S4D (NeurIPS 2022), Section 3.2 (Vandermonde kernel).
    """
    check_positive_int("L", L)
    w, log_a = jnp.asarray(w), jnp.asarray(log_a)
    s = max(1, math.isqrt(L - 1) + 1)  # inner block length, s ≥ √L
    blocks = -(-L // s)
    inner = jnp.exp(log_a[..., None] * jnp.arange(s))  # (..., M, s)
    outer = w[..., None] * jnp.exp(log_a[..., None] * (s * jnp.arange(blocks)))  # (..., M, blocks)
    lhs = jnp.concatenate([outer.real, -outer.imag], axis=-2)  # (..., 2M, blocks)
    rhs = jnp.concatenate([inner.real, inner.imag], axis=-2)  # (..., 2M, s)
    k = jnp.einsum("...ma,...mr->...ar", lhs, rhs, precision=jax.lax.Precision.HIGHEST)
    return 2.0 * k.reshape(*k.shape[:-2], blocks * s)[..., :L]


def s4d_discretize(params: S4DParams, method: str = "zoh") -> tuple[Array, Array]:
    """Discretize :class:`S4DParams` with their own step sizes.

    Args:
        params: :class:`S4DParams` of ``H`` systems with ``M`` modes.
        method: ``"zoh"`` or ``"bilinear"``.

    Returns:
        ``(Ā, B̄)``, each ``(H, M)`` complex.

    References:
        Gu et al. S4D (NeurIPS 2022), Section 3.1.
    """
    return discretize_diag(params.lambda_, params.b, params.step[..., None], method)


def s4d_kernel(params: S4DParams, L: int, *, method: str = "zoh") -> Array:
    """Convolution kernel of ``H`` diagonal SSMs.

    Args:
        params: :class:`S4DParams` with ``lambda_, b, c`` of shape ``(H, M)``
            and ``step`` of shape ``(H,)``.
        L: kernel length.
        method: ``"zoh"`` or ``"bilinear"``.

    Returns:
        ``(H, L)`` real kernel ``K_ℓ = 2 Re Σ_m C_m B̄_m Ā_m^ℓ``.

    Raises:
        ValueError: on mismatched parameter shapes or an unknown method.

    References:
        Gu et al. S4D (NeurIPS 2022), Sections 3.1-3.2.
    """
    check_choice("method", method, DIAG_METHODS)
    shape = jnp.shape(params.lambda_)
    for name in ("b", "c"):
        got = jnp.shape(getattr(params, name))
        if got != shape:
            raise ValueError(f"params.{name}: expected shape {shape} (as lambda_), received {got}")
    if jnp.shape(params.step) != shape[:-1]:
        raise ValueError(f"params.step: expected shape {shape[:-1]}, received {jnp.shape(params.step)}")
    Ab, Bb = s4d_discretize(params, method)
    if method == "zoh":
        log_a = params.step[..., None] * params.lambda_
    else:  # bilinear maps Δλ = -2 to Ā = 0, whose powers are 1, 0, 0, …
        zero = Ab == 0
        log_a = jnp.where(zero, _LOG_ZERO, jnp.log(jnp.where(zero, 1.0, Ab)))
    return vandermonde_kernel(params.c * Bb, log_a, L)
