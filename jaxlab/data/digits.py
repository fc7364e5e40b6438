"""The 8 x 8 handwritten digits embedded in jaxlab (1797 images, 17 levels).

``digits.npz`` ships with the package, so experiments on real images run on a
laptop with no download. It is the test set of the UCI "Optical Recognition
of Handwritten Digits" data set by E. Alpaydin and C. Kaynak (1998), licensed
CC BY 4.0 (see ``DIGITS_ATTRIBUTION.txt`` next to this module). Each pixel
counts the "on" pixels of a 4 x 4 block of a 32 x 32 bitmap, so it takes one
of ``NUM_LEVELS = 17`` values 0..16; likelihoods on these digits are reported
in bits/dim over those 17 levels.

References:
  E. Alpaydin, C. Kaynak, "Optical Recognition of Handwritten Digits",
  UCI Machine Learning Repository, 1998.
"""

from __future__ import annotations

import functools
import importlib.resources

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab._checks import check_fraction, check_int

NUM_LEVELS = 17  # pixel values 0..16
NUM_CLASSES = 10
_MAX_LEVEL = NUM_LEVELS - 1


@functools.cache
def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """Loads the embedded digits (read once, then cached).

    Returns:
      ``(images, labels)``: uint8 array (1797, 8, 8) with values 0..16 and
      int32 array (1797,) with values 0..9. Both are read-only, since the
      cache shares them between callers; copy them before writing.
    """
    resource = importlib.resources.files("jaxlab.data").joinpath("digits.npz")
    with resource.open("rb") as file, np.load(file) as archive:
        images = archive["images"].astype(np.uint8)  # (1797, 8, 8)
        labels = archive["labels"].astype(np.int32)  # (1797,)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def digits_split(*, seed: int = 0, test_fraction: float = 0.2) -> dict[str, np.ndarray]:
    """Splits the digits into train and test sets, stratified by class.

    From each class, ``round(test_fraction * class_size)`` images chosen at
    random go to the test set and the rest to the train set; each set is then
    shuffled. The split is a pure function of ``(seed, test_fraction)``.

    Args:
      seed: non-negative integer seed of the NumPy generator.
      test_fraction: share of each class held out, strictly between 0 and 1.

    Returns:
      dict with ``train_images`` uint8 (n_train, 8, 8), ``train_labels``
      int32 (n_train,), ``test_images`` uint8 (n_test, 8, 8) and
      ``test_labels`` int32 (n_test,); the arrays are fresh, writable copies.

    Raises:
      ValueError: if ``seed`` or ``test_fraction`` is out of range.
    """
    seed = check_int("seed", seed, minimum=0)
    test_fraction = check_fraction("test_fraction", test_fraction)
    images, labels = load_digits()
    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for digit in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == digit))
        num_test = round(test_fraction * members.size)
        test_parts.append(members[:num_test])
        train_parts.append(members[num_test:])
    train_index = rng.permutation(np.concatenate(train_parts))
    test_index = rng.permutation(np.concatenate(test_parts))
    return {
        "train_images": images[train_index],
        "train_labels": labels[train_index],
        "test_images": images[test_index],
        "test_labels": labels[test_index],
    }


def digits_to_unit(images: jax.Array | np.ndarray) -> jax.Array:
    """Maps digit levels 0..16 linearly onto [-1, 1] (0 -> -1, 16 -> 1).

    Args:
      images: integer or float array of any shape with values in 0..16.

    Returns:
      float32 array of the same shape.
    """
    return jnp.asarray(images, jnp.float32) * (2.0 / _MAX_LEVEL) - 1.0


def unit_to_digits(x: jax.Array | np.ndarray) -> jax.Array:
    """Maps values on [-1, 1] back to the nearest digit level 0..16.

    The inverse of ``digits_to_unit`` on its image; other values are rounded
    to the nearest level and clipped to 0..16 (e.g. for model samples).

    Args:
      x: float array of any shape.

    Returns:
      uint8 array of the same shape with values 0..16.
    """
    levels = jnp.round((jnp.asarray(x, jnp.float32) + 1.0) * (_MAX_LEVEL / 2.0))
    return jnp.clip(levels, 0, _MAX_LEVEL).astype(jnp.uint8)
