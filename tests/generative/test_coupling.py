"""Minibatch OT coupling: the on-device auction against scipy's exact assignment and brute force over all permutations."""

import itertools
import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from jaxlab import parallel, testing
from jaxlab.generative.coupling import LEVELS, minibatch_ot_pairing, optimal_assignment


def brute_force_cost(cost: np.ndarray) -> float:
    b = cost.shape[0]
    return min(sum(cost[i, p[i]] for i in range(b)) for p in itertools.permutations(range(b)))


def scipy_cost(cost: np.ndarray) -> float:
    rows, columns = linear_sum_assignment(cost.astype(np.float64))
    return float(cost.astype(np.float64)[rows, columns].sum())


def guarantee(cost: np.ndarray) -> float:
    """The module's bound on the excess total cost, 2·b·δ with δ = (max − min)/LEVELS, plus float64 summation slack."""
    return 2 * cost.shape[0] * float(cost.max() - cost.min()) / LEVELS + 1e-9 * float(np.abs(cost).sum())


def assert_permutation(perm: np.ndarray, b: int) -> None:
    assert perm.dtype == np.int32 and perm.shape == (b,)
    assert sorted(perm.tolist()) == list(range(b))


def pairing_cost(x0: np.ndarray, x1: np.ndarray, perm: np.ndarray) -> float:
    return float(np.sum(np.square(x0[perm].astype(np.float64) - x1.astype(np.float64))))


def sq_distances(x1: np.ndarray, x0: np.ndarray) -> np.ndarray:
    flat1, flat0 = x1.reshape(len(x1), -1).astype(np.float64), x0.reshape(len(x0), -1).astype(np.float64)
    return np.sum(np.square(flat1[:, None] - flat0[None]), axis=-1)


