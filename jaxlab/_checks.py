"""Argument checks the whole library shares (private): each raises before any tracing, naming the argument.

Every check takes the argument's ``name`` first and its ``value`` second;
``where`` (the public function's name) prefixes the message when the
argument's name alone would be ambiguous.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np


def _prefix(where: str | None) -> str:
    return f"{where}: " if where else ""


def check_choice(name: str, value: Any, choices: Sequence[Any], *, where: str | None = None) -> None:
    """Raises ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{_prefix(where)}{name} must be one of {tuple(choices)}, got {value!r}")


def check_positive_int(name: str, value: Any, *, even: bool = False) -> None:
    """Raises ``ValueError`` unless ``value`` is a positive (optionally even) Python int."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or (even and value % 2):
        kind = "a positive even int" if even else "a positive int"
        raise ValueError(f"{name}: expected {kind}, received {value!r}")


def check_int(name: str, value: object, *, minimum: int) -> int:
    """``int(value)`` if ``value`` is an integer (Python or NumPy; not a bool) ``>= minimum``, else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value!r} of type {type(value).__name__}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value}.")
    return int(value)


def check_fraction(name: str, value: object) -> float:
    """``float(value)`` if ``value`` is a real number strictly between 0 and 1, else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < value < 1.0:  # type: ignore[operator]  # typeshed's Real lacks __gt__
        raise ValueError(f"`{name}` must be a number strictly between 0 and 1; got {value!r}.")
    return float(value)


def check_scalar(name: str, value: Any, *, where: str, schedule: bool = False) -> Any:
    """Raises ``ValueError`` unless ``value`` is a real scalar (or, if allowed, a schedule); returns it.

    Only the *form* is checked (a Python number or a 0-d array; a callable when
    ``schedule``), so hyperparameters injected or traced under
    ``optax.inject_hyperparams`` pass.
    """
    if schedule and callable(value):
        return value
    kind = "a scalar or a schedule (callable step -> scalar)" if schedule else "a scalar"
    if isinstance(value, (bool, np.bool_)) or value is None:
        raise ValueError(f"{where}: {name} must be {kind}, got {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return value
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is None or dtype is None:
        raise ValueError(f"{where}: {name} must be {kind}, got {type(value).__name__} {value!r}")
    if tuple(shape) != () or not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise ValueError(f"{where}: {name} must be {kind}, got an array of shape {tuple(shape)} and dtype {dtype}")
    return value


def check_steps(name: str, steps: Any, *, where: str) -> None:
    """Accepts ``None``, a Python int >= 1, or a scalar integer array (e.g. injected)."""
    if steps is None:
        return
    if isinstance(steps, bool) or not (isinstance(steps, int) or hasattr(steps, "dtype")):
        raise ValueError(f"{where}: {name} must be an int >= 1, got {steps!r}")
    if isinstance(steps, int) and steps < 1:
        raise ValueError(f"{where}: {name} must be an int >= 1, got {steps}")
    if hasattr(steps, "dtype") and (tuple(steps.shape) != () or not jnp.issubdtype(steps.dtype, jnp.integer)):
        raise ValueError(f"{where}: {name} must be a scalar integer, got shape {tuple(steps.shape)} dtype {steps.dtype}")


def check_ndim(name: str, shape: Sequence[int], ndim: int, layout: str) -> None:
    """Raises ``ValueError`` unless ``shape`` has ``ndim`` axes (``layout`` names them)."""
    if len(shape) != ndim:
        raise ValueError(f"{name}: expected shape {layout} ({ndim} axes), received {tuple(shape)}")


def check_shape(name: str, shape: Sequence[int], expected: Sequence[int | None], layout: str) -> None:
    """Raises ``ValueError`` unless ``shape`` matches ``expected`` (``None`` matches any size)."""
    ok = len(shape) == len(expected) and all(e is None or s == e for s, e in zip(shape, expected, strict=False))
    if not ok:
        want = tuple("?" if e is None else e for e in expected)
        raise ValueError(f"{name}: expected shape {layout} = {want}, received {tuple(shape)}")


def check_floating(name: str, x: Any, *, min_ndim: int = 1) -> None:
    """Raises ``TypeError`` unless ``x`` is a floating array, ``ValueError`` unless its rank is >= ``min_ndim``."""
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
