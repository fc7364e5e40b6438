"""Minibatch OT coupling: the exact assignment against brute force over all permutations."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxlab import testing
from jaxlab.generative.coupling import minibatch_ot_pairing, optimal_assignment


def brute_force_cost(cost: np.ndarray) -> float:
    b = cost.shape[0]
    return min(sum(cost[i, p[i]] for i in range(b)) for p in itertools.permutations(range(b)))


@settings(deadline=None, max_examples=20)
@given(seed=st.integers(0, 10_000), b=st.integers(1, 6))
def test_assignment_is_the_cheapest_permutation(seed, b):
    cost = np.random.default_rng(seed).normal(size=(b, b)).astype(np.float32)
    perm = np.asarray(jax.jit(optimal_assignment)(jnp.asarray(cost)))
    assert sorted(perm.tolist()) == list(range(b))
    np.testing.assert_allclose(cost[np.arange(b), perm].sum(), brute_force_cost(cost.astype(np.float64)), rtol=1e-6, atol=1e-6)


def test_pairing_minimizes_the_total_squared_distance_over_flattened_features():
    key_data, key_noise = jax.random.split(jax.random.key(0))
    x0 = jax.random.normal(key_data, (6, 2, 3)) + 2.0
    x1 = jax.random.normal(key_noise, (6, 2, 3))
    perm = np.asarray(minibatch_ot_pairing(x0, x1))

    def total(p):
        return float(jnp.sum(jnp.square(x0[np.asarray(p)] - x1)))

    assert total(perm) == pytest.approx(min(total(p) for p in itertools.permutations(range(6))), rel=1e-6)
    assert total(perm) < total(range(6))  # strictly better than the independent pairing here


def test_pairing_compiles_once_per_shape():
    testing.clear_trace_counter()
    pairing = testing.jit_with_max_traces(minibatch_ot_pairing, n=1)
    for seed in range(3):
        x0, x1 = jax.random.normal(jax.random.key(seed), (2, 8, 2))
        chex.assert_shape(pairing(x0, x1), (8,))


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="square"):
        optimal_assignment(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="floating"):
        optimal_assignment(jnp.zeros((2, 2), jnp.int32))
    with pytest.raises(ValueError, match="one shape"):
        minibatch_ot_pairing(jnp.zeros((4, 2)), jnp.zeros((3, 2)))
