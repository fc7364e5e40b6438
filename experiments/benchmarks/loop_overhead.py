"""Benchmark: what :func:`jaxlab.train.train` costs over a bare jitted ``lax.fori_loop`` of the same step.

The toy flow of ``flow-toy2d`` (a ``TimeMLP`` rectified flow on 2-D points,
batch 256) is trained for the same steps three ways, interleaved run by run
so that load from other processes hits all of them alike:

* ``bare``: :func:`jaxlab.train.train_step` in one jitted ``lax.fori_loop``
  over batches already on the device (no logging, checkpoints or host work);
* ``train``: ``jaxlab.train.train`` with ``steps_per_execution=1`` (the
  default: one dispatch per step, host batches built in numpy);
* ``train_chunked``: the same with ``steps_per_execution`` = ``log_every``.

The trainer's runs log every ``log_every`` steps and checkpoint once, at the
end; their time is read from their own ``steps_per_sec`` (compilation and the
checkpoint excluded), the bare loop's from the wall clock after a compiled
warm-up. Prints one JSON line: the median steps/s of each and the ratios to
``bare`` (the issue's target: ``train_chunked / bare >= 0.9``).

    python experiments/benchmarks/loop_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.generative import RectifiedFlow
from jaxlab.nn import TimeMLP
from jaxlab.train import MetricsLog, TrainConfig, adamw_with_warmup, init_state, train, train_step


def toy_flow() -> RectifiedFlow:
    network = TimeMLP(width=256, depth=3)
    return RectifiedFlow(apply_fn=network.apply, init_fn=network.init, data_shape=(2,))


def batches_for(batch_size: int, steps: int) -> np.ndarray:
    """``(steps, batch, 2)``: a two-moons-like mixture, the same for every run."""
    rng = np.random.default_rng(0)
    centers = rng.choice(np.array([[-1.0, 0.0], [1.0, 0.5]], np.float32), size=(steps, batch_size))
    return (centers + 0.1 * rng.normal(size=(steps, batch_size, 2))).astype(np.float32)


def bare_steps_per_sec(method, optimizer, config: TrainConfig, data: np.ndarray) -> float:
    state = jax.jit(lambda b: init_state(method, optimizer, b, config.seed))({"x": data[0]})
    device_data = jnp.asarray(data)

    @jax.jit
    def run(state, data):
        def body(i, state):
            return train_step(method, optimizer, config.ema_decay, state, {"x": data[i]})[0]

        return jax.lax.fori_loop(0, data.shape[0], body, state)

    jax.block_until_ready(run(state, device_data))  # compile and warm up
    start = time.perf_counter()
    jax.block_until_ready(run(state, device_data))
    return data.shape[0] / (time.perf_counter() - start)


def trainer_steps_per_sec(method, optimizer, config: TrainConfig, data: np.ndarray) -> float:
    with tempfile.TemporaryDirectory() as workdir:
        train(method, optimizer, lambda step: {"x": data[step]}, config, workdir, progress=False)
        seconds = MetricsLog(f"{workdir}/metrics.jsonl").training_seconds()
    return config.steps / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats (a smoke run)")
    args = parser.parse_args()
    steps, repeats, log_every = (200, 2, 50) if args.quick else (1000, 3, 100)
    config = TrainConfig(steps=steps, batch_size=256, log_every=log_every, checkpoint_every=steps)
    chunked = dataclasses.replace(config, steps_per_execution=log_every)
    method, optimizer, data = toy_flow(), adamw_with_warmup(config), batches_for(config.batch_size, steps)
    runs: dict[str, list[float]] = {"bare": [], "train": [], "train_chunked": []}
    for _ in range(repeats):
        runs["bare"].append(bare_steps_per_sec(method, optimizer, config, data))
        runs["train"].append(trainer_steps_per_sec(method, optimizer, config, data))
        runs["train_chunked"].append(trainer_steps_per_sec(method, optimizer, chunked, data))
    medians = {name: statistics.median(values) for name, values in runs.items()}
    line = {
        "model": "toy flow (TimeMLP 256x3, batch 256)",
        "devices": jax.device_count(),
        "steps": steps,
        "repeats": repeats,
        **{f"steps_per_sec_{name}": round(value, 1) for name, value in medians.items()},
        "ratio_train": round(medians["train"] / medians["bare"], 3),
        "ratio_train_chunked": round(medians["train_chunked"] / medians["bare"], 3),
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
