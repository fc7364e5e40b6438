"""``make gpu-check``: what jaxlab does on the accelerator at hand, in one bounded run.

Sections, most informative first, each result appended to ``gpu_report.json``
and ``gpu_report.md`` the moment it is measured (a run cut short keeps what
it had):

1. ``devices``: platform, device kind and count, memory, library versions.
2. ``throughput``: a DiT-B/2 rectified-flow step at 32×32, batch 256, in
   float32 and bfloat16 (img/s, achieved TFLOP/s, MFU, peak GiB: the
   trainer's own ``metrics.jsonl`` figures); a 4-layer d 512 DecoderLM at
   T 1024 / 4096 with the reference and the cuDNN attention, and at 16K
   with cuDNN alone (tokens/s; bfloat16, 16K tokens a batch).
3. ``msign``: Newton–Schulz on an 8×1024×4096 stack in float32 and bfloat16
   (median seconds and max|σ−1| against the SVD).
4. ``resume``: 20 steps, stop, 20 more against 40 straight: bitwise equal?
5. ``benchmarks``: every ``experiments/benchmarks/*.py --quick`` (a subprocess each).
6. ``experiments``: every registered experiment for a few steps with reduced
   evaluation (``jaxlab train``, a subprocess each).

Every section and subprocess draws on one deadline (``--budget``, 470 s by
default, so that the whole check stays under 8 minutes); what the deadline
cuts is recorded as skipped. ``--quick`` shrinks every size so the script can
be tried on a CPU; CI never needs a GPU.

    python experiments/gpu_check.py [--out gpu_report] [--budget 470] [--quick] [--only throughput,resume]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.metadata
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.train import is_writer, write_json_atomic, write_text_atomic

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("devices", "throughput", "msign", "resume", "benchmarks", "experiments")
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")
# Config fields that shorten an experiment's evaluation, applied where the config has them.
SMOKE_FIELDS = {"eval_samples": 256, "nll_samples": 64, "nll_steps": 4, "num_samples": 256, "eval_batches": 2}


class Report:
    """The results so far, rewritten to ``gpu_report.json`` and ``gpu_report.md`` after every one (process 0 only)."""

    def __init__(self, out: Path, deadline: float):
        self.out, self.deadline, self.rows, self.lines = out, deadline, [], ["| section | name | result |", "|---|---|---|"]
        if is_writer():
            out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "gpu_report.md", "\n".join(self.lines) + "\n")

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()

    def add(self, section: str, name: str, **result: Any) -> None:
        self.rows.append({"section": section, "name": name, **result})
        cells = ", ".join(f"{k} {_fmt(v)}" for k, v in result.items())
        self.lines.append(f"| {section} | {name} | {cells} |")
        write_json_atomic(self.out / "gpu_report.json", json.loads(json.dumps(self.rows, default=str)))
        write_text_atomic(self.out / "gpu_report.md", "\n".join(self.lines) + "\n")
        print(f"[{section}] {name}: {cells}", flush=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/").replace("\n", " ")[:200]


def devices(report: Report, quick: bool) -> None:
    del quick
    local = jax.local_devices()
    memory = local[0].memory_stats() or {}
    report.add(
        "devices",
        "devices",
        platform=local[0].platform,
        kind=local[0].device_kind,
        count=jax.device_count(),
        processes=jax.process_count(),
        memory_gib=round(memory.get("bytes_limit", 0) / 2**30, 1) or None,
    )
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    report.add("devices", "versions", python=sys.version.split()[0], **versions)


def _last_metrics(method: Any, batch: dict[str, np.ndarray], steps: int, log_every: int) -> dict[str, Any]:
    """Trains ``method`` for ``steps`` on one fixed batch with the jaxlab trainer; the last ``metrics.jsonl`` line."""
    from jaxlab.train import MetricsLog, TrainConfig, adamw_with_warmup, train

    config = TrainConfig(steps=steps, batch_size=len(next(iter(batch.values()))), log_every=log_every, checkpoint_every=steps, warmup_steps=1)
    with tempfile.TemporaryDirectory() as workdir:
        train(method, adamw_with_warmup(config), lambda step: batch, config, workdir, progress=False)
        return MetricsLog(Path(workdir) / "metrics.jsonl").read()[-1]


def _figures(record: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: record.get(name) for name in names}


def dit_flow(dtype: str, quick: bool) -> dict[str, Any]:
    from jaxlab.generative import RectifiedFlow
    from jaxlab.nn import DiT, dit_config

    size, batch_size, steps = ("S/4", 16, 6) if quick else ("B/2", 256, 30)
    network = DiT(dit_config(size, in_channels=3, dtype=dtype, **({"depth": 2} if quick else {})))
    method = RectifiedFlow(apply_fn=network.apply, init_fn=network.init, data_shape=(32, 32, 3))
    images = np.random.default_rng(0).uniform(-1, 1, (batch_size, 32, 32, 3)).astype(np.float32)
    record = _last_metrics(method, {"x": images}, steps, log_every=steps // 3)
    return _figures(record, "loss", "examples_per_sec", "tflops_per_sec", "mfu", "peak_memory_gib")


def decoder_lm(length: int, impl: str, quick: bool) -> dict[str, Any]:
    """A 4-layer d 512 DecoderLM step in bfloat16 at ``length`` tokens, 16K tokens per batch (``quick``: d 64, 1K)."""
    from jaxlab.nn import AttentionConfig, TransformerConfig
    from jaxlab.tasks import LanguageModel

    width, tokens = (64, 1024) if quick else (512, 16384)
    attention = AttentionConfig(num_heads=width // 64 or 1, head_dim=min(width, 64))
    config = TransformerConfig(attention=attention, vocab_size=256, d_model=width, num_layers=4, d_ff=3 * width, dtype="bfloat16", attention_impl=impl)
    batch = np.random.default_rng(0).integers(0, 256, (max(tokens // length, 1), length + 1), dtype=np.int32)
    record = _last_metrics(LanguageModel(config), {"tokens": batch}, steps=9, log_every=3)
    return _figures(record, "loss", "tokens_per_sec", "tflops_per_sec", "mfu", "peak_memory_gib")


def throughput(report: Report, quick: bool) -> None:
    for dtype in ("float32", "bfloat16"):
        _guarded(report, "throughput", f"DiT-{'S/4' if quick else 'B/2'} flow, {dtype}", lambda dtype=dtype: dit_flow(dtype, quick))
    fused = "xla" if jax.default_backend() != "gpu" else "cudnn"
    lengths = (64, 256) if quick else (1024, 4096)
    for length in lengths:
        for impl in ("reference", fused):
            _guarded(report, "throughput", f"DecoderLM T {length}, {impl}", lambda length=length, impl=impl: decoder_lm(length, impl, quick))
    _guarded(report, "throughput", f"DecoderLM T {4 * lengths[-1]}, {fused}", lambda: decoder_lm(4 * lengths[-1], fused, quick))


def msign_probe(report: Report, quick: bool) -> None:
    from jaxlab.linalg import msign

    shape = (2, 64, 128) if quick else (8, 1024, 4096)
    x = jax.random.normal(jax.random.key(0), shape, jnp.float32)
    for dtype in ("float32", "bfloat16"):

        def probe(dtype=dtype):
            fn = jax.jit(functools.partial(msign, dtype=jnp.dtype(dtype)))
            seconds = _median_seconds(lambda: fn(x).block_until_ready(), repeats=5)
            sigma = np.linalg.svd(np.asarray(fn(x)[0], np.float64), compute_uv=False)
            return {"median_s": seconds, "max_abs_sigma_minus_1": float(np.max(np.abs(sigma - 1.0)))}

        _guarded(report, "msign", f"{'×'.join(map(str, shape))} {dtype}", probe)


def resume(report: Report, quick: bool) -> None:
    from jaxlab.generative import RectifiedFlow
    from jaxlab.nn import TimeMLP
    from jaxlab.train import TrainConfig, adamw_with_warmup, restore_params, train

    def probe() -> dict[str, Any]:
        network = TimeMLP(width=64 if quick else 512, depth=3)
        method = RectifiedFlow(apply_fn=network.apply, init_fn=network.init, data_shape=(2,))
        data = np.random.default_rng(0).normal(size=(40, 256, 2)).astype(np.float32)
        config = TrainConfig(steps=40, batch_size=256, log_every=10, checkpoint_every=20, warmup_steps=5)
        optimizer = adamw_with_warmup(config)
        with tempfile.TemporaryDirectory() as root:
            straight, split = Path(root) / "straight", Path(root) / "split"
            train(method, optimizer, lambda s: {"x": data[s % 40]}, config, straight, progress=False)
            train(method, optimizer, lambda s: {"x": data[s % 40]}, dataclasses.replace(config, steps=20), split, progress=False)
            train(method, optimizer, lambda s: {"x": data[s % 40]}, config, split, progress=False)
            a, b = (jax.tree.leaves(restore_params(path)) for path in (straight, split))
        differing = sum(not np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(a, b))
        return {"bitwise_equal": differing == 0, "leaves_differing": differing, "leaves": len(a)}

    _guarded(report, "resume", "20+20 vs 40 steps", probe)


def benchmarks(report: Report, quick: bool) -> None:
    del quick
    for path in sorted((ROOT / "experiments" / "benchmarks").glob("*.py")):
        _subprocess(report, "benchmarks", path.stem, [sys.executable, str(path), "--quick"], cap=90)


def experiments(report: Report, quick: bool) -> None:
    from jaxlab.cli import discover

    steps = 4 if quick else 20
    for name, experiment in sorted(discover().items()):
        fields = {f.name for f in dataclasses.fields(experiment.config)}
        sets = [f"{k}={v}" for k, v in SMOKE_FIELDS.items() if k in fields]
        sets += [f"log_every={steps // 2}", f"checkpoint_every={steps}"] if {"log_every", "checkpoint_every"} <= fields else []
        with tempfile.TemporaryDirectory() as workdir:
            command = [sys.executable, "-m", "jaxlab.cli", "train", name, "--workdir", workdir, "--steps", str(steps)]
            _subprocess(report, "experiments", name, command + [a for s in sets for a in ("--set", s)], cap=60)


def _median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _guarded(report: Report, section: str, name: str, probe: Callable[[], dict[str, Any]]) -> None:
    """Runs one in-process probe; a failure (an OOM among them) is a row of the report, not the end of the check."""
    if report.seconds_left() <= 0:
        report.add(section, name, skipped="deadline")
        return
    start = time.perf_counter()
    try:
        result = probe()
    except Exception as error:  # noqa: BLE001 - every failure is a finding to report
        result = {"error": f"{type(error).__name__}: {error}"}
    report.add(section, name, **result, seconds=round(time.perf_counter() - start, 1))


def _subprocess(report: Report, section: str, name: str, command: list[str], cap: float) -> None:
    timeout = min(cap, report.seconds_left())
    if timeout <= 5:
        report.add(section, name, skipped="deadline")
        return
    start = time.perf_counter()
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        report.add(section, name, rc="timeout", seconds=round(timeout, 1))
        return
    tail = (done.stdout.strip().splitlines() or [""])[-1] if done.returncode == 0 else (done.stderr.strip().splitlines() or [""])[-1]
    report.add(section, name, rc=done.returncode, seconds=round(time.perf_counter() - start, 1), last_line=tail)


PROBES = {"devices": devices, "throughput": throughput, "msign": msign_probe, "resume": resume, "benchmarks": benchmarks, "experiments": experiments}


def parse_only(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"--only takes a comma-separated subset of {', '.join(SECTIONS)}; got {text!r}")
    return names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "gpu_report", help="folder for gpu_report.json / .md")
    parser.add_argument("--budget", type=float, default=470.0, help="seconds for the whole check")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (tries the script on a CPU)")
    parser.add_argument("--only", type=parse_only, default=SECTIONS, help=f"comma-separated sections: {','.join(SECTIONS)}")
    args = parser.parse_args(argv)
    if args.budget <= 0:
        parser.error(f"--budget must be positive seconds; got {args.budget}")
    report = Report(args.out, time.monotonic() + args.budget)
    for section in args.only:
        PROBES[section](report, args.quick)
    print(f"wrote {args.out / 'gpu_report.md'}")


if __name__ == "__main__":
    main()
