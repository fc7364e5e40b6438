"""Image data sets for generative models: a folder of image files, or arrays in memory (CIFAR-10).

:class:`ImageFolder` lists ``root/<class>/...`` (or a flat folder of images,
one class) in sorted order and decodes an image only when a batch asks for
it, with Pillow on a thread pool, converted to RGB and center-cropped to a
``resolution`` square the way ADM does (box-halve while the short side is at
least twice the target, bicubic to the target short side, then the central
square). Decoded images stay in memory, so the second epoch decodes nothing.

:func:`image_batches` turns an :class:`ImageFolder` or ``(images, labels)``
arrays (what :func:`jaxlab.data.load_cifar10` returns) into the trainer's
batch function ``step -> {"x": (b, r, r, 3) float32 on [-1, 1], "label": (b,)
int32}``: the order is :func:`jaxlab.data.epoch_permutation_batch` and the
random horizontal flips are a function of ``(seed, step)``, so a resumed run
replays the same batches. For a folder, ``"x"`` is an :class:`ImageRows`,
a lazy leaf that :func:`jaxlab.parallel.put_global_batch` indexes per device:
each process decodes only the rows of the devices it owns.

jaxlab never downloads data: the user puts the images on disk.

References:
  P. Dhariwal, A. Nichol, "Diffusion Models Beat GANs on Image Synthesis",
  NeurIPS 2021, arXiv:2105.05233 (ADM's center crop:
  ``guided_diffusion/image_datasets.py``, ``center_crop_arr``).
"""

from __future__ import annotations

import concurrent.futures
import os
import struct
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from jaxlab._checks import check_int
from jaxlab.data.batches import epoch_permutation_batch, steps_per_epoch

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# What Pillow raises on a file it cannot read as an image (UnidentifiedImageError
# and "image file is truncated" are OSErrors; some plugins raise SyntaxError or struct.error).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, struct.error, Image.DecompressionBombError)
# A tag mixed into the flips' seed so they are not the same stream as the epoch
# permutation, which seeds numpy with (seed, epoch).
_FLIP_STREAM = 0x666C6970  # "flip"
_LAYOUT = "put images at <root>/<class>/<name>.png (one folder per class) or directly in <root> (one class)"


