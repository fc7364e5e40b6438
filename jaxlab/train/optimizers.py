"""The default optimizer recipe experiments share."""

from __future__ import annotations

import optax

from jaxlab.train.config import TrainConfig


def adamw_with_warmup(config: TrainConfig, *, weight_decay: float = 0.0, clip_norm: float | None = 1.0) -> optax.GradientTransformation:
    """AdamW with linear warm-up to ``config.learning_rate`` then a constant rate.

    The schedule never looks at ``config.steps``, so extending a finished run
    (resume with a larger ``steps``) continues exactly as a longer run would.
    """
    schedule = optax.linear_schedule(0.0, config.learning_rate, max(config.warmup_steps, 1))
    adamw = optax.adamw(schedule, weight_decay=weight_decay)
    return optax.chain(optax.clip_by_global_norm(clip_norm), adamw) if clip_norm else adamw
