"""Logical sharding names of activations: layers say what each axis is, the trainer says where it goes.

Networks mark their activations at block boundaries with
:func:`constrain` (``("batch", "length", "embed")``, say). Outside a mesh,
or without rules, that is the identity; a trainer that traces its step
inside ``flax.linen.logical_axis_rules(rules)`` and a mesh turns the names
into ``jax.lax.with_sharding_constraint`` (the rules of
:func:`jaxlab.parallel.activation_rules` split ``"batch"`` over ``("data", "fsdp")``
and the heads and MLP hidden units over ``"tensor"``, the others whole).
Without these constraints XLA's sharding propagation under FSDP follows the
sharded weights into the activations and gathers whole-batch activations
instead of weights.

A name whose mesh axes do not divide its axis is dropped (that axis is left
to XLA): a single-sequence decode step, or a layer with fewer key/value heads
than tensor-parallel devices, stays correct instead of failing to compile.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
from jax import Array

BATCH = "batch"
LENGTH = "length"  # sequence positions
EMBED = "embed"  # model width / channels
HEIGHT = "height"  # image rows
WIDTH = "width"  # image columns
HEADS = "heads"  # attention (query) heads, or the concatenated heads·head_dim features
KV_HEADS = "kv_heads"  # key/value heads (fewer than HEADS under GQA/MQA)
MLP = "mlp"  # hidden units of a feed-forward block


def constrain(x: Array, names: tuple[str | None, ...]) -> Array:
    """``x`` with one logical name per axis (``None``: no constraint on that axis)."""
    if len(names) != x.ndim:
        raise ValueError(f"names must name each of the {x.ndim} axes of x (shape {x.shape}), got {names}")
    return nn.with_logical_constraint(x, _dividing(x.shape, names))


def _dividing(shape: tuple[int, ...], names: tuple[str | None, ...]) -> tuple[str | None, ...]:
    """``names`` with ``None`` for each axis the active mesh cannot split evenly under the active rules."""
    rules = nn.get_logical_axis_rules()
    mesh = jax.sharding.get_abstract_mesh()
    if not rules or mesh.empty:
        return names
    spec = nn.logical_to_mesh_axes(names, rules)
    if spec is None:
        return names
    kept = []
    for name, size, axes in zip(names, shape, spec):
        mesh_axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
        ways = math.prod(mesh.shape[axis] for axis in mesh_axes)
        kept.append(name if size % ways == 0 else None)
    return tuple(kept)
