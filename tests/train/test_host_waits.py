"""The loop waits on the host only at log steps: metrics tallied on the device, batches built ahead on a thread, saves in the background."""

import dataclasses
import threading

import numpy as np
import pytest

from jaxlab.train import Checkpointer, MetricsLog, NonFiniteLossError, loop, train
from tests.train.test_resume import PoisonedLoss


def test_metrics_are_fetched_only_at_log_steps_and_are_the_means_of_the_steps(tiny, tmp_path, monkeypatch):
    method, optimizer, batches, config = tiny
    config = dataclasses.replace(config, steps=12, log_every=4, checkpoint_every=12)
    fetches = []
    real = loop._Run._check
    monkeypatch.setattr(loop._Run, "_check", lambda run: fetches.append(int(run.state.step)) or real(run))
    train(method, optimizer, batches, config, tmp_path / "four", progress=False)
    assert fetches == [4, 8, 12]  # the only device-to-host waits of the loop

    monkeypatch.setattr(loop._Run, "_check", real)
    every = train(method, optimizer, batches, dataclasses.replace(config, log_every=1), tmp_path / "one", progress=False)
    per_step = [r["loss"] for r in MetricsLog(tmp_path / "one" / "metrics.jsonl").read()]
    means = [r["loss"] for r in MetricsLog(tmp_path / "four" / "metrics.jsonl").read()]
    np.testing.assert_allclose(means, np.reshape(per_step, (3, 4)).mean(axis=1), rtol=1e-6)
    assert int(every.step) == 12


def test_a_non_finite_loss_between_log_steps_names_its_own_step_and_keeps_the_last_checkpoint(tiny, tmp_path):
    method, optimizer, batches, config = tiny
    config = dataclasses.replace(config, log_every=8, checkpoint_every=10)
    poisoned = PoisonedLoss(method, nan_from_step=13)  # the 14th step; seen at the log step 16
    with pytest.raises(NonFiniteLossError, match="at step 14") as error:
        train(poisoned, optimizer, batches, config, tmp_path, progress=False)
    assert error.value.last_checkpoint == 10
    assert Checkpointer(tmp_path / "checkpoints").all_steps() == [10]
    assert [r["step"] for r in MetricsLog(tmp_path / "metrics.jsonl").read()] == [8, 10]


def test_batches_are_built_ahead_on_a_thread_in_step_order(tiny, tmp_path):
    method, optimizer, batches, config = tiny
    config = dataclasses.replace(config, steps=12, steps_per_execution=3, log_every=6, checkpoint_every=12)
    built = []

    def recording(step):
        built.append((step, threading.current_thread().name))
        return batches(step)

    state = train(method, optimizer, recording, config, tmp_path / "ahead", progress=False)
    assert built[0] == (0, threading.current_thread().name)  # the first batch is checked before anything is written
    ahead = built[1:]
    assert [s for s, _ in ahead] == list(range(12)) and all(name.startswith("jaxlab-batches") for _, name in ahead)
    plain = train(method, optimizer, batches, config, tmp_path / "plain", progress=False)
    for a, b in zip(loop.jax.tree.leaves(state.params), loop.jax.tree.leaves(plain.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_batch_function_that_raises_stops_training_with_its_error(tiny, tmp_path):
    method, optimizer, batches, config = tiny

    def broken(step):
        if step == 7:
            raise OSError("shard 7 is unreadable")
        return batches(step)

    with pytest.raises(OSError, match="shard 7 is unreadable"):
        train(method, optimizer, broken, config, tmp_path, progress=False)
    assert Checkpointer(tmp_path / "checkpoints").latest_step() is None  # step 7 < the first checkpoint (10)


def test_prefetching_stays_two_dispatches_ahead(tiny, tmp_path, monkeypatch):
    method, optimizer, batches, config = tiny
    config = dataclasses.replace(config, steps=12, log_every=12, checkpoint_every=12)
    lead = []
    real = loop._Prefetcher.take

    def take(self, step, length, ahead):
        placed = real(self, step, length, ahead)
        lead.append(max(self._futures, default=step) - step)
        return placed

    monkeypatch.setattr(loop._Prefetcher, "take", take)
    train(method, optimizer, batches, config, tmp_path, progress=False)
    assert max(lead) == 2 and lead[-1] == 0  # one-step dispatches: two batches queued, none past the last step


def test_a_read_right_after_a_background_save_sees_the_checkpoint(tiny, tmp_path):
    method, optimizer, batches, config = tiny
    state = train(method, optimizer, batches, dataclasses.replace(config, steps=10), tmp_path / "run", progress=False)
    checkpointer = Checkpointer(tmp_path / "copy")
    try:
        checkpointer.save(state)
        assert checkpointer.latest_step() == 10  # waits for the write in flight
        assert (tmp_path / "copy" / "10").is_dir()
    finally:
        checkpointer.close()
