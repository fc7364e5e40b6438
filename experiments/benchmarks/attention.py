"""Benchmark: one decode step of MHA, GQA, MQA, MLA-naive and MLA-absorbed over a full KV cache.

Side by side in one process, one attention layer (d_model 1,024): MHA
(16 heads × 64), GQA (4 KV heads), MQA (1 KV head), and MLA with DeepSeek-V2's
structure at small size (16 heads, d_c = 128, d_r = 32, qk_nope 64, v 64,
full-rank queries) evaluated naively (keys and values re-expanded from the
latent for every cached token) and with weight absorption (every head
attends over the latent directly). For contexts 4K and 16K and batch 1 and
8, a jitted step (cache donated, so it is updated in place) writes one token
into a cache holding ``context − 1`` and attends over all ``context`` slots.

Reported per result (one JSON line each, and a table): median step time,
tokens/s, cache bytes (whole cache and per token), FLOPs per token (the
analytic count of the step's matrix products, 2 per multiply-add), the
achieved FLOP rate and its fraction of this machine's measured matmul
peak. Then the target ratios: MLA-absorbed's cache is
``(d_c + d_r)/(2·n_h·d_h)`` of MHA's exactly, and at 16K, batch 1, its step
is at least 2× faster than MHA's and 3× faster than MLA-naive's.

On XLA:CPU a step that reads the cache and returns it updated is not done
in place even with the cache donated: the compiled step copies each cache
array before the update (seen in the HLO as ``copy`` of the arguments and a
loop fusion over the whole array), so every variant also moves a small
multiple of its own cache bytes per step — a cost proportional to the cache
size, like the attention reads themselves.

Second part (``fused``): forward + backward of a 4-layer d_model 512
:class:`~jaxlab.nn.DecoderLM` (8 heads × 64, SwiGLU 1,536, batch 1) at
T = 1,024 and 2,048 with ``attention_impl="xla"`` (``jax.nn.dot_product_attention``)
against ``"reference"`` (the explicit split softmax): the median step time of
each, timed in interleaved rounds, their ratio, and the peak temporary
memory XLA reports for each compiled step (``memory_analysis()``).

Absorption trades memory traffic for arithmetic: per token it does
``2·h·(2·d_c + d_r)·L`` FLOPs of attention against MHA's ``4·h·d_h·L``
(2.25× more here) but reads ``(d_c + d_r)·L`` cached values instead of
``2·h·d_h·L`` (12.8× fewer) — and decoding at batch 1 is bound by the reads.

Usage::

    python experiments/benchmarks/attention.py            # full run (a few minutes on 2 CPU cores)
    python experiments/benchmarks/attention.py --quick    # tiny smoke run
    python experiments/benchmarks/attention.py --quick --part fused   # only fused vs reference
    python experiments/benchmarks/attention.py --out results.jsonl

References:
  DeepSeek-AI 2024, "DeepSeek-V2" (arXiv:2405.04434), §2.1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.nn import AttentionConfig, DecoderLM, MLAConfig, TransformerConfig, attention_layer, cache_bytes, init_cache, token_losses

D_MODEL = 1024
VARIANTS = {
    "mha": AttentionConfig(num_heads=16, head_dim=64),
    "gqa": AttentionConfig(num_heads=16, head_dim=64, num_kv_heads=4),
    "mqa": AttentionConfig(num_heads=16, head_dim=64, num_kv_heads=1),
    "mla_naive": MLAConfig(num_heads=16, kv_lora_rank=128, qk_nope_dim=64, qk_rope_dim=32, v_head_dim=64),
    "mla_absorbed": MLAConfig(num_heads=16, kv_lora_rank=128, qk_nope_dim=64, qk_rope_dim=32, v_head_dim=64, mode="absorbed"),
}


def flops_per_token(config: AttentionConfig | MLAConfig, context: int, d_model: int = D_MODEL) -> int:
    """FLOPs (2 per multiply-add) of one decoded token's matrix products over ``context`` cached tokens."""
    L = context
    if isinstance(config, AttentionConfig):
        h, kv, d = config.num_heads, config.kv_heads, config.head_dim
        projections = 2 * d_model * (h + 2 * kv) * d + 2 * h * d * d_model
        return projections + 4 * h * d * L  # q·k and p·v per head
    h, c, r, n, v = config.num_heads, config.kv_lora_rank, config.qk_rope_dim, config.qk_nope_dim, config.v_head_dim
    projections = 2 * d_model * h * (n + r) + 2 * d_model * (c + r) + 2 * h * v * d_model
    if config.mode == "naive":
        expand = 2 * L * c * h * (n + v)  # k_C = c W_UK and v = c W_UV for every cached token
        return projections + expand + 2 * h * (n + r) * L + 2 * h * v * L
    absorb = 2 * h * n * c + 2 * h * c * v  # W_UK into the query, W_UV after attention
    return projections + absorb + 2 * h * (c + r) * L + 2 * h * c * L


