"""The train state and the context a loss may read.

Both are registered pytrees (``flax.struct.dataclass``), so they pass through
``jax.jit`` (with donation), sharding and checkpointing as plain trees.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

Params = Any


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training.

    Attributes:
      params: the trained parameters (may be a dict of several networks).
      opt_state: the optimizer state (or a method's own optimizer states).
      ema_params: exponential moving average of ``params``.
      step: number of completed optimizer steps, an int32 scalar.
      key: the run's base typed PRNG key; step ``s`` uses
        ``jax.random.fold_in(key, s)``, so randomness is a function of
        (seed, step) and a resumed run repeats an uninterrupted one exactly.
    """

    params: Params
    opt_state: Any
    ema_params: Params
    step: jax.Array
    key: jax.Array

    @classmethod
    def create(cls, params: Params, opt_state: Any, *, key: jax.Array) -> "TrainState":
        """A state at step 0 whose EMA starts at the initial parameters."""
        return cls(
            params=params,
            opt_state=opt_state,
            ema_params=jax.tree.map(jnp.copy, params),
            step=jnp.zeros((), jnp.int32),
            key=key,
        )


@flax.struct.dataclass
class Context:
    """What a method's ``loss`` may need beyond its parameters.

    Attributes:
      step: the current training step (int32 scalar, traced under jit).
      ema_params: the EMA parameters before this step's update.
      frozen: trees the loss reads but never updates (a teacher), or None.
    """

    step: jax.Array
    ema_params: Params
    frozen: Any = None


def ema_update(ema: Params, params: Params, decay: float) -> Params:
    """``decay · ema + (1 − decay) · params`` leaf by leaf."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
