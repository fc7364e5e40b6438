"""Two local processes × 4 CPU devices under fsdp: a SIGTERM to one stops both at one step, and the resumed run equals one process × 8 devices."""

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxlab.testing.tolerance import assert_close_up_to_rounding, rounding_tolerance
from jaxlab.train import MetricsLog
from jaxlab.train.checkpoint import Checkpointer
from tests.cli_helpers import overrides, run_cli

STEPS, LOG_EVERY, BATCH = 80, 10, 64
# min_shard_bytes=0: the tiny network's leaves are really split over both processes' devices.
TINY = overrides(
    width=16, depth=1, batch_size=BATCH, eval_samples=64, sample_steps=2, log_every=LOG_EVERY, checkpoint_every=STEPS, strategy="fsdp", min_shard_bytes=0
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(workdir) -> list[subprocess.Popen]:
    """``jaxlab train flow-toy2d`` as processes 0 and 1 of one two-process JAX job."""
    command = [sys.executable, "-m", "jaxlab.cli", "train", "flow-toy2d", "--workdir", str(workdir), "--steps", str(STEPS), *TINY]
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    port = free_port()
    return [
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


def finish(processes: list[subprocess.Popen]) -> list[tuple[int, str]]:
    try:
        outputs = [p.communicate(timeout=240)[0] for p in processes]
    finally:
        for p in processes:
            p.kill()
    return [(p.returncode, output) for p, output in zip(processes, outputs)]


def wait_for_first_log_line(path, processes, timeout=240.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
            pytest.fail(f"no metrics line at {path}:\n" + "\n".join(f"process {i}:\n{o[-3000:]}" for i, (_, o) in enumerate(finish(processes))))
        time.sleep(0.02)


def final_params(workdir):
    return Checkpointer(workdir / "checkpoints").restore_field("params", STEPS, jax.sharding.SingleDeviceSharding(jax.devices()[0]))


def test_a_sigterm_to_one_process_stops_both_at_one_step_and_the_resumed_run_equals_one_process(tmp_path):
    workdir = tmp_path / "two"
    processes = launch(workdir)
    wait_for_first_log_line(workdir / "metrics.jsonl", processes)
    processes[1].send_signal(signal.SIGTERM)  # a preempted host: only process 1 hears it
    stopped = finish(processes)
    for index, (code, output) in enumerate(stopped):
        assert code == 128 + signal.SIGTERM, f"process {index}:\n{output[-3000:]}"
    stop_step = MetricsLog(workdir / "metrics.jsonl").read()[-1]["step"]
    assert 0 < stop_step < STEPS and stop_step % LOG_EVERY == 0
    assert Checkpointer(workdir / "checkpoints").all_steps() == [stop_step]  # written by both processes, at the agreed step

    for index, (code, output) in enumerate(finish(launch(workdir))):
        assert code == 0, f"process {index} (resumed):\n{output[-3000:]}"
    two = MetricsLog(workdir / "metrics.jsonl").read()
    assert [r["step"] for r in two] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))  # one line per logged step: process 1 wrote none

    alone = tmp_path / "one"
    assert run_cli("train", "flow-toy2d", "--workdir", str(alone), "--steps", str(STEPS), *TINY) == 0
    one = MetricsLog(alone / "metrics.jsonl").read()
    # The same global batches and streams; only the all-reduce order across processes may differ.
    rel = rounding_tolerance("float32", BATCH * 2)
    for a, b in zip(two, one, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=rel) and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=rel)
    jax.tree.map(lambda a, b: assert_close_up_to_rounding(np.asarray(a), np.asarray(b), terms=BATCH * STEPS), final_params(workdir), final_params(alone))
