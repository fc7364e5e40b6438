"""Device mesh and sharding strategies.

jaxlab shards with JAX's own machinery only: one mesh over all devices with
axes ``("data", "fsdp", "tensor")``, ``NamedSharding`` for every array, and
``jax.jit`` with in/out shardings. The mesh's shape says where devices go
(:func:`make_mesh`, :func:`parse_mesh_spec` for the CLI form
``"data:2,fsdp:4,tensor:1"``); the strategy says how parameters are laid out:

* ``"dp"``   — data parallel: parameters and optimizer state are replicated.
  Default mesh: every device on ``data``.
* ``"fsdp"`` — fully sharded data parallel: every matrix or larger parameter
  and optimizer-state leaf of at least ``min_shard_bytes`` is sharded over the
  ``fsdp`` axis along its largest axis divisible by its size (vectors, small
  leaves and leaves with no such axis stay replicated). Default mesh: every
  device on ``fsdp``; ``data:a,fsdp:b`` is hybrid sharding (``b``-way FSDP
  groups, replicated ``a`` times).

The batch's leading axis is split over ``("data", "fsdp")`` in both cases, so
the global batch size must be divisible by their product
(:func:`data_parallel_size`). Devices along ``tensor`` see the same rows and
split the attention heads and MLP hidden units (Megatron-LM tensor
parallelism, Shoeybi et al. 2019, arXiv:1909.08053): the query/key/value and
gate/up kernels by columns, the attention-output and down kernels by rows
(:data:`TENSOR_RULES`, :func:`tensor_axis`), so each block costs one
all-reduce of its output over ``tensor`` forward and one backward. Under
``"fsdp"`` such a kernel is split over ``fsdp`` along another axis as well.
Activations stay split by the batch (and by heads / hidden units over
``tensor``): networks name their axes (:mod:`jaxlab.nn.sharding`, the
logical-axis idea of maxtext: layers name axes, one rule table maps names to
mesh axes) and the trainer traces its step under :func:`activation_rules`.

On several hosts the device grid keeps ``fsdp`` and ``tensor`` within a host
and lets ``data`` span hosts when the shape allows it (``data`` divisible by the
number of processes), so the frequent parameter gathers stay on the fast
intra-host links and only the gradient all-reduce crosses hosts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AbstractMesh, Mesh, NamedSharding, PartitionSpec

from jaxlab.nn.sharding import BATCH, EMBED, HEADS, HEIGHT, KV_HEADS, LENGTH, MLP, WIDTH

Strategy = Literal["dp", "fsdp"]
STRATEGIES: tuple[str, ...] = ("dp", "fsdp")
MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
MESH_SPEC_FORM = "data:2,fsdp:4,tensor:1"
_SPEC_ENTRY = re.compile(r"\s*([^:\s]*)\s*:\s*([^\s]*)\s*")

# (pattern on a leaf's "/"-joined path, axis split over "tensor"): the kernels of
# jaxlab.nn.MultiHeadAttention and the SwiGLU of jaxlab.nn.DecoderLM; they match the
# parameters and every optimizer-state leaf that mirrors them (Adam moments, momenta).
TENSOR_RULES: tuple[tuple[str, int], ...] = (
    (r"(^|/)(query|key|value)/kernel$", 1),  # (D, heads·d): column-parallel
    (r"(^|/)attention/out/kernel$", 0),  # (heads·d, D): row-parallel
    (r"(^|/)mlp/(gate|up)/kernel$", 1),  # (D, hidden): column-parallel
    (r"(^|/)mlp/down/kernel$", 0),  # (hidden, D): row-parallel
)


def parse_mesh_spec(spec: str) -> dict[str, int]:
    """Reads the CLI form of a mesh shape, ``"data:2,fsdp:4,tensor:1"``.

    Axes may come in any order and be left out (size 1); whitespace around
    names, sizes and commas is ignored.

    Returns:
      ``{"data": a, "fsdp": b, "tensor": c}``, every axis present.

    Raises:
      TypeError: if ``spec`` is not a string.
      ValueError: naming ``mesh``, the expected form and what was received, for
        an empty entry, an unknown or repeated axis, or a size that is not a
        positive integer.
    """
    if not isinstance(spec, str):
        raise TypeError(f"mesh must be a string like {MESH_SPEC_FORM!r}, got {type(spec).__name__} {spec!r}")

    def bad(why: str) -> ValueError:
        return ValueError(f"mesh must look like {MESH_SPEC_FORM!r} (axes {', '.join(MESH_AXES)}; positive integer sizes), got {spec!r}: {why}")

    sizes: dict[str, int] = {}
    for entry in spec.split(","):
        match = _SPEC_ENTRY.fullmatch(entry)
        if match is None or not match.group(1) or not match.group(2):
            raise bad(f"entry {entry.strip()!r} is not axis:size")
        name, size = match.groups()
        if name not in MESH_AXES:
            raise bad(f"unknown axis {name!r}")
        if name in sizes:
            raise bad(f"axis {name!r} given twice")
        if not re.fullmatch(r"[+-]?\d+", size):
            raise bad(f"size {size!r} of {name!r} is not an integer")
        if int(size) < 1:
            raise bad(f"size {int(size)} of {name!r} is not positive")
        sizes[name] = int(size)
    return {axis: sizes.get(axis, 1) for axis in MESH_AXES}


def _check_shape(shape: Mapping[str, int], num_devices: int) -> tuple[int, int, int]:
    """``shape`` as ``(data, fsdp, tensor)`` sizes, checked against the axis names and the device count."""
    if not isinstance(shape, Mapping):
        raise TypeError(f"mesh shape must be a mapping like {dict(zip(MESH_AXES, (2, 4, 1)))}, got {type(shape).__name__} {shape!r}")
    unknown = [name for name in shape if name not in MESH_AXES]
    if unknown:
        raise ValueError(f"mesh shape may only name the axes {MESH_AXES}, got {dict(shape)} (unknown: {unknown})")
    data, fsdp, tensor = sizes = (shape.get("data", 1), shape.get("fsdp", 1), shape.get("tensor", 1))
    for axis, size in zip(MESH_AXES, sizes):
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
            raise ValueError(f"mesh axis {axis!r} must have a positive integer size, got {size!r} in {dict(shape)}")
    if math.prod(sizes) != num_devices:
        raise ValueError(f"mesh shape {dict(zip(MESH_AXES, sizes))} holds {math.prod(sizes)} devices (the product), but there are {num_devices} devices")
    return data, fsdp, tensor


def _device_grid(devices: Sequence[Any], shape: tuple[int, int, int], num_processes: int) -> np.ndarray | None:
    """The ``(data, fsdp, tensor)`` array of devices for several hosts, or ``None`` for :func:`jax.make_mesh`'s layout.

    With ``num_processes > 1``, ``data`` divisible by it and the same number of
    devices on each process, each process holds a block of whole ``data``
    rows: ``fsdp`` and ``tensor`` groups never cross hosts. Otherwise (one
    host, or a shape that cannot keep them within hosts) ``None``.
    """
    data, fsdp, tensor = shape
    if num_processes <= 1 or data % num_processes:
        return None
    per_process = [sum(d.process_index == p for d in devices) for p in sorted({d.process_index for d in devices})]
    if len(per_process) != num_processes or len(set(per_process)) != 1:
        return None
    return mesh_utils.create_hybrid_device_mesh((data // num_processes, fsdp, tensor), (num_processes, 1, 1), devices, process_is_granule=True)


def make_mesh(strategy: Strategy = "dp", devices: Sequence[jax.Device] | None = None, *, shape: Mapping[str, int] | None = None) -> Mesh:
    """Builds the ``("data", "fsdp", "tensor")`` mesh.

    Args:
      strategy: the parameter layout the mesh is for; without ``shape`` it
        decides the mesh: ``"dp"`` puts every device on ``data``, ``"fsdp"`` on
        ``fsdp``.
      devices: the devices to use; all of ``jax.devices()`` by default.
      shape: ``{"data": a, "fsdp": b, "tensor": c}`` (missing axes are 1;
        :func:`parse_mesh_spec` reads the CLI form), whose product must be the
        device count. Under ``"dp"`` an ``fsdp`` axis larger than 1 is one
        more data-parallel axis.

    Returns:
      A ``jax.sharding.Mesh`` with axis names ``("data", "fsdp", "tensor")``,
      every axis of type ``Auto``. When the devices span several processes the
      grid keeps ``fsdp`` and ``tensor`` within a host if ``data`` is
      divisible by the process count.

    Raises:
      ValueError: for an unknown strategy, or (naming ``mesh``) a shape with
        unknown axes, non-positive sizes or a product other than the device count.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if shape is None:
        shape = {"data": n} if strategy == "dp" else {"fsdp": n}
    sizes = _check_shape(shape, n)
    axis_types = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    grid = _device_grid(devices, sizes, len({d.process_index for d in devices}))
    if grid is None:
        return jax.make_mesh(sizes, MESH_AXES, axis_types=axis_types, devices=devices)
    return Mesh(grid, MESH_AXES, axis_types=axis_types)


