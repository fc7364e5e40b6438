"""k-means codebook initialisation (k-means++ seeding, Lloyd iterations) and dead-code replacement.

Lloyd's algorithm alternates nearest-centroid assignment and centroid =
cluster mean; each half step can only lower the distortion
(mean squared distance to the assigned centroid), so the recorded history is
non-increasing. A centroid that loses all its points keeps its position.

Dead-code replacement re-seeds codes that were (nearly) never selected with
randomly chosen recent encoder outputs, the usual remedy for codebook
collapse in VQ training.

References:
  Lloyd 1982, "Least squares quantization in PCM".
  Arthur, Vassilvitskii 2007, "k-means++: The Advantages of Careful Seeding".
  Dhariwal et al. 2020, "Jukebox" (random restarts of dead codes);
  Zeghidour et al. 2021, "SoundStream" (k-means codebook init, dead-code
  replacement).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from jaxlab._checks import check_codebook, check_floating, check_num_codes
from jaxlab.quant.vq import nearest_code, squared_distances


class KMeansResult(NamedTuple):
    """``centroids`` (K, d), ``assignments`` (n,) int32, ``distortion`` (iterations + 1,) before each/after the last step."""

    centroids: Array
    assignments: Array
    distortion: Array


def kmeans_plus_plus(x: Array, num_codes: int, *, key: Array) -> Array:
    """k-means++ seeding: each new centroid drawn with probability ∝ squared distance to the nearest chosen one.

    Args:
      x: (n, d) points.
      num_codes: K.
      key: typed PRNG key.

    Returns:
      (K, d) initial centroids (rows of ``x``).

    References:
      Arthur, Vassilvitskii 2007, "k-means++".
    """
    check_floating("x", x, min_ndim=2)
    check_num_codes(num_codes)
    n = x.shape[0]
    first = jax.random.randint(jax.random.fold_in(key, 0), (), 0, n)
    centroids = jnp.zeros((num_codes, x.shape[1]), x.dtype).at[0].set(x[first])
    nearest = jnp.sum(jnp.square(x - x[first]), axis=-1)

    def body(i, carry):
        centroids, nearest = carry
        logits = jnp.where(nearest > 0, jnp.log(jnp.maximum(nearest, 1e-30)), -jnp.inf)
        logits = jnp.where(jnp.all(nearest <= 0), 0.0, logits)  # all points covered: uniform
        pick = jax.random.categorical(jax.random.fold_in(key, i), logits)
        centroids = centroids.at[i].set(x[pick])
        return centroids, jnp.minimum(nearest, jnp.sum(jnp.square(x - x[pick]), axis=-1))

    centroids, _ = jax.lax.fori_loop(1, num_codes, body, (centroids, nearest))
    return centroids


def distortion(x: Array, centroids: Array) -> Array:
    """Mean over points of the squared distance to the nearest centroid."""
    return jnp.mean(jnp.min(squared_distances(x, centroids), axis=-1))


def kmeans(x: Array, num_codes: int, *, key: Array, iterations: int = 20) -> KMeansResult:
    """k-means++ seeding followed by ``iterations`` Lloyd steps.

    Args:
      x: (n, d) points (e.g. encoder outputs over a batch).
      num_codes: K.
      key: typed PRNG key of the seeding.
      iterations: number of Lloyd steps.

    Returns:
      :class:`KMeansResult`.

    References:
      Lloyd 1982; Arthur, Vassilvitskii 2007.
    """
    check_floating("x", x, min_ndim=2)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (num_points, dim), got {x.shape}")
    check_num_codes(num_codes)
    if not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an int >= 0, got {iterations!r}")
    centroids = kmeans_plus_plus(x, num_codes, key=key)

    def step(centroids, _):
        assign = nearest_code(x, centroids)
        before = distortion(x, centroids)
        one_hot = jax.nn.one_hot(assign, num_codes, dtype=x.dtype)  # (n, K)
        counts = jnp.sum(one_hot, axis=0)
        sums = one_hot.T @ x
        updated = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centroids)
        return updated, before

    centroids, history = jax.lax.scan(step, centroids, None, length=iterations)
    history = jnp.concatenate([history, distortion(x, centroids)[None]])
    return KMeansResult(centroids, nearest_code(x, centroids), history)


def replace_dead_codes(codebook: Array, counts: Array, candidates: Array, *, key: Array, min_count: float = 1.0) -> Array:
    """Codes used fewer than ``min_count`` times replaced by random rows of ``candidates``.

    Args:
      codebook: (K, d) codes.
      counts: (K,) how often each code was selected (over a recent window, or an EMA).
      candidates: (n, d) recent encoder outputs to draw replacements from.
      key: typed PRNG key.
      min_count: codes with ``counts < min_count`` are dead.

    Returns:
      (K, d) codebook with the dead codes re-seeded (the live ones unchanged).

    References:
      Dhariwal et al. 2020, "Jukebox" (random restarts of dead codes).
    """
    check_codebook(candidates, codebook)
    if candidates.ndim != 2:
        raise ValueError(f"candidates must have shape (num_points, dim), got {candidates.shape}")
    if counts.shape != codebook.shape[:1]:
        raise ValueError(f"counts must have shape ({codebook.shape[0]},), got {counts.shape}")
    n, k = candidates.shape[0], codebook.shape[0]
    if n >= k:
        pick = jax.random.permutation(key, n)[:k]
    else:
        pick = jax.random.randint(key, (k,), 0, n)
    return jnp.where((counts < min_count)[:, None], candidates[pick].astype(codebook.dtype), codebook)
