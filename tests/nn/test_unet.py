"""The class-conditional U-Net: shapes at two resolutions, zero init, conditioning, per-example independence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.nn import UNet

NET = UNet(channels=(8, 16), num_classes=10, time_features=16, embed_dim=16)
X = jnp.asarray(np.random.default_rng(2).normal(size=(2, 8, 8, 1)), jnp.float32)
T = jnp.array([0.3, 0.6])
LABELS = jnp.array([2, 10])  # 10 is the null class


@pytest.fixture(scope="module")
def apply():
    return jax.jit(NET.apply)


@pytest.fixture(scope="module")
def initial():
    return jax.jit(NET.init)(jax.random.key(0, impl="rbg"), X, T, LABELS)  # rbg: quick to compile


@pytest.fixture(scope="module")
def params(initial):
    """Every leaf perturbed, so the zero-initialised output convolutions do not hide the conditioning."""
    rng = np.random.default_rng(1)
    return jax.tree.map(lambda leaf: leaf + jnp.asarray(0.1 * rng.normal(size=leaf.shape), leaf.dtype), initial)


def test_untrained_network_outputs_zero(initial, apply):
    np.testing.assert_array_equal(apply(initial, X, T, LABELS), 0.0)


def test_runs_at_twice_the_training_resolution(params, apply):
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 16, 16, 1)), jnp.float32)
    out = apply(params, x, T, LABELS)
    assert out.shape == x.shape and np.all(np.isfinite(out)) and np.std(out) > 1e-3


def test_time_and_class_change_only_their_own_example(params, apply):
    base = apply(params, X, T, LABELS)
    relabelled = apply(params, X, T, jnp.array([7, 10]))
    retimed = apply(params, X, jnp.array([0.9, 0.6]), LABELS)
    for changed in (relabelled, retimed):
        assert not np.allclose(changed[0], base[0], atol=1e-4)
        np.testing.assert_allclose(changed[1], base[1], atol=1e-5)


def test_bad_inputs_are_named(params):
    with pytest.raises(ValueError, match=r"x must have shape \(batch, height, width, channels\) with height and width divisible by 2"):
        NET.apply(params, jnp.zeros((2, 7, 8, 1)), T, LABELS)
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\) for a class-conditional UNet, got None"):
        NET.apply(params, X, T)


# --- the precision policy: float32 parameters, conditioning and norms, bf16 convolutions, float32 output ---

LOW = UNet(channels=(8, 16), num_classes=10, time_features=16, embed_dim=16, dtype="bfloat16")
GRID = jnp.arange(129, dtype=jnp.float32) / 128  # the shortcut model's 1/128 grid of t


def bf16_convolutions(lowered_text: str) -> int:
    return sum(1 for line in lowered_text.splitlines() if "stablehlo.convolution" in line and "bf16" in line)


def test_bfloat16_keeps_float32_parameters_and_output_close_to_float32(params, apply):
    init = jax.eval_shape(LOW.init, jax.random.key(0, impl="rbg"), X, T, LABELS)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(init))
    assert jax.tree.structure(init) == jax.tree.structure(params)
    out = jax.jit(LOW.apply)(params, X, T, LABELS)
    reference = apply(params, X, T, LABELS)
    assert out.dtype == jnp.float32
    # 8 mantissa bits per rounding (≈ 0.4%) through ~12 convolutions stay within 5% of the output's scale
    assert np.abs(out - reference).max() <= 0.05 * np.abs(reference).max()
    assert bf16_convolutions(jax.jit(LOW.apply).lower(params, X, T, LABELS).as_text()) >= 10


def test_bfloat16_normalizes_in_float32_and_embeds_the_time_grid_exactly(params):
    x = jnp.broadcast_to(X[:1], (GRID.shape[0], 8, 8, 1))
    labels = jnp.arange(GRID.shape[0]) % 11
    _, state = LOW.apply(params, x, GRID, labels, capture_intermediates=True)
    _, ref_state = NET.apply(params, x, GRID, labels, capture_intermediates=True)
    block = state["intermediates"]["ConditionedResBlock_0"]
    assert block["GroupNorm_0"]["__call__"][0].dtype == jnp.float32
    assert block["__call__"][0].dtype == jnp.bfloat16  # the feature maps
    time = state["intermediates"]["Dense_1"]["__call__"][0]  # the time MLP's output (b, e)
    assert time.dtype == jnp.float32
    np.testing.assert_array_equal(time, ref_state["intermediates"]["Dense_1"]["__call__"][0])
    assert len({row.tobytes() for row in np.asarray(time)}) == GRID.shape[0]


@pytest.mark.parametrize("field", ["dtype", "param_dtype"])
def test_bad_dtype_names_are_named(field):
    net = UNet(channels=(8, 16), **{field: "float64"})
    with pytest.raises(ValueError, match=rf"`{field}` must be one of \('float32', 'bfloat16', 'float16'\); got float64"):
        jax.eval_shape(net.init, jax.random.key(0), X, T)
