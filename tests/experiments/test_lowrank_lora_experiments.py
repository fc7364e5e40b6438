"""lowrank-compare and lora-compare end to end through the CLI, in-process, at tiny sizes."""

import json
import math

from tests.cli_helpers import run_cli


def test_lowrank_compare_writes_errors_with_eckart_young_ordering(tmp_path):
    workdir = tmp_path / "lowrank"
    tiny = ["--set", "ranks=3", "--set", "steps=5", "--set", "width=16", "--set", "repeats=2"]
    assert run_cli("train", "lowrank-compare", "--workdir", str(workdir), *tiny) == 0
    results = json.loads((workdir / "results.json").read_text())
    for matrix in ("digits", "weight"):
        for k in (3,):
            stem = f"{matrix}_{{}}_rank{k}"
            optimum = results[stem.format("tsvd") + "_error"]
            assert 0 < optimum < 1
            assert results[stem.format("rsvd") + "_error"] >= optimum * (1 - 1e-4)
            assert results[stem.format("id") + "_error"] >= optimum * (1 - 1e-4)
            assert math.isfinite(results[stem.format("cr") + "_gram_error"])
            assert f"{stem.format('cr')}_error" not in results  # CR approximates the product, not the matrix
            for method in ("tsvd", "rsvd", "id", "cr"):
                assert results[f"{stem.format(method)}_ms"] > 0
    for name in ("errors_vs_rank.png", "time_vs_rank.png"):
        assert (workdir / name).stat().st_size > 1000
    assert "| interpolative (pivoted QR) |" in (workdir / "table.md").read_text()


def test_lora_compare_writes_final_accuracies_for_every_method(tmp_path):
    workdir = tmp_path / "lora"
    tiny = ["--set", "steps=6", "--set", "eval_every=3", "--set", "pretrain_steps=20", "--set", "width=16",
            "--set", "ranks=2", "--set", "ga_batches=2", "--set", "batch_size=16"]  # fmt: skip
    assert run_cli("train", "lora-compare", "--workdir", str(workdir), *tiny) == 0
    results = json.loads((workdir / "results.json").read_text())
    arms = ["full"] + [f"{m}_r2" for m in ("lora", "lora_plus", "lora_ga", "lora_pro")]
    for arm in arms:
        assert 0.0 <= results[f"final_accuracy_{arm}"] <= 1.0
        assert math.isfinite(results[f"final_loss_{arm}"])
    # width 16: hidden kernels 64x16 and 16x16 get 2 * (64 + 16) + 2 * (16 + 16) adapter entries, plus the head
    assert results["trainable_params_lora_r2"] == 2 * (64 + 16) + 2 * (16 + 16) + 16 * 10 + 10
    assert results["trainable_params_full"] == 64 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10
    curves = json.loads((workdir / "curves.json").read_text())
    assert [h["step"] for h in curves["lora_r2"]] == [0, 3, 6]
    # every LoRA arm starts from the pre-trained model's outputs (LoRA-GA offsets W0 to keep them)
    assert len({round(curves[arm][0]["new_loss"], 4) for arm in arms}) == 1
    assert (workdir / "curves.png").stat().st_size > 1000
    assert "| LoRA-Pro | 2 |" in (workdir / "table.md").read_text()


def test_lora_compare_rejects_a_rank_too_large_for_lora_ga(tmp_path, capsys):
    assert run_cli("train", "lora-compare", "--workdir", str(tmp_path / "run"), "--set", "ranks=40") == 2
    assert "ranks" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
