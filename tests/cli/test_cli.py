"""The `jaxlab` command: listing, override checking, a tiny end-to-end run, sampling, signals."""

import json
import os
import signal
import stat
import subprocess
import sys
import time

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
        ("width=-5", "width must be a positive int, got -5"),
        ("batch_size=100", "batch_size must be divisible by the number of devices (8), got 100"),
        ("mesh=data:3", "mesh 'data:3' holds 3 devices (the product of its sizes), but there are 8"),
        ("mesh=data:2,gpu:4", "unknown axis 'gpu'"),
        ("mesh=data:two", "mesh must look like 'data:2,fsdp:4,tensor:1'"),
        ("min_shard_bytes=-1", "min_shard_bytes must be an int >= 0, got -1"),
        ("width", "FIELD=VALUE"),
    ],
)
def test_bad_overrides_exit_2_naming_the_field_before_any_work(override, message, tmp_path, capsys):
    assert run_cli("train", "flow-toy2d", "--workdir", str(tmp_path / "run"), "--set", override) == 2
    captured = capsys.readouterr()
    assert message in captured.out + captured.err
    assert "Traceback" not in captured.out + captured.err
    assert not (tmp_path / "run").exists()  # nothing written, nothing compiled


def test_a_dtype_outside_the_compute_dtypes_exits_2_naming_dtype(tmp_path, capsys):
    assert run_cli("train", "flow-toy2d", "--workdir", str(tmp_path / "run"), "--set", "dtype=float64") == 2
    captured = capsys.readouterr()
    message = " ".join(captured.err.replace("│", " ").split())  # tyro wraps the message in a box
    assert "`dtype` must be one of ('float32', 'bfloat16', 'float16'); got float64" in message
    assert "Traceback" not in captured.out + captured.err
    assert not (tmp_path / "run").exists()  # nothing written, nothing compiled


