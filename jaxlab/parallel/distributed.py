"""Multi-host start-up: ``jax.distributed.initialize`` when a launcher asks for it."""

from __future__ import annotations

import os

import jax

# Environment variables that mean "this process is one of several".
_COORDINATOR_VARS = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")
_CLUSTER_SIZE_VARS = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "JAX_NUM_PROCESSES")


def is_multiprocess_environment(environ: dict[str, str] | None = None) -> bool:
    """True when the environment describes a multi-process launch."""
    environ = os.environ if environ is None else environ
    if any(environ.get(name) for name in _COORDINATOR_VARS):
        return True
    return any(int(environ.get(name, "1") or "1") > 1 for name in _CLUSTER_SIZE_VARS)


def maybe_initialize_distributed() -> bool:
    """Calls ``jax.distributed.initialize()`` once if the environment asks for it.

    JAX reads the coordinator address, process count and id from the usual
    variables (``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID``,
    SLURM, Open MPI, cloud TPU metadata).

    Returns:
      Whether initialization ran.
    """
    if not is_multiprocess_environment() or jax.distributed.is_initialized():
        return False
    jax.distributed.initialize()
    return True
