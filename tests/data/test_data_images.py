"""Tests for jaxlab.data.images on small PNG folders and CIFAR-format files written in tmp_path."""

import numpy as np
import pytest
from PIL import Image

from jaxlab import parallel
from jaxlab.data import (
    ImageFolder,
    ImageRows,
    epoch_permutation_batch,
    flip_horizontal,
    flip_mask,
    image_batches,
    images_to_signed,
    list_images,
    load_cifar10,
    load_image,
    signed_to_images,
)
from jaxlab.data import images as images_module

RNG = np.random.default_rng(0)
# (class, file name, PIL mode, (height, width)): non-square, grayscale, RGBA, palette, upscaled, downscaled.
FILES = [
    ("cat", "a.png", "RGB", (30, 40)),
    ("cat", "b.png", "L", (23, 17)),
    ("cat", "c.png", "RGBA", (64, 64)),
    ("dog", "d.png", "RGB", (96, 128)),
    ("dog", "e.PNG", "P", (20, 20)),
    ("dog", "f.bmp", "RGB", (12, 33)),
]


def pixels(mode, shape, rng=RNG):
    channels = {"RGB": 3, "RGBA": 4}.get(mode)
    return rng.integers(0, 256, shape if channels is None else (*shape, channels), dtype=np.uint8)


def write_folder(root, files=FILES, rng=RNG):
    """Writes the images, plus files the folder must ignore; returns {relative path: pixel array}."""
    written = {}
    for label, name, mode, shape in files:
        (root / label).mkdir(parents=True, exist_ok=True)
        array = pixels(mode, shape, rng)
        image = Image.fromarray(array, mode="L" if mode == "P" else mode)
        if mode == "P":
            image = image.convert("P")
        image.save(root / label / name)
        written[f"{label}/{name}"] = np.asarray(image.convert("RGB"))
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / "._a.png").write_bytes(b"macOS resource fork")
    return written


def many_pngs(root, count, resolution):
    """``count`` square PNGs of side ``resolution`` in two classes (no resizing, so rows are easy to compare)."""
    for i in range(count):
        folder = root / ("even" if i % 2 == 0 else "odd")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels("RGB", (resolution, resolution))).save(folder / f"{i:03d}.png")
    return ImageFolder(root, resolution=resolution)


@pytest.fixture
def counted(monkeypatch):
    """The paths each decode was asked for, in order."""
    calls = []
    real = images_module.load_image

    def spy(path, *, resolution):
        calls.append(path.name)
        return real(path, resolution=resolution)

    monkeypatch.setattr(images_module, "load_image", spy)
    return calls


def test_listing_classes_and_labels(tmp_path):
    write_folder(tmp_path)
    folder = ImageFolder(tmp_path, resolution=8)
    assert folder.classes == ("cat", "dog")
    assert [p.relative_to(tmp_path).as_posix() for p in folder.paths] == [f"{c}/{n}" for c, n, _, _ in FILES]
    assert folder.labels.dtype == np.int32
    np.testing.assert_array_equal(folder.labels, [0, 0, 0, 1, 1, 1])
    assert len(folder) == 6


def test_a_flat_folder_is_one_class(tmp_path):
    root = tmp_path / "faces"
    root.mkdir()
    for name in ("z.png", "a.jpg", "m.JPEG"):
        Image.fromarray(pixels("RGB", (9, 9))).save(root / name)
    paths, classes, labels = list_images(root)
    assert [p.name for p in paths] == ["a.jpg", "m.JPEG", "z.png"] and classes == ("faces",)
    np.testing.assert_array_equal(labels, [0, 0, 0])


def test_images_at_the_identity_scale_are_exact_center_crops(tmp_path):
    written = write_folder(tmp_path)
    # a.png is 30 x 40: resolution 30 keeps its scale and crops columns 5..35.
    np.testing.assert_array_equal(load_image(tmp_path / "cat/a.png", resolution=30), written["cat/a.png"][:, 5:35])
    gray = load_image(tmp_path / "cat/b.png", resolution=17)  # 23 x 17: rows 3..20
    np.testing.assert_array_equal(gray, written["cat/b.png"][3:20])
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    rgba = np.asarray(Image.open(tmp_path / "cat/c.png"))
    np.testing.assert_array_equal(load_image(tmp_path / "cat/c.png", resolution=64), rgba[..., :3])  # alpha dropped


