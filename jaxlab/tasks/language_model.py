"""Next-token prediction as a trainer task: the adapter :func:`jaxlab.train.train` calls."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
from jax import Array

from jaxlab.base import Context
from jaxlab.nn.transformer import DecoderLM, TransformerConfig, token_losses


@dataclasses.dataclass(frozen=True)
class LanguageModel:
    """Method adapter for :func:`jaxlab.train.train`: next-token prediction on ``{"tokens": (b, t + 1)}``.

    Attributes:
      config: the model's :class:`TransformerConfig` (its ``dtype`` and
        ``attention_impl`` pick the compute dtype and the attention kernel;
        the logits and the loss are float32 whatever the dtype).
    """

    config: TransformerConfig

    @property
    def network(self) -> DecoderLM:
        return DecoderLM(self.config)

    def init(self, key: Array, batch: dict[str, Array]) -> Any:
        tokens = jnp.asarray(batch["tokens"])[:, :-1].astype(jnp.int32)
        return self.network.init(key, tokens)

    def loss(self, params: Any, batch: dict[str, Array], *, key: Array, ctx: Context | None = None) -> tuple[Array, dict]:
        del key, ctx  # deterministic
        loss = jnp.mean(token_losses(self.network.apply, params, batch["tokens"]))
        return loss, {"bits_per_byte": loss / jnp.log(2.0)}
