"""Tests for jaxlab.eval.pairwise against plain NumPy / SciPy computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from jaxlab.eval import mean_pairwise, pairwise_sq_distances, safe_sqrt


def test_pairwise_sq_distances_matches_scipy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)).astype(np.float32), rng.normal(size=(4, 5)).astype(np.float32)
    np.testing.assert_allclose(pairwise_sq_distances(x, y), cdist(x, y, "sqeuclidean"), rtol=1e-5, atol=1e-5)
    assert float(jnp.min(pairwise_sq_distances(x, x))) >= 0.0  # clamped round-off


def test_safe_sqrt_value_and_finite_gradient_at_zero():
    x = jnp.array([0.0, 4.0, -1e-9])
    np.testing.assert_allclose(safe_sqrt(x), [0.0, 2.0, 0.0])
    np.testing.assert_allclose(jax.grad(lambda v: jnp.sum(safe_sqrt(v)))(x), [0.0, 0.25, 0.0])


@pytest.mark.parametrize("chunk_size", [1, 3, 1024])
@pytest.mark.parametrize("exclude_diagonal", [False, True])
def test_mean_pairwise_matches_the_naive_mean(chunk_size, exclude_diagonal):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 3)).astype(np.float32)
    y = x if exclude_diagonal else rng.normal(size=(6, 3)).astype(np.float32)
    values = np.sqrt(cdist(x, y, "sqeuclidean"))
    if exclude_diagonal:
        expected = values[~np.eye(10, dtype=bool)].mean()
    else:
        expected = values.mean()
    got = mean_pairwise(safe_sqrt, x, y, exclude_diagonal=exclude_diagonal, chunk_size=chunk_size)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_mean_pairwise_exclude_diagonal_needs_square():
    with pytest.raises(ValueError, match="exclude_diagonal"):
        mean_pairwise(safe_sqrt, jnp.zeros((3, 2)), jnp.zeros((4, 2)), exclude_diagonal=True)


@pytest.mark.optimized  # running it dominates: 46,342² pairs
def test_mean_pairwise_over_more_pairs_than_int32_counts():
    # 46,342 · 46,341 self-excluded pairs exceed 2**31 - 1: the count must not be traced as an int32.
    n = 46_342
    x = np.zeros((n, 1), np.float32)
    y = np.ones((n, 1), np.float32)
    assert n * (n - 1) > np.iinfo(np.int32).max
    np.testing.assert_allclose(mean_pairwise(safe_sqrt, x, y), 1.0, rtol=1e-6)
    np.testing.assert_allclose(mean_pairwise(safe_sqrt, x, x, exclude_diagonal=True), 0.0, atol=1e-6)
