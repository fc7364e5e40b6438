"""Checkpoints: exact round trip, refusal of foreign or corrupt directories without changing them."""

import dataclasses
import hashlib
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxlab.generative import RectifiedFlow
from jaxlab.nn import TimeMLP
from jaxlab.train import CheckpointError, Checkpointer, restore_state, train
from tests.train.tiny import param_leaves


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


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


def test_corrupt_checkpoint_is_refused_and_left_alone(trained):
    _, (method, optimizer, batches, _), config, workdir = trained
    for path in (workdir / "checkpoints" / "20").rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(b"\x00garbage" * 3)
    before = _digest(workdir / "checkpoints")
    with pytest.raises(CheckpointError, match="step 20"):
        train(method, optimizer, batches, dataclasses.replace(config, steps=30), workdir, progress=False)
    assert _digest(workdir / "checkpoints") == before


def test_missing_checkpoint_is_a_clear_error(tiny, tmp_path):
    method, optimizer, batches, config = tiny
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        restore_state(method, optimizer, batches(0), config, tmp_path)
