"""muon-compare: AdamW vs Muon vs Muon + spectral decay on a digits MLP classifier.

One small model — an MLP (64 → width → … → width → 10) on the embedded 8×8
digits — is trained three times from the same initial parameters on the same
batch sequence, for the same number of steps and the same schedule shape
(linear warm-up, then cosine decay to zero at ``steps``):

* ``adamw``: ``optax.adamw`` on every parameter, peak rate ``learning_rate``.
* ``muon``: :func:`jaxlab.optim.muon` with its default routing — the hidden
  matrices (here every ``Dense_i/kernel``) take Muon steps at peak rate
  ``muon_learning_rate``; biases and the output layer (named ``head``) take
  the AdamW branch at ``learning_rate`` with AdamW's hyperparameters, so the
  two arms differ only in how hidden matrices are updated.
* ``muon_spectral``: the same plus :func:`jaxlab.optim.spectral_decay` chained
  into the Muon branch (``muon(..., spectral_decay_rate=...)``: after the
  orthogonalized step and before the learning rate), which shrinks only the top
  singular value of each hidden matrix.

Held-out cross-entropy and accuracy are evaluated every ``eval_every`` steps
on the whole test split. The three runs are :func:`jaxlab.train.train_arms`
arms: they advance in lock-step, ``eval_every`` steps of each in turn (one
dispatch of ``steps_per_execution`` steps at a time), so load from other
processes falls on all three alike; wall time counts only training (not
compilation, evaluation or the checkpoint).

Hyperparameters (defaults) come from a coarse sweep at the default budget
(600 steps of batch 128, width 256, seed 0), each arm picked by its final
held-out loss; the sweep is in ``docs/results.md``.

* AdamW: peak 1e-2, weight decay 0.3.
* Muon: peak 0.02 (Keller's shape scale ``sqrt(max(1, fan_out/fan_in))``),
  decoupled weight decay 0.5. Muon's rate is the spectral-norm size of a
  step — its update is a semi-orthogonal matrix with every singular value
  ≈ 1 — not a per-coordinate size as in Adam, hence its own scale. Weight
  decay is essential (Moonlight's point): an orthogonalized step does not
  shrink as the gradient vanishes, so without decay the weights keep growing
  once the train set is fit and the held-out loss climbs.
* Spectral decay: rate 1.0 on top of Muon's weight decay. The rate
  multiplies ``sigma_1 u_1 v_1^T`` before the learning rate, like
  ``weight_decay`` multiplies ``W``; it does not replace weight decay, since
  only the top singular value is decayed.

``muon_coeffs`` defaults to ``"keller"``, the table the learning rates above
were tuned with; ``--set muon_coeffs=polar_express`` runs the library's
default.

Outputs in the run directory: ``loss_vs_step.png``, ``loss_vs_time.png``,
``steps_to_target.md`` (steps and seconds each optimizer needs to reach AdamW's
final held-out loss), ``curves.json`` (every evaluation), ``results.json``,
and each arm's trainer files in ``<optimizer>/`` (``metrics.jsonl``, one
checkpoint at the end or at Ctrl-C, from which a re-run resumes).

References:
    Jordan, "Muon: An optimizer for hidden layers in neural networks", 2024.
    https://kellerjordan.github.io/posts/muon/

    Liu et al., "Muon is Scalable for LLM Training" (Moonlight), 2025.
    https://arxiv.org/abs/2502.16982
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np
import optax
from matplotlib.figure import Figure

from jaxlab.data import digits_split, epoch_permutation_batch
from jaxlab.nn import ClassifierMLP
from jaxlab.optim import muon
from jaxlab.tasks import Classifier
from jaxlab.train import (
    Arm,
    Experiment,
    MetricsLog,
    TrainConfig,
    init_state,
    save_figure,
    train_arms,
    write_json_atomic,
    write_text_atomic,
)

OPTIMIZERS = ("adamw", "muon", "muon_spectral")
LABELS = {"adamw": "AdamW", "muon": "Muon", "muon_spectral": "Muon + spectral decay"}
NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    """muon-compare configuration (trainer fields from :class:`TrainConfig`).

    ``seed`` sets the initial parameters (shared by the three arms) and the
    batch order; ``learning_rate`` is AdamW's peak rate (the baseline, and the
    AdamW branch of both Muon arms); ``log_every`` and ``checkpoint_every``
    are replaced by ``eval_every`` and ``steps`` (one checkpoint, at the end);
    ``ema_decay`` is not used (evaluations read the trained parameters).

    Attributes:
      weight_decay: decoupled weight decay of AdamW (and of the AdamW branch).
      muon_learning_rate: peak rate of the Muon branch (hidden matrices).
      muon_weight_decay: decoupled weight decay of the Muon branch.
      spectral_decay_rate: rate of :func:`jaxlab.optim.spectral_decay` in the
        third arm (in addition to ``muon_weight_decay``).
      muon_coeffs: ``msign`` coefficients of both Muon arms.
      width, depth: hidden width and number of hidden layers of the MLP.
      eval_every: steps between held-out evaluations.
      split_seed, test_fraction: the train/test split of the digits.
    """

    steps: int = 600
    steps_per_execution: int = 20
    batch_size: int = 128
    learning_rate: float = 1e-2
    warmup_steps: int = 50
    weight_decay: float = 0.3
    muon_learning_rate: float = 0.02
    muon_weight_decay: float = 0.5
    spectral_decay_rate: float = 1.0
    muon_coeffs: Literal["polar_express", "keller"] = "keller"
    width: int = 256
    depth: int = 2
    eval_every: int = 20
    split_seed: int = 0
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("width", "depth", "eval_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("muon_learning_rate", "spectral_decay_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("weight_decay", "muon_weight_decay"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")


def build_method(config: Config) -> Classifier:
    network = ClassifierMLP(width=config.width, depth=config.depth, num_classes=NUM_CLASSES)
    return Classifier(apply_fn=network.apply, init_fn=network.init)


def load_data(config: Config) -> dict[str, np.ndarray]:
    """Digits as float32 ``(n, 64)`` in [-1, 1] and int32 labels, split by ``split_seed``."""
    split = digits_split(seed=config.split_seed, test_fraction=config.test_fraction)
    scale = lambda images: images.reshape(len(images), -1).astype(np.float32) / 8.0 - 1.0
    return {
        "train_x": scale(split["train_images"]),
        "train_y": split["train_labels"].astype(np.int32),
        "test_x": scale(split["test_images"]),
        "test_y": split["test_labels"].astype(np.int32),
    }


def schedule(peak: float, config: Config) -> optax.Schedule:
    """Linear warm-up to ``peak`` over ``warmup_steps``, then cosine decay to 0 at ``steps``."""
    warmup = min(config.warmup_steps, config.steps - 1)
    decay = optax.cosine_decay_schedule(peak, max(config.steps - warmup, 1))
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup]) if warmup else decay


def build_optimizer(name: str, config: Config) -> optax.GradientTransformation:
    """The optimizer of arm ``name`` (one of :data:`OPTIMIZERS`)."""
    adam_lr = schedule(config.learning_rate, config)
    if name == "adamw":
        return optax.adamw(adam_lr, weight_decay=config.weight_decay)
    return muon(
        schedule(config.muon_learning_rate, config),
        weight_decay=config.muon_weight_decay,
        spectral_decay_rate=config.spectral_decay_rate if name == "muon_spectral" else None,
        adam_learning_rate=adam_lr,
        adam_weight_decay=config.weight_decay,
        coeffs=config.muon_coeffs,
    )


def batch_indices(config: Config, num_train: int) -> np.ndarray:
    """``(steps, batch)`` example indices; the same sequence for every optimizer."""
    return np.stack([epoch_permutation_batch(num_train, config.batch_size, seed=config.seed, step=s) for s in range(config.steps)]).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One optimizer's evaluations (step, training seconds so far, held-out loss/accuracy, train loss) and compile time."""

    history: list[dict[str, float]]
    compile_seconds: float

    @property
    def seconds(self) -> float:
        return self.history[-1]["seconds"]


