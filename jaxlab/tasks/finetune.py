"""Fine-tuning as a trainer task: train a small tree (adapters, a head) on top of frozen weights."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
from jax import Array

from jaxlab.base import Context


@dataclasses.dataclass(frozen=True)
class FineTune:
    """Method adapter: ``task``'s loss of the weights ``assemble(trainable, base)``, training only ``trainable``.

    The trainer's ``frozen`` argument carries ``{"base": weights never
    trained, "start": the trainable tree at step 0}``, so neither is compiled
    into the step as a constant and one adapter serves every start (a LoRA
    initialization, LoRA-GA's gradient-aligned one, full fine-tuning with
    ``assemble = lambda trainable, base: trainable``).

    Attributes:
      task: a method adapter whose ``loss(params, batch, *, key, ctx)`` takes the assembled weights.
      assemble: ``(trainable, base) -> weights``, e.g. :func:`jaxlab.optim.lora_merge` of the adapters into ``base``.
    """

    task: Any
    assemble: Callable[[Any, Any], Any]

    def init(self, key: Array, batch: Any, *, frozen: dict[str, Any] | None = None) -> Any:
        """The given start, or (``frozen`` None) the task's own initialization of the trainable tree."""
        return self.task.init(key, batch) if frozen is None else frozen["start"]

    def weights(self, trainable: Any, frozen: dict[str, Any]) -> Any:
        """The weights the task sees; no gradient reaches ``base``."""
        return self.assemble(trainable, jax.lax.stop_gradient(frozen["base"]))

    def loss(self, params: Any, batch: Any, *, key: Array, ctx: Context) -> tuple[Array, dict[str, Array]]:
        return self.task.loss(self.weights(params, ctx.frozen), batch, key=key, ctx=ctx)
