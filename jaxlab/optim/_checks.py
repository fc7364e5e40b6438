"""Validation of optimizer hyperparameters (they may be traced under ``optax.inject_hyperparams``)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def check_scalar(value, name: str, fn: str, *, schedule: bool = False):
    """Raises ``ValueError`` unless ``value`` is a real scalar (or, if allowed, a schedule).

    Only the *form* is checked (a Python number or a 0-d array; a callable when
    ``schedule``), so injected or traced hyperparameters pass.
    """
    if schedule and callable(value):
        return value
    kind = "a scalar or a schedule (callable step -> scalar)" if schedule else "a scalar"
    if isinstance(value, (bool, np.bool_)) or value is None:
        raise ValueError(f"{fn}: {name} must be {kind}, got {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return value
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is None or dtype is None:
        raise ValueError(f"{fn}: {name} must be {kind}, got {type(value).__name__} {value!r}")
    if tuple(shape) != () or not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise ValueError(f"{fn}: {name} must be {kind}, got an array of shape {tuple(shape)} and dtype {dtype}")
    return value


def check_choice(value, name: str, fn: str, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{fn}: {name} must be one of {choices}, got {value!r}")


def check_steps(steps, name: str, fn: str) -> None:
    """Accepts ``None``, a Python int >= 1, or a scalar integer array (e.g. injected)."""
    if steps is None:
        return
    if isinstance(steps, bool) or not (isinstance(steps, int) or hasattr(steps, "dtype")):
        raise ValueError(f"{fn}: {name} must be an int >= 1, got {steps!r}")
    if isinstance(steps, int) and steps < 1:
        raise ValueError(f"{fn}: {name} must be an int >= 1, got {steps}")
    if hasattr(steps, "dtype") and (tuple(steps.shape) != () or not jnp.issubdtype(steps.dtype, jnp.integer)):
        raise ValueError(f"{fn}: {name} must be a scalar integer, got shape {tuple(steps.shape)} dtype {steps.dtype}")