def first_reach(history: list[dict[str, float]], target: float, key: str = "step") -> float | None:
    """The first evaluation's ``key`` at which the held-out loss is at or below ``target``; None if never."""
    return next((h[key] for h in history if h["loss"] <= target), None)


def trainer_config(config: Config) -> Config:
    """The trainer's view: a log line (with an evaluation) every ``eval_every`` steps, one checkpoint at the end."""
    return dataclasses.replace(config, log_every=config.eval_every, checkpoint_every=config.steps)


def evaluator(method: Classifier, data: dict[str, np.ndarray]):
    """``state -> {loss, accuracy, train_loss}``: held-out figures and the loss on the whole train split."""
    metrics = jax.jit(method.metrics)
    test, train_all = {"x": data["test_x"], "y": data["test_y"]}, {"x": data["train_x"], "y": data["train_y"]}

    def evaluate(params) -> dict[str, float]:
        held_out, train = jax.device_get((metrics(params, test), metrics(params, train_all)))
        return {"loss": float(held_out["loss"]), "accuracy": float(held_out["accuracy"]), "train_loss": float(train["loss"])}

    return evaluate


def train_compared(config: Config, data: dict[str, np.ndarray], workdir: Path, *, progress: bool = True) -> dict[str, Outcome]:
    """Trains every optimizer in lock-step with :func:`jaxlab.train.train_arms` (``workdir/<optimizer>``, resumable)."""
    method, evaluate = build_method(config), evaluator(build_method(config), data)
    idx = batch_indices(config, len(data["train_x"]))
    batches = lambda step: {"x": data["train_x"][idx[step]], "y": data["train_y"][idx[step]]}
    arms = {
        name: Arm(method, build_optimizer(name, config), evaluate=lambda state: evaluate(state.params), evaluate_every=config.eval_every) for name in OPTIMIZERS
    }
    train_arms(arms, batches, trainer_config(config), workdir, progress=progress)
    initial = evaluate(jax.jit(lambda b: init_state(method, optax.identity(), b, config.seed).params)(batches(0)))  # the arms' shared start
    outcomes = {}
    for name in arms:
        log = MetricsLog(workdir / name / "metrics.jsonl")
        history = [{"step": 0, "seconds": 0.0, **initial}, *log.evaluations()]
        outcomes[name] = Outcome(history, sum(r.get("compile_seconds", 0.0) for r in log.read()))
    return outcomes


