"""Test configuration: 8 virtual CPU devices (so sharding is exercised) and a fast hypothesis profile."""

import os

# One BLAS thread per test worker: xdist already runs one worker per core, and
# OpenBLAS threads spinning against each other made small SVDs 50-500x slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
# The tests check what programs compute, not how fast the optimized code runs. Their small
# programs spend most of their time compiling: without XLA's backend optimizations and with its
# older (faster to compile) CPU fusion emitters the suite takes half the time. Subprocesses
# inherit both; JAXLAB_TEST_OPTIMIZED=1 tests the code users run.
if os.environ.get("JAXLAB_TEST_OPTIMIZED") != "1":
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_use_fusion_emitters=false").strip()

import jax
import pytest

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_platforms", "cpu")

from hypothesis import settings

settings.register_profile("jaxlab", max_examples=15, derandomize=True, deadline=None, print_blob=True)
settings.load_profile("jaxlab")


@pytest.fixture(autouse=True)
def _optimized_compilation(request):
    """``@pytest.mark.optimized``: a test whose time is running a big program, not compiling it."""
    if request.node.get_closest_marker("optimized") is None:
        yield
        return
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)
