"""vq-digits and ddcm-digits end to end through the CLI, tiny."""

import json
import math

import pytest

from tests.cli_helpers import overrides, results_of, run_cli


def test_vq_digits_reports_every_method_at_the_same_code_count(tmp_path):
    workdir = tmp_path / "vq"
    tiny = overrides(steps=6, hidden=8, replace_every=3, levels="4 4", num_tokens=2, kmeans_iterations=2, grid_images=3)
    assert run_cli("train", "vq-digits", "--workdir", str(workdir), *tiny) == 0
    results = results_of(workdir)
    assert results["num_codes"] == 16
    for method in ("ste", "ste_restart", "rotation", "simvq", "fsq"):
        assert results[f"{method}_bits_per_image"] == pytest.approx(2 * 4.0)
        assert math.isfinite(results[f"{method}_test_mse"]) and results[f"{method}_test_mse"] > 0
        assert 1.0 <= results[f"{method}_perplexity"] <= 16.0 + 1e-3
        assert 0.0 < results[f"{method}_utilization"] <= 1.0
        assert results[f"{method}_dead_codes"] == round(16 * (1 - results[f"{method}_utilization"]))
    table = json.loads((workdir / "vq_table.json").read_text())
    assert set(table["rows"]) == {"ste", "ste_restart", "rotation", "simvq", "fsq"}
    assert (workdir / "vq_table.md").is_file() and (workdir / "reconstructions.png").is_file()


def test_vq_digits_rejects_an_unknown_method(tmp_path, capsys):
    assert run_cli("train", "vq-digits", "--workdir", str(tmp_path / "bad"), *overrides(methods="ste gumbel")) == 2
    assert "methods must be" in capsys.readouterr().err


@pytest.mark.slow  # a U-Net compile plus three codec settings: ~30 s of CPU on 2 cores
def test_ddcm_digits_rate_psnr_and_exact_round_trip(tmp_path):
    workdir = tmp_path / "ddcm"
    tiny = overrides(steps=2, batch_size=16, channels="8", log_every=1, checkpoint_every=2, ddcm_steps=3, codes="1 4",
                     mp_codes=4, atoms="2", encode_images=4)  # fmt: skip
    assert run_cli("train", "ddcm-digits", "--workdir", str(workdir), *tiny) == 0
    results = results_of(workdir)
    assert results["roundtrip_exact"] is True
    assert results["K1_M1_bits_per_image"] == 0.0 and results["K4_M1_bits_per_image"] == pytest.approx(2 * 2.0)
    assert results["K4_M2_bits_per_image"] == pytest.approx(2 * (2.0 + 4.0))
    assert all(math.isfinite(results[f"{name}_psnr"]) for name in ("K1_M1", "K4_M1", "K4_M2"))
    assert (workdir / "ddpm" / "checkpoints").is_dir()
    for name in ("rate_psnr.json", "rate_psnr.md", "rate_psnr.png", "reconstructions.png"):
        assert (workdir / name).is_file(), name
