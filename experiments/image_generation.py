"""image-generation: a DiT trained on images with one few-step method, scored by FID at 1/2/4/128 steps.

One method per run (``--set method=flow|shortcut|ict|cd|sid``), trained in
``workdir/<method>`` with :func:`jaxlab.train.train` (EMA of the parameters,
bf16 compute by default): rectified flow (Euler), the shortcut model, iCT,
and CD and SiD distilled from a flow teacher — trained first in
``workdir/flow`` with the same trainer fields, resumed if it is there, or
read from another run's ``teacher_workdir``. The network is a DiT
(``--set dit=B/2``: any of S/B/L/XL × 2/4/8, Peebles & Xie Table 1; the
shortcut model's step size d enters as the DiT's second time input), class
conditional (label dropout 0.1, null label) when the dataset has labels.

Data (``--set dataset=``): ``synthetic`` (procedural coloured shapes in ten
classes, :func:`jaxlab.recipes.images.synthetic_images`), ``cifar10`` (the
binary version in ``data_dir``) or ``folder`` (an image folder in
``data_dir``, :mod:`jaxlab.data.images`); real data get random horizontal
flips.

Evaluation: ``eval_samples`` samples per allowed step count (those of
:func:`jaxlab.recipes.fewstep.allowed_steps`), drawn in chunks of
``sample_batch`` with :func:`jaxlab.parallel.sharded_sampler`. With the FID
Inception weights (``inception_weights``, default
:func:`jaxlab.eval.default_weights_path`) the metric is FID against the
training images' statistics (computed once and cached in ``workdir/eval``,
or read from a ``jaxlab fid-stats`` file given as ``fid_stats``); without
them it is a proxy — the Fréchet distance of the features of a small
classifier trained on the dataset — reported as ``proxy_frechet_*``, never
as ``fid_*``. Results also hold training img/s (``steps_per_sec`` of
``metrics.jsonl`` × batch size) and sampling img/s per step count; writes
``samples.png`` and ``fewstep_table.{json,md}``.

``--set preset=smoke`` replaces the GPU-sized defaults (DiT-B/2, batch 256,
400k steps, 10k evaluation samples) by a tiny DiT (depth 2, width 64, 2
heads, patch 4) at 16×16 on the synthetic set, batch 16, 100 steps and 64
evaluation samples: seconds on a CPU. The preset replaces only the fields
left at their defaults, so ``--set preset=smoke --steps 100`` trains 100 steps.

References:
  Peebles, Xie 2023, "Scalable Diffusion Models with Transformers" (arXiv:2212.09748);
  Liu, Gong, Liu 2022, "Flow Straight and Fast" (rectified flow);
  Frans et al. 2024, "One Step Diffusion via Shortcut Models" (arXiv:2410.12557);
  Song, Dhariwal 2023, "Improved Techniques for Training Consistency Models" (iCT);
  Song et al. 2023, "Consistency Models" (CD);
  Zhou et al. 2024, "Score identity Distillation" (SiD);
  Heusel et al. 2017 (FID).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.data import ImageFolder, image_batches, images_to_signed, list_images
from jaxlab.nn import DiT, dtype_name
from jaxlab.nn.dit import DiTConfig, dit_config, dit_names
from jaxlab.parallel import make_mesh, replicated
from jaxlab.recipes import fewstep, images
from jaxlab.train import Experiment, TrainConfig, check_fields, is_writer, named_key, restore_params, train

METHODS = ("flow", "shortcut", "ict", "cd", "sid")
TINY = (2, 64, 2)  # depth, hidden, heads of the smoke-test "tiny/p" sizes (not the paper's)
CIFAR_FOLDER, CIFAR_FILES = "cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
SMOKE = {
    "dit": "tiny/4",
    "batch_size": 16,
    "steps": 100,
    "learning_rate": 2e-3,
    "checkpoint_every": 100,
    "log_every": 25,
    "eval_samples": 64,
    "sample_batch": 64,
}  # and resolution 16 on the synthetic set
SYNTHETIC_SIZE = 2048  # images of the synthetic set


def model_names() -> tuple[str, ...]:
    """The ``dit`` values: the paper's sizes and the smoke test's tiny ones."""
    return (*dit_names(), *(f"tiny/{p}" for p in (2, 4, 8)))


def model_config(name: str, **overrides: Any) -> DiTConfig:
    """The DiT of ``name`` ("B/2", "DiT-B/2" or "tiny/4") with ``overrides`` of its other fields."""
    name = name.removeprefix("DiT-")
    if name.startswith("tiny/") and name in model_names():
        depth, hidden, heads = TINY
        return DiTConfig(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=int(name.split("/")[1]), **overrides)
    return dit_config(name, **overrides)


@dataclasses.dataclass(frozen=True)
class Config(TrainConfig):
    """image-generation configuration (trainer fields from :class:`jaxlab.train.TrainConfig`, DiT paper defaults).

    Attributes:
      preset: "none", or "smoke" (a CPU-sized run; replaces the fields left at their defaults).
      method: the few-step method trained in ``workdir/<method>``.
      dataset: "synthetic", "cifar10" (``data_dir/cifar-10-batches-bin``) or "folder" (``data_dir``).
      data_dir: the data folder of cifar10 / folder.
      resolution: image side; divisible by the DiT's patch size (cifar10: 32).
      dit: DiT size ("B/2"; S/B/L/XL × 2/4/8, or "tiny/p").
      dtype: compute dtype of the DiT (parameters stay float32).
      class_conditional: condition on the labels when the dataset has them.
      label_dropout: probability of the null label in training.
      flip: random horizontal flips of real data.
      step_counts: sampler step counts evaluated (those the method allows).
      eval_samples: samples per step count for the Fréchet distance.
      sample_batch: samples per sampler call.
      sample_steps: the step count of ``jaxlab sample`` (SiD: 1).
      fid_stats: a ``jaxlab fid-stats`` .npz of the reference (""; the training images').
      inception_weights: the FID Inception weights .npz ("": the default path; missing: the proxy).
      teacher_workdir: a run directory of this experiment with method=flow whose ``flow/`` is the teacher of cd / sid ("": train it).
      sigma_data: the data's std in the EDM scalings of iCT / CD.
    """

    NONNEGATIVE: ClassVar[frozenset[str]] = TrainConfig.NONNEGATIVE

    steps: int = 400_000
    batch_size: int = 256
    learning_rate: float = 1e-4  # DiT: AdamW 1e-4, constant, no weight decay
    warmup_steps: int = 0
    ema_decay: float = 0.9999
    checkpoint_every: int = 10_000
    log_every: int = 100
    preset: Literal["none", "smoke"] = "none"
    method: Literal["flow", "shortcut", "ict", "cd", "sid"] = "flow"
    dataset: Literal["synthetic", "cifar10", "folder"] = "synthetic"
    data_dir: str | None = None
    resolution: int = 32
    dit: str = "B/2"
    dtype: str = "bfloat16"
    class_conditional: bool = True
    label_dropout: float = 0.1
    flip: bool = True
    step_counts: tuple[int, ...] = fewstep.STEP_COUNTS
    eval_samples: int = 10_000
    sample_batch: int = 500
    sample_steps: int = 4
    fid_stats: str = ""
    inception_weights: str = ""
    teacher_workdir: str = ""
    sigma_data: float = 0.5
    shortcut: fewstep.ShortcutConfig = dataclasses.field(default_factory=fewstep.ShortcutConfig)
    sid: fewstep.SiDConfig = dataclasses.field(default_factory=fewstep.SiDConfig)

    def __post_init__(self) -> None:
        for name, value in preset_values(self).items():
            object.__setattr__(self, name, value)
        super().__post_init__()
        check_config(self)


def preset_values(config: Config) -> dict[str, Any]:
    """The preset's values of the fields that ``config`` leaves at their defaults."""
    if config.preset != "smoke":
        return {}
    smoke = {**SMOKE, **({"resolution": 16} if config.dataset == "synthetic" else {})}
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    return {name: value for name, value in smoke.items() if getattr(config, name) == defaults[name]}


def check_config(config: Config) -> None:
    """The checks beyond the field types, before anything is written or compiled (ValueError naming the field)."""
    if config.dit.removeprefix("DiT-") not in model_names():
        raise ValueError(f"dit must be one of {', '.join(model_names())}, got {config.dit!r}")
    dtype_name("dtype", config.dtype)
    patch = model_config(config.dit).patch_size
    if config.resolution % patch:
        raise ValueError(f"resolution must be divisible by the patch size {patch} of dit={config.dit!r}, got {config.resolution}")
    if not 0.0 <= config.label_dropout < 1.0:
        raise ValueError(f"label_dropout must be in [0, 1), got {config.label_dropout!r}")
    check_fields(config.shortcut)
    check_data(config)
    if config.inception_weights and not Path(config.inception_weights).is_file():
        raise ValueError(f"inception_weights: no file at {config.inception_weights} (see jaxlab.eval.inception for how to make it)")
    if config.fid_stats:
        if not Path(config.fid_stats).is_file():
            raise ValueError(f"fid_stats: no file at {config.fid_stats} (write one with `jaxlab fid-stats SOURCE OUT`)")
        if weights_path(config) is None:
            raise ValueError(f"fid_stats={config.fid_stats!r} holds Inception statistics, but there are no Inception weights at {inception_path(config)}")
    if config.teacher_workdir:
        if config.method not in fewstep.NEEDS_TEACHER:
            raise ValueError(f"teacher_workdir is for methods {fewstep.NEEDS_TEACHER}, got method={config.method!r}")
        if not (Path(config.teacher_workdir) / "flow" / "checkpoints").is_dir():
            raise ValueError(
                f"teacher_workdir must be a run directory of image-generation with method=flow (holding flow/checkpoints), got {config.teacher_workdir!r}"
            )


def check_data(config: Config) -> None:
    """The dataset's files are where ``data_dir`` says, with a message saying where to put them."""
    if config.dataset == "cifar10":
        if config.resolution != 32:
            raise ValueError(f"resolution must be 32 for dataset='cifar10' (its images are 32×32), got {config.resolution}")
        where = Path(config.data_dir or "DATA_DIR") / CIFAR_FOLDER
        missing = [name for name in CIFAR_FILES if not (where / name).is_file()]
        if not config.data_dir or missing:
            raise ValueError(
                f"data_dir: dataset='cifar10' reads the CIFAR-10 binary version from {where} ({', '.join(CIFAR_FILES)}; "
                f"unpack cifar-10-binary.tar.gz of https://www.cs.toronto.edu/~kriz/cifar.html in data_dir, set by --data-dir DIR); "
                f"missing: {', '.join(missing) if config.data_dir else 'data_dir'}"
            )
    if config.dataset == "folder" and not (config.data_dir and Path(config.data_dir).is_dir()):
        raise ValueError(
            f"data_dir: dataset='folder' needs a folder of images (one subfolder per class, or images directly) as data_dir, got {config.data_dir!r}"
        )


def inception_path(config: Config) -> Path:
    from jaxlab.eval import default_weights_path

    return Path(config.inception_weights) if config.inception_weights else default_weights_path()


def weights_path(config: Config) -> Path | None:
    """The Inception weights file when it is there (FID), else None (the proxy)."""
    path = inception_path(config)
    return path if path.is_file() else None


@dataclasses.dataclass(frozen=True)
class Data:
    """A dataset: the training batches, its reference images (uint8 chunks, for the statistics) and its class count."""

    batches: Any  # step -> {"x", "label"}
    reference: Any  # () -> Iterator[np.ndarray] uint8 (n, r, r, 3)
    num_classes: int  # 0: unlabelled
    images: np.ndarray  # uint8 (n, r, r, 3): what the proxy classifier trains on (a subset for large sets)
    labels: np.ndarray


def _chunks(array: np.ndarray, size: int = 1000) -> Iterator[np.ndarray]:
    for start in range(0, array.shape[0], size):
        yield array[start : start + size]


def in_memory(config: Config, x: np.ndarray, labels: np.ndarray, num_classes: int, *, flip: bool) -> Data:
    batches = image_batches((x, labels), config.batch_size, seed=config.seed, flip=flip)
    return Data(batches, lambda: _chunks(x), num_classes, x, labels)


def folder_data(config: Config) -> Data:
    """``dataset=folder`` through :mod:`jaxlab.data.images`."""
    source = ImageFolder(config.data_dir, resolution=config.resolution)
    source.verify()  # a bad file fails now, before anything compiles
    batches = image_batches(source, config.batch_size, seed=config.seed, flip=config.flip)
    num_classes = len(source.classes) if len(source.classes) > 1 else 0
    proxy_rows = np.arange(min(len(source), 20_000))

    def reference() -> Iterator[np.ndarray]:
        for start in range(0, len(source), 1000):
            yield source.images(np.arange(start, min(start + 1000, len(source))))

    return Data(batches, reference, num_classes, source.images(proxy_rows), np.asarray(source.labels)[proxy_rows])


def load_data(config: Config) -> Data:
    if config.dataset == "cifar10":
        from jaxlab.data import load_cifar10

        x, labels = load_cifar10(config.data_dir or "")
        return in_memory(config, x, labels, 10, flip=config.flip)
    if config.dataset == "folder":
        return folder_data(config)
    x, labels = images.synthetic_images(SYNTHETIC_SIZE, config.resolution, seed=0)
    return in_memory(config, x, labels, images.NUM_SYNTHETIC_CLASSES, flip=False)


def networks(config: Config, num_classes: int) -> fewstep.Networks:
    """The DiT's velocity (x, t[, labels=]) and shortcut (x, t, d[, labels=]) signatures; IGN is not offered."""
    classes = num_classes if config.class_conditional and num_classes else None
    common = dict(in_channels=3, num_classes=classes, dtype=jnp.dtype(dtype_name("dtype", config.dtype)))
    velocity, step_net = DiT(model_config(config.dit, **common)), DiT(model_config(config.dit, second_time=True, **common))

    def unused(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("image-generation does not train IGN")

    shape = (config.resolution, config.resolution, 3)
    return fewstep.Networks(velocity=(velocity.apply, velocity.init), shortcut=(step_net.apply, step_net.init), mapping=(unused, unused), data_shape=shape)


def build(name: str, config: Config, num_classes: int) -> tuple[Any, Any]:
    """The adapter of ``name`` (class-conditional when there are classes) and its optimizer."""
    method, optimizer = fewstep.build_method(name, networks(config, num_classes), config)
    if not (config.class_conditional and num_classes):
        return method, optimizer
    if name == "shortcut":
        return dataclasses.replace(method, num_classes=num_classes, label_dropout=config.label_dropout), optimizer
    return images.label_conditioned(method, num_classes, config.label_dropout), optimizer


def train_method(config: Config, workdir: Path, data: Data, *, progress: bool) -> tuple[Any, Any, Any]:
    """(method, EMA params, teacher EMA params or None): the flow teacher first when the method needs one."""
    teacher = None
    if config.method in fewstep.NEEDS_TEACHER:
        if config.teacher_workdir:
            teacher = restore_params(Path(config.teacher_workdir) / "flow")
        else:
            flow, optimizer = build("flow", config, data.num_classes)
            teacher = train(flow, optimizer, data.batches, config, workdir / "flow", progress=progress).ema_params
    method, optimizer = build(config.method, config, data.num_classes)
    state = train(method, optimizer, data.batches, fewstep.method_config(config.method, config), workdir / config.method, frozen=teacher, progress=progress)
    return method, state.ema_params, teacher


def training_images_per_sec(config: Config, workdir: Path) -> float | None:
    """Median ``steps_per_sec`` of the method's ``metrics.jsonl`` × batch size."""
    path = workdir / config.method / "metrics.jsonl"
    rates = [line["steps_per_sec"] for line in map(json.loads, path.read_text().splitlines() if path.exists() else []) if "steps_per_sec" in line]
    return float(np.median(rates)) * config.batch_size if rates else None


def feature_map(config: Config, workdir: Path, data: Data) -> tuple[str, Any]:
    """("fid", Inception features) with the weights, else ("proxy_frechet", the dataset classifier's features); on images in [0, 1]."""
    path = weights_path(config)
    if path is not None:
        from jaxlab.eval import inception_features, load_inception_variables

        variables = load_inception_variables(path)
        return "fid", lambda x01: inception_features(variables, x01, batch_size=100)
    params = images.cached_proxy_params(workdir / "eval" / "proxy_classifier.npz", data.images[:20_000], data.labels[:20_000], max(data.num_classes, 1))
    return "proxy_frechet", lambda x01: images.proxy_features(params, x01)


def evaluate(config: Config, workdir: Path, data: Data, entries: dict[str, tuple[Any, Any, tuple[int, ...]]]) -> tuple[dict[str, Any], dict]:
    """Fréchet distance, wall time and img/s per (method, steps); the samples by (method, steps)."""
    prefix, features = feature_map(config, workdir, data)
    if prefix == "fid" and config.fid_stats:
        from jaxlab.eval import load_statistics

        reference = load_statistics(config.fid_stats)
    else:
        reference = images.reference_statistics(
            workdir / "eval" / f"reference_{prefix}.npz", lambda: (features(images.to_unit(images_to_signed(x))) for x in data.reference())
        )
    results: dict[str, Any] = {"metric": prefix, "num_classes": data.num_classes, "eval_samples": config.eval_samples}
    samples = {}
    key = named_key(config.seed, "eval/sample")
    for name, (method, params, step_counts) in entries.items():
        for steps in step_counts:
            x, seconds = images.draw(method, params, key=key, num=config.eval_samples, steps=steps, chunk=config.sample_batch)
            samples[(name, steps)] = x
            results[f"{prefix}_{name}_{steps}"] = images.frechet_to_reference(features(images.to_unit(x)), reference)
            results[f"wall_{name}_{steps}"] = seconds
            results[f"sample_img_per_sec_{name}_{steps}"] = config.eval_samples / max(seconds, 1e-9)
    return results, samples


def run(config: Config, workdir: Path, *, progress: bool = True) -> dict[str, Any]:
    data = load_data(config)
    method, params, teacher = train_method(config, workdir, data, progress=progress)
    allowed = fewstep.allowed_steps(config.method, tuple(config.step_counts), config.shortcut.max_steps)
    entries: dict[str, tuple[Any, Any, tuple[int, ...]]] = {config.method: (method, params, allowed)}
    if teacher is not None:
        entries["teacher"] = (build("flow", config, data.num_classes)[0], teacher, (max(config.step_counts),))
    results, samples = evaluate(config, workdir, data, entries)
    results["train_img_per_sec"] = training_images_per_sec(config, workdir)
    proxy = results["metric"] != "fid"
    title = f"image-generation ({config.dataset}, DiT-{config.dit}, {config.dtype}): {'proxy Fréchet distance (not FID)' if proxy else 'FID'}"
    fewstep.write_tables(results, tuple(entries), tuple(config.step_counts), results["metric"], title, workdir)
    reference = next(data.reference())[:64]
    grids = {"data": images_to_signed(reference)} | {f"{name}, {steps} steps": x for (name, steps), x in samples.items()}
    images.plot_image_grids(grids, workdir / "samples.png", title=title)
    if is_writer():
        print((workdir / "fewstep_table.md").read_text())
    return results


def sample(config: Config, workdir: Path, *, num: int, steps: int | None = None, seed: int = 0) -> np.ndarray:
    """Images (num, r, r, 3) on [-1, 1] from the method's newest checkpoint (``steps`` or ``sample_steps``; SiD: 1)."""
    num_classes = images.NUM_SYNTHETIC_CLASSES if config.dataset == "synthetic" else 10 if config.dataset == "cifar10" else folder_classes(config)
    method, _ = build(config.method, config, num_classes)
    steps = steps if steps is not None else 1 if config.method == "sid" else config.sample_steps
    params = restore_params(Path(workdir) / config.method, sharding=replicated(make_mesh()))  # on a mesh the sampler splits rows over
    x, _ = images.draw(method, params, key=jax.random.key(seed), num=num, steps=steps, chunk=config.sample_batch)
    return x


def folder_classes(config: Config) -> int:
    """The class count of ``dataset=folder`` from its listing alone (nothing decoded)."""
    _, classes, _ = list_images(config.data_dir)
    return len(classes) if len(classes) > 1 else 0


def plot_samples(samples: np.ndarray, path: Path) -> None:
    images.plot_image_grids({"samples": samples}, path, per_panel=min(100, samples.shape[0]))


EXPERIMENTS = [
    Experiment(
        name="image-generation",
        description="DiT on images (synthetic, CIFAR-10, folder) with flow / shortcut / iCT / CD / SiD: FID (or a proxy) at 1/2/4/128 steps",
        config=Config(),
        run=run,
        sample=sample,
        plot_samples=plot_samples,
    )
]
