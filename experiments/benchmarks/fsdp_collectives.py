"""Benchmark: the collectives of the trainer's jitted step under ``dp`` and ``fsdp``, side by side.

For a byte LM (``DecoderLM``, d 512, 2 layers, T 256), the digits U-Net and a
``TimeMLP`` at batch 16 on every device (run with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` for 8 CPU devices),
compiles the step :func:`jaxlab.train.train` jits and counts in its
optimized HLO the all-gathers, all-reduces and all-to-alls, the collectives
whose result holds a floating batch-sized activation, and XLA's temp
memory. Under ``dp`` the gradients' one all-reduce is the baseline; under
``fsdp`` only weights should move (docs/results.md has a table).

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python experiments/benchmarks/fsdp_collectives.py
"""

from __future__ import annotations

import collections

import jax
import numpy as np

from jaxlab import parallel
from jaxlab.generative import Diffusion, RectifiedFlow
from jaxlab.nn import TimeMLP, UNet
from jaxlab.nn.attention import AttentionConfig
from jaxlab.nn.transformer import TransformerConfig
from jaxlab.tasks import LanguageModel
from jaxlab.testing import collectives
from jaxlab.train import TrainConfig, adamw_with_warmup, compile_train_step

BATCH = 16
KINDS = ("all-gather", "all-reduce", "all-to-all")


def models() -> dict:
    lm = TransformerConfig(attention=AttentionConfig(num_heads=4, head_dim=128), vocab_size=256, d_model=512, num_layers=2, d_ff=2048)
    unet, mlp = UNet(channels=(32, 64), num_classes=10), TimeMLP(width=256, depth=3)
    return {
        "byte LM": (LanguageModel(lm), {"tokens": np.zeros((BATCH, 257), np.int32)}),
        "digits U-Net": (
            Diffusion(apply_fn=unet.apply, init_fn=unet.init, data_shape=(8, 8, 1), num_classes=10),
            {"x": np.zeros((BATCH, 8, 8, 1), np.float32), "label": np.zeros((BATCH,), np.int32)},
        ),
        "TimeMLP": (RectifiedFlow(apply_fn=mlp.apply, init_fn=mlp.init, data_shape=(2,)), {"x": np.zeros((BATCH, 2), np.float32)}),
    }


def census(hlo: str) -> tuple[collections.Counter, int]:
    """Counts per collective kind, and how many carry a floating (BATCH, ...) activation."""
    moved = collectives(hlo)
    return collections.Counter(c.kind for c in moved), sum(c.carries_batch(BATCH) for c in moved)


def main() -> None:
    print(f"{jax.device_count()} {jax.devices()[0].platform} devices, batch {BATCH}\n")
    print("| model | strategy | " + " | ".join(KINDS) + " | activation collectives | temp MB |")
    print("|---|---|" + "---|" * (len(KINDS) + 2))
    for name, (method, batch) in models().items():
        for strategy in parallel.STRATEGIES:
            config = TrainConfig(batch_size=BATCH, strategy=strategy, min_shard_bytes=0)  # every leaf sharded: the layout the issue measured
            compiled = compile_train_step(method, adamw_with_warmup(config), batch, config)
            kinds, activations = census(compiled.as_text())
            temp = compiled.memory_analysis().temp_size_in_bytes / 1e6
            print(f"| {name} | {strategy} | " + " | ".join(str(kinds[k]) for k in KINDS) + f" | {activations} | {temp:.1f} |")


if __name__ == "__main__":
    main()
