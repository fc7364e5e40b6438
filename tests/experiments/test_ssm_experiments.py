"""The SSM experiments end to end through the CLI, at tiny sizes: hippo-reconstruct, s4-digits, s4-long."""

import json
import math
import sys

import jax
import numpy as np
import pytest

from jaxlab import cli
from jaxlab.ssm import ssm_param_labels
from tests.cli_helpers import run_cli


def results_of(workdir) -> dict:
    return json.loads((workdir / "results.json").read_text())


def experiment_module(stem: str):
    cli.discover()
    return sys.modules[f"jaxlab_experiments.{stem}"]


def test_hippo_reconstruct_writes_errors_for_every_measure_and_n(tmp_path):
    # Two of the four measures keep the compiles few; the others take the same path (the full run covers them).
    workdir = tmp_path / "hippo"
    tiny = ["--set", "dt=0.004", "--set", "Ns=16 64", "--set", "measures=legs fout", "--set", "num_signals=2"]
    assert run_cli("train", "hippo-reconstruct", "--workdir", str(workdir), *tiny) == 0
    results = results_of(workdir)
    assert not any(key.startswith(("rel_error_legt", "rel_error_lagt")) for key in results)
    for measure in ("legs", "fout"):
        for n in (16, 64):
            value = results[f"rel_error_{measure}_{n}"]
            assert math.isfinite(value) and value >= 0.0, (measure, n, value)
    assert results["rel_error_legs_64"] < 0.05  # the target holds even at this coarser dt
    assert results["rel_error_legs_64"] < results["rel_error_legs_16"]
    assert results["num_samples"] == 750
    for name in ("reconstruction.png", "error_vs_n.png", "errors.csv", "errors.md", "config.json"):
        assert (workdir / name).is_file(), name
    assert len((workdir / "errors.csv").read_text().splitlines()) == 1 + 2 * 2


def test_hippo_reconstruct_rejects_plot_n_outside_ns(tmp_path, capsys):
    assert run_cli("train", "hippo-reconstruct", "--workdir", str(tmp_path / "x"), "--set", "plot_n=48") == 2
    assert "plot_n" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_s4_digits_trains_and_reports_accuracy(tmp_path):
    workdir = tmp_path / "digits"
    tiny = ["--set", "d_model=16", "--set", "n_layers=1", "--set", "d_state=8", "--set", "batch_size=32",
            "--set", "log_every=5", "--set", "checkpoint_every=10", "--set", "warmup_steps=2"]  # fmt: skip
    assert run_cli("train", "s4-digits", "--workdir", str(workdir), "--steps", "10", *tiny) == 0
    results = results_of(workdir)
    for key in ("test_accuracy", "test_accuracy_raw", "train_accuracy"):
        assert 0.0 <= results[key] <= 1.0, key
    assert math.isfinite(results["test_loss"])
    assert results["sequence_length"] == 64 and results["num_test"] == 359 and results["dataset"] == "digits"
    for name in ("metrics.jsonl", "loss.png", "predictions.png", "checkpoints"):
        assert (workdir / name).exists(), name
    logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == 10 and "accuracy" in logged[-1]


def test_s4_digits_missing_mnist_files_give_the_loaders_error(tmp_path, capsys):
    status = run_cli("train", "s4-digits", "--workdir", str(tmp_path / "mnist"), "--set", f"data_dir={tmp_path / 'none'}")
    assert status == 2
    assert "train-images-idx3-ubyte" in capsys.readouterr().err
    assert not (tmp_path / "mnist" / "checkpoints").exists()


def test_s4_digits_ssm_parameters_get_their_own_label():
    module = experiment_module("s4_digits")
    config = module.Config(d_model=8, n_layers=1, d_state=4)
    method = module.build_method(config, 64)
    params = jax.eval_shape(method.init, jax.random.key(0), {"x": np.zeros((2, 64), np.float32)})
    leaves = jax.tree_util.tree_leaves_with_path(ssm_param_labels(params))
    labels = {jax.tree_util.keystr(path): label for path, label in leaves}
    ssm = {path for path, label in labels.items() if label == "ssm"}
    assert ssm and all(any(n in path for n in ("log_step", "lambda_", "'B'")) for path in ssm)
    assert all(labels[p] == "default" for p in labels if "'C'" in p or "'D'" in p or "kernel" in p)


