"""A hand launch of two local processes × 4 CPU devices trains like one process × 8 devices."""

import json
import os
import socket
import subprocess
import sys

import pytest

from jaxlab.testing.tolerance import rounding_tolerance
from jaxlab.train import MetricsLog
from tests.cli_helpers import overrides, run_cli

TINY = overrides(width=16, depth=1, batch_size=64, eval_samples=64, sample_steps=2, log_every=5, checkpoint_every=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_as_one_mesh_and_only_process_0_writes(tmp_path):
    workdir = tmp_path / "two"
    command = [sys.executable, "-m", "jaxlab.cli", "train", "flow-toy2d", "--workdir", str(workdir), "--steps", "10", *TINY]
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    port = free_port()
    processes = [
        subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={
                **os.environ,
                "JAX_PLATFORMS": "cpu",
                "XLA_FLAGS": flags,
                "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                "JAX_NUM_PROCESSES": "2",
                "JAX_PROCESS_ID": str(index),
            },
        )
        for index in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=240)[0] for p in processes]
    finally:
        for p in processes:
            p.kill()
    for index, (p, output) in enumerate(zip(processes, outputs)):
        assert p.returncode == 0, f"process {index}:\n{output[-3000:]}"

    assert json.loads((workdir / "trainer.json").read_text())["devices"] == 8
    two = MetricsLog(workdir / "metrics.jsonl").read()
    assert [r["step"] for r in two] == [5, 10]  # one line per logged step: process 1 wrote nothing

    alone = tmp_path / "one"
    assert run_cli("train", "flow-toy2d", "--workdir", str(alone), "--steps", "10", *TINY) == 0
    one = MetricsLog(alone / "metrics.jsonl").read()
    # The same global batches and streams; only the all-reduce order across processes may differ.
    rel = rounding_tolerance("float32", 64 * 2)
    for a, b in zip(two, one, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=rel) and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=rel)
