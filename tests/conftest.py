"""Test configuration: 8 virtual CPU devices (so sharding is exercised) and a fast hypothesis profile."""

import os

# One BLAS thread per test worker: xdist already runs one worker per core, and
# OpenBLAS threads spinning against each other made small SVDs 50-500x slower.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_platforms", "cpu")

from hypothesis import settings  # noqa: E402

settings.register_profile("jaxlab", max_examples=15, derandomize=True, deadline=None, print_blob=True)
settings.load_profile("jaxlab")
