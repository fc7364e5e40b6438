"""jaxlab.generative — generative methods as pure functions plus one adapter each."""

from jaxlab.generative.flow import (
    RectifiedFlow,
    flow_matching_loss,
    interpolate,
    sample_ode,
    sample_time,
)

__all__ = ["RectifiedFlow", "flow_matching_loss", "interpolate", "sample_ode", "sample_time"]
