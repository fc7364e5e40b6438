"""The FID Inception-v3 (pool-3, 2048 features) in Flax Linen, and its weights from a local ``.npz``.

The network is the one FID is defined with: TensorFlow's 2015-12-05
Inception-v3 graph as pytorch-fid ports it, which differs from the
ImageNet Inception-v3 of torchvision in its weights and in three places:
the 3×3 average pools of the A, C and first E blocks (``Mixed_5*``,
``Mixed_6b``–``e``, ``Mixed_7b``) average over the real pixels only (padding
not counted, as TensorFlow pools), and the last E block (``Mixed_7c``) pools
its pool branch with a 3×3 *max* pool. Images are resized to 299×299
bilinearly (half-pixel centres, no antialiasing, as ``F.interpolate``) and
scaled from [0, 1] to [-1, 1]; the features are the global average of the
last block (2048 per image). Layer names follow the PyTorch state dict, so
``Mixed_6b.branch7x7_2.conv.weight`` is ``params/Mixed_6b/branch7x7_2/conv/kernel``.

Weights: nothing is downloaded. Convert pytorch-fid's public weights file
``pt_inception-2015-12-05-6726825d.pth`` (its GitHub release ``fid_weights``)
once, with PyTorch installed (torch is needed for this step only)::

    python -c "import jaxlab.eval.inception as i; i.convert_torch_weights('pt_inception-2015-12-05-6726825d.pth')"

which writes :func:`default_weights_path` (``$JAXLAB_CACHE``, else
``$XDG_CACHE_HOME/jaxlab``, else ``~/.cache/jaxlab``, then
``fid_inception_v3_2015-12-05.npz``); pass another path as a second argument
and to :func:`load_inception_variables`.

References:
  Szegedy, Vanhoucke, Ioffe, Shlens, Wojna 2015, "Rethinking the Inception
  Architecture for Computer Vision", arXiv:1512.00567 (Inception-v3).
  Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge
  to a Local Nash Equilibrium", arXiv:1706.08500 (FID and its network).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax import Array

from jaxlab.eval.features import cache_dir
from jaxlab.eval.fid import RunningStatistics, save_npz_atomic
from jaxlab.nn.sharding import BATCH, EMBED, HEIGHT, WIDTH, constrain

INPUT_SIZE = 299
FEATURES = 2048
WEIGHTS_FILE = "fid_inception_v3_2015-12-05.npz"
TORCH_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
CONVERT_COMMAND = "python -c \"import jaxlab.eval.inception as i; i.convert_torch_weights('{source}'{out})\""
IMAGE = (BATCH, HEIGHT, WIDTH, EMBED)  # (n, h, w, c)


def default_weights_path() -> Path:
    """Where :func:`load_inception_variables` looks by default: ``cache_dir() / WEIGHTS_FILE``."""
    return cache_dir() / WEIGHTS_FILE


class ConvBN(nn.Module):
    """Convolution without bias → BatchNorm (running statistics, eps 1e-3) → ReLU (PyTorch's ``BasicConv2d``)."""

    features: int
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: tuple[int, int] = (0, 0)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        pad = tuple((p, p) for p in self.padding)
        x = nn.Conv(self.features, self.kernel, strides=self.stride, padding=pad, use_bias=False, dtype=self.dtype, name="conv")(x)
        # Flax normalizes in float32 (the float32 statistics promote x) and casts the result to dtype.
        return nn.relu(nn.BatchNorm(use_running_average=True, epsilon=1e-3, dtype=self.dtype, name="bn")(x))


def _avg_pool_3x3(x: Array) -> Array:
    """3×3, stride 1, padding 1, averaging over real pixels only (TensorFlow's pool; PyTorch's ``count_include_pad=False``)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x: Array, stride: int = 1) -> Array:
    padding = ((1, 1), (1, 1)) if stride == 1 else "VALID"
    return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=padding)


class BlockA(nn.Module):
    """35×35 block: 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg-pool→1×1 (``Mixed_5b``–``d``)."""

    pool_features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        conv = functools.partial(ConvBN, dtype=self.dtype)
        b1 = conv(64, name="branch1x1")(x)
        b5 = conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(conv(48, name="branch5x5_1")(x))
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(conv(64, name="branch3x3dbl_1")(x))
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        pool = conv(self.pool_features, name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, pool], axis=-1)


class BlockB(nn.Module):
    """35×35 → 17×17 reduction: 3×3/2 | 1×1→3×3→3×3/2 | max-pool/2 (``Mixed_6a``)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        conv = functools.partial(ConvBN, dtype=self.dtype)
        b3 = conv(384, (3, 3), stride=2, name="branch3x3")(x)
        dbl = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(conv(64, name="branch3x3dbl_1")(x))
        dbl = conv(96, (3, 3), stride=2, name="branch3x3dbl_3")(dbl)
        return jnp.concatenate([b3, dbl, _max_pool_3x3(x, stride=2)], axis=-1)


class BlockC(nn.Module):
    """17×17 block with factorized 7×7 convolutions (1×7, 7×1) and an avg-pool branch (``Mixed_6b``–``e``)."""

    channels_7x7: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        conv, c7 = functools.partial(ConvBN, dtype=self.dtype), self.channels_7x7
        row = functools.partial(conv, kernel=(1, 7), padding=(0, 3))
        col = functools.partial(conv, kernel=(7, 1), padding=(3, 0))
        b1 = conv(192, name="branch1x1")(x)
        b7 = row(c7, name="branch7x7_2")(conv(c7, name="branch7x7_1")(x))
        b7 = col(192, name="branch7x7_3")(b7)
        dbl = conv(c7, name="branch7x7dbl_1")(x)
        for index, (features, shaped) in enumerate([(c7, col), (c7, row), (c7, col), (192, row)], start=2):
            dbl = shaped(features, name=f"branch7x7dbl_{index}")(dbl)
        pool = conv(192, name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, dbl, pool], axis=-1)


