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
