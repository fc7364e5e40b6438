"""Multi-host start-up is triggered only by a launcher's environment."""

import pytest

from jaxlab.parallel import is_multiprocess_environment


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
