"""lm-attention: MHA, GQA, MQA and MLA in the same byte-level LM at matched parameter count.

Four small decoder-only transformers, identical except for the attention
layer, are trained on the embedded text corpus at context 128 with the same
data order and optimizer. Attention variants with fewer key-value
parameters (GQA, MQA, MLA) get a wider SwiGLU feed-forward so every model
has the parameter count of the MHA one (to within one feed-forward unit).
Reported per variant:

* ``val_loss_<v>``: mean next-byte loss (nats) on held-out windows;
* ``kv_bytes_per_token_<v>``: float32 KV-cache bytes per token over all
  layers, counted from the cache arrays the model allocates;
* ``decode_tokens_per_s_<v>``: greedy decoding throughput (prefill 16
  tokens, then ``decode_steps`` one-token steps in a ``lax.scan``; median of
  ``decode_rounds`` runs timed in interleaved rounds across the variants, batch
  ``decode_batch``) with a cache of ``decode_cache_len``
  slots — a fixed-size cache is read in full at every step, so this is the
  per-token cost at that context; MLA decodes in absorbed mode;
* ``params_<v>``: the parameter count.

Writes ``attention_table.json`` / ``attention_table.md`` and
``attention.png`` beside ``results.json``; each model trains in its own
sub-directory (``workdir/<variant>/``, resumable).

References:
  Shazeer 2019 (MQA, arXiv:1911.02150); Ainslie et al. 2023 (GQA,
  arXiv:2305.13245); DeepSeek-AI 2024 (MLA, arXiv:2405.04434).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import statistics
import time
from pathlib import Path

import jax
import numpy as np
from matplotlib.figure import Figure

from jaxlab.data import VOCAB_SIZE, random_windows, text_split
from jaxlab.nn import (
    AttentionConfig,
    DecoderLM,
    MLAConfig,
    TransformerConfig,
    cache_bytes_per_token,
    count_params,
    greedy_generate,
    init_caches,
    token_losses,
)
from jaxlab.nn.attention_core import check_attention_impl
from jaxlab.nn.precision import dtype_name
from jaxlab.tasks import LanguageModel
from jaxlab.train import Experiment, TrainConfig, adamw_with_warmup, is_writer, save_figure, train, write_text_atomic

VARIANTS = ("mha", "gqa", "mqa", "mla")


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    """lm-attention configuration (trainer fields from :class:`TrainConfig`)."""

    steps: int = 250
    batch_size: int = 16
    learning_rate: float = 3e-3
    warmup_steps: int = 50
    ema_decay: float = 0.99
    checkpoint_every: int = 250
    log_every: int = 25
    context: int = 128
    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 4
    d_ff: int = 384  # the MHA model's; the others are widened to match its parameter count
    gqa_kv_heads: int = 2
    mla_kv_lora_rank: int = 64
    mla_rope_dim: int = 16
    eval_windows: int = 64
    decode_batch: int = 1
    decode_steps: int = 240
    decode_cache_len: int = 2048
    decode_rounds: int = 7
    variants: tuple[str, ...] = VARIANTS
    dtype: str = "float32"  # compute dtype of the model (parameters stay float32)
    attention_impl: str = "xla"  # "xla" / "cudnn": jax.nn.dot_product_attention; "reference": the explicit softmax

    def __post_init__(self) -> None:
        super().__post_init__()
        dtype_name("dtype", self.dtype)
        check_attention_impl(self.attention_impl, self.dtype)


def attention_config(config: Config, variant: str) -> AttentionConfig | MLAConfig:
    h, d = config.num_heads, config.d_model // config.num_heads
    if variant == "mha":
        return AttentionConfig(h, d)
    if variant == "gqa":
        return AttentionConfig(h, d, config.gqa_kv_heads)
    if variant == "mqa":
        return AttentionConfig(h, d, 1)
    if variant == "mla":
        return MLAConfig(num_heads=h, kv_lora_rank=config.mla_kv_lora_rank, qk_nope_dim=d, qk_rope_dim=config.mla_rope_dim, v_head_dim=d)
    raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")


def _model(config: Config, attention, d_ff: int) -> TransformerConfig:
    return TransformerConfig(
        attention=attention, vocab_size=VOCAB_SIZE, d_model=config.d_model, num_layers=config.num_layers, d_ff=d_ff,
        dtype=config.dtype, attention_impl=config.attention_impl,
    )  # fmt: skip


@functools.lru_cache(maxsize=64)
def param_count(model: TransformerConfig) -> int:
    shapes = jax.eval_shape(DecoderLM(model).init, jax.random.key(0), jax.ShapeDtypeStruct((1, 4), np.int32))
    return count_params(shapes)


def matched_model(config: Config, variant: str) -> TransformerConfig:
    """The variant's model with the feed-forward width that best matches the MHA model's parameter count."""
    target = param_count(_model(config, attention_config(config, "mha"), config.d_ff))
    attention = attention_config(config, variant)
    at_one, at_two = (param_count(_model(config, attention, d_ff)) for d_ff in (1, 2))
    per_unit = at_two - at_one  # parameters are affine in d_ff
    d_ff = max(1, round((target - (at_one - per_unit)) / per_unit))
    return _model(config, attention, d_ff)


def make_batches(config: Config):
    """``step -> {"tokens": (batch, context + 1) uint8}`` from the training split (the same for every variant)."""
    train_tokens, _ = text_split()

    def batches(step: int) -> dict[str, np.ndarray]:
        return {"tokens": random_windows(train_tokens, seed=config.seed, step=step, batch=config.batch_size, length=config.context)}

    return batches


def validation_loss(model: TransformerConfig, params, config: Config) -> float:
    _, test_tokens = text_split()
    starts = np.linspace(0, test_tokens.size - config.context - 1, config.eval_windows).astype(np.int64)
    windows = test_tokens[starts[:, None] + np.arange(config.context + 1)]
    losses = jax.jit(lambda p, w: token_losses(DecoderLM(model).apply, p, w))(params, windows)
    return float(np.mean(losses))


def _generator(model: TransformerConfig, params, config: Config):
    """A compiled, warmed-up ``() -> None`` running greedy decoding over a ``decode_cache_len``-slot cache.

    Prefills 16 held-out tokens, then ``decode_steps`` one-token steps; MLA
    runs in absorbed mode (same parameters).
    """
    if isinstance(model.attention, MLAConfig):
        model = dataclasses.replace(model, attention=dataclasses.replace(model.attention, mode="absorbed"))
    prompt_len = 16
    _, test_tokens = text_split()
    prompt = np.broadcast_to(test_tokens[:prompt_len], (config.decode_batch, prompt_len)).astype(np.int32)
    apply = DecoderLM(model).apply
    max_len = max(config.decode_cache_len, prompt_len + config.decode_steps)  # every step reads all max_len slots
    generate = jax.jit(lambda p, x, c: greedy_generate(apply, p, x, c, steps=config.decode_steps)[0])
    caches = init_caches(model, config.decode_batch, max_len)
    jax.block_until_ready(generate(params, prompt, caches))  # compile

    def run_once() -> None:
        jax.block_until_ready(generate(params, prompt, caches))

    return run_once


def decode_tokens_per_s(generators: dict, config: Config) -> dict[str, float]:
    """Decoding throughput of every variant, timed in interleaved rounds (median), so machine load hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in generators}
    names = list(generators)
    for r in range(config.decode_rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            generators[name]()
            times[name].append(time.perf_counter() - start)
    return {name: config.decode_batch * config.decode_steps / statistics.median(t) for name, t in times.items()}


def write_outputs(rows: dict[str, dict[str, float]], workdir: Path) -> None:
    write_text_atomic(workdir / "attention_table.json", json.dumps(rows, indent=2) + "\n")
    header = "| variant | params | d_ff | val loss (nats) | KV-cache bytes/token | decode tokens/s |\n|---|---|---|---|---|---|\n"
    lines = [
        f"| {v} | {r['params']} | {r['d_ff']} | {r['val_loss']:.4f} | {r['kv_bytes_per_token']} | {r['decode_tokens_per_s']:.0f} |" for v, r in rows.items()
    ]
    write_text_atomic(workdir / "attention_table.md", header + "\n".join(lines) + "\n")
    fig = Figure(figsize=(12, 3.5))
    axes = fig.subplots(1, 3)
    names = list(rows)
    for ax, key, label in zip(
        axes,
        ("val_loss", "kv_bytes_per_token", "decode_tokens_per_s"),
        ("validation loss (nats/byte)", "KV-cache bytes per token", "decode tokens/s"),
    ):
        ax.bar(names, [rows[n][key] for n in names], color=["C0", "C1", "C2", "C3"][: len(names)])
        ax.set_title(label)
    axes[0].set_ylim(min(r["val_loss"] for r in rows.values()) * 0.95, max(r["val_loss"] for r in rows.values()) * 1.02)
    fig.tight_layout()
    save_figure(fig, workdir / "attention.png", dpi=120)


def run(config: Config, workdir: Path) -> dict[str, float]:
    unknown = sorted(set(config.variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"variants must be among {VARIANTS}; got {unknown}")
    rows: dict[str, dict[str, float]] = {}
    generators = {}
    for variant in config.variants:
        model = matched_model(config, variant)
        print(f"--- {variant}: d_ff {model.d_ff}, {param_count(model)} parameters")
        state = train(LanguageModel(model), adamw_with_warmup(config), make_batches(config), config, workdir / variant)
        params = jax.device_get(state.ema_params)
        rows[variant] = {
            "params": param_count(model),
            "d_ff": model.d_ff,
            "val_loss": validation_loss(model, params, config),
            "kv_bytes_per_token": cache_bytes_per_token(model.attention) * model.num_layers,
        }
        generators[variant] = _generator(model, params, config)
    for variant, speed in decode_tokens_per_s(generators, config).items():
        rows[variant]["decode_tokens_per_s"] = speed
    write_outputs(rows, workdir)
    if is_writer():  # only process 0 wrote it
        print((workdir / "attention_table.md").read_text())
    return {f"{key}_{variant}": value for variant, row in rows.items() for key, value in row.items() if key != "d_ff"}


EXPERIMENTS = [
    Experiment(
        name="lm-attention",
        description="byte LM with MHA / GQA / MQA / MLA at matched parameter count: val loss, KV-cache bytes/token, decode tokens/s",
        config=Config(),
        run=run,
        tensor_fields=("num_heads",),  # tensor parallelism splits the heads
    )
]
