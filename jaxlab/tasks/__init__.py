"""jaxlab.tasks — trainer adapters for non-generative tasks (language modelling, ...)."""

from jaxlab.tasks.language_model import LanguageModel

__all__ = ["LanguageModel"]