def data_parallel_size(mesh: Mesh | AbstractMesh) -> int:
    """How many ways the batch is split: the product of the mesh's ``data`` and ``fsdp`` sizes (``tensor`` shares rows)."""
    return math.prod(mesh.shape.get(axis, 1) for axis in BATCH_AXES)


def activation_rules() -> tuple[tuple[str, Any], ...]:
    """Flax logical-axis rules for activations (:mod:`jaxlab.nn.sharding`).

    The batch over ``("data", "fsdp")``, heads and MLP hidden units over
    ``"tensor"``, the rest whole.
    """
    return ((BATCH, BATCH_AXES), (HEADS, "tensor"), (KV_HEADS, "tensor"), (MLP, "tensor"), (LENGTH, None), (EMBED, None), (HEIGHT, None), (WIDTH, None))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding of a batch: leading axis split over ``("data", "fsdp")``, replicated over ``tensor``."""
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
    axis = _fsdp_axis(shape, num_shards, None)
    if axis is None:
        return PartitionSpec()
    spec: list[str | None] = [None] * len(shape)
    spec[axis] = "fsdp"
    return PartitionSpec(*spec)


def _path_names(path: tuple) -> str:
    """A pytree path as ``"params/block_0/attention/query/kernel"``."""
    names = (getattr(entry, "key", getattr(entry, "name", getattr(entry, "idx", entry))) for entry in path)
    return "/".join(str(name) for name in names)


def tensor_axis(path: str, shape: Sequence[int], num_shards: int) -> int | None:
    """The axis of a leaf that :data:`TENSOR_RULES` split over ``tensor``, or ``None``.

    Args:
      path: the leaf's path with ``/`` between keys (``"params/block_0/mlp/up/kernel"``).
      shape: the leaf's shape.
      num_shards: the size of the mesh's ``tensor`` axis.

    Returns:
      The rule's axis when a rule matches a 2-D leaf whose axis ``num_shards``
      divides (and ``num_shards > 1``); otherwise ``None`` (replicated over ``tensor``).
    """
    if num_shards <= 1 or len(shape) != 2:
        return None
    for pattern, axis in TENSOR_RULES:
        if re.search(pattern, path):
            return axis if shape[axis] % num_shards == 0 else None
    return None


def _fsdp_axis(shape: Sequence[int], num_shards: int, taken: int | None) -> int | None:
    """:func:`fsdp_spec`'s choice of axis, skipping the one already split over ``tensor``."""
    if num_shards <= 1 or len(shape) < 2:
        return None
    divisible = [(size, -axis) for axis, size in enumerate(shape) if size % num_shards == 0 and axis != taken]
    return -max(divisible)[1] if divisible else None


