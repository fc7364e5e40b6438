"""Deterministic host-side batching: data order as a pure function of the step.

A training loop that asks "which examples form the batch at global step s?"
rather than pulling from a stateful iterator can be stopped and resumed at
any step and replay bitwise-identical batches: there is no iterator state to
checkpoint.

Each epoch visits the examples in a fresh random order, a permutation that is
a function of ``(seed, epoch)`` only. When ``batch_size`` does not divide the
number of examples, the last ``num_examples % batch_size`` entries of each
epoch's permutation are dropped (a different random subset each epoch), so
every batch is full and every example is still seen over several epochs.
"""

from __future__ import annotations

import functools

import numpy as np

from jaxlab._checks import check_int


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Number of full batches in one epoch (the tail is dropped).

    Args:
      num_examples: size of the data set, >= 1.
      batch_size: examples per batch, between 1 and ``num_examples``.

    Returns:
      ``num_examples // batch_size``.

    Raises:
      ValueError: if an argument is not a positive int or
        ``batch_size > num_examples``.
    """
    num_examples = check_int("num_examples", num_examples, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if batch_size > num_examples:
        raise ValueError(f"`batch_size` must be at most num_examples = {num_examples}; got {batch_size}.")
    return num_examples // batch_size


@functools.lru_cache(maxsize=4)
def _epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The read-only order of the examples in one epoch (cached: consecutive steps share it)."""
    order = np.random.default_rng((seed, epoch)).permutation(num_examples)  # (num_examples,)
    order.flags.writeable = False
    return order


def epoch_permutation_batch(num_examples: int, batch_size: int, *, seed: int, step: int) -> np.ndarray:
    """The example indices of the batch at global step ``step``.

    Step ``s`` falls in epoch ``s // steps_per_epoch`` at position
    ``s % steps_per_epoch``; its batch is that slice of the epoch's
    permutation.

    Args:
      num_examples: size of the data set.
      batch_size: examples per batch, at most ``num_examples``.
      seed: non-negative integer seed.
      step: non-negative global step (counting from 0 across epochs).

    Returns:
      int64 array (batch_size,) of distinct indices in ``[0, num_examples)``.

    Raises:
      ValueError: if an argument is out of range.
    """
    steps = steps_per_epoch(num_examples, batch_size)
    seed = check_int("seed", seed, minimum=0)
    epoch, position = divmod(check_int("step", step, minimum=0), steps)
    order = _epoch_permutation(int(num_examples), seed, epoch)
    return order[position * batch_size : (position + 1) * batch_size].astype(np.int64)
