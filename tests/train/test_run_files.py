"""Run-directory bookkeeping: fresh starts, refusals, damaged config.json, file modes, EMA warm-up, plots."""

import dataclasses
import json
import os
import stat

import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.train import (
    Experiment,
    MetricsLog,
    TrainConfig,
    WorkdirError,
    ema_decay_at,
    ema_update,
    prepare_workdir,
    read_run_config,
    validate_config,
    write_json_atomic,
)
from jaxlab.train.experiment import config_from_dict, config_to_dict, flat_fields
from jaxlab.train.plots import _plain_numbers, default_names


@dataclasses.dataclass(frozen=True)
class WideConfig(TrainConfig):
    width: int = 16
    sizes: tuple[int, ...] = (1, 2)


EXPERIMENT = Experiment("wide", "a test experiment", WideConfig(), run=lambda config, workdir: {})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("width", -5, "width must be a positive int, got -5"),
        ("width", 0, "width must be a positive int, got 0"),
        ("sizes", (1, 0), "sizes must hold only ints >= 1"),
        ("learning_rate", float("nan"), "learning_rate must be a finite number"),
        ("learning_rate", 0.0, "learning_rate must be > 0"),
        ("warmup_steps", -1, "warmup_steps must be an int >= 0"),
    ],
)
def test_every_field_is_checked_by_its_type(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        WideConfig(**{field: value})
    WideConfig(warmup_steps=0, seed=0)  # zero is allowed where it means something


def test_batch_size_must_divide_over_the_devices():
    with pytest.raises(ValueError, match=r"batch_size must be divisible by the number of devices \(8\), got 100"):
        validate_config(EXPERIMENT, WideConfig(batch_size=100), num_devices=8)
    validate_config(EXPERIMENT, WideConfig(batch_size=96), num_devices=8)
    validate_config(dataclasses.replace(EXPERIMENT, sharded_fields=()), WideConfig(batch_size=100), num_devices=8)


def test_a_directory_without_progress_is_fresh_and_one_with_progress_is_kept(tmp_path):
    prepare_workdir(EXPERIMENT, WideConfig(width=-1 + 33), tmp_path)  # a start that failed before any checkpoint
    prepare_workdir(EXPERIMENT, WideConfig(width=16), tmp_path)  # re-run with other values: a fresh start
    assert read_run_config(EXPERIMENT, tmp_path).width == 16

    (tmp_path / "checkpoints" / "10").mkdir(parents=True)
    before = (tmp_path / "config.json").read_text()
    with pytest.raises(WorkdirError, match=r"width \(saved 16, now 32\)"):
        prepare_workdir(EXPERIMENT, WideConfig(width=32), tmp_path)
    assert (tmp_path / "config.json").read_text() == before
    prepare_workdir(EXPERIMENT, WideConfig(width=16, steps=5000), tmp_path)  # extending a run is fine


def test_results_count_as_progress(tmp_path):
    prepare_workdir(EXPERIMENT, WideConfig(), tmp_path)
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(WorkdirError, match="different configuration"):
        prepare_workdir(EXPERIMENT, WideConfig(width=8), tmp_path)


@pytest.mark.parametrize(
    ("content", "reason"),
    [('{"experiment": "wide", "config": {"wid', "not valid JSON"), ('["a"]', "expected an object"),
     ('{"experiment": "wide", "config": {"width": -3}}', "width must be a positive int")],
)  # fmt: skip
def test_a_damaged_config_json_is_a_clear_error(tmp_path, content, reason):
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(WorkdirError, match=f"config.json is damaged \\({reason}.*nothing was changed"):
        read_run_config(EXPERIMENT, tmp_path)
    with pytest.raises(WorkdirError, match="damaged"):
        prepare_workdir(EXPERIMENT, WideConfig(), tmp_path)
    assert (tmp_path / "config.json").read_text() == content


def test_run_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "config.json", {"a": 1})
        write_json_atomic(tmp_path / "config.json", {"a": 2})  # replacing keeps them too
        (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"st')  # a line cut short
        log = MetricsLog(tmp_path / "metrics.jsonl")
        assert [r["step"] for r in log.read()] == [1, 2]
        log.truncate_after(1)
    finally:
        os.umask(old)
    for name in ("config.json", "metrics.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    assert json.loads((tmp_path / "config.json").read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_ema_warmup_schedule():
    steps = jnp.arange(20000)
    decay = ema_decay_at(steps, 0.999)
    np.testing.assert_allclose(decay[:3], [1 / 10, 2 / 11, 3 / 12], rtol=1e-6)
    assert float(decay.max()) == pytest.approx(0.999, rel=1e-6) and 8990 <= int(jnp.argmax(decay >= 0.999)) <= 8991
    assert bool(jnp.all(jnp.diff(decay) >= 0))
    assert float(ema_decay_at(5, 0.999, warmup=False)) == pytest.approx(0.999)
    assert float(ema_decay_at(10**6, 0.9)) == pytest.approx(0.9)


def test_ema_warmup_forgets_the_initial_weights_of_a_short_run():
    """After 300 steps the EMA of 0.999 without warm-up still holds 74% of the initial weights."""

    def weight_of_init(warmup):
        ema = jnp.ones(())  # the initial weights are 1, every later one 0
        for step in range(300):
            ema = ema_update(ema, jnp.zeros(()), ema_decay_at(step, 0.999, warmup=warmup))
        return float(ema)

    assert weight_of_init(False) == pytest.approx(0.999**300, rel=1e-4) and weight_of_init(False) > 0.74
    assert weight_of_init(True) < 1e-10


def test_loss_plot_shows_grad_norm_and_evaluations_with_plain_tick_labels():
    records = [{"step": 10, "loss": 1.9, "grad_norm": 3.0, "steps_per_sec": 9.0, "flow_loss": 1.0, "mse": 1.9},
               {"step": 20, "loss": 1.8, "grad_norm": 2.0, "steps_per_sec": 9.0, "eval_energy_distance": 0.01, "mse": 1.8}]  # fmt: skip
    assert default_names(records) == ("loss", "grad_norm", "eval_energy_distance", "flow_loss")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    _plain_numbers(ax, (1.8, 1.9))  # less than a decade: linear, plain numbers
    assert ax.get_yscale() == "linear" and "10" not in ax.yaxis.get_major_formatter().format_data(1.9)
    _plain_numbers(ax, (0.01, 2.0))
    assert ax.get_yscale() == "log" and ax.yaxis.get_major_formatter()(1.0, 0) == "1"
    assert ax.yaxis.get_major_formatter()(0.01, 0) == "0.01"
    plt.close(fig)


@dataclasses.dataclass(frozen=True)
class _Group:
    alpha: float = 1.0
    sizes: tuple[int, ...] = (1, 2)


@dataclasses.dataclass(frozen=True)
class _NestedConfig(TrainConfig):
    group: _Group = dataclasses.field(default_factory=_Group)
    group_size: int = 3  # a top-level field whose name starts like the group's


def test_nested_config_groups_round_trip_through_config_json():
    config = _NestedConfig(group=_Group(alpha=0.5, sizes=(3, 4)), group_size=7)
    restored = config_from_dict(_NestedConfig(), json.loads(json.dumps(config_to_dict(config))))
    assert restored == config and isinstance(restored.group, _Group) and restored.group.sizes == (3, 4)


def test_flat_keys_from_before_a_group_was_nested_are_read_into_the_group():
    restored = config_from_dict(_NestedConfig(), {"group_alpha": 0.25, "group_sizes": [5], "group_size": 9})
    assert restored.group == _Group(alpha=0.25, sizes=(5,)) and restored.group_size == 9
    with pytest.raises(WorkdirError, match="group_beta"):
        config_from_dict(_NestedConfig(), {"group_beta": 1.0})


def test_flat_fields_names_nested_fields_as_set_takes_them():
    fields = flat_fields(_NestedConfig())
    assert {key: fields[key] for key in ("group.alpha", "group.sizes", "group_size")} == {"group.alpha": 1.0, "group.sizes": (1, 2), "group_size": 3}
    assert "group" not in fields


def test_a_changed_nested_field_is_named_when_a_run_directory_refuses_it(tmp_path):
    experiment = Experiment("nested", "a test experiment", _NestedConfig(), run=lambda config, workdir: {})
    prepare_workdir(experiment, _NestedConfig(), tmp_path)
    (tmp_path / "checkpoints" / "5").mkdir(parents=True)
    with pytest.raises(WorkdirError, match=r"group\.alpha \(saved 1\.0, now 0\.5\)"):
        prepare_workdir(experiment, _NestedConfig(group=_Group(alpha=0.5)), tmp_path)
