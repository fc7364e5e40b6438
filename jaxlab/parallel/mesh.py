"""Device mesh and sharding strategies.

jaxlab shards with JAX's own machinery only: one mesh over all devices with
axes ``("data", "fsdp")``, ``NamedSharding`` for every array, and ``jax.jit``
with in/out shardings. Two strategies:

* ``"dp"``   — data parallel: mesh shape (n, 1); the batch is split over all
  devices and parameters/optimizer state are replicated.
* ``"fsdp"`` — fully sharded data parallel: mesh shape (1, n); the batch is
  split the same way and every matrix or larger parameter and optimizer-state
  leaf is sharded along its largest axis divisible by n (vectors and leaves
  with no such axis stay replicated). Activations stay split by the batch:
  networks name their axes (:mod:`jaxlab.nn.sharding`) and the trainer traces
  its step under :func:`activation_rules`.

In both cases the batch's leading axis is split over ``("data", "fsdp")``, so
the global batch size must be divisible by the number of devices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxlab.nn.sharding import BATCH, EMBED, HEIGHT, LENGTH, WIDTH

Strategy = Literal["dp", "fsdp"]
STRATEGIES: tuple[str, ...] = ("dp", "fsdp")
MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")


def make_mesh(strategy: Strategy = "dp", devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds the ``("data", "fsdp")`` mesh for a strategy.

    Args:
      strategy: ``"dp"`` puts every device on the ``data`` axis, ``"fsdp"`` on
        the ``fsdp`` axis.
      devices: the devices to use; all of ``jax.devices()`` by default.

    Returns:
      A ``jax.sharding.Mesh`` with axis names ``("data", "fsdp")``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    shape = (n, 1) if strategy == "dp" else (1, n)
    return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 2, devices=devices)


def activation_rules() -> tuple[tuple[str, Any], ...]:
    """Flax logical-axis rules for activations (:mod:`jaxlab.nn.sharding`): the batch over every device, the rest whole."""
    return ((BATCH, BATCH_AXES), (LENGTH, None), (EMBED, None), (HEIGHT, None), (WIDTH, None))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of a batch: leading axis split over every device."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def fsdp_spec(shape: Sequence[int], num_shards: int) -> PartitionSpec:
    """Partition spec sharding the largest axis divisible by ``num_shards``.

    Ties go to the earlier axis. Scalars, vectors (biases, norm scales: their
    gathers cost a collective each for next to no memory) and leaves with no
    divisible axis are replicated.
    """
    if num_shards <= 1 or len(shape) < 2:
        return PartitionSpec()
    divisible = [(size, -axis) for axis, size in enumerate(shape) if size % num_shards == 0]
    if not divisible:
        return PartitionSpec()
    _, neg_axis = max(divisible)
    spec: list[str | None] = [None] * len(shape)
    spec[-neg_axis] = "fsdp"
    return PartitionSpec(*spec)


def state_shardings(tree: Any, mesh: Mesh, strategy: Strategy) -> Any:
    """Shardings for a tree of parameters / optimizer state / EMA under a strategy.

    Args:
      tree: a pytree of arrays or ``jax.ShapeDtypeStruct``.
      mesh: the mesh from :func:`make_mesh`.
      strategy: ``"dp"`` (replicate everything) or ``"fsdp"``.

    Returns:
      A pytree of ``NamedSharding`` with the structure of ``tree``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    num_shards = mesh.shape["fsdp"]

    def leaf_sharding(leaf: Any) -> NamedSharding:
        shape = np.shape(leaf)
        if strategy == "dp":
            return NamedSharding(mesh, PartitionSpec())
        return NamedSharding(mesh, fsdp_spec(shape, num_shards))

    return jax.tree.map(leaf_sharding, tree)


def put_global_batch(batch: Any, sharding: NamedSharding) -> Any:
    """Places a host batch (identical on every process) onto the mesh.

    Each process contributes only the rows of the devices it owns, so this is
    also correct on several hosts, as long as every host computes the same
    global batch (jaxlab's batches are a pure function of (seed, step)).

    Raises:
      ValueError: if a leaf's leading axis is not divisible by the device count.
    """
    num_devices = sharding.mesh.size

    def place(path: Any, leaf: Any) -> jax.Array:
        leaf = np.asarray(leaf)
        if leaf.ndim == 0 or leaf.shape[0] % num_devices:
            raise ValueError(
                f"batch leaf {jax.tree_util.keystr(path) or '<root>'} must have a leading (batch) axis "
                f"divisible by the number of devices ({num_devices}); got shape {leaf.shape}"
            )
        return jax.make_array_from_callback(leaf.shape, sharding, lambda index: leaf[index])

    return jax.tree_util.tree_map_with_path(place, batch)
