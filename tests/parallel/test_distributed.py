"""Multi-host start-up is triggered only by a launcher's environment."""

import pytest

from jaxlab.parallel import initialize_arguments, is_multiprocess_environment


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
