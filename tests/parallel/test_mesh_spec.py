"""The configurable ("data", "fsdp", "tensor") mesh: its CLI form, shapes, batch split, hybrid grid and FSDP size threshold."""

from __future__ import annotations

import dataclasses
import re

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from jaxlab import parallel
from jaxlab.parallel.mesh import _device_grid
from jaxlab.train import TrainConfig


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("data:2,fsdp:4,tensor:1", {"data": 2, "fsdp": 4, "tensor": 1}),
        (" fsdp : 4 , data:2 ", {"data": 2, "fsdp": 4, "tensor": 1}),
        ("tensor:2,fsdp:4", {"data": 1, "fsdp": 4, "tensor": 2}),
        ("data:8", {"data": 8, "fsdp": 1, "tensor": 1}),
    ],
)
def test_parse_mesh_spec_reads_the_cli_form(spec, expected):
    assert parallel.parse_mesh_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("", "entry '' is not axis:size"),
        ("data:2,,fsdp:4", "entry '' is not axis:size"),
        ("data 2", "entry 'data 2' is not axis:size"),
        ("data:", "entry 'data:' is not axis:size"),
        ("model:2", "unknown axis 'model'"),
        ("data:2,data:4", "axis 'data' given twice"),
        ("data:0", "size 0 of 'data' is not positive"),
        ("fsdp:-2", "size -2 of 'fsdp' is not positive"),
        ("data:x", "size 'x' of 'data' is not an integer"),
        ("data:2.5", "size '2.5' of 'data' is not an integer"),
    ],
)
def test_parse_mesh_spec_rejects_bad_forms_naming_mesh_the_form_and_the_input(spec, why):
    with pytest.raises(ValueError, match=r"mesh must look like 'data:2,fsdp:4,tensor:1'.*got " + re.escape(f"{spec!r}: {why}")):
        parallel.parse_mesh_spec(spec)
    with pytest.raises(TypeError, match="mesh must be a string"):
        parallel.parse_mesh_spec(8)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ({"data": 2, "fsdp": 4}, {"data": 2, "fsdp": 4, "tensor": 1}),
        ({"data": 1, "fsdp": 4, "tensor": 2}, {"data": 1, "fsdp": 4, "tensor": 2}),
        (parallel.parse_mesh_spec("tensor:8"), {"data": 1, "fsdp": 1, "tensor": 8}),
    ],
)
def test_make_mesh_with_a_shape(shape, expected):
    mesh = parallel.make_mesh("fsdp", shape=shape)
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert dict(mesh.shape) == expected
    assert set(mesh.axis_types) == {jax.sharding.AxisType.Auto}
    assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in jax.devices())


def test_make_mesh_defaults_keep_the_strategies_shapes():
    assert dict(parallel.make_mesh("dp").shape) == {"data": 8, "fsdp": 1, "tensor": 1}
    assert dict(parallel.make_mesh("fsdp").shape) == {"data": 1, "fsdp": 8, "tensor": 1}
    assert parallel.make_mesh("fsdp", jax.devices()[:2]).shape["fsdp"] == 2
    assert dict(parallel.make_mesh("dp", jax.devices()[:4], shape={"fsdp": 2, "tensor": 2}).shape) == {"data": 1, "fsdp": 2, "tensor": 2}


def test_make_mesh_rejects_a_shape_that_does_not_fit_the_devices():
    with pytest.raises(ValueError, match=r"mesh shape \{'data': 2, 'fsdp': 2, 'tensor': 1\} holds 4 devices \(the product\), but there are 8 devices"):
        parallel.make_mesh("fsdp", shape={"data": 2, "fsdp": 2})
    with pytest.raises(ValueError, match=r"mesh shape may only name the axes.*unknown: \['model'\]"):
        parallel.make_mesh("fsdp", shape={"model": 8})
    with pytest.raises(ValueError, match=r"mesh axis 'data' must have a positive integer size, got 0"):
        parallel.make_mesh("fsdp", shape={"data": 0, "fsdp": 8})
    with pytest.raises(TypeError, match="mesh shape must be a mapping"):
        parallel.make_mesh("fsdp", shape="data:8")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="strategy"):
        parallel.make_mesh("tp", shape={"data": 8})  # type: ignore[arg-type]


def test_data_parallel_size_is_data_times_fsdp():
    assert parallel.data_parallel_size(parallel.make_mesh("dp")) == 8
    assert parallel.data_parallel_size(parallel.make_mesh("fsdp", shape={"data": 2, "fsdp": 4})) == 8
    assert parallel.data_parallel_size(parallel.make_mesh("fsdp", shape={"fsdp": 4, "tensor": 2})) == 4
    assert parallel.data_parallel_size(parallel.make_mesh("dp", shape={"tensor": 8})) == 1


