"""Throughput figures of a training run: examples/s, tokens/s, achieved TFLOP/s, MFU and peak device memory.

The trainer works out what these need once per run, on the host, before the
first step (the global batch size, the FLOPs XLA counts in one compiled step,
the peak of the devices) and turns them into figures only at log steps, from
the steps/s it has already measured: nothing here waits on the device.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import jax
import numpy as np

# Peak dense (no 2:4 sparsity) bf16 matrix throughput of one JAX device, TFLOP/s, by ``device.device_kind``.
# NVIDIA: the data sheets' BF16 Tensor Core figures, which are quoted with sparsity, halved — A100 (SXM and PCIe)
# 312; H100 SXM 1,979/2 ≈ 989, H100 PCIe 1,513/2 ≈ 756, H100 NVL 1,671/2 ≈ 835; H200 SXM 1,979/2 ≈ 989, H200 NVL
# 1,671/2 ≈ 835 (nvidia.com/en-us/data-center/a100, /h100, /h200). Google Cloud TPU: "Peak compute per chip
# (bf16)" of docs.cloud.google.com/tpu/docs/v4 (275), /v5e (197), /v5p (459), /v6e (918); one JAX device is one
# chip on these generations.
TPU_PEAK_TFLOPS: Mapping[str, float] = {
    "tpu v4": 275.0,
    "tpu v5 lite": 197.0,  # v5e
    "tpu v5e": 197.0,
    "tpu v5": 459.0,  # v5p
    "tpu v5p": 459.0,
    "tpu v6 lite": 918.0,  # v6e (Trillium)
    "tpu v6e": 918.0,
}
GPU_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (  # (prefix of the device kind, peak); the first match counts
    ("nvidia h200 nvl", 835.0),
    ("nvidia h200", 989.0),
    ("nvidia h100 nvl", 835.0),
    ("nvidia h100 pcie", 756.0),
    ("nvidia h100", 989.0),  # "NVIDIA H100 80GB HBM3" (SXM)
    ("nvidia a100", 312.0),
)
GIB = 2**30


def peak_tflops(device_kind: str) -> float | None:
    """The dense bf16 peak TFLOP/s of one device of ``device_kind`` (``jax.Device.device_kind``), or None if unknown (CPUs among them).

    The MFU the trainer logs is measured against this bf16 peak whatever
    precision the model computes in, the usual convention: a float32 model
    gets a low figure.
    """
    kind = " ".join(device_kind.lower().split())
    if kind in TPU_PEAK_TFLOPS:
        return TPU_PEAK_TFLOPS[kind]
    return next((peak for prefix, peak in GPU_PEAK_TFLOPS if kind.startswith(prefix)), None)


def batch_size(batch: Any) -> int | None:
    """The global batch size: the leading axis of ``batch``'s leaves, or None if they have none or disagree."""
    leaves = jax.tree.leaves(batch)
    if not leaves or any(np.ndim(leaf) == 0 for leaf in leaves):
        return None
    sizes = {int(np.shape(leaf)[0]) for leaf in leaves}
    return sizes.pop() if len(sizes) == 1 else None


def tokens_per_example(batch: Any) -> int | None:
    """Predicted tokens per example of a language-model batch ``{"tokens": (b, t + 1)}`` (t: the next-token targets), else None."""
    tokens = batch.get("tokens") if isinstance(batch, Mapping) else None
    if tokens is None or np.ndim(tokens) != 2 or np.shape(tokens)[1] < 2:
        return None
    return int(np.shape(tokens)[1]) - 1


def flops(stage: Any) -> float | None:
    """The ``"flops"`` of a ``jax.stages.Compiled`` (or ``Lowered``) stage's ``cost_analysis()``, or None where the backend gives none.

    ``cost_analysis()`` returns a dict, or in older JAX versions a list of
    one dict per program; it may also return None, raise
    ``NotImplementedError``, or leave ``"flops"`` out (and a ``Lowered``
    stage gives None on GPU).

    A compiled program is what one device runs after partitioning: the
    FLOPs of all the devices are this times the device count. XLA counts a
    ``while`` loop's body once, not once per iteration, so a ``lax.scan`` of
    several steps reports about the FLOPs of one: count a single step and
    multiply by the steps taken.
    """
    try:
        cost = stage.cost_analysis()
    except NotImplementedError:
        return None
    if isinstance(cost, (list, tuple)):
        counts = [entry.get("flops") for entry in cost if isinstance(entry, Mapping)]
        total = sum(float(c) for c in counts if c is not None) if any(c is not None for c in counts) else None
    elif isinstance(cost, Mapping):
        total = float(cost["flops"]) if cost.get("flops") is not None else None
    else:
        total = None
    return total if total is not None and np.isfinite(total) and total > 0 else None


def peak_memory_gib(devices: Iterable[jax.Device]) -> float | None:
    """The largest ``"peak_bytes_in_use"`` of ``devices``' allocators since the process started, in GiB; None where none reports it (CPU)."""
    peaks = []
    for device in devices:
        try:
            stats = device.memory_stats()
        except (NotImplementedError, RuntimeError):  # a backend without allocator statistics (XlaRuntimeError is a RuntimeError)
            stats = None
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(stats["peak_bytes_in_use"])
    return max(peaks) / GIB if peaks else None


def throughput(
    steps_per_sec: float, *, batch_size: int | None, flops_per_step: float | None, peak_tflops: float | None, tokens_per_example: int | None = None
) -> dict[str, float]:
    """The throughput entries of a ``metrics.jsonl`` line; a figure whose input is unknown is left out.

    Args:
      steps_per_sec: the measured training steps per second.
      batch_size: examples in one step's global batch.
      tokens_per_example: predicted tokens per example (language models), or None.
      flops_per_step: FLOPs of one step, summed over the devices.
      peak_tflops: the peak TFLOP/s of all the devices together.

    Returns:
      ``examples_per_sec`` (steps/s × batch size), ``tokens_per_sec``
      (examples/s × tokens per example), ``tflops_per_sec``
      (achieved: FLOPs per step × steps/s / 10¹²) and ``mfu`` (its fraction
      of the peak).
    """
    out: dict[str, float] = {}
    if batch_size is not None:
        out["examples_per_sec"] = steps_per_sec * batch_size
        if tokens_per_example is not None:
            out["tokens_per_sec"] = out["examples_per_sec"] * tokens_per_example
    if flops_per_step is not None:
        out["tflops_per_sec"] = flops_per_step * steps_per_sec / 1e12
        if peak_tflops:
            out["mfu"] = out["tflops_per_sec"] / peak_tflops
    return out
