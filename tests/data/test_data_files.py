"""Tests for jaxlab.data.files on tiny synthetic MNIST (IDX) and CIFAR-10 files."""

import gzip
import struct

import numpy as np
import pytest

from jaxlab.data import load_cifar10, load_mnist, parse_idx, read_idx

_IDX_TYPE_CODES = {"uint8": 0x08, "int8": 0x09, "int16": 0x0B, "int32": 0x0C, "float32": 0x0D, "float64": 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encodes ``array`` in the IDX format (written independently of the parser)."""
    header = bytes([0, 0, _IDX_TYPE_CODES[array.dtype.name], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_mnist(folder, split, images, labels, *, gz=False):
    prefix = "train" if split == "train" else "t10k"
    for name, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    parsed = parse_idx(idx_bytes(array))
    assert parsed.dtype == np.dtype(dtype) and parsed.dtype.isnative
    np.testing.assert_array_equal(parsed, array)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_mnist(tmp_path, split, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([0, 9, 3, 3, 7], np.uint8)
    write_mnist(tmp_path, split, images, labels, gz=gz)
    got_images, got_labels = load_mnist(tmp_path, split=split)
    assert got_images.dtype == np.uint8 and got_labels.dtype == np.int32
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_missing_mnist_file_says_what_to_put_where(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_mnist(tmp_path, split="test")
    message = str(error.value)
    assert str(tmp_path / "t10k-images-idx3-ubyte") in message
    assert "train-labels-idx1-ubyte" in message and "MNIST" in message and "never downloads" in message


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda raw: b"\x00\x00\x99\x03" + raw[4:],  # unknown type code
        lambda raw: b"\x01" + raw[1:],  # bad leading magic byte
        lambda raw: raw[:-1],  # truncated data
        lambda raw: raw[:10],  # truncated header
        lambda raw: b"",  # empty file
    ],
)
def test_malformed_idx_raises_value_error(tmp_path, corrupt):
    path = tmp_path / "file-idx3-ubyte"
    path.write_bytes(corrupt(idx_bytes(np.zeros((2, 28, 28), np.uint8))))
    with pytest.raises(ValueError, match="file-idx3-ubyte"):
        read_idx(path)


def test_mnist_content_checks(tmp_path):
    write_mnist(tmp_path, "train", np.zeros((3, 28, 27), np.uint8), np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match=r"\(n, 28, 28\)"):
        load_mnist(tmp_path)
    write_mnist(tmp_path, "train", np.zeros((3, 28, 28), np.uint8), np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="labels"):
        load_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(ValueError, match="gzip"):
        load_mnist(tmp_path, split="test")
    with pytest.raises(ValueError, match="`split`"):
        load_mnist(tmp_path, split="validation")


def cifar_batch(rng, num):
    """Random CIFAR records: labels (num,) and images (num, 3, 32, 32) in file (CHW) order."""
    labels = rng.integers(0, 10, num, dtype=np.uint8)
    images_chw = rng.integers(0, 256, (num, 3, 32, 32), dtype=np.uint8)
    records = np.concatenate([labels[:, None], images_chw.reshape(num, -1)], axis=1)
    return labels, images_chw, records.tobytes()


def test_load_cifar10(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    batches = {name: cifar_batch(rng, 2 if name != "test_batch.bin" else 3) for name in names}
    for name, (_, _, raw) in batches.items():
        (folder / name).write_bytes(raw)
    train_images, train_labels = load_cifar10(tmp_path)
    assert train_images.shape == (10, 32, 32, 3) and train_images.dtype == np.uint8
    assert train_labels.dtype == np.int32
    np.testing.assert_array_equal(train_labels, np.concatenate([batches[n][0] for n in names[:5]]))
    test_images, test_labels = load_cifar10(tmp_path, split="test")
    _, chw, _ = batches["test_batch.bin"]
    # Pixel (row h, column w) of channel c sits at [k, h, w, c].
    assert test_images[1, 5, 7, 2] == chw[1, 2, 5, 7]
    np.testing.assert_array_equal(test_images, chw.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(test_labels, batches["test_batch.bin"][0])


def test_cifar10_errors(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_cifar10(tmp_path, split="test")
    assert str(tmp_path / "cifar-10-batches-bin" / "test_batch.bin") in str(error.value)
    assert "CIFAR-10" in str(error.value) and "data_batch_1.bin" in str(error.value)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    (folder / "test_batch.bin").write_bytes(b"\x00" * 3072)  # one byte short of a record
    with pytest.raises(ValueError, match="3073-byte records"):
        load_cifar10(tmp_path, split="test")
    (folder / "test_batch.bin").write_bytes(b"\x0a" + b"\x00" * 3072)  # label 10
    with pytest.raises(ValueError, match="labels must be 0..9"):
        load_cifar10(tmp_path, split="test")
    with pytest.raises(ValueError, match="`split`"):
        load_cifar10(tmp_path, split="val")
