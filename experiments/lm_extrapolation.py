"""lm-extrapolation: a byte-level LM trained at context 128, evaluated at 128 … 2,048 under the RoPE extensions.

Trains a small decoder-only transformer (RoPE, MHA) on the embedded text
corpus at context 128, then — with the *same* parameters, no fine-tuning —
measures the mean next-byte loss (nats) over held-out windows of 128, 256,
512, 1,024 and 2,048 tokens with plain RoPE and six training-free
extensions, each without and with log-n attention scaling:

* ``rope``: plain RoPE;
* ``pi``, ``ntk``, ``yarn``: position interpolation, NTK-aware base and
  YaRN, each with the fixed factor ``max(eval_contexts) / context`` (16 by
  default) that covers the longest evaluation — so they also show what the
  extension costs at the trained length;
* ``dynamic_ntk``: NTK with the factor following the evaluated length
  (``L / 128``, at most that same factor);
* ``rerope``, ``leaky_rerope``: relative positions clipped at the window
  ``w`` (or continued with slope 1/k), w = 64 and k = 32 by default, so the
  largest relative position at 2,048 (64 + 1,984/32 = 126) stays inside the
  trained range.

Log-n scaling multiplies the logits of the query at position m by
``max(1, ln(m + 1)/ln 128)``; the model is trained without it, so it only
acts past the trained length.

Outputs: ``results.json`` keys ``loss_<method>_<context>`` and
``loss_<method>_logn_<context>``; ``loss_table.json`` / ``loss_table.md``;
``extrapolation.png`` (loss against context) and ``loss_by_position.png``
(loss against position inside the longest windows), with the per-position
losses in ``position_losses.npz``.

References:
  Su 2023, "ReRoPE" (kexue.fm/archives/9708) — the comparison this mirrors.
  Chen et al. 2023 (PI, arXiv:2306.15595); Peng et al. 2023 (YaRN,
  arXiv:2309.00071); bloc97 / emozilla 2023 (NTK-aware, dynamic NTK).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path

import jax
import numpy as np
from matplotlib.figure import Figure

from jaxlab.data import VOCAB_SIZE, random_windows, text_split
from jaxlab.nn import (
    AttentionConfig,
    DecoderLM,
    RopeConfig,
    TransformerConfig,
    count_params,
    token_losses,
)
from jaxlab.nn.attention_core import check_attention_impl
from jaxlab.nn.precision import dtype_name
from jaxlab.tasks import LanguageModel
from jaxlab.train import Experiment, TrainConfig, adamw_with_warmup, is_writer, save_arrays, save_figure, train, write_text_atomic

METHODS = ("rope", "pi", "ntk", "dynamic_ntk", "yarn", "rerope", "leaky_rerope")


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    """lm-extrapolation configuration (trainer fields from :class:`TrainConfig`)."""

    steps: int = 800
    batch_size: int = 16
    learning_rate: float = 3e-3
    warmup_steps: int = 100
    ema_decay: float = 0.99
    checkpoint_every: int = 400
    log_every: int = 50
    context: int = 128
    d_model: int = 128
    num_layers: int = 2
    num_heads: int = 4
    d_ff: int = 384
    rope_base: float = 10_000.0
    eval_contexts: tuple[int, ...] = (128, 256, 512, 1024, 2048)
    eval_tokens: int = 16_384
    eval_batch_tokens: int = 4096
    rerope_window: int = 64
    leaky_k: float = 32.0
    methods: tuple[str, ...] = METHODS
    dtype: str = "float32"  # compute dtype of the model (parameters stay float32)
    attention_impl: str = "xla"  # "xla" / "cudnn": jax.nn.dot_product_attention; "reference": the explicit softmax

    def __post_init__(self) -> None:
        super().__post_init__()
        dtype_name("dtype", self.dtype)
        check_attention_impl(self.attention_impl, self.dtype)


def model_config(config: Config, rope: RopeConfig | None = None) -> TransformerConfig:
    attention = AttentionConfig(
        num_heads=config.num_heads,
        head_dim=config.d_model // config.num_heads,
        rope=RopeConfig(base=config.rope_base) if rope is None else rope,
    )
    return TransformerConfig(
        attention=attention, vocab_size=VOCAB_SIZE, d_model=config.d_model, num_layers=config.num_layers, d_ff=config.d_ff,
        dtype=config.dtype, attention_impl=config.attention_impl,
    )  # fmt: skip


def rope_settings(config: Config, method: str, logn: bool) -> RopeConfig:
    """The RoPE configuration of one evaluated method."""
    factor = max(1.0, max(config.eval_contexts) / config.context)
    common = dict(base=config.rope_base, original_length=config.context, logn=logn)
    if method == "rope":
        return RopeConfig(**common)
    if method in ("pi", "ntk", "dynamic_ntk", "yarn"):
        return RopeConfig(scaling=method, factor=factor, **common)
    if method in ("rerope", "leaky_rerope"):
        return RopeConfig(scaling=method, window=config.rerope_window, leaky_k=config.leaky_k, **common)
    raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")


def make_batches(config: Config):
    """``step -> {"tokens": (batch, context + 1) uint8}`` from the training split."""
    train_tokens, _ = text_split()

    def batches(step: int) -> dict[str, np.ndarray]:
        windows = random_windows(train_tokens, seed=config.seed, step=step, batch=config.batch_size, length=config.context)
        return {"tokens": windows}

    return batches


def eval_windows(tokens: np.ndarray, length: int, num_tokens: int) -> np.ndarray:
    """Evenly spaced held-out windows (num, length + 1) covering about ``num_tokens`` predictions."""
    num = max(2, num_tokens // length)
    if tokens.size < length + 1:
        raise ValueError(f"the test split ({tokens.size} bytes) is shorter than a window of {length + 1}")
    starts = np.linspace(0, tokens.size - length - 1, num).astype(np.int64)
    return tokens[starts[:, None] + np.arange(length + 1)]


@functools.cache
def _loss_fn(model: TransformerConfig):
    return jax.jit(lambda params, windows: token_losses(DecoderLM(model).apply, params, windows))


def position_losses(model: TransformerConfig, params, windows: np.ndarray, batch_tokens: int) -> np.ndarray:
    """Mean loss at every position over the windows, (length,), evaluated in batches."""
    per_batch = max(1, batch_tokens // (windows.shape[1] - 1))
    fn = _loss_fn(model)
    sums = np.zeros(windows.shape[1] - 1)
    for start in range(0, len(windows), per_batch):
        chunk = windows[start : start + per_batch]
        sums += np.asarray(fn(params, chunk)).sum(axis=0)
    return sums / len(windows)


def evaluate(config: Config, params) -> dict[str, dict[int, np.ndarray]]:
    """Per-position losses for every (method ± log-n, context)."""
    _, test_tokens = text_split()
    windows = {L: eval_windows(test_tokens, L, config.eval_tokens) for L in config.eval_contexts}
    curves: dict[str, dict[int, np.ndarray]] = {}
    for method in config.methods:
        for logn in (False, True):
            name = f"{method}_logn" if logn else method
            model = model_config(config, rope_settings(config, method, logn))
            curves[name] = {L: position_losses(model, params, windows[L], config.eval_batch_tokens) for L in windows}
    return curves


def write_tables(curves: dict[str, dict[int, np.ndarray]], contexts: tuple[int, ...], workdir: Path) -> None:
    table = {name: {str(L): float(c[L].mean()) for L in contexts} for name, c in curves.items()}
    write_text_atomic(workdir / "loss_table.json", json.dumps(table, indent=2) + "\n")
    lines = [
        "| method | " + " | ".join(str(L) for L in contexts) + " |",
        "|---" * (len(contexts) + 1) + "|",
    ]
    lines += [f"| {name} | " + " | ".join(f"{table[name][str(L)]:.3f}" for L in contexts) + " |" for name in table]
    write_text_atomic(workdir / "loss_table.md", "Mean next-byte loss (nats) on held-out windows\n\n" + "\n".join(lines) + "\n")


def plot(curves: dict[str, dict[int, np.ndarray]], config: Config, workdir: Path) -> None:
    contexts = config.eval_contexts
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, suffix, title in ((axes[0], "", "without log-n"), (axes[1], "_logn", "with log-n scaling")):
        for method in config.methods:
            losses = [curves[method + suffix][L].mean() for L in contexts]
            ax.plot(contexts, losses, marker="o", label=method, color=f"C{METHODS.index(method)}")
        ax.axvline(config.context, color="gray", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("evaluation context (tokens)")
        ax.set_title(title)
    axes[0].set_ylabel("mean loss (nats/byte)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, workdir / "extrapolation.png", dpi=120)

    longest = max(contexts)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    bucket = max(1, longest // 32)
    for name in curves:
        curve = curves[name][longest]
        means = curve[: len(curve) // bucket * bucket].reshape(-1, bucket).mean(axis=1)
        color = f"C{METHODS.index(name.removesuffix('_logn'))}"  # a method and its log-n variant share a color
        style = "--" if name.endswith("_logn") else "-"
        ax.plot((np.arange(len(means)) + 0.5) * bucket, means, label=name, color=color, linestyle=style)
    ax.axvline(config.context, color="gray", linestyle=":", linewidth=1)
    ax.set_xlabel(f"position in a {longest}-token window")
    ax.set_ylabel("loss (nats/byte)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    save_figure(fig, workdir / "loss_by_position.png", dpi=120)


def run(config: Config, workdir: Path) -> dict[str, float]:
    unknown = sorted(set(config.methods) - set(METHODS))
    if unknown:
        raise ValueError(f"methods must be among {METHODS}; got {unknown}")
    method = LanguageModel(model_config(config))
    state = train(method, adamw_with_warmup(config), make_batches(config), config, workdir)
    params = jax.device_get(state.ema_params)
    start = time.perf_counter()
    curves = evaluate(config, params)
    print(f"evaluated {len(curves)} settings at {len(config.eval_contexts)} contexts in {time.perf_counter() - start:.0f} s")
    results = {f"loss_{name}_{L}": float(curve[L].mean()) for name, curve in curves.items() for L in config.eval_contexts}
    results["num_params"] = count_params(params)
    save_arrays(workdir / "position_losses.npz", **{f"{name}_{L}": c[L] for name, c in curves.items() for L in c})
    write_tables(curves, config.eval_contexts, workdir)
    plot(curves, config, workdir)
    if is_writer():  # only process 0 wrote it
        print((workdir / "loss_table.md").read_text())
    return results


EXPERIMENTS = [
    Experiment(
        name="lm-extrapolation",
        description="byte LM trained at context 128; loss at 128…2048 with RoPE, PI, NTK, dynamic NTK, YaRN, (Leaky) ReRoPE ± log-n",
        config=Config(),
        run=run,
        tensor_fields=("num_heads",),  # tensor parallelism splits the heads
    )
]
