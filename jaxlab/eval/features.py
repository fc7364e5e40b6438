"""A feature-Fréchet distance for the 8×8 digits: a *proxy* in the spirit of FID, not FID.

FID compares Inception-v3 features of real and generated images; there is no
Inception network for 8×8 digits, so jaxlab uses a small MLP classifier
(64 → 128 → 64 → 10, SiLU) trained on the digits' training split and takes
its 64-unit penultimate layer as the feature map. Numbers are comparable
only with each other (same classifier, same reference set), never with
published FIDs.

The classifier is trained deterministically from a fixed seed on first use
(full-batch Adam, a few seconds on a CPU) and cached as ``.npz`` in the
user's cache directory — ``$JAXLAB_CACHE``, else ``$XDG_CACHE_HOME/jaxlab``,
else ``~/.cache/jaxlab`` — never in the repository. A cached file whose
recipe differs (another version, seed or size) is ignored and retrained.

References:
  Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge
  to a Local Nash Equilibrium" (the Fréchet Inception Distance).
  Dowson, Landau 1982, "The Fréchet distance between multivariate normal distributions".
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlab.data import NUM_LEVELS, digits_split
from jaxlab.eval import fid
from jaxlab.eval.fid import save_npz_atomic

RECIPE = {"version": 1, "seed": 0, "hidden": 128, "features": 64, "steps": 300, "learning_rate": 3e-3, "weight_decay": 1e-4}
_FILE_NAME = "digits_features_v{version}_seed{seed}.npz"
_LAYERS = ("hidden", "features", "logits")


def cache_dir() -> Path:
    """``$JAXLAB_CACHE``, else ``$XDG_CACHE_HOME/jaxlab``, else ``~/.cache/jaxlab``."""
    if os.environ.get("JAXLAB_CACHE"):
        return Path(os.environ["JAXLAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "jaxlab"


def _check_images(images: np.ndarray | jax.Array) -> jax.Array:
    images = jnp.asarray(images)
    if images.ndim not in (3, 4) or images.shape[1:3] != (8, 8) or (images.ndim == 4 and images.shape[3] != 1):
        raise ValueError(f"images must have shape (n, 8, 8) or (n, 8, 8, 1) with levels 0..16, got {images.shape}")
    return images.reshape(images.shape[0], 64).astype(jnp.float32) / (NUM_LEVELS - 1)  # (n, 64) in [0, 1]


def _forward(params: dict, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(features (n, 64), logits (n, 10)) of inputs (n, 64) in [0, 1]."""
    h = jax.nn.silu(x @ params["hidden_w"] + params["hidden_b"])
    features = jax.nn.silu(h @ params["features_w"] + params["features_b"])
    return features, features @ params["logits_w"] + params["logits_b"]


def train_classifier(recipe: dict = RECIPE) -> dict[str, np.ndarray]:
    """Trains the feature classifier from scratch (pure function of the recipe); returns NumPy params."""
    split = digits_split(seed=recipe["seed"])
    x = _check_images(split["train_images"])
    y = jnp.asarray(split["train_labels"])
    sizes = (64, recipe["hidden"], recipe["features"], 10)
    keys = jax.random.split(jax.random.key(recipe["seed"]), len(_LAYERS))
    params = {}
    for name, key, fan_in, fan_out in zip(_LAYERS, keys, sizes[:-1], sizes[1:]):
        params[f"{name}_w"] = jax.random.normal(key, (fan_in, fan_out)) / np.sqrt(fan_in)
        params[f"{name}_b"] = jnp.zeros(fan_out)
    optimizer = optax.adamw(recipe["learning_rate"], weight_decay=recipe["weight_decay"])

    def loss_fn(p):
        return optax.softmax_cross_entropy_with_integer_labels(_forward(p, x)[1], y).mean()

    def step(carry, _):
        p, state = carry
        grads = jax.grad(loss_fn)(p)
        updates, state = optimizer.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), None

    (params, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, optimizer.init(p)), None, length=recipe["steps"]))(params)
    return {name: np.asarray(value) for name, value in params.items()}


@functools.lru_cache(maxsize=4)
def _load_classifier(directory: str) -> dict[str, np.ndarray]:
    path = Path(directory) / _FILE_NAME.format(**RECIPE)
    recipe = np.asarray(sorted(RECIPE.items()), dtype=str)
    if path.exists():
        with np.load(path) as archive:
            if "recipe" in archive and np.array_equal(archive["recipe"], recipe):
                return {name: archive[name] for name in archive.files if name != "recipe"}
    params = train_classifier(RECIPE)
    save_npz_atomic(path, {**params, "recipe": recipe})
    return params


def classifier_params(*, directory: str | Path | None = None) -> dict[str, np.ndarray]:
    """The cached classifier's parameters (trained and cached on first use)."""
    return _load_classifier(str(cache_dir() if directory is None else directory))


def digits_features(images, *, directory: str | Path | None = None) -> jax.Array:
    """Penultimate-layer features (n, 64) of digit images (n, 8, 8) with levels 0..16."""
    return _forward(classifier_params(directory=directory), _check_images(images))[0]


def classify_digits(images, *, directory: str | Path | None = None) -> jax.Array:
    """Predicted classes (n,) of digit images (n, 8, 8) with levels 0..16."""
    return jnp.argmax(_forward(classifier_params(directory=directory), _check_images(images))[1], axis=-1)


def frechet_distance(x: np.ndarray | jax.Array, y: np.ndarray | jax.Array) -> float:
    """Fréchet distance between Gaussians fitted to feature sets x (n, k) and y (m, k).

    :func:`jaxlab.eval.fid.frechet_distance` of their :func:`~jaxlab.eval.fid.feature_statistics`
    (float64, symmetric eigendecompositions).

    References:
      Dowson, Landau 1982; Heusel et al. 2017 (FID).
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(x.shape[0], y.shape[0]) < 2:
        raise ValueError(f"x and y must be (n, k) and (m, k) with n, m >= 2, got {x.shape} and {y.shape}")
    return fid.frechet_distance(*fid.feature_statistics(x), *fid.feature_statistics(y))


def digits_frechet_distance(images_a, images_b, *, directory: str | Path | None = None) -> float:
    """The digits feature-Fréchet proxy between two sets of (n, 8, 8) images with levels 0..16."""
    return frechet_distance(digits_features(images_a, directory=directory), digits_features(images_b, directory=directory))
