"""k-means (distortion never increases, beats random codes), dead-code replacement and usage metrics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab import quant


def blobs(seed, n=400, k=8, d=2):
    key_c, key_a, key_n = jax.random.split(jax.random.key(seed), 3)
    centres = 5.0 * jax.random.normal(key_c, (k, d))
    return centres[jax.random.randint(key_a, (n,), 0, k)] + 0.3 * jax.random.normal(key_n, (n, d))


def test_kmeans_distortion_never_increases_and_matches_its_assignment():
    seed = 0
    x = blobs(seed)
    result = jax.jit(lambda x: quant.kmeans(x, 8, key=jax.random.key(seed), iterations=10))(x)
    history = np.asarray(result.distortion)
    assert np.all(np.diff(history) <= 1e-5 * history[:-1])
    naive = np.mean(np.min(((np.asarray(x)[:, None] - np.asarray(result.centroids)[None]) ** 2).sum(-1), axis=1))
    np.testing.assert_allclose(history[-1], naive, rtol=1e-5)
    random_codes = jax.random.normal(jax.random.key(99), (8, 2)) * 5.0
    assert history[-1] < float(quant.distortion(x, random_codes))
    # each centroid is the mean of its cluster (a fixed point of Lloyd's step, up to the last move)
    assign = np.asarray(quant.nearest_code(x, result.centroids))
    for k in np.unique(assign):
        np.testing.assert_allclose(result.centroids[k], np.asarray(x)[assign == k].mean(0), atol=0.05)


def test_replace_dead_codes_touches_only_dead_codes():
    codebook = jnp.arange(12.0).reshape(6, 2)
    counts = jnp.array([3.0, 0.0, 1.0, 0.0, 5.0, 0.5])
    candidates = 100.0 + jax.random.normal(jax.random.key(0), (20, 2))
    new = quant.replace_dead_codes(codebook, counts, candidates, key=jax.random.key(1))
    dead = np.asarray(counts) < 1
    np.testing.assert_array_equal(np.asarray(new)[~dead], np.asarray(codebook)[~dead])
    cand = {tuple(row) for row in np.asarray(candidates).tolist()}
    assert all(tuple(row) in cand for row in np.asarray(new)[dead].tolist())


def test_uniform_assignment_has_perplexity_k_and_full_utilization():
    k = 16
    indices = jnp.tile(jnp.arange(k), 5)
    assert float(quant.perplexity(indices, k)) == pytest.approx(k, rel=1e-5)
    assert float(quant.utilization(indices, k)) == 1.0
    assert int(quant.dead_codes(indices, k)) == 0


def test_metrics_against_a_direct_entropy():
    indices = jnp.array([0, 0, 0, 1, 2, 2, 7])
    p = np.array([3, 1, 2, 1]) / 7
    assert float(quant.perplexity(indices, 10)) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-5)
    assert float(quant.utilization(indices, 10)) == pytest.approx(0.4)
    assert quant.codebook_metrics(indices, 10)["dead_codes"] == 6
    assert float(quant.perplexity(jnp.zeros(9, jnp.int32), 10)) == pytest.approx(1.0)
    with pytest.raises(TypeError, match="indices"):
        quant.perplexity(jnp.zeros(3), 4)
