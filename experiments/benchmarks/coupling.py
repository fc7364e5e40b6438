"""Side-by-side benchmark: the on-device auction of jaxlab.generative.coupling vs scipy through a host callback.

Run ``python experiments/benchmarks/coupling.py`` (``--quick`` for b = 256 and
1024 with fewer repeats, the full run adds b = 2048; ``--out FILE`` to write
the JSON lines to a file instead of stdout).

For each batch size b, feature count (2: the toy sets; 64: the 8×8 digits)
and number of groups (1, and 8 equal groups solved independently), in one
process with the runs interleaved (so load from other processes hits both
sides alike): the median wall time of one jitted
:func:`jaxlab.generative.coupling.minibatch_ot_pairing` on x0 = N(1, I) data
and x1 = N(0, I) noise, against the old path kept here only — the same
squared distances in JAX, then ``scipy.optimize.linear_sum_assignment`` per
group on the host through ``jax.pure_callback`` — their ratio
``scipy / auction``, and the auction's excess total cost over scipy's optimum
relative to that optimum (0 when it finds an optimal pairing).
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
from scipy.optimize import linear_sum_assignment

from jaxlab.generative.coupling import minibatch_ot_pairing
from jaxlab.linalg.distances import pairwise_sq_distances

SIZES = (256, 1024, 2048)
QUICK_SIZES = (256, 1024)
FEATURES = (2, 64)
GROUPS = (1, 8)


def _host_assignments(cost: np.ndarray) -> np.ndarray:
    """(G, g) column of each row for a (G, g, g) stack of costs, one scipy solve per group."""
    out = np.empty(cost.shape[:2], np.int32)
    for g, block in enumerate(np.asarray(cost, np.float64)):
        rows, columns = linear_sum_assignment(block)
        out[g, rows] = columns
    return out


def scipy_pairing(x0: jax.Array, x1: jax.Array, groups: int) -> jax.Array:
    """The old path: squared distances in JAX, the assignment on the host."""
    b = x0.shape[0]
    size = b // groups
    x0, x1 = x0.reshape(groups, size, -1), x1.reshape(groups, size, -1)
    cost = jax.vmap(pairwise_sq_distances)(x1, x0)  # (G, g, g)
    local = jax.pure_callback(_host_assignments, jax.ShapeDtypeStruct((groups, size), jnp.int32), cost)
    return (local + size * jnp.arange(groups, dtype=jnp.int32)[:, None]).reshape(b)


def total_cost(x0: np.ndarray, x1: np.ndarray, perm: np.ndarray) -> float:
    return float(np.sum(np.square(np.asarray(x0, np.float64)[perm] - np.asarray(x1, np.float64))))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per side (default 3 quick, 7 full)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(args.out, "w")) if args.out else sys.stdout
        run(args, out)


def run(args, out) -> None:
    repeats = args.repeats or (3 if args.quick else 7)
    for b in QUICK_SIZES if args.quick else SIZES:
        for features in FEATURES:
            key_data, key_noise = jax.random.split(jax.random.key(b + features))
            x0 = jax.random.normal(key_data, (b, features)) + 1.0
            x1 = jax.random.normal(key_noise, (b, features))
            for groups in GROUPS:
                fns = {
                    "scipy_callback": jax.jit(lambda a, c, g=groups: scipy_pairing(a, c, g)),
                    "auction": jax.jit(lambda a, c, g=groups: minibatch_ot_pairing(a, c, groups=g)),
                }
                perms = {name: np.asarray(jax.block_until_ready(fn(x0, x1))) for name, fn in fns.items()}  # compile
                times: dict[str, list[float]] = {name: [] for name in fns}
                for _ in range(repeats):
                    for name, fn in fns.items():
                        start = time.perf_counter()
                        jax.block_until_ready(fn(x0, x1))
                        times[name].append(time.perf_counter() - start)
                optimum = total_cost(x0, x1, perms["scipy_callback"])
                medians = {name: statistics.median(t) for name, t in times.items()}
                record = {
                    "b": b,
                    "features": features,
                    "groups": groups,
                    "scipy_callback_ms": 1e3 * medians["scipy_callback"],
                    "auction_ms": 1e3 * medians["auction"],
                    "speedup_vs_scipy": medians["scipy_callback"] / medians["auction"],
                    "auction_excess_cost": (total_cost(x0, x1, perms["auction"]) - optimum) / optimum,
                    "repeats": repeats,
                    "device": jax.devices()[0].platform,
                }
                print(json.dumps(record), file=out, flush=True)


if __name__ == "__main__":
    main()