def _num_bytes(leaf: Any) -> int:
    # dtype.itemsize, not np.dtype(...): PRNG key arrays have extended dtypes numpy does not know.
    dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
    return math.prod(np.shape(leaf)) * int(dtype.itemsize)


def state_shardings(tree: Any, mesh: Mesh, strategy: Strategy, *, min_shard_bytes: int = 0) -> Any:
    """Shardings for a tree of parameters / optimizer state / EMA under a strategy.

    Args:
      tree: a pytree of arrays or ``jax.ShapeDtypeStruct``.
      mesh: the mesh from :func:`make_mesh`. With a ``tensor`` axis larger
        than 1, the leaves :func:`tensor_axis` names are split over it under
        either strategy, whatever their size (their activations are split the
        same way, so a replicated kernel would cost a gather per use).
      strategy: ``"dp"`` (replicate everything else) or ``"fsdp"``
        (:func:`fsdp_spec` over the mesh's ``fsdp`` axis, on an axis other
        than the tensor-parallel one).
      min_shard_bytes: under ``"fsdp"``, leaves smaller than this many bytes
        are not split over ``fsdp``: gathering them costs a collective each for
        little memory. ``0`` (the default) shards every leaf :func:`fsdp_spec`
        allows; the trainer passes ``TrainConfig.min_shard_bytes`` (4 MiB by
        default).

    Returns:
      A pytree of ``NamedSharding`` with the structure of ``tree``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if isinstance(min_shard_bytes, bool) or not isinstance(min_shard_bytes, int | np.integer):
        raise TypeError(f"min_shard_bytes must be an int (bytes), got {type(min_shard_bytes).__name__} {min_shard_bytes!r}")
    if min_shard_bytes < 0:
        raise ValueError(f"min_shard_bytes must be >= 0, got {min_shard_bytes}")

    def leaf_sharding(path: tuple, leaf: Any) -> NamedSharding:
        shape = np.shape(leaf)
        spec: list[str | None] = [None] * len(shape)
        tensor = tensor_axis(_path_names(path), shape, mesh.shape["tensor"])
        if tensor is not None:
            spec[tensor] = "tensor"
        if strategy == "fsdp" and not (min_shard_bytes and _num_bytes(leaf) < min_shard_bytes):
            fsdp = _fsdp_axis(shape, mesh.shape["fsdp"], tensor)
            if fsdp is not None:
                spec[fsdp] = "fsdp"
        return NamedSharding(mesh, PartitionSpec(*spec) if any(spec) else PartitionSpec())

    return jax.tree_util.tree_map_with_path(leaf_sharding, tree)


def _is_lazy_leaf(leaf: Any) -> bool:
    """A leaf that says its shape and dtype and is indexed per device, e.g. :class:`jaxlab.data.ImageRows` (np.generic has __getitem__ too)."""
    if isinstance(leaf, np.ndarray | np.generic | jax.Array):
        return False
    return all(hasattr(leaf, name) for name in ("shape", "dtype", "__getitem__"))


def put_global_batch(batch: Any, sharding: NamedSharding) -> Any:
    """Places a host batch (identical on every process) onto the mesh.

    Each process contributes only the rows of the devices it owns, so this is
    also correct on several hosts, as long as every host computes the same
    global batch (jaxlab's batches are a pure function of (seed, step)).

    A leaf that is not an array but has ``shape``, ``dtype`` and
    ``__getitem__`` (a lazy leaf such as :class:`jaxlab.data.ImageRows`) is
    not materialized: it is only indexed by the rows of this process's
    devices, so each process loads only its own slice of the batch.

    Raises:
      ValueError: if a leaf's leading axis is not divisible by the
        data-parallel size (:func:`data_parallel_size` of the sharding's mesh).
    """
    mesh = sharding.mesh
    num_rows_split = data_parallel_size(mesh)
    split = " × ".join(f"{axis} {mesh.shape.get(axis, 1)}" for axis in BATCH_AXES)

    def place(path: Any, leaf: Any) -> jax.Array:
        leaf = leaf if _is_lazy_leaf(leaf) else np.asarray(leaf)
        shape = tuple(int(size) for size in leaf.shape)
        if not shape or shape[0] % num_rows_split:
            raise ValueError(
                f"batch leaf {jax.tree_util.keystr(path) or '<root>'} must have a leading (batch) axis divisible by the number of devices "
                f"({num_rows_split}) it is split over, the data-parallel size ({split}; tensor-parallel devices share rows); got shape {shape}"
            )
        return jax.make_array_from_callback(shape, sharding, lambda index: np.asarray(leaf[index]))

    return jax.tree_util.tree_map_with_path(place, batch)
