"""Loaders for image data sets kept by the user on disk (MNIST, CIFAR-10).

jaxlab never downloads data. The user obtains the files once and passes the
folder that holds them as ``data_dir``; a missing file raises a
``FileNotFoundError`` that says which file names belong where and which data
set they come from. Malformed files raise a ``ValueError`` naming the file.

References:
  Y. LeCun, C. Cortes, C. J. C. Burges, "The MNIST database of handwritten
  digits" (IDX file format).
  A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images",
  2009 (CIFAR-10 and its binary version).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

# IDX type codes (third magic byte) and the big-endian dtypes they denote.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MNIST_SOURCE = (
    "They are the MNIST database of handwritten digits (Y. LeCun, C. Cortes, C. J. C. Burges), "
    "published at http://yann.lecun.com/exdb/mnist/ and on many mirrors; Fashion-MNIST files, "
    "which have the same names and format, work too. jaxlab never downloads data."
)

_CIFAR_FOLDER = "cifar-10-batches-bin"
_CIFAR_FILES = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}
_CIFAR_RECORD_BYTES = 1 + 3 * 32 * 32  # label byte, then the image as (channel, row, column)
_CIFAR_SOURCE = (
    "That folder is what the archive cifar-10-binary.tar.gz (the binary version of CIFAR-10, A. Krizhevsky, "
    "2009, from https://www.cs.toronto.edu/~kriz/cifar.html) unpacks to. jaxlab never downloads data."
)


def _check_split(split: str, files: Mapping[str, tuple[str, ...]]) -> None:
    if split not in files:
        raise ValueError(f"`split` must be one of {sorted(files)}; got {split!r}.")


def parse_idx(raw: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Parses the bytes of an IDX file into an array.

    An IDX file starts with the magic bytes ``00 00 <type> <ndim>``, then
    ``ndim`` big-endian uint32 dimensions, then the values, big-endian and
    row-major.

    Args:
      raw: the file's bytes (already decompressed).
      source: the file's name, used in error messages.

    Returns:
      array of shape ``dims`` in native byte order.

    Raises:
      ValueError: if the magic bytes are wrong or the size disagrees with the
        header.
    """
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{source} is not an IDX file: its magic bytes must be 00 00 <type> <ndim> with <type> one of "
            f"{', '.join(f'{code:02x}' for code in _IDX_DTYPES)}; got {raw[:4].hex(' ') or 'an empty file'}."
        )
    ndim = raw[3]
    header_bytes = 4 + 4 * ndim
    if len(raw) < header_bytes:
        raise ValueError(f"{source} is truncated: its header announces {ndim} dimensions but the file has {len(raw)} bytes.")
    dims = struct.unpack(f">{ndim}I", raw[4:header_bytes])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected_bytes = header_bytes + math.prod(dims) * dtype.itemsize
    if len(raw) != expected_bytes:
        raise ValueError(
            f"{source} is malformed: its header promises shape {dims} of {dtype.name} ({expected_bytes} bytes in all) but the file has {len(raw)} bytes."
        )
    values = np.frombuffer(raw, dtype, offset=header_bytes).reshape(dims)
    return values.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file, gzipped if its name ends in ``.gz``.

    Args:
      path: the file.

    Returns:
      the array it holds (see ``parse_idx``).

    Raises:
      FileNotFoundError: if the file does not exist.
      ValueError: if the file is not a well-formed (gzipped) IDX file.
    """
    path = Path(path)
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as file:
                raw = file.read()
        except (gzip.BadGzipFile, EOFError) as error:
            raise ValueError(f"{path} is not a valid gzip file: {error}.") from error
    else:
        raw = path.read_bytes()
    return parse_idx(raw, source=str(path))


def _find_mnist_file(data_dir: Path, name: str, split: str) -> Path:
    """The path of ``name`` or ``name.gz`` in ``data_dir``."""
    for candidate in (data_dir / name, data_dir / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    expected = ", ".join(_MNIST_FILES["train"] + _MNIST_FILES["test"])
    raise FileNotFoundError(
        f"MNIST {split} file not found: expected {data_dir / name} (or the same name with .gz). "
        f"Put the four MNIST IDX files ({expected}; raw or gzipped) directly in {data_dir}. {_MNIST_SOURCE}"
    )


def load_mnist(data_dir: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Loads MNIST (or Fashion-MNIST) from its IDX files in ``data_dir``.

    Args:
      data_dir: folder holding ``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
        ``t10k-labels-idx1-ubyte``, each optionally gzipped (``.gz``).
      split: ``"train"`` or ``"test"`` (the t10k files).

    Returns:
      ``(images, labels)``: uint8 array (n, 28, 28) and int32 array (n,).

    Raises:
      FileNotFoundError: if a file is missing; the message says what to put where.
      ValueError: if ``split`` is unknown or a file is malformed.

    References:
      Y. LeCun, C. Cortes, C. J. C. Burges, "The MNIST database of
      handwritten digits".
    """
    _check_split(split, _MNIST_FILES)
    data_dir = Path(data_dir)
    image_path, label_path = (_find_mnist_file(data_dir, name, split) for name in _MNIST_FILES[split])
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{image_path} must hold uint8 images (n, 28, 28); got {images.dtype.name} {images.shape}.")
    if labels.dtype != np.uint8 or labels.shape != images.shape[:1]:
        raise ValueError(f"{label_path} must hold uint8 labels ({images.shape[0]},) to match {image_path.name}; got {labels.dtype.name} {labels.shape}.")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{label_path} must hold labels 0..9; got a label {labels.max()}.")
    return images, labels.astype(np.int32)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads one CIFAR-10 binary batch: uint8 (n, 32, 32, 3) images and int32 (n,) labels."""
    raw = path.read_bytes()
    if not raw or len(raw) % _CIFAR_RECORD_BYTES:
        raise ValueError(f"{path} is malformed: a CIFAR-10 batch is a whole number of {_CIFAR_RECORD_BYTES}-byte records; got {len(raw)} bytes.")
    records = np.frombuffer(raw, np.uint8).reshape(-1, _CIFAR_RECORD_BYTES)  # (n, 3073)
    labels = records[:, 0].astype(np.int32)
    if labels.max() > 9:
        raise ValueError(f"{path} is malformed: labels must be 0..9; got a label {labels.max()}.")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW -> (n, 32, 32, 3)
    return np.ascontiguousarray(images), labels


def load_cifar10(data_dir: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Loads CIFAR-10 from its binary version in ``data_dir/cifar-10-batches-bin``.

    Args:
      data_dir: folder holding the unpacked ``cifar-10-batches-bin`` folder,
        which holds ``data_batch_1.bin`` .. ``data_batch_5.bin`` and
        ``test_batch.bin``.
      split: ``"train"`` (the five data batches, in order) or ``"test"``.

    Returns:
      ``(images, labels)``: uint8 array (n, 32, 32, 3), channels last, and
      int32 array (n,).

    Raises:
      FileNotFoundError: if a file is missing; the message says what to put where.
      ValueError: if ``split`` is unknown or a file is malformed.

    References:
      A. Krizhevsky, "Learning Multiple Layers of Features from Tiny
      Images", 2009.
    """
    _check_split(split, _CIFAR_FILES)
    folder = Path(data_dir) / _CIFAR_FOLDER
    paths = [folder / name for name in _CIFAR_FILES[split]]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        expected = ", ".join(_CIFAR_FILES["train"] + _CIFAR_FILES["test"])
        raise FileNotFoundError(
            f"CIFAR-10 {split} file(s) not found: {', '.join(missing)}. Put the folder {_CIFAR_FOLDER} (holding {expected}) in {data_dir}. {_CIFAR_SOURCE}"
        )
    images, labels = zip(*(_read_cifar_batch(path) for path in paths))
    return np.concatenate(images), np.concatenate(labels)
