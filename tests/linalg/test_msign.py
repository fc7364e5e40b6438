"""msign against the SVD oracle: singular-value bands, shapes, invariances, errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxlab.linalg import (
    KELLER_COEFFS,
    POLAR_EXPRESS_BANDS,
    POLAR_EXPRESS_COEFFS,
    POWER_SAFETY,
    coefficient_table,
    msign,
    msign_svd,
)
from jaxlab.linalg.polar_coeffs import POLAR_EXPRESS_PAPER_COEFFS
from jaxlab.linalg.polar_design import compose_band

# one compilation per shape and configuration (eager mode would compile every primitive)
jm = jax.jit(msign, static_argnames=("steps", "coeffs", "dtype", "normalization", "method", "power_steps", "eps"))


def with_spectrum(shape, sigmas, seed=0):
    """(..., m, n) float32 matrices U diag(sigmas) V^T with Haar-random U, V (float64 build)."""
    rng = np.random.default_rng(seed)
    *batch, m, n = shape
    k = len(sigmas)
    out = np.empty((*batch, m, n))
    for idx in np.ndindex(*batch):
        u, _ = np.linalg.qr(rng.standard_normal((m, k)))
        v, _ = np.linalg.qr(rng.standard_normal((n, k)))
        out[idx] = (u * sigmas) @ v.T
    return jnp.asarray(out, jnp.float32)


def projected_singular_values(x, y):
    """u_i^T y v_i for the singular pairs of x (the exact image of sigma_i for msign), float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    return s, np.einsum("...ji,...jk,...ik->...i", u, y, vt)


@pytest.mark.parametrize(("shape", "steps"), [((24, 40), 3), ((24, 40), 5), ((40, 24), 5), ((32, 32), 5), ((3, 16, 28), 5)])
def test_polar_express_band(shape, steps):
    """Tall, wide, square and batched: every sigma in [1e-3, 1] sigma_1 lands in the table's band."""
    k = min(shape[-2:])
    x = with_spectrum(shape, np.geomspace(1.0, 1e-3, k) * 7.0)
    y = jm(x, steps=steps)
    chex.assert_shape(y, shape)
    _s, d = projected_singular_values(x, y)
    lo, hi = POLAR_EXPRESS_BANDS[steps - 1]
    assert d.min() >= lo - 1e-3 and d.max() <= hi + 1e-3
    # y = U f(S) V^T: no leakage between singular directions
    assert np.abs(y - msign_svd(x)).max() <= max(1 - lo, hi - 1) + 1e-3


def test_keller_band():
    sig = np.geomspace(1.0, 0.05, 24)
    x = with_spectrum((40, 24), sig, seed=1)
    _, d = projected_singular_values(x, jm(x, steps=5, coeffs="keller"))
    # scalar oracle: the composed polynomial on the possible normalized range
    image = compose_band([(3.4445, -4.7750, 2.0315)] * 5, np.linspace(sig[-1] / POWER_SAFETY / 1.01, 1.0, 20001))
    assert image.min() - 1e-3 <= d.min() and d.max() <= image.max() + 1e-3
    assert 0.6 < d.min() and d.max() < 1.2


def test_converges_to_svd_reference_past_the_table():
    x = with_spectrum((2, 20, 50), np.geomspace(3.0, 3e-3, 20), seed=2)
    y = jm(x, steps=7)  # the 7-row table; further steps repeat its last row
    np.testing.assert_allclose(y, msign_svd(x), atol=3e-3)


def test_rank_deficient_null_space_maps_to_zero():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((30, 3)), rng.standard_normal((20, 3))
    x = jnp.asarray(a @ b.T, jnp.float32)  # rank 3
    y = np.asarray(jm(x, steps=6))
    np.testing.assert_allclose(y, msign_svd(x), atol=5e-3)
    null = np.linalg.svd(np.asarray(x, np.float64))[2][3:]  # right null space, (17, 20)
    # float32 round-off leaves x with singular values ~1e-7 sigma_1 there; the iteration
    # multiplies small values by prod(a_t) ~ 2e3, so they stay ~1e-3, far below 1.
    assert np.abs(y @ null.T).max() < 5e-3


def missed_top(sig, seed=0):
    """(24, 40) float32 matrix with spectrum ``sig`` whose top left singular vector is orthogonal
    to every start vector of msign's power iteration (the estimate then sees sigma_2)."""
    from jaxlab.linalg.power_iteration import _fixed_block

    m, n = 24, 40
    rng = np.random.default_rng(seed)
    starts = _fixed_block(m, 4)
    u = rng.standard_normal((m, m))
    u[:, 0] -= starts @ np.linalg.lstsq(starts, u[:, 0], rcond=None)[0]
    u, _ = np.linalg.qr(u)
    v, _ = np.linalg.qr(rng.standard_normal((n, m)))
    return jnp.asarray((u * sig) @ v.T, jnp.float32)


