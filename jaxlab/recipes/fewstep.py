"""Shared machinery of fewstep-toy2d and fewstep-digits: build, train, sample, time and tabulate each method.

Every method is trained with :func:`jaxlab.train.train` in its own
subdirectory ``workdir/<method>`` (so a run resumes), for the same number of steps with networks of the same size.
The flow-matching baseline (``workdir/flow``) doubles as the teacher of CD and
SiD; its training is not counted against theirs.

Methods and the step counts they allow:

* ``flow`` — rectified flow, Euler with any number of steps (the baseline);
* ``ct``, ``ict``, ``cd`` — consistency models (one-step or multistep sampling);
* ``shortcut`` — shortcut model, powers of two up to ``max_steps``, with the
  configured data–noise coupling (``shortcut.coupling``);
* ``shortcut_independent`` — the same shortcut model with independent noise
  (the paper's coupling), a comparison row;
* ``sid`` — SiD one-step generator distilled from the flow teacher (1 step only);
* ``ign`` — idempotent generative network, f applied k times.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np
import optax

from jaxlab.generative import RectifiedFlow
from jaxlab.generative.consistency import ConsistencyTraining, ImprovedConsistencyTraining
from jaxlab.generative.consistency_distillation import ConsistencyDistillation
from jaxlab.generative.ign import IGN
from jaxlab.generative.shortcut import Shortcut
from jaxlab.generative.sid import SiD
from jaxlab.parallel import sharded_sampler
from jaxlab.train import TrainConfig, adamw_with_warmup, check_fields, train, write_json_atomic, write_text_atomic

METHODS = ("flow", "ct", "ict", "cd", "shortcut", "shortcut_independent", "sid", "ign")
SHORTCUTS = ("shortcut", "shortcut_independent")
STEP_COUNTS = (1, 2, 4, 128)
NEEDS_TEACHER = ("cd", "sid")


@dataclasses.dataclass(frozen=True)
class ShortcutConfig:
    """The shortcut model's fields (``--set shortcut.coupling=minibatch_ot``); see :class:`jaxlab.generative.shortcut.Shortcut`."""

    max_steps: int = 128
    # Each level of the step-size ladder learns from the one below, so EMA targets (decay 0.999) lag
    # ~1,000 steps per level: at these budgets online targets do far better (docs/results.md).
    bootstrap_fraction: float = 0.5
    bootstrap_target: Literal["ema", "online"] = "online"
    coupling: Literal["independent", "minibatch_ot"] = "independent"  # the paper's; iSM pairs by minibatch OT
    large_step_bias: bool = False  # the paper draws the bootstrap step-size levels uniformly

    def __post_init__(self) -> None:
        check_fields(self)


@dataclasses.dataclass(frozen=True)
class SiDConfig:
    """SiD's fields (``--set sid.alpha=0.5``); see :class:`jaxlab.generative.sid.SiD`."""

    alpha: float = 1.2
    generator_time: float = 0.714  # SiD's sigma_init = 2.5 on the straight path: t = 2.5 / 3.5
    t_min: float = 0.02
    t_max: float = 0.98
    generator_lr: float = 1e-4
    fake_lr: float = 1e-4
    fake_steps: int = 1
    weighting: Literal["example", "batch", "none"] = "example"
    ema_decay: float | None = None  # None: the shared ema_decay

    def __post_init__(self) -> None:
        check_fields(self)


@dataclasses.dataclass(frozen=True)
class IGNConfig:
    """IGN's loss weights (``--set ign.rec_weight=10``); see :class:`jaxlab.generative.ign.IGN`."""

    rec_weight: float = 20.0
    idem_weight: float = 20.0
    tight_weight: float = 2.5

    def __post_init__(self) -> None:
        check_fields(self)


