"""jaxlab.nn — Flax Linen layers and networks."""

from jaxlab.nn.embeddings import sinusoidal_embedding
from jaxlab.nn.mlp import ResidualBlock, TimeMLP

__all__ = ["ResidualBlock", "TimeMLP", "sinusoidal_embedding"]
