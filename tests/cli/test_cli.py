"""The `jaxlab` command: listing, override checking, a tiny end-to-end run, sampling, signals."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxlab import cli, train
from tests.cli_helpers import run_cli

TINY = ["--set", "width=16", "--set", "depth=1", "--set", "batch_size=64", "--set", "eval_samples=256",
        "--set", "sample_steps=4", "--set", "log_every=10", "--set", "checkpoint_every=10"]  # fmt: skip


def test_list_names_every_experiment_with_a_description(capsys):
    assert run_cli("list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("flow-toy2d ") and "rectified flow" in line for line in lines)


def test_show_lists_fields_types_and_defaults(capsys):
    assert run_cli("show", "flow-toy2d") == 0
    out = capsys.readouterr().out
    assert "learning_rate" in out and "float" in out and "'checkerboard'" in out


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("no_such_field=1", "no_such_field"),
        ("learning_rate=fast", "learning_rate"),
        ("dataset=spiral", "checkerboard"),  # lists the allowed values
        ("steps=0", "steps must be a positive int"),
        ("width", "FIELD=VALUE"),
    ],
)
def test_bad_overrides_exit_2_naming_the_field_before_any_work(override, message, tmp_path, capsys):
    assert run_cli("train", "flow-toy2d", "--workdir", str(tmp_path / "run"), "--set", override) == 2
    captured = capsys.readouterr()
    assert message in captured.out + captured.err
    assert not (tmp_path / "run").exists()  # nothing written, nothing compiled


def test_unknown_experiment_exits_2(capsys):
    assert run_cli("train", "no-such-experiment") == 2
    assert "flow-toy2d" in capsys.readouterr().err


def test_train_then_sample_end_to_end(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert run_cli("train", "flow-toy2d", "--workdir", str(workdir), "--steps", "20", *TINY) == 0
    results = json.loads((workdir / "results.json").read_text())
    assert {"energy_distance", "energy_distance_noise"} <= set(results)
    assert all(isinstance(v, (int, float, str)) for v in results.values())
    for name in ("config.json", "metrics.jsonl", "loss.png", "samples.png", "samples.npy"):
        assert (workdir / name).is_file(), name
    assert json.loads((workdir / "config.json").read_text())["config"]["width"] == 16

    assert run_cli("sample", "flow-toy2d", "--workdir", str(workdir), "--num", "50", "--steps", "3") == 0
    samples = np.load(workdir / "samples-3steps-50.npy")
    assert samples.shape == (50, 2) and np.isfinite(samples).all()
    assert (workdir / "samples-3steps-50.png").is_file()

    # Resuming with a changed model is refused, and the run directory is left as it was.
    before = (workdir / "config.json").read_text()
    assert run_cli("train", "flow-toy2d", "--workdir", str(workdir), "--steps", "30", *TINY, "--set", "width=32") == 2
    assert "width (saved 16, now 32)" in capsys.readouterr().err
    assert (workdir / "config.json").read_text() == before


def test_sample_from_a_directory_that_is_not_a_run_exits_2(tmp_path, capsys):
    assert run_cli("sample", "flow-toy2d", "--workdir", str(tmp_path)) == 2
    assert "not a jaxlab run directory" in capsys.readouterr().err


def test_non_finite_loss_exits_1_with_the_step(tmp_path, capsys, monkeypatch):
    def explode(*args, **kwargs):
        raise train.NonFiniteLossError(step=7, value=float("nan"), last_checkpoint=5)

    monkeypatch.setattr(train, "run_experiment", explode)
    assert run_cli("train", "flow-toy2d", "--workdir", str(tmp_path)) == 1
    assert "loss is nan at step 7" in capsys.readouterr().err


def test_sigint_checkpoints_and_exits_cleanly(tmp_path):
    """A real process: Ctrl-C writes a checkpoint, exits 130 without a traceback, and the run resumes."""
    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "jaxlab.cli", "train", "flow-toy2d", "--workdir", str(workdir), "--steps", "1000000", *TINY]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    metrics = workdir / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.stat().st_size) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err
    assert "re-run the same command to resume" in err
    saved = train.Checkpointer(workdir / "checkpoints").latest_step()
    assert saved is not None and saved >= 10
    assert max(json.loads(line)["step"] for line in metrics.read_text().splitlines()) <= saved


def test_a_broken_experiment_file_is_reported_and_skipped(tmp_path, capsys):
    (tmp_path / "broken.py").write_text("raise ImportError('missing optional dependency')\n")
    (tmp_path / "fine.py").write_text(
        "from jaxlab.train import Experiment, TrainConfig\n"
        "EXPERIMENTS = [Experiment('fine', 'a fine one', TrainConfig(), run=lambda c, w: {})]\n"
    )
    registry = cli.discover(tmp_path)
    assert list(registry) == ["fine"]
    assert "skipping" in capsys.readouterr().err