def test_adding_problem_has_one_marker_per_half_and_sums_them_at_the_end():
    module = experiment_module("s4_long")
    batch = {k: np.asarray(v) for k, v in module.adding_problem(jax.random.key(3), 16, 64).items()}
    x, y, w = batch["x"], batch["y"], batch["w"]
    assert x.shape == (16, 64, 2) and y.shape == w.shape == (16, 64)
    markers = x[..., 1]
    assert np.all(markers[:, :32].sum(1) == 1) and np.all(markers[:, 32:].sum(1) == 1)
    np.testing.assert_allclose(y[:, -1], (x[..., 0] * markers).sum(1), rtol=1e-6)
    assert np.all(w[:, -1] == 1) and w.sum() == 16 and np.all(y[:, :-1] == 0)
    assert np.all((x[..., 0] >= 0) & (x[..., 0] < 1))


def test_delay_task_target_is_the_delayed_low_passed_input():
    module = experiment_module("s4_long")
    delay, width, length = 40, 8, 128
    batch = module.delay_task(jax.random.key(4), 64, length, delay=delay, width=width)
    batch = {k: np.asarray(v) for k, v in batch.items()}
    x, y, w = batch["x"][..., 0], batch["y"], batch["w"]
    h = module.hann_window(width)
    assert np.sum(h**2) == pytest.approx(1.0) and np.all(h > 0)
    t = 100  # y_t = sum_j h_j x_{t - delay - j}
    np.testing.assert_allclose(y[:, t], x[:, t - delay - np.arange(width)] @ h, rtol=1e-5, atol=1e-6)
    assert np.all(y[:, :delay] == 0)
    assert np.all(w[:, : delay + width - 1] == 0) and np.all(w[:, delay + width - 1 :] == 1)
    assert np.var(y[w > 0]) == pytest.approx(1.0, rel=0.1)  # unit-variance target where scored


def test_s4_long_trains_and_reports_its_metric(tmp_path):
    # The adding task shares this path (model, loss, evaluation) and differs only in its generator, tested above.
    task = "delay"
    workdir = tmp_path / task
    tiny = ["--set", f"task={task}", "--set", "seq_len=64", "--set", "delay=32", "--set", "delay_width=8",
            "--set", "d_model=8", "--set", "n_layers=1", "--set", "d_state=8", "--set", "batch_size=16",
            "--set", "num_test=64", "--set", "log_every=5", "--set", "checkpoint_every=10"]  # fmt: skip
    assert run_cli("train", "s4-long", "--workdir", str(workdir), "--steps", "10", *tiny) == 0
    results = results_of(workdir)
    assert results["task"] == task and results["seq_len"] == 64
    assert results["test_metric_name"] == "nmse" and results["delay"] == 32
    assert math.isfinite(results["test_metric"]) and results["test_metric"] >= 0.0
    assert results["chance_metric"] == results["windowed_bound"] == 1.0
    for name in ("metrics.jsonl", "loss.png", "predictions.png", "checkpoints"):
        assert (workdir / name).exists(), name


@pytest.mark.slow  # ~9 s; bf16 S4 is covered by tests/ssm/test_precision.py in the default suite
def test_s4_digits_trains_a_few_steps_in_bfloat16(tmp_path):
    workdir = tmp_path / "digits-bf16"
    tiny = ["--set", "d_model=16", "--set", "n_layers=1", "--set", "d_state=8", "--set", "batch_size=32", "--set", "dtype=bfloat16",
            "--set", "log_every=1", "--set", "checkpoint_every=4", "--set", "warmup_steps=1", "--set", "eval_batch_size=64"]  # fmt: skip
    assert run_cli("train", "s4-digits", "--workdir", str(workdir), "--steps", "4", *tiny) == 0
    results = results_of(workdir)
    assert 0.0 <= results["test_accuracy"] <= 1.0 and math.isfinite(results["test_loss"])
    losses = [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text().splitlines() if "loss" in json.loads(line)]
    assert losses and all(math.isfinite(loss) for loss in losses)
