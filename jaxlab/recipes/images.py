"""Image generation with few-step methods: data, class conditioning, chunked sampling, Fréchet evaluation, grids.

The parts of ``image-generation`` that do not depend on its configuration:

* :func:`synthetic_images` — a fixed procedural set of coloured shapes on
  gradients in ten classes (five shapes × two palettes), generated
  deterministically in NumPy, so a model can learn something without a
  download;
* :class:`LabelConditioned` — class conditioning for the adapters whose
  networks take no labels (rectified flow, iCT, CD, SiD): each call closes
  the network over the batch's labels (dropped to the null label at
  ``label_dropout``, as classifier-free guidance trains), so the teacher, the
  student and SiD's fake score all see the same labels;
* :func:`draw` — samples in chunks with :func:`jaxlab.parallel.sharded_sampler`
  and the wall time of the chunks after compilation;
* the Fréchet distance of samples to the data: FID (Inception-v3 pool-3
  features, :mod:`jaxlab.eval.inception`) when the weights are present, else
  a *proxy* — the penultimate features of a small classifier trained on the
  dataset (:func:`train_proxy_features`), comparable only with itself.

References:
  Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge
  to a Local Nash Equilibrium" (FID); Ho, Salimans 2022, "Classifier-Free
  Diffusion Guidance" (label dropout, the null label); Peebles, Xie 2023,
  "Scalable Diffusion Models with Transformers" (class-conditional DiT).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.figure import Figure

from jaxlab.data import images_to_signed
from jaxlab.eval.fid import RunningStatistics, frechet_distance, load_statistics, save_npz_atomic, save_statistics
from jaxlab.parallel import sharded_sampler
from jaxlab.train import is_writer, save_figure

SHAPES = ("disc", "square", "ring", "bar", "stripes")
PALETTES = 2
NUM_SYNTHETIC_CLASSES = len(SHAPES) * PALETTES
PROXY_RECIPE = {"version": 1, "seed": 0, "hidden": 256, "features": 64, "steps": 400, "batch_size": 128, "learning_rate": 1e-3}


def synthetic_images(num: int, resolution: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``num`` procedural RGB images (num, r, r, 3) uint8 and their labels (num,) int32 in 0..9.

    Label c draws shape ``SHAPES[c % 5]`` in palette ``c // 5`` (warm on
    blue, cool on orange) over a linear two-colour gradient; position, size,
    gradient angle and colours vary per image. Edges are anti-aliased, so
    every resolution gives smooth images.
    """
    if num < 1 or resolution < 2:
        raise ValueError(f"num must be >= 1 and resolution >= 2, got num={num}, resolution={resolution}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num) % NUM_SYNTHETIC_CLASSES).astype(np.int32)
    grid = np.linspace(-1.0, 1.0, resolution, dtype=np.float32)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")  # (r, r)
    cx, cy = (rng.uniform(-0.3, 0.3, num).astype(np.float32)[:, None, None] for _ in range(2))
    size = rng.uniform(0.35, 0.6, num).astype(np.float32)[:, None, None]
    dx, dy = xx - cx, yy - cy  # (n, r, r)
    edge = resolution / 4.0  # anti-aliasing: a ramp about two pixels wide

    def inside(signed: np.ndarray) -> np.ndarray:  # signed distance > 0 inside -> soft mask in [0, 1]
        return np.clip(signed * edge + 0.5, 0.0, 1.0)

    radius = np.sqrt(dx**2 + dy**2)
    masks = np.stack(
        [
            inside(size - radius),
            inside(size - np.maximum(np.abs(dx), np.abs(dy))),
            inside(0.12 - np.abs(radius - size)),
            inside(np.minimum(size - np.abs(dx) * 0.5, 0.15 - np.abs(dy))),
            inside(size - radius) * inside(0.2 - np.abs(np.mod(dx + dy + 1.0, 0.5) - 0.25)),
        ]
    )  # (5, n, r, r)
    mask = masks[labels % len(SHAPES), np.arange(num)][..., None]  # (n, r, r, 1)
    palette = (labels // len(SHAPES))[:, None]  # (n, 1)
    jitter = rng.uniform(-0.1, 0.1, (num, 3)).astype(np.float32)
    foreground = np.where(palette == 0, [0.9, 0.35, 0.15], [0.15, 0.8, 0.65]) + jitter  # (n, 3)
    dark, light = np.where(palette == 0, [0.05, 0.1, 0.35], [0.45, 0.2, 0.05]), np.where(palette == 0, [0.4, 0.6, 0.9], [0.95, 0.75, 0.4])
    angle = rng.uniform(0.0, 2.0 * np.pi, num).astype(np.float32)[:, None, None]
    ramp = ((xx * np.cos(angle) + yy * np.sin(angle)) / np.sqrt(2.0) + 1.0)[..., None] / 2.0  # (n, r, r, 1) in [0, 1]
    background = dark[:, None, None] * (1.0 - ramp) + light[:, None, None] * ramp
    image = background * (1.0 - mask) + foreground[:, None, None] * mask
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8), labels


def to_unit(x: np.ndarray) -> np.ndarray:
    """Model outputs on [-1, 1] -> float32 on [0, 1], clipped (what the feature networks read)."""
    return np.clip((np.asarray(x, np.float32) + 1.0) / 2.0, 0.0, 1.0)


def drop_to_null(labels: jax.Array, *, key: jax.Array, rate: float, null_label: int) -> jax.Array:
    """Each label replaced by ``null_label`` with probability ``rate`` (classifier-free guidance's label dropout)."""
    return jnp.where(jax.random.bernoulli(key, rate, labels.shape), null_label, labels)


@dataclasses.dataclass(frozen=True)
class LabelConditioned:
    """A method adapter whose networks take no labels, made class-conditional on batches ``{"x", "label"}``.

    ``inner`` is built with networks that take ``labels=`` by keyword (a
    :class:`jaxlab.nn.DiT` with ``num_classes``); every call replaces the
    network fields it has (``apply_fn``, ``init_fn``, ``teacher_apply_fn``)
    by the same network closed over this batch's labels, so teacher,
    student and fake score agree. Labels are dropped to the null label
    ``num_classes`` at ``label_dropout`` during training; sampling draws
    labels uniformly (or takes ``labels``).

    Attributes:
      inner: the unconditional adapter (:class:`~jaxlab.generative.RectifiedFlow`, iCT, CD, SiD).
      num_classes: number of classes; label ``num_classes`` is the null label.
      label_dropout: probability of the null label in training.
    """

    inner: Any
    num_classes: int
    label_dropout: float = 0.1

    def with_labels(self, labels: jax.Array) -> Any:
        """``inner`` with every network field closed over ``labels`` (b,)."""
        fields = {f.name for f in dataclasses.fields(self.inner)}
        names = [name for name in ("apply_fn", "init_fn", "teacher_apply_fn") if name in fields and getattr(self.inner, name) is not None]
        return dataclasses.replace(self.inner, **{name: functools.partial(getattr(self.inner, name), labels=labels) for name in names})

    def _train_labels(self, batch: dict[str, jax.Array], key: jax.Array) -> jax.Array:
        if "label" not in batch:
            raise ValueError(f"a class-conditional method needs batch['label'], got keys {sorted(batch)}")
        return drop_to_null(batch["label"], key=key, rate=self.label_dropout, null_label=self.num_classes)

    def init(self, key: jax.Array, batch: dict[str, jax.Array], *, frozen: Any = None) -> Any:
        inner = self.with_labels(batch["label"])
        if "frozen" in _parameters(inner.init):  # SiD starts from the teacher
            return inner.init(key, {"x": batch["x"]}, frozen=frozen)
        return inner.init(key, {"x": batch["x"]})

    def loss(self, params: Any, batch: dict[str, jax.Array], *, key: jax.Array, ctx: Any) -> tuple[jax.Array, dict]:
        label_key, key = jax.random.split(key)
        return self.with_labels(self._train_labels(batch, label_key)).loss(params, {"x": batch["x"]}, key=key, ctx=ctx)

    def sample(self, params: Any, *, key: jax.Array, num: int, steps: int, labels: jax.Array | None = None) -> jax.Array:
        label_key, key = jax.random.split(key)
        labels = jax.random.randint(label_key, (num,), 0, self.num_classes) if labels is None else labels
        return self.with_labels(labels).sample(params, key=key, num=num, steps=steps)


@dataclasses.dataclass(frozen=True)
class LabelConditionedStep(LabelConditioned):
    """:class:`LabelConditioned` for adapters with their own ``train_step`` and ``init_opt_state`` (SiD)."""

    def init_opt_state(self, params: Any) -> Any:
        return self.inner.init_opt_state(params)

    def train_step(self, params: Any, opt_state: Any, batch: dict[str, jax.Array], *, key: jax.Array, ctx: Any) -> tuple[Any, Any, dict]:
        label_key, key = jax.random.split(key)
        inner = self.with_labels(self._train_labels(batch, label_key))
        return inner.train_step(params, opt_state, {"x": batch["x"]}, key=key, ctx=ctx)


def _parameters(fn: Callable) -> tuple[str, ...]:
    return tuple(inspect.signature(fn).parameters)


def label_conditioned(inner: Any, num_classes: int, label_dropout: float) -> LabelConditioned:
    """The wrapper that fits ``inner``: with ``train_step`` forwarded when it has one."""
    cls = LabelConditionedStep if callable(getattr(inner, "train_step", None)) else LabelConditioned
    return cls(inner, num_classes, label_dropout)


def draw(method: Any, params: Any, *, key: jax.Array, num: int, steps: int, chunk: int) -> tuple[np.ndarray, float]:
    """``num`` samples drawn ``chunk`` at a time (the last chunk cut), and the wall time (s) of all chunks after compilation.

    Each chunk is one jitted :func:`jaxlab.parallel.sharded_sampler` call
    (split over the parameters' mesh) with key ``fold_in(key, i)``.
    """
    chunk = max(1, min(chunk, num))
    sampler = sharded_sampler(lambda p, k: method.sample(p, key=k, num=chunk, steps=steps))
    sampler(params, jax.random.fold_in(key, 0))  # compile
    start = time.perf_counter()
    parts = [sampler(params, jax.random.fold_in(key, i)) for i in range(math.ceil(num / chunk))]
    return np.concatenate(parts)[:num], time.perf_counter() - start


def _proxy_forward(params: dict, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(features (n, k), logits (n, classes)) of flattened images (n, d) in [0, 1]."""
    h = jax.nn.silu(x @ params["hidden_w"] + params["hidden_b"])
    features = jax.nn.silu(h @ params["features_w"] + params["features_b"])
    return features, features @ params["logits_w"] + params["logits_b"]


def train_proxy_features(images: np.ndarray, labels: np.ndarray, num_classes: int, recipe: dict = PROXY_RECIPE) -> dict[str, np.ndarray]:
    """A small MLP classifier (d → hidden → features → classes, SiLU) trained on the dataset; a pure function of its inputs and the recipe.

    Minibatch AdamW, batches drawn with ``fold_in(key, step)``; its
    ``features``-wide penultimate layer is the proxy's feature map.
    """
    x = jnp.asarray(to_unit(images_to_signed(images)).reshape(images.shape[0], -1))  # (n, d) in [0, 1]
    y = jnp.asarray(labels)
    sizes = (x.shape[1], recipe["hidden"], recipe["features"], max(num_classes, 2))
    key = jax.random.key(recipe["seed"])
    params = {}
    for i, (name, fan_in, fan_out) in enumerate(zip(("hidden", "features", "logits"), sizes[:-1], sizes[1:])):
        params[f"{name}_w"] = jax.random.normal(jax.random.fold_in(key, i), (fan_in, fan_out)) / np.sqrt(fan_in)
        params[f"{name}_b"] = jnp.zeros(fan_out)
    optimizer = optax.adamw(recipe["learning_rate"], weight_decay=1e-4)
    batch = min(recipe["batch_size"], x.shape[0])

    def step(carry, i):
        p, state = carry
        index = jax.random.randint(jax.random.fold_in(jax.random.fold_in(key, 100), i), (batch,), 0, x.shape[0])

        def loss_fn(p):
            return optax.softmax_cross_entropy_with_integer_labels(_proxy_forward(p, x[index])[1], y[index]).mean()

        updates, state = optimizer.update(jax.grad(loss_fn)(p), state, p)
        return (optax.apply_updates(p, updates), state), None

    run = jax.jit(lambda p: jax.lax.scan(step, (p, optimizer.init(p)), jnp.arange(recipe["steps"]))[0][0])
    return {name: np.asarray(value) for name, value in run(params).items()}


def proxy_features(params: dict, images01: np.ndarray, *, batch_size: int = 1000) -> np.ndarray:
    """Proxy features (n, k) float32 of images (n, h, w, c) in [0, 1]."""
    forward = jax.jit(lambda p, x: _proxy_forward(p, x)[0])
    flat = np.asarray(images01, np.float32).reshape(images01.shape[0], -1)
    return np.concatenate([np.asarray(forward(params, flat[i : i + batch_size])) for i in range(0, flat.shape[0], batch_size)])


def cached_proxy_params(path: Path, images: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """The proxy classifier cached at ``path`` (trained and written, by process 0, on first use or when its recipe differs)."""
    recipe = np.asarray(sorted({**PROXY_RECIPE, "num_classes": num_classes}.items()), dtype=str)
    if path.exists():
        with np.load(path) as archive:
            if "recipe" in archive and np.array_equal(archive["recipe"], recipe):
                return {name: archive[name] for name in archive.files if name != "recipe"}
    params = train_proxy_features(images, labels, num_classes)
    if is_writer():
        save_npz_atomic(path, {**params, "recipe": recipe})
    return params


def reference_statistics(path: Path, feature_batches: Callable[[], Iterator[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) read from ``path``, else accumulated from ``feature_batches()`` and written there (process 0)."""
    if path.exists():
        return load_statistics(path)
    stats: RunningStatistics | None = None
    for features in feature_batches():
        stats = (RunningStatistics.empty(features.shape[1]) if stats is None else stats).update(features)
    if stats is None:
        raise ValueError(f"no reference images to compute {path.name} from")
    mu, sigma = stats.statistics()
    if is_writer():
        save_statistics(path, mu, sigma, count=stats.samples)
    return mu, sigma


def frechet_to_reference(features: np.ndarray, reference: tuple[np.ndarray, np.ndarray]) -> float:
    """Fréchet distance between the Gaussian of ``features`` (n, k) and the reference (mu, sigma)."""
    stats = RunningStatistics.empty(features.shape[1]).update(features)
    return frechet_distance(*stats.statistics(), *reference)


def _tile(images: np.ndarray, columns: int) -> np.ndarray:
    """(n, h, w, c) in [0, 1] -> one (rows·(h+1), columns·(w+1), c) image, white between tiles."""
    n, h, w, c = images.shape
    rows = math.ceil(n / columns)
    canvas = np.ones((rows * (h + 1), columns * (w + 1), c), np.float32)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        canvas[r * (h + 1) : r * (h + 1) + h, col * (w + 1) : col * (w + 1) + w] = image
    return canvas


def plot_image_grids(grids: dict[str, np.ndarray], path: Path, *, per_panel: int = 64, title: str = "") -> None:
    """One panel per entry of ``grids`` (title -> images (n, h, w, 3) on [-1, 1]), the first ``per_panel`` of each, to a PNG under ``title``."""
    fig = Figure(figsize=(3.2 * len(grids), 3.4 + 0.3 * bool(title)))
    if title:
        fig.suptitle(title, fontsize=10)
    axes = fig.subplots(1, len(grids), squeeze=False)
    for ax, (name, images) in zip(axes[0], grids.items(), strict=True):
        shown = to_unit(images[:per_panel])
        ax.imshow(_tile(shown, math.ceil(math.sqrt(shown.shape[0]))), interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=130)