class BlockD(nn.Module):
    """17×17 → 8×8 reduction: 1×1→3×3/2 | 1×1→1×7→7×1→3×3/2 | max-pool/2 (``Mixed_7a``)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        conv = functools.partial(ConvBN, dtype=self.dtype)
        b3 = conv(320, (3, 3), stride=2, name="branch3x3_2")(conv(192, name="branch3x3_1")(x))
        b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(conv(192, name="branch7x7x3_1")(x))
        b7 = conv(192, (3, 3), stride=2, name="branch7x7x3_4")(conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7))
        return jnp.concatenate([b3, b7, _max_pool_3x3(x, stride=2)], axis=-1)


class BlockE(nn.Module):
    """8×8 block with split 1×3 / 3×1 outputs; the FID graph max-pools the pool branch of its last one (``Mixed_7b``, ``Mixed_7c``)."""

    max_pool: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        conv = functools.partial(ConvBN, dtype=self.dtype)
        row = functools.partial(conv, kernel=(1, 3), padding=(0, 1))
        col = functools.partial(conv, kernel=(3, 1), padding=(1, 0))
        b1 = conv(320, name="branch1x1")(x)
        b3 = conv(384, name="branch3x3_1")(x)
        b3 = jnp.concatenate([row(384, name="branch3x3_2a")(b3), col(384, name="branch3x3_2b")(b3)], axis=-1)
        dbl = conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(conv(448, name="branch3x3dbl_1")(x))
        dbl = jnp.concatenate([row(384, name="branch3x3dbl_3a")(dbl), col(384, name="branch3x3dbl_3b")(dbl)], axis=-1)
        pool = conv(192, name="branch_pool")(_max_pool_3x3(x) if self.max_pool else _avg_pool_3x3(x))
        return jnp.concatenate([b1, b3, dbl, pool], axis=-1)


def preprocess(images: Array) -> Array:
    """Images (n, h, w, c) in [0, 1] → (n, 299, 299, c) float32 in [-1, 1].

    Bilinear with half-pixel centres and no antialiasing when shrinking:
    PyTorch's ``F.interpolate(..., mode="bilinear", align_corners=False)``,
    which pytorch-fid's reference statistics were computed with.
    """
    n, _, _, channels = images.shape
    x = jax.image.resize(images.astype(jnp.float32), (n, INPUT_SIZE, INPUT_SIZE, channels), "bilinear", antialias=False)
    return 2.0 * x - 1.0


class FIDInceptionV3(nn.Module):
    """FID's Inception-v3 up to pool-3: images (n, h, w, 3) in [0, 1] → features (n, 2048) float32.

    Attributes:
      dtype: compute dtype. FID numbers are comparable only in float32 (the
        default); bfloat16 is for quick relative comparisons.
    """

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: Array) -> Array:
        x = preprocess(images).astype(self.dtype)
        conv = functools.partial(ConvBN, dtype=self.dtype)
        x = conv(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)  # 149²
        x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)  # 147²
        x = _max_pool_3x3(conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x), stride=2)  # 73²
        x = conv(80, name="Conv2d_3b_1x1")(x)
        x = constrain(_max_pool_3x3(conv(192, (3, 3), name="Conv2d_4a_3x3")(x), stride=2), IMAGE)  # 35²
        for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = constrain(BlockA(pool_features, self.dtype, name=name)(x), IMAGE)
        x = constrain(BlockB(self.dtype, name="Mixed_6a")(x), IMAGE)  # 17²
        for name, channels_7x7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = constrain(BlockC(channels_7x7, self.dtype, name=name)(x), IMAGE)
        x = constrain(BlockD(self.dtype, name="Mixed_7a")(x), IMAGE)  # 8²
        x = constrain(BlockE(False, self.dtype, name="Mixed_7b")(x), IMAGE)
        x = constrain(BlockE(True, self.dtype, name="Mixed_7c")(x), IMAGE)
        return constrain(jnp.mean(x.astype(jnp.float32), axis=(1, 2)), (BATCH, EMBED))


@functools.cache
def inception_variable_shapes() -> dict[str, jax.ShapeDtypeStruct]:
    """The network's variables as flat ``"collection/module/.../leaf"`` names → shapes (no computation)."""
    abstract = jax.eval_shape(FIDInceptionV3().init, jax.random.key(0), jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))
    return traverse_util.flatten_dict(abstract, sep="/")