def _is_image(path: Path) -> bool:
    # Hidden files include macOS "._name.jpg" resource forks, which are not images.
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def _images_under(folder: Path) -> list[Path]:
    """Every image file below ``folder`` (any depth, hidden folders skipped), sorted by relative path."""
    found = [p for p in folder.rglob("*") if _is_image(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def list_images(root: str | os.PathLike) -> tuple[tuple[Path, ...], tuple[str, ...], np.ndarray]:
    """The image files of a folder data set, in a fixed order.

    Args:
      root: a folder holding one subfolder per class (``root/<class>/...``,
        images at any depth inside it), or holding the images directly (one
        class, named after the folder). Extensions (any case):
        ``IMAGE_EXTENSIONS``; other and hidden files are ignored.

    Returns:
      ``(paths, classes, labels)``: the files sorted by class name then by
      path, the sorted class names, and int32 labels (n,) indexing ``classes``.

    Raises:
      FileNotFoundError: if ``root`` is not a folder; the message says where to put images.
      ValueError: if there are no images, or images both directly in ``root``
        and in class subfolders.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} not found: {_LAYOUT.replace('<root>', str(root))}. jaxlab never downloads data.")
    loose = sorted((p for p in root.iterdir() if _is_image(p)), key=lambda p: p.name)
    folders = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
    per_class = {folder.name: files for folder in folders if (files := _images_under(folder))}
    if loose and per_class:
        raise ValueError(
            f"image folder {root} holds images both directly ({loose[0].name}, ...) and in class subfolders ({', '.join(per_class)}); "
            f"{_LAYOUT.replace('<root>', str(root))}, not both."
        )
    if loose:
        per_class = {root.name: loose}
    if not per_class:
        raise ValueError(f"image folder {root} holds no images with an extension in {IMAGE_EXTENSIONS} (any case); {_LAYOUT.replace('<root>', str(root))}.")
    classes = tuple(per_class)
    paths = tuple(path for name in classes for path in per_class[name])
    labels = np.concatenate([np.full(len(per_class[name]), label, np.int32) for label, name in enumerate(classes)])  # (n,)
    return paths, classes, labels


def _center_crop_resize(image: Image.Image, resolution: int) -> np.ndarray:
    """ADM's ``center_crop_arr``: box-halve while the short side is >= 2·resolution, bicubic to it, central square."""
    while min(image.size) >= 2 * resolution:
        # Box-filtered halving first: one big bicubic step would alias (ADM's note on Pillow's reducing_gap).
        image = image.resize((image.width // 2, image.height // 2), resample=Image.Resampling.BOX)
    scale = resolution / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), resample=Image.Resampling.BICUBIC)
    pixels = np.asarray(image)  # (h, w, 3), min(h, w) == resolution
    top, left = (pixels.shape[0] - resolution) // 2, (pixels.shape[1] - resolution) // 2
    return np.ascontiguousarray(pixels[top : top + resolution, left : left + resolution])


def load_image(path: str | os.PathLike, *, resolution: int) -> np.ndarray:
    """Decodes one image file to a square RGB uint8 array.

    Grayscale and palette images are expanded to RGB; an alpha channel is
    dropped (not composited), as ADM does.

    Args:
      path: the image file.
      resolution: side of the square output, a positive int.

    Returns:
      uint8 array (resolution, resolution, 3).

    Raises:
      FileNotFoundError: if the file does not exist.
      ValueError: if ``resolution`` is not a positive int, or the file cannot
        be decoded (the message names the file).
    """
    resolution = check_int("resolution", resolution, minimum=1)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} not found.")
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")  # decodes the whole file here, inside the try
    except _DECODE_ERRORS as error:
        raise ValueError(f"image file {path} cannot be decoded ({type(error).__name__}: {error}); replace or delete it.") from error
    return _center_crop_resize(rgb, resolution)


def _check_header(path: Path) -> None:
    """Opens ``path``'s header (and, for PNG, checks its chunk checksums) without decoding the pixels."""
    try:
        with Image.open(path) as image:
            image.verify()
    except _DECODE_ERRORS as error:
        raise ValueError(f"image file {path} is not a readable image ({type(error).__name__}: {error}); replace or delete it.") from error


class ImageFolder:
    """A folder of image files, decoded lazily at one square resolution and kept in memory.

    Args:
      root: ``root/<class>/...`` or a flat folder of images (see :func:`list_images`).
      resolution: side of the square images, a positive int.
      threads: decoding threads; ``None`` for ``ThreadPoolExecutor``'s default
        (``min(32, cpu_count + 4)``), ``1`` decodes in the calling thread.
      cache: keep decoded images in memory (``n · resolution² · 3`` bytes once
        every image is decoded), so a later epoch decodes nothing.

    Attributes:
      root: the folder, as a ``Path``.
      resolution: the side of the images.
      paths: the image files, in label then path order.
      classes: the class names, sorted (the folder's own name for a flat folder).
      labels: int32 (n,) indices into ``classes``.

    Raises:
      FileNotFoundError: if ``root`` is not a folder.
      ValueError: for a bad ``resolution`` or ``threads``, or a folder without images.
    """

    def __init__(self, root: str | os.PathLike, *, resolution: int, threads: int | None = None, cache: bool = True):
        self.resolution = check_int("resolution", resolution, minimum=1)
        self.threads = None if threads is None else check_int("threads", threads, minimum=1)
        self.root = Path(root)
        self.paths, self.classes, self.labels = list_images(self.root)
        self.labels.flags.writeable = False
        self._cache: dict[int, np.ndarray] | None = {} if cache else None
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}, resolution={self.resolution}, {len(self)} images, {len(self.classes)} classes)"

    def _map(self, function: Callable[[Path], Any], paths: Iterable[Path]) -> list[Any]:
        """``function`` over ``paths`` in order, on the thread pool unless ``threads == 1``; the first error re-raises."""
        paths = list(paths)
        if self.threads == 1 or len(paths) <= 1:
            return [function(path) for path in paths]
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="jaxlab-images")
        return list(self._pool.map(function, paths))

    def _check_indices(self, indices: Any) -> np.ndarray:
        array = np.asarray(indices)
        if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
            raise ValueError(f"`indices` must be a 1-D integer array; got {array.dtype.name} of shape {array.shape}.")
        if array.size and (array.min() < 0 or array.max() >= len(self)):
            raise ValueError(f"`indices` must lie in [0, {len(self)}) for {self.root}; got values from {array.min()} to {array.max()}.")
        return array.astype(np.int64)

    def images(self, indices: Any) -> np.ndarray:
        """The images at ``indices`` (k,), decoding those not in the cache.

        Returns:
          uint8 array (k, resolution, resolution, 3).

        Raises:
          ValueError: for bad indices, or naming the file that cannot be decoded.
        """
        indices = self._check_indices(indices)

        def decode(path: Path) -> np.ndarray:
            return load_image(path, resolution=self.resolution)

        # One caller decodes at a time, so concurrent batches never decode the same image twice.
        with self._lock:
            if self._cache is None:
                unique, inverse = np.unique(indices, return_inverse=True)
                decoded = self._map(decode, (self.paths[i] for i in unique))
                return np.stack(decoded)[inverse] if decoded else self._empty()
            missing = [int(i) for i in np.unique(indices) if int(i) not in self._cache]
            for i, image in zip(missing, self._map(decode, (self.paths[i] for i in missing)), strict=True):
                self._cache[i] = image
            return np.stack([self._cache[int(i)] for i in indices]) if indices.size else self._empty()

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.resolution, self.resolution, 3), np.uint8)

    def verify(self, *, decode: bool = False) -> None:
        """Checks every file up front, so a run fails before it compiles anything.

        Args:
          decode: ``False`` opens each file's header (and checks PNG
            checksums): fast, catches files that are not images, but not every
            truncated JPEG. ``True`` decodes every image (filling the cache).

        Raises:
          ValueError: naming the first file that fails.
        """
        if decode:
            self.images(np.arange(len(self)))
        else:
            self._map(_check_header, self.paths)


