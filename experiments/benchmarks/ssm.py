"""Benchmark: S4D layer training step in convolution mode vs recurrent scans, and decoding cost.

Side by side in one process, on whatever backend JAX picks:

1. A training step (forward + backward w.r.t. parameters and input) of one
   :class:`jaxlab.ssm.SSM` layer (S4D, batch 16, H=128, N=64) in
   convolution mode, against the straightforward ``lax.scan`` over the
   complex64 diagonal recurrence and against ``lax.associative_scan``, at
   L = 1,024 and 4,096 (the scans keep every state for the backward pass, so
   they stop at 4,096); plus two peers in convolution mode: the S4 (DPLR,
   Cauchy + Woodbury) kernel, and a naive Vandermonde kernel with one
   complex exponential per (channel, mode, tap).
2. Convolution mode alone up to L = 65,536 with its compiled peak memory.
3. The per-token cost of step-mode decoding (a jitted ``lax.scan`` over
   tokens, and one jitted call per token).

Prints a table of medians and one JSON line per result. Timings on a shared
machine are noisy: medians over several repeats are reported.

Usage::

    python experiments/benchmarks/ssm.py            # full run
    python experiments/benchmarks/ssm.py --quick    # tiny smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

from jaxlab.ssm import SSM, causal_conv, s4d_discretize

PEER_MODES = ("conv", "scan", "assoc", "conv-s4", "conv-naive")


def _naive_vandermonde_step(layer: SSM):
    """Training step of the same layer with K = 2Re Σ C B̄ exp(ℓΔλ) built elementwise."""

    def apply(variables, u):
        def kernel(mdl, L):
            params = mdl.ssm_params()
            _, Bb = s4d_discretize(params, "zoh")
            powers = jnp.exp(params.step[:, None, None] * params.lambda_[..., None] * jnp.arange(L))  # (H, M, L)
            return 2.0 * jnp.einsum("hm,hml->hl", params.c * Bb, powers).real

        def fwd(mdl, u):
            return causal_conv(u, kernel(mdl, u.shape[-2])) + mdl.D * u

        return layer.apply(variables, u, method=fwd)

    return apply


def _step_fn(layer: SSM, mode: str):
    if mode == "conv-naive":
        apply = _naive_vandermonde_step(layer)
    else:
        real_mode = "conv" if mode == "conv-s4" else mode

        def apply(variables, u):
            return layer.apply(variables, u, mode=real_mode)

    def loss(variables, u):
        return jnp.mean(apply(variables, u) ** 2)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def _time(fn, args, repeats: int) -> tuple[float, list[float]]:
    jax.block_until_ready(fn(*args))  # compile + warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def _peak_bytes(fn, args) -> int | None:
    try:
        mem = fn.lower(*args).compile().memory_analysis()
    except Exception:  # noqa: BLE001 - backends without memory analysis
        return None
    if mem is None:
        return None
    return int(mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes)


def _emit(record: dict, rows: list[dict]) -> None:
    rows.append(record)
    print(json.dumps(record), flush=True)


def _layer(kind: str, H: int, N: int, L: int) -> SSM:
    return SSM(features=H, d_state=N, kind=kind, l_max=L if kind == "s4" else None)


def bench_training(args, rows):
    key = jax.random.key(0)
    for L in args.lengths:
        u = jax.random.normal(jax.random.fold_in(key, L), (args.batch, L, args.features))
        base = None
        for mode in args.modes:
            layer = _layer("s4" if mode == "conv-s4" else "s4d", args.features, args.state, L)
            variables = layer.init(key, u[:1, :8] if mode != "conv-s4" else u[:1])
            fn = _step_fn(layer, mode)
            peak = _peak_bytes(fn, (variables, u))
            rec = {
                "bench": "train_step",
                "mode": mode,
                "L": L,
                "batch": args.batch,
                "H": args.features,
                "N": args.state,
                "peak_bytes": peak,
                "backend": jax.default_backend(),
            }
            if peak is not None and peak > args.max_gib * 2**30:
                rec.update(skipped=f"peak {peak / 2**30:.1f} GiB > --max-gib {args.max_gib}")
                _emit(rec, rows)
                continue
            med, times = _time(fn, (variables, u), args.repeats)
            base = med if mode == "conv" else base
            rec.update(median_s=med, times_s=times, time_vs_conv=None if base is None else med / base)
            _emit(rec, rows)


def bench_long_conv(args, rows):
    key = jax.random.key(1)
    for L in args.long_lengths:
        u = jax.random.normal(key, (args.batch, L, args.features))
        layer = _layer("s4d", args.features, args.state, L)
        variables = layer.init(key, u[:1, :8])
        fn = _step_fn(layer, "conv")
        peak = _peak_bytes(fn, (variables, u))
        med, times = _time(fn, (variables, u), max(1, args.repeats // 2))
        _emit(
            {
                "bench": "conv_long",
                "mode": "conv",
                "L": L,
                "batch": args.batch,
                "H": args.features,
                "N": args.state,
                "median_s": med,
                "times_s": times,
                "peak_bytes": peak,
                "backend": jax.default_backend(),
            },
            rows,
        )


def bench_decode(args, rows):
    key = jax.random.key(2)
    layer = _layer("s4d", args.features, args.state, 0)
    variables = layer.init(key, jnp.zeros((1, 8, args.features)))
    tokens = jax.random.normal(key, (args.decode_tokens, args.batch, args.features))
    state0 = layer.initial_state((args.batch,))

    def one(state, u_t):
        y, state = layer.apply(variables, u_t, state, method=SSM.step)
        return state, y

    scanned = jax.jit(lambda s, xs: jax.lax.scan(one, s, xs))
    med, _times = _time(scanned, (state0, tokens), args.repeats)
    _emit(
        {
            "bench": "decode",
            "mode": "step-scan",
            "batch": args.batch,
            "H": args.features,
            "N": args.state,
            "tokens": args.decode_tokens,
            "median_s": med,
            "per_token_s": med / args.decode_tokens,
            "backend": jax.default_backend(),
        },
        rows,
    )
    single = jax.jit(one)
    med1, _times1 = _time(single, (state0, tokens[0]), args.repeats * 10)
    _emit(
        {
            "bench": "decode",
            "mode": "step-call",
            "batch": args.batch,
            "H": args.features,
            "N": args.state,
            "tokens": 1,
            "median_s": med1,
            "per_token_s": med1,
            "backend": jax.default_backend(),
        },
        rows,
    )


def _table(rows):
    print(f"\n{'bench':<11}{'mode':<12}{'L':>7}{'median ms':>12}{'× conv':>9}{'peak MiB':>10}")
    for r in rows:
        med = r.get("median_s")
        ms = "skipped" if med is None else f"{1e3 * med:.2f}"
        ratio = r.get("time_vs_conv")
        peak = r.get("peak_bytes")
        print(
            f"{r['bench']:<11}{r['mode']:<12}{r.get('L', '-'):>7}{ms:>12}"
            f"{'' if ratio is None else f'{ratio:.2f}':>9}{'' if peak is None else f'{peak / 2**20:.0f}':>10}"
        )
    for L in {r["L"] for r in rows if r["bench"] == "train_step"}:
        by = {r["mode"]: r.get("median_s") for r in rows if r["bench"] == "train_step" and r["L"] == L}
        if by.get("conv") and by.get("scan"):
            print(f"L={L}: scan / conv = {by['scan'] / by['conv']:.1f}×")
    print("(medians; the machine may be shared, so absolute times are noisy)")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--features", type=int, default=128)
    p.add_argument("--state", type=int, default=64)
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--long-lengths", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    p.add_argument("--modes", nargs="+", default=list(PEER_MODES), choices=PEER_MODES)
    p.add_argument("--decode-tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-gib", type=float, default=8.0, help="skip a row whose compiled peak exceeds this")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.features, args.state = 2, 8, 8
        args.lengths, args.long_lengths = [64], [256]
        args.decode_tokens, args.repeats = 16, 2
    rows: list[dict] = []
    bench_training(args, rows)
    bench_long_conv(args, rows)
    bench_decode(args, rows)
    _table(rows)


if __name__ == "__main__":
    main()
