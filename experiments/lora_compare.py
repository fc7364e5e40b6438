"""lora-compare: full fine-tuning vs LoRA, LoRA+, LoRA-GA, LoRA-Pro on a digits class shift.

An MLP (64 → width → width → 10, ReLU; layers ``Dense_0``, ``Dense_1``, ``head``) is
pre-trained with Adam on the digits of classes ``0–4`` only, then fine-tuned on
classes ``5–9`` by each method, from the same pre-trained weights, on the same
batch sequence, for ``steps`` steps:

* ``full``: Adam on every parameter (``full_learning_rate``).
* ``lora``: rank-``r`` adapters ``W0 + s a b`` on the two hidden kernels
  (:func:`jaxlab.optim.lora_init`, ``s = alpha / r``), Adam at ``learning_rate``.
* ``lora_plus``: the same with ``lr_b = lora_plus_ratio * lr_a``
  (:func:`jaxlab.optim.lora_plus`, Hayou et al. 2024).
* ``lora_ga``: adapters initialized from the SVD of the full gradient averaged over
  ``ga_batches`` fine-tuning batches (:func:`jaxlab.optim.lora_ga_init`, stable
  scale ``gamma = ga_gamma``), ``W0`` offset so the initial output is unchanged; Adam.
* ``lora_pro``: :func:`jaxlab.optim.lora_pro_adam` — Adam on the equivalent
  gradient, projected onto the adapters' tangent space (Wang et al. 2024).

In every LoRA arm the output layer ``head`` (width → 10, whose columns for classes
5–9 have never been trained to fire) is trained in full, as is usual for a
classifier head (peft's ``modules_to_save``); its 10 outputs are also too few for
LoRA-GA's ``2r`` singular directions at ``r = 8``. Everything else is frozen.

Each arm is evaluated every ``eval_every`` steps on the held-out classes 5–9 (the
new task) and on held-out classes 0–4, task-aware (argmax over the logits of
0–4 only: the 10-way head itself forgets the old classes completely, so this
measures what is left of the features). Outputs:
``curves.png`` (new-task held-out accuracy and loss vs step), ``table.md``,
``curves.json``, ``results.json`` (``final_accuracy_{arm}``, ``final_loss_{arm}``,
``old_task_accuracy_{arm}``, ``steps_to_target_{arm}`` (first evaluation at or
above ``target_accuracy``), ``trainable_params_{arm}``, ``train_seconds_{arm}``),
and the trainer's files of the pre-training (``pretrain/``) and of each arm
(``<arm>/``): the arms are :func:`jaxlab.train.train_arms` arms in lock-step,
so an interrupted run resumes.

Defaults: every arm uses Adam at 3e-3 (full fine-tuning at 1e-3 adapted more
slowly to the same final accuracy, see ``docs/results.md``; nothing else was swept),
``alpha = 16`` (scale 4 at r = 4, 2 at r = 8), LoRA+ ratio 16 and LoRA-GA
``gamma = 16`` as in the papers. The held-out set of classes 5–9 has 179 images
(one image = 0.56 %), so final accuracies within ~2 % of each other are within
noise; the speed of adaptation and the retention of classes 0–4 differ more.

References:
    Hu et al., "LoRA", ICLR 2022. Hayou, Ghosh & Yu, "LoRA+", ICML 2024.
    Wang, Yu & Li, "LoRA-GA", NeurIPS 2024 (arXiv:2407.05000).
    Wang et al., "LoRA-Pro", ICLR 2025 (arXiv:2407.18242).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.figure import Figure

from jaxlab.data import digits_split
from jaxlab.nn import ClassifierMLP
from jaxlab.optim import (
    default_lora_predicate,
    lora_ga_init,
    lora_init,
    lora_merge,
    lora_plus,
    lora_pro_adam,
    lora_scale,
)
from jaxlab.tasks import Classifier, FineTune
from jaxlab.train import Arm as TrainerArm
from jaxlab.train import Experiment, MetricsLog, TrainConfig, named_key, save_figure, train, train_arms, write_json_atomic, write_text_atomic

METHODS = ("lora", "lora_plus", "lora_ga", "lora_pro")
LABELS = {"full": "full fine-tuning", "lora": "LoRA", "lora_plus": "LoRA+", "lora_ga": "LoRA-GA",
          "lora_pro": "LoRA-Pro"}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    """lora-compare configuration (``steps``, ``batch_size``, ``learning_rate``, ``seed`` from TrainConfig).

    ``learning_rate`` is the Adam rate of every LoRA arm (of ``a`` for LoRA+);
    ``warmup_steps`` and ``ema_decay`` are unused; ``log_every`` and
    ``checkpoint_every`` are replaced by ``eval_every`` and ``steps`` (one
    checkpoint per arm, at the end).

    Attributes:
      ranks: adapter ranks to compare.
      alpha: LoRA ``alpha`` (scale ``alpha / r``; ``alpha / sqrt(r)`` with ``rslora``).
      full_learning_rate: Adam rate of full fine-tuning.
      pretrain_steps, pretrain_learning_rate: Adam pre-training on classes 0–4.
      lora_plus_ratio: LoRA+'s ``lr_b / lr_a``.
      ga_batches, ga_gamma: LoRA-GA's gradient-averaging batches and stable-scale gamma.
      width: hidden width.
      eval_every: steps between held-out evaluations.
      target_accuracy: the new-task accuracy whose first reach is reported (speed of adaptation).
    """

    steps: int = 300
    steps_per_execution: int = 10
    batch_size: int = 64
    learning_rate: float = 3e-3
    warmup_steps: int = 0
    ranks: tuple[int, ...] = (4, 8)
    alpha: float = 16.0
    rslora: bool = False
    full_learning_rate: float = 3e-3
    pretrain_steps: int = 400
    pretrain_learning_rate: float = 1e-3
    lora_plus_ratio: float = 16.0
    ga_batches: int = 8
    ga_gamma: float = 16.0
    width: int = 128
    eval_every: int = 10
    target_accuracy: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("pretrain_steps", "ga_batches", "width", "eval_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0 < self.target_accuracy <= 1:
            raise ValueError(f"target_accuracy must be in (0, 1], got {self.target_accuracy!r}")
        for name in ("alpha", "full_learning_rate", "pretrain_learning_rate", "lora_plus_ratio", "ga_gamma"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not self.ranks or any(not isinstance(r, int) or not 1 <= 2 * r <= min(64, self.width) for r in self.ranks):
            raise ValueError(f"ranks must be ints with 1 <= 2 * rank <= min(64, width), got {self.ranks!r}")


def hidden_kernels(path: str, leaf) -> bool:
    """LoRA targets: the 2-D kernels except the head's."""
    return default_lora_predicate(path, leaf) and "/head/" not in f"/{path}/"


