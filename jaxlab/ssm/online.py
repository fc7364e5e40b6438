"""Online function approximation with HiPPO: project a stream, read it back.

:func:`hippo_project` runs the HiPPO recurrence over a sampled signal and
returns the coefficients ``c_k`` of the projection of the history seen up to
each sample; :func:`reconstruct` evaluates the approximation
``f(s) ≈ Σ_n c_n g_n(s)`` from coefficients, with the basis of
:func:`hippo_basis`.

Sampling convention: ``f[k]`` is the signal at time ``t_k = (k + 1)·dt``, so
the last coefficients describe the history up to ``T = L·dt``.

References:
    Gu, Dao, Ermon, Rudra, Ré. "HiPPO: Recurrent Memory with Optimal Polynomial
    Projections." NeurIPS 2020 (Sections 2.2-3, Appendix D and F).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jax import Array
from jax.typing import ArrayLike

from jaxlab._checks import check_choice, check_ndim, check_positive_int
from jaxlab.ssm.discretize import discretize
from jaxlab.ssm.hippo import MEASURES, hippo

LEGS_METHODS = ("euler", "backward", "bilinear")
_ALPHA = {"euler": 0.0, "backward": 1.0, "bilinear": 0.5}


def _three_term(x: Array, n: int, a: Array, b: Array, c: Array) -> Array:
    """Values ``p_0..p_{n-1}`` of ``p_{j+1} = (a_j + b_j x) p_j - c_j p_{j-1}``; ``(n, M)``."""
    p0 = jnp.ones_like(x)

    def body(carry, coef):
        prev, cur = carry
        aj, bj, cj = coef
        nxt = (aj + bj * x) * cur - cj * prev
        return (cur, nxt), nxt

    _, rest = jax.lax.scan(body, (jnp.zeros_like(x), p0), (a[: n - 1], b[: n - 1], c[: n - 1]))
    return jnp.concatenate([p0[None], rest], axis=0)


def _legendre(x: Array, n: int) -> Array:
    j = jnp.arange(n, dtype=x.dtype)
    return _three_term(x, n, jnp.zeros_like(j), (2 * j + 1) / (j + 1), j / (j + 1))


def _laguerre(x: Array, n: int) -> Array:
    j = jnp.arange(n, dtype=x.dtype)
    return _three_term(x, n, (2 * j + 1) / (j + 1), -1.0 / (j + 1), j / (j + 1))


def _fourier(u: Array, n: int) -> Array:
    k = (jnp.arange(n) + 1) // 2  # frequency of each index: 0, 1, 1, 2, 2, ...
    phase = 2 * jnp.pi * k[:, None] * u[None, :]  # (N, M)
    odd = (jnp.arange(n) % 2 == 1)[:, None]
    vals = jnp.sqrt(2.0) * jnp.where(odd, jnp.cos(phase), jnp.sin(phase))
    return vals.at[0].set(1.0)


def hippo_basis(measure: str, N: int, s: ArrayLike, *, t: float, theta: float = 1.0) -> Array:
    """Basis functions of a HiPPO measure at time ``t``, evaluated at times ``s``.

    Args:
        measure: one of ``"legs"``, ``"legt"``, ``"lagt"``, ``"fout"``.
        N: number of basis functions.
        s: evaluation times, ``(M,)``; meaningful on the measure's support
            (``[0, t]`` for LegS, ``[t-θ, t]`` for LegT and FouT, ``s <= t``
            for LagT).
        t: current time (the end of the history).
        theta: window length (LegT, FouT) or decay time scale (LagT).

    Returns:
        ``(M, N)`` matrix ``G`` with ``f(s) ≈ G @ c``: orthonormal Legendre
        ``√(2n+1) P_n`` on the rescaled window for LegS/LegT, Laguerre ``L_n``
        of ``(t - s)/θ`` for LagT, and ``1, √2 cos(2πk u), √2 sin(2πk u)``
        with ``u = (s - t)/θ`` for FouT.

    References:
        Gu et al. HiPPO (NeurIPS 2020), Appendix D.
    """
    check_choice("measure", measure, MEASURES)
    check_positive_int("N", N)
    s = jnp.asarray(s)
    if not jnp.issubdtype(s.dtype, jnp.floating):
        s = s.astype(jnp.float32)
    check_ndim("s", s.shape, 1, "(M,)")
    if measure == "legs":
        g = _legendre(2 * s / t - 1, N) * jnp.sqrt(2 * jnp.arange(N, dtype=s.dtype) + 1)[:, None]
    elif measure == "legt":
        g = _legendre(2 * (s - t) / theta + 1, N) * jnp.sqrt(2 * jnp.arange(N, dtype=s.dtype) + 1)[:, None]
    elif measure == "lagt":
        g = _laguerre((t - s) / theta, N)
    else:
        g = _fourier((s - t) / theta, N)
    return g.T


def reconstruct(coeffs: ArrayLike, measure: str, s: ArrayLike, *, t: float, theta: float = 1.0) -> Array:
    """Evaluate the HiPPO approximation of the history from its coefficients.

    Args:
        coeffs: coefficients at time ``t``, ``(..., N)``.
        measure: the measure that produced them.
        s: evaluation times, ``(M,)`` (see :func:`hippo_basis` for the support).
        t: the time at which ``coeffs`` were taken.
        theta: window length / time scale used for the projection.

    Returns:
        ``(..., M)`` reconstructed values ``Σ_n c_n g_n(s)``.

    References:
        Gu et al. HiPPO (NeurIPS 2020), Section 2 (Eq. 1) and Figure 1.
    """
    coeffs = jnp.asarray(coeffs)
    return coeffs @ hippo_basis(measure, coeffs.shape[-1], s, t=t, theta=theta).T.astype(coeffs.dtype)


def _legs_scan(f: Array, A: Array, B: Array, method: str) -> Array:
    n, alpha = A.shape[0], _ALPHA[method]
    eye = jnp.eye(n, dtype=f.dtype)
    k = jnp.arange(1, f.shape[0], dtype=f.dtype)
    # dc/dt = (1/t)(Ac + Bf) is time invariant in τ = log t; from t_{k-1} = k·dt to
    # t_k = (k+1)·dt the step is δ_k = log(1 + 1/k), whatever dt is.
    deltas = jnp.log1p(1.0 / k)

    def body(c, inp):
        delta, fk = inp
        rhs = c + (1 - alpha) * delta * (A @ c) + delta * B * fk
        if alpha == 0.0:
            return rhs, rhs
        c = jsl.solve_triangular(eye - alpha * delta * A, rhs, lower=True)
        return c, c

    c0 = jnp.zeros((n,), f.dtype).at[0].set(f[0])  # projection of a constant over [0, dt]
    _, cs = jax.lax.scan(body, c0, (deltas, f[1:]))
    return jnp.concatenate([c0[None], cs], axis=0)


def _lti_scan(f: Array, Ab: Array, Bb: Array) -> Array:
    def body(c, fk):
        c = Ab @ c + Bb * fk
        return c, c

    _, cs = jax.lax.scan(body, jnp.zeros(Ab.shape[0], f.dtype), f)
    return cs


@partial(jax.jit, static_argnames=("measure", "N", "method"))
def hippo_project(f: ArrayLike, measure: str, N: int, *, dt: float, theta: float = 1.0, method: str = "bilinear") -> Array:
    """Run the HiPPO online projection over a sampled signal.

    LegS uses its time-varying recurrence ``c' = (1/t)(A c + B f)``; in
    log-time it is time invariant, so each step uses ``δ_k = log(1 + 1/k)``
    (independent of ``dt``: LegS is timescale robust) with the generalized
    bilinear transform (a lower-triangular solve per step), starting from the
    exact projection ``c_0 = f[0]·e_0`` of the first sample. LegT, LagT and FouT
    are time invariant: ``(A/θ, B/θ)`` is discretized once with
    :func:`jaxlab.ssm.discretize` and scanned from ``c = 0`` at ``t = 0``.

    Args:
        f: signal samples, ``(L,)``, with ``f[k] = f((k + 1)·dt)``.
        measure: ``"legs"``, ``"legt"``, ``"lagt"`` or ``"fout"``.
        N: number of coefficients.
        dt: sampling step.
        theta: window length (LegT, FouT) or time scale (LagT); unused by LegS.
        method: ``"euler"``, ``"backward"``, ``"bilinear"``, or (time-invariant
            measures only) ``"zoh"``.

    Returns:
        ``(L, N)`` coefficients after each sample.

    Raises:
        ValueError: on a bad ``measure``, ``method``, ``N`` or shape of ``f``.

    References:
        Gu et al. HiPPO (NeurIPS 2020), Sections 3.3-3.4 and Appendix B.3.
    """
    check_choice("measure", measure, MEASURES)
    check_choice("method", method, LEGS_METHODS if measure == "legs" else LEGS_METHODS + ("zoh",))
    f = jnp.asarray(f)
    if not jnp.issubdtype(f.dtype, jnp.floating):
        f = f.astype(jnp.float32)
    check_ndim("f", f.shape, 1, "(L,)")
    A, B = (jnp.asarray(m, f.dtype) for m in hippo(measure, N))
    if measure == "legs":
        return _legs_scan(f, A, B, method)
    Ab, Bb = discretize(A / theta, B / theta, jnp.asarray(dt, f.dtype), method)
    return _lti_scan(f, Ab, Bb)
