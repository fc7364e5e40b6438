"""Multi-host start-up is triggered only by a launcher's environment."""

import os
import socket
import subprocess
import sys
import time

import pytest

from jaxlab.parallel import initialize_arguments, is_multiprocess_environment
from jaxlab.parallel.distributed import TIMEOUT_VAR, initialization_timeout, wait_for_coordinator


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"SLURM_NTASKS": "1"}, False),
        ({"SLURM_NTASKS": "4"}, True),
        ({"OMPI_COMM_WORLD_SIZE": "2"}, True),
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, True),
        ({"JAX_NUM_PROCESSES": "1"}, False),
    ],
)
def test_multiprocess_environment_detection(environ, expected):
    assert is_multiprocess_environment(environ) is expected


def test_a_hand_launch_passes_count_and_id_explicitly():
    environ = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    assert initialize_arguments(environ) == {"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1}


def test_a_cluster_launch_leaves_detection_to_jax():
    assert initialize_arguments({"SLURM_NTASKS": "4"}) == {}
    assert initialize_arguments({"COORDINATOR_ADDRESS": "h:1"}) == {"coordinator_address": "h:1"}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"JAX_NUM_PROCESSES": "2"}, "JAX_NUM_PROCESSES is set but JAX_PROCESS_ID is not"),
        ({"JAX_PROCESS_ID": "0"}, "JAX_PROCESS_ID is set but JAX_NUM_PROCESSES is not"),
        ({"JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"}, "JAX_NUM_PROCESSES must be an integer >= 1, got 'two'"),
        ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, r"JAX_PROCESS_ID must be in \[0, 2\)"),
        ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "-1"}, "JAX_PROCESS_ID must be an integer >= 0, got -1"),
    ],
)
def test_a_broken_hand_launch_is_refused_by_name(environ, message):
    with pytest.raises(ValueError, match=message):
        initialize_arguments(environ)


def test_the_start_up_timeout_comes_from_the_environment():
    assert initialization_timeout({}) == 300
    assert initialization_timeout({TIMEOUT_VAR: "12"}) == 12
    with pytest.raises(ValueError, match=f"{TIMEOUT_VAR} must be an integer >= 1, got 0"):
        initialization_timeout({TIMEOUT_VAR: "0"})


def test_wait_for_coordinator_returns_once_something_listens_and_raises_naming_the_address_otherwise():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        wait_for_coordinator(f"127.0.0.1:{port}", timeout=5)
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=rf"cannot reach the coordinator at 127\.0\.0\.1:{port} .*after 1 s.*{TIMEOUT_VAR}"):
        wait_for_coordinator(f"127.0.0.1:{port}", timeout=1)  # the port is closed now
    assert time.monotonic() - start < 10
    with pytest.raises(ValueError, match="JAX_COORDINATOR_ADDRESS must be host:port"):
        wait_for_coordinator("localhost", timeout=1)


def test_a_process_that_cannot_reach_the_coordinator_exits_with_the_address_not_a_hang(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    environ = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
        "JAX_NUM_PROCESSES": "2",
        "JAX_PROCESS_ID": "1",
        TIMEOUT_VAR: "2",
    }
    command = [sys.executable, "-m", "jaxlab.cli", "train", "flow-toy2d", "--workdir", str(tmp_path / "run"), "--steps", "2"]
    done = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"cannot reach the coordinator at 127.0.0.1:{port}" in done.stderr
    assert not (tmp_path / "run").exists()  # nothing written
