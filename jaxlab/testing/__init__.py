"""Helpers for testing JAX code: rounding-aware comparisons."""

from jaxlab.testing.tolerance import assert_close_up_to_rounding, rounding_tolerance

__all__ = ["assert_close_up_to_rounding", "rounding_tolerance"]
