"""Codebook usage metrics: counts, perplexity, utilisation and dead codes.

With p_k the share of selections that fall on code k, the perplexity is
exp(H(p)) = exp(−Σ p_k log p_k): K for a uniform use of all K codes, 1 for
a single code. Utilisation is the share of codes selected at least once;
dead codes are those selected fewer than ``min_count`` times.

References:
  van den Oord et al. 2017, "VQ-VAE" (codebook perplexity as reported by
  later VQ work, e.g. Dhariwal et al. 2020, "Jukebox").
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

from jaxlab._checks import check_num_codes


def _check_indices(indices: object) -> Array:
    indices = jnp.asarray(indices)
    if not jnp.issubdtype(indices.dtype, jnp.integer):
        raise TypeError(f"indices must be an integer array, got dtype {indices.dtype}")
    return indices


def code_counts(indices: Array, num_codes: int) -> Array:
    """(K,) float32 number of times each code occurs in ``indices`` (any shape)."""
    indices = _check_indices(indices)
    check_num_codes(num_codes)
    return jnp.zeros(num_codes, jnp.float32).at[indices.reshape(-1)].add(1.0, mode="drop")


def perplexity_of_counts(counts: Array) -> Array:
    """exp(entropy) of the usage distribution given by ``counts`` (K,)."""
    p = counts / jnp.maximum(jnp.sum(counts), 1.0)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return jnp.exp(entropy)


def perplexity(indices: Array, num_codes: int) -> Array:
    """exp(H(p)) of the empirical code distribution: K when uniform, 1 when one code is used."""
    return perplexity_of_counts(code_counts(indices, num_codes))


def utilization(indices: Array, num_codes: int) -> Array:
    """Share of the K codes used at least once."""
    return jnp.mean(code_counts(indices, num_codes) > 0)


def dead_codes(indices: Array, num_codes: int, *, min_count: int = 1) -> Array:
    """Number of codes used fewer than ``min_count`` times."""
    return jnp.sum(code_counts(indices, num_codes) < min_count).astype(jnp.int32)


def codebook_metrics(indices: Array, num_codes: int) -> dict[str, float]:
    """``{"perplexity", "utilization", "dead_codes"}`` as Python numbers (host values, for reports)."""
    counts = code_counts(indices, num_codes)
    return {
        "perplexity": float(perplexity_of_counts(counts)),
        "utilization": float(jnp.mean(counts > 0)),
        "dead_codes": int(jnp.sum(counts < 1)),
    }
