"""jaxlab.testing's retrace guard: n traces pass, the next one fails."""

import jax
import jax.numpy as jnp
import pytest

from jaxlab.testing import clear_trace_counter, jit_with_max_traces


def add(x, y):
    return x + y


def test_retrace_guard_allows_n_traces_and_fails_on_the_next():
    clear_trace_counter()
    guarded = jit_with_max_traces(add, n=1)
    for _ in range(3):
        guarded(jnp.ones(3), jnp.ones(3))  # one shape: traced once
    with pytest.raises(AssertionError, match="traced > 1 times"):
        guarded(jnp.ones(4), jnp.ones(4))
    clear_trace_counter()
    static = jit_with_max_traces(lambda x, k: x * k, n=2, static_argnums=1)
    static(jnp.ones(2), 2)
    static(jnp.ones(2), 3)
    with pytest.raises(AssertionError, match="traced > 2 times"):
        static(jnp.ones(2), 4)

    @jit_with_max_traces(n=1)
    def decorated(x):
        return 2 * x

    decorated(jnp.ones(1))
    with pytest.raises(AssertionError, match="traced > 1 times"):
        decorated(jnp.ones(2))
    with pytest.raises(ValueError, match="must not wrap JAX-transformed"):
        jit_with_max_traces(jax.jit(add))
