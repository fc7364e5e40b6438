"""fewstep-toy2d / fewstep-digits end to end through the CLI, tiny."""

import math

import pytest

from tests.cli_helpers import overrides, results_of, run_cli

TOY = dict(steps=3, batch_size=32, width=16, depth=1, eval_samples=32, log_every=1, checkpoint_every=3, warmup_steps=0,
           **{"shortcut.max_steps": 4}, step_counts="1 4")  # fmt: skip


def check_toy(workdir, methods, multistep=True):
    results = results_of(workdir)
    for name in methods:
        assert (workdir / name / "checkpoints").is_dir(), name
        assert math.isfinite(results[f"energy_{name}_1"]) and results[f"wall_{name}_1"] > 0.0, name
        if name != "sid" and multistep:
            assert math.isfinite(results[f"energy_{name}_4"]), name
    assert "energy_sid_4" not in results  # SiD is one-step only
    assert results["energy_teacher_128" if "energy_flow_128" in results else "energy_flow_1"] is not None
    for name in ("fewstep_table.json", "fewstep_table.md", "samples.png"):
        assert (workdir / name).is_file(), name
    return results


def test_fewstep_toy2d_flow_sid_ign(tmp_path):
    workdir = tmp_path / "fewstep"
    fast = {**TOY, "step_counts": "1"}  # one sampler compile per method
    assert run_cli("train", "fewstep-toy2d", "--workdir", str(workdir), *overrides(methods="sid ign", **fast)) == 0
    results = check_toy(workdir, ("flow", "sid", "ign"), multistep=False)  # flow is trained as SiD's teacher
    assert results["target_sid_1_over_teacher_128"] is None  # no 128-step figure in this tiny run
    assert run_cli("sample", "fewstep-toy2d", "--workdir", str(workdir), "--num", "8", "--steps", "2") == 0


def test_fewstep_toy2d_shortcut_with_both_couplings(tmp_path):
    workdir = tmp_path / "fewstep"
    methods = ("shortcut", "shortcut_independent")
    assert run_cli("train", "fewstep-toy2d", "--workdir", str(workdir), *overrides(methods=" ".join(methods), **TOY)) == 0
    results = results_of(workdir)
    for name in methods:
        assert math.isfinite(results[f"energy_{name}_1"]) and math.isfinite(results[f"energy_{name}_4"]), name
    # The OT-paired and the independently paired model train on different pairs, so they differ.
    assert results["energy_shortcut_1"] != results["energy_shortcut_independent_1"]


@pytest.mark.slow  # eight trainings and samplers: ~30 s of compiles on 2 cores
def test_fewstep_toy2d_all_methods(tmp_path):
    workdir = tmp_path / "fewstep"
    assert run_cli("train", "fewstep-toy2d", "--workdir", str(workdir), *overrides(**TOY)) == 0
    results = check_toy(workdir, ("flow", "ct", "ict", "cd", "shortcut", "shortcut_independent", "sid", "ign"))
    for name in ("ct", "ict", "cd"):
        assert math.isfinite(results[f"target_flow_1_over_{name}_1"]), name


def test_unknown_method_is_rejected(tmp_path):
    assert run_cli("train", "fewstep-toy2d", "--workdir", str(tmp_path / "x"), *overrides(methods="flow gan")) == 2


@pytest.fixture
def shared_cache(tmp_path_factory, monkeypatch):
    """One feature-classifier cache for the session's digits tests (trained once)."""
    directory = tmp_path_factory.getbasetemp() / "jaxlab-cache"
    monkeypatch.setenv("JAXLAB_CACHE", str(directory))
    return directory


@pytest.mark.slow  # seven U-Net trainings plus the feature classifier
def test_fewstep_digits_all_methods(tmp_path, shared_cache):
    workdir = tmp_path / "fewstep-digits"
    tiny = dict(steps=2, batch_size=16, channels="8", eval_samples=20, log_every=1, checkpoint_every=2, warmup_steps=0,
                **{"shortcut.max_steps": 4}, step_counts="1 2")  # fmt: skip
    assert run_cli("train", "fewstep-digits", "--workdir", str(workdir), *overrides(**tiny)) == 0
    results = results_of(workdir)
    for name in ("flow", "ct", "ict", "cd", "shortcut", "sid", "ign"):
        assert math.isfinite(results[f"frechet_{name}_1"]) and results[f"wall_{name}_1"] > 0.0, name
    assert math.isfinite(results["frechet_train_vs_test"])
    assert (workdir / "samples.png").is_file() and (workdir / "fewstep_table.md").is_file()
    assert run_cli("sample", "fewstep-digits", "--workdir", str(workdir), "--num", "4", "--steps", "1") == 0
