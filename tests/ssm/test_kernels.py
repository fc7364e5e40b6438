"""SSM kernels: S4 (Cauchy + Woodbury), S4D (Vandermonde), naive, FFT convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxlab.ssm import (
    S4DParams,
    S4Params,
    cauchy,
    causal_conv,
    dplr_legs,
    s4_kernel,
    s4_recurrence,
    s4d_init,
    s4d_kernel,
    ssm_kernel_naive,
    vandermonde_kernel,
)

H, M = 2, 4
_s4_kernel = jax.jit(s4_kernel, static_argnums=1)
_s4d_kernel = jax.jit(s4d_kernel, static_argnums=1, static_argnames="method")
_vandermonde = jax.jit(vandermonde_kernel, static_argnums=2)


def _complex(rng, shape, scale=1.0):
    return scale * (rng.normal(size=shape) + 1j * rng.normal(size=shape))


def _random_s4(seed):
    """A random stable DPLR system (Re λ < 0), in float64 numpy."""
    rng = np.random.default_rng(seed)
    lam = -rng.uniform(0.1, 1.0, (H, M)) + 1j * rng.uniform(0, 10, (H, M))
    p, b, c = (_complex(rng, (H, M), 0.5) for _ in range(3))
    step = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), H))
    return lam, p, b, c, step


def _oracle_s4(lam, p, b, ct, step, L):
    """float64: dense full system, bilinear, C̄ = C̃(I - Ā^L)⁻¹, K_ℓ = Re C̄ Ā^ℓ B̄ by a loop."""
    out = []
    for h in range(H):
        f = lambda x, h=h: np.concatenate([x[h], x[h].conj()])
        A = np.diag(f(lam)) - np.outer(f(p), f(p).conj())
        left = np.eye(2 * M) - step[h] / 2 * A
        Ab = np.linalg.solve(left, np.eye(2 * M) + step[h] / 2 * A)
        Bb = np.linalg.solve(left, step[h] * f(b))
        Cb = np.linalg.solve((np.eye(2 * M) - np.linalg.matrix_power(Ab, L)).T, f(ct))
        x, k = Bb, []
        for _ in range(L):
            k.append((Cb @ x).real)
            x = Ab @ x
        out.append(k)
    return np.array(out)


def _params(cls, *arrays):
    return cls(*(jnp.asarray(a, jnp.complex64) for a in arrays[:-1]), jnp.asarray(arrays[-1], jnp.float32))


@pytest.mark.parametrize("L", [16, 63, 256])
@given(seed=st.integers(0, 2**16))
def test_s4_kernel_matches_naive(L, seed):
    lam, p, b, c, step = _random_s4(seed)
    want = _oracle_s4(lam, p, b, c, step, L)
    got = _s4_kernel(_params(S4Params, lam, p, b, c, step), L)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_s4_kernel_legs_init_matches_recurrence():
    form = dplr_legs(2 * M)
    rng = np.random.default_rng(0)
    tile = lambda x: np.tile(x, (H, 1))
    params = _params(S4Params, tile(form.lambda_), tile(form.p), tile(form.b), _complex(rng, (H, M)), [0.01, 0.1])
    L = 64
    Ab, Bb, Cb = jax.jit(s4_recurrence, static_argnums=1)(params, L)
    naive = jax.vmap(lambda a, b, c: ssm_kernel_naive(a, b, c, L).real)(Ab, Bb, Cb)
    k = _s4_kernel(params, L)
    np.testing.assert_allclose(k, naive, rtol=1e-4, atol=1e-4 * float(jnp.abs(naive).max()))


def test_ssm_kernel_naive_definition():
    rng = np.random.default_rng(1)
    Ab, Bb, Cb = rng.normal(size=(3, 3)) / 3, rng.normal(size=3), rng.normal(size=3)
    want = [Cb @ np.linalg.matrix_power(Ab, ell) @ Bb for ell in range(10)]
    np.testing.assert_allclose(ssm_kernel_naive(Ab, Bb, Cb, 10), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="Bb"):
        ssm_kernel_naive(Ab, Bb[:2], Cb, 10)


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
@pytest.mark.parametrize("init", ["lin", "inv", "legs", "real"])
def test_s4d_kernel_matches_naive(init, method):
    lam, b = s4d_init(init, 2 * M)
    rng = np.random.default_rng(2)
    c = _complex(rng, (H, M))
    params = _params(S4DParams, np.tile(lam, (H, 1)), np.tile(b, (H, 1)), c, [0.01, 0.1])
    L = 100
    k = _s4d_kernel(params, L, method=method)
    for h in range(H):
        step = [0.01, 0.1][h]
        if method == "zoh":
            Ab = np.exp(step * lam)
            Bb = (Ab - 1) / lam * b
        else:
            Ab = (1 + step * lam / 2) / (1 - step * lam / 2)
            Bb = step * b / (1 - step * lam / 2)
        full = lambda x: np.concatenate([x, x.conj()])
        want = ssm_kernel_naive(np.diag(full(Ab)), full(Bb), full(c[h]), L).real
        np.testing.assert_allclose(k[h], want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))


@given(L=st.sampled_from([1, 2, 7, 64, 65]), seed=st.integers(0, 100))
def test_vandermonde_factorization(L, seed):
    rng = np.random.default_rng(seed)
    w = _complex(rng, (3,))
    log_a = -rng.uniform(0, 0.2, 3) + 1j * rng.uniform(-3, 3, 3)
    want = 2 * (w[:, None] * np.exp(log_a[:, None] * np.arange(L))).sum(0).real
    np.testing.assert_allclose(_vandermonde(w, log_a, L), want, rtol=1e-4, atol=1e-5)


def test_cauchy_definition():
    rng = np.random.default_rng(3)
    v, lam = _complex(rng, (5, 2)), _complex(rng, (5,))
    alpha, beta = _complex(rng, (4,)) + 3, _complex(rng, (4,))
    want = np.zeros((4, 2), complex)
    for f in range(4):
        for m in range(5):
            want[f] += v[m] / (alpha[f] - beta[f] * lam[m])
    np.testing.assert_allclose(cauchy(v, alpha, beta, lam), want, rtol=1e-5)


@given(L=st.sampled_from([1, 5, 33]), seed=st.integers(0, 100))
def test_causal_conv_matches_direct(L, seed):
    rng = np.random.default_rng(seed)
    u, k = rng.normal(size=(2, L, 3)), rng.normal(size=(3, L + 2))
    want = np.stack([[np.convolve(u[b, :, h], k[h, :L])[:L] for h in range(3)] for b in range(2)]).transpose(0, 2, 1)
    np.testing.assert_allclose(causal_conv(jnp.asarray(u, jnp.float32), k), want, rtol=1e-4, atol=1e-4)


def test_kernel_errors():
    lam, p, b, c, step = _random_s4(0)
    with pytest.raises(ValueError, match="params.c"):
        s4_kernel(_params(S4Params, lam, p, b, c[:, :2], step), 8)
    with pytest.raises(ValueError, match="params.step"):
        s4d_kernel(_params(S4DParams, lam, b, c, step[:1]), 8)
    with pytest.raises(ValueError, match="k"):
        causal_conv(jnp.ones((2, 8, 3)), jnp.ones((3, 4)))
