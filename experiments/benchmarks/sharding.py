"""Benchmark: what the trainer's step moves and costs under ``dp``, ``fsdp`` and hybrid ``data_fsdp`` meshes.

Generalizes ``fsdp_collectives.py`` to configurable meshes. For a byte LM
(``DecoderLM``, d 512, 2 layers, T 256) trained with AdamW, the same LM
trained with :func:`jaxlab.optim.muon` ("muon") and the digits U-Net, all at
batch 16, compiles the step :func:`jaxlab.train.train` jits on three meshes of
8 devices:

* ``dp``        — ``data:8``, parameters replicated;
* ``fsdp``      — ``fsdp:8``, parameters sharded 8 ways;
* ``data_fsdp`` — ``data:2,fsdp:4``, parameters sharded 4 ways inside each of
  2 replicas (hybrid sharding), strategy ``"fsdp"``.

Prints one JSON line per (model, strategy): ``collective_bytes`` (per kind,
the bytes of each collective's results in the optimized HLO, i.e. what one
device receives per step), ``param_bytes`` (all parameters, unsharded),
``activation_collectives`` (collectives with a floating rank >= 2 result whose
leading axis is the global batch or the batch of one data replica — a moved
activation rather than a weight), XLA's ``temp_bytes`` and ``steps_per_sec``
(median of timed steps on real arrays). ``--quick`` times fewer steps.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python experiments/benchmarks/sharding.py [--quick]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time

import jax
import numpy as np

from jaxlab import parallel
from jaxlab.generative import Diffusion
from jaxlab.nn import UNet
from jaxlab.nn.attention import AttentionConfig
from jaxlab.nn.transformer import TransformerConfig
from jaxlab.optim import muon
from jaxlab.tasks import LanguageModel
from jaxlab.testing import collective_bytes, collectives
from jaxlab.train import TrainConfig, adamw_with_warmup, compile_train_step, init_state

BATCH = 16
KINDS = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all")
MESHES = {"dp": ("dp", {"data": 8}), "fsdp": ("fsdp", {"fsdp": 8}), "data_fsdp": ("fsdp", {"data": 2, "fsdp": 4})}


def models() -> dict:
    """Name -> (method, host batch, optimizer factory ``config -> optax``)."""
    lm = LanguageModel(TransformerConfig(attention=AttentionConfig(num_heads=4, head_dim=128), vocab_size=256, d_model=512, num_layers=2, d_ff=2048))
    unet = UNet(channels=(32, 64), num_classes=10)
    rng = np.random.default_rng(0)
    tokens = {"tokens": rng.integers(0, 256, (BATCH, 257), dtype=np.int32)}
    digits = {"x": rng.standard_normal((BATCH, 8, 8, 1), dtype=np.float32), "label": rng.integers(0, 10, (BATCH,), dtype=np.int32)}
    return {
        "lm": (lm, tokens, adamw_with_warmup),
        "unet": (Diffusion(apply_fn=unet.apply, init_fn=unet.init, data_shape=(8, 8, 1), num_classes=10), digits, adamw_with_warmup),
        "muon": (lm, tokens, lambda config: muon(0.02, adam_learning_rate=config.learning_rate)),
    }


def census(hlo: str, batch_sizes: set[int]) -> tuple[dict[str, int], int]:
    """Result bytes per collective kind, and how many collectives carry a batch-sized activation."""
    moved, by_kind = collectives(hlo), collective_bytes(hlo)
    activations = sum(any(c.carries_batch(b) for b in batch_sizes) for c in moved)
    return {kind: by_kind[kind] for kind in KINDS}, activations


def steps_per_sec(compiled, method, optimizer, batch, config: TrainConfig, mesh, repeats: int) -> float:
    """Median rate of the compiled step on real (sharded) arrays, after one warm-up step."""
    init = functools.partial(init_state, method, optimizer, batch, config.seed)
    state = jax.jit(init, out_shardings=parallel.state_shardings(jax.eval_shape(init), mesh, config.strategy, min_shard_bytes=config.min_shard_bytes))()
    placed = parallel.put_global_batch(batch, parallel.batch_sharding(mesh))
    state, _ = compiled(state, placed, None)  # the step donates its state: feed each output back
    jax.block_until_ready(state)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = compiled(state, placed, None)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - start)
    return 1.0 / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="time 2 steps instead of 5")
    args = parser.parse_args()
    if jax.device_count() != 8:
        raise SystemExit(f"needs 8 devices, got {jax.device_count()}: run with XLA_FLAGS=--xla_force_host_platform_device_count=8")
    repeats = 2 if args.quick else 5
    for name, (method, batch, make_optimizer) in models().items():
        for label, (strategy, shape) in MESHES.items():
            mesh = parallel.make_mesh(strategy, shape=shape)
            config = TrainConfig(batch_size=BATCH, strategy=strategy, min_shard_bytes=0)  # every leaf sharded: the layout the issue measured
            optimizer = make_optimizer(config)
            compiled = compile_train_step(method, optimizer, batch, config, mesh=mesh)
            moved, activations = census(compiled.as_text(), {BATCH, BATCH // mesh.shape["data"]})
            params = jax.eval_shape(functools.partial(init_state, method, optimizer, batch, config.seed)).params
            record = {
                "model": name,
                "strategy": label,
                "mesh": dict(mesh.shape),
                "collective_bytes": moved,
                "param_bytes": sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(params)),
                "activation_collectives": activations,
                "temp_bytes": compiled.memory_analysis().temp_size_in_bytes,
                "steps_per_sec": round(steps_per_sec(compiled, method, optimizer, batch, config, mesh, repeats), 3),
            }
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
