"""The train state (the trainer's own; methods never see it) and the EMA.

``Context``, the part a method reads, lives in :mod:`jaxlab.base` and is
re-exported here.

Both are registered pytrees (``flax.struct.dataclass``), so they pass through
``jax.jit`` (with donation), sharding and checkpointing as plain trees.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import flax.struct
import jax
import jax.numpy as jnp

from jaxlab.base import Context, Params

__all__ = ["Context", "TrainState", "describe_ema", "ema_decay_at", "ema_update"]


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

    if TYPE_CHECKING:  # flax.struct.dataclass adds it at runtime

        def replace(self, **updates: Any) -> TrainState: ...

    @classmethod
    def create(cls, params: Params, opt_state: Any, *, key: jax.Array) -> TrainState:
        """A state at step 0 whose EMA starts at the initial parameters."""
        return cls(
            params=params,
            opt_state=opt_state,
            ema_params=jax.tree.map(jnp.copy, params),
            step=jnp.zeros((), jnp.int32),
            key=key,
        )


def ema_decay_at(step: jax.Array | int, decay: float, *, warmup: bool = True) -> jax.Array:
    """The EMA decay used by the update after step ``step`` (0 for the first update).

    With ``warmup``, ``min(decay, (1 + step) / (10 + step))``: the first
    updates average over only the last few steps, so after ``s`` steps the
    initial weights carry a negligible weight (≈ 9!/s⁹) instead of
    ``decay**s`` (74% after 300 steps at 0.999). The ramp reaches 0.999 at
    step 8990. A function of the step only, so a resumed run repeats an
    uninterrupted one exactly.
    """
    decay_f32 = jnp.asarray(decay, jnp.float32)
    if not warmup:
        return decay_f32
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(decay_f32, (1.0 + step) / (10.0 + step))


def ema_update(ema: Params, params: Params, decay: float | jax.Array) -> Params:
    """``decay · ema + (1 − decay) · params`` leaf by leaf."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def describe_ema(decay: float, step: int, *, warmup: bool = True) -> str:
    """Says which weights an evaluation uses, for logs: the EMA, its decay and, with warm-up, the decay reached."""
    if not warmup:
        return f"EMA parameters (decay {decay:g}) at step {step}"
    now = float(ema_decay_at(max(step - 1, 0), decay, warmup=True))
    return f"EMA parameters (decay {decay:g} with warm-up, {now:.4g} at step {step})"
