"""power_iteration and the PSD eigenvalue bound against SVD / eigh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxlab.linalg import power_iteration, psd_eigenvalue_lower_bound


def gapped(shape, seed=0):
    """Matrices with singular values 3, 1, 0.5, ... (a clear gap), float32."""
    rng = np.random.default_rng(seed)
    *batch, m, n = shape
    k = min(m, n)
    sig = np.concatenate([[3.0], np.linspace(1.0, 0.1, k - 1)])
    out = np.empty(shape)
    for idx in np.ndindex(*batch):
        u, _ = np.linalg.qr(rng.standard_normal((m, k)))
        v, _ = np.linalg.qr(rng.standard_normal((n, k)))
        out[idx] = (u * sig) @ v.T
    return jnp.asarray(out, jnp.float32)


@pytest.mark.parametrize("shape", [(12, 7), (7, 12), (3, 9, 9)])
def test_matches_svd(shape):
    x = gapped(shape)
    sigma, u, v = power_iteration(x, steps=30)
    uu, ss, vvt = np.linalg.svd(np.asarray(x, np.float64))
    np.testing.assert_allclose(sigma, ss[..., 0], rtol=1e-5)
    np.testing.assert_allclose(np.abs(np.sum(u * uu[..., :, 0], -1)), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.abs(np.sum(v * vvt[..., 0, :], -1)), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(u, axis=-1), 1.0, atol=1e-6)


@given(seed=st.integers(0, 2**16), steps=st.integers(1, 4))
def test_sigma_is_a_lower_bound(seed, steps):
    x = jax.random.normal(jax.random.key(seed), (10, 14))
    sigma, _, _ = power_iteration(x, steps=steps)
    top = np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)[0]
    assert sigma <= top * (1 + 1e-5)
    assert sigma >= top / 2  # a random start is never that bad on a Gaussian matrix


def test_warm_start_converges_in_one_step():
    x = gapped((8, 6), seed=1)
    v1 = np.linalg.svd(np.asarray(x, np.float64))[2][0]
    sigma, _, v = power_iteration(x, steps=1, v0=jnp.asarray(v1, jnp.float32))
    np.testing.assert_allclose(sigma, 3.0, rtol=1e-5)
    np.testing.assert_allclose(np.abs(v @ v1), 1.0, atol=1e-5)


def test_traced_steps_under_jit():
    x = gapped((8, 6), seed=2)
    run = jax.jit(lambda x, k: power_iteration(x, steps=k)[0])
    np.testing.assert_allclose(run(x, jnp.asarray(20)), power_iteration(x, steps=20)[0], rtol=1e-6)


def test_zero_matrix_is_finite():
    sigma, u, v = power_iteration(jnp.zeros((4, 5)), steps=3)
    assert sigma == 0 and np.all(u == 0) and np.all(np.isfinite(v)) and np.isclose(np.linalg.norm(v), 1.0)


def test_psd_eigenvalue_lower_bound():
    x = jax.random.normal(jax.random.key(3), (2, 12, 30))
    g = x @ jnp.swapaxes(x, -1, -2)
    lam = np.linalg.eigvalsh(np.asarray(g, np.float64))[..., -1]
    few, many = psd_eigenvalue_lower_bound(g, steps=2), psd_eigenvalue_lower_bound(g, steps=60)
    assert np.all(few <= lam * (1 + 1e-5)) and np.all(many <= lam * (1 + 1e-5))
    np.testing.assert_allclose(many, lam, rtol=1e-3)


@pytest.mark.parametrize(
    ("x", "kwargs", "match"),
    [
        (jnp.ones(3), dict(steps=2), "shape"),
        (jnp.ones((3, 4)), dict(steps=0), "steps"),
        (jnp.ones((3, 4)), dict(steps=2, v0=jnp.ones(3)), "v0"),
    ],
)
def test_bad_input(x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        power_iteration(x, **kwargs)