def flip_mask(batch_size: int, *, seed: int, step: int) -> np.ndarray:
    """Which rows of the batch at ``step`` are mirrored: each with probability 1/2, a pure function of ``(seed, step)``.

    Returns:
      bool array (batch_size,).
    """
    batch_size = check_int("batch_size", batch_size, minimum=1)
    rng = np.random.default_rng((check_int("seed", seed, minimum=0), check_int("step", step, minimum=0), _FLIP_STREAM))
    return rng.random(batch_size) < 0.5


def flip_horizontal(images: np.ndarray, flips: np.ndarray | None) -> np.ndarray:
    """Mirrors left-right the images (k, h, w, c) whose entry of ``flips`` (k,) is true (``None``: none)."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"`images` must have shape (k, h, w, c); got {images.shape}.")
    if flips is None:
        return images
    flips = np.asarray(flips)
    if flips.dtype != np.bool_ or flips.shape != images.shape[:1]:
        raise ValueError(f"`flips` must be a bool array ({images.shape[0]},) matching `images`; got {flips.dtype.name} {flips.shape}.")
    return np.where(flips[:, None, None, None], images[:, :, ::-1], images)


def images_to_signed(images: np.ndarray) -> np.ndarray:
    """uint8 pixels 0..255 to float32 on [-1, 1] (0 -> -1, 255 -> 1)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"`images` must be uint8 pixels 0..255; got dtype {images.dtype.name}.")
    return images.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def signed_to_images(x: Any) -> np.ndarray:
    """float on [-1, 1] (e.g. samples) back to uint8 pixels, rounded and clipped; inverts :func:`images_to_signed`."""
    x = np.asarray(x, np.float32)
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


