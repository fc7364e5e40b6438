"""jaxlab.parallel — mesh, sharding strategies and multi-host start-up."""

from jaxlab.parallel.distributed import initialize_arguments, is_multiprocess_environment, maybe_initialize_distributed
from jaxlab.parallel.mesh import (
    STRATEGIES,
    Strategy,
    activation_rules,
    batch_sharding,
    fsdp_spec,
    make_mesh,
    put_global_batch,
    replicated,
    state_shardings,
)

__all__ = [
    "STRATEGIES",
    "Strategy",
    "activation_rules",
    "batch_sharding",
    "fsdp_spec",
    "initialize_arguments",
    "is_multiprocess_environment",
    "make_mesh",
    "maybe_initialize_distributed",
    "put_global_batch",
    "replicated",
    "state_shardings",
]
