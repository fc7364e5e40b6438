"""Test configuration: 8 virtual CPU devices (so sharding is exercised) and a fast hypothesis profile."""

import jax

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_platforms", "cpu")

from hypothesis import settings  # noqa: E402

settings.register_profile("jaxlab", max_examples=15, derandomize=True, deadline=None, print_blob=True)
settings.load_profile("jaxlab")
