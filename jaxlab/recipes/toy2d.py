"""The configuration fields the toy 2-D experiments share.

The ``*-toy2d`` experiments subclass :class:`Toy2DConfig`, overriding what
they measured differently.
"""

from __future__ import annotations

import dataclasses

from jaxlab.data import Toy2DName
from jaxlab.nn.precision import dtype_name
from jaxlab.train import TrainConfig


@dataclasses.dataclass(frozen=True)
class Toy2DConfig(TrainConfig):
    """Trainer defaults for a ``TimeMLP``-sized model on a toy 2-D distribution, plus its dataset, width and precision.

    ``dtype`` is the compute dtype of the ``TimeMLP`` networks (float32,
    bfloat16 or float16); their parameters, time embeddings and outputs stay
    float32 (:mod:`jaxlab.nn.precision`).
    """

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
    dtype: str = "float32"

    def __post_init__(self) -> None:
        super().__post_init__()
        dtype_name("dtype", self.dtype)  # a bad name exits 2 before anything is compiled