def load_data() -> dict[str, np.ndarray]:
    split = digits_split(seed=0)
    out = {}
    for part in ("train", "test"):
        x = split[f"{part}_images"].reshape(-1, 64).astype(np.float32) / 8.0 - 1.0
        y = split[f"{part}_labels"].astype(np.int32)
        out[f"{part}_old_x"], out[f"{part}_old_y"] = x[y < 5], y[y < 5]
        out[f"{part}_new_x"], out[f"{part}_new_y"] = x[y >= 5], y[y >= 5]
    return out


def xent(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def batch_indices(n: int, steps: int, batch: int, seed: int) -> np.ndarray:
    """``(steps, batch)`` indices from consecutive epoch permutations; the same for every arm."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(n) for _ in range(-(-steps * batch // n))])
    return order[: steps * batch].reshape(steps, batch).astype(np.int32)


def batches_of(x: np.ndarray, y: np.ndarray, idx: np.ndarray):
    """``step -> {"x", "y"}`` host batches of the ``(steps, batch)`` indices ``idx``."""
    return lambda step: {"x": x[idx[step]], "y": y[idx[step]]}


def trainer_config(config: Config) -> Config:
    """Fine-tuning: a log line with an evaluation every ``eval_every`` steps, one checkpoint at the end."""
    return dataclasses.replace(config, log_every=config.eval_every, checkpoint_every=config.steps)


def pretrain(net: ClassifierMLP, data, config: Config, workdir: Path):
    """Adam on classes 0–4 (``workdir/pretrain``, resumable); returns the trained variables."""
    x, y = data["train_old_x"], data["train_old_y"]
    idx = batch_indices(len(x), config.pretrain_steps, config.batch_size, config.seed + 1)
    steps = config.pretrain_steps  # in one dispatch, logged and checkpointed once
    pretrain_config = dataclasses.replace(config, steps=steps, log_every=steps, checkpoint_every=steps, steps_per_execution=steps)
    method = Classifier(apply_fn=net.apply, init_fn=net.init)
    state = train(method, optax.adam(config.pretrain_learning_rate), batches_of(x, y, idx), pretrain_config, workdir / "pretrain", progress=False)
    return state.params


@dataclasses.dataclass
class Arm:
    name: str
    method: str
    rank: int | None
    adapter: FineTune
    frozen: dict[str, Any]  # {"base": never trained, "start": the trainable tree at step 0}
    optimizer: optax.GradientTransformation
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    trainable: Any = None

    @property
    def seconds(self) -> float:
        return self.history[-1]["seconds"]


def build_arm(method: str, rank: int | None, net: ClassifierMLP, pretrained, data, config: Config) -> Arm:
    """The adapter, frozen weights, starting trainable tree and optimizer of one arm."""
    task = Classifier(apply_fn=net.apply, init_fn=net.init)
    name = "full" if method == "full" else f"{method}_r{rank}"
    if method == "full":
        adapter = FineTune(task, lambda trainable, base: trainable)
        return Arm(name, method, None, adapter, {"base": {}, "start": pretrained}, optax.adam(config.full_learning_rate))
    scale = lora_scale(rank, config.alpha, rslora=config.rslora)
    base = pretrained
    if method == "lora_ga":
        x, y = jnp.asarray(data["train_new_x"]), jnp.asarray(data["train_new_y"])
        idx = batch_indices(len(x), config.ga_batches, config.batch_size, config.seed + 2)
        grad = jax.jit(jax.grad(lambda p, i: xent(net.apply(p, x[i]), y[i])))
        grads = [grad(pretrained, jnp.asarray(i)) for i in idx]
        mean = jax.tree_util.tree_map(lambda *g: sum(g) / len(g), *grads)
        base, adapters = lora_ga_init(pretrained, mean, rank, scale=scale, gamma=config.ga_gamma,
                                      predicate=hidden_kernels)  # fmt: skip
    else:
        adapters = lora_init(pretrained, rank, key=named_key(config.seed, f"lora/{rank}"), predicate=hidden_kernels)

    def assemble(trainable, base, scale=scale):
        merged = lora_merge(base, trainable["lora"], scale=scale)
        return {"params": {**merged["params"], "head": trainable["head"]}}

    if method == "lora_plus":
        optimizer = lora_plus(optax.adam, config.learning_rate, ratio=config.lora_plus_ratio)
    elif method == "lora_pro":
        optimizer = lora_pro_adam(config.learning_rate, scale=scale)
    else:
        optimizer = optax.adam(config.learning_rate)
    start = {"lora": adapters, "head": pretrained["params"]["head"]}
    return Arm(name, method, rank, FineTune(task, assemble), {"base": base, "start": start}, optimizer)


def count(tree) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(tree)))


def evaluator(arm: Arm, net: ClassifierMLP, data):
    """``trainable -> {new_loss, new_accuracy, old_loss, old_accuracy}`` on the held-out splits."""
    tests = {k: (jnp.asarray(data[f"test_{k}_x"]), jnp.asarray(data[f"test_{k}_y"])) for k in ("new", "old")}

    @jax.jit
    def evaluate(trainable, frozen):
        out = {}
        for k, (tx, ty) in tests.items():
            logits = net.apply(arm.adapter.weights(trainable, frozen), tx)
            if k == "old":  # task-aware: which of 0–4 (the 10-way head forgets old classes entirely)
                logits = logits[:, :5]
            out[f"{k}_loss"], out[f"{k}_accuracy"] = xent(logits, ty), jnp.mean(jnp.argmax(logits, -1) == ty)
        return out

    return lambda trainable: {k: float(v) for k, v in jax.device_get(evaluate(trainable, arm.frozen)).items()}


def fine_tune(arms: list[Arm], net: ClassifierMLP, data, config: Config, workdir: Path) -> None:
    """Trains every arm in lock-step (:func:`jaxlab.train.train_arms`, ``workdir/<arm>``, resumable) and fills its history.

    ``train_loss`` is the mean training loss over the steps since the previous evaluation.
    """
    x, y = data["train_new_x"], data["train_new_y"]
    batches = batches_of(x, y, batch_indices(len(x), config.steps, config.batch_size, config.seed + 3))
    evaluators = {arm.name: evaluator(arm, net, data) for arm in arms}
    trainer_arms = {
        arm.name: TrainerArm(
            arm.adapter, arm.optimizer, frozen=arm.frozen, evaluate=lambda s, e=evaluators[arm.name]: e(s.params), evaluate_every=config.eval_every
        )
        for arm in arms
    }
    states = train_arms(trainer_arms, batches, trainer_config(config), workdir, progress=False)
    for arm in arms:
        log = MetricsLog(workdir / arm.name / "metrics.jsonl")
        losses = {r["step"]: r["loss"] for r in log.read()}
        start = {"step": 0, "seconds": 0.0, "train_loss": float("nan"), **evaluators[arm.name](arm.frozen["start"])}
        arm.history = [start, *({**h, "train_loss": losses[h["step"]]} for h in log.evaluations())]
        arm.trainable = states[arm.name].params


def plot(arms: list[Arm], path: Path) -> None:
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    colors = {"full": "k", "lora": "C0", "lora_plus": "C1", "lora_ga": "C2", "lora_pro": "C3"}
    for arm in arms:
        style = "-" if arm.rank is None or arm.rank == max(a.rank or 0 for a in arms) else "--"
        label = LABELS[arm.method] + ("" if arm.rank is None else f" r={arm.rank}")
        steps = [h["step"] for h in arm.history]
        for ax, key in zip(axes, ("new_accuracy", "new_loss")):
            ax.plot(steps, [h[key] for h in arm.history], style, color=colors[arm.method], label=label)
    axes[0].set_ylabel("held-out accuracy, classes 5–9")
    axes[1].set_ylabel("held-out cross-entropy, classes 5–9")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("fine-tuning step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("digits MLP pre-trained on 0–4, fine-tuned on 5–9")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def steps_to(history: list[dict[str, float]], target: float) -> int | None:
    """The first evaluated step whose new-task held-out accuracy is at least ``target``; None if never."""
    return next((h["step"] for h in history if h["new_accuracy"] >= target), None)


def table(arms: list[Arm], pretrained_old: float, config: Config) -> str:
    lines = [(f"Pre-trained model: held-out accuracy on classes 0–4 = {pretrained_old:.4f}. "
             f"Accuracy on 0–4 after fine-tuning is task-aware (argmax over the logits of 0–4)."), "",
             (f"| method | rank | trainable params | steps to {config.target_accuracy:g} | final accuracy 5–9 "
             "| final loss 5–9 | accuracy 0–4 after | train seconds |"),
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for arm in arms:
        h, reach = arm.history[-1], steps_to(arm.history, config.target_accuracy)
        lines.append(f"| {LABELS[arm.method]} | {arm.rank or '—'} | {count(arm.trainable)} "
                     f"| {'never' if reach is None else reach} | {h['new_accuracy']:.4f} "
                     f"| {h['new_loss']:.4f} | {h['old_accuracy']:.4f} | {arm.seconds:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def run(config: Config, workdir: Path) -> dict[str, Any]:
    workdir = Path(workdir)
    data = load_data()
    net = ClassifierMLP(config.width)
    pretrained = pretrain(net, data, config, workdir)
    logits = net.apply(pretrained, jnp.asarray(data["test_old_x"]))
    pretrained_old = float(jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(data["test_old_y"])))
    specs = [("full", None)] + [(m, r) for r in config.ranks for m in METHODS]
    arms = [build_arm(method, rank, net, pretrained, data, config) for method, rank in specs]
    fine_tune(arms, net, data, config, workdir)
    plot(arms, workdir / "curves.png")
    text = table(arms, pretrained_old, config)
    write_text_atomic(workdir / "table.md", text)
    write_json_atomic(workdir / "curves.json", {arm.name: arm.history for arm in arms})
    print(text)
    results: dict[str, Any] = {"pretrained_old_task_accuracy": pretrained_old}
    for arm in arms:
        h = arm.history[-1]
        results[f"final_accuracy_{arm.name}"] = h["new_accuracy"]
        results[f"final_loss_{arm.name}"] = h["new_loss"]
        results[f"old_task_accuracy_{arm.name}"] = h["old_accuracy"]
        results[f"trainable_params_{arm.name}"] = count(arm.trainable)
        results[f"steps_to_target_{arm.name}"] = steps_to(arm.history, config.target_accuracy)
        results[f"train_seconds_{arm.name}"] = arm.seconds
    return results


EXPERIMENTS = [
    Experiment(
        name="lora-compare",
        description="full fine-tuning vs LoRA, LoRA+, LoRA-GA, LoRA-Pro (digits 0–4 → 5–9): accuracy/loss curves",
        config=Config(),
        run=run,
        sharded_fields=("batch_size",),
    )
]
