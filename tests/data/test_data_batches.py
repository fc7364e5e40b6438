"""Tests for jaxlab.data.batches: batches as a pure function of (seed, step)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxlab.data import epoch_permutation_batch, steps_per_epoch


def test_same_seed_and_step_give_the_same_batch():
    a = epoch_permutation_batch(100, 10, seed=1, step=37)
    epoch_permutation_batch(100, 10, seed=5, step=0)  # unrelated calls in between change nothing
    np.testing.assert_array_equal(a, epoch_permutation_batch(100, 10, seed=1, step=37))
    assert not np.array_equal(a, epoch_permutation_batch(100, 10, seed=2, step=37))


def test_each_epoch_visits_every_example_once():
    def epoch(e):  # steps 5e .. 5e + 4
        return np.concatenate([epoch_permutation_batch(60, 12, seed=0, step=5 * e + s) for s in range(5)])

    epochs = [epoch(e) for e in range(3)]
    for order in epochs:
        np.testing.assert_array_equal(np.sort(order), np.arange(60))
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch


def test_resume_order_does_not_matter():
    steps = list(range(20))
    forward = [epoch_permutation_batch(30, 7, seed=3, step=s) for s in steps]
    backward = [epoch_permutation_batch(30, 7, seed=3, step=s) for s in reversed(steps)][::-1]
    np.testing.assert_array_equal(np.stack(forward), np.stack(backward))


def test_tail_is_dropped():
    assert steps_per_epoch(10, 3) == 3
    epoch = np.concatenate([epoch_permutation_batch(10, 3, seed=0, step=s) for s in range(3)])
    assert np.unique(epoch).size == 9  # one example left out this epoch
    next_epoch = epoch_permutation_batch(10, 3, seed=0, step=3)
    assert not np.array_equal(next_epoch, epoch[:3])


@given(st.integers(1, 40), st.data())
def test_batches_hold_distinct_valid_indices(num_examples, data):
    batch_size = data.draw(st.integers(1, num_examples))
    seed, step = data.draw(st.integers(0, 2**32)), data.draw(st.integers(0, 10**6))
    batch = epoch_permutation_batch(num_examples, batch_size, seed=seed, step=step)
    assert batch.shape == (batch_size,) and batch.dtype == np.int64
    assert np.unique(batch).size == batch_size and batch.min() >= 0 and batch.max() < num_examples


@pytest.mark.parametrize(
    ("args", "kwargs", "name"),
    [
        ((10, 11), {}, "`batch_size`"),
        ((0, 1), {}, "`num_examples`"),
        ((10, 2), {"step": -1}, "`step`"),
        ((10, 2), {"seed": 1.5}, "`seed`"),
    ],
)
def test_rejects_bad_arguments(args, kwargs, name):
    with pytest.raises(ValueError, match=name):
        epoch_permutation_batch(*args, **({"seed": 0, "step": 0} | kwargs))