# (collection, layer, Flax leaf) ↔ the PyTorch state-dict suffix of that ConvBN layer.
_TORCH_SUFFIX = {
    ("params", "conv", "kernel"): "conv.weight",
    ("params", "bn", "scale"): "bn.weight",
    ("params", "bn", "bias"): "bn.bias",
    ("batch_stats", "bn", "mean"): "bn.running_mean",
    ("batch_stats", "bn", "var"): "bn.running_var",
}
_TORCH_UNUSED = ("fc.weight", "fc.bias")  # the 1008-way ImageNet classifier after pool-3


def torch_name(name: str) -> str:
    """The PyTorch state-dict key of a flat Flax variable name (``params/Mixed_5b/branch1x1/conv/kernel`` → ``Mixed_5b.branch1x1.conv.weight``)."""
    collection, *modules, layer, leaf = name.split("/")
    return ".".join([*modules, _TORCH_SUFFIX[collection, layer, leaf]])


def convert_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """pytorch-fid's Inception state dict (name → array) → flat float32 Flax variables, as the weights ``.npz`` stores them.

    Convolution kernels go from (out, in, h, w) to (h, w, in, out). The
    classifier (``fc.*``) and BatchNorm's ``num_batches_tracked`` are dropped.

    Raises:
      ValueError: a missing or unexpected entry, or a shape that does not match the network.
    """
    converted, missing = {}, []
    for name, shape in inception_variable_shapes().items():
        key = torch_name(name)
        if key not in state_dict:
            missing.append(key)
            continue
        value = np.asarray(state_dict[key], np.float32)
        value = value.transpose(2, 3, 1, 0) if name.endswith("/kernel") else value
        if value.shape != shape.shape:
            raise ValueError(f"state dict entry {key} has shape {np.shape(state_dict[key])}, which does not fit {name} {shape.shape}")
        converted[name] = value
    used = {torch_name(name) for name in converted}
    unexpected = sorted(k for k in state_dict if k not in used and k not in _TORCH_UNUSED and not k.endswith(".num_batches_tracked"))
    if missing or unexpected:
        raise ValueError(f"not pytorch-fid's FID Inception state dict: missing {missing[:5]} ({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})")
    return converted


