"""fewstep-toy2d: few-step generators side by side on the 2-D checkerboard.

Flow matching (the baseline, Euler), consistency training (CT), improved CT
(iCT), consistency distillation (CD), shortcut models, SiD and IGN are each
trained with the same residual MLP (``TimeMLP``, same width and depth) for the
same number of steps, each in ``workdir/<method>``. CD and SiD distill the
flow baseline itself (its EMA parameters). Every method is sampled at 1, 2,
4 and 128 steps where it allows (SiD: 1 step; IGN: f applied k times) and
scored by the unbiased squared energy distance to fresh data, averaged over
``eval_repeats`` disjoint pairs of ``eval_samples`` points, with the wall
time of one jitted batch of all ``eval_samples · eval_repeats``. The best
models sit so close to the data that the default scores one set of 64,000
points: at 2,000 the estimator's own spread would swamp the differences.
``energy_data`` (fresh data against other data) shows the floor. Measured
figures: ``docs/results.md``.

The shortcut model pairs data and noise by minibatch optimal transport
(``shortcut.coupling``); the ``shortcut_independent`` row is the same model
with the paper's independent noise. SiD updates its fake score four times per
generator update at ten times the generator's rate (a two-time-scale rule),
so that the fake score keeps up with the generator it describes, and uses
α = 0.5 (the library default is the paper's 1.2; see the Config comment).

Writes ``results.json`` (keys ``energy_<method>_<steps>``, ``wall_<method>_<steps>``,
``energy_teacher_128`` = the flow baseline at 128 Euler steps, and the target
ratios ``target_*``), ``fewstep_table.json`` / ``fewstep_table.md`` and
``samples.png``. Targets: CT/iCT/CD at 1 step ≥ 3× lower energy than flow
1-step Euler; shortcut 1 step within 2× of its 128 steps; SiD one step within
1.5× of the teacher's 128 steps.

References:
  Liu et al. 2022 (rectified flow); Song et al. 2023 (consistency models);
  Song & Dhariwal 2023 (iCT); Frans et al. 2024 (shortcut models);
  Zhou et al. 2024 (SiD, arXiv:2404.04057); Yin et al. 2024 (DMD2, arXiv:2405.14867, the
  two-time-scale fake-score updates); Shocher et al. 2023 (IGN, arXiv:2311.01462).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from jaxlab.data import sample_toy2d, toy2d_batches
from jaxlab.eval import energy_distance
from jaxlab.nn import TimeMLP
from jaxlab.recipes import fewstep, toy2d
from jaxlab.train import Experiment, is_writer, named_key, restore_params, save_figure


@dataclasses.dataclass(frozen=True)
class Config(toy2d.Toy2DConfig, fewstep.MethodConfig):
    """fewstep-toy2d configuration; the trainer fields apply to every method alike."""

    # The energy estimator's spread falls as 1/n; at 64,000 points it is below the gaps between the best models.
    eval_samples: int = 64000
    eval_repeats: int = 1  # energies are averaged over this many disjoint sample sets
    sigma_data: float = 1.0  # the checkerboard's per-coordinate std (CT/iCT/CD scalings)
    # Four fake-score updates at 10x the generator's rate (DMD2's two-time-scale rule) keep the fake score on the
    # moving generator, and alpha = 0.5 beat the paper's 1.2 at every seed tried (sweep: docs/results.md).
    sid: fewstep.SiDConfig = dataclasses.field(default_factory=lambda: fewstep.SiDConfig(alpha=0.5, fake_lr=1e-3, fake_steps=4))
    # Minibatch-OT pairing straightens the paths the step-size ladder learns, so the flow part needs fewer rows
    # (3/4 on self-consistency, large steps favoured); shortcut_independent keeps the paper's coupling.
    shortcut: fewstep.ShortcutConfig = dataclasses.field(
        default_factory=lambda: fewstep.ShortcutConfig(coupling="minibatch_ot", bootstrap_fraction=0.75, large_step_bias=True)
    )


def networks(config: Config) -> fewstep.Networks:
    net = TimeMLP(width=config.width, depth=config.depth, dtype=config.dtype)
    # t and the step size d get separate embeddings (the shared sum would be symmetric in t and d).
    step_net = TimeMLP(width=config.width, depth=config.depth, separate_conditions=True, dtype=config.dtype)

    def apply_map(params, x):
        return net.apply(params, x, jnp.ones(x.shape[:1], x.dtype))

    def init_map(key, x):
        return net.init(key, x, jnp.ones(x.shape[:1], x.dtype))

    return fewstep.Networks(velocity=(net.apply, net.init), shortcut=(step_net.apply, step_net.init), mapping=(apply_map, init_map), data_shape=(2,))


def make_batches(config: Config):
    """``step -> {"x": (batch, 2)}`` on the host, a pure function of (seed, step)."""
    return toy2d_batches(config.dataset, key=named_key(config.seed, "data"), batch_size=config.batch_size)


def sample(config: Config, workdir: Path, *, num: int, steps: int | None = None, seed: int = 0) -> np.ndarray:
    """Samples from the last selected method's checkpoint (SiD: 1 step; others ``steps`` or 1)."""
    name = config.methods[-1]
    method, _ = fewstep.build_method(name, networks(config), config)
    draw = jax.jit(lambda p, k: method.sample(p, key=k, num=num, steps=steps or 1))
    return np.asarray(draw(restore_params(Path(workdir) / name), jax.random.key(seed)))


