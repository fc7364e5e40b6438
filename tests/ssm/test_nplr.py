"""NPLR / DPLR forms of HiPPO-LegS."""

import numpy as np
import pytest

from jaxlab.ssm import dplr_legs, hippo, legs_low_rank, nplr_legs


@pytest.mark.parametrize("N", [1, 5, 8, 64])
def test_nplr_reconstructs_legs(N):
    form = nplr_legs(N)
    A, B = hippo("legs", N)
    V = form.v
    np.testing.assert_allclose(V @ V.conj().T, np.eye(N), atol=1e-12)
    recon = V @ (np.diag(form.lambda_) - np.outer(form.p, form.p.conj())) @ V.conj().T
    np.testing.assert_allclose(recon, A, atol=1e-10 * N)
    np.testing.assert_allclose(V @ form.b, B, atol=1e-10 * N)
    np.testing.assert_allclose(form.lambda_.real, -0.5, atol=1e-10)
    # the normal part A + PPᵀ commutes with its adjoint
    normal = A + np.outer(legs_low_rank(N), legs_low_rank(N))
    np.testing.assert_allclose(normal @ normal.T, normal.T @ normal, atol=1e-9 * N**2)


@pytest.mark.parametrize("N", [2, 16, 64])
def test_dplr_half_form_reconstructs_legs(N):
    half = dplr_legs(N)
    assert half.lambda_.shape == (N // 2,) and half.v.shape == (N, N // 2)
    assert np.all(half.lambda_.imag > 0) and np.all(np.diff(half.lambda_.imag) > 0)
    full = lambda x: np.concatenate([x, x.conj()], axis=-1)
    V, lam, p, b = full(half.v), full(half.lambda_), full(half.p), full(half.b)
    A, B = hippo("legs", N)
    np.testing.assert_allclose(V @ V.conj().T, np.eye(N), atol=1e-12)
    np.testing.assert_allclose(V @ (np.diag(lam) - np.outer(p, p.conj())) @ V.conj().T, A, atol=1e-10 * N)
    np.testing.assert_allclose(V @ b, B, atol=1e-10 * N)


def test_dplr_needs_even_N():
    with pytest.raises(ValueError, match="N"):
        dplr_legs(7)