def box_halve(x):
    """Pillow's 2x box downsample, written out: mean of column pairs, rounded half up, then of row pairs."""
    x = np.floor((x[:, 0::2] + x[:, 1::2]) / 2 + 0.5)
    return np.floor((x[0::2] + x[1::2]) / 2 + 0.5)


def test_downscaling_box_halves_then_crops(tmp_path):
    written = write_folder(tmp_path)
    # d.png is 96 x 128 at resolution 12: halved while the short side is >= 24 (96 -> 48 -> 24 -> 12),
    # then the bicubic step is the identity and the crop takes columns 2..14 of 16.
    x = written["dog/d.png"].astype(np.float64)
    for _ in range(3):
        x = box_halve(x)
    got = load_image(tmp_path / "dog/d.png", resolution=12)
    assert got.shape == (12, 12, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, x[:, 2:14])
    # At resolution 10 the same three halvings (12 < 20 stops them), then bicubic 12 x 16 -> 10 x 13 and columns 1..11.
    halved = Image.fromarray(x.astype(np.uint8))
    expected = np.asarray(halved.resize((13, 10), Image.Resampling.BICUBIC))[:, 1:11]
    np.testing.assert_array_equal(load_image(tmp_path / "dog/d.png", resolution=10), expected)


def test_upscaling_is_bicubic_then_center_crop(tmp_path):
    written = write_folder(tmp_path)
    # f.bmp is 12 x 33 at resolution 24: bicubic to 24 x 66, then columns 21..45.
    resized = np.asarray(Image.fromarray(written["dog/f.bmp"]).resize((66, 24), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(load_image(tmp_path / "dog/f.bmp", resolution=24), resized[:, 21:45])


def test_folder_images_match_load_image_and_threads_match_serial(tmp_path):
    write_folder(tmp_path)
    serial = ImageFolder(tmp_path, resolution=16, threads=1).images(np.arange(6))
    pooled = ImageFolder(tmp_path, resolution=16, threads=4).images(np.arange(6))
    assert serial.shape == (6, 16, 16, 3) and serial.dtype == np.uint8
    np.testing.assert_array_equal(serial, pooled)
    for row, path in zip(serial, ImageFolder(tmp_path, resolution=16).paths, strict=True):
        np.testing.assert_array_equal(row, load_image(path, resolution=16))
    np.testing.assert_array_equal(ImageFolder(tmp_path, resolution=16).images([5, 0, 5]), serial[[5, 0, 5]])


def test_decoding_is_lazy_and_cached(tmp_path, counted):
    write_folder(tmp_path)
    folder = ImageFolder(tmp_path, resolution=8, threads=1)
    assert counted == []  # listing decodes nothing
    folder.images([4, 1, 4])
    assert counted == ["b.png", "e.PNG"]  # each asked-for image once, nothing else
    folder.images(np.arange(6))
    assert sorted(counted) == sorted(["a.png", "b.png", "c.png", "d.png", "e.PNG", "f.bmp"])
    folder.images(np.arange(6))  # a second epoch decodes nothing
    assert len(counted) == 6

    uncached = ImageFolder(tmp_path, resolution=8, cache=False)
    uncached.images([0, 0])
    uncached.images([0])
    assert counted[6:] == ["a.png", "a.png"]


def test_two_folders_give_the_same_batches(tmp_path):
    write_folder(tmp_path)
    a = image_batches(ImageFolder(tmp_path, resolution=8), 4, seed=3)
    b = image_batches(ImageFolder(tmp_path, resolution=8, threads=2), 4, seed=3)
    for step in (0, 1, 7):
        np.testing.assert_array_equal(np.asarray(a(step)["x"]), np.asarray(b(step)["x"]))
        np.testing.assert_array_equal(a(step)["label"], b(step)["label"])


def test_flip_mask_is_a_fair_pure_function_of_seed_and_step():
    np.testing.assert_array_equal(flip_mask(64, seed=1, step=5), flip_mask(64, seed=1, step=5))
    assert not np.array_equal(flip_mask(64, seed=1, step=5), flip_mask(64, seed=1, step=6))
    assert not np.array_equal(flip_mask(64, seed=1, step=5), flip_mask(64, seed=2, step=5))
    many = flip_mask(20000, seed=0, step=0)
    assert many.dtype == np.bool_ and abs(many.mean() - 0.5) < 0.02


def test_flips_mirror_exactly_the_chosen_rows(tmp_path):
    folder = many_pngs(tmp_path, 16, 6)
    indices = np.arange(16)
    flips = flip_mask(16, seed=0, step=2)
    assert 0 < flips.sum() < 16
    plain, flipped = np.asarray(ImageRows(folder, indices)), np.asarray(ImageRows(folder, indices, flips=flips))
    np.testing.assert_array_equal(flipped[flips], plain[flips][:, :, ::-1])
    np.testing.assert_array_equal(flipped[~flips], plain[~flips])
    np.testing.assert_array_equal(flip_horizontal(folder.images(indices), flips), signed_to_images(flipped))


def test_signed_range_round_trips():
    pixels_ = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    signed = images_to_signed(pixels_)
    assert signed.dtype == np.float32 and signed.min() == -1.0 and signed.max() == 1.0
    np.testing.assert_array_equal(signed_to_images(signed), pixels_)
    np.testing.assert_array_equal(signed_to_images(np.array([-3.0, 3.0])), [0, 255])  # clipped
    with pytest.raises(ValueError, match="uint8"):
        images_to_signed(pixels_.astype(np.float32))


def test_image_rows_decode_only_the_rows_indexed(tmp_path, counted):
    folder = many_pngs(tmp_path, 8, 4)
    indices = np.array([7, 6, 5, 4, 3, 2, 1, 0])
    rows = ImageRows(folder, indices)
    assert rows.shape == (8, 4, 4, 3) and rows.dtype == np.float32 and rows.ndim == 4 and len(rows) == 8
    assert counted == []
    part = rows[(slice(2, 4), slice(None), slice(None), slice(None))]  # how make_array_from_callback asks
    assert sorted(counted) == sorted(folder.paths[i].name for i in (5, 4))
    np.testing.assert_array_equal(part, images_to_signed(folder.images([5, 4])))
    np.testing.assert_array_equal(rows[0], images_to_signed(folder.images([7]))[0])
    np.testing.assert_array_equal(rows[[1, 1], :2], images_to_signed(folder.images([6, 6]))[:, :2])
    np.testing.assert_array_equal(rows[..., 0], np.asarray(rows)[..., 0])


@pytest.mark.parametrize("shape", [{"data": 8}, {"fsdp": 4, "tensor": 2}])
def test_put_global_batch_indexes_a_lazy_leaf_per_device(tmp_path, shape, counted):
    folder = many_pngs(tmp_path, 16, 4)
    batches = image_batches(folder, 8, seed=1)
    batch = batches(3)
    sharding = parallel.batch_sharding(parallel.make_mesh("fsdp", shape=shape))
    placed = parallel.put_global_batch(batch, sharding)
    assert sorted(counted) == sorted(folder.paths[i].name for i in epoch_permutation_batch(16, 8, seed=1, step=3))  # each row once
    np.testing.assert_array_equal(np.asarray(placed["x"]), np.asarray(batch["x"]))
    np.testing.assert_array_equal(np.asarray(placed["label"]), batch["label"])
    assert placed["x"].dtype == np.float32 and placed["x"].shape == (8, 4, 4, 3)


def test_put_global_batch_does_not_materialize_a_lazy_leaf(tmp_path, counted):
    many_pngs(tmp_path, 8, 4)
    folder = ImageFolder(tmp_path, resolution=4, cache=False)
    parallel.put_global_batch({"x": ImageRows(folder, np.arange(8))}, parallel.batch_sharding(parallel.make_mesh("dp")))
    assert sorted(counted) == sorted(p.name for p in folder.paths)  # each row once: by its device's callback only

    counted.clear()
    with pytest.raises(ValueError, match=r"batch leaf \['x'\].*divisible by the number of devices \(8\).*\(6, 4, 4, 3\)"):
        parallel.put_global_batch({"x": ImageRows(folder, np.arange(6))}, parallel.batch_sharding(parallel.make_mesh("dp")))
    assert counted == []


def test_image_batches_from_a_folder(tmp_path):
    write_folder(tmp_path)
    folder = ImageFolder(tmp_path, resolution=8)
    batch = image_batches(folder, 4, seed=2)(5)
    indices = epoch_permutation_batch(6, 4, seed=2, step=5)
    assert isinstance(batch["x"], ImageRows) and batch["label"].dtype == np.int32
    np.testing.assert_array_equal(batch["label"], folder.labels[indices])
    expected = images_to_signed(flip_horizontal(folder.images(indices), flip_mask(4, seed=2, step=5)))
    np.testing.assert_array_equal(np.asarray(batch["x"]), expected)
    unflipped = image_batches(folder, 4, seed=2, flip=False, labels=False)(5)
    assert set(unflipped) == {"x"}
    np.testing.assert_array_equal(np.asarray(unflipped["x"]), images_to_signed(folder.images(indices)))


def write_cifar(data_dir, rng):
    """The six CIFAR-10 binary batches, 3 records each: a label byte, then the image as (channel, row, column)."""
    folder = data_dir / "cifar-10-batches-bin"
    folder.mkdir()
    images, labels = [], []
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        chw = rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
        label = rng.integers(0, 10, 3, dtype=np.uint8)
        (folder / name).write_bytes(b"".join(bytes([lab]) + image.tobytes() for lab, image in zip(label, chw, strict=True)))
        if name != "test_batch.bin":
            images.append(chw.transpose(0, 2, 3, 1))
            labels.append(label)
    return np.concatenate(images), np.concatenate(labels)


def test_cifar_arrays_through_the_batch_builder(tmp_path):
    images, labels = write_cifar(tmp_path, np.random.default_rng(1))
    batches = image_batches(load_cifar10(tmp_path), 4, seed=0)
    for step in (0, 3, 4):  # 15 images, 3 steps per epoch: step 3 starts epoch 1
        batch = batches(step)
        indices = epoch_permutation_batch(15, 4, seed=0, step=step)
        flips = flip_mask(4, seed=0, step=step)
        assert batch["x"].shape == (4, 32, 32, 3) and batch["x"].dtype == np.float32
        x = (images[indices].astype(np.float32) / 127.5) - 1.0
        np.testing.assert_allclose(batch["x"], np.where(flips[:, None, None, None], x[:, :, ::-1], x), atol=1e-6)
        np.testing.assert_array_equal(batch["label"], labels[indices])
    grayscale = image_batches((images[..., 0], labels), 5, seed=0, flip=False)(0)["x"]
    assert grayscale.shape == (5, 32, 32, 1)


def test_missing_root_says_where_to_put_images(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"put images at .*nowhere/<class>/"):
        ImageFolder(tmp_path / "nowhere", resolution=8)


@pytest.mark.parametrize("junk", [None, "notes.txt", "cat/readme.md"])
def test_a_folder_without_images_names_the_root_and_the_extensions(tmp_path, junk):
    if junk:
        (tmp_path / junk).parent.mkdir(exist_ok=True)
        (tmp_path / junk).write_text("x")
    with pytest.raises(ValueError, match=rf"{tmp_path}.*no images.*\.png.*\.jpg.*\.jpeg.*\.webp.*\.bmp"):
        ImageFolder(tmp_path, resolution=8)


def test_images_both_loose_and_in_classes_are_rejected(tmp_path):
    write_folder(tmp_path)
    Image.fromarray(pixels("RGB", (4, 4))).save(tmp_path / "loose.png")
    with pytest.raises(ValueError, match="both directly.*loose.png.*cat, dog"):
        ImageFolder(tmp_path, resolution=8)


@pytest.mark.parametrize("resolution", [0, -3, 2.5, "8", True, None])
def test_bad_resolution(tmp_path, resolution):
    write_folder(tmp_path)
    with pytest.raises(ValueError, match="`resolution` must be an integer >= 1"):
        ImageFolder(tmp_path, resolution=resolution)
    with pytest.raises(ValueError, match="`resolution`"):
        load_image(tmp_path / "cat/a.png", resolution=resolution)


@pytest.mark.parametrize("content", ["garbage", "truncated"])
def test_an_undecodable_file_is_named(tmp_path, content):
    write_folder(tmp_path)
    bad = tmp_path / "dog" / "d.png"
    bad.write_bytes(b"not a png at all" if content == "garbage" else bad.read_bytes()[:200])
    folder = ImageFolder(tmp_path, resolution=8)
    folder.images([0, 1])  # the good files still decode
    with pytest.raises(ValueError, match=rf"image file {bad} cannot be decoded"):
        folder.images(np.arange(6))
    with pytest.raises(ValueError, match=rf"{bad}"):
        folder.verify(decode=content == "truncated")  # the header check is enough for garbage
    ImageFolder(tmp_path / "cat", resolution=8).verify()  # a clean folder passes


def test_bad_arguments(tmp_path):
    folder = many_pngs(tmp_path, 4, 4)
    with pytest.raises(ValueError, match="`threads`"):
        ImageFolder(tmp_path, resolution=4, threads=0)
    with pytest.raises(ValueError, match=r"`indices` must lie in \[0, 4\)"):
        folder.images([4])
    with pytest.raises(ValueError, match="`indices` must be a 1-D integer array"):
        ImageRows(folder, [[0, 1]])
    with pytest.raises(ValueError, match="`flips` must be a bool array"):
        ImageRows(folder, [0, 1], flips=np.array([1, 0]))
    with pytest.raises(ValueError, match="`batch_size` must be at most num_examples = 4"):
        image_batches(folder, 5, seed=0)
    with pytest.raises(ValueError, match="`seed`"):
        image_batches(folder, 2, seed=-1)
    with pytest.raises(ValueError, match="`source` images must be uint8"):
        image_batches((np.zeros((4, 8, 8, 3), np.float32), np.zeros(4, np.int32)), 2, seed=0)
    with pytest.raises(ValueError, match="`source` labels"):
        image_batches((np.zeros((4, 8, 8, 3), np.uint8), np.zeros(3, np.int32)), 2, seed=0)
    with pytest.raises(ValueError, match="`source` must be an ImageFolder"):
        image_batches(tmp_path, 2, seed=0)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png", resolution=4)


def test_the_trainer_trains_on_lazy_folder_batches(tmp_path):
    import flax.linen as nn

    from jaxlab.generative import RectifiedFlow
    from jaxlab.train import MetricsLog, TrainConfig, adamw_with_warmup, train

    class Velocity(nn.Module):
        @nn.compact
        def __call__(self, x, t):
            return nn.Dense(x.shape[-1])(x) + t[:, None, None, None]

    folder = many_pngs(tmp_path / "images", 16, 4)
    network = Velocity()
    method = RectifiedFlow(apply_fn=network.apply, init_fn=network.init, data_shape=(4, 4, 3))
    config = TrainConfig(steps=4, batch_size=8, log_every=2, checkpoint_every=4, warmup_steps=1)
    train(method, adamw_with_warmup(config), image_batches(folder, 8, seed=0), config, tmp_path / "run", progress=False)
    assert [r["step"] for r in MetricsLog(tmp_path / "run" / "metrics.jsonl").read()] == [2, 4]
