"""The trainer's configuration: one frozen dataclass that experiment configs extend."""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Collection
from typing import Any, ClassVar, Literal, TypeGuard


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Fields every training experiment has; experiments subclass it to add their own.

    Every ``int`` field (and every entry of a ``tuple[int, ...]`` field) of a
    subclass must be >= 1 unless listed in ``NONNEGATIVE`` (>= 0 allowed);
    every float must be finite and learning rates (``*learning_rate``,
    ``*_lr``) positive — see :func:`check_fields`. A subclass with a field
    that may be 0 extends ``NONNEGATIVE``.

    Attributes:
      steps: total number of optimizer steps (resuming continues up to it).
      seed: seeds parameters, data order and every PRNG stream.
      batch_size: global batch size (split over all devices, so it must be
        divisible by the device count).
      learning_rate: peak learning rate.
      warmup_steps: linear warm-up length; the schedule after it is constant,
        so it does not depend on ``steps`` and a run can be extended.
      ema_decay: decay of the parameter EMA kept in the train state.
      ema_warmup: ramp the EMA decay as ``min(ema_decay, (1 + s) / (10 + s))``
        at step ``s``, so a short run's EMA is not dominated by the initial
        weights (a function of the step only: resuming stays exact).
      checkpoint_every: write a checkpoint every this many steps (and at the end).
      keep_checkpoints: how many recent checkpoints to keep.
      log_every: append a line to ``metrics.jsonl`` every this many steps.
      strategy: ``"dp"`` (replicated parameters) or ``"fsdp"`` (sharded).
      mesh: the device mesh's shape as ``"data:2,fsdp:4,tensor:1"`` (axes
        left out have size 1; :func:`jaxlab.parallel.parse_mesh_spec`); its
        product must be the device count. ``""`` (default): every device on
        ``data`` under ``"dp"``, on ``fsdp`` under ``"fsdp"``. Batches split
        over ``data`` × ``fsdp``, so ``batch_size`` must divide by their
        product.
      min_shard_bytes: under ``"fsdp"``, parameter and state leaves smaller
        than this many bytes stay replicated: gathering them costs a
        collective each for little memory (4 MiB by default; 0 shards every
        leaf with a divisible axis).
      steps_per_execution: optimizer steps run by one dispatch to the
        devices (a ``lax.scan`` over that many batches; Keras's name). More
        than 1 removes the host's per-step overhead for small models; a
        stretch up to the next log or checkpoint step that is shorter runs
        (and compiles once) at its own length, so keep ``log_every`` and
        ``checkpoint_every`` multiples of it. The steps, keys and batches are
        those of stepping one at a time; the result agrees up to float
        rounding (XLA may fuse a scanned step differently).
    """

    NONNEGATIVE: ClassVar[frozenset[str]] = frozenset({"seed", "warmup_steps", "split_seed", "min_shard_bytes"})

    steps: int = 1000
    seed: int = 0
    batch_size: int = 256
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    ema_decay: float = 0.999
    ema_warmup: bool = True
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 50
    strategy: Literal["dp", "fsdp"] = "dp"
    mesh: str = ""
    min_shard_bytes: int = 4 * 2**20
    steps_per_execution: int = 1

    def __post_init__(self) -> None:
        check_fields(self, nonnegative=self.NONNEGATIVE)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if self.mesh:
            from jaxlab.parallel.mesh import parse_mesh_spec

            parse_mesh_spec(self.mesh)  # the form only; the device count is checked where the devices are known


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def check_fields(config: Any, *, nonnegative: Collection[str] = ()) -> None:
    """Checks a config dataclass's fields by their type, before anything is built from them.

    * ``int`` fields and the entries of ``tuple[int, ...]`` fields: >= 1, or
      >= 0 for the names in ``nonnegative``;
    * ``float`` fields and ``tuple[float, ...]`` entries: finite; fields whose
      name ends in ``learning_rate`` or ``_lr``: > 0;

    Optional (``X | None``) fields are checked when they are not None. Other
    types (strings, ``Literal`` choices, booleans) are left to the parser.

    Raises:
      ValueError: naming the field, what it must be and what it got.
    """
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        name, value, hint = field.name, getattr(config, field.name), hints[field.name]
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            continue
        if type(None) in args and len(args) == 2:  # X | None with a value: check it as X
            hint = next(a for a in args if a is not type(None))
        minimum = 0 if name in nonnegative else 1
        what = "an int >= 0" if minimum == 0 else "a positive int"
        if hint is int:
            if not _is_int(value) or value < minimum:
                raise ValueError(f"{name} must be {what}, got {value!r}")
        elif hint is float:
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            if (name.endswith(("learning_rate", "_lr"))) and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        elif typing.get_origin(hint) is tuple and isinstance(value, tuple):
            entry = typing.get_args(hint)[0] if typing.get_args(hint) else None
            if entry is int and any(not _is_int(v) or v < minimum for v in value):
                raise ValueError(f"{name} must hold only ints >= {minimum}, got {value!r}")
            if entry is float and any(not isinstance(v, (int, float)) or not math.isfinite(v) for v in value):
                raise ValueError(f"{name} must hold only finite numbers, got {value!r}")


def check_divisible(config: Any, fields: Collection[str], num_devices: int, *, over: str = "") -> None:
    """Checks that each named field of ``config`` (that it has) divides evenly over the devices.

    ``over`` names what ``num_devices`` counts in the message (default: "the
    number of devices").

    Raises:
      ValueError: naming the field, the device count and the value.
    """
    over = over or f"the number of devices ({num_devices})"
    for name in fields:
        value = getattr(config, name, None)
        if _is_int(value) and value % num_devices:
            lower, upper = value - value % num_devices, value - value % num_devices + num_devices
            suggestion = f"e.g. {lower} or {upper}" if lower else f"e.g. {upper}"
            raise ValueError(f"{name} must be divisible by {over}, got {value} ({suggestion})")
