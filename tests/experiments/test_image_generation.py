"""image-generation end to end through the CLI with the smoke preset, and its refusals of bad input."""

import json
import math

import numpy as np
import pytest

from jaxlab.data import image_batches
from jaxlab.recipes import images
from tests.cli_helpers import overrides, results_of, run_cli

SMOKE = dict(preset="smoke", dtype="float32")


@pytest.fixture(autouse=True)
def no_inception_weights(tmp_path, monkeypatch):
    """An empty cache: no FID Inception weights, so the metric is the proxy."""
    monkeypatch.setenv("JAXLAB_CACHE", str(tmp_path / "cache"))


def check_run(workdir, method, steps):
    results = results_of(workdir)
    assert results["metric"] == "proxy_frechet" and not any(key.startswith("fid_") for key in results)
    for k in steps:
        for key in (f"proxy_frechet_{method}_{k}", f"wall_{method}_{k}", f"sample_img_per_sec_{method}_{k}"):
            assert math.isfinite(results[key]) and results[key] >= 0.0, key
    assert math.isfinite(results["train_img_per_sec"]) and results["train_img_per_sec"] > 0.0
    assert results["num_classes"] == images.NUM_SYNTHETIC_CLASSES
    assert "proxy" in (workdir / "fewstep_table.md").read_text() and (workdir / "samples.png").is_file()
    assert (workdir / "eval" / "reference_proxy_frechet.npz").is_file()
    return results


def test_smoke_flow_trains_evaluates_and_samples(tmp_path):
    workdir = tmp_path / "run"
    assert run_cli("train", "image-generation", "--workdir", str(workdir), *overrides(**SMOKE, step_counts="1 4")) == 0
    check_run(workdir, "flow", (1, 4))
    saved = json.loads((workdir / "config.json").read_text())["config"]
    assert (saved["dit"], saved["resolution"], saved["batch_size"], saved["steps"]) == ("tiny/4", 16, 16, 100)
    assert run_cli("sample", "image-generation", "--workdir", str(workdir), "--num", "8", "--steps", "2") == 0
    samples = np.load(workdir / "samples-2steps-8.npy")
    assert samples.shape == (8, 16, 16, 3) and np.isfinite(samples).all()


def test_smoke_sid_in_bfloat16_distils_a_flow_teacher(tmp_path):
    workdir = tmp_path / "run"
    fast = overrides(preset="smoke", dtype="bfloat16", method="sid", step_counts="1", steps=20, checkpoint_every=20)
    assert run_cli("train", "image-generation", "--workdir", str(workdir), *fast) == 0
    results = check_run(workdir, "sid", (1,))
    assert (workdir / "flow" / "checkpoints").is_dir() and "proxy_frechet_sid_4" not in results
    assert math.isfinite(results["proxy_frechet_teacher_1"])  # the teacher at the largest step count asked for


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(resolution=18), "resolution must be divisible by the patch size 4"),
        (dict(dtype="float64"), "`dtype` must be one of"),
        (dict(dit="M/2"), "dit must be one of"),
        (dict(dataset="cifar10"), "cifar-10-batches-bin"),
    ],
)
def test_bad_input_exits_2_before_anything_is_written(fields, message, tmp_path, capsys):
    workdir = tmp_path / "run"
    assert run_cli("train", "image-generation", "--workdir", str(workdir), *overrides(preset="smoke", **fields)) == 2
    assert message in capsys.readouterr().err
    assert not workdir.exists()


def test_cifar10_with_a_missing_data_dir_says_where_to_put_the_files(tmp_path, capsys):
    workdir, missing = tmp_path / "run", tmp_path / "nowhere"
    assert run_cli("train", "image-generation", "--workdir", str(workdir), "--data-dir", str(missing), *overrides(dataset="cifar10")) == 2
    flat = "".join(ch for ch in capsys.readouterr().err if ch not in "│ \n")  # the message as one line, unwrapped
    assert f"{missing}/cifar-10-batches-bin".replace(" ", "") in flat and "data_batch_1.bin" in flat
    assert not workdir.exists()


def test_synthetic_images_are_deterministic_labelled_and_not_noise():
    x, labels = images.synthetic_images(200, 16, seed=0)
    again, _ = images.synthetic_images(200, 16, seed=0)
    assert x.shape == (200, 16, 16, 3) and x.dtype == np.uint8 and np.array_equal(x, again)
    assert set(labels.tolist()) == set(range(images.NUM_SYNTHETIC_CLASSES))
    # Neighbouring pixels differ by ~85 levels on average in uniform noise; these are smooth shapes on gradients.
    assert np.abs(np.diff(x.astype(np.float32), axis=2)).mean() < 20.0


def test_batches_are_a_function_of_seed_and_step_and_flip_mirrors():
    x, labels = images.synthetic_images(64, 8, seed=0)
    batches = image_batches((x, labels), 16, seed=3, flip=True)
    first, again = batches(5), batches(5)
    assert np.array_equal(first["x"], again["x"]) and first["x"].dtype == np.float32 and first["label"].dtype == np.int32
    assert -1.0 <= first["x"].min() and first["x"].max() <= 1.0
    plain = image_batches((x, labels), 16, seed=3, flip=False)(5)
    assert np.array_equal(plain["label"], first["label"])
    same = [np.array_equal(a, b) or np.array_equal(a, b[:, ::-1]) for a, b in zip(first["x"], plain["x"])]
    assert all(same) and not np.array_equal(first["x"], plain["x"])


def write_fake_cifar(folder, per_file=4):
    """CIFAR-10's binary layout (label byte + 3·32·32 CHW bytes per record), random content."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = rng.integers(0, 256, (per_file, 3073), dtype=np.uint8)
        records[:, 0] = np.arange(per_file) % 10
        (folder / name).write_bytes(records.tobytes())


def test_cifar10_data_are_flipped_labelled_batches(tmp_path):
    from jaxlab import cli

    write_fake_cifar(tmp_path / "cifar-10-batches-bin")
    module = __import__("sys").modules[cli.load("image-generation").run.__module__]
    config = module.Config(dataset="cifar10", data_dir=str(tmp_path), batch_size=8)
    data = module.load_data(config)
    batch = data.batches(0)
    assert batch["x"].shape == (8, 32, 32, 3) and batch["label"].shape == (8,) and data.num_classes == 10
    assert next(data.reference()).shape == (20, 32, 32, 3)
    unflipped = module.load_data(module.Config(dataset="cifar10", data_dir=str(tmp_path), batch_size=8, flip=False)).batches(0)
    assert not np.array_equal(batch["x"], unflipped["x"]) and np.array_equal(batch["label"], unflipped["label"])


def test_folder_data_are_labelled_by_subfolder(tmp_path):
    from PIL import Image

    from jaxlab import cli

    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "images" / label / f"{i}.png")
    module = __import__("sys").modules[cli.load("image-generation").run.__module__]
    config = module.Config(dataset="folder", data_dir=str(tmp_path / "images"), resolution=16, batch_size=4)
    data = module.load_data(config)
    batch = data.batches(0)
    assert np.asarray(batch["x"]).shape == (4, 16, 16, 3) and data.num_classes == 2 == module.folder_classes(config)
    assert data.images.shape == (12, 16, 16, 3) and sorted(set(data.labels.tolist())) == [0, 1]
    assert sum(chunk.shape[0] for chunk in data.reference()) == 12
