"""Smoke runs of lm-extrapolation and lm-attention through the CLI at toy size."""

import importlib.util
import json
import math
import sys
from pathlib import Path

from jaxlab import cli
from tests.cli_helpers import run_cli

TINY_MODEL = ["--set", "steps=2", "--set", "batch_size=8", "--set", "context=16", "--set", "d_model=16", "--set", "num_layers=1",
              "--set", "num_heads=2", "--set", "d_ff=16", "--set", "checkpoint_every=2", "--set", "log_every=1"]  # fmt: skip


def load_experiment(name):
    spec = importlib.util.spec_from_file_location(f"test_{name}", Path(cli.experiments_dir()) / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_lm_extrapolation_smoke(tmp_path):
    # one plain and one rectified setting (the two code paths); the default config runs all seven
    extra = ["--set", "eval_contexts=32", "--set", "eval_tokens=64", "--set", "rerope_window=8", "--set", "leaky_k=4",
             "--set", "methods=yarn leaky_rerope"]  # fmt: skip
    assert run_cli("train", "lm-extrapolation", "--workdir", str(tmp_path), *TINY_MODEL, *extra) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    for method in ("yarn", "leaky_rerope"):
        for key in (f"loss_{method}_32", f"loss_{method}_logn_32"):
            assert math.isfinite(results[key]) and 0 < results[key] < 10, key
    assert results["loss_yarn_32"] != results["loss_leaky_rerope_32"]  # the settings really differ
    for name in ("loss_table.json", "loss_table.md", "extrapolation.png", "loss_by_position.png", "metrics.jsonl"):
        assert (tmp_path / name).exists(), name
    assert "| leaky_rerope_logn |" in (tmp_path / "loss_table.md").read_text()


def test_lm_extrapolation_default_settings_cover_every_method():
    module = load_experiment("lm_extrapolation")
    config = module.Config()
    assert config.methods == ("rope", "pi", "ntk", "dynamic_ntk", "yarn", "rerope", "leaky_rerope")
    assert config.context == 128 and config.eval_contexts == (128, 256, 512, 1024, 2048)
    leaky = module.rope_settings(config, "leaky_rerope", True)
    assert leaky.logn and leaky.window + (2048 - leaky.window) / leaky.leaky_k < config.context  # stays in range
    assert module.rope_settings(config, "yarn", False).factor == 16


def test_lm_attention_models_have_matched_parameter_counts():
    module = load_experiment("lm_attention")
    config = module.Config()
    counts = {v: module.param_count(module.matched_model(config, v)) for v in module.VARIANTS}
    unit = 3 * config.d_model * config.num_layers  # parameters of one feed-forward unit
    assert all(abs(n - counts["mha"]) <= unit / 2 for n in counts.values()), counts


def test_lm_attention_smoke(tmp_path):
    extra = ["--set", "variants=mla", "--set", "eval_windows=4", "--set", "decode_steps=4", "--set", "decode_cache_len=32", "--set", "decode_rounds=1",
             "--set", "mla_kv_lora_rank=8", "--set", "mla_rope_dim=4"]  # fmt: skip
    assert run_cli("train", "lm-attention", "--workdir", str(tmp_path), *TINY_MODEL, *extra) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["kv_bytes_per_token_mla"] == 1 * (8 + 4) * 4  # 1 layer × (d_c + d_r) × float32
    assert math.isfinite(results["val_loss_mla"]) and results["decode_tokens_per_s_mla"] > 0
    for name in ("attention_table.json", "attention_table.md", "attention.png", "mla/metrics.jsonl"):
        assert (tmp_path / name).exists(), name
