"""Benchmark: distributed Muon (``sharded=True``, owner computes) against the replicated layout, side by side.

On 8 devices (8 CPU devices with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``)
under the trainer's ``fsdp`` mesh and parameter layout (:mod:`jaxlab.parallel`),
jits :func:`jaxlab.optim.muon`'s update for a 28 MiB tree of float32 matrices
(20 x 512x512, 2 x 512x1024, 2 x 1024x512) with ``sharded=False`` and
``sharded=True`` and reports, from the optimized HLO and timed runs in one
process (interleaved run by run, so load from other processes hits both alike):

* collective bytes per step by kind (each collective's result bytes: what one
  device receives) and their ratio to the parameter bytes;
* flops per device (``compiled.cost_analysis()``, per device for SPMD programs),
  and those of the whole update compiled for one device;
* the median ms per step over the timed runs (and the best run).

It then measures ``max |sigma - 1|`` of :func:`jaxlab.linalg.msign`'s output
with float32 and bfloat16 operands for a few Gaussian 512x512 matrices (over
the input's singular values ``>= 1e-3 sigma_1`` and ``>= 1e-2 sigma_1``, read
as ``u_i^T Y v_i``), on whatever backend runs the script (bfloat16 operands are
the default on GPU/TPU; on CPU they are emulated with float32 accumulation).

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python experiments/benchmarks/muon_distributed.py [--repeats 5] [--strategy fsdp]

References: Liu et al., "Muon is Scalable for LLM Training", 2025
(https://arxiv.org/abs/2502.16982); Ahn et al., "Dion", 2025 (https://arxiv.org/abs/2504.05295).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab import parallel
from jaxlab.linalg import msign
from jaxlab.optim import muon
from jaxlab.testing import collective_bytes

SHAPES = [(512, 512)] * 20 + [(512, 1024)] * 2 + [(1024, 512)] * 2  # 28 MiB of float32
KINDS = ("all-gather", "all-reduce", "all-to-all", "reduce-scatter", "collective-permute")


def make_tree(seed: int) -> dict:
    key = jax.random.key(seed)
    return {f"w{i:02d}": jax.random.normal(jax.random.fold_in(key, i), s, jnp.float32) / math.sqrt(s[0]) for i, s in enumerate(SHAPES)}


def runner(sharded: bool, mesh, strategy: str, params: dict, grads: dict):
    """The update jitted as the trainer would (state shardings in and out, traced under the mesh), and its arguments."""
    tx = muon(0.02, sharded=sharded)
    state = tx.init(params)
    p_sh, s_sh = parallel.state_shardings(params, mesh, strategy), parallel.state_shardings(state, mesh, strategy)

    def update(g, s, p):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return tx.update(g, s, p)

    fn = jax.jit(update, in_shardings=(p_sh, s_sh, p_sh), out_shardings=(p_sh, s_sh))
    args = (jax.device_put(grads, p_sh), jax.device_put(state, s_sh), jax.device_put(params, p_sh))
    compiled = fn.lower(*args).compile()
    jax.block_until_ready(compiled(*args))  # warm-up
    return compiled, args


def sigma_errors(x: np.ndarray, dtype, floors=(1e-3, 1e-2)) -> list[float]:
    """max |sigma - 1| of msign(x) over the input's singular values >= floor * sigma_1, for each floor."""
    y = np.asarray(jax.jit(lambda a: msign(a, dtype=dtype))(jnp.asarray(x)), np.float64)
    u, s, vt = np.linalg.svd(x.astype(np.float64), full_matrices=False)
    d = np.einsum("ij,ik,kj->j", u, y, vt.T)
    return [float(np.max(np.abs(d[s >= floor * s[0]] - 1.0))) for floor in floors]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per layout")
    parser.add_argument("--strategy", choices=parallel.STRATEGIES, default="fsdp")
    args = parser.parse_args(argv)
    load_start = os.getloadavg()[0]
    mesh = parallel.make_mesh(args.strategy)
    params, grads = make_tree(0), make_tree(1)
    param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    names = {"sharded=False (replicated)": False, "sharded=True (owner computes)": True}
    runners = {name: runner(sharded, mesh, args.strategy, params, grads) for name, sharded in names.items()}
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.repeats):  # interleaved
        for name, (compiled, fargs) in runners.items():
            start = time.perf_counter()
            jax.block_until_ready(compiled(*fargs))
            times[name].append(time.perf_counter() - start)

    print(
        f"{jax.device_count()} {jax.devices()[0].platform} devices, strategy {args.strategy}, mesh {dict(mesh.shape)}; "
        f"tree {len(SHAPES)} matrices, {param_bytes / 2**20:.0f} MiB; {args.repeats} timed runs; load avg {load_start:.2f} -> {os.getloadavg()[0]:.2f}\n"
    )
    rows = {}
    for name, (compiled, _) in runners.items():
        by_kind = collective_bytes(compiled.as_text())
        rows[name] = dict(
            bytes=by_kind,
            total=sum(by_kind.values()),
            flops=compiled.cost_analysis()["flops"],
            median_ms=1e3 * statistics.median(times[name]),
            best_ms=1e3 * min(times[name]),
        )
    kinds = [k for k in KINDS if any(r["bytes"][k] for r in rows.values())]
    print("| layout | " + " | ".join(f"{k} MiB" for k in kinds) + " | total MiB | / param bytes | GFLOP per device | median ms | best ms |")
    print("|---|" + "---|" * (len(kinds) + 6))
    for name, r in rows.items():
        cells = " | ".join(f"{r['bytes'][k] / 2**20:.1f}" for k in kinds)
        print(
            f"| {name} | {cells} | {r['total'] / 2**20:.1f} | {r['total'] / param_bytes:.2f} | {r['flops'] / 1e9:.2f} | "
            f"{r['median_ms']:.0f} | {r['best_ms']:.0f} |"
        )
    base, ours = rows["sharded=False (replicated)"], rows["sharded=True (owner computes)"]
    print(
        f"\nratio replicated / owner computes: collective bytes {base['total'] / max(ours['total'], 1):.2f}x, "
        f"flops per device {base['flops'] / ours['flops']:.2f}x, median time {base['median_ms'] / ours['median_ms']:.2f}x"
    )
    tx = muon(0.02)
    whole = jax.jit(tx.update).lower(grads, tx.init(params), params).compile().cost_analysis()["flops"]
    print(
        f"the whole update on one device (what every device runs when nothing is split): {whole / 1e9:.2f} GFLOP; "
        f"owner computes runs {ours['flops'] / whole:.3f} of it per device (1/{mesh.size} = {1 / mesh.size:.3f} plus the padding)"
    )

    rng = np.random.default_rng(0)
    gaussians = [rng.standard_normal((512, 512)).astype(np.float32) for _ in range(4)]
    platform = jax.devices()[0].platform
    print(f"\nmsign max|sigma - 1| on {len(gaussians)} Gaussian 512x512 matrices ({platform}, 5 steps, default preset):")
    for name, dtype in (("float32", jnp.float32), ("bfloat16", jnp.bfloat16)):
        errs = np.array([sigma_errors(x, dtype) for x in gaussians])  # (matrix, floor)
        print(
            f"  {name:9s} operands: sigma >= 1e-3 sigma_1: max {errs[:, 0].max():.4f} (" + " ".join(f"{e:.4f}" for e in errs[:, 0]) + ")"
            f"   sigma >= 1e-2 sigma_1: max {errs[:, 1].max():.4f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
