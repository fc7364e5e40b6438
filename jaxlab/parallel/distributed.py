"""Multi-host start-up: ``jax.distributed.initialize`` when a launcher asks for it."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import TypedDict

import jax

# Environment variables that mean "this process is one of several".
_COORDINATOR_VARS = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")
_CLUSTER_SIZE_VARS = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "JAX_NUM_PROCESSES")
TIMEOUT_VAR = "JAXLAB_INITIALIZATION_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 300  # jax.distributed.initialize's own default


class _InitializeArguments(TypedDict, total=False):
    coordinator_address: str
    num_processes: int
    process_id: int


def is_multiprocess_environment(environ: Mapping[str, str] | None = None) -> bool:
    """True when the environment describes a multi-process launch."""
    environ = os.environ if environ is None else environ
    if any(environ.get(name) for name in _COORDINATOR_VARS):
        return True
    return any(int(environ.get(name, "1") or "1") > 1 for name in _CLUSTER_SIZE_VARS)


def _int_var(environ: Mapping[str, str], name: str, *, minimum: int) -> int | None:
    text = environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {text!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def initialize_arguments(environ: Mapping[str, str] | None = None) -> _InitializeArguments:
    """The arguments of ``jax.distributed.initialize`` that a hand launch sets in the environment.

    JAX itself reads only ``JAX_COORDINATOR_ADDRESS``; ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` (and ``COORDINATOR_ADDRESS``) are read here and passed
    explicitly. Unset variables are left out, so SLURM, Open MPI and Cloud TPU
    keep JAX's own cluster detection.

    Raises:
      ValueError: a count or id that is not an integer, an id outside
        ``[0, JAX_NUM_PROCESSES)``, or only one of the two given.
    """
    environ = os.environ if environ is None else environ
    arguments: _InitializeArguments = {}
    address = next((environ[name] for name in _COORDINATOR_VARS if environ.get(name)), None)
    if address is not None:
        arguments["coordinator_address"] = address
    count = _int_var(environ, "JAX_NUM_PROCESSES", minimum=1)
    index = _int_var(environ, "JAX_PROCESS_ID", minimum=0)
    if (count is None) != (index is None):
        given, missing = ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if index is None else ("JAX_PROCESS_ID", "JAX_NUM_PROCESSES")
        raise ValueError(f"{given} is set but {missing} is not: a hand launch sets both (and JAX_COORDINATOR_ADDRESS)")
    if count is not None and index is not None:
        if index >= count:
            raise ValueError(f"JAX_PROCESS_ID must be in [0, {count}) for JAX_NUM_PROCESSES={count}, got {index}")
        arguments.update({"num_processes": count, "process_id": index})
    return arguments


def initialization_timeout(environ: Mapping[str, str] | None = None) -> int:
    """Seconds a process waits for the others at start-up: ``JAXLAB_INITIALIZATION_TIMEOUT``, else 300 (JAX's default).

    Raises:
      ValueError: a value that is not a positive integer.
    """
    environ = os.environ if environ is None else environ
    value = _int_var(environ, TIMEOUT_VAR, minimum=1)
    return DEFAULT_TIMEOUT_SECONDS if value is None else value


def wait_for_coordinator(address: str, timeout: float) -> None:
    """Returns once a TCP connection to ``address`` (``host:port``) opens; raises after ``timeout`` seconds.

    JAX's own client aborts the whole process (``DEADLINE_EXCEEDED`` from a C++
    check, no Python exception) when the coordinator never answers, so the
    processes other than 0 look for it first.

    Raises:
      ValueError: ``address`` is not ``host:port``.
      ConnectionError: nothing accepted a connection at ``address`` in time,
        naming the address, the variable and the timeout.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"JAX_COORDINATOR_ADDRESS must be host:port (process 0's), got {address!r}")
    host = host.strip("[]")  # [::1]:1234
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=min(5.0, timeout)):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise ConnectionError(
                    f"cannot reach the coordinator at {address} (JAX_COORDINATOR_ADDRESS) after {timeout:g} s: {error}. "
                    f"Start process 0 (it hosts the coordinator) on that host and port, check the address and the "
                    f"firewall, or wait longer with {TIMEOUT_VAR}=SECONDS."
                ) from None
        time.sleep(0.5)


def maybe_initialize_distributed() -> bool:
    """Calls ``jax.distributed.initialize`` once if the environment asks for it.

    A hand launch sets ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0),
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` on every process (see
    :func:`initialize_arguments`); under SLURM, Open MPI or on Cloud TPU, JAX
    detects the cluster itself. Every process waits at most
    :func:`initialization_timeout` seconds for the others; in a hand launch
    the processes other than 0 first wait that long for the coordinator to
    accept connections (:func:`wait_for_coordinator`).

    Returns:
      Whether initialization ran.

    Raises:
      ValueError: a malformed launch variable.
      ConnectionError: a process other than 0 that cannot reach the coordinator.
    """
    if not is_multiprocess_environment() or jax.distributed.is_initialized():
        return False
    arguments, timeout = initialize_arguments(), initialization_timeout()
    if arguments.get("process_id", 0) != 0 and "coordinator_address" in arguments:
        wait_for_coordinator(arguments["coordinator_address"], timeout)
    jax.distributed.initialize(**arguments, initialization_timeout=timeout)
    return True
