"""A tiny rectified-flow setup shared by the trainer tests."""

import dataclasses
import functools

import jax
import numpy as np

from jaxlab.generative import RectifiedFlow
from jaxlab.nn import TimeMLP
from jaxlab.train import TrainConfig, adamw_with_warmup


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
