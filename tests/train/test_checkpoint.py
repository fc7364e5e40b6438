"""Checkpoints: exact round trip, a named tree plain orbax reads, fall-back past unreadable steps,
refusal of foreign or wholly unreadable directories without changing them."""

import dataclasses
import hashlib
import logging
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxlab.generative import RectifiedFlow
from jaxlab.nn import TimeMLP
from jaxlab.train import CheckpointError, restore_params, restore_state, train
from jaxlab.train.checkpoint import _flat, _manifest, _path_keys, _storable
from tests.train.tiny import param_leaves


def _digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def trained(tiny, tmp_path):
    method, optimizer, batches, config = tiny
    config = dataclasses.replace(config, steps=20)
    state = train(method, optimizer, batches, config, tmp_path, progress=False)
    return state, tiny, config, tmp_path


def test_restore_returns_the_saved_state(trained):
    state, (method, optimizer, batches, _), config, workdir = trained
    restored = restore_state(method, optimizer, batches(0), config, workdir)
    assert int(restored.step) == 20
    for a, b in zip(param_leaves(state), param_leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(jax.random.key_data(restored.key), jax.random.key_data(state.key))


def _kept_steps(workdir: Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_checkpoints_every_n_steps_and_keeps_the_last_k(tiny, tmp_path):
    method, optimizer, batches, config = tiny
    train(method, optimizer, batches, dataclasses.replace(config, steps=25), tmp_path / "a", progress=False)
    assert _kept_steps(tmp_path / "a") == [10, 20, 25]  # every 10 and at the end
    config = dataclasses.replace(config, steps=25, keep_checkpoints=2)
    train(method, optimizer, batches, config, tmp_path / "b", progress=False)
    assert _kept_steps(tmp_path / "b") == [20, 25]


def test_foreign_checkpoint_is_refused_and_left_alone(trained):
    _, (_, optimizer, batches, _), config, workdir = trained
    before = _digest(workdir / "checkpoints")
    wider = TimeMLP(width=32, depth=1, time_features=8)
    other = RectifiedFlow(apply_fn=wider.apply, init_fn=wider.init, data_shape=(2,))
    with pytest.raises(CheckpointError, match=r"different experiment or configuration.*expected \[.*32"):
        train(other, optimizer, batches, dataclasses.replace(config, steps=30), workdir, progress=False)
    assert _digest(workdir / "checkpoints") == before


def _truncate_arrays(step_dir: Path) -> None:
    """Cuts every array data file of a step in half, as a full disk or an interrupted copy would."""
    data = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert data
    for path in data:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_unreadable_checkpoints_only_are_refused_and_left_alone(trained):
    _, (method, optimizer, batches, _), config, workdir = trained
    for step in ("10", "20"):
        for path in (workdir / "checkpoints" / step).rglob("*"):
            if path.is_file() and path.stat().st_size > 0:
                path.write_bytes(b"\x00garbage" * 3)
    before = _digest(workdir / "checkpoints")
    with pytest.raises(CheckpointError, match=r"no readable checkpoint.*step 20: .*step 10: ") as error:
        train(method, optimizer, batches, dataclasses.replace(config, steps=30), workdir, progress=False)
    assert "Nothing was changed" in str(error.value) and len(str(error.value)) < 800
    assert _digest(workdir / "checkpoints") == before


def test_a_truncated_newest_checkpoint_falls_back_to_the_intact_previous_one(trained, tmp_path, caplog):
    _, (method, optimizer, batches, _), config, workdir = trained
    _truncate_arrays(workdir / "checkpoints" / "20")
    damaged = _digest(workdir / "checkpoints" / "20")
    before = _digest(workdir / "checkpoints")

    # Sampling reads the newest readable step and changes nothing.
    with caplog.at_level(logging.INFO, logger="jaxlab.train"):
        restored = restore_state(method, optimizer, batches(0), config, workdir)
    assert int(restored.step) == 10
    assert "step 20 is unreadable" in caplog.text and "loaded checkpoint step 10" in caplog.text
    assert _digest(workdir / "checkpoints") == before

    # Training resumes from step 10, keeps the damaged step aside, and ends where a straight run does.
    caplog.clear()
    longer = dataclasses.replace(config, steps=30)
    with caplog.at_level(logging.WARNING, logger="jaxlab.train"):
        resumed = train(method, optimizer, batches, longer, workdir, progress=False)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "step 20 is unreadable" in warning and "falling back to step 10" in warning and "intact" in warning
    assert "tensorstore_spec" not in warning and len(warning) < 600
    assert _digest(workdir / "checkpoints" / "20.unreadable") == damaged  # moved, not deleted or overwritten
    straight = train(method, optimizer, batches, longer, tmp_path / "straight", progress=False)
    for a, b in zip(param_leaves(straight), param_leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(restore_state(method, optimizer, batches(0), longer, workdir).step) == 30


def test_checkpoints_are_a_named_tree_plain_orbax_reads(trained):
    state, _, _, workdir = trained
    tree = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / "20" / "state")
    assert set(tree) == {"params", "opt_state", "ema_params", "step", "key"}
    kernel = tree["ema_params"]["params"]["Dense_0"]["kernel"]
    np.testing.assert_array_equal(np.asarray(kernel), np.asarray(state.ema_params["params"]["Dense_0"]["kernel"]))
    assert int(tree["step"]) == 20


def test_flat_checkpoints_of_earlier_versions_still_load(trained, tmp_path):
    """The layout before named trees: ``{"00000": leaf, ...}`` and a manifest without ``format``."""
    state, (method, optimizer, batches, _), config, _ = trained
    storable = _storable(jax.device_get(state))
    options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False)
    with ocp.CheckpointManager(tmp_path / "old" / "checkpoints", options=options) as manager:
        args = ocp.args.Composite(state=ocp.args.StandardSave(_flat(storable)), manifest=ocp.args.JsonSave({"leaves": _manifest(storable)}))
        manager.save(20, args=args)
    restored = restore_state(method, optimizer, batches(0), config, tmp_path / "old")
    for a, b in zip(param_leaves(state), param_leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)


def test_missing_checkpoint_is_a_clear_error(tiny, tmp_path):
    method, optimizer, batches, config = tiny
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        restore_state(method, optimizer, batches(0), config, tmp_path)


def _assert_trees_equal(expected, actual) -> None:
    assert jax.tree.structure(expected) == jax.tree.structure(actual)
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(actual), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert a.dtype == b.dtype


def test_restore_params_reads_the_parameters_alone_without_optimizer_or_batch(trained):
    state, _, _, workdir = trained
    _assert_trees_equal(state.ema_params, restore_params(workdir))
    _assert_trees_equal(state.params, restore_params(workdir, ema=False))
    replicated = restore_params(workdir)["params"]["Dense_0"]["kernel"]
    assert replicated.sharding.is_fully_replicated and len(replicated.sharding.device_set) == jax.device_count()


def test_restore_params_places_the_leaves_by_the_given_sharding(trained):
    _, _, _, workdir = trained
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[1])
    params = restore_params(workdir, sharding=one_device)
    assert all(leaf.sharding == one_device for leaf in jax.tree.leaves(params))