def test_no_blow_up_when_the_power_estimate_misses_the_top_direction():
    """Regression: a top singular vector orthogonal to every power-iteration start gave NaN.

    The estimate then sees only sigma_2 = 0.8 sigma_1; the Schatten-8 floor on the scale
    must keep the top value inside the first polynomial's range.
    """
    x = missed_top(np.concatenate([[1.0], [0.8] * 3, np.geomspace(0.5, 1e-3, 20)]))
    lo, hi = POLAR_EXPRESS_BANDS[4]
    with jax.enable_x64(True):  # the scale itself: in float64 every value lands in the band
        _, exact = projected_singular_values(x, jm(jnp.asarray(np.asarray(x), jnp.float64)))
    assert exact.min() >= lo - 1e-9 and exact.max() <= hi + 1e-9
    _, direct = projected_singular_values(x, jm(x, method="direct"))
    np.testing.assert_allclose(direct, exact, atol=1e-5)
    # The Gram iteration (auto for 24 x 40) squares the condition number, so its float32 image of
    # the small values (sigma_min = 1e-3 sigma_1) is off by up to ~3e-3; the top one, the one the
    # estimate missed, is not.
    _, gram = projected_singular_values(x, jm(x))
    assert np.all(np.isfinite(gram)) and abs(gram[0] - exact[0]) < 1e-5


@pytest.mark.parametrize("tall", [False, True])
def test_gram_and_direct_agree_and_zero_maps_to_zero(tall):
    x = jnp.zeros((3, 12, 40)).at[1].set(jax.random.normal(jax.random.key(1), (12, 40)))
    x = jnp.swapaxes(x, -1, -2) if tall else x
    gram, direct = jm(x, method="gram"), jm(x, method="direct")
    np.testing.assert_allclose(gram, direct, atol=2e-4)
    for y in (gram, direct):
        assert np.all(np.isfinite(y)) and np.all(y[0] == 0) and np.all(y[2] == 0)
    assert np.all(msign_svd(jnp.zeros((4, 5))) == 0)


X_GAUSS = jax.random.normal(jax.random.key(5), (16, 36))


@given(log_scale=st.floats(-15.0, 15.0), sign=st.sampled_from([-1.0, 1.0]))
def test_scale_sign_and_transpose_invariance(log_scale, sign):
    y = jm(X_GAUSS)
    scaled = jm(sign * 10.0**log_scale * X_GAUSS)
    np.testing.assert_allclose(scaled, sign * y, atol=2e-4)
    np.testing.assert_allclose(jm(X_GAUSS.T), y.T, atol=2e-4)


@given(seed=st.integers(0, 2**16))
def test_singular_values_in_band_for_gaussian(seed):
    x = jax.random.normal(jax.random.key(seed), (16, 36))
    s, d = projected_singular_values(x, jm(x))
    lo, hi = POLAR_EXPRESS_BANDS[4]
    keep = s >= 1e-3 * s[0]
    assert d[keep].min() >= lo - 1e-3 and d[keep].max() <= hi + 1e-3


def test_user_tables_match_presets():
    x = X_GAUSS
    np.testing.assert_allclose(jm(x, coeffs=(3.4445, -4.7750, 2.0315)), jm(x, coeffs="keller"), atol=1e-6)
    traced_table = jax.jit(lambda x, table: msign(x, coeffs=table))  # e.g. injected by optax
    np.testing.assert_allclose(traced_table(x, jnp.asarray(POLAR_EXPRESS_COEFFS)), jm(x), atol=1e-5)


def test_compute_dtype_and_input_dtype():
    x = X_GAUSS
    ref = jm(x)
    mixed = jm(x, dtype=jnp.bfloat16)
    assert mixed.dtype == jnp.float32
    assert np.abs(mixed - ref).max() < 0.1
    y = jm(x.astype(jnp.bfloat16))
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(y.astype(jnp.float32), ref, atol=0.05)


X_WIDE_SPECTRUM = with_spectrum((48, 96), np.geomspace(1.0, 0.01, 48), seed=7)


def test_paper_table_gets_its_own_ceiling_under_power_normalization():
    """The paper's polynomials diverge above ~1.01; a lone top value missed by the power
    estimate would be normalized to ~1.03 with the default ceiling 1.05."""
    x = missed_top(np.concatenate([[1.0, 0.8], np.geomspace(0.5, 1e-2, 22)]))
    s, d = projected_singular_values(x, jm(x, coeffs="polar_express_paper"))
    normalized = np.linspace(1e-2 * s[0] / np.linalg.norm(s**4) ** 0.25 / 1.01, 1.01, 20001)
    image = compose_band(POLAR_EXPRESS_PAPER_COEFFS[:5], normalized)
    assert image.min() - 1e-3 <= d.min() and d.max() <= image.max() + 1e-3
    # the same numbers passed as a table get the default ceiling and diverge
    assert not np.all(np.isfinite(np.asarray(jm(x, coeffs=POLAR_EXPRESS_PAPER_COEFFS))))


