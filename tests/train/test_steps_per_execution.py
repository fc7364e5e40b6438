"""Several steps per dispatch (``steps_per_execution``) run the same steps as one at a time, and evaluations land where asked."""

import dataclasses

import numpy as np
import pytest

from jaxlab.train import Checkpointer, MetricsLog, NonFiniteLossError, train
from tests.train.test_resume import PoisonedLoss
from tests.train.tiny import param_leaves


def _chunked(config, **changes):
    # log_every 6 is not a multiple of 4: stretches of 4 and 2 steps, cut at every log and checkpoint step.
    return dataclasses.replace(config, steps_per_execution=4, log_every=6, **changes)


def test_chunked_steps_equal_single_steps(tiny, tmp_path):
    """The same keys, batches and updates in a ``lax.scan``, up to float32 rounding (XLA may fuse a scanned step differently)."""
    method, optimizer, batches, config = tiny
    single = train(method, optimizer, batches, dataclasses.replace(config, log_every=6), tmp_path / "single", progress=False)
    chunked = train(method, optimizer, batches, _chunked(config), tmp_path / "chunked", progress=False)

    assert int(chunked.step) == int(single.step) == config.steps
    for a, b in zip(param_leaves(single), param_leaves(chunked), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    single_log = MetricsLog(tmp_path / "single" / "metrics.jsonl").read()
    chunked_log = MetricsLog(tmp_path / "chunked" / "metrics.jsonl").read()
    assert [r["step"] for r in chunked_log] == [r["step"] for r in single_log] == [6, 10, 12, 18, 20, 24]
    np.testing.assert_allclose([r["loss"] for r in chunked_log], [r["loss"] for r in single_log], rtol=1e-6)
    assert Checkpointer(tmp_path / "chunked" / "checkpoints").all_steps() == Checkpointer(tmp_path / "single" / "checkpoints").all_steps()
    assert all(r["steps_per_sec"] > 0 for r in chunked_log)


def test_a_chunked_resume_is_bitwise_the_straight_chunked_run(tiny, tmp_path):
    method, optimizer, batches, config = tiny
    straight = train(method, optimizer, batches, _chunked(config), tmp_path / "straight", progress=False)
    train(method, optimizer, batches, _chunked(config, steps=10), tmp_path / "resumed", progress=False)
    resumed = train(method, optimizer, batches, _chunked(config), tmp_path / "resumed", progress=False)
    for a, b in zip(param_leaves(straight), param_leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_nan_inside_a_chunk_names_its_own_step(tiny, tmp_path):
    method, optimizer, batches, config = tiny
    poisoned = PoisonedLoss(method, nan_from_step=14)  # the 15th step, inside the stretch 13..16
    with pytest.raises(NonFiniteLossError, match="at step 15") as error:
        train(poisoned, optimizer, batches, _chunked(config), tmp_path, progress=False)
    assert error.value.last_checkpoint == 10
    assert max(r["step"] for r in MetricsLog(tmp_path / "metrics.jsonl").read()) == 12


def test_evaluate_every_evaluates_at_those_steps_and_at_checkpoints(tiny, tmp_path):
    method, optimizer, batches, config = tiny
    seen = []

    def evaluate(state):
        seen.append(int(state.step))
        return {"step_seen": int(state.step)}

    train(method, optimizer, batches, dataclasses.replace(config, log_every=3), tmp_path, progress=False, evaluate=evaluate, evaluate_every=6)
    assert seen == [6, 10, 12, 18, 20, 24]
    logged = {r["step"]: r for r in MetricsLog(tmp_path / "metrics.jsonl").read()}
    assert all(logged[s]["eval_step_seen"] == s for s in seen)
    assert "eval_step_seen" not in logged[3]


@pytest.mark.parametrize("every", [4, 0, 2.0])
def test_evaluate_every_must_be_a_multiple_of_log_every(tiny, tmp_path, every):
    method, optimizer, batches, config = tiny
    with pytest.raises(ValueError, match=r"evaluate_every must be a positive multiple of log_every \(3\)"):
        train(method, optimizer, batches, dataclasses.replace(config, log_every=3), tmp_path, progress=False, evaluate=dict, evaluate_every=every)
    assert not (tmp_path / "checkpoints").exists()


def test_steps_per_execution_must_be_positive(tiny):
    with pytest.raises(ValueError, match="steps_per_execution must be a positive int, got 0"):
        dataclasses.replace(tiny[3], steps_per_execution=0)


def test_evaluations_read_back_with_the_training_seconds_of_each_interval(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for record in ({"step": 10, "steps_per_sec": 5.0, "loss": 1.0, "eval_loss": 0.5}, {"step": 15, "steps_per_sec": 1.0, "loss": 0.9},
                   {"step": 25, "steps_per_sec": 2.0, "loss": 0.8, "eval_loss": 0.4, "eval_accuracy": 0.9}):  # fmt: skip
        log.append(record)
    assert log.evaluations() == [{"step": 10, "seconds": 2.0, "loss": 0.5}, {"step": 25, "seconds": 12.0, "loss": 0.4, "accuracy": 0.9}]
    assert log.training_seconds() == 12.0