def convert_torch_weights(source: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Converts pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` into the ``.npz`` this module loads; returns its path.

    Needs PyTorch, for this one-off step only (imported here, not by jaxlab).
    ``out`` defaults to :func:`default_weights_path`.
    """
    try:
        import torch  # type: ignore[import-not-found]
    except ImportError as error:
        raise ImportError("converting the .pth weights needs PyTorch (pip install torch), for this one step only") from error
    state_dict = torch.load(source, map_location="cpu", weights_only=True)
    out = default_weights_path() if out is None else Path(out)
    save_npz_atomic(out, convert_state_dict({key: value.numpy() for key, value in state_dict.items()}))
    return out


def save_inception_variables(variables: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Writes the network's variables (``{"params", "batch_stats"}``) as the weights ``.npz`` (flat names, float32)."""
    flat = traverse_util.flatten_dict(dict(variables), sep="/")
    save_npz_atomic(path, {name: np.asarray(value, np.float32) for name, value in flat.items()})


def load_inception_variables(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The network's variables ``{"params", "batch_stats"}`` from a weights ``.npz`` (default :func:`default_weights_path`).

    Raises:
      FileNotFoundError: no file at ``path``; the message says how to make it.
      ValueError: the file's names or shapes are not the network's.
    """
    path = default_weights_path() if path is None else Path(path)
    if not path.is_file():
        out = "" if path == default_weights_path() else f", {str(path)!r}"
        raise FileNotFoundError(
            f"FID Inception weights not found at {path}. Download pytorch-fid's {TORCH_WEIGHTS_FILE} (GitHub release 'fid_weights' "
            f"of mseitzer/pytorch-fid) and convert it once (needs torch): {CONVERT_COMMAND.format(source=TORCH_WEIGHTS_FILE, out=out)}"
        )
    expected = inception_variable_shapes()
    with np.load(path) as archive:
        flat = {name: archive[name] for name in archive.files}
    missing, unexpected = sorted(expected.keys() - flat.keys()), sorted(flat.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(f"{path} is not an FID Inception weights file: missing {missing[:5]} ({len(missing)}), unexpected {unexpected[:5]}")
    for name, shape in expected.items():
        if flat[name].shape != shape.shape:
            raise ValueError(f"{path}: {name} has shape {flat[name].shape}, expected {shape.shape}")
    return traverse_util.unflatten_dict({name: jnp.asarray(value, jnp.float32) for name, value in flat.items()}, sep="/")


@functools.partial(jax.jit, static_argnames="dtype")
def _features(variables: Mapping[str, Any], images: Array, dtype: Any) -> Array:
    features: Array = FIDInceptionV3(dtype).apply(variables, images)  # type: ignore[assignment]
    return features


def _check_images(images) -> np.ndarray:
    """(n, h, w, 3) float32 in [0, 1] from uint8 0..255 or floats in [0, 1], grey (n, h, w[, 1]) repeated to RGB."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"images must be (n, h, w), (n, h, w, 1) or (n, h, w, 3) with n >= 1, got shape {images.shape}")
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 255.0
    elif np.issubdtype(images.dtype, np.floating):
        if images.min() < 0.0 or images.max() > 1.0:
            raise ValueError(f"float images must lie in [0, 1] (uint8 images in 0..255), got range [{images.min():.3g}, {images.max():.3g}]")
        images = images.astype(np.float32)
    else:
        raise TypeError(f"images must be uint8 (0..255) or float in [0, 1], got dtype {images.dtype}")
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def inception_features(variables: Mapping[str, Any], images, *, batch_size: int = 50, dtype: Any = jnp.float32) -> np.ndarray:
    """Pool-3 features (n, 2048) float32 of images (n, h, w[, c]): uint8 0..255 or float in [0, 1], grey or RGB.

    Runs the network ``batch_size`` images at a time; the last batch is
    padded to ``batch_size`` so one image size compiles once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size}")
    images = _check_images(images)
    out = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        padded = np.pad(batch, ((0, batch_size - batch.shape[0]), (0, 0), (0, 0), (0, 0)))
        out.append(np.asarray(_features(variables, padded, dtype))[: batch.shape[0]])
    return np.concatenate(out)


def inception_statistics(variables: Mapping[str, Any], batches: Iterable, *, batch_size: int = 50, dtype: Any = jnp.float32) -> RunningStatistics:
    """FID statistics of a stream of image batches (see :func:`inception_features`); ``.statistics()`` gives (mu, sigma)."""
    stats = RunningStatistics.empty(FEATURES)
    for images in batches:
        stats = stats.update(inception_features(variables, images, batch_size=batch_size, dtype=dtype))
    return stats