@pytest.mark.parametrize("coeffs", ["keller", "polar_express_jaxlab", "polar_express_paper"])
def test_frobenius_normalization_matches_scalar_oracle(coeffs):
    # with the Frobenius scale the result is exactly U f(S / |x|_F) V^T
    x = X_WIDE_SPECTRUM
    s, d = projected_singular_values(x, jm(x, steps=4, coeffs=coeffs, normalization="frobenius"))
    table = coefficient_table(coeffs)
    table = np.repeat(table, 4, axis=0) if coeffs == "keller" else table[:4]
    np.testing.assert_allclose(d, compose_band(table, s / np.linalg.norm(s)), atol=1e-4)


def test_frobenius_eps_matches_scalar_oracle_and_may_be_traced():
    # eps = |x|_F halves the normalized values: U f(S / (|x|_F + eps)) V^T
    x = X_WIDE_SPECTRUM
    fro = float(np.linalg.norm(np.asarray(x, np.float64)))
    s, d = projected_singular_values(x, jm(x, steps=4, coeffs="keller", normalization="frobenius", eps=fro))
    np.testing.assert_allclose(d, compose_band([KELLER_COEFFS] * 4, s / (np.linalg.norm(s) + fro)), atol=1e-4)
    traced = jax.jit(lambda x, eps: msign(x, steps=4, coeffs="keller", normalization="frobenius", eps=eps))
    np.testing.assert_allclose(traced(x, jnp.float32(fro)), jm(x, steps=4, coeffs="keller", normalization="frobenius", eps=fro), atol=1e-6)
    # power normalization ignores eps; a zero matrix still maps to zeros
    np.testing.assert_array_equal(jm(x, eps=fro), jm(x))
    assert np.all(jm(jnp.zeros((4, 6)), normalization="frobenius", eps=1e-7) == 0)


def test_power_normalization_beats_frobenius():
    x = X_WIDE_SPECTRUM
    err = lambda y: np.abs(projected_singular_values(x, y)[1] - 1).max()
    y_power, y_frob = jm(x, steps=4, coeffs="keller"), jm(x, steps=4, coeffs="keller", normalization="frobenius")
    assert err(y_power) < 0.35 < err(y_frob)


def test_traced_steps_and_no_retrace():
    x = X_GAUSS

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(x, steps):
        return msign(x, steps=steps)

    np.testing.assert_allclose(run(x, jnp.asarray(5)), jm(x, steps=5), atol=2e-4)
    np.testing.assert_allclose(run(2 * x, jnp.asarray(6)), jm(x, steps=6), atol=2e-4)


def test_grad_and_vmap():
    x = jax.random.normal(jax.random.key(9), (3, 4, 6))
    np.testing.assert_allclose(jax.jit(jax.vmap(msign))(x), jm(x), atol=1e-5)
    g = jax.jit(jax.grad(lambda x: jnp.sum(msign(x, steps=2) * x)))(x[0])
    assert np.all(np.isfinite(g))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(x=jnp.ones(3)), "shape"),
        (dict(x=jnp.ones((3, 3), jnp.int32)), "floating"),
        (dict(steps=0), "steps"),
        (dict(steps=2.0), "steps"),
        (dict(coeffs="newton"), "coeffs"),
        (dict(coeffs=(1.0, 2.0)), "coeffs"),
        (dict(coeffs=[[1.0, 2.0, 3.0, 4.0]]), "coeffs"),
        (dict(coeffs=[[1.0, float("nan"), 3.0]]), "coeffs"),
        (dict(coeffs=[["a", "b", "c"]]), "coeffs"),
        (dict(normalization="l2"), "normalization"),
        (dict(method="eigh"), "method"),
        (dict(power_steps=0), "power_steps"),
        (dict(dtype=jnp.int32), "dtype"),
        (dict(eps=-1.0), "eps must be a scalar >= 0, got -1.0"),
        (dict(eps="tiny"), "eps"),
        (dict(eps=jnp.ones(2)), "eps"),
    ],
)
def test_bad_input(kwargs, match):
    kwargs = {"x": jnp.ones((3, 4)), **kwargs}
    with pytest.raises(ValueError, match=match):
        msign(**kwargs)


def test_msign_svd_bad_input():
    with pytest.raises(ValueError, match="shape"):
        msign_svd(jnp.ones(3))
