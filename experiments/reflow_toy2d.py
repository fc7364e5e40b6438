"""reflow-toy2d: one ReFlow on a 2-D toy rectified flow — few-step quality and straightness before and after.

Stage 1 trains the flow-toy2d model (rectified flow, ``TimeMLP`` velocity)
in ``workdir/rectified_1``. Its ODE (Heun, many steps) then maps fresh noise
to samples, giving (sample, noise) couplings, and stage 2 trains a new
network of the same size from scratch on them (``workdir/rectified_2``). For both flows
the experiment reports the unbiased squared energy distance of Euler samples
at 1, 2, 4, 8, 32 and 128 steps to fresh data, Liu et al.'s straightness,
and the exact NLL (nats per point) of held-out data through the flow's ODE.
The target: the 1-step energy distance after one ReFlow is at least 3×
lower than before (``energy_1step_before`` / ``energy_1step_after``).

Writes ``results.json``, ``reflow_table.json`` / ``reflow_table.md``,
``energy_vs_steps.png`` and ``samples.png``.

Reference: Liu, Gong, Liu 2022, "Flow Straight and Fast" (rectified flow, reflow).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import numpy as np
from matplotlib.figure import Figure

from jaxlab.data import epoch_permutation_batch, sample_toy2d, toy2d_batches
from jaxlab.eval import energy_distance
from jaxlab.generative import RectifiedFlow, ode_log_likelihood, sample_ode, schedules
from jaxlab.generative.reflow import ReFlow, generate_couplings, straightness
from jaxlab.nn import TimeMLP
from jaxlab.recipes import toy2d
from jaxlab.train import Experiment, adamw_with_warmup, is_writer, named_key, restore_params, save_figure, train, write_json_atomic, write_text_atomic

STEP_COUNTS = (1, 2, 4, 8, 32, 128)
STAGES = ("before", "after")
TRUE_NLL = {"checkerboard": math.log(6.0)}


@dataclasses.dataclass(frozen=True)
class Config(toy2d.Toy2DConfig):
    """reflow-toy2d configuration; ``steps`` trains the first flow, ``reflow_steps`` the second."""

    checkpoint_every: int = 2000
    reflow_steps: int = 4000
    num_couplings: int = 32768
    coupling_steps: int = 64
    step_counts: tuple[int, ...] = STEP_COUNTS
    eval_samples: int = 2000
    straightness_steps: int = 32
    nll_samples: int = 1000
    nll_steps: int = 64


def build_flows(config: Config) -> tuple[RectifiedFlow, ReFlow]:
    network = TimeMLP(width=config.width, depth=config.depth, dtype=config.dtype)
    first = RectifiedFlow(apply_fn=network.apply, init_fn=network.init, data_shape=(2,), solver="euler")
    second = ReFlow(apply_fn=network.apply, init_fn=network.init, data_shape=(2,), solver="euler")
    return first, second


def data_batches(config: Config):
    """Stage 1: ``step -> {"x": (batch, 2)}``, a pure function of (seed, step)."""
    return toy2d_batches(config.dataset, key=named_key(config.seed, "data"), batch_size=config.batch_size)


def coupling_batches(config: Config, x0: np.ndarray, x1: np.ndarray):
    """Stage 2: ``step -> {"x0", "x1"}`` drawn epoch by epoch from the fixed couplings."""

    def batches(step: int) -> dict[str, np.ndarray]:
        index = epoch_permutation_batch(x0.shape[0], config.batch_size, seed=config.seed, step=step)
        return {"x0": x0[index], "x1": x1[index]}

    return batches


def make_couplings(first: RectifiedFlow, params, config: Config) -> tuple[np.ndarray, np.ndarray]:
    noise = jax.random.normal(named_key(config.seed, "couplings"), (config.num_couplings, 2))
    couple = jax.jit(lambda p, z: generate_couplings(first.apply_fn, p, z, steps=config.coupling_steps, solver="heun"))
    x0, x1 = couple(params, noise)
    return np.asarray(x0), np.asarray(x1)


def sample(config: Config, workdir: Path, *, num: int, steps: int | None = None, seed: int = 0) -> np.ndarray:
    """Samples from the ReFlow (stage 2) checkpoint; 1 Euler step by default."""
    _, second = build_flows(config)
    params = restore_params(Path(workdir) / "rectified_2")
    draw = jax.jit(second.sample, static_argnames=("num", "steps"))
    return np.asarray(draw(params, key=jax.random.key(seed), num=num, steps=steps or 1))


def plot_samples(samples: np.ndarray, path: Path) -> None:
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    ax.scatter(samples[:, 0], samples[:, 1], s=1.5, alpha=0.6)
    ax.set(xlim=(-4.5, 4.5), ylim=(-4.5, 4.5), aspect="equal", title="2-rectified flow samples")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def make_evaluators(apply_fn, config: Config) -> dict:
    """Jitted evaluation functions of a flow's parameters, built once and shared by both flows."""
    euler = {steps: jax.jit(lambda p, z, steps=steps: sample_ode(apply_fn, p, z, steps=steps, solver="euler")) for steps in config.step_counts}
    measure = jax.jit(lambda p, z: straightness(apply_fn, p, z, steps=config.straightness_steps))
    log_prob = jax.jit(lambda p, x: ode_log_likelihood(apply_fn, p, x, schedule=schedules.linear_path, prediction="velocity", steps=config.nll_steps))
    return {"euler": euler, "straightness": measure, "log_prob": log_prob}


