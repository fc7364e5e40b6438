"""jaxlab: modern generative models, state-space models, attention and optimizers in JAX.

Subpackages are imported on their own (``import jaxlab.optim``); this top-level
module stays light so that importing one piece does not pull in the others.
"""

__version__ = "0.1.0"