def plot_curves(arms: dict[str, Outcome], target: float, path: Path, *, x: str) -> None:
    """Held-out loss (solid) and train loss (dotted) against ``x`` (``"step"`` or ``"seconds"``)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for color, (name, arm) in zip(("C0", "C1", "C2"), arms.items(), strict=False):
        xs = [h[x] for h in arm.history]
        ax.plot(xs, [h["loss"] for h in arm.history], color=color, label=f"{LABELS[name]} (held-out)")
        train = [h["train_loss"] for h in arm.history]
        ax.plot(xs, train, color=color, linestyle=":", alpha=0.7, label=f"{LABELS[name]} (train)")
    ax.axhline(target, color="gray", linestyle="--", linewidth=1, label="AdamW final held-out")
    ax.set_yscale("log")
    ax.set_xlabel("step" if x == "step" else "training wall time (s)")
    ax.set_ylabel("cross-entropy")
    ax.set_title(f"digits MLP: loss vs {'step' if x == 'step' else 'wall time'}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def _fmt(value, spec: str) -> str:
    return "never" if value is None else format(value, spec)


def target_table(arms: dict[str, Outcome], target: float, config: Config) -> str:
    """Markdown table: steps and seconds to reach AdamW's final held-out loss, and the final figures."""
    adam = f"{config.learning_rate:g}"
    rates = {"adamw": adam, "muon": f"{config.muon_learning_rate:g} (AdamW branch {adam})"}
    rates["muon_spectral"] = rates["muon"] + f", spectral {config.spectral_decay_rate:g}"
    lines = [
        f"Target: AdamW's final held-out loss {target:.4f} (evaluated every {config.eval_every} steps).",
        "",
        ("| optimizer | peak learning rate | steps to target | seconds to target | final held-out loss | final accuracy | train seconds | ms/step |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, arm in arms.items():
        final = arm.history[-1]
        lines.append(
            f"| {LABELS[name]} | {rates[name]} | {_fmt(first_reach(arm.history, target), 'd')} "
            f"| {_fmt(first_reach(arm.history, target, 'seconds'), '.2f')} | {final['loss']:.4f} "
            f"| {final['accuracy']:.4f} | {arm.seconds:.2f} | {1e3 * arm.seconds / config.steps:.3f} |"
        )
    return "\n".join(lines) + "\n"


def run(config: Config, workdir: Path) -> dict[str, Any]:
    workdir = Path(workdir)
    arms = train_compared(config, load_data(config), workdir)
    target = arms["adamw"].history[-1]["loss"]

    plot_curves(arms, target, workdir / "loss_vs_step.png", x="step")
    plot_curves(arms, target, workdir / "loss_vs_time.png", x="seconds")
    table = target_table(arms, target, config)
    write_text_atomic(workdir / "steps_to_target.md", table)
    write_json_atomic(workdir / "curves.json", {name: arm.history for name, arm in arms.items()})
    print(table)

    results: dict[str, Any] = {}
    for name, arm in arms.items():
        final = arm.history[-1]
        results[f"final_loss_{name}"] = final["loss"]
        results[f"final_accuracy_{name}"] = final["accuracy"]
        results[f"best_loss_{name}"] = min(h["loss"] for h in arm.history)
        results[f"final_train_loss_{name}"] = final["train_loss"]
        results[f"train_seconds_{name}"] = arm.seconds
        results[f"compile_seconds_{name}"] = arm.compile_seconds
    for name in ("muon", "muon_spectral"):
        results[f"steps_to_adamw_final_{name}"] = first_reach(arms[name].history, target)
        results[f"seconds_to_adamw_final_{name}"] = first_reach(arms[name].history, target, "seconds")
    return results


EXPERIMENTS = [
    Experiment(
        name="muon-compare",
        description="AdamW vs Muon vs Muon + spectral decay on a digits MLP; held-out loss vs step and wall time",
        config=Config(),
        run=run,
        sharded_fields=("batch_size",),
    )
]
