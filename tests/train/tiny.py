"""A tiny rectified-flow setup shared by the trainer tests."""

import dataclasses
import functools
import os
import signal

import jax
import numpy as np

from jaxlab.generative import RectifiedFlow
from jaxlab.nn import TimeMLP
from jaxlab.train import TrainConfig, adamw_with_warmup, loop


@dataclasses.dataclass(frozen=True)
class TinyConfig(TrainConfig):
    steps: int = 24
    batch_size: int = 32
    learning_rate: float = 1e-2
    warmup_steps: int = 5
    checkpoint_every: int = 10
    log_every: int = 1
    ema_decay: float = 0.9


def tiny_method() -> RectifiedFlow:
    network = TimeMLP(width=16, depth=1, time_features=8)
    return RectifiedFlow(apply_fn=network.apply, init_fn=network.init, data_shape=(2,))


def tiny_batches(seed: int = 0, batch_size: int = 32):
    def batches(step: int):
        rng = np.random.default_rng([seed, step])
        return {"x": rng.normal(size=(batch_size, 2)).astype(np.float32) * 0.5 + 1.0}

    return batches


@functools.cache
def tiny_setup():
    """Cached, so every test trains the same method object and reuses its compiled step."""
    config = TinyConfig()
    return tiny_method(), adamw_with_warmup(config), tiny_batches(config.seed, config.batch_size), config


def param_leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state.params))]


def signal_after_dispatch(monkeypatch, dispatch: int, signum: int = signal.SIGTERM) -> None:
    """Sends ``signum`` to this process right after the trainer's ``dispatch``-th step dispatch (counted from 1).

    The trainer builds batches ahead on a thread, so a signal sent from a batch
    function would land at a step that depends on timing; the tally update
    runs in the main thread once per dispatch.
    """
    real, calls = loop._add_to_tally, {"n": 0}

    def counting(*args):
        calls["n"] += 1
        if calls["n"] == dispatch:
            os.kill(os.getpid(), signum)
        return real(*args)

    monkeypatch.setattr(loop, "_add_to_tally", counting)