@settings(deadline=None, max_examples=20)
@given(seed=st.integers(0, 10_000), b=st.integers(1, 6))
def test_assignment_is_the_cheapest_permutation(seed, b):
    cost = np.random.default_rng(seed).normal(size=(b, b)).astype(np.float32)
    perm = np.asarray(jax.jit(optimal_assignment)(jnp.asarray(cost)))
    assert_permutation(perm, b)
    np.testing.assert_allclose(cost[np.arange(b), perm].sum(), brute_force_cost(cost.astype(np.float64)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("b", [1, 2, 9, 32, 100])
@pytest.mark.parametrize("kind", ["normal", "uniform_large", "ties"])
def test_total_cost_is_scipys_optimum_within_the_stated_bound(b, kind):
    rng = np.random.default_rng(b)
    if kind == "normal":
        cost = rng.normal(size=(b, b))
    elif kind == "uniform_large":  # an offset and scale far from 1: the grid follows the costs' range
        cost = 1e4 + 1e3 * rng.uniform(size=(b, b))
    else:  # few distinct values: many optimal permutations and tied bids
        cost = rng.integers(0, 3, size=(b, b)).astype(float)
    cost = cost.astype(np.float32)
    perm = np.asarray(jax.jit(optimal_assignment)(jnp.asarray(cost)))
    assert_permutation(perm, b)
    total, best = float(cost.astype(np.float64)[np.arange(b), perm].sum()), scipy_cost(cost)
    assert best - 1e-9 * abs(best) <= total <= best + guarantee(cost)


def test_the_bound_is_tight_enough_to_separate_the_optimum_from_the_runner_up():
    # The optimum [2, 1, 0] costs 0, the runner-up (identity) 1e-4 of the cost range; the bound is 2·3/2^22 ≈ 1.4e-6 of it.
    cost = np.ones((3, 3), np.float32)
    cost[0, 0] = cost[1, 1] = cost[0, 2] = cost[2, 0] = 0.0
    cost[2, 2] = 1e-4
    np.testing.assert_array_equal(np.asarray(optimal_assignment(jnp.asarray(cost))), [2, 1, 0])


def test_duplicate_points_are_paired_at_the_optimal_total():
    rng = np.random.default_rng(0)
    x0 = np.repeat(rng.normal(size=(8, 2)), 4, axis=0).astype(np.float32)  # (32, 2): each point four times
    x1 = np.concatenate([x0[:16], rng.normal(size=(16, 2))]).astype(np.float32)  # half of the noise sits on data
    perm = np.asarray(jax.jit(minibatch_ot_pairing)(jnp.asarray(x0), jnp.asarray(x1)))
    assert_permutation(perm, 32)
    cost = sq_distances(x1, x0)
    assert pairing_cost(x0, x1, perm) <= scipy_cost(cost) + guarantee(cost)


def test_non_finite_costs_still_give_a_permutation_that_avoids_them():
    cost = np.where(np.eye(5, k=1) + np.eye(5, k=-4), 1.0, np.inf).astype(np.float32)  # only the shifted diagonal is finite
    cost[0, 0] = np.nan
    perm = np.asarray(optimal_assignment(jnp.asarray(cost)))
    np.testing.assert_array_equal(perm, [1, 2, 3, 4, 0])


def test_pairing_minimizes_the_total_squared_distance_over_flattened_features():
    key_data, key_noise = jax.random.split(jax.random.key(0))
    x0 = jax.random.normal(key_data, (6, 2, 3)) + 2.0
    x1 = jax.random.normal(key_noise, (6, 2, 3))
    perm = np.asarray(minibatch_ot_pairing(x0, x1))

    def total(p):
        return float(jnp.sum(jnp.square(x0[np.asarray(p)] - x1)))

    assert total(perm) == pytest.approx(min(total(p) for p in itertools.permutations(range(6))), rel=1e-6)
    assert total(perm) < total(range(6))  # strictly better than the independent pairing here


@pytest.mark.parametrize("groups", [1, 4, 16])
def test_grouped_pairing_solves_each_group_optimally_within_itself(groups):
    rng = np.random.default_rng(groups)
    x0, x1 = rng.normal(size=(2, 64, 3)).astype(np.float32)
    x0 += 1.5
    perm = np.asarray(jax.jit(lambda a, b: minibatch_ot_pairing(a, b, groups=groups))(x0, x1))
    assert_permutation(perm, 64)
    size = 64 // groups
    for g in range(groups):
        rows = slice(g * size, (g + 1) * size)
        local = perm[rows] - g * size
        assert_permutation(local.astype(np.int32), size)  # the group maps onto itself
        cost = sq_distances(x1[rows], x0[rows])
        assert cost[np.arange(size), local].sum() <= scipy_cost(cost) + guarantee(cost)


def test_pairing_compiles_once_per_shape():
    testing.clear_trace_counter()
    pairing = testing.jit_with_max_traces(minibatch_ot_pairing, n=1)
    for seed in range(3):
        x0, x1 = jax.random.normal(jax.random.key(seed), (2, 8, 2))
        chex.assert_shape(pairing(x0, x1), (8,))


def custom_call_targets(lowered) -> list[str]:
    """The custom-call targets of a lowered program (StableHLO) and of its compiled HLO."""
    stablehlo = re.findall(r"stablehlo\.custom_call @(\w+)", lowered.as_text())
    return stablehlo + re.findall(r'custom_call_target="([^"]+)"', lowered.compile().as_text())


def test_the_program_calls_no_host_callback():
    x = jnp.zeros((16, 3))
    targets = custom_call_targets(jax.jit(minibatch_ot_pairing).lower(x, x))
    assert not [t for t in targets if "callback" in t or "python" in t], targets
    # The check can fail: a host round-trip like the old scipy path is a python callback custom call in both texts.
    host = custom_call_targets(jax.jit(lambda c: jax.pure_callback(np.argsort, jax.ShapeDtypeStruct((16,), jnp.int32), c)).lower(x[:, 0]))
    assert len([t for t in host if "callback" in t]) == 2, host


def _under_mesh(mesh, fn):
    """``fn`` traced as the trainer traces its step: the abstract mesh and the activation rules in context."""

    def traced(*args):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(parallel.activation_rules()):
            return fn(*args)

    return jax.jit(traced)


def test_under_an_eight_device_mesh_each_device_pairs_only_its_own_rows():
    mesh = parallel.make_mesh("dp")
    b, size = 64, 8  # eight groups of eight, one per device
    rng = np.random.default_rng(0)
    x0, x1 = (jax.device_put(jnp.asarray(a, jnp.float32), parallel.batch_sharding(mesh)) for a in rng.normal(size=(2, b, 3)))
    pairing = _under_mesh(mesh, minibatch_ot_pairing)
    perm = np.asarray(pairing(x0, x1))
    assert_permutation(perm, b)
    x0_np, x1_np = np.asarray(x0), np.asarray(x1)
    for g in range(b // size):
        rows = slice(g * size, (g + 1) * size)
        local = perm[rows] - g * size
        assert_permutation(local.astype(np.int32), size)
        cost = sq_distances(x1_np[rows], x0_np[rows])
        assert cost[np.arange(size), local].sum() <= scipy_cost(cost) + guarantee(cost)
    hlo = pairing.lower(x0, x1).compile().as_text()
    assert f"f32[1,{size},{size}]" in hlo  # each device's program holds its one (g, g) cost matrix ...
    assert f"f32[{b // size},{size},{size}]" not in hlo and f"f32[{b},{b}]" not in hlo  # ... and never all of them
    moved = testing.collectives(hlo)  # only the loops' termination tests cross devices: scalar booleans
    assert moved and all(c.kind == "all-reduce" and c.results == (("pred", ()),) for c in moved), moved


def test_outside_a_mesh_the_default_is_one_assignment_of_the_whole_batch():
    rng = np.random.default_rng(3)
    x0, x1 = rng.normal(size=(2, 16, 2)).astype(np.float32)
    perm = np.asarray(jax.jit(minibatch_ot_pairing)(x0, x1))
    cost = sq_distances(x1, x0)
    assert cost[np.arange(16), perm].sum() <= scipy_cost(cost) + guarantee(cost)


def test_gradients_flow_around_the_pairing_as_through_a_fixed_permutation():
    mesh = parallel.make_mesh("dp")
    rng = np.random.default_rng(1)
    x0, x1 = (jnp.asarray(a, jnp.float32) for a in rng.normal(size=(2, 16, 2)))

    def loss(x0, x1):
        perm = minibatch_ot_pairing(x0, x1)
        return jnp.sum(jnp.square(x0[perm] - x1)), perm

    grad, perm = _under_mesh(mesh, jax.grad(loss, argnums=(0, 1), has_aux=True))(x0, x1)
    fixed = jax.grad(lambda a, b: jnp.sum(jnp.square(a[perm] - b)), argnums=(0, 1))(x0, x1)
    chex.assert_trees_all_close(grad, fixed, rtol=1e-6)


def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="square"):
        optimal_assignment(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="square"):
        optimal_assignment(jnp.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="at least one row"):
        optimal_assignment(jnp.zeros((0, 0)))
    with pytest.raises(ValueError, match="floating"):
        optimal_assignment(jnp.zeros((2, 2), jnp.int32))
    with pytest.raises(ValueError, match="one shape"):
        minibatch_ot_pairing(jnp.zeros((4, 2)), jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="one shape"):
        minibatch_ot_pairing(jnp.zeros((4,)), jnp.zeros((4,)))
    for groups in (0, 3, -2, True, 2.0):
        with pytest.raises(ValueError, match=r"groups must be a positive integer dividing the batch size 4, got"):
            minibatch_ot_pairing(jnp.zeros((4, 2)), jnp.zeros((4, 2)), groups=groups)
