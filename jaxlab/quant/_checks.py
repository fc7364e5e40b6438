"""Input checks shared by the quantizers (run before tracing, so errors name the argument)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp


def check_floating(name: str, x: Any, *, min_ndim: int = 1) -> None:
    """Raises ValueError/TypeError unless ``x`` is a floating array of rank >= ``min_ndim``."""
    if not hasattr(x, "ndim") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have rank >= {min_ndim}, got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating array, got dtype {x.dtype}")


def check_codebook(z: Any, codebook: Any) -> None:
    """``z`` (..., d) floating and ``codebook`` (K, d) floating with the same d."""
    check_floating("z", z)
    check_floating("codebook", codebook, min_ndim=2)
    if codebook.ndim != 2:
        raise ValueError(f"codebook must have shape (num_codes, dim), got {codebook.shape}")
    if z.shape[-1] != codebook.shape[-1]:
        raise ValueError(f"z must have last dimension {codebook.shape[-1]} (the codebook's dim), got shape {z.shape}")


def check_num_codes(num_codes: object) -> int:
    if not isinstance(num_codes, int) or isinstance(num_codes, bool) or num_codes < 1:
        raise ValueError(f"num_codes must be a positive int, got {num_codes!r}")
    return num_codes
