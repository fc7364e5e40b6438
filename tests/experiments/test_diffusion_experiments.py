"""ddpm-toy2d, reflow-toy2d, ddpm-digits / flow-digits and upsample-digits end to end through the CLI, tiny."""

import math

import numpy as np
import pytest

from tests.cli_helpers import overrides, results_of, run_cli

TOY = dict(batch_size=64, width=16, depth=1, eval_samples=64, nll_samples=16, nll_steps=2, log_every=2)


def test_ddpm_toy2d_reports_energy_per_sampler_and_an_nll(tmp_path):
    workdir = tmp_path / "ddpm"
    assert run_cli("train", "ddpm-toy2d", "--workdir", str(workdir), *overrides(steps=4, checkpoint_every=4, step_counts=1, **TOY)) == 0
    results = results_of(workdir)
    for sampler in ("ddpm", "ddim", "heun"):
        assert math.isfinite(results[f"energy_{sampler}_1"])
    assert math.isfinite(results["nll_nats"]) and results["nll_true_nats"] == pytest.approx(math.log(6))
    for name in ("energy_table.json", "energy_table.md", "energy_vs_steps.png", "samples.png", "loss.png"):
        assert (workdir / name).is_file(), name
    assert run_cli("sample", "ddpm-toy2d", "--workdir", str(workdir), "--num", "8", "--steps", "1") == 0


@pytest.mark.slow  # two trainings: ~9 s of compiles on 2 cores
def test_reflow_toy2d_trains_twice_and_reports_the_targets(tmp_path):
    workdir = tmp_path / "reflow"
    tiny = overrides(steps=4, reflow_steps=4, checkpoint_every=4, num_couplings=128, coupling_steps=2, straightness_steps=2, step_counts=1, **TOY)
    assert run_cli("train", "reflow-toy2d", "--workdir", str(workdir), *tiny) == 0
    results = results_of(workdir)
    for key in ("energy_1step_before", "energy_1step_after", "straightness_before", "straightness_after", "nll_nats_after"):
        assert math.isfinite(results[key]), key
    assert results["energy_1step_before"] == results["energy_euler_1_before"]
    assert (workdir / "rectified_1" / "checkpoints").is_dir() and (workdir / "rectified_2" / "checkpoints").is_dir()
    assert (workdir / "reflow_table.md").is_file() and (workdir / "samples.png").is_file()
    assert run_cli("sample", "reflow-toy2d", "--workdir", str(workdir), "--num", "8") == 0


@pytest.fixture
def shared_cache(tmp_path_factory, monkeypatch):
    """One feature-classifier cache for the session's digits tests (trained once)."""
    directory = tmp_path_factory.getbasetemp() / "jaxlab-cache"
    monkeypatch.setenv("JAXLAB_CACHE", str(directory))
    return directory


DIGITS = dict(steps=2, batch_size=16, channels="8", guidance_scales="1.0", samples_per_class=1, sample_steps=2,
              nll_images=4, nll_steps=2, log_every=1, checkpoint_every=2)  # fmt: skip


@pytest.mark.slow
def test_ddpm_digits_then_upsample_digits_from_its_checkpoint(tmp_path, shared_cache):
    base = tmp_path / "ddpm-digits"
    assert run_cli("train", "ddpm-digits", "--workdir", str(base), *overrides(**DIGITS)) == 0
    results = results_of(base)
    assert 0.0 < results["bits_per_dim"] < 20.0 and results["bits_per_dim_uniform"] == pytest.approx(math.log2(17))
    assert math.isfinite(results["frechet_w1"]) and 0.0 <= results["accuracy_w1"] <= 1.0
    assert (base / "samples.png").is_file() and (base / "guidance_table.md").is_file()
    assert any(shared_cache.glob("digits_features_*.npz"))

    upsampled = tmp_path / "upsample"
    assert run_cli("train", "upsample-digits", "--workdir", str(upsampled), *overrides(**DIGITS, base_workdir=str(base))) == 0
    results = results_of(upsampled)
    for name in ("8x8", "plain", "guided"):
        assert 0.0 <= results[f"accuracy_{name}"] <= 1.0 and math.isfinite(results[f"frechet_{name}"])
    assert np.load(upsampled / "samples_guided_16.npy").shape == (10, 16, 16)
    assert (upsampled / "upsample_grid.png").is_file()


@pytest.mark.slow
def test_flow_digits_runs(tmp_path, shared_cache):
    workdir = tmp_path / "flow-digits"
    assert run_cli("train", "flow-digits", "--workdir", str(workdir), *overrides(**DIGITS)) == 0
    assert math.isfinite(results_of(workdir)["bits_per_dim"])


@pytest.mark.slow
def test_ddpm_digits_trains_in_bfloat16(tmp_path, shared_cache):
    workdir = tmp_path / "ddpm-digits-bf16"
    assert run_cli("train", "ddpm-digits", "--workdir", str(workdir), *overrides(**DIGITS, dtype="bfloat16")) == 0
    results = results_of(workdir)
    assert 0.0 < results["bits_per_dim"] < 20.0 and math.isfinite(results["frechet_w1"])
