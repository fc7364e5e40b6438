"""Under FSDP the compiled train step moves weights, not activations: no collective carries a floating batch-sized array.

Without the networks' logical activation names (jaxlab.nn.sharding) XLA's
sharding propagation follows the sharded weights into the activations: the
digits U-Net gathered and reduced (16, c) condition activations, the TimeMLP
(16, 256) hidden states and the byte LM whole (16, 256, 512) residual
streams. Read from the optimized HLO of the step :func:`jaxlab.train.train` jits.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxlab import parallel
from jaxlab.generative import Diffusion, RectifiedFlow
from jaxlab.nn import TimeMLP, UNet
from jaxlab.nn.attention import AttentionConfig
from jaxlab.nn.sharding import BATCH as BATCH_NAME
from jaxlab.nn.sharding import EMBED, constrain
from jaxlab.nn.transformer import TransformerConfig
from jaxlab.tasks import LanguageModel
from jaxlab.testing import collectives
from jaxlab.train import TrainConfig, adamw_with_warmup, compile_train_step

BATCH = 16


def _time_mlp():
    net = TimeMLP(width=256, depth=3)
    return RectifiedFlow(apply_fn=net.apply, init_fn=net.init, data_shape=(2,)), {"x": np.zeros((BATCH, 2), np.float32)}


def _digits_unet():
    net = UNet(channels=(32, 64), num_classes=10)
    method = Diffusion(apply_fn=net.apply, init_fn=net.init, data_shape=(8, 8, 1), num_classes=10)
    return method, {"x": np.zeros((BATCH, 8, 8, 1), np.float32), "label": np.zeros((BATCH,), np.int32)}


def _byte_lm():
    config = TransformerConfig(attention=AttentionConfig(num_heads=4, head_dim=128), vocab_size=256, d_model=512, num_layers=2, d_ff=2048)
    return LanguageModel(config), {"tokens": np.zeros((BATCH, 257), np.int32)}


def step_hlo(method, batch, strategy: str) -> str:
    """The optimized HLO of the trainer's jitted step on the 8-device mesh."""
    config = TrainConfig(batch_size=BATCH, strategy=strategy, min_shard_bytes=0)  # every leaf sharded, as in the issue
    return compile_train_step(method, adamw_with_warmup(config), batch, config).as_text()


@pytest.mark.parametrize("build", [_time_mlp, _digits_unet, _byte_lm], ids=["time_mlp", "digits_unet", "byte_lm"])
def test_fsdp_moves_no_batch_sized_activation(build):
    method, batch = build()
    moved = [c for c in collectives(step_hlo(method, batch, "fsdp")) if c.carries_batch(BATCH)]
    assert moved == []


def test_the_finder_sees_activation_collectives():
    hlo = (
        "  %ag = f32[16,256]{1,0} all-gather(f32[2,256]{1,0} %p), dimensions={0}\n"
        "  %w = f32[256,256]{1,0} all-gather(f32[32,256]{1,0} %k), dimensions={0}\n"
        "  %ids = s32[16,1]{1,0} all-gather(s32[2,1]{1,0} %l), dimensions={0}\n"
        "  %ar = (f32[16,64]{1,0}, f32[64]{0}) all-reduce-start(f32[16,64]{1,0} %a, f32[64]{0} %b), to_apply=%sum\n"
    )
    moved = collectives(hlo)
    assert [c.kind for c in moved] == ["all-gather", "all-gather", "all-gather", "all-reduce"]
    assert moved[3].results == (("f32", (16, 64)), ("f32", (64,)))
    assert [c.carries_batch(16) for c in moved] == [True, False, False, True]


def test_vectors_stay_replicated_under_fsdp():
    assert parallel.fsdp_spec((256,), 8) == jax.sharding.PartitionSpec()
    assert parallel.fsdp_spec((256, 64), 8) == jax.sharding.PartitionSpec("fsdp", None)


def test_logical_names_are_the_identity_outside_the_rules_and_must_name_every_axis():
    x = jax.numpy.arange(6.0).reshape(2, 3)
    assert jax.jit(lambda v: constrain(v, (BATCH_NAME, EMBED)))(x).tolist() == x.tolist()
    with pytest.raises(ValueError, match="must name each of the 2 axes"):
        constrain(x, (BATCH_NAME,))
