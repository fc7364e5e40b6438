"""The trainer's configuration: one frozen dataclass that experiment configs extend."""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Fields every training experiment has; experiments subclass it to add their own.

    Attributes:
      steps: total number of optimizer steps (resuming continues up to it).
      seed: seeds parameters, data order and every PRNG stream.
      batch_size: global batch size (split over all devices).
      learning_rate: peak learning rate.
      warmup_steps: linear warm-up length; the schedule after it is constant,
        so it does not depend on ``steps`` and a run can be extended.
      ema_decay: decay of the parameter EMA kept in the train state.
      checkpoint_every: write a checkpoint every this many steps (and at the end).
      keep_checkpoints: how many recent checkpoints to keep.
      log_every: append a line to ``metrics.jsonl`` every this many steps.
      strategy: ``"dp"`` (replicated parameters) or ``"fsdp"`` (sharded).
    """

    steps: int = 1000
    seed: int = 0
    batch_size: int = 256
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.999
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 50
    strategy: Literal["dp", "fsdp"] = "dp"

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
