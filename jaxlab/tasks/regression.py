"""Regression as a trainer task: the weighted mean-squared-error adapter :func:`jaxlab.train.train` calls."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from jax import Array

from jaxlab.base import Context


@dataclasses.dataclass(frozen=True)
class WeightedRegression:
    """Method adapter: weighted mean squared error ``Σ w (f(x) − y)² / Σ w``.

    Batches are ``{"x": (B, L, d_in), "y": (B, L), "w": (B, L)}``; parameters
    are the ``"params"`` collection.
    """

    apply_fn: Callable[..., Array]
    init_fn: Callable[..., Any]

    def init(self, key: Array, batch: dict[str, Array]) -> Any:
        return self.init_fn(key, jnp.asarray(batch["x"]))["params"]

    def predict(self, params: Any, x: Array) -> Array:
        return self.apply_fn({"params": params}, x)

    def loss(self, params: Any, batch: dict[str, Array], *, key: Array, ctx: Context | None = None) -> tuple[Array, dict]:
        del key, ctx  # deterministic
        error = self.predict(params, batch["x"]) - batch["y"]
        mse = jnp.sum(batch["w"] * error**2) / jnp.sum(batch["w"])
        return mse, {}
