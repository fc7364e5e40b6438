"""Online HiPPO projection and history reconstruction."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.polynomial.legendre import leggauss
from scipy.special import eval_laguerre, eval_legendre

from jaxlab.ssm import (
    bandlimited_noise,
    hippo_basis,
    hippo_project,
    reconstruct,
    reconstruct_history,
    reconstruction_error,
)

DT = 1e-3
T = 3.0


@pytest.fixture(scope="module")
def signal():
    return bandlimited_noise(jax.random.key(0), int(T / DT), dt=DT, freq=3.0)


def test_bandlimited_noise(signal):
    assert signal.shape == (3000,)
    np.testing.assert_allclose(jnp.sqrt(jnp.mean(signal**2)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.mean(signal), 0.0, atol=1e-5)
    spectrum = np.abs(np.fft.rfft(np.asarray(signal, np.float64)))
    freqs = np.fft.rfftfreq(3000, DT)
    assert spectrum[freqs > 3.0 + 1e-9].max() < 1e-3 * spectrum.max()
    with pytest.raises(ValueError, match="freq"):
        bandlimited_noise(jax.random.key(0), 100, dt=DT, freq=1e4)


def test_basis_matches_scipy():
    s = jnp.linspace(0.1, 2.0, 7)
    t, theta, N = 2.0, 1.5, 6
    x = np.asarray(2 * s / t - 1, np.float64)
    want = np.stack([np.sqrt(2 * n + 1) * eval_legendre(n, x) for n in range(N)], -1)
    np.testing.assert_allclose(hippo_basis("legs", N, s, t=t), want, rtol=1e-4, atol=1e-4)
    x = np.asarray((t - s) / theta, np.float64)
    want = np.stack([eval_laguerre(n, x) for n in range(N)], -1)
    np.testing.assert_allclose(hippo_basis("lagt", N, s, t=t, theta=theta), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("measure", ["legs", "legt", "fout"])
def test_basis_orthonormal(measure):
    # orthonormal in L2 of the (uniform) measure on its window
    x, w = leggauss(64)
    t, theta = 2.0, 2.0
    s = jnp.asarray(t + theta * (x - 1) / 2, jnp.float32) if measure != "legs" else jnp.asarray(t * (x + 1) / 2)
    G = np.asarray(hippo_basis(measure, 8, s, t=t, theta=theta), np.float64)
    gram = G.T @ (w[:, None] / 2 * G)
    np.testing.assert_allclose(gram, np.eye(8), atol=2e-4)


def test_legs_constant_signal_is_exact():
    coeffs = hippo_project(jnp.full(200, 0.7), "legs", 8, dt=DT)
    np.testing.assert_allclose(coeffs[-1], 0.7 * np.eye(8)[0], atol=1e-5)
    np.testing.assert_allclose(reconstruct(coeffs[-1], "legs", jnp.linspace(0, 0.2, 5), t=0.2), 0.7, rtol=1e-5)


def test_legs_recurrence_is_timescale_invariant():
    f = jnp.sin(jnp.linspace(0, 6, 300))
    np.testing.assert_allclose(hippo_project(f, "legs", 8, dt=1e-3), hippo_project(f, "legs", 8, dt=0.5), rtol=1e-6)


def test_legs_reconstruction_error_decreases_with_N(signal):
    errors = [float(reconstruction_error(signal, "legs", N, dt=DT)) for N in (8, 16, 32, 64)]
    assert all(a > b for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] < 0.05  # the hippo-reconstruct target: LegS, N = 64, 3 Hz, T = 3


def test_legt_reconstructs_its_window(signal):
    assert float(reconstruction_error(signal, "legt", 32, dt=DT)) < 0.1


@pytest.mark.parametrize("measure", ["lagt", "fout"])
def test_shapes_and_finite(signal, measure):
    coeffs = hippo_project(signal[:500], measure, 8, dt=DT, theta=0.5, method="zoh")
    assert coeffs.shape == (500, 8) and bool(jnp.all(jnp.isfinite(coeffs)))
    rec = reconstruct_history(signal[:500], measure, 8, dt=DT, theta=0.5)
    assert rec.shape == (500,)


def test_errors():
    with pytest.raises(ValueError, match="method"):
        hippo_project(jnp.ones(4), "legs", 4, dt=DT, method="zoh")
    with pytest.raises(ValueError, match="f"):
        hippo_project(jnp.ones((4, 2)), "legt", 4, dt=DT)
    with pytest.raises(ValueError, match="measure"):
        hippo_basis("cheb", 4, jnp.ones(3), t=1.0)
