"""HiPPO matrices: closed forms and the projection ODE they encode (quadrature oracle)."""

import numpy as np
import pytest
from numpy.polynomial.laguerre import laggauss
from numpy.polynomial.legendre import leggauss
from scipy.special import eval_laguerre, eval_legendre

from jaxlab.ssm import hippo


def test_legs_closed_form():
    N = 7
    A, B = hippo("legs", N)
    for n in range(N):
        assert B[n] == pytest.approx(np.sqrt(2 * n + 1))
        for k in range(N):
            want = -np.sqrt(2 * n + 1) * np.sqrt(2 * k + 1) if n > k else (-(n + 1.0) if n == k else 0.0)
            assert A[n, k] == pytest.approx(want)


def test_legt_lagt_closed_forms():
    N = 6
    A, B = hippo("legt", N)
    for n in range(N):
        for k in range(N):
            sign = 1.0 if k < n else (-1.0) ** (n - k)
            assert A[n, k] == pytest.approx(-np.sqrt((2 * n + 1) * (2 * k + 1)) * sign)
    np.testing.assert_allclose(B, np.sqrt(2 * np.arange(N) + 1))
    A, B = hippo("lagt", N)
    np.testing.assert_array_equal(A, -np.tril(np.ones((N, N))))
    np.testing.assert_array_equal(B, np.ones(N))


def test_fout_structure():
    A, B = hippo("fout", 7)
    b = B / 2
    np.testing.assert_allclose(b, [1, np.sqrt(2), 0, np.sqrt(2), 0, np.sqrt(2), 0])
    skew = A + 2 * np.outer(b, b)
    np.testing.assert_allclose(skew, -skew.T)  # rotation generator minus a rank-1 term
    assert skew[1, 2] == pytest.approx(2 * np.pi) and skew[5, 6] == pytest.approx(6 * np.pi)


# The projection ODE, checked with exact quadratures: c(t) and dc/dt computed by
# differentiating under the integral, against (1/t or 1/θ)(A c + B f(t)).
def _f(s):
    return 0.7 - 0.4 * s + 0.3 * s**2 - 0.05 * s**3


def _df(s):
    return -0.4 + 0.6 * s - 0.15 * s**2


def _legendre_coeffs(N, fn, x_of, w, x):
    g = np.stack([np.sqrt(2 * n + 1) * eval_legendre(n, x) for n in range(N)])  # (N, Q)
    return 0.5 * g @ (w * fn(x_of(x)))


@pytest.mark.parametrize("N", [4, 9])
def test_legs_ode_exact(N):
    x, w = leggauss(60)
    t = 1.7
    c = _legendre_coeffs(N, _f, lambda x: t * (x + 1) / 2, w, x)
    dc = _legendre_coeffs(N, lambda s: _df(s) * s / t, lambda x: t * (x + 1) / 2, w, x)
    A, B = hippo("legs", N)
    np.testing.assert_allclose(dc, (A @ c + B * _f(t)) / t, atol=1e-12)


@pytest.mark.parametrize("N", [4, 9])  # a cubic is represented exactly once N >= 4
def test_legt_ode_exact_for_polynomials(N):
    x, w = leggauss(60)
    t, theta = 2.3, 0.8
    s_of = lambda x: t + theta * (x - 1) / 2
    c = _legendre_coeffs(N, _f, s_of, w, x)
    dc = _legendre_coeffs(N, _df, s_of, w, x)
    A, B = hippo("legt", N)
    np.testing.assert_allclose(dc, (A @ c + B * _f(t)) / theta, atol=1e-12)


@pytest.mark.parametrize("N", [3, 8])
def test_lagt_ode_exact(N):
    x, w = laggauss(60)
    t, theta = 1.2, 0.6
    g = np.stack([eval_laguerre(n, x) for n in range(N)])
    c = g @ (w * _f(t - theta * x))
    dc = g @ (w * _df(t - theta * x))
    A, B = hippo("lagt", N)
    np.testing.assert_allclose(dc, (A @ c + B * _f(t)) / theta, atol=1e-10)


@pytest.mark.parametrize("N", [7, 8])
def test_fout_ode_exact_for_periodic_trig_polynomials(N):
    theta, t = 1.3, 0.45
    freq = np.array([1.0, 2.0, 3.0])  # all below N/2

    def f(s):
        ph = 2 * np.pi * freq[:, None] * np.atleast_1d(s) / theta
        return (0.3 + np.array([0.5, -0.2, 0.1]) @ np.cos(ph) + np.array([0.4, 0.3, -0.6]) @ np.sin(ph)).squeeze()

    def df(s):
        ph = 2 * np.pi * freq[:, None] * s / theta
        k = 2 * np.pi * freq[:, None] / theta
        return np.array([0.5, -0.2, 0.1]) @ (-k * np.sin(ph)) + np.array([0.4, 0.3, -0.6]) @ (k * np.cos(ph))

    u = -1 + (np.arange(400) + 0.5) / 400  # midpoint rule on the window: exact for these trig polynomials
    kk = (np.arange(N) + 1) // 2
    phase = 2 * np.pi * kk[:, None] * u
    g = np.sqrt(2) * np.where((np.arange(N) % 2 == 1)[:, None], np.cos(phase), np.sin(phase))
    g[0] = 1.0
    c = g @ f(t + theta * u) / len(u)
    dc = g @ df(t + theta * u) / len(u)
    A, B = hippo("fout", N)
    np.testing.assert_allclose(dc, (A @ c + B * f(t)) / theta, atol=1e-10)


def test_bad_arguments():
    with pytest.raises(ValueError, match="measure"):
        hippo("legx", 4)
    with pytest.raises(ValueError, match="N"):
        hippo("legs", 0)
