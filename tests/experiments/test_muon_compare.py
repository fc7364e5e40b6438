"""muon-compare end to end through the CLI, in-process, at a tiny size."""

import json
import math

import pytest

from tests.cli_helpers import run_cli

TINY = ["--set", "steps=20", "--set", "eval_every=10", "--set", "width=32", "--set", "batch_size=32",
        "--set", "warmup_steps=5"]  # fmt: skip
KEYS = ("final_loss_adamw", "final_loss_muon", "final_loss_muon_spectral")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("muon_compare")
    assert run_cli("train", "muon-compare", "--workdir", str(workdir), *TINY) == 0
    return workdir


def test_results_have_the_contract_keys_with_finite_values(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    for key in KEYS:
        assert isinstance(results[key], float) and math.isfinite(results[key]), key
    for name in ("muon", "muon_spectral"):
        steps = results[f"steps_to_adamw_final_{name}"]
        assert steps is None or (isinstance(steps, int) and 0 <= steps <= 20)
        assert 0.0 <= results[f"final_accuracy_{name}"] <= 1.0
        assert results[f"train_seconds_{name}"] > 0


def test_steps_to_target_is_the_first_evaluation_at_or_below_adamw_final(run_dir):
    curves = json.loads((run_dir / "curves.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    for name, history in curves.items():
        assert [h["step"] for h in history] == [0, 10, 20]
        assert history[-1]["loss"] == results[f"final_loss_{name}"]
    target = curves["adamw"][-1]["loss"]
    for name in ("muon", "muon_spectral"):
        expected = next((h["step"] for h in curves[name] if h["loss"] <= target), None)
        assert results[f"steps_to_adamw_final_{name}"] == expected


def test_each_arm_is_a_resumable_trainer_run(run_dir):
    for name in ("adamw", "muon", "muon_spectral"):
        logged = [json.loads(line) for line in (run_dir / name / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in logged] == [10, 20]
        assert (run_dir / name / "checkpoints").is_dir()


def test_plots_and_table_are_written(run_dir):
    for name in ("loss_vs_step.png", "loss_vs_time.png"):
        assert (run_dir / name).stat().st_size > 1000
    table = (run_dir / "steps_to_target.md").read_text()
    assert "| AdamW |" in table and "| Muon |" in table and "| Muon + spectral decay |" in table


def test_bad_override_exits_2_before_writing(tmp_path, capsys):
    assert run_cli("train", "muon-compare", "--workdir", str(tmp_path / "run"), "--set", "eval_every=0") == 2
    assert "eval_every" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
