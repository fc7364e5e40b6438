"""Side-by-side benchmark: randomized SVD and the interpolative decomposition vs the full SVD.

Run ``python experiments/benchmarks/lowrank.py`` (``--quick`` for a tiny smoke run,
``--out FILE`` to write the JSON lines to a file instead of stdout).

For each shape and rank, in one process with the runs interleaved (so load from
other processes hits every side alike): the median wall time of one jitted call
of ``jnp.linalg.svd`` (then truncation to the rank), :func:`jaxlab.linalg.randomized_svd`
(defaults: oversample 10, 2 power iterations) and :func:`jaxlab.linalg.interpolative`,
the ratio ``full / method``, and each method's relative Frobenius error divided by
the optimal (Eckart–Young) one. The test matrices have singular values decaying
as ``1 / (1 + i)``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.linalg import interpolative, randomized_svd, truncated_svd

SHAPES = [((2048, 1024), 16), ((2048, 1024), 64), ((4096, 512), 32)]
QUICK = [((256, 128), 8)]


def test_matrix(m: int, n: int) -> jax.Array:
    rng = np.random.default_rng(0)
    u = np.linalg.qr(rng.standard_normal((m, n)))[0]
    v = np.linalg.qr(rng.standard_normal((n, n)))[0]
    return jnp.asarray((u / (1.0 + np.arange(n))) @ v.T, jnp.float32)


def product(u, s, vh):
    return (u * s) @ vh


def _interpolative_product(x, k):
    columns, coefficients = interpolative(x, k)
    return x[:, columns] @ coefficients


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(args.out, "w")) if args.out else sys.stdout
        run(args, out)


def run(args, out) -> None:
    for (m, n), k in QUICK if args.quick else SHAPES:
        x = test_matrix(m, n)
        fns = {
            "full_svd": jax.jit(lambda x, k=k: product(*truncated_svd(x, k))),
            "randomized_svd": jax.jit(lambda x, k=k: product(*randomized_svd(x, k, key=jax.random.key(0)))),
            "interpolative": jax.jit(lambda x, k=k: _interpolative_product(x, k)),
        }
        times = {name: [] for name in fns}
        approx = {name: jax.block_until_ready(fn(x)) for name, fn in fns.items()}  # compile
        for _ in range(args.repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                jax.block_until_ready(fn(x))
                times[name].append(time.perf_counter() - start)
        norm = float(jnp.linalg.norm(x))
        errors = {name: float(jnp.linalg.norm(x - a)) / norm for name, a in approx.items()}
        full = statistics.median(times["full_svd"])
        for name in fns:
            record = {
                "shape": [m, n],
                "rank": k,
                "method": name,
                "median_ms": 1e3 * statistics.median(times[name]),
                "speedup_vs_full_svd": full / statistics.median(times[name]),
                "error_over_optimal": errors[name] / errors["full_svd"],
                "device": jax.devices()[0].platform,
            }
            print(json.dumps(record), file=out, flush=True)


if __name__ == "__main__":
    main()