def random_params(layer, x: jax.Array, seed: int = 0):
    """Weights ~ N(0, 1/fan_in) of the layer's shapes (no RNG program to compile)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(layer.init, jax.random.key(0), x)

    def draw(path, s):
        if path[-1].key == "scale":  # RMSNorm
            return jnp.ones(s.shape, s.dtype)
        return jnp.asarray(rng.normal(size=s.shape) / np.sqrt(s.shape[0]), s.dtype)  # 2-D (fan_in, fan_out)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def filled_cache(config, batch: int, context: int, seed: int = 1):
    """A cache holding ``context − 1`` random entries (the step writes the last slot)."""
    rng = np.random.default_rng(seed)
    empty = init_cache(config, batch, context)
    filled = [jnp.asarray(rng.normal(size=a.shape), a.dtype) for a in empty[:-1]]
    return type(empty)(*filled, jnp.asarray(context - 1, jnp.int32))


class _Step:
    """One variant's compiled decode step with its parameters, input and (donated) cache."""

    def __init__(self, config, batch: int, context: int):
        layer = attention_layer(config)
        self.context = context
        self.x = jnp.asarray(np.random.default_rng(2).normal(size=(batch, 1, D_MODEL)), jnp.float32)
        self.params = random_params(layer, self.x)
        self.step = jax.jit(layer.apply, donate_argnums=(2,))
        self.cache = filled_cache(config, batch, context)
        self.cache_bytes = cache_bytes(self.cache)
        self.run()  # compile + warm up

    def run(self) -> float:
        cache = self.cache._replace(index=jnp.asarray(self.context - 1, jnp.int32))  # fresh: the old one was donated
        t0 = time.perf_counter()
        y, self.cache = self.step(self.params, self.x, cache)
        jax.block_until_ready((y, self.cache))
        return time.perf_counter() - t0


