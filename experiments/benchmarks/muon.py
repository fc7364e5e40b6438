"""Side-by-side benchmark: jaxlab.optim.muon vs optax.contrib.muon on GPT-2-small-shaped matrices.

Run ``python experiments/benchmarks/muon.py`` (``--quick`` for a tiny smoke run,
``--out FILE`` to write the JSON lines to a file instead of stdout).

Measured in one process, timings interleaved run by run so that load from other
processes hits both sides alike:

* the median wall time of one jitted ``update`` of each optimizer on a tree of
  ``blocks`` x {768x2304, 768x768, 768x3072, 3072x768} matrices;
* the machine's float32 matmul rate (a square matmul timed in the same
  interleaved loop, best run), and each method's executed GFLOP/s in its best
  run as a fraction of it (best against best: the least disturbed runs);
* orthogonality: ``max |sigma - 1|`` of each optimizer's (unscaled) update for a
  Gaussian matrix of each rectangular shape, over the input's singular values
  ``>= 1e-3 sigma_1`` (``u_i^T Y v_i`` for the input's singular pairs; both
  methods are polynomials in ``x x^T``, so these are exactly the output's
  singular values). The square block is left out: a square Gaussian matrix is
  so ill-conditioned that it says nothing about a 5-step method.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxlab.optim

GPT2_SHAPES = {"qkv": (768, 2304), "proj": (768, 768), "fc": (768, 3072), "fc_out": (3072, 768)}
QUICK_SHAPES = {"qkv": (128, 384), "proj": (128, 128), "fc": (128, 512), "fc_out": (512, 128)}
KELLER = (3.4445, -4.7750, 2.0315)


def _time_once(fn, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def matmul_runner(n: int):
    """A jitted float32 ``(n, n) @ (n, n)`` and its arguments; ``2 n^3`` flops."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    mm = jax.jit(jnp.matmul)
    jax.block_until_ready(mm(a, b))
    return mm, (a, b)


def newton_schulz_flops(m: int, n: int, steps: int) -> float:
    """Direct quintic iteration on the short side: K (4 m^2 n + 2 m^3)."""
    m, n = min(m, n), max(m, n)
    return steps * (4.0 * m * m * n + 2.0 * m**3)


def jaxlab_flops(m: int, n: int, steps: int, power_steps: int = 8) -> float:
    """What jaxlab.linalg.msign executes (method='auto', float32)."""
    m, n = min(m, n), max(m, n)
    power = 2.0 * m * m * 4 * power_steps  # block of 4 start vectors
    if n >= 1.5 * m and steps > 1:  # msign(method="auto") switches to Gram here
        return 4.0 * m * m * n + (8.0 * steps - 6.0) * m**3 + power
    return newton_schulz_flops(m, n, steps) + power


def make_tree(shapes, blocks: int, seed: int):
    key = jax.random.key(seed)
    tree = {}
    for b in range(blocks):
        for name, shape in shapes.items():
            key, sub = jax.random.split(key)
            tree.setdefault(f"block_{b}", {})[name] = jax.random.normal(sub, shape, jnp.float32)
    return tree


def plain_newton_schulz(tree):
    """A plain jitted 5-step Keller loop with Frobenius normalization (reference)."""

    def one(x):
        y = x.T if x.shape[0] > x.shape[1] else x
        y = y / (jnp.linalg.norm(y) + 1e-7)
        a, b, c = KELLER
        for _ in range(5):
            g = y @ y.T
            y = a * y + (b * g + c * g @ g) @ y
        return y.T if x.shape[0] > x.shape[1] else y

    return jax.tree.map(one, tree)