def test_restore_params_falls_back_past_a_truncated_newest_checkpoint(trained, caplog):
    _, (method, optimizer, batches, _), config, workdir = trained
    _truncate_arrays(workdir / "checkpoints" / "20")
    before = _digest(workdir / "checkpoints")
    with caplog.at_level(logging.INFO, logger="jaxlab.train"):
        params = restore_params(workdir)
    _assert_trees_equal(restore_state(method, optimizer, batches(0), config, workdir).ema_params, params)
    assert "step 20 is unreadable" in caplog.text and "loaded checkpoint step 10" in caplog.text and "(ema_params only)" in caplog.text
    assert _digest(workdir / "checkpoints") == before


def test_restore_params_reads_flat_checkpoints_of_earlier_versions(trained, tmp_path):
    state, _, _, _ = trained
    storable = _storable(jax.device_get(state))
    options = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False)
    with ocp.CheckpointManager(tmp_path / "old" / "checkpoints", options=options) as manager:
        args = ocp.args.Composite(state=ocp.args.StandardSave(_flat(storable)), manifest=ocp.args.JsonSave({"leaves": _manifest(storable)}))
        manager.save(20, args=args)
    _assert_trees_equal(state.ema_params, restore_params(tmp_path / "old"))


def test_restore_params_without_checkpoints_is_a_clear_error_and_creates_nothing(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        restore_params(tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_leaf_paths_parse_to_state_dict_keys():
    assert _path_keys("['params']['Dense_0'][0].mu") == ["params", "Dense_0", "0", "mu"]
    with pytest.raises(ValueError, match="cannot read the leaf path"):
        _path_keys("['params']<odd>")
