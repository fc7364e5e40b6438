"""Named PRNG streams: :func:`jaxlab.base.named_key`, re-exported for the trainer's users."""

from jaxlab.base import named_key

__all__ = ["named_key"]