def orthogonality_error(tx, x: np.ndarray) -> float:
    """max |sigma - 1| of tx's first update of a Gaussian leaf, divided by the shape scale."""
    params = {"w": jnp.asarray(x)}
    update, _ = jax.jit(tx.update)(params, tx.init(params), params)
    y = -np.asarray(update["w"], np.float64)
    m, n = x.shape
    y /= max(1.0, n / m) ** 0.5  # Keller's width scaling, used by both optimizers here
    u, s, vt = np.linalg.svd(np.asarray(x, np.float64), full_matrices=False)
    keep = s >= 1e-3 * s[0]
    d = np.einsum("ij,ik,kj->j", u, y, vt.T)
    return float(np.max(np.abs(d[keep] - 1.0)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, few repeats (smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per method (default 5, quick 2)")
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--out", default=None, help="write JSON lines here (default: stdout)")
    args = parser.parse_args(argv)
    shapes = QUICK_SHAPES if args.quick else GPT2_SHAPES
    repeats = args.repeats or (2 if args.quick else 5)
    blocks = 1 if args.quick else args.blocks
    load_start = os.getloadavg()[0]

    peak_n = 512 if args.quick else 2048
    params = make_tree(shapes, blocks, seed=0)
    grads = make_tree(shapes, blocks, seed=1)
    # name -> (optimizer factory of the learning rate, flop model, steps)
    methods = {
        "optax.contrib.muon": (optax.contrib.muon, newton_schulz_flops, 5),
        "jaxlab.optim.muon": (jaxlab.optim.muon, jaxlab_flops, 5),
        "jaxlab.optim.muon[steps=4]": (lambda lr: jaxlab.optim.muon(lr, steps=4), jaxlab_flops, 4),
        "jaxlab.optim.muon[compute_dtype=bfloat16]": (
            lambda lr: jaxlab.optim.muon(lr, compute_dtype="bfloat16"),
            newton_schulz_flops,  # bf16 operands: the direct iteration (no Gram path)
            5,
        ),
    }
    runners = {}
    for name, (make, _, _) in methods.items():
        tx = make(1e-2)
        update = jax.jit(tx.update)
        state = tx.init(params)
        jax.block_until_ready(update(grads, state, params))  # compile
        runners[name] = (update, (grads, state, params))
    plain = jax.jit(plain_newton_schulz)
    jax.block_until_ready(plain(grads))
    runners["plain jitted 5-step Newton-Schulz (reference)"] = (plain, (grads,))
    runners["matmul"] = matmul_runner(peak_n)
    times = {name: [] for name in runners}
    for _ in range(repeats):  # interleaved
        for name, (fn, fargs) in runners.items():
            times[name].append(_time_once(fn, *fargs))

    leaves = [x.shape for x in jax.tree.leaves(grads)]
    peak = 2 * peak_n**3 / float(min(times.pop("matmul"))) / 1e9  # best run: the machine's rate, least disturbed
    rows = []
    for name, ts in times.items():
        flop_fn, steps = (methods[name][1], methods[name][2]) if name in methods else (newton_schulz_flops, 5)
        gflop = sum(flop_fn(m, n, steps) for m, n in leaves) / 1e9
        med = float(np.median(ts))
        rows.append(
            dict(
                bench="muon",
                name=name,
                median_s=med,
                min_s=float(min(ts)),
                repeats=len(ts),
                gflop=gflop,
                gflops=gflop / med,
                peak_fraction=gflop / min(ts) / peak,
            )
        )
    by_name = {r["name"]: r for r in rows}
    ratio = by_name["optax.contrib.muon"]["median_s"] / by_name["jaxlab.optim.muon"]["median_s"]

    rng = np.random.default_rng(0)
    gaussians = {f"{shapes[k][0]}x{shapes[k][1]}": rng.standard_normal(shapes[k]).astype(np.float32) for k in ("qkv", "fc", "fc_out")}
    errors = {name: {shape: orthogonality_error(make(1.0), x) for shape, x in gaussians.items()} for name, (make, _, _) in methods.items()}
    for r in rows:
        if r["name"] in errors:
            r["max_sigma_err"] = max(errors[r["name"]].values())
            r["sigma_err_by_shape"] = errors[r["name"]]
    err_optax = by_name["optax.contrib.muon"]["max_sigma_err"]
    err_jaxlab = by_name["jaxlab.optim.muon"]["max_sigma_err"]
    load_end = os.getloadavg()[0]

    print(
        f"f32 matmul peak ({peak_n}^3, best run): {peak:.1f} GFLOP/s   "
        f"tree: {blocks} blocks x {list(shapes.values())}   "
        f"repeats: {repeats}   load avg {load_start:.2f} -> {load_end:.2f}",
        file=sys.stderr,
    )
    print(f"{'method':48s} {'median s':>9s} {'min s':>8s} {'GFLOP':>8s} {'GFLOP/s':>8s} {'best/peak':>9s} {'max|s-1|':>9s}", file=sys.stderr)
    for r in rows:
        err = f"{r['max_sigma_err']:9.4f}" if "max_sigma_err" in r else f"{'-':>9s}"
        print(f"{r['name']:48s} {r['median_s']:9.3f} {r['min_s']:8.3f} {r['gflop']:8.1f} {r['gflops']:8.1f} {r['peak_fraction']:9.1%} {err}", file=sys.stderr)
    for shape in gaussians:
        print(f"max|sigma-1| {shape:>10s}: optax {errors['optax.contrib.muon'][shape]:.4f}   jaxlab {errors['jaxlab.optim.muon'][shape]:.4f}", file=sys.stderr)
    print(
        f"speed ratio optax/jaxlab: {ratio:.2f}x   max|sigma-1| optax {err_optax:.4f} jaxlab {err_jaxlab:.4f}   "
        f"(timings on a shared machine are noisy; see min_s and the load averages)",
        file=sys.stderr,
    )

    summary = dict(
        bench="muon",
        name="summary",
        ratio_optax_over_jaxlab=ratio,
        max_sigma_err_optax=err_optax,
        max_sigma_err_jaxlab=err_jaxlab,
        peak_gflops=peak,
        quick=args.quick,
        load_avg_start=load_start,
        load_avg_end=load_end,
        device=str(jax.devices()[0]),
    )
    lines = [json.dumps(r) for r in [*rows, summary]]
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    else:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
