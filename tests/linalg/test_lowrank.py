"""Low-rank approximation: oracles are NumPy's float64 SVD/pinv, closed forms and scipy's ID."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg.interpolative as sli
from hypothesis import given
from hypothesis import strategies as st

from jaxlab.linalg import cr_approx, cr_probabilities, interpolative, pinv, pivoted_qr, randomized_svd, truncated_svd


def decaying(m, n, seed, rate=4.0):
    """A float32 matrix with singular values exp(-i / rate) and random singular vectors."""
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.standard_normal((m, min(m, n))))[0]
    v = np.linalg.qr(rng.standard_normal((n, min(m, n))))[0]
    return ((u * np.exp(-np.arange(min(m, n)) / rate)) @ v.T).astype(np.float32)


def tail(x, k):
    s = np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)
    return np.sqrt(np.sum(s[k:] ** 2))


def recon(u, s, vh):
    return np.asarray(u, np.float64) * np.asarray(s, np.float64)[..., None, :] @ np.asarray(vh, np.float64)


# --------------------------------------------------------------------------- truncated / randomized SVD


@given(seed=st.integers(0, 2**16), k=st.integers(1, 11))
def test_truncated_svd_error_is_the_eckart_young_tail(seed, k):
    x = np.random.default_rng(seed).standard_normal((12, 9)).astype(np.float32) if k > 9 else decaying(12, 9, seed)
    k = min(k, 9)
    u, s, vh = truncated_svd(x, k)
    chex.assert_shape((u, s, vh), [(12, k), (k,), (k, 9)])
    err = np.linalg.norm(x - recon(u, s, vh))
    np.testing.assert_allclose(err, tail(x, k), rtol=1e-4, atol=1e-5)


def test_truncated_svd_is_batched_and_jittable():
    x = np.stack([decaying(10, 7, 0), decaying(10, 7, 1)])
    u, s, vh = jax.jit(truncated_svd, static_argnums=1)(x, 3)
    chex.assert_shape((u, s, vh), [(2, 10, 3), (2, 3), (2, 3, 7)])
    for i in range(2):
        np.testing.assert_allclose(np.linalg.norm(x[i] - recon(u[i], s[i], vh[i])), tail(x[i], 3), rtol=1e-4)


@pytest.mark.parametrize("shape", [(40, 30), (30, 50)])
def test_randomized_svd_is_near_the_optimum_with_power_iterations(shape):
    x = decaying(*shape, seed=3, rate=3.0)
    for k in (2, 6):
        u, s, vh = randomized_svd(x, k, key=jax.random.key(k))
        err = np.linalg.norm(x - recon(u, s, vh))
        assert tail(x, k) <= err * (1 + 1e-5) <= 1.01 * tail(x, k) + 1e-5
        np.testing.assert_allclose(np.asarray(u).T @ np.asarray(u), np.eye(k), atol=1e-5)
        np.testing.assert_allclose(np.asarray(s), np.linalg.svd(x, compute_uv=False)[:k], rtol=1e-3)


@pytest.mark.slow
def test_randomized_svd_power_steps_help_on_a_flat_spectrum():
    flat = decaying(60, 60, seed=1, rate=60.0)  # slow decay: the plain sketch is visibly sub-optimal
    errs = [np.linalg.norm(flat - recon(*randomized_svd(flat, 5, key=jax.random.key(0), oversample=2,
                                                        power_iters=q))) for q in (0, 3)]  # fmt: skip
    assert errs[1] < errs[0] and errs[1] <= 1.02 * tail(flat, 5)


def test_randomized_svd_is_exact_on_a_low_rank_matrix():
    rng = np.random.default_rng(0)
    low = (rng.standard_normal((30, 4)) @ rng.standard_normal((4, 20))).astype(np.float32)
    u, s, vh = randomized_svd(low, 4, key=jax.random.key(1), power_iters=0)
    np.testing.assert_allclose(recon(u, s, vh), low, atol=1e-4 * np.abs(low).max())


# --------------------------------------------------------------------------- pinv


@pytest.mark.parametrize("rank", [None, 1, 3])
@pytest.mark.parametrize("shape", [(7, 5), (5, 9)])
def test_pinv_matches_numpy_including_rank_deficient(shape, rank):
    rng = np.random.default_rng(sum(shape) + (rank or 0))
    if rank is None:
        x = rng.standard_normal(shape)
    else:
        x = rng.standard_normal((shape[0], rank)) @ rng.standard_normal((rank, shape[1]))
    x = x.astype(np.float32)
    expected = np.linalg.pinv(x.astype(np.float64), rcond=1e-5)
    got = np.asarray(pinv(x), np.float64)
    np.testing.assert_allclose(got, expected, atol=2e-4 * np.abs(expected).max())
    # Penrose conditions in float64
    np.testing.assert_allclose(x @ got @ x, x, atol=1e-4 * np.abs(x).max())
    np.testing.assert_allclose(got @ x @ got, got, atol=1e-4 * np.abs(got).max())


def test_pinv_of_zero_is_zero_and_batched_under_jit():
    assert np.all(np.asarray(pinv(jnp.zeros((3, 4)))) == 0)
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 6)).astype(np.float32)
    got = jax.jit(pinv)(x)
    chex.assert_shape(got, (2, 3, 6, 4))
    np.testing.assert_allclose(got, np.linalg.pinv(x.astype(np.float64)), atol=1e-4)


# --------------------------------------------------------------------------- CR sampling


def test_cr_approx_is_unbiased_within_the_sampling_standard_error():
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((6, 20)) * np.linspace(0.2, 2.0, 20)).astype(np.float32)
    b = rng.standard_normal((20, 5)).astype(np.float32)
    c, num = 4, 20000
    keys = jax.random.split(jax.random.key(0), num)
    prods = jax.jit(jax.vmap(lambda k: jnp.matmul(*cr_approx(a, b, c, key=k))))(keys)  # (num, 6, 5)
    mean = np.asarray(prods, np.float64).mean(0)
    # Var of one draw's entry (j, l): (sum_i a_ji^2 b_il^2 / p_i - (ab)_jl^2) / c (closed form).
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    p = np.linalg.norm(a64, axis=0) * np.linalg.norm(b64, axis=1)
    p /= p.sum()
    np.testing.assert_allclose(np.asarray(cr_probabilities(a, b)), p, rtol=1e-5)
    second = np.einsum("ji,il,i->jl", a64**2, b64**2, 1 / p)
    var = (second - (a64 @ b64) ** 2) / c
    z = (mean - a64 @ b64) / np.sqrt(var / num)
    assert np.abs(z).max() < 4.5, np.abs(z).max()  # 30 entries: P(max |z| > 4.5) < 2e-4
    # expected squared Frobenius error (DKM Lemma 4) from the same draws
    sq = np.sum((np.asarray(prods, np.float64) - a64 @ b64) ** 2, axis=(1, 2))
    expected = (np.sum(np.linalg.norm(a64, axis=0) * np.linalg.norm(b64, axis=1)) ** 2
                - np.sum((a64 @ b64) ** 2)) / c  # fmt: skip
    assert abs(sq.mean() - expected) < 5 * sq.std() / np.sqrt(num)


def test_cr_approx_shapes_and_exact_when_one_term_carries_the_product():
    a = np.zeros((3, 5), np.float32)
    a[:, 2] = [1, 2, 3]
    b = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    c, r = cr_approx(a, b, 7, key=jax.random.key(3))
    chex.assert_shape((c, r), [(3, 7), (7, 4)])
    np.testing.assert_allclose(np.asarray(c @ r), a @ b, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- interpolative decomposition


def scipy_id_error(x, k):
    x64 = np.asfortranarray(x.astype(np.float64))
    idx, proj = sli.interp_decomp(x64, k, rand=False)
    return np.linalg.norm(x64 - sli.reconstruct_matrix_from_id(x64[:, idx[:k]], idx, proj))


def kahan(n, theta=1.2):
    s, c = np.sin(theta), np.cos(theta)
    r = np.triu(-c * np.ones((n, n)), 1) + np.eye(n)
    return (np.diag(s ** np.arange(n)) @ r).astype(np.float32)


@pytest.mark.parametrize("name, ranks", [("decaying", (3, 8)), ("tall_decaying", (5,)), ("gaussian", (8,)),
                                         ("kahan", (8,))])  # fmt: skip
def test_interpolative_error_matches_scipy_and_interpolates_its_columns(name, ranks):
    x = {
        "decaying": lambda: decaying(30, 40, seed=0),
        "tall_decaying": lambda: decaying(50, 20, seed=1, rate=2.0),
        "gaussian": lambda: np.random.default_rng(2).standard_normal((25, 25)).astype(np.float32),
        "kahan": lambda: kahan(20),
    }[name]()
    for k in ranks:
        idx, proj = jax.jit(interpolative, static_argnums=1)(x, k)
        idx, proj = np.asarray(idx), np.asarray(proj, np.float64)
        assert len(set(idx.tolist())) == k
        np.testing.assert_array_equal(proj[:, idx], np.eye(k))
        err = np.linalg.norm(x - x[:, idx].astype(np.float64) @ proj)
        ref = scipy_id_error(x, k)
        assert err >= tail(x, k) * (1 - 1e-4)  # Eckart–Young lower bound
        assert err <= 1.05 * ref + 1e-5 * np.linalg.norm(x), (err, ref)


def test_pivoted_qr_is_orthonormal_and_triangular_on_its_pivots():
    x = decaying(20, 15, seed=4)
    idx, q, r = pivoted_qr(x, 6)
    np.testing.assert_allclose(np.asarray(q).T @ np.asarray(q), np.eye(6), atol=1e-5)
    r11 = np.asarray(r)[:, np.asarray(idx)]
    np.testing.assert_allclose(np.tril(r11, -1), 0, atol=1e-5)
    assert np.all(np.diff(np.abs(np.diag(r11))) <= 1e-6)  # pivoted: non-increasing |R_jj|


def test_interpolative_of_rank_deficient_matrix_is_exact_and_finite():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((12, 2)) @ rng.standard_normal((2, 10))).astype(np.float32)
    idx, proj = interpolative(x, 4)  # rank 2 < 4: later pivots see a zero residual
    assert np.all(np.isfinite(np.asarray(proj)))
    np.testing.assert_allclose(x[:, np.asarray(idx)] @ np.asarray(proj), x, atol=1e-4 * np.abs(x).max())


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: truncated_svd(np.ones(3, np.float32), 1), ValueError, r"x must have shape \(\.\.\., m, n\)"),
        (lambda: truncated_svd(np.ones((3, 4), np.float32), 4), ValueError, r"rank must be .* = 3\], got 4"),
        (lambda: truncated_svd(np.ones((3, 4), np.int32), 1), TypeError, "floating-point"),
        (lambda: randomized_svd(np.ones((3, 4)), 2, key=0), TypeError, "typed PRNG key"),
        (lambda: randomized_svd(np.ones((3, 4)), 2, key=jax.random.key(0), power_iters=-1), ValueError, "power_iters"),
        (lambda: cr_approx(np.ones((3, 4)), np.ones((5, 2)), 2, key=jax.random.key(0)), ValueError, "share k"),
        (lambda: cr_approx(np.ones((3, 4)), np.ones((4, 2)), 0, key=jax.random.key(0)), ValueError, "rank"),
        (lambda: interpolative(np.ones((2, 3, 4)), 2), ValueError, r"shape \(m, n\)"),
        (lambda: pinv(np.ones((3, 4)), rtol=-1.0), ValueError, "rtol"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
