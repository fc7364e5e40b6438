"""jaxlab.parallel — mesh, sharding strategies and multi-host start-up."""

from jaxlab.parallel.distributed import initialize_arguments, is_multiprocess_environment, maybe_initialize_distributed
from jaxlab.parallel.mesh import (
    STRATEGIES,
    TENSOR_RULES,
    Strategy,
    activation_rules,
    batch_sharding,
    data_parallel_size,
    fsdp_spec,
    make_mesh,
    parse_mesh_spec,
    put_global_batch,
    replicated,
    state_shardings,
    tensor_axis,
)
from jaxlab.parallel.sampling import sharded_sampler

__all__ = [
    "STRATEGIES",
    "TENSOR_RULES",
    "Strategy",
    "activation_rules",
    "batch_sharding",
    "data_parallel_size",
    "fsdp_spec",
    "initialize_arguments",
    "is_multiprocess_environment",
    "make_mesh",
    "maybe_initialize_distributed",
    "parse_mesh_spec",
    "put_global_batch",
    "replicated",
    "sharded_sampler",
    "state_shardings",
    "tensor_axis",
]
