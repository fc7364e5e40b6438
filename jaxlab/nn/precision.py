"""The precision policy of jaxlab's networks: float32 parameters, a configurable compute dtype.

Every network takes ``dtype`` (the compute dtype of its matrix products and
activations: float32, bfloat16 or float16) and ``param_dtype`` (float32 by
default). What loses accuracy in 16 bits stays float32 whatever ``dtype`` is:
time and step embeddings (a bfloat16 t cannot hold the shortcut model's 1/128
grid), softmax logits, normalization statistics, log-determinants and the
loss itself.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def dtype_name(name: str, value: Any) -> str:
    """The canonical name of ``value`` (a dtype or its name) if it is a compute dtype; else ValueError naming ``name``."""
    try:
        dtype = jnp.dtype(value).name
    except TypeError:
        dtype = repr(value)
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"`{name}` must be one of {COMPUTE_DTYPES}; got {dtype}.")
    return dtype


def compute_dtype(name: str, value: Any) -> jnp.dtype:
    """``value`` as a jnp dtype after the check of :func:`dtype_name`."""
    return jnp.dtype(dtype_name(name, value))
