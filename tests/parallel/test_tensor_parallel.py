"""Tensor parallelism: attention heads and SwiGLU hidden units split over the mesh's ``tensor`` axis.

The layout (which kernels, which axis) is read from the shardings the trainer
gives the state; that it computes the same training run is checked against a
data-parallel run of the same steps; that it is Megatron's scheme and not a
gather of every kernel is read from the compiled step's collectives.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab import parallel
from jaxlab.nn.attention import AttentionConfig
from jaxlab.nn.sharding import BATCH, HEADS, LENGTH, constrain
from jaxlab.nn.transformer import TransformerConfig
from jaxlab.tasks import LanguageModel
from jaxlab.testing import collectives
from jaxlab.train import TrainConfig, adamw_with_warmup, compile_train_step, train

LM = TransformerConfig(attention=AttentionConfig(num_heads=4, head_dim=8), vocab_size=64, d_model=32, num_layers=2, d_ff=64)


@dataclasses.dataclass(frozen=True)
class LMConfig(TrainConfig):
    steps: int = 3
    batch_size: int = 8
    learning_rate: float = 1e-2
    warmup_steps: int = 1
    log_every: int = 1
    checkpoint_every: int = 100
    min_shard_bytes: int = 0


def token_batches(step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([7, step])
    return {"tokens": rng.integers(0, LM.vocab_size, size=(LMConfig.batch_size, 17)).astype(np.int32)}


@pytest.mark.parametrize(
    ("path", "shape", "n", "expected"),
    [
        ("params/block_0/attention/query/kernel", (32, 64), 4, 1),
        ("params/block_0/attention/value/kernel", (32, 16), 4, 1),
        ("params/block_0/attention/out/kernel", (64, 32), 4, 0),
        ("params/block_1/mlp/gate/kernel", (32, 96), 4, 1),
        ("params/block_1/mlp/down/kernel", (96, 32), 4, 0),
        ("0/mu/params/block_1/mlp/up/kernel", (32, 96), 2, 1),  # an Adam moment mirrors its parameter
        ("params/block_1/mlp/down/kernel", (90, 32), 4, None),  # 90 hidden units do not split 4 ways
        ("params/block_0/attention/query/kernel", (32, 64), 1, None),  # no tensor axis
        ("params/embed/embedding", (64, 32), 4, None),  # no rule
        ("params/block_0/attention_norm/scale", (32,), 4, None),  # not a matrix
    ],
)
def test_tensor_axis_follows_the_rules(path, shape, n, expected):
    assert parallel.tensor_axis(path, shape, n) == expected


def _specs(config: TrainConfig, strategy: str) -> dict[str, jax.sharding.PartitionSpec]:
    method = LanguageModel(LM)
    mesh = parallel.make_mesh(strategy, shape=parallel.parse_mesh_spec(config.mesh))
    params = jax.eval_shape(lambda: method.init(jax.random.key(0), token_batches(0)))
    shardings = parallel.state_shardings(params, mesh, strategy)
    flat = jax.tree_util.tree_flatten_with_path(shardings)[0]
    return {"/".join(str(k.key) for k in path): s.spec for path, s in flat}


def test_kernels_split_over_tensor_and_fsdp_on_the_other_axis():
    specs = _specs(LMConfig(mesh="fsdp:4,tensor:2"), "fsdp")
    attention, mlp = "params/block_0/attention", "params/block_0/mlp"
    assert specs[f"{attention}/query/kernel"] == jax.P("fsdp", "tensor")
    assert specs[f"{attention}/out/kernel"] == jax.P("tensor", "fsdp")
    assert specs[f"{mlp}/up/kernel"] == jax.P("fsdp", "tensor")
    assert specs[f"{mlp}/down/kernel"] == jax.P("tensor", "fsdp")
    assert specs["params/embed/embedding"] == jax.P("fsdp", None)  # no tensor rule: fsdp only
    dp = _specs(LMConfig(mesh="data:4,tensor:2"), "dp")
    assert dp[f"{attention}/key/kernel"] == jax.P(None, "tensor")
    assert dp["params/embed/embedding"] == jax.P()


@pytest.mark.parametrize("mesh", ["data:2,tensor:4", "fsdp:4,tensor:2"])
def test_tensor_parallel_training_matches_data_parallel(tmp_path, mesh):
    method = LanguageModel(LM)
    strategy = "fsdp" if "fsdp" in mesh else "dp"
    reference = train(method, adamw_with_warmup(LMConfig()), token_batches, LMConfig(mesh="data:8"), tmp_path / "dp", progress=False)
    config = LMConfig(mesh=mesh, strategy=strategy)
    state = train(method, adamw_with_warmup(config), token_batches, config, tmp_path / "tp", progress=False)
    query = state.params["params"]["block_0"]["attention"]["query"]["kernel"]
    assert "tensor" in query.sharding.spec  # the run really was tensor-parallel
    for ours, theirs in zip(jax.tree.leaves(state.params), jax.tree.leaves(reference.params), strict=True):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=2e-5, atol=2e-6)


def test_tensor_parallel_step_reduces_block_outputs_and_gathers_no_kernel():
    """Megatron's scheme: kernels stay split (no all-gather of a kernel-sized array), block outputs are all-reduced."""
    config = LMConfig(mesh="data:1,tensor:8", batch_size=8)
    lm = dataclasses.replace(LM, attention=AttentionConfig(num_heads=8, head_dim=8), d_ff=128)
    hlo = compile_train_step(LanguageModel(lm), adamw_with_warmup(config), token_batches(0), config).as_text()
    moved = collectives(hlo)
    kernel_shapes = {(32, 64), (64, 32), (32, 128), (128, 32)}
    assert not [c for c in moved if c.kind == "all-gather" and any(shape in kernel_shapes for _, shape in c.results)]
    assert [c for c in moved if c.kind == "all-reduce" and any(shape[-1:] == (32,) and len(shape) == 3 for _, shape in c.results)]


def _constraint_spec(heads: int) -> jax.sharding.PartitionSpec:
    """The spec ``constrain`` asks for on a (2, 3, heads, 5) array under 8 tensor devices."""
    mesh = parallel.make_mesh("dp", shape={"tensor": 8})
    x = jax.device_put(jnp.ones((2, 3, heads, 5)), parallel.replicated(mesh))

    def f(x):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(parallel.activation_rules()):
            return constrain(x, (BATCH, LENGTH, HEADS, None)) * 2

    np.testing.assert_array_equal(jax.jit(f)(x), 2 * np.ones(x.shape))
    (eqn,) = [e for e in jax.make_jaxpr(f)(x).jaxpr.eqns if e.primitive.name == "sharding_constraint"]
    return eqn.params["sharding"].spec


def test_constrain_splits_heads_that_divide_and_leaves_the_others_to_xla():
    """8 heads split 8 ways; 4 heads on 8 tensor devices drop the name instead of failing to compile."""
    assert _constraint_spec(8) == jax.P(("data", "fsdp"), None, "tensor", None)
    assert _constraint_spec(4) == jax.P(("data", "fsdp"), None, None, None)
