"""TARFLOW and Fourier-density experiments end to end through the CLI, at tiny sizes."""

import math

import pytest

from tests.cli_helpers import overrides, results_of, run_cli


@pytest.mark.slow  # ~20 s of XLA compilation on 2 shared cores; tarflow-digits covers the same library paths
def test_tarflow_toy2d_reports_a_finite_held_out_nll_and_samples(tmp_path):
    workdir = tmp_path / "toy"
    tiny = overrides(steps=4, batch_size=64, width=16, depth=1, num_blocks=2, eval_samples=64, log_every=2, checkpoint_every=4,
                     flow_steps=4, flow_width=16, flow_depth=1, flow_nll_steps=2)  # fmt: skip
    assert run_cli("train", "tarflow-toy2d", "--workdir", str(workdir), *tiny) == 0
    results = results_of(workdir)
    assert math.isfinite(results["nll_heldout"]) and results["nll_true_entropy"] == math.log(6)
    assert math.isfinite(results["nll_flow_ode"]) and (workdir / "flow" / "checkpoints").is_dir()
    assert abs(results["density_grid_mass"] - 1.0) < 0.05  # the exact density is normalized
    for name in ("samples.png", "samples.npy", "metrics.jsonl", "loss.png"):
        assert (workdir / name).is_file(), name
    assert run_cli("sample", "tarflow-toy2d", "--workdir", str(workdir), "--num", "8") == 0


def test_tarflow_digits_reports_bits_per_dim_and_bayes_accuracy(tmp_path):
    workdir = tmp_path / "digits"
    tiny = overrides(steps=2, batch_size=16, width=16, depth=1, num_blocks=2, eval_draws=1, samples_per_class=1,
                     log_every=1, checkpoint_every=2)  # fmt: skip
    assert run_cli("train", "tarflow-digits", "--workdir", str(workdir), *tiny) == 0
    results = results_of(workdir)
    assert 0.0 < results["bits_per_dim"] < 12.0 and 0.0 <= results["bayes_accuracy"] <= 1.0
    assert results["bits_per_dim_uniform"] == math.log2(17) and results["sequence_length"] == 16
    assert (workdir / "samples.png").is_file()
    assert run_cli("sample", "tarflow-digits", "--workdir", str(workdir), "--num", "4") == 0


def test_fourier_density_1d_reports_every_mixture_for_both_models(tmp_path):
    workdir = tmp_path / "fourier"
    tiny = overrides(steps=20, num_terms=3, num_train=200, num_test=200, em_iterations=5)
    assert run_cli("train", "fourier-density-1d", "--workdir", str(workdir), *tiny) == 0
    results = results_of(workdir)
    for mixture in ("multimodal", "heavy_tailed", "skewed", "spike"):
        for model in ("fourier", "gmm", "true"):
            assert math.isfinite(results[f"nll_{model}_{mixture}"]), (model, mixture)
    assert results["fourier_free_parameters"] == results["gmm_free_parameters"] == 8
    for name in ("densities.png", "nll_table.json", "nll_table.md"):
        assert (workdir / name).is_file(), name