class ImageRows:
    """A lazy batch leaf: float32 (b, r, r, 3) on [-1, 1] that decodes only the rows it is indexed by.

    It has ``shape``, ``dtype`` and ``ndim`` like an array;
    ``rows[index]`` (an int, slice or index array on the leading axis, then
    any basic indices) decodes just the rows selected, and ``np.asarray(rows)``
    decodes them all. :func:`jaxlab.parallel.put_global_batch` places such a
    leaf without materializing it, so each process decodes only its rows.

    Args:
      folder: the images.
      indices: int (b,) rows of ``folder`` forming the batch.
      flips: bool (b,) rows to mirror left-right (:func:`flip_mask`), or ``None``.
    """

    def __init__(self, folder: ImageFolder, indices: Any, *, flips: np.ndarray | None = None):
        self.folder = folder
        self.indices = folder._check_indices(indices)
        if flips is not None:
            flips = np.asarray(flips)
            if flips.dtype != np.bool_ or flips.shape != self.indices.shape:
                raise ValueError(f"`flips` must be a bool array {self.indices.shape} matching `indices`; got {flips.dtype.name} {flips.shape}.")
        self.flips = flips
        self.shape: tuple[int, ...] = (self.indices.size, folder.resolution, folder.resolution, 3)
        self.dtype = np.dtype(np.float32)
        self.ndim = 4

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ImageRows(shape={self.shape}, dtype={self.dtype.name}, folder={self.folder!r})"

    def _rows(self, positions: np.ndarray) -> np.ndarray:
        """The batch rows at ``positions`` (k,) as float32 (k, r, r, 3)."""
        images = self.folder.images(self.indices[positions])
        return images_to_signed(flip_horizontal(images, None if self.flips is None else self.flips[positions]))

    def __getitem__(self, index: Any) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        if not index or any(part is Ellipsis or part is None for part in index):
            return np.asarray(self)[index]  # rare forms: materialize rather than re-implement numpy's indexing
        positions = np.arange(len(self))[index[0]]  # () for an int, (k,) for a slice or an index array
        rows = self._rows(positions.reshape(-1)).reshape(positions.shape + self.shape[1:])
        return rows[(slice(None),) * positions.ndim + index[1:]]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        everything = self._rows(np.arange(len(self)))
        return everything if dtype is None else everything.astype(dtype)


def _check_arrays(source: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` as uint8 (n, h, w, c) and int32 (n,); (n, h, w) images get a channel axis (MNIST)."""
    if not (isinstance(source, tuple | list) and len(source) == 2):
        raise ValueError(f"`source` must be an ImageFolder or an (images, labels) pair like load_cifar10's; got {type(source).__name__}.")
    images, labels = np.asarray(source[0]), np.asarray(source[1])
    images = images[..., None] if images.ndim == 3 else images
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"`source` images must be uint8 (n, h, w, c) or (n, h, w); got {images.dtype.name} {np.shape(source[0])}.")
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != images.shape[:1]:
        raise ValueError(f"`source` labels must be integers ({images.shape[0]},) matching the images; got {labels.dtype.name} {labels.shape}.")
    return images, labels.astype(np.int32)


def image_batches(
    source: ImageFolder | tuple[np.ndarray, np.ndarray], batch_size: int, *, seed: int, flip: bool = True, labels: bool = True
) -> Callable[[int], dict[str, Any]]:
    """The batch function of an image data set: ``step -> {"x": ..., "label": ...}``, a pure function of ``(seed, step)``.

    Args:
      source: an :class:`ImageFolder`, or ``(images, labels)`` arrays in
        memory: uint8 (n, h, w, c) (or (n, h, w), given a channel axis) and
        integer (n,), e.g. ``load_cifar10(data_dir)``.
      batch_size: the global batch size, at most the number of images.
      seed: non-negative seed of the order and the flips.
      flip: mirror each image left-right with probability 1/2 (:func:`flip_mask`).
      labels: include ``"label"`` in the batch.

    Returns:
      ``batches(step)`` giving ``{"x": float32 (b, h, w, c) on [-1, 1],
      "label": int32 (b,)}``, the rows of
      :func:`jaxlab.data.epoch_permutation_batch`. For a folder ``"x"`` is an
      :class:`ImageRows` (decoded when indexed); for arrays, a numpy array.

    Raises:
      ValueError: for a malformed ``source`` or an out-of-range argument.
    """
    if isinstance(source, ImageFolder):
        folder, all_labels = source, source.labels

        def rows(indices: np.ndarray, flips: np.ndarray | None) -> Any:
            return ImageRows(folder, indices, flips=flips)
    else:
        images, all_labels = _check_arrays(source)

        def rows(indices: np.ndarray, flips: np.ndarray | None) -> Any:
            return images_to_signed(flip_horizontal(images[indices], flips))

    num_examples = len(all_labels)
    steps_per_epoch(num_examples, batch_size)  # validates batch_size now, not at the first step
    seed = check_int("seed", seed, minimum=0)

    def batches(step: int) -> dict[str, Any]:
        indices = epoch_permutation_batch(num_examples, batch_size, seed=seed, step=step)  # (b,)
        x = rows(indices, flip_mask(batch_size, seed=seed, step=step) if flip else None)
        return {"x": x, "label": all_labels[indices]} if labels else {"x": x}

    return batches