@dataclasses.dataclass(frozen=True)
class MethodConfig(TrainConfig):
    """The fields of every method, shared by both experiments' configs (the trainer fields apply to every method alike).

    Methods with several hyperparameters have their own group (``shortcut``,
    ``sid``, ``ign``), set as ``--set sid.alpha=0.5``.
    """

    methods: tuple[str, ...] = METHODS
    step_counts: tuple[int, ...] = STEP_COUNTS
    sigma_data: float = 0.5  # the data's std in the EDM scalings of CT/iCT/CD
    ct_s1: int = 50  # N(k) grows to s1 + 1 scales; the paper's 150 is tuned for ~800k steps
    shortcut: ShortcutConfig = dataclasses.field(default_factory=ShortcutConfig)
    sid: SiDConfig = dataclasses.field(default_factory=SiDConfig)
    ign: IGNConfig = dataclasses.field(default_factory=IGNConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_methods(tuple(self.methods))


@dataclasses.dataclass(frozen=True)
class Networks:
    """The three network signatures the methods need, all built from one architecture.

    Attributes:
      velocity: ``(apply(params, x, t), init(key, x, t))`` — flow, CT/iCT/CD, SiD.
      shortcut: ``(apply(params, x, t, d), init(key, x, t, d))``.
      mapping: ``(apply(params, x), init(key, x))`` — IGN's f.
      data_shape: shape of one example.
    """

    velocity: tuple[Callable, Callable]
    shortcut: tuple[Callable, Callable]
    mapping: tuple[Callable, Callable]
    data_shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Trained:
    """A trained method: the adapter, the parameters to sample from, and its allowed step counts."""

    method: Any
    params: Any
    step_counts: tuple[int, ...]


def check_methods(methods: tuple[str, ...]) -> None:
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {methods!r}")


def allowed_steps(name: str, step_counts: tuple[int, ...], shortcut_max_steps: int) -> tuple[int, ...]:
    if name == "sid":
        return tuple(k for k in step_counts if k == 1)
    if name in SHORTCUTS:
        return tuple(k for k in step_counts if k <= shortcut_max_steps and shortcut_max_steps % k == 0)
    return tuple(step_counts)


def build_method(name: str, nets: Networks, config: Any) -> tuple[Any, optax.GradientTransformation]:
    """The adapter of ``name`` and the optimizer the trainer gets (unused by own-``train_step`` methods)."""
    optimizer = adamw_with_warmup(config)
    apply_v, init_v = nets.velocity
    shape = nets.data_shape
    if name == "flow":
        return RectifiedFlow(apply_fn=apply_v, init_fn=init_v, data_shape=shape, solver="euler"), optimizer
    if name == "ct":
        return ConsistencyTraining(apply_fn=apply_v, init_fn=init_v, data_shape=shape, total_steps=config.steps,
                                   sigma_data=config.sigma_data, s1=config.ct_s1, optimizer=optimizer), optimizer  # fmt: skip
    if name == "ict":
        return ImprovedConsistencyTraining(apply_fn=apply_v, init_fn=init_v, data_shape=shape, total_steps=config.steps,
                                           sigma_data=config.sigma_data), optimizer  # fmt: skip
    if name == "cd":
        return ConsistencyDistillation(apply_fn=apply_v, init_fn=init_v, data_shape=shape, total_steps=config.steps,
                                       sigma_data=config.sigma_data, teacher_apply_fn=apply_v), optimizer  # fmt: skip
    if name in SHORTCUTS:
        apply_s, init_s = nets.shortcut
        shortcut = config.shortcut if name == "shortcut" else dataclasses.replace(config.shortcut, coupling="independent")
        return Shortcut(apply_fn=apply_s, init_fn=init_s, data_shape=shape, max_steps=shortcut.max_steps,
                        bootstrap_fraction=shortcut.bootstrap_fraction, bootstrap_target=shortcut.bootstrap_target,
                        coupling=shortcut.coupling, large_step_bias=shortcut.large_step_bias), optimizer  # fmt: skip
    if name == "sid":
        sid = config.sid
        method = SiD(
            apply_fn=apply_v, init_fn=init_v, data_shape=shape, alpha=sid.alpha, generator_time=sid.generator_time, t_min=sid.t_min, t_max=sid.t_max,
            generator_lr=sid.generator_lr, fake_lr=sid.fake_lr, fake_steps=sid.fake_steps, weighting=sid.weighting,
        )  # fmt: skip
        return method, optimizer
    if name == "ign":
        apply_m, init_m = nets.mapping
        return IGN(apply_fn=apply_m, init_fn=init_m, data_shape=shape, rec_weight=config.ign.rec_weight,
                   idem_weight=config.ign.idem_weight, tight_weight=config.ign.tight_weight), optimizer  # fmt: skip
    raise ValueError(f"unknown method {name!r}; expected one of {METHODS}")


def method_config(name: str, config: Any) -> Any:
    """The trainer config of one method: the shared one, with SiD's EMA decay if set."""
    if name == "sid" and config.sid.ema_decay is not None:
        return dataclasses.replace(config, ema_decay=config.sid.ema_decay)
    return config


def train_methods(config: Any, workdir: Path, nets: Networks, batches: Callable[[int], dict], *, progress: bool = True) -> dict[str, Trained]:
    """Trains the flow baseline (if needed as teacher or asked for) and every selected method."""
    check_methods(tuple(config.methods))
    order = list(config.methods)
    if "flow" not in order and any(m in order for m in NEEDS_TEACHER):
        order.insert(0, "flow")
    order.sort(key=lambda m: m != "flow")
    trained: dict[str, Trained] = {}
    teacher = None
    for name in order:
        method, optimizer = build_method(name, nets, config)
        frozen = teacher if name in NEEDS_TEACHER else None
        state = train(method, optimizer, batches, method_config(name, config), Path(workdir) / name, frozen=frozen, progress=progress)
        if name == "flow":
            teacher = state.ema_params
        trained[name] = Trained(method, state.ema_params, allowed_steps(name, tuple(config.step_counts), config.shortcut.max_steps))
    return trained


def draw_and_time(trained: Trained, steps: int, *, key: jax.Array, num: int) -> tuple[np.ndarray, float]:
    """Samples ``(num, *shape)`` and the wall time (s) of one jitted, compiled sample batch (split over the parameters' mesh, fetched to the host)."""
    draw = sharded_sampler(lambda p, k: trained.method.sample(p, key=k, num=num, steps=steps))
    draw(trained.params, key)  # compile
    start = time.perf_counter()
    samples = draw(trained.params, key)
    return samples, time.perf_counter() - start


def evaluate(
    trained: dict[str, Trained],
    metric: Callable[[np.ndarray], float],
    *,
    prefix: str,
    key: jax.Array,
    num: int,
) -> tuple[dict[str, float], dict[tuple[str, int], np.ndarray]]:
    """``{prefix_<method>_<steps>, wall_<method>_<steps>}`` for every method and allowed step count."""
    results: dict[str, float] = {}
    samples: dict[tuple[str, int], np.ndarray] = {}
    for name, entry in trained.items():
        for steps in entry.step_counts:
            x, seconds = draw_and_time(entry, steps, key=key, num=num)
            samples[(name, steps)] = x
            results[f"{prefix}_{name}_{steps}"] = float(metric(x))
            results[f"wall_{name}_{steps}"] = seconds
    if "flow" in trained and 128 in trained["flow"].step_counts:
        results[f"{prefix}_teacher_128"] = results[f"{prefix}_flow_128"]
    return results, samples


def add_target_ratios(results: dict[str, Any], prefix: str) -> None:
    """The issue's targets as ratios (None when a figure is missing)."""

    def ratio(num: str, den: str) -> float | None:
        a, b = results.get(f"{prefix}_{num}"), results.get(f"{prefix}_{den}")
        return None if a is None or b is None else a / max(b, 1e-12)

    for name in ("ct", "ict", "cd"):
        results[f"target_flow_1_over_{name}_1"] = ratio("flow_1", f"{name}_1")  # want >= 3
    for name in SHORTCUTS:
        results[f"target_{name}_1_over_{name}_128"] = ratio(f"{name}_1", f"{name}_128")  # want <= 2
    results["target_sid_1_over_teacher_128"] = ratio("sid_1", "teacher_128")  # want <= 1.5


def write_tables(results: dict[str, Any], methods: tuple[str, ...], step_counts: tuple[int, ...], prefix: str, title: str, workdir: Path) -> None:
    """``fewstep_table.json`` and ``fewstep_table.md``: metric and wall time per method and step count."""
    rows = {m: {str(k): {prefix: results.get(f"{prefix}_{m}_{k}"), "wall_s": results.get(f"wall_{m}_{k}")} for k in step_counts} for m in methods}
    write_json_atomic(workdir / "fewstep_table.json", {"metric": prefix, "rows": rows})
    lines = ["| method | " + " | ".join(f"{k} steps" for k in step_counts) + " |", "|---" * (1 + len(step_counts)) + "|"]
    for m in methods:
        cells = []
        for k in step_counts:
            value, wall = rows[m][str(k)][prefix], rows[m][str(k)]["wall_s"]
            cells.append("—" if value is None or wall is None else f"{value:.4g} ({1e3 * wall:.1f} ms)")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    targets = [f"- {k}: {v:.3g}" for k, v in results.items() if k.startswith("target_") and v is not None]
    text = f"{title}\n\n{prefix} (wall time per sample batch)\n\n" + "\n".join(lines) + "\n\nTargets (ratios)\n\n" + "\n".join(targets) + "\n"
    write_text_atomic(workdir / "fewstep_table.md", text)
