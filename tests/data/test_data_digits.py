"""Tests for jaxlab.data.digits: the embedded data, the split, the [-1, 1] maps."""

import importlib.resources

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxlab.data import NUM_LEVELS, digits_split, digits_to_unit, load_digits, unit_to_digits


def test_load_digits():
    images, labels = load_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert labels.shape == (1797,) and labels.dtype == np.int32
    assert images.max() == NUM_LEVELS - 1 and images.min() == 0
    assert set(np.unique(labels)) == set(range(10))
    assert load_digits()[0] is images  # cached
    with pytest.raises(ValueError):
        images[0, 0, 0] = 1  # shared cache is read-only


def test_attribution_ships_with_the_data():
    text = importlib.resources.files("jaxlab.data").joinpath("DIGITS_ATTRIBUTION.txt").read_text()
    assert "Alpaydin" in text and "Kaynak" in text and "CC BY 4.0" in text


def _rows(images, labels):
    """The (image, label) pairs as sorted byte rows, to compare multisets."""
    rows = np.concatenate([images.reshape(len(images), -1), labels[:, None].astype(np.uint8)], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


def test_split_partitions_the_data_by_class():
    split = digits_split(seed=1, test_fraction=0.2)
    images, labels = load_digits()
    both_images = np.concatenate([split["train_images"], split["test_images"]])
    both_labels = np.concatenate([split["train_labels"], split["test_labels"]])
    np.testing.assert_array_equal(_rows(both_images, both_labels), _rows(images, labels))
    expected_test_counts = [round(0.2 * c) for c in np.bincount(labels)]
    np.testing.assert_array_equal(np.bincount(split["test_labels"], minlength=10), expected_test_counts)
    assert split["train_images"].dtype == np.uint8 and split["test_labels"].dtype == np.int32


def test_split_is_deterministic_in_seed():
    a, b, c = digits_split(seed=3), digits_split(seed=3), digits_split(seed=4)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["test_labels"], c["test_labels"])


@pytest.mark.parametrize("kwargs", [{"test_fraction": 0.0}, {"test_fraction": 1.0}, {"test_fraction": -0.1}, {"seed": -1}])
def test_split_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=f"`{next(iter(kwargs))}`"):
        digits_split(**kwargs)


def test_unit_maps_round_trip():
    images, _ = load_digits()
    x = digits_to_unit(images)
    assert x.dtype == jnp.float32 and float(x.min()) == -1.0 and float(x.max()) == 1.0
    np.testing.assert_array_equal(unit_to_digits(x), images)


def test_unit_to_digits_rounds_and_clips():
    x = jnp.array([-3.0, -1.0, -0.97, 0.0, 0.99, 5.0, jnp.inf])
    np.testing.assert_array_equal(unit_to_digits(x), np.array([0, 0, 0, 8, 16, 16, 16], np.uint8))


@given(st.floats(-1.0, 1.0, width=32))
def test_unit_to_digits_picks_the_nearest_level(value):
    back = float(digits_to_unit(unit_to_digits(jnp.float32(value))))
    assert abs(back - value) <= 1 / 16 + 1e-6  # half of the level spacing 2 / 16
