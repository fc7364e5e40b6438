"""Retrace guards: fail a test when a jitted function is traced (and compiled) more often than expected.

A jitted function is traced again whenever the shapes, dtypes, pytree
structure or static arguments of its inputs change, or when a new function
object is jitted (a ``jax.jit`` inside a loop). In a training loop that is a
silent slowdown; in a test it is a bug worth an assertion. This module
re-exports chex's counter and adds the one-line jit-with-a-guard helper::

    from jaxlab.testing import clear_trace_counter, jit_with_max_traces

    def test_the_step_compiles_once():
        clear_trace_counter()  # counters are global and keyed by the definition site
        step = jit_with_max_traces(train_step, n=1, static_argnames="config")  # or as a decorator
        for batch in batches:  # same shapes every step
            state = step(state, batch, config=config)  # a second trace raises AssertionError

chex keys the count by the wrapped function's source and the stack of
function names where it is wrapped, so a guard rebuilt in a loop, a
parametrized test or a hypothesis example *accumulates* its traces: call
:func:`clear_trace_counter` at the start of such a test, or build the guard
once at module level.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax

__all__ = ["assert_max_traces", "clear_trace_counter", "jit_with_max_traces"]

assert_max_traces = chex.assert_max_traces
clear_trace_counter = chex.clear_trace_counter


def jit_with_max_traces(fn: Callable[..., Any] | None = None, *, n: int = 1, **jit_kwargs: Any) -> Any:
    """``jax.jit(chex.assert_max_traces(fn, n), **jit_kwargs)``: a jitted ``fn`` that raises on its (n+1)-th trace.

    Call it on a function, or use ``@jit_with_max_traces(n=1, static_argnames=...)`` as a decorator.

    Args:
      fn: a Python function (not already jitted or otherwise transformed);
        ``None`` returns a decorator.
      n: the number of traces allowed (one per distinct input signature).
      **jit_kwargs: passed to ``jax.jit`` (``static_argnums``, ``donate_argnums``, …).

    Returns:
      The jitted, guarded function (or a decorator making one).

    Raises:
      ValueError: if ``fn`` is already a JAX-transformed function.
    """
    if fn is None:
        return lambda f: jit_with_max_traces(f, n=n, **jit_kwargs)
    return jax.jit(chex.assert_max_traces(fn, n), **jit_kwargs)
