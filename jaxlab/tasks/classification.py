"""Classification as trainer tasks: softmax cross-entropy adapters that :func:`jaxlab.train.train` calls."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import optax
from jax import Array

from jaxlab.base import Context


def _cross_entropy_and_accuracy(logits: Array, labels: Array) -> dict[str, Array]:
    """``logits (b, classes)``, integer ``labels (b,)`` -> mean loss and accuracy."""
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
    return {"loss": loss, "accuracy": accuracy}


@dataclasses.dataclass(frozen=True)
class Classifier:
    """Method adapter: softmax cross-entropy of ``apply_fn(variables, x)`` on ``{"x": (b, ...), "y": (b,)}``.

    Parameters are the network's whole variable dict (what ``init_fn`` returns).
    """

    apply_fn: Callable[..., Array]
    init_fn: Callable[..., Any]

    def init(self, key: Array, batch: dict[str, Array]) -> Any:
        return self.init_fn(key, batch["x"])

    def metrics(self, params: Any, batch: dict[str, Array]) -> dict[str, Array]:
        return _cross_entropy_and_accuracy(self.apply_fn(params, batch["x"]), batch["y"])

    def loss(self, params: Any, batch: dict[str, Array], *, key: Array, ctx: Context | None = None) -> tuple[Array, dict]:
        del key, ctx  # deterministic
        metrics = self.metrics(params, batch)
        return metrics["loss"], {"accuracy": metrics["accuracy"]}


@dataclasses.dataclass(frozen=True)
class SequenceClassifier:
    """Method adapter: cross-entropy of a sequence classifier with dropout on ``{"x": (b, L), "y": (b,)}``; logs accuracy.

    Parameters are the ``"params"`` collection; the network takes a
    ``deterministic`` flag and a ``"dropout"`` rng when ``dropout > 0``.
    """

    apply_fn: Callable[..., Array]
    init_fn: Callable[..., Any]
    dropout: float = 0.0

    def init(self, key: Array, batch: dict[str, Array]) -> Any:
        return self.init_fn(key, jnp.asarray(batch["x"]))["params"]

    def logits(self, params: Any, x: Array, *, key: Array | None = None) -> Array:
        train = key is not None and self.dropout > 0
        rngs = {"dropout": key} if train else {}
        return self.apply_fn({"params": params}, x, deterministic=not train, rngs=rngs)

    def loss(self, params: Any, batch: dict[str, Array], *, key: Array, ctx: Context | None = None) -> tuple[Array, dict]:
        del ctx
        metrics = _cross_entropy_and_accuracy(self.logits(params, batch["x"], key=key), batch["y"])
        return metrics["loss"], {"accuracy": metrics["accuracy"]}
