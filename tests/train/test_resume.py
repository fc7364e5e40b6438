"""Resuming reproduces an uninterrupted run bit for bit; signals and NaNs leave good checkpoints."""

import dataclasses
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.train import (
    Checkpointer,
    MetricsLog,
    NonFiniteLossError,
    TrainingInterrupted,
    train,
)
from tests.train.tiny import param_leaves, signal_after_dispatch


def test_resume_is_bitwise_identical(tiny, tmp_path):
    method, optimizer, batches, config = tiny
    straight = train(method, optimizer, batches, config, tmp_path / "straight", progress=False)

    half = dataclasses.replace(config, steps=config.steps // 2)
    train(method, optimizer, batches, half, tmp_path / "resumed", progress=False)
    assert Checkpointer(tmp_path / "resumed" / "checkpoints").latest_step() == half.steps
    resumed = train(method, optimizer, batches, config, tmp_path / "resumed", progress=False)

    assert int(resumed.step) == int(straight.step) == config.steps
    for a, b in zip(param_leaves(straight), param_leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(straight.ema_params), jax.tree.leaves(resumed.ema_params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    straight_log = [r["loss"] for r in MetricsLog(tmp_path / "straight" / "metrics.jsonl").read()]
    resumed_log = [r["loss"] for r in MetricsLog(tmp_path / "resumed" / "metrics.jsonl").read()]
    assert straight_log == resumed_log


def test_a_different_seed_changes_the_parameters(tiny, tmp_path):
    """Guards the test above: identical results must not come from ignoring the inputs."""
    method, optimizer, batches, config = tiny
    a = train(method, optimizer, batches, config, tmp_path / "a", progress=False)
    b = train(method, optimizer, batches, dataclasses.replace(config, seed=1), tmp_path / "b", progress=False)
    assert any(not np.array_equal(x, y) for x, y in zip(param_leaves(a), param_leaves(b)))


def test_signal_writes_a_checkpoint_and_resume_continues(tiny, tmp_path, monkeypatch):
    method, optimizer, batches, config = tiny
    interrupt_at = 17
    with monkeypatch.context() as patched, pytest.raises(TrainingInterrupted) as stop:
        signal_after_dispatch(patched, interrupt_at + 1)  # after step 18's dispatch
        train(method, optimizer, batches, config, tmp_path, progress=False)
    assert stop.value.signum == signal.SIGTERM
    assert stop.value.step == interrupt_at + 1
    assert Checkpointer(tmp_path / "checkpoints").latest_step() == interrupt_at + 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored

    resumed = train(method, optimizer, batches, config, tmp_path, progress=False)
    straight = train(method, optimizer, batches, config, tmp_path / "straight", progress=False)
    for a, b in zip(param_leaves(straight), param_leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


@dataclasses.dataclass(frozen=True)
class PoisonedLoss:
    """Wraps a method so the loss turns NaN from a given step on."""

    inner: object
    nan_from_step: int

    def init(self, key, batch):
        return self.inner.init(key, batch)

    def loss(self, params, batch, *, key, ctx):
        loss, aux = self.inner.loss(params, batch, key=key, ctx=ctx)
        return jnp.where(ctx.step >= self.nan_from_step, jnp.nan, loss), aux


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
    method, optimizer, batches, config = tiny
    poisoned = PoisonedLoss(method, nan_from_step=23)  # step index 23 is the 24th step
    with pytest.raises(NonFiniteLossError, match="at step 24") as error:
        train(poisoned, optimizer, batches, config, tmp_path, progress=False)
    assert error.value.last_checkpoint == 20
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    assert checkpointer.latest_step() == 20
    logged = MetricsLog(tmp_path / "metrics.jsonl").read()
    assert max(r["step"] for r in logged) < 24
    assert all(np.isfinite(r["loss"]) for r in logged)
