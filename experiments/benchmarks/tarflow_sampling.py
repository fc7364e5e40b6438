"""Benchmark: TARFLOW sampling — KV-cached sequential vs uncached recompute vs (GS-)Jacobi.

Side by side in one process, on whatever backend JAX picks, for one batch of
noise through a stack of TARFLOW blocks (each a causal transformer) at
sequence lengths L (default 16 and 64; the target is measured at 64):

* ``cached``: sequential inversion, one single-token step per position with
  a KV cache — O(L) token evaluations per block;
* ``recompute``: sequential inversion re-running the full causal pass for
  every position, the uncached reference — O(L²) token evaluations;
* ``jacobi``: parallel fixed-point iterations to tolerance ``--tol``;
* ``gs_jacobi``: Gauss–Seidel over ``--segments`` segments, Jacobi inside.

Parameters are random (the zero-initialized heads perturbed so that the
blocks are non-trivial), so the Jacobi iteration counts are those of this
random network, not of a trained one. Prints medians of ``--repeats`` timed
calls after a warm-up, the ratios to ``cached`` and one JSON line per result.
Target: cached at least 5× faster than recompute at L = 64.

Usage::

    python experiments/benchmarks/tarflow_sampling.py            # full run
    python experiments/benchmarks/tarflow_sampling.py --quick    # tiny smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxlab.generative import tarflow_inverse
from jaxlab.nn import CausalTransformer

SAMPLERS = ("cached", "recompute", "jacobi", "gs_jacobi")


def _block_params(network: CausalTransformer, length: int, features: int, num_blocks: int, scale: float):
    def init(key):
        flat, unravel = ravel_pytree(network.init(key, jnp.zeros((1, length, features))))
        return unravel(flat + scale * jax.random.normal(jax.random.fold_in(key, 1), flat.shape))

    return tuple(jax.jit(init)(jax.random.key(k)) for k in range(num_blocks))


def _median_seconds(fn, arg, repeats: int) -> float:
    jax.block_until_ready(fn(arg))  # compile + warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(arg))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_length(args: argparse.Namespace, length: int) -> list[dict]:
    network = CausalTransformer(out_features=2 * args.features, max_len=length, width=args.width, depth=args.depth, num_heads=args.heads)
    blocks = _block_params(network, length, args.features, args.blocks, args.scale)
    z = jax.random.normal(jax.random.key(7), (args.batch, length, args.features))
    rows, outputs = [], {}
    for sampler in SAMPLERS:
        run = jax.jit(lambda z, s=sampler: tarflow_inverse(network.apply, blocks, z, sampler=s, tol=args.tol, segments=args.segments))
        seconds = _median_seconds(run, z, args.repeats)
        x, passes = run(z)
        outputs[sampler] = x
        rows.append({"length": length, "sampler": sampler, "seconds": seconds, "passes_per_block": float(jnp.mean(passes))})
    for row in rows:
        row["ratio_to_cached"] = row["seconds"] / rows[0]["seconds"]
        row["max_abs_diff_to_cached"] = float(jnp.max(jnp.abs(outputs[row["sampler"]] - outputs["cached"])))
        row.update(batch=args.batch, features=args.features, width=args.width, depth=args.depth, blocks=args.blocks,
                   backend=jax.default_backend())  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (L = 8 and 16, one repeat)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--features", type=int, default=4)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--scale", type=float, default=0.05, help="std of the random perturbation of the parameters")
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--segments", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.quick:
        args.lengths, args.repeats, args.width, args.depth, args.blocks = [8, 16], 1, 16, 1, 2

    rows = [row for length in args.lengths for row in bench_length(args, length)]
    print(f"{'L':>4} {'sampler':>10} {'median ms':>10} {'× cached':>9} {'passes/block':>13} {'max |Δx|':>10}")
    for r in rows:
        print(f"{r['length']:>4} {r['sampler']:>10} {1e3 * r['seconds']:>10.2f} {r['ratio_to_cached']:>9.2f} "
              f"{r['passes_per_block']:>13.1f} {r['max_abs_diff_to_cached']:>10.2e}")  # fmt: skip
    for length in args.lengths:
        recompute = next(r for r in rows if r["length"] == length and r["sampler"] == "recompute")
        print(f"L = {length}: cached is {recompute['ratio_to_cached']:.1f}x faster than recompute (target >= 5x at L = 64)")
    for r in rows:
        print(json.dumps({"benchmark": "tarflow_sampling", **r}))


if __name__ == "__main__":
    main()
