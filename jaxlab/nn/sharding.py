"""Logical sharding names of activations: layers say what each axis is, the trainer says where it goes.

Networks mark their activations at block boundaries with
:func:`constrain` (``("batch", "length", "embed")``, say). Outside a mesh,
or without rules, that is the identity; a trainer that traces its step
inside ``flax.linen.logical_axis_rules(rules)`` and a mesh turns the names
into ``jax.lax.with_sharding_constraint`` (the rules of
:func:`jaxlab.parallel.activation_rules` split ``"batch"`` over every device
and leave the others whole). Without these constraints XLA's sharding
propagation under FSDP follows the sharded weights into the activations and
gathers whole-batch activations instead of weights.
"""

from __future__ import annotations

import flax.linen as nn
from jax import Array

BATCH = "batch"
LENGTH = "length"  # sequence positions
EMBED = "embed"  # model width / channels
HEIGHT = "height"  # image rows
WIDTH = "width"  # image columns


def constrain(x: Array, names: tuple[str | None, ...]) -> Array:
    """``x`` with one logical name per axis (``None``: no constraint on that axis)."""
    if len(names) != x.ndim:
        raise ValueError(f"names must name each of the {x.ndim} axes of x (shape {x.shape}), got {names}")
    return nn.with_logical_constraint(x, names)
