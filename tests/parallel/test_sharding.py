"""Sharding strategies: specs, batch placement, and 1-device == 8-device training."""

import dataclasses

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from jaxlab import parallel
from jaxlab.train import MetricsLog, train
from tests.train.tiny import tiny_setup


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((16, 24), PartitionSpec(None, "fsdp")),
        ((24, 16), PartitionSpec("fsdp", None)),
        ((16, 16), PartitionSpec("fsdp", None)),
        ((3, 5), PartitionSpec()),
        ((), PartitionSpec()),
        ((3, 8), PartitionSpec(None, "fsdp")),
        ((256,), PartitionSpec()),  # a bias: gathering it costs more than it saves
    ],
)
def test_fsdp_spec_picks_the_largest_divisible_axis(shape, expected):
    assert parallel.fsdp_spec(shape, 8) == expected


def test_mesh_axes_per_strategy():
    assert dict(parallel.make_mesh("dp").shape) == {"data": 8, "fsdp": 1, "tensor": 1}
    assert dict(parallel.make_mesh("fsdp").shape) == {"data": 1, "fsdp": 8, "tensor": 1}
    with pytest.raises(ValueError, match="strategy"):
        parallel.make_mesh("tp")


def test_batch_not_divisible_by_devices_is_rejected():
    sharding = parallel.batch_sharding(parallel.make_mesh("dp"))
    with pytest.raises(ValueError, match=r"batch leaf \['x'\].*divisible by the number of devices \(8\).*\(12, 2\)"):
        parallel.put_global_batch({"x": np.zeros((12, 2))}, sharding)


def test_batch_is_split_over_all_devices():
    sharding = parallel.batch_sharding(parallel.make_mesh("fsdp"))
    batch = parallel.put_global_batch({"x": np.arange(32.0).reshape(16, 2)}, sharding)
    assert len(batch["x"].addressable_shards) == 8
    assert {shard.data.shape for shard in batch["x"].addressable_shards} == {(2, 2)}
    np.testing.assert_array_equal(np.asarray(batch["x"]), np.arange(32.0).reshape(16, 2))


@pytest.mark.parametrize("strategy", ["dp", "fsdp"])
def test_one_device_and_eight_devices_give_the_same_losses(strategy, tmp_path):
    method, optimizer, batches, config = tiny_setup()
    config = dataclasses.replace(config, steps=12, strategy=strategy, min_shard_bytes=0)  # shard even the tiny kernels
    one = parallel.make_mesh(strategy, devices=jax.devices()[:1])
    eight = parallel.make_mesh(strategy)
    state_one = train(method, optimizer, batches, config, tmp_path / "one", mesh=one, progress=False)
    state_eight = train(method, optimizer, batches, config, tmp_path / "eight", mesh=eight, progress=False)

    losses_one = [r["loss"] for r in MetricsLog(tmp_path / "one" / "metrics.jsonl").read()]
    losses_eight = [r["loss"] for r in MetricsLog(tmp_path / "eight" / "metrics.jsonl").read()]
    assert len(losses_one) == config.steps
    np.testing.assert_allclose(losses_eight, losses_one, rtol=1e-5, atol=1e-5)

    if strategy == "fsdp":  # parameters really are sharded: the 16-wide kernels split 8 ways
        kernel = state_eight.params["params"]["Dense_2"]["kernel"]
        assert "fsdp" in kernel.sharding.spec
        assert kernel.addressable_shards[0].data.size == kernel.size // 8
    for a, b in zip(jax.tree.leaves(state_one.params), jax.tree.leaves(state_eight.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