def time_variants(batch: int, context: int, *, rounds: int) -> dict[str, dict]:
    """Median step times of every variant, timed in interleaved rounds (load on a shared machine hits all alike)."""
    steps = {name: _Step(config, batch, context) for name, config in VARIANTS.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order every round
            times[name].append(steps[name].run())
    rows = {}
    for name, step in steps.items():
        median = statistics.median(times[name])
        flops = flops_per_token(VARIANTS[name], context)
        rows[name] = {
            "step_ms": 1e3 * median,
            "step_ms_min": 1e3 * min(times[name]),
            "tokens_per_s": batch / median,
            "repeats": rounds,
            "cache_bytes": step.cache_bytes,
            "cache_bytes_per_token": step.cache_bytes // (batch * context),
            "flops_per_token": flops,
            "gflops_per_s": flops * batch / median / 1e9,
        }
    del steps
    return rows


def matmul_peak_gflops(n: int = 1024, repeats: int = 10) -> float:
    """Measured float32 matmul rate of this backend (best of ``repeats``)."""
    a = jnp.asarray(np.random.default_rng(3).normal(size=(n, n)), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    jax.block_until_ready(matmul(a))
    best = min(_timed(matmul, a) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn, *args) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny contexts and few repeats (a smoke run)")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per variant (full run)")
    parser.add_argument("--out", type=Path, default=None, help="also append the JSON lines to this file")
    parser.add_argument("--part", choices=("all", "decode", "fused"), default="all", help="which benchmark to run")
    args = parser.parse_args(argv)
    contexts, batches = ((256, 1024), (1, 2)) if args.quick else ((4096, 16384), (1, 8))
    rounds = 3 if args.quick else args.rounds

    peak = matmul_peak_gflops(256 if args.quick else 1024)
    device = jax.devices()[0]
    print(f"backend {device.platform} ({device.device_kind}); measured f32 matmul peak {peak:.1f} GFLOP/s")
    results: list[dict] = []
    if args.part in ("all", "fused"):
        results += fused_vs_reference(FUSED_CONTEXTS, rounds=rounds)
    if args.part == "fused":
        _write(results, args.out)
        return results
    for context in contexts:
        for batch in batches:
            for name, timing in time_variants(batch, context, rounds=rounds).items():
                row = {"benchmark": "attention_decode_step", "variant": name, "context": context, "batch": batch}
                row |= timing
                row["fraction_of_peak"] = row["gflops_per_s"] / peak
                row["backend"] = device.platform
                results.append(row)
                print(json.dumps(row), flush=True)

    summary = summarize(results)
    results += summary
    for row in summary:
        print(json.dumps(row), flush=True)
    print_table(results, peak)
    _write(results, args.out)
    return results


def _write(results: list[dict], out: Path | None) -> None:
    if out is not None:
        with out.open("a") as f:
            f.writelines(json.dumps(row) + "\n" for row in results)


FUSED_CONTEXTS = (1024, 2048)  # the same in --quick: the comparison is only meaningful at these lengths
FUSED_MODEL = TransformerConfig(attention=AttentionConfig(num_heads=8, head_dim=64), vocab_size=256, d_model=512, num_layers=4, d_ff=1536)


def _train_step(config: TransformerConfig, tokens: jax.Array):
    """The compiled ``params -> (loss, grads)`` of one next-token batch, and its parameters."""
    model = DecoderLM(config)
    shapes = jax.eval_shape(model.init, jax.random.key(0), tokens[:, :-1])
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape) / np.sqrt(s.shape[0]), s.dtype), shapes)
    step = jax.jit(jax.value_and_grad(lambda p: jnp.mean(token_losses(model.apply, p, tokens))))
    compiled = step.lower(params).compile()
    return compiled, params


def fused_vs_reference(contexts: tuple[int, ...], *, rounds: int) -> list[dict]:
    """Forward + backward of :data:`FUSED_MODEL` with ``"xla"`` vs ``"reference"`` attention, side by side."""
    rows = []
    for context in contexts:
        tokens = jnp.asarray(np.random.default_rng(1).integers(0, 256, (1, context + 1)), jnp.int32)
        steps = {impl: _train_step(dataclasses.replace(FUSED_MODEL, attention_impl=impl), tokens) for impl in ("xla", "reference")}
        for compiled, params in steps.values():
            jax.block_until_ready(compiled(params))  # warm up
        times: dict[str, list[float]] = {impl: [] for impl in steps}
        for r in range(rounds):
            for impl in ("xla", "reference") if r % 2 == 0 else ("reference", "xla"):
                times[impl].append(_timed(steps[impl][0], steps[impl][1]))
        row = {"benchmark": "attention_fused_train_step", "context": context, "batch": 1, "repeats": rounds}
        for impl, (compiled, _) in steps.items():
            memory = compiled.memory_analysis()
            row[f"{impl}_step_ms"] = 1e3 * statistics.median(times[impl])
            row[f"{impl}_temp_bytes"] = None if memory is None else int(memory.temp_size_in_bytes)
        row["ratio_reference_over_fused"] = row["reference_step_ms"] / row["xla_step_ms"]
        row["backend"] = jax.devices()[0].platform
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'T':>5} {'fused ms':>9} {'reference ms':>13} {'ref/fused':>9} {'fused temp MiB':>15} {'reference temp MiB':>19}")
    for r in rows:
        mib = lambda b: float("nan") if b is None else b / 2**20
        print(
            f"{r['context']:>5} {r['xla_step_ms']:>9.1f} {r['reference_step_ms']:>13.1f} {r['ratio_reference_over_fused']:>9.2f} "
            f"{mib(r['xla_temp_bytes']):>15.1f} {mib(r['reference_temp_bytes']):>19.1f}"
        )
    return rows