def test_a_tensor_axis_shares_rows_and_divides_the_batch_constraint():
    mesh = parallel.make_mesh("fsdp", shape={"fsdp": 4, "tensor": 2})
    sharding = parallel.batch_sharding(mesh)
    rows = np.arange(24.0).reshape(12, 2)  # 12 rows: divisible by data×fsdp = 4, not by the 8 devices
    batch = parallel.put_global_batch({"x": rows}, sharding)
    np.testing.assert_array_equal(np.asarray(batch["x"]), rows)
    shards = batch["x"].addressable_shards
    assert len(shards) == 8 and {s.data.shape for s in shards} == {(3, 2)}
    for f in range(4):  # the two tensor devices of one fsdp group hold the same rows
        pair = [s for s in shards if s.device in set(mesh.devices[0, f].flat)]
        assert len(pair) == 2
        np.testing.assert_array_equal(np.asarray(pair[0].data), np.asarray(pair[1].data))
        np.testing.assert_array_equal(np.asarray(pair[0].data), rows[3 * f : 3 * f + 3])

    with pytest.raises(ValueError, match=r"batch leaf \['x'\].*devices \(4\) it is split over, the data-parallel size \(data 1 × fsdp 4;.*\(6, 2\)"):
        parallel.put_global_batch({"x": np.zeros((6, 2))}, sharding)
    with pytest.raises(ValueError, match=r"batch leaf \['x'\].*\(8\).*data 2 × fsdp 4.*\(12, 2\)"):
        parallel.put_global_batch({"x": rows}, parallel.batch_sharding(parallel.make_mesh("fsdp", shape={"data": 2, "fsdp": 4})))


def test_the_size_threshold_keeps_small_leaves_replicated():
    mesh = parallel.make_mesh("fsdp", shape={"data": 2, "fsdp": 4})
    tree = {
        "big": jax.ShapeDtypeStruct((1024, 1024), np.float32),  # exactly 4 MiB: not under the threshold
        "small": jax.ShapeDtypeStruct((64, 256), np.float32),  # 64 KiB
        "bias": np.zeros((1024,), np.float32),
        "key": jax.random.key(0),  # an extended dtype
        "step": 3,
    }
    default = parallel.state_shardings(tree, mesh, "fsdp", min_shard_bytes=TrainConfig().min_shard_bytes)
    assert TrainConfig().min_shard_bytes == 4 * 2**20
    assert default["big"].spec == PartitionSpec("fsdp", None)
    assert default["small"].spec == PartitionSpec() and default["bias"].spec == PartitionSpec()
    assert default["key"].spec == PartitionSpec() and default["step"].spec == PartitionSpec()

    everything = parallel.state_shardings(tree, mesh, "fsdp")  # min_shard_bytes=0 by default
    assert everything == parallel.state_shardings(tree, mesh, "fsdp", min_shard_bytes=0)
    assert everything["big"].spec == PartitionSpec("fsdp", None)
    assert everything["small"].spec == PartitionSpec(None, "fsdp")  # 4 fsdp shards, not 8 devices
    assert everything["bias"].spec == PartitionSpec()

    replicated = parallel.state_shardings(tree, mesh, "dp", min_shard_bytes=0)
    assert {s.spec for s in jax.tree.leaves(replicated)} == {PartitionSpec()}
    with pytest.raises(ValueError, match=r"min_shard_bytes must be >= 0, got -1"):
        parallel.state_shardings(tree, mesh, "fsdp", min_shard_bytes=-1)
    with pytest.raises(TypeError, match=r"min_shard_bytes must be an int"):
        parallel.state_shardings(tree, mesh, "fsdp", min_shard_bytes=4.0)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class FakeDevice:
    """What the grid builder reads of a device: its process and kind."""

    id: int
    process_index: int
    platform: str = "cpu"
    device_kind: str = "cpu"


def fake_devices(num_processes: int, per_process: int) -> list[FakeDevice]:
    return [FakeDevice(p * per_process + i, p) for p in range(num_processes) for i in range(per_process)]


def test_the_hybrid_grid_keeps_fsdp_and_tensor_within_a_host():
    devices = fake_devices(2, 4)
    grid = _device_grid(devices, (2, 2, 2), 2)
    assert grid is not None and grid.shape == (2, 2, 2)
    for data in range(2):  # each data row (one fsdp × tensor group) on one process; data spans both
        assert {d.process_index for d in grid[data].flat} == {data}
    assert sorted(d.id for d in grid.flat) == list(range(8))

    grid = _device_grid(fake_devices(4, 2), (8, 1, 1), 4)
    assert grid is not None and [d.process_index for d in grid[:, 0, 0]] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_the_plain_grid_when_one_host_or_data_does_not_divide():
    assert _device_grid(fake_devices(1, 8), (2, 4, 1), 1) is None
    assert _device_grid(fake_devices(2, 4), (1, 8, 1), 2) is None  # fsdp must cross hosts: jax.make_mesh's layout
    assert _device_grid(fake_devices(2, 4), (3, 1, 1), 2) is None
