"""Test signals and the history-reconstruction error of HiPPO projections.

The pieces the ``hippo-reconstruct`` experiment is built from: a band-limited
white-noise generator and the relative L2 error of reconstructing the whole
history of such a signal from the final HiPPO coefficients.

References:
    Gu, Dao, Ermon, Rudra, Ré. "HiPPO: Recurrent Memory with Optimal Polynomial
    Projections." NeurIPS 2020 (Section 4.1 and Figure 3: reconstruction of
    band-limited white noise).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jaxlab._checks import check_choice, check_ndim, check_positive_int
from jaxlab.ssm.hippo import MEASURES
from jaxlab.ssm.online import hippo_project, reconstruct


@partial(jax.jit, static_argnames=("length", "dt", "freq", "dtype"))
def bandlimited_noise(key: Array, length: int, *, dt: float, freq: float, dtype=jnp.float32) -> Array:
    """Zero-mean white noise band-limited to ``(0, freq]`` Hz, with unit RMS.

    The spectrum is drawn as independent complex Gaussians on the FFT grid
    ``k / (length·dt)`` for ``0 < k / (length·dt) <= freq`` and zero elsewhere,
    then inverted; the signal is periodic with period ``length·dt``.

    Args:
        key: a typed PRNG key (``jax.random.key``).
        length: number of samples ``L``.
        dt: sampling step (seconds).
        freq: band limit (Hz); must lie below the Nyquist frequency
            ``1 / (2 dt)`` and at or above ``1 / (length·dt)``.
        dtype: float dtype of the result.

    Returns:
        ``(L,)`` signal with mean 0 and root-mean-square 1.

    Raises:
        ValueError: if ``length`` is not positive or ``freq`` selects no
            frequency or exceeds Nyquist.

    References:
        Gu et al. HiPPO (NeurIPS 2020), Section 4.1.
    """
    check_positive_int("length", length)
    period = length * dt
    n_freq = int(freq * period + 1e-9)  # frequencies k/period with 1 <= k <= n_freq
    if n_freq < 1 or freq >= 0.5 / dt:
        raise ValueError(f"freq: expected 1/(length·dt) = {1 / period:.4g} <= freq < Nyquist = {0.5 / dt:.4g}, received {freq}")
    k_re, k_im = jax.random.split(key)
    shape = (length // 2 + 1,)
    coef = jax.random.normal(k_re, shape) + 1j * jax.random.normal(k_im, shape)
    band = (jnp.arange(shape[0]) >= 1) & (jnp.arange(shape[0]) <= n_freq)
    x = jnp.fft.irfft(jnp.where(band, coef, 0.0), n=length)
    return (x / jnp.sqrt(jnp.mean(x**2))).astype(dtype)


def default_theta(measure: str, T: float) -> float:
    """Window / time scale used by :func:`reconstruct_history` when ``theta`` is ``None``.

    Args:
        measure: ``"legs"``, ``"legt"``, ``"lagt"`` or ``"fout"``.
        T: length of the history (seconds).

    Returns:
        ``T`` for LegT and FouT (a window over the whole history), ``T/4`` for
        LagT (its measure ``exp(-(t-s)/θ)`` must decay over the history yet
        still weigh its start), and ``1.0`` (unused) for LegS.

    References:
        Gu et al. HiPPO (NeurIPS 2020), Section 4.1 (hyperparameters of the
        translated measures).
    """
    return {"legs": 1.0, "legt": T, "fout": T, "lagt": T / 4}[measure]


@partial(jax.jit, static_argnames=("measure", "N", "dt", "theta", "method"))
def reconstruct_history(f: ArrayLike, measure: str, N: int, *, dt: float, theta: float | None = None, method: str = "bilinear") -> Array:
    """Project ``f`` online and reconstruct its whole history from the final coefficients.

    Args:
        f: samples ``(L,)`` with ``f[k] = f((k + 1)·dt)``.
        measure: ``"legs"``, ``"legt"``, ``"lagt"`` or ``"fout"``.
        N: number of HiPPO coefficients.
        dt: sampling step.
        theta: window / time scale; ``None`` uses :func:`default_theta`.
        method: discretization (see :func:`jaxlab.ssm.hippo_project`).

    Returns:
        ``(L,)`` reconstruction at the sample times from the coefficients at
        ``T = L·dt``.

    References:
        Gu et al. HiPPO (NeurIPS 2020), Figure 3.
    """
    check_choice("measure", measure, MEASURES)
    f = jnp.asarray(f)
    check_ndim("f", f.shape, 1, "(L,)")
    T = f.shape[0] * dt
    theta = default_theta(measure, T) if theta is None else theta
    coeffs = hippo_project(f, measure, N, dt=dt, theta=theta, method=method)
    times = dt * jnp.arange(1, f.shape[0] + 1, dtype=f.dtype)
    return reconstruct(coeffs[-1], measure, times, t=T, theta=theta)


@partial(jax.jit, static_argnames=("measure", "N", "dt", "theta", "method"))
def reconstruction_error(f: ArrayLike, measure: str, N: int, *, dt: float, theta: float | None = None, method: str = "bilinear") -> Array:
    """Relative L2 error ``‖f̂ − f‖ / ‖f‖`` of :func:`reconstruct_history`.

    The error is taken over the part of the history the measure is meant to
    remember: everything for LegS and LagT, the last ``θ`` for LegT and FouT.

    Args:
        f: samples ``(L,)``.
        measure, N, dt, theta, method: as in :func:`reconstruct_history`.

    Returns:
        Scalar relative L2 error.

    References:
        Gu et al. HiPPO (NeurIPS 2020), Section 4.1.
    """
    f = jnp.asarray(f)
    check_positive_int("N", N)
    T = f.shape[0] * dt
    theta = default_theta(measure, T) if theta is None else theta
    approx = reconstruct_history(f, measure, N, dt=dt, theta=theta, method=method)
    times = dt * jnp.arange(1, f.shape[0] + 1, dtype=f.dtype)
    windowed = measure in ("legt", "fout")
    mask = times >= T - theta - 1e-9 * T if windowed else jnp.ones_like(times, dtype=bool)
    err = jnp.where(mask, approx - f, 0.0)
    ref = jnp.where(mask, f, 0.0)
    return jnp.linalg.norm(err) / jnp.linalg.norm(ref)
