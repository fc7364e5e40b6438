"""Discretization against scipy: ZOH vs scipy.linalg.expm, GBT vs scipy.signal.cont2discrete."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.signal
from hypothesis import given
from hypothesis import strategies as st

from jaxlab.ssm import discretize, discretize_diag, hippo

N = 5
_discretize = jax.jit(discretize, static_argnames="method")


def _system(seed):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(N, N)) / np.sqrt(N) - 0.5 * np.eye(N)
    return A, rng.normal(size=N)


@given(seed=st.integers(0, 2**16), dt=st.floats(1e-3, 0.5))
def test_zoh_matches_expm(seed, dt):
    A, B = _system(seed)
    Ab, Bb = _discretize(jnp.asarray(A, jnp.float32), jnp.asarray(B, jnp.float32), dt, method="zoh")
    want_A = scipy.linalg.expm(dt * A)
    want_B = np.linalg.solve(A, (want_A - np.eye(N)) @ B)  # ∫₀^Δ e^{sA} ds B for invertible A
    np.testing.assert_allclose(Ab, want_A, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(Bb, want_B, rtol=1e-4, atol=1e-5 * dt)


@pytest.mark.parametrize("method,scipy_method", [("bilinear", "bilinear"), ("euler", "euler"), ("backward", "backward_diff"), ("zoh", "zoh")])
@given(seed=st.integers(0, 2**16), dt=st.floats(1e-3, 0.5))
def test_matches_cont2discrete(method, scipy_method, seed, dt):
    A, B = _system(seed)
    C, D = np.ones((1, N)), np.zeros((1, 1))
    Ad, Bd, *_ = scipy.signal.cont2discrete((A, B[:, None], C, D), dt, method=scipy_method)
    Ab, Bb = _discretize(jnp.asarray(A, jnp.float32), jnp.asarray(B[:, None], jnp.float32), dt, method=method)
    np.testing.assert_allclose(Ab, Ad, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(Bb, Bd, rtol=1e-4, atol=1e-5 * dt)


def test_zoh_singular_A_and_hippo_shapes():
    A, B = hippo("legs", N)
    Ab, Bb = _discretize(jnp.asarray(A, jnp.float32), jnp.asarray(B, jnp.float32), 1e-2, method="zoh")
    assert Ab.shape == (N, N) and Bb.shape == (N,)
    # integrator (A = 0): B̄ = Δ B exactly, which a formula with A⁻¹ could not give
    Ab, Bb = _discretize(jnp.zeros((N, N)), jnp.ones(N), 0.25, method="zoh")
    np.testing.assert_allclose(Ab, np.eye(N))
    np.testing.assert_allclose(Bb, 0.25 * np.ones(N))


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_diag_matches_dense(method):
    rng = np.random.default_rng(0)
    lam = -rng.uniform(0.1, 1.0, 4) + 1j * rng.normal(size=4) * 3
    b = rng.normal(size=4) + 1j * rng.normal(size=4)
    dt = 0.05
    Ab, Bb = discretize_diag(lam, b, dt, method)
    if method == "zoh":
        Ad = scipy.linalg.expm(dt * np.diag(lam))
        Bd = np.linalg.solve(np.diag(lam), (Ad - np.eye(4)) @ b)
    else:
        left = np.eye(4) - dt / 2 * np.diag(lam)
        Ad = np.linalg.solve(left, np.eye(4) + dt / 2 * np.diag(lam))
        Bd = np.linalg.solve(left, dt * b)
    np.testing.assert_allclose(Ab, np.diag(Ad), rtol=1e-5)
    np.testing.assert_allclose(Bb, Bd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("jit", [False, True])
def test_jit_and_grad(jit):
    A, B = _system(1)
    fn = lambda dt: discretize(A.astype(np.float32), B.astype(np.float32), dt, "bilinear")[1].sum()
    g = (jax.jit(jax.grad(fn)) if jit else jax.grad(fn))(jnp.float32(0.1))
    eps = 1e-3
    np.testing.assert_allclose(g, (fn(0.1 + eps) - fn(0.1 - eps)) / (2 * eps), rtol=2e-2)


def test_errors():
    A, B = _system(0)
    with pytest.raises(ValueError, match="method"):
        discretize(A, B, 0.1, "rk4")
    with pytest.raises(ValueError, match="A"):
        discretize(A[:, :3], B, 0.1)
    with pytest.raises(ValueError, match="B"):
        discretize(A, B[:3], 0.1)
    with pytest.raises(ValueError, match="dt"):
        discretize(A, B, jnp.ones(2))
    with pytest.raises(ValueError, match="method"):
        discretize_diag(A[0], B, 0.1, "euler")