def test_a_batch_must_divide_over_the_data_parallel_axes_of_the_mesh(tmp_path, capsys):
    """``tensor`` shares rows: 100 rows split 2 ways on ``data:2,tensor:4`` is fine, 8 ways on ``data:8`` is not."""
    assert run_cli("train", "flow-toy2d", "--workdir", str(tmp_path / "run"), "--set", "mesh=data:8", "--set", "batch_size=100") == 2
    assert "batch_size must be divisible by the data-parallel size (data × fsdp of mesh 'data:8': 8), got 100" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_tensor_axis_must_divide_the_head_count(tmp_path, capsys):
    assert run_cli("train", "lm-attention", "--workdir", str(tmp_path / "run"), "--set", "mesh=data:1,tensor:8") == 2
    assert "num_heads must be divisible by the tensor-parallel size (tensor of mesh 'data:1,tensor:8': 8), got 4" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_mesh_shape_trains_like_the_default_mesh(tmp_path):
    mesh = ["--set", "mesh=data:2,fsdp:2,tensor:2", "--set", "strategy=fsdp", "--set", "min_shard_bytes=0"]
    assert run_cli("train", "flow-toy2d", "--workdir", str(tmp_path / "mesh"), "--steps", "20", *TINY, *mesh) == 0
    assert run_cli("train", "flow-toy2d", "--workdir", str(tmp_path / "dp"), "--steps", "20", *TINY) == 0
    assert json.loads((tmp_path / "mesh" / "trainer.json").read_text())["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
    losses = {name: [r["loss"] for r in train.MetricsLog(tmp_path / name / "metrics.jsonl").read()] for name in ("mesh", "dp")}
    assert len(losses["mesh"]) == 2
    np.testing.assert_allclose(losses["mesh"], losses["dp"], rtol=1e-5)


def test_set_reaches_a_nested_method_group_by_dotted_name(capsys):
    default = cli.load("fewstep-toy2d").config
    config = cli.apply_overrides("fewstep-toy2d", default, ("sid.alpha=0.7", "shortcut.coupling=independent", "steps=5"))
    assert (config.sid.alpha, config.shortcut.coupling, config.steps) == (0.7, "independent", 5)
    assert config.sid.fake_steps == default.sid.fake_steps == 4  # the experiment's own group default is kept
    with pytest.raises(SystemExit) as exit_info:
        cli.apply_overrides("fewstep-toy2d", default, ("sid.fake_steps=0",))
    assert exit_info.value.code == 2 and "fake_steps must be a positive int, got 0" in capsys.readouterr().err
    assert run_cli("show", "fewstep-toy2d") == 0
    assert "sid.alpha" in capsys.readouterr().out


def test_unknown_experiment_exits_2_with_a_suggestion(capsys):
    assert run_cli("train", "no-such-experiment") == 2
    assert "flow-toy2d" in capsys.readouterr().err
    assert run_cli("show", "flow-toy2") == 2
    assert "did you mean 'flow-toy2d'" in capsys.readouterr().err


def test_no_experiments_folder_says_they_ship_with_the_source(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JAXLAB_EXPERIMENTS", str(tmp_path / "missing"))
    assert run_cli("list") == 2
    assert "JAXLAB_EXPERIMENTS" in capsys.readouterr().err


def test_list_reads_the_files_without_importing_them():
    code = "import sys; from jaxlab import cli; cli.main(['list']); assert 'jax' not in sys.modules, 'jax imported'"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "flow-toy2d" in done.stdout and time.perf_counter() - start < 10


def test_set_help_shows_the_config_fields(capsys):
    assert run_cli("train", "flow-toy2d", "--set", "--help") == 0
    out = capsys.readouterr().out
    assert "--width" in out and "--dataset" in out


def test_train_help_has_one_default_per_option(capsys):
    assert run_cli("train", "--help") == 0
    out = capsys.readouterr().out
    assert "runs/NAME" in out and "(default: None)" not in out


def test_train_then_sample_end_to_end(tmp_path, capsys):
    workdir = tmp_path / "run"
    # A config.json left by a start that failed before its first checkpoint is replaced, not a refusal.
    train.write_json_atomic(workdir / "config.json", {"experiment": "flow-toy2d", "config": {"width": 7}})
    assert run_cli("train", "flow-toy2d", "--workdir", str(workdir), "--steps", "20", *TINY) == 0
    results = json.loads((workdir / "results.json").read_text())
    assert {"energy_distance", "energy_distance_noise"} <= set(results)
    assert all(isinstance(v, (int, float, str)) for v in results.values())
    for name in ("config.json", "metrics.jsonl", "loss.png", "samples.png", "samples.npy"):
        assert (workdir / name).is_file(), name
    assert json.loads((workdir / "config.json").read_text())["config"]["width"] == 16

    for name in ("config.json", "results.json", "metrics.jsonl"):
        assert stat.S_IMODE((workdir / name).stat().st_mode) == stat.S_IMODE((workdir / "loss.png").stat().st_mode)
    evaluated = [r["step"] for r in train.MetricsLog(workdir / "metrics.jsonl").read() if "eval_energy_distance" in r]
    assert evaluated == [10, 20]  # at every checkpoint, drawn in loss.png
    assert "evaluating the EMA parameters" in capsys.readouterr().out

    assert run_cli("sample", "flow-toy2d", "--workdir", str(workdir), "--num", "50", "--steps", "3") == 0
    samples = np.load(workdir / "samples-3steps-50.npy")
    assert samples.shape == (50, 2) and np.isfinite(samples).all()
    assert (workdir / "samples-3steps-50.png").is_file()
    assert "loaded checkpoint step 20" in capsys.readouterr().err

    # A truncated newest checkpoint: a short note, and sampling uses the intact previous one.
    for path in (workdir / "checkpoints" / "20" / "state" / "d").iterdir():
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert run_cli("sample", "flow-toy2d", "--workdir", str(workdir), "--num", "50") == 0
    err = capsys.readouterr().err
    (note,) = [line for line in err.splitlines() if "unreadable" in line]
    assert "falling back to step 10" in note and "intact" in note and len(note) < 600 and "Traceback" not in err
    assert (workdir / "samples-4steps-50.npy").is_file()  # named by the experiment's sample_steps

    # Resuming with a changed model is refused, and the run directory is left as it was.
    before = (workdir / "config.json").read_text()
    assert run_cli("train", "flow-toy2d", "--workdir", str(workdir), "--steps", "30", *TINY, "--set", "width=32") == 2
    assert "width (saved 16, now 32)" in capsys.readouterr().err
    assert (workdir / "config.json").read_text() == before

    # A damaged config.json: a clear message and exit 2 for train and sample, the file left as it was.
    (workdir / "config.json").write_text(before[: len(before) // 2])
    assert run_cli("train", "flow-toy2d", "--workdir", str(workdir), "--steps", "20", *TINY) == 2
    assert run_cli("sample", "flow-toy2d", "--workdir", str(workdir)) == 2
    err = capsys.readouterr().err
    assert err.count("config.json is damaged (not valid JSON") == 2 and "Traceback" not in err
    assert (workdir / "config.json").read_text() == before[: len(before) // 2]


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

    # Ctrl-C before training starts (config.json is written just before compiling): no traceback either.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (workdir / "config.json").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err and "interrupted" in err

    # If the first Ctrl-C was swallowed (CPython drops exceptions raised in GC callbacks), the loop
    # honoured it after one step and logged it: wait for a line this second run writes.
    metrics = workdir / "metrics.jsonl"
    logged = metrics.stat().st_size if metrics.exists() else 0
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.stat().st_size > logged) and time.monotonic() < deadline and process.poll() is None:
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
        "from jaxlab.train import Experiment, TrainConfig\nEXPERIMENTS = [Experiment('fine', 'a fine one', TrainConfig(), run=lambda c, w: {})]\n"
    )
    registry = cli.discover(tmp_path)
    assert list(registry) == ["fine"]
    assert "skipping" in capsys.readouterr().err


@pytest.mark.slow
def test_a_short_demo_run_beats_noise(tmp_path):
    """300 steps of the demo: with EMA warm-up its samples beat N(0, I) (without: energy ratio 131%)."""
    assert run_cli("train", "flow-toy2d", "--workdir", str(tmp_path / "run"), "--steps", "300") == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["energy_distance"] < 0.5 * results["energy_distance_noise"]


def test_data_dir_sets_the_config_field_of_an_experiment_that_has_one(tmp_path, monkeypatch):
    seen = {}

    def fake_run(experiment, config, workdir):  # record the parsed config, run nothing
        seen["data_dir"] = config.data_dir
        return {}

    monkeypatch.setattr(train, "run_experiment", fake_run)
    assert run_cli("train", "s4-digits", "--workdir", str(tmp_path / "run"), "--data-dir", str(tmp_path / "mnist")) == 0
    assert seen["data_dir"] == str(tmp_path / "mnist")


def test_data_dir_for_an_experiment_without_a_data_folder_exits_2(tmp_path, capsys):
    assert run_cli("train", "flow-toy2d", "--workdir", str(tmp_path / "run"), "--data-dir", str(tmp_path)) == 2
    assert "--data-dir: experiment 'flow-toy2d' reads no data folder" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
