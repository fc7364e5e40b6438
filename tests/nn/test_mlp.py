"""The time-conditioned MLP and its sinusoidal embedding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.nn import TimeMLP, sinusoidal_embedding


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
