"""Lock-step training of several arms: each arm is exactly its own train() run, resumes on its own, stops together."""

import dataclasses

import numpy as np
import optax
import pytest

from jaxlab.train import Arm, Checkpointer, MetricsLog, NonFiniteLossError, TrainingInterrupted, adamw_with_warmup, train, train_arms
from tests.train.tiny import param_leaves, signal_after_dispatch


def _arms(method, optimizer, config):
    """Two arms that differ in their optimizer (and so in their parameters)."""
    return {"adamw": Arm(method, optimizer), "sgd": Arm(method, optax.sgd(config.learning_rate))}


def _assert_same(a, b) -> None:
    assert int(a.step) == int(b.step)
    for x, y in zip(param_leaves(a), param_leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_each_arm_equals_its_own_train_run(tiny, tmp_path):
    method, optimizer, batches, config = tiny
    config = dataclasses.replace(config, log_every=4)
    arms = _arms(method, optimizer, config)
    states = train_arms(arms, batches, config, tmp_path / "arms", progress=False)
    assert list(states) == ["adamw", "sgd"]
    for name, arm in arms.items():
        alone = train(arm.method, arm.optimizer, batches, config, tmp_path / f"alone-{name}", progress=False)
        _assert_same(alone, states[name])
        logged = MetricsLog(tmp_path / "arms" / name / "metrics.jsonl").read()
        assert [r["step"] for r in logged] == [4, 8, 10, 12, 16, 20, 24]
        assert [r["loss"] for r in logged] == [r["loss"] for r in MetricsLog(tmp_path / f"alone-{name}" / "metrics.jsonl").read()]
        assert (tmp_path / "arms" / name / "loss.png").is_file()
    assert any(not np.array_equal(x, y) for x, y in zip(param_leaves(states["adamw"]), param_leaves(states["sgd"]), strict=True))


def test_a_signal_checkpoints_every_arm_and_a_resumed_run_is_bitwise_the_straight_one(tiny, tmp_path, monkeypatch):
    method, optimizer, batches, config = tiny
    config = dataclasses.replace(config, log_every=4)
    arms = _arms(method, optimizer, config)
    with monkeypatch.context() as patched:
        signal_after_dispatch(patched, 21)  # turns of 4 one-step dispatches: the second arm's step 9
        with pytest.raises(TrainingInterrupted):
            train_arms(arms, batches, config, tmp_path / "run", progress=False)
    steps = {name: Checkpointer(tmp_path / "run" / name / "checkpoints").latest_step() for name in arms}
    assert steps == {"adamw": 12, "sgd": 9}  # the interrupted arm stops mid-turn; the other is saved at its turn's end
    resumed = train_arms(arms, batches, config, tmp_path / "run", progress=False)
    straight = train_arms(arms, batches, config, tmp_path / "straight", progress=False)
    for name in arms:
        _assert_same(straight[name], resumed[name])


def test_a_non_finite_loss_names_the_arm(tiny, tmp_path):
    method, optimizer, batches, config = tiny
    arms = {"ok": Arm(method, optimizer), "diverges": Arm(method, optax.sgd(1e30))}
    with pytest.raises(NonFiniteLossError, match="arm 'diverges': loss is"):
        train_arms(arms, batches, dataclasses.replace(config, steps=6, log_every=2), tmp_path, progress=False)


def test_bad_arms_are_refused_before_anything_is_written(tiny, tmp_path):
    method, optimizer, batches, config = tiny
    with pytest.raises(ValueError, match="at least one Arm"):
        train_arms({}, batches, config, tmp_path / "a")
    with pytest.raises(ValueError, match="plain directory names"):
        train_arms({"../x": Arm(method, optimizer)}, batches, config, tmp_path / "a")
    with pytest.raises(TypeError, match=r"arms\['x'\] must be an Arm"):
        train_arms({"x": (method, optimizer)}, batches, config, tmp_path / "a")
    other = dataclasses.replace(config, steps=config.steps + 1)
    with pytest.raises(ValueError, match=r"must keep the shared steps"):
        train_arms({"x": Arm(method, adamw_with_warmup(other), config=other)}, batches, config, tmp_path / "a")
    assert not (tmp_path / "a").exists()