def evaluate(evaluators: dict, params, config: Config, fresh: np.ndarray, prefix: str) -> tuple[dict, dict]:
    """Energy vs Euler steps, straightness and exact NLL of one flow; also returns its samples."""
    noise = jax.random.normal(named_key(config.seed, "eval/noise"), (config.eval_samples, 2))
    results, samples = {}, {}
    for steps, draw in evaluators["euler"].items():
        samples[steps] = np.asarray(draw(params, noise))
        results[f"energy_euler_{steps}_{prefix}"] = float(energy_distance(samples[steps], fresh, unbiased=True))
    results[f"straightness_{prefix}"] = float(evaluators["straightness"](params, noise))
    held_out = sample_toy2d(config.dataset, key=named_key(config.seed, "eval/nll"), num=config.nll_samples)
    results[f"nll_nats_{prefix}"] = float(-np.mean(np.asarray(evaluators["log_prob"](params, held_out))))
    return results, samples


def _report(results: dict, samples: dict, data: np.ndarray, counts: tuple[int, ...], workdir: Path) -> None:
    rows = {stage: {k: results[f"energy_euler_{k}_{stage}"] for k in counts} for stage in STAGES}
    write_json_atomic(workdir / "reflow_table.json", {"metric": "unbiased squared energy distance (Euler)", "rows": rows})
    names = {"before": "1-rectified", "after": "2-rectified (ReFlow)"}
    lines = ["| flow | " + " | ".join(f"{k} steps" for k in counts) + " | straightness | NLL (nats) |"]
    lines.append("|---" * (3 + len(counts)) + "|")
    for stage in STAGES:
        cells = " | ".join(f"{rows[stage][k]:.4f}" for k in counts)
        lines.append(f"| {names[stage]} | {cells} | {results[f'straightness_{stage}']:.4f} | {results[f'nll_nats_{stage}']:.3f} |")
    footer = (
        f"1-step ratio before/after: {results['energy_1step_ratio']:.1f}x; noise {results['energy_noise']:.4f}, "
        f"data-vs-data {results['energy_data']:.4f}; true NLL {results['nll_true_nats']}"
    )
    write_text_atomic(workdir / "reflow_table.md", "Energy distance of Euler samples to fresh data\n\n" + "\n".join(lines) + f"\n\n{footer}\n")

    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    for stage in STAGES:
        ax.plot(counts, [rows[stage][k] for k in counts], marker="o", label=names[stage])
    ax.axhline(results["energy_data"], color="gray", linestyle=":", label="data vs data")
    ax.set(xscale="log", xlabel="Euler steps", ylabel="energy distance", title="reflow-toy2d")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, workdir / "energy_vs_steps.png", dpi=120)

    shown = tuple(k for k in (1, 2, 8, 128) if k in counts) or counts[:4]
    fig = Figure(figsize=(2.6 * (1 + len(shown)), 5.4))
    axes = fig.subplots(2, 1 + len(shown))
    for row, stage in enumerate(STAGES):
        for ax, (title, points) in zip(axes[row], [("data", data)] + [(f"{names[stage]}, {k}", samples[stage][k]) for k in shown]):
            ax.scatter(points[:, 0], points[:, 1], s=0.8, alpha=0.5)
            ax.set(xlim=(-3, 3), ylim=(-3, 3), aspect="equal", xticks=[], yticks=[])
            ax.set_title(title, fontsize=8)
    fig.tight_layout()
    save_figure(fig, workdir / "samples.png", dpi=110)


def run(config: Config, workdir: Path) -> dict[str, float | None]:
    if 1 not in config.step_counts:
        raise ValueError(f"step_counts must include 1 (the 1-step target), got {config.step_counts}")
    first, second = build_flows(config)
    optimizer = adamw_with_warmup(config)
    params_1 = train(first, optimizer, data_batches(config), config, workdir / "rectified_1").ema_params
    x0, x1 = make_couplings(first, params_1, config)
    second_config = dataclasses.replace(config, steps=config.reflow_steps)
    params_2 = train(second, optimizer, coupling_batches(config, x0, x1), second_config, workdir / "rectified_2").ema_params

    num = config.eval_samples
    data = np.asarray(sample_toy2d(config.dataset, key=named_key(config.seed, "eval/data"), num=num))
    fresh = np.asarray(sample_toy2d(config.dataset, key=named_key(config.seed, "eval/fresh"), num=num))
    noise = np.asarray(jax.random.normal(named_key(config.seed, "eval/prior"), (num, 2)))
    results: dict[str, float | None] = {
        "energy_noise": float(energy_distance(noise, fresh, unbiased=True)),
        "energy_data": float(energy_distance(data, fresh, unbiased=True)),
        "energy_couplings": float(energy_distance(x0[:num], fresh, unbiased=True)),
    }
    samples, evaluators = {}, make_evaluators(first.apply_fn, config)
    for stage, params in zip(STAGES, (params_1, params_2)):
        figures, samples[stage] = evaluate(evaluators, params, config, fresh, stage)
        results.update(figures)
    results["energy_1step_before"] = results["energy_euler_1_before"]
    results["energy_1step_after"] = results["energy_euler_1_after"]
    results["energy_1step_ratio"] = results["energy_1step_before"] / max(results["energy_1step_after"], 1e-12)
    results["nll_true_nats"] = TRUE_NLL.get(config.dataset)
    _report(results, samples, data, config.step_counts, workdir)
    if is_writer():  # only process 0 wrote it
        print((workdir / "reflow_table.md").read_text())
    return results


EXPERIMENTS = [
    Experiment(
        name="reflow-toy2d",
        description="one ReFlow of a checkerboard rectified flow: 1-step energy distance and straightness before/after",
        config=Config(),
        run=run,
        sample=sample,
        plot_samples=plot_samples,
    )
]
