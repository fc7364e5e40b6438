"""The time-conditioned MLP and its sinusoidal embedding."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.nn import TimeMLP, sinusoidal_embedding
from jaxlab.nn.mlp import ClassifierMLP


def test_sinusoidal_embedding_values():
    emb = sinusoidal_embedding(jnp.array([0.0, 0.5]), 8, scale=1.0)
    assert emb.shape == (2, 8)
    np.testing.assert_allclose(emb[0], [1, 1, 1, 1, 0, 0, 0, 0], atol=1e-7)  # cos(0), sin(0)
    frequencies = np.exp(-np.log(10_000.0) * np.arange(4) / 4)
    np.testing.assert_allclose(emb[1, :4], np.cos(0.5 * frequencies), rtol=1e-6)
    with pytest.raises(ValueError, match="dim must be even"):
        sinusoidal_embedding(jnp.zeros(2), 7)


def test_time_mlp_shape_zero_init_output_and_time_dependence():
    net = TimeMLP(width=32, depth=2, time_features=16)
    x = jax.random.normal(jax.random.key(0), (5, 3))
    params = net.init(jax.random.key(1), x, jnp.zeros(5))
    np.testing.assert_array_equal(net.apply(params, x, jnp.zeros(5)), 0.0)  # zero-initialized head
    params = jax.tree.map(lambda p: p + 0.1, params)
    out0, out1 = net.apply(params, x, jnp.zeros(5)), net.apply(params, x, jnp.ones(5))
    assert out0.shape == (5, 3)
    assert not np.allclose(out0, out1)
    out_extra = net.apply(params, x, jnp.zeros(5), jnp.full(5, 0.25))  # an extra condition (step size)
    assert not np.allclose(out0, out_extra)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, features\), got \(5,\)"):
        net.apply(params, x[:, 0], jnp.zeros(5))


# --- the precision policy: float32 parameters and conditions, bf16 products, float32 output ---

GRID = jnp.arange(129, dtype=jnp.float32) / 128  # the shortcut model's 1/128 grid of t, 0 and 1 included


def bf16_products(lowered_text: str, op: str = "dot_general") -> int:
    """How many ``op`` lines of a lowered (StableHLO) program take bfloat16 operands."""
    return sum(1 for line in lowered_text.splitlines() if re.search(rf"stablehlo\.{op}\b", line) and "bf16" in line)


def perturbed(params, seed=1):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: leaf + jnp.asarray(0.1 * rng.normal(size=leaf.shape), leaf.dtype), params)


def float32_leaves(tree) -> bool:
    return all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(tree))


def test_sinusoidal_embedding_is_float32_for_any_t_dtype():
    exact = sinusoidal_embedding(GRID, 16)
    assert exact.dtype == jnp.float32
    # every k/128 is a bf16 number, so a bf16 t embeds to the same float32 features
    np.testing.assert_array_equal(sinusoidal_embedding(GRID.astype(jnp.bfloat16), 16), exact)
    frequencies = np.exp(-np.log(10_000.0) * np.arange(8) / 8)
    angles = 1000.0 * np.arange(129)[:, None] / 128 * frequencies  # float64 oracle
    np.testing.assert_allclose(exact, np.concatenate([np.cos(angles), np.sin(angles)], -1), atol=1e-4)


@pytest.mark.parametrize("separate", [False, True], ids=["shared", "separate"])
def test_time_mlp_bfloat16_keeps_float32_parameters_and_output(separate):
    net = TimeMLP(width=32, depth=2, time_features=16, separate_conditions=separate)
    low = TimeMLP(width=32, depth=2, time_features=16, separate_conditions=separate, dtype="bfloat16")
    x = jax.random.normal(jax.random.key(0), (GRID.shape[0], 3))
    d = jnp.full(GRID.shape, 1 / 128)
    params = perturbed(low.init(jax.random.key(1), x, GRID, d))
    assert float32_leaves(params)
    assert jax.tree.structure(params) == jax.tree.structure(net.init(jax.random.key(1), x, GRID, d))
    out, state = low.apply(params, x, GRID, d, capture_intermediates=True)
    reference, ref_state = net.apply(params, x, GRID, d, capture_intermediates=True)
    assert out.dtype == jnp.float32
    assert state["intermediates"]["ResidualBlock_0"]["__call__"][0].dtype == jnp.bfloat16  # the residual stream
    # bf16 keeps 8 mantissa bits (2^-8 ≈ 0.4%); a few layers of rounding stay within 5% of the output's scale
    assert np.abs(out - reference).max() <= 0.05 * np.abs(reference).max()
    assert bf16_products(jax.jit(low.apply).lower(params, x, GRID, d).as_text()) >= 2 * 3  # each block's dots
    # The conditions are embedded in float32 in both networks: bit for bit the same, 129 distinct rows.
    names = ["cond0_out", "cond1_out"] if separate else ["Dense_1"]
    for name in names:
        emb, ref = state["intermediates"][name]["__call__"][0], ref_state["intermediates"][name]["__call__"][0]
        assert emb.dtype == jnp.float32
        np.testing.assert_array_equal(emb, ref)
    emb = state["intermediates"][names[0]]["__call__"][0]
    assert len({row.tobytes() for row in np.asarray(emb)}) == GRID.shape[0]


def test_time_mlp_bfloat16_tells_apart_times_a_bf16_t_would_merge():
    # just below t = 1 bfloat16 numbers are 1/256 apart: these eight t would round to two values
    t = 1.0 - jnp.arange(8, dtype=jnp.float32) / 2048
    assert len(set(np.asarray(t.astype(jnp.bfloat16)).tolist())) == 2
    net = TimeMLP(width=16, depth=1, time_features=16, dtype=jnp.bfloat16)
    x = jnp.ones((8, 2))
    params = perturbed(net.init(jax.random.key(0), x, t))
    _, state = net.apply(params, x, t, capture_intermediates=True)
    cond = np.asarray(state["intermediates"]["Dense_1"]["__call__"][0])
    assert len({row.tobytes() for row in cond}) == 8


def test_classifier_mlp_bfloat16_returns_float32_logits_close_to_float32():
    x = jax.random.normal(jax.random.key(0), (4, 12))
    net, low = ClassifierMLP(width=32, num_classes=5), ClassifierMLP(width=32, num_classes=5, dtype=jnp.bfloat16)
    params = low.init(jax.random.key(1), x)
    assert float32_leaves(params)
    logits, reference = low.apply(params, x), net.apply(params, x)
    assert logits.dtype == jnp.float32 and reference.dtype == jnp.float32
    assert np.abs(logits - reference).max() <= 0.05 * np.abs(reference).max()
    assert bf16_products(jax.jit(low.apply).lower(params, x).as_text()) == 3  # two hidden layers and the head


def test_bfloat16_parameters_are_allowed():
    net = TimeMLP(width=16, depth=1, time_features=16, dtype="bfloat16", param_dtype="bfloat16")
    params = net.init(jax.random.key(0), jnp.ones((2, 2)), jnp.zeros(2))
    assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(params))
    assert net.apply(params, jnp.ones((2, 2)), jnp.zeros(2)).dtype == jnp.float32


@pytest.mark.parametrize(
    "net",
    [
        TimeMLP(width=8, depth=1, dtype="float64"),
        TimeMLP(width=8, depth=1, param_dtype=jnp.int8),
        ClassifierMLP(width=8, dtype="bf16"),
        ClassifierMLP(width=8, param_dtype="float64"),
    ],
    ids=["time_dtype", "time_param_dtype", "classifier_dtype", "classifier_param_dtype"],
)
def test_bad_dtype_names_are_named(net):
    field = "param_dtype" if net.param_dtype != jnp.float32 else "dtype"
    args = (jnp.ones((2, 2)), jnp.zeros(2)) if isinstance(net, TimeMLP) else (jnp.ones((2, 2)),)
    with pytest.raises(ValueError, match=rf"`{field}` must be one of \('float32', 'bfloat16', 'float16'\); got"):
        jax.eval_shape(net.init, jax.random.key(0), *args)
