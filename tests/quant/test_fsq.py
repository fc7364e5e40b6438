"""FSQ: index <-> code bijection, every level reachable, straight-through gradient."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab import quant


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (2, 3, 7, 6)])
def test_indices_and_codes_are_a_bijection_over_all_codes(levels):
    n = quant.fsq_num_codes(levels)
    assert n == int(np.prod(levels))
    codes = quant.fsq_indices_to_codes(jnp.arange(n), levels)
    assert codes.shape == (n, len(levels))
    assert len({tuple(row) for row in np.asarray(codes).tolist()}) == n
    np.testing.assert_array_equal(quant.fsq_codes_to_indices(codes, levels), np.arange(n))
    # the grid is exactly the product of the per-channel level sets (an independent enumeration)
    per_channel = [(np.arange(L) - L // 2) / (L // 2) for L in levels]
    grid = {tuple(c) for c in itertools.product(*per_channel)}
    assert {tuple(np.round(row, 6)) for row in np.asarray(codes).tolist()} == {tuple(np.round(c, 6)) for c in grid}


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (2, 3, 4, 6)])
def test_every_level_is_reached_and_zero_maps_to_zero(levels):
    sweep = jnp.linspace(-12.0, 12.0, 4001)
    z = jnp.tile(sweep[:, None], (1, len(levels)))
    out = quant.fsq_quantize(z, levels)
    for i, L in enumerate(levels):
        reached = np.unique(np.round(np.asarray(out.codes[:, i]) * (L // 2)))
        np.testing.assert_array_equal(reached, np.arange(L) - L // 2)
    np.testing.assert_array_equal(quant.fsq_quantize(jnp.zeros((1, len(levels))), levels).codes, 0.0)
    assert len(np.unique(np.asarray(out.indices))) <= quant.fsq_num_codes(levels)
    np.testing.assert_array_equal(out.indices, quant.fsq_codes_to_indices(out.codes, levels))


def test_quantize_gradient_is_the_bound_derivative_over_half_width():
    levels = (8, 5)
    z = jax.random.normal(jax.random.key(0), (7, 2))
    g = jax.random.normal(jax.random.key(1), (7, 2))
    grad = jax.grad(lambda z: jnp.sum(g * quant.fsq_quantize(z, levels).codes))(z)
    # straight-through rounding: d codes/dz = f'(z)/⌊L/2⌋ with f = half·tanh(z + s) − offset
    L = np.asarray(levels, np.float64)
    half = (L - 1) * (1 - 1e-3) / 2
    shift = np.arctanh(np.where(L % 2 == 0, 0.5, 0.0) / half)
    expected = np.asarray(g) * half * (1 - np.tanh(np.asarray(z) + shift) ** 2) / (L // 2)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


def test_bad_levels_and_shapes_are_rejected():
    with pytest.raises(ValueError, match="levels"):
        quant.fsq_quantize(jnp.zeros((2, 2)), (8, 1))
    with pytest.raises(ValueError, match="last dimension len\\(levels\\) = 3"):
        quant.fsq_quantize(jnp.zeros((2, 2)), (8, 5, 5))
    with pytest.raises(TypeError, match="indices"):
        quant.fsq_indices_to_codes(jnp.zeros(3), (4, 4))
