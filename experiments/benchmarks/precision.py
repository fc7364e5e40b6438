"""Benchmark: the image-generation smoke DiT's flow-matching loss in float32 against bfloat16 compute.

Side by side in one process: the ``image-generation`` smoke preset's
class-conditional DiT (tiny/4 at 16×16, batch 16, rectified flow) trained
for 50 AdamW steps from the same float32 parameters, on the same batches
and keys, once with ``dtype=float32`` and once with ``dtype=bfloat16``
(parameters, optimizer state and the loss stay float32 in both).

Reported (one JSON line each, then a summary):

* ``trajectory``: the largest relative difference |l_bf16 − l_f32| / |l_f32|
  over the 50 steps of the two runs' losses (each run follows its own
  parameters, so this includes the drift of the trajectories);
* ``same_params``: the same at the float32 run's parameters of every step
  (the bfloat16 loss evaluated on them): the rounding error of one loss;
* the median step time of each (jitted step, compiled first, timed with
  ``block_until_ready``) and their ratio.

The issue's target: relative difference ≤ 1e-2. On a CPU bfloat16 matrix
products are emulated, so the time ratio says nothing about accelerators.

Usage::

    python experiments/benchmarks/precision.py            # 50 steps
    python experiments/benchmarks/precision.py --steps 20 --out precision.jsonl

References:
  Micikevicius et al. 2018, "Mixed Precision Training" (arXiv:1710.03740);
  Kalamkar et al. 2019, "A Study of BFLOAT16 for Deep Learning Training" (arXiv:1905.12322).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlab.train import Context, adamw_with_warmup, import_experiment_file

EXPERIMENT = Path(__file__).resolve().parents[1] / "image_generation.py"


def loss_and_step(method, optimizer):
    """(jitted loss(params, batch, key, step), jitted update(params, opt_state, batch, key, step))."""

    def loss(params, batch, key, step):
        ctx = Context(step=step, ema_params=params, frozen=None)
        return method.loss(params, batch, key=key, ctx=ctx)[0]

    def update(params, opt_state, batch, key, step):
        value, grads = jax.value_and_grad(loss)(params, batch, key, step)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return jax.jit(loss), jax.jit(update)


def run(dtype: str, steps: int, params0, batches, module) -> dict:
    """Trains ``steps`` steps in ``dtype``; the losses, the parameters before every step and the step times."""
    config = module.Config(preset="smoke", dtype=dtype)
    method, _ = module.build("flow", config, module.images.NUM_SYNTHETIC_CLASSES)
    optimizer = adamw_with_warmup(config)
    loss, update = loss_and_step(method, optimizer)
    params, opt_state = params0, optimizer.init(params0)
    key = jax.random.key(1)
    jax.block_until_ready(update(params, opt_state, batches[0], key, jnp.int32(0)))  # compile
    losses, trail, times = [], [], []
    for step in range(steps):
        trail.append(params)
        start = time.perf_counter()
        params, opt_state, value = jax.block_until_ready(update(params, opt_state, batches[step], jax.random.fold_in(key, step), jnp.int32(step)))
        times.append(time.perf_counter() - start)
        losses.append(float(value))
    return {"losses": np.asarray(losses), "trail": trail, "times": times, "loss": loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None, help="append the JSON lines to this file")
    args = parser.parse_args()

    module = import_experiment_file(EXPERIMENT)
    config = module.Config(preset="smoke", dtype="float32")
    data = module.load_data(config)
    batches = [jax.tree.map(jnp.asarray, data.batches(step)) for step in range(args.steps)]
    method, _ = module.build("flow", config, data.num_classes)
    params0 = method.init(jax.random.key(0), batches[0])

    f32 = run("float32", args.steps, params0, batches, module)
    bf16 = run("bfloat16", args.steps, params0, batches, module)
    key = jax.random.key(1)
    at_f32 = np.asarray(
        [float(bf16["loss"](p, batches[s], jax.random.fold_in(key, s), jnp.int32(s))) for s, p in enumerate(f32["trail"])]
    )  # bf16 loss at the f32 run's parameters, same batch and key as the f32 step
    relative = lambda a, b: float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))
    lines = [
        {"benchmark": "precision", "what": "trajectory", "max_relative_loss_difference": relative(bf16["losses"], f32["losses"]), "steps": args.steps},
        {"benchmark": "precision", "what": "same_params", "max_relative_loss_difference": relative(at_f32, f32["losses"]), "steps": args.steps},
        *(
            {"benchmark": "precision", "what": "step_time", "dtype": name, "median_s": statistics.median(r["times"])}
            for name, r in (("float32", f32), ("bfloat16", bf16))
        ),
    ]
    for line in lines:
        print(json.dumps(line))
    if args.out is not None:
        with args.out.open("a") as file:
            file.writelines(json.dumps(line) + "\n" for line in lines)
    ratio = statistics.median(bf16["times"]) / statistics.median(f32["times"])
    print(
        f"\n{args.steps} steps, device {jax.devices()[0].device_kind}: final loss f32 {f32['losses'][-1]:.4f}, bf16 {bf16['losses'][-1]:.4f}\n"
        f"max relative loss difference: trajectory {lines[0]['max_relative_loss_difference']:.2e}, same parameters "
        f"{lines[1]['max_relative_loss_difference']:.2e} (target <= 1e-2)\n"
        f"median step: f32 {1e3 * lines[2]['median_s']:.2f} ms, bf16 {1e3 * lines[3]['median_s']:.2f} ms (bf16 / f32 = {ratio:.2f})"
    )


if __name__ == "__main__":
    main()