def plot_samples(samples: np.ndarray, path: Path) -> None:
    plot_panels({"samples": samples}, path)


def plot_panels(panels: dict[str, np.ndarray], path: Path, columns: int = 5) -> None:
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(2.4 * columns, 2.4 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, points) in zip(axes.flat, panels.items()):
        ax.axis("on")
        ax.scatter(points[:, 0], points[:, 1], s=0.6, alpha=0.5)
        ax.set(xlim=(-2.5, 2.5), ylim=(-2.5, 2.5), aspect="equal", xticks=[], yticks=[])
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def run(config: Config, workdir: Path, *, progress: bool = True) -> dict[str, float | None]:
    trained = fewstep.train_methods(config, workdir, networks(config), make_batches(config), progress=progress)
    num = config.eval_samples * config.eval_repeats  # one batch, scored in eval_repeats chunks
    data = np.asarray(sample_toy2d(config.dataset, key=named_key(config.seed, "eval/data"), num=num))
    fresh = np.asarray(sample_toy2d(config.dataset, key=named_key(config.seed, "eval/fresh"), num=num))
    noise = np.asarray(jax.random.normal(named_key(config.seed, "eval/prior"), (num, 2)))

    def metric(x: np.ndarray) -> float:
        """Mean unbiased energy distance of eval_repeats independent (sample, fresh data) pairs of eval_samples each."""
        pairs = zip(np.split(x, config.eval_repeats), np.split(fresh, config.eval_repeats))
        return float(np.mean([energy_distance(a, b, unbiased=True) for a, b in pairs]))

    results, samples = fewstep.evaluate(trained, metric, prefix="energy", key=named_key(config.seed, "eval/sample"), num=num)
    results.update({"energy_noise": metric(noise), "energy_data": metric(data)})
    fewstep.add_target_ratios(results, "energy")
    fewstep.write_tables(results, tuple(trained), tuple(config.step_counts), "energy", "fewstep-toy2d: energy distance to fresh data", workdir)
    shown = min(config.eval_samples, 4000)  # points per scatter panel
    panels = {"data": data[:shown]}
    for name in trained:
        for steps in sorted({min(trained[name].step_counts), max(trained[name].step_counts)}):
            panels[f"{name}, {steps} step{'s' * (steps > 1)}"] = samples[(name, steps)][:shown]
    plot_panels(panels, workdir / "samples.png")
    if is_writer():  # only process 0 wrote it
        print((workdir / "fewstep_table.md").read_text())
    return results


EXPERIMENTS = [
    Experiment(
        name="fewstep-toy2d",
        description="flow, CT, iCT, CD, shortcut, SiD, IGN on the checkerboard: energy distance at 1/2/4/128 steps",
        config=Config(),
        run=run,
        sample=sample,
        plot_samples=plot_samples,
    )
]
