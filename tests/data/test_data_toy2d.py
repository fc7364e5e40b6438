"""Tests for jaxlab.data.toy2d: shapes, determinism, standardization, geometry."""

import math
import typing

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.data import TOY2D, Toy2DName, checkerboard, eight_gaussians, sample_toy2d, toy2d_batches

NAMES = sorted(TOY2D)
NUM = 50_000  # one sample size throughout, so each sampler compiles once


@pytest.mark.parametrize("name", NAMES)
def test_shape_determinism_and_standardized_moments(name):
    sampler = TOY2D[name]
    a = sampler(jax.random.key(0), NUM)
    chex.assert_shape(a, (NUM, 2))
    assert a.dtype == jnp.float32
    chex.assert_tree_all_finite(a)
    chex.assert_trees_all_equal(a, sampler(jax.random.key(0), NUM))
    assert not np.allclose(a, sampler(jax.random.key(1), NUM))
    # The constants are closed forms: mean 0 and mean per-coordinate variance 1.
    # With 50k points of unit variance the standard error of a mean is about
    # 0.0045 and that of E|x|^2 / 2 below 0.006, so 0.02 / 0.03 are > 4 errors.
    x = np.asarray(a, np.float64)
    np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=0.02)
    assert abs(np.mean(np.sum(x**2, axis=1)) / 2 - 1.0) < 0.03


def test_checkerboard_lies_on_black_squares():
    raw = np.asarray(checkerboard(jax.random.key(3), NUM)) * (2 / math.sqrt(3))  # undo standardization
    assert np.all(np.abs(raw) <= 2.0 + 1e-5)
    cells = np.floor(raw).astype(int)
    assert np.all((cells[:, 0] + cells[:, 1]) % 2 == 0)
    # All 8 black cells are used, about equally (expected NUM / 8 each, std about 80).
    counts = np.unique(cells, axis=0, return_counts=True)[1]
    assert counts.size == 8 and counts.min() > 0.9 * NUM / 8


def test_eight_gaussians_modes():
    raw = np.asarray(eight_gaussians(jax.random.key(5), NUM)) * math.sqrt(0.51)  # centres on the unit circle
    angles = np.arange(8) * np.pi / 4
    centres = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    distances = np.linalg.norm(raw[:, None, :] - centres[None], axis=-1)  # (NUM, 8)
    assert np.all(distances.min(axis=1) < 0.6)  # noise std 0.1: 6 std in 2-D has probability 1.5e-8
    counts = np.bincount(distances.argmin(axis=1), minlength=8)
    assert counts.min() > 0.9 * NUM / 8


def test_jit_and_vmap_over_keys():
    keys = jax.random.split(jax.random.key(0), 3)
    batched = jax.vmap(lambda k: sample_toy2d("pinwheel", key=k, num=NUM))(keys)
    chex.assert_shape(batched, (3, NUM, 2))
    chex.assert_trees_all_close(batched[1], TOY2D["pinwheel"](keys[1], NUM), atol=1e-5)
    jitted = jax.jit(lambda k: sample_toy2d("two_moons", key=k, num=NUM))(keys[0])
    chex.assert_trees_all_equal(jitted, TOY2D["two_moons"](keys[0], NUM))


def test_sample_toy2d_dispatch_and_errors():
    key = jax.random.key(0)
    for name in NAMES:
        chex.assert_trees_all_equal(sample_toy2d(name, key=key, num=NUM), TOY2D[name](key, NUM))
    with pytest.raises(ValueError, match=r"`name`.*checkerboard.*'spiral'"):
        sample_toy2d("spiral", key=key, num=10)
    for bad in (0, -3, 2.5, True, "10"):
        with pytest.raises(ValueError, match="`num`"):
            sample_toy2d("checkerboard", key=key, num=bad)
    with pytest.raises(ValueError, match="`num`"):
        checkerboard(key, 0)


def test_toy2d_batches_are_a_pure_function_of_key_and_step():
    key = jax.random.key(3)
    batches = toy2d_batches("two_moons", key=key, batch_size=32)
    first = batches(5)["x"]
    assert isinstance(first, np.ndarray) and first.shape == (32, 2)
    np.testing.assert_array_equal(first, toy2d_batches("two_moons", key=key, batch_size=32)(5)["x"])
    np.testing.assert_array_equal(first, np.asarray(sample_toy2d("two_moons", key=jax.random.fold_in(key, 5), num=32)))
    assert not np.allclose(first, batches(6)["x"])
    with pytest.raises(ValueError, match="name"):
        toy2d_batches("spiral", key=key, batch_size=32)
    with pytest.raises(ValueError, match="batch_size"):
        toy2d_batches("two_moons", key=key, batch_size=0)


def test_the_config_literal_names_exactly_the_toy_sets():
    assert typing.get_args(Toy2DName) == tuple(TOY2D)
