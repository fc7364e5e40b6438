"""Sampling split over the mesh: each device draws its own rows of a sample batch.

A sampler jitted without an output sharding leaves XLA free to run the whole
batch on every device (the replicated ``P()`` layout), so evaluating N samples
costs N per device however many there are. :func:`sharded_sampler` pins each
output with a leading axis divisible by the data-parallel size to the batch
layout; XLA propagates that back through the sampling loop to the initial
noise (drawn with JAX's partitionable threefry), so each device computes N/D
rows. The result is gathered to every host as numpy, which also covers rows
that live on other processes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding

from jaxlab.parallel.mesh import batch_sharding, data_parallel_size, replicated


def split_rows(tree: Any, mesh: Mesh) -> Any:
    """Constrains (inside jit) each leaf whose leading axis divides over ``data × fsdp`` to the batch layout, the rest to replicated."""
    rows, layout, whole = data_parallel_size(mesh), batch_sharding(mesh), replicated(mesh)

    def constrain(leaf: jax.Array) -> jax.Array:
        divides = leaf.ndim > 0 and leaf.shape[0] % rows == 0
        return jax.lax.with_sharding_constraint(leaf, layout if divides else whole)

    return jax.tree.map(constrain, tree)


def to_host(tree: Any) -> Any:
    """Every leaf as a numpy array on this host, gathered from the other processes where it is split over them."""

    def fetch(leaf: Any) -> np.ndarray:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return np.asarray(leaf)

    return jax.tree.map(fetch, tree)


def _mesh_of(tree: Any) -> Mesh | None:
    """The mesh of the first leaf laid out by a ``NamedSharding`` over a concrete mesh, or None."""
    for leaf in jax.tree.leaves(tree):
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, NamedSharding) and isinstance(sharding.mesh, Mesh):
            return sharding.mesh
    return None


def _onto(mesh: Mesh, tree: Any) -> Any:
    """Arrays committed to other devices than ``mesh``'s (restored onto one device, say), copied onto it replicated.

    Uncommitted arrays (a fresh ``jax.random.key``) follow the mesh by themselves.
    """
    devices, whole = set(mesh.devices.flat), replicated(mesh)

    def place(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and leaf.committed and leaf.sharding.device_set != devices:
            return jax.device_put(leaf, whole)
        return leaf

    return jax.tree.map(place, tree)


def sharded_sampler(fn: Callable[..., Any], mesh: Mesh | None = None, **jit_kwargs: Any) -> Callable[..., Any]:
    """``jax.jit(fn, **jit_kwargs)`` whose outputs are split by rows over a mesh and returned as numpy.

    Args:
      fn: a sampler, e.g. ``method.sample`` (``params, *, key, num, ...``).
      mesh: the mesh to split over; None: the mesh of the first argument
        laid out on one (the trained parameters'), or no split when none is.
        Arguments on other devices are copied onto the mesh, replicated.
      **jit_kwargs: passed to ``jax.jit`` (``static_argnames=("num", "steps")``).

    Returns:
      The jitted sampler; its outputs are numpy arrays equal (up to rounding)
      to ``np.asarray(jax.jit(fn)(...))``. Outputs whose leading axis does not
      divide by the data-parallel size are computed replicated.
    """
    if mesh is not None and not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh or None, got {type(mesh).__name__}")
    compiled: dict[Mesh | None, Callable[..., Any]] = {}

    def jitted(over: Mesh | None) -> Callable[..., Any]:
        if over not in compiled:

            @functools.wraps(fn)
            def split(*args: Any, **kwargs: Any) -> Any:
                out = fn(*args, **kwargs)
                return out if over is None else split_rows(out, over)

            compiled[over] = jax.jit(split, **jit_kwargs)
        return compiled[over]

    @functools.wraps(fn)
    def draw(*args: Any, **kwargs: Any) -> Any:
        over = mesh if mesh is not None else _mesh_of((args, kwargs))
        if over is not None:
            args, kwargs = _onto(over, (args, kwargs))
        return to_host(jitted(over)(*args, **kwargs))

    return draw
