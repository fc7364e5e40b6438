"""Helpers for testing JAX code: tolerances, NumPy oracles, closed-form fields, a causality check, retrace guards.

The hypothesis strategies (:mod:`jaxlab.testing.strategies`) need the
``test`` extra; they are loaded on first use of their names, so
``import jaxlab.testing`` never imports hypothesis.
"""

from __future__ import annotations

import importlib
from typing import Any

from jaxlab.testing.causality import assert_causal
from jaxlab.testing.collectives import Collective, collective_bytes, collectives
from jaxlab.testing.fields import (
    gaussian_flow_velocity,
    gaussian_log_density,
    gaussian_posterior,
    gaussian_reflow_velocity,
    gaussian_transport_map,
    point_mass_velocity,
)
from jaxlab.testing.oracles import (
    attention_from_logits,
    causal_mask,
    dot_product_attention,
    masked_softmax,
    mla_attention,
    rms_norm,
    rope,
)
from jaxlab.testing.tolerance import assert_close_up_to_rounding, rounding_tolerance
from jaxlab.testing.tracing import assert_max_traces, clear_trace_counter, jit_with_max_traces

_STRATEGIES = ("arrays", "few_shapes", "prng_keys", "pytrees")

__all__ = [
    "Collective",
    "assert_causal",
    "assert_close_up_to_rounding",
    "assert_max_traces",
    "attention_from_logits",
    "causal_mask",
    "clear_trace_counter",
    "collective_bytes",
    "collectives",
    "dot_product_attention",
    "gaussian_flow_velocity",
    "gaussian_log_density",
    "gaussian_posterior",
    "gaussian_reflow_velocity",
    "gaussian_transport_map",
    "jit_with_max_traces",
    "masked_softmax",
    "mla_attention",
    "point_mass_velocity",
    "rms_norm",
    "rope",
    "rounding_tolerance",
]  # the strategies are left out so that `from jaxlab.testing import *` needs no hypothesis


def __getattr__(name: str) -> Any:
    if name in _STRATEGIES:
        try:
            strategies = importlib.import_module("jaxlab.testing.strategies")
        except ImportError as error:
            raise ImportError(f"jaxlab.testing.{name} needs hypothesis: pip install 'jaxlab[test]'") from error
        return getattr(strategies, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, *_STRATEGIES])
