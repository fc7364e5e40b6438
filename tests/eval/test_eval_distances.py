"""Tests for jaxlab.eval.distances against closed forms, SciPy and naive versions."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from hypothesis import given
from scipy.spatial.distance import cdist

from jaxlab.eval import energy_distance, mmd_rbf, sliced_wasserstein
from jaxlab.testing.strategies import arrays
from jaxlab.testing.tolerance import rounding_tolerance

KEY = jax.random.key(0)


def normal_quantiles(num: int) -> np.ndarray:
    """The (i + 1/2) / num quantiles of N(0, 1): a deterministic, evenly weighted "sample"
    whose empirical distribution approaches N(0, 1) at rate O(1 / num), far faster than
    the O(1 / sqrt(num)) of random draws, so closed forms can be checked tightly."""
    return scipy.stats.norm.ppf((np.arange(num) + 0.5) / num)


def gaussian_samples(seed: int, num: int, dim: int, shift=0.0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(num, dim)) + shift).astype(np.float32)


# --- Energy distance ---------------------------------------------------------------------------


def test_energy_matches_scipy_in_1d():
    # scipy.stats.energy_distance is the square root of the V-statistic.
    x, y = gaussian_samples(0, 300, 1), gaussian_samples(1, 200, 1, shift=0.5)
    expected = scipy.stats.energy_distance(x[:, 0], y[:, 0]) ** 2
    np.testing.assert_allclose(energy_distance(x, y), expected, rtol=1e-4)


def test_energy_closed_form_for_shifted_gaussians_in_1d():
    # X ~ N(0, 1), Y ~ N(mu, 1): X - Y ~ N(-mu, 2), whose absolute value is folded normal with
    # mean s sqrt(2/pi) exp(-mu^2 / (2 s^2)) + mu (1 - 2 Phi(-mu / s)), s = sqrt(2);
    # E|X - X'| = E|Y - Y'| = 2 / sqrt(pi).
    mu, s = 1.0, math.sqrt(2.0)
    folded_mean = s * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * s**2))
    folded_mean += mu * (1 - 2 * scipy.stats.norm.cdf(-mu / s))
    expected = 2 * folded_mean - 4 / math.sqrt(math.pi)
    q = normal_quantiles(1000)[:, None].astype(np.float32)
    # The quantile grid's discretization error is ~5e-6 at 1000 points; float32 sums add ~1e-5.
    np.testing.assert_allclose(energy_distance(q, q + mu), expected, atol=1e-4)


def test_energy_unbiased_matches_the_naive_u_statistic():
    x, y = gaussian_samples(2, 9, 3), gaussian_samples(3, 6, 3, shift=0.3)
    d_xy, d_xx, d_yy = (np.sqrt(cdist(a, b, "sqeuclidean")) for a, b in ((x, y), (x, x), (y, y)))
    expected = 2 * d_xy.mean() - d_xx.sum() / (9 * 8) - d_yy.sum() / (6 * 5)
    # The statistic cancels terms of size ~2·mean(d_xy), so float32 rounding is bounded relative to
    # them, not to the small result; the longest sum has 9·9 terms.
    atol = rounding_tolerance(np.float32, 9 * 9) * 2 * d_xy.mean()
    np.testing.assert_allclose(energy_distance(x, y, unbiased=True, chunk_size=4), expected, rtol=0, atol=atol)


def test_energy_invariances():
    # Energy distance is invariant under rigid motions and homogeneous of degree 1 in scale.
    x, y = gaussian_samples(4, 40, 3), gaussian_samples(5, 30, 3, shift=0.5)
    rotation, _ = np.linalg.qr(np.random.default_rng(6).normal(size=(3, 3)))
    moved = [(a @ rotation + np.float32(2.0)).astype(np.float32) for a in (x, y)]
    base = float(energy_distance(x, y))
    np.testing.assert_allclose(energy_distance(*moved), base, rtol=1e-4)
    np.testing.assert_allclose(energy_distance(3 * x, 3 * y), 3 * base, rtol=1e-4)


# --- MMD ---------------------------------------------------------------------------------------


def gaussian_rbf_mean(bandwidth: float, variance: float, mean_sq: float, dim: int) -> float:
    """E exp(-|Z|^2 / (2 b^2)) for Z ~ N(m, variance I_dim), |m|^2 = mean_sq (a Gaussian convolution)."""
    b2 = bandwidth**2
    return (b2 / (b2 + variance)) ** (dim / 2) * math.exp(-mean_sq / (2 * (b2 + variance)))


@pytest.mark.parametrize("bandwidth", [0.5, 1.0])
def test_mmd_closed_form_for_shifted_gaussians(bandwidth):
    # X ~ N(0, I_2), Y ~ N(delta, I_2), |delta| = 1: X - X' ~ N(0, 2I), X - Y ~ N(-delta, 2I).
    expected = 2 * gaussian_rbf_mean(bandwidth, 2.0, 0.0, 2) - 2 * gaussian_rbf_mean(bandwidth, 2.0, 1.0, 2)
    q = normal_quantiles(48)
    grid = np.stack(np.meshgrid(q, q), axis=-1).reshape(-1, 2).astype(np.float32)  # (2304, 2)
    got = mmd_rbf(grid, grid + np.float32([1.0, 0.0]), bandwidths=(bandwidth,))
    # The 48 x 48 quantile grid is off by < 3e-4 here (1 % of the smaller value 0.044).
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_mmd_matches_the_naive_statistics():
    x, y = gaussian_samples(7, 8, 2), gaussian_samples(8, 5, 2, shift=0.5)
    bandwidths = (0.5, 2.0)

    def kernel_mean(a, b, exclude_diagonal=False):
        sq = cdist(a, b, "sqeuclidean")
        k = sum(np.exp(-sq / (2 * s**2)) for s in bandwidths)
        return k[~np.eye(len(a), dtype=bool)].mean() if exclude_diagonal else k.mean()

    v_stat = kernel_mean(x, x) + kernel_mean(y, y) - 2 * kernel_mean(x, y)
    u_stat = kernel_mean(x, x, True) + kernel_mean(y, y, True) - 2 * kernel_mean(x, y)
    np.testing.assert_allclose(mmd_rbf(x, y, bandwidths=bandwidths), v_stat, rtol=1e-5)
    np.testing.assert_allclose(mmd_rbf(x, y, bandwidths=bandwidths, unbiased=True), u_stat, rtol=1e-4)


# --- Sliced Wasserstein ------------------------------------------------------------------------


def test_sliced_wasserstein_is_wasserstein_in_1d():
    # In 1-D both directions (+1, -1) give the same W_p, so SW_p = W_p exactly.
    x, y = gaussian_samples(9, 500, 1), gaussian_samples(10, 500, 1, shift=0.7)
    expected = scipy.stats.wasserstein_distance(x[:, 0], y[:, 0])
    np.testing.assert_allclose(sliced_wasserstein(x, y, key=KEY, num_projections=4, p=1), expected, rtol=1e-5)


@pytest.mark.parametrize(("dim", "p", "expected_over_norm"), [(4, 2, 1 / math.sqrt(4)), (2, 1, 2 / math.pi)])
def test_sliced_wasserstein_of_a_shift(dim, p, expected_over_norm):
    # For y = x + delta every 1-D W_p is |theta . delta|, so SW_p^p = E |theta . delta|^p:
    # |delta| / sqrt(d) for p = 2 and (2 / pi) |delta| for p = 1 in 2-D. With 4096 directions the
    # Monte Carlo standard error is below 1 % of the value; 4 % is > 4 errors.
    x = gaussian_samples(11, 256, dim)
    delta = np.float32(1.5) * np.eye(dim, dtype=np.float32)[0]
    got = sliced_wasserstein(x, x + delta, key=KEY, num_projections=4096, p=p)
    np.testing.assert_allclose(got, 1.5 * expected_over_norm, rtol=0.04)


def test_sliced_wasserstein_between_independent_gaussians():
    # N(0, I_3) vs N(delta, I_3), |delta| = 2: SW_2 = 2 / sqrt(3) = 1.155. Over 20 seeds the
    # estimate (2000 samples, 1024 directions) has a standard deviation of about 0.023.
    x, y = gaussian_samples(12, 2000, 3), gaussian_samples(13, 2000, 3, shift=np.float32([2.0, 0.0, 0.0]))
    np.testing.assert_allclose(sliced_wasserstein(x, y, key=KEY, num_projections=1024), 2 / math.sqrt(3), atol=0.1)


# --- Shared properties -------------------------------------------------------------------------

DISTANCES = {
    "energy": lambda x, y: energy_distance(x, y),
    "mmd": lambda x, y: mmd_rbf(x, y),
    "sliced_wasserstein": lambda x, y: sliced_wasserstein(x, y, key=KEY, num_projections=16),
}


@pytest.mark.parametrize("name", sorted(DISTANCES))
def test_identical_sets_are_at_zero_with_finite_gradients(name):
    x = gaussian_samples(14, 12, 2) * 3
    distance = DISTANCES[name]
    np.testing.assert_allclose(distance(x, x), 0.0, atol=1e-5)
    gradient = jax.grad(distance)(jnp.asarray(x), jnp.asarray(x))
    chex.assert_tree_all_finite(gradient)


@pytest.mark.parametrize("name", sorted(DISTANCES))
def test_jit_matches_eager(name):
    x, y = gaussian_samples(15, 12, 2), gaussian_samples(16, 12, 2, shift=1.0)
    np.testing.assert_allclose(jax.jit(DISTANCES[name])(x, y), DISTANCES[name](x, y), rtol=1e-6)


# One shape for both sets (6 points in 3-D), so each distance compiles once here.
SAMPLE_SET = arrays((6, 3), np.float32, min_value=-5, max_value=5, backend="numpy")


@pytest.mark.parametrize("name", sorted(DISTANCES))
@given(x=SAMPLE_SET, y=SAMPLE_SET)
def test_symmetric_and_non_negative(name, x, y):
    forward, backward = float(DISTANCES[name](x, y)), float(DISTANCES[name](y, x))
    assert forward >= 0.0
    assert abs(forward - backward) <= 1e-5 * (1 + forward)


# --- Validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DISTANCES))
def test_rejects_arrays_that_are_not_sample_sets(name):
    distance = DISTANCES[name]
    with pytest.raises(ValueError, match=r"`x`.*\(6,\)"):
        distance(np.zeros(6), np.zeros((6, 2)))
    with pytest.raises(ValueError, match=r"`y`.*\(6, 2, 1\)"):
        distance(np.zeros((6, 2)), np.zeros((6, 2, 1)))
    with pytest.raises(ValueError, match=r"same feature dimension.*\(6, 2\).*\(6, 3\)"):
        distance(np.zeros((6, 2)), np.zeros((6, 3)))


def test_rejects_bad_options():
    x, y = np.zeros((4, 2)), np.zeros((5, 2))
    with pytest.raises(ValueError, match=r"same shape.*\(4, 2\).*\(5, 2\)"):
        sliced_wasserstein(x, y, key=KEY)
    with pytest.raises(ValueError, match="`p`"):
        sliced_wasserstein(x, x, key=KEY, p=0.5)
    with pytest.raises(ValueError, match="`num_projections`"):
        sliced_wasserstein(x, x, key=KEY, num_projections=0)
    with pytest.raises(ValueError, match="`bandwidths`"):
        mmd_rbf(x, y, bandwidths=(1.0, -2.0))
    with pytest.raises(ValueError, match="`chunk_size`"):
        energy_distance(x, y, chunk_size=0)
    with pytest.raises(ValueError, match="num_samples >= 2"):
        energy_distance(x[:1], y, unbiased=True)
