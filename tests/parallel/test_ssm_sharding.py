"""Under FSDP the compiled S4 training step moves weights, not activations (issue "Scale I").

XLA's SPMD partitioner splits an FFT only along the transformed axis, so
before the S4 convolution ran per batch shard the FSDP step gathered every
(16, H, n) padded input and its (16, H, n/2+1) transform. Read from the
optimized HLO of the step :func:`jaxlab.train.train` jits, as in
``test_fsdp_activations.py``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab import parallel
from jaxlab.ssm import SSMClassifier, causal_conv
from jaxlab.tasks import SequenceClassifier
from jaxlab.testing import collectives
from jaxlab.train import TrainConfig, adamw_with_warmup, compile_train_step

BATCH = 16
LENGTH = 32


def _activation_collectives(hlo: str) -> list:
    """Collectives whose result is a floating or complex batch-sized array (an activation or its FFT)."""
    return [c for c in collectives(hlo) if any(d.startswith(("f", "bf", "c")) and len(s) >= 2 and s[0] == BATCH for d, s in c.results)]


def _step_hlo(method, batch) -> str:
    config = TrainConfig(batch_size=BATCH, strategy="fsdp", min_shard_bytes=0)  # every leaf sharded
    return compile_train_step(method, adamw_with_warmup(config), batch, config).as_text()


@pytest.mark.parametrize("kind", ["s4d", "s4"])
def test_fsdp_s4_classifier_step_gathers_no_activation(kind):
    net = SSMClassifier(num_classes=10, d_model=32, n_layers=2, d_state=8, kind=kind, l_max=LENGTH if kind == "s4" else None, dropout=0.1)
    method = SequenceClassifier(apply_fn=net.apply, init_fn=net.init, dropout=0.1)
    hlo = _step_hlo(method, {"x": np.zeros((BATCH, LENGTH), np.float32), "y": np.zeros((BATCH,), np.int32)})
    assert "fft" in hlo  # the convolution is in the step, split per shard
    assert _activation_collectives(hlo) == []


def test_the_finder_counts_complex_activations():
    hlo = "  %ag = c64[16,32,33]{2,1,0} all-gather(c64[2,32,33]{2,1,0} %p), dimensions={0}\n"
    assert len(_activation_collectives(hlo)) == 1


def test_causal_conv_split_over_the_batch_matches_the_unsplit_one():
    # The per-shard path under a mesh and rules against np.convolve, channel by channel.
    rng = np.random.default_rng(0)
    u = rng.normal(size=(BATCH, LENGTH, 4)).astype(np.float32)
    k = rng.normal(size=(4, LENGTH)).astype(np.float32)
    oracle = np.stack([np.stack([np.convolve(u[b, :, h], k[h])[:LENGTH] for h in range(4)], -1) for b in range(BATCH)])
    mesh = parallel.make_mesh("fsdp")
    x = jax.device_put(u, parallel.batch_sharding(mesh))
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(parallel.activation_rules()):
        lowered = jax.jit(causal_conv).lower(x, jnp.asarray(k))
    assert "shard_map" in lowered.as_text() or "sdy.manual_computation" in lowered.as_text()
    np.testing.assert_allclose(np.asarray(lowered.compile()(x, jnp.asarray(k))), oracle, rtol=1e-4, atol=1e-4)