TARGET_CONTEXT = 16384  # the targets are stated at 16K, batch 1


def summarize(results: list[dict]) -> list[dict]:
    """Ratios for every (context, batch), with the verdict on the targets at 16K, batch 1."""
    by = {(r["variant"], r["context"], r["batch"]): r for r in results if "variant" in r}
    mla = VARIANTS["mla_absorbed"]
    mha = VARIANTS["mha"]
    expected_cache_ratio = (mla.kv_lora_rank + mla.qk_rope_dim) / (2 * mha.num_heads * mha.head_dim)
    rows = []
    for context, batch in sorted({(c, b) for _, c, b in by}):
        absorbed, naive, full = by["mla_absorbed", context, batch], by["mla_naive", context, batch], by["mha", context, batch]
        cache_ratio = absorbed["cache_bytes"] / full["cache_bytes"]
        row = {
            "benchmark": "attention_ratios",
            "context": context,
            "batch": batch,
            "cache_ratio_mla_over_mha": cache_ratio,
            "cache_ratio_expected": expected_cache_ratio,
            "cache_ratio_exact": cache_ratio == expected_cache_ratio,
            "speedup_absorbed_vs_mha": full["step_ms"] / absorbed["step_ms"],
            "speedup_absorbed_vs_naive": naive["step_ms"] / absorbed["step_ms"],
            "flops_ratio_absorbed_over_mha": absorbed["flops_per_token"] / full["flops_per_token"],
        }
        if context == TARGET_CONTEXT and batch == 1:
            row["target_met"] = bool(row["cache_ratio_exact"] and row["speedup_absorbed_vs_mha"] >= 2 and row["speedup_absorbed_vs_naive"] >= 3)
        rows.append(row)
    return rows


def print_table(results: list[dict], peak: float) -> None:
    print(f"\n{'context':>7} {'batch':>5} {'variant':<13} {'step ms':>9} {'tok/s':>9} {'cache MiB':>10} "
          f"{'B/token':>8} {'MFLOP/tok':>10} {'GFLOP/s':>8} {'%peak':>6}")  # fmt: skip
    for r in results:
        if r["benchmark"] != "attention_decode_step":
            continue
        print(
            f"{r['context']:>7} {r['batch']:>5} {r['variant']:<13} {r['step_ms']:>9.3f} {r['tokens_per_s']:>9.1f} "
            f"{r['cache_bytes'] / 2**20:>10.2f} {r['cache_bytes_per_token']:>8} {r['flops_per_token'] / 1e6:>10.2f} "
            f"{r['gflops_per_s']:>8.2f} {100 * r['gflops_per_s'] / peak:>6.1f}"
        )
    for r in results:
        if r["benchmark"] == "attention_ratios":
            verdict = "" if "target_met" not in r else f"  target {'MET' if r['target_met'] else 'NOT met'}"
            print(
                f"context {r['context']:>6} batch {r['batch']}: cache MLA/MHA {r['cache_ratio_mla_over_mha']:.6f} "
                f"(expected {r['cache_ratio_expected']:.6f}), absorbed vs MHA {r['speedup_absorbed_vs_mha']:.2f}x, "
                f"vs naive {r['speedup_absorbed_vs_naive']:.2f}x, FLOPs absorbed/MHA "
                f"{r['flops_ratio_absorbed_over_mha']:.2f}{verdict}"
            )


if __name__ == "__main__":
    main()
