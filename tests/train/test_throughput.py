"""The throughput figures of ``metrics.jsonl``: examples/s, achieved TFLOP/s, MFU and peak memory."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.train import MetricsLog, compile_train_step, init_state, throughput, train
from jaxlab.train.plots import default_names

M, K, N = 64, 48, 80  # a (M, K) @ (K, N) product: 2·M·K·N FLOPs


def test_flops_of_a_matmul_are_the_hand_count():
    x, w = jnp.ones((M, K)), jnp.ones((K, N))
    lowered = jax.jit(jnp.matmul).lower(x, w)
    assert throughput.flops(lowered) == pytest.approx(2 * M * K * N, rel=0.01)
    assert throughput.flops(lowered.compile()) == pytest.approx(2 * M * K * N, rel=0.01)  # one device: the same program


class _Stage:
    def __init__(self, cost):
        self.cost = cost

    def cost_analysis(self):
        if isinstance(self.cost, Exception):
            raise self.cost
        return self.cost


@pytest.mark.parametrize(
    "cost, expected",
    [
        ({"flops": 12.0, "bytes accessed": 3.0}, 12.0),
        ([{"flops": 5.0}, {"flops": 7.0}], 12.0),  # older JAX: one dict per program
        ([{"flops": 5.0}, {"bytes accessed": 1.0}], 5.0),
        (None, None),
        ({}, None),
        ([], None),
        ({"flops": -1.0}, None),  # XLA's "unknown"
        ({"flops": float("nan")}, None),
        (NotImplementedError("no cost model"), None),
    ],
)
def test_flops_reads_every_form_of_the_cost_analysis(cost, expected):
    assert throughput.flops(_Stage(cost)) == expected


@pytest.mark.parametrize(
    "kind, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA H200 NVL", 835.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("TPU v4", 275.0),
        ("TPU v5 lite", 197.0),
        ("TPU v5", 459.0),
        ("TPU v6 lite", 918.0),
    ],
)
def test_peaks_of_known_device_kinds(kind, peak):
    assert throughput.peak_tflops(kind) == peak


@pytest.mark.parametrize("kind", ["cpu", "TPU v4 lite", "NVIDIA GeForce RTX 4090", "Quantum 9000", ""])
def test_an_unknown_device_kind_has_no_peak(kind):
    assert throughput.peak_tflops(kind) is None


def test_mfu_is_the_fraction_of_the_peak_and_left_out_without_one():
    figures = throughput.throughput(4.0, batch_size=32, flops_per_step=5e12, peak_tflops=8 * 989.0)
    assert figures == pytest.approx({"examples_per_sec": 128.0, "tflops_per_sec": 20.0, "mfu": 20.0 / (8 * 989.0)})
    assert throughput.throughput(4.0, batch_size=32, flops_per_step=5e12, peak_tflops=None) == pytest.approx(
        {"examples_per_sec": 128.0, "tflops_per_sec": 20.0}
    )
    assert throughput.throughput(4.0, batch_size=None, flops_per_step=None, peak_tflops=989.0) == {}


def test_tokens_per_sec_counts_the_next_token_targets():
    assert throughput.tokens_per_example({"tokens": np.zeros((8, 65), np.int32)}) == 64
    assert throughput.tokens_per_example({"x": np.zeros((8, 65))}) is None
    assert throughput.tokens_per_example({"tokens": np.zeros((8,), np.int32)}) is None
    figures = throughput.throughput(2.0, batch_size=8, flops_per_step=None, peak_tflops=None, tokens_per_example=64)
    assert figures == pytest.approx({"examples_per_sec": 16.0, "tokens_per_sec": 1024.0})


def test_batch_size_is_the_leading_axis_of_every_leaf():
    assert throughput.batch_size({"x": np.zeros((32, 2)), "labels": np.zeros(32, np.int32)}) == 32
    assert throughput.batch_size({"x": np.zeros((32, 2)), "mask": np.zeros((16, 2))}) is None  # they disagree
    assert throughput.batch_size({"x": np.zeros((32, 2)), "scale": np.float32(1.0)}) is None  # a scalar leaf
    assert throughput.batch_size({}) is None


class _Device:
    def __init__(self, stats):
        self.stats = stats

    def memory_stats(self):
        if isinstance(self.stats, Exception):
            raise self.stats
        return self.stats


def test_peak_memory_is_the_largest_device_peak_in_gib():
    devices = [_Device({"peak_bytes_in_use": 3 * 2**30, "bytes_in_use": 1}), _Device({"peak_bytes_in_use": 2**29})]
    assert throughput.peak_memory_gib(devices) == 3.0
    assert throughput.peak_memory_gib([_Device(None), _Device({}), _Device(NotImplementedError())]) is None  # CPU: no statistics
    assert throughput.peak_memory_gib(jax.local_devices()) is None  # this test machine is a CPU


def _direct_step_flops(method, optimizer, batches, config):
    """The FLOPs of the step :func:`jaxlab.train.compile_train_step` compiles, summed over the devices (each runs the same program)."""
    compiled = compile_train_step(method, optimizer, batches(0), config)
    return compiled.cost_analysis()["flops"] * jax.device_count()


def test_a_run_logs_examples_tflops_and_mfu(tiny, tmp_path, monkeypatch):
    method, optimizer, batches, config = tiny
    monkeypatch.setattr(throughput, "GPU_PEAK_TFLOPS", (("cpu", 1e-3),))  # a made-up peak for this machine's device kind
    config = dataclasses.replace(config, steps=12, log_every=4, checkpoint_every=12)
    train(method, optimizer, batches, config, tmp_path / "single", progress=False)
    train(method, optimizer, batches, dataclasses.replace(config, steps_per_execution=3), tmp_path / "chunked", progress=False)

    flops = _direct_step_flops(method, optimizer, batches, config)
    params = jax.eval_shape(lambda: init_state(method, optimizer, batches(0), config.seed).params)
    kernels = sum(leaf.size for leaf in jax.tree.leaves(params) if leaf.ndim == 2)
    matmuls = 6 * config.batch_size * kernels  # forward (2) and backward (4) FLOPs per weight and example, over all devices
    # The rest, within a factor 4: biases, activations, and the optimizer and EMA updates, which every device repeats.
    assert matmuls <= flops <= 4 * matmuls, (flops, matmuls)
    for run in ("single", "chunked"):  # a scan of 3 steps counts the FLOPs of 3 steps, not of 1
        records = MetricsLog(tmp_path / run / "metrics.jsonl").read()
        assert [r["step"] for r in records] == [4, 8, 12]
        for r in records:
            assert r["examples_per_sec"] == pytest.approx(r["steps_per_sec"] * config.batch_size, rel=1e-12)
            assert r["tflops_per_sec"] == pytest.approx(flops * r["steps_per_sec"] / 1e12, rel=1e-12)
            assert r["mfu"] == pytest.approx(r["tflops_per_sec"] / (1e-3 * jax.device_count()), rel=1e-12)
            assert "peak_memory_gib" not in r  # a CPU reports no allocator statistics
    assert not {"examples_per_sec", "tflops_per_sec", "mfu", "peak_memory_gib"} & set(default_names(records))  # no loss.png panels


def test_an_unknown_device_kind_logs_no_mfu(tiny, tmp_path):
    method, optimizer, batches, config = tiny
    train(method, optimizer, batches, dataclasses.replace(config, steps=4, log_every=2), tmp_path, progress=False)
    records = MetricsLog(tmp_path / "metrics.jsonl").read()
    assert records and all("mfu" not in r and r["tflops_per_sec"] > 0 and r["examples_per_sec"] > 0 for r in records)
