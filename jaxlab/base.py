"""The method contract: what a generative method offers and what the trainer passes it.

This leaf module is the only thing both ``jaxlab.generative`` and
``jaxlab.train`` import from each other's world (as optax keeps its contract
in ``_src/base.py``): the trainer calls a method through :class:`Method`, and a
method never sees the trainer's state.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import flax.struct
import jax

Params = Any  # a pytree of arrays (possibly a dict of several networks)
ApplyFn = Callable[..., Any]  # apply_fn(params, x, t, ...) -> Array: a Linen apply, an NNX call or a plain function
Batch = dict[str, jax.Array]  # "x" (b, *features), optionally "label" (b,)


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


def named_key(seed_or_key: int | jax.Array, name: str) -> jax.Array:
    """The typed key of stream ``name`` under a seed (or under a parent key).

    With JAX's partitionable threefry, ``split(key)[i]`` equals
    ``fold_in(key, i)``, so a stream drawn by ``split`` and another by
    ``fold_in(key, 1)`` can silently coincide. Every stream in jaxlab is
    derived by name instead, ``fold_in(root, crc32(name))``: distinct names,
    independent streams.
    """
    root = jax.random.key(seed_or_key) if isinstance(seed_or_key, int) else seed_or_key
    return jax.random.fold_in(root, zlib.crc32(name.encode()) & 0x7FFFFFFF)


@runtime_checkable
class Method(Protocol):
    """A generative method's adapter: a frozen dataclass of hyperparameters and ``apply_fn``.

    The trainer differentiates ``loss``. A method with several networks or
    optimizers also defines ``init_opt_state(params)`` and
    ``train_step(params, opt_state, batch, *, key, ctx) -> (params, opt_state, metrics)``
    (see :class:`OwnTrainStep`); a method with an exact likelihood defines
    ``log_prob(params, x) -> (b,)``. A method initialized from a frozen tree
    (SiD from its teacher) takes it as ``init(key, batch, *, frozen)``; the
    trainer passes its ``frozen`` argument to such an ``init``.
    """

    def init(self, key: jax.Array, batch: Batch) -> Params: ...

    def loss(self, params: Params, batch: Batch, *, key: jax.Array, ctx: Context) -> tuple[jax.Array, dict]: ...

    def sample(self, params: Params, *, key: jax.Array, num: int, steps: int) -> jax.Array: ...


@runtime_checkable
class OwnTrainStep(Protocol):
    """A method that updates its parameters itself (alternating updates, a target network)."""

    def init_opt_state(self, params: Params) -> Any: ...

    def train_step(self, params: Params, opt_state: Any, batch: Batch, *, key: jax.Array, ctx: Context) -> tuple[Params, Any, dict]: ...
