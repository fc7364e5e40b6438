"""The configuration fields the toy 2-D experiments share.

The ``*-toy2d`` experiments subclass :class:`Toy2DConfig`, overriding what
they measured differently.
"""

from __future__ import annotations

import dataclasses

from jaxlab.data import Toy2DName
from jaxlab.train import TrainConfig


@dataclasses.dataclass(frozen=True)
class Toy2DConfig(TrainConfig):
    """Trainer defaults for a ``TimeMLP``-sized model on a toy 2-D distribution, plus its dataset and width."""

    steps: int = 8000
    batch_size: int = 256
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    checkpoint_every: int = 1000
    log_every: int = 100
    dataset: Toy2DName = "checkerboard"
    width: int = 128
    depth: int = 3
