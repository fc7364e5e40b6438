"""Atomic, sharding-aware checkpoints of a train state (orbax).

A checkpoint stores the state's leaves as a flat ``{index: array}`` tree plus a
JSON manifest of their paths, shapes and dtypes. Restoring first reads the
manifest and compares it with the state the current configuration builds, so
a checkpoint from another experiment or configuration is refused with a
message that says what differs, before anything is loaded or overwritten.
Orbax writes each step into a temporary directory and renames it when
complete, so an interrupted write never replaces the last good checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxlab.train.state import TrainState

logging.getLogger("absl").setLevel(logging.WARNING)


class CheckpointError(RuntimeError):
    """A checkpoint directory that cannot be used for this run."""


def _storable(state: TrainState) -> TrainState:
    """Typed PRNG keys are stored as their raw uint32 data."""
    return state.replace(key=jax.random.key_data(state.key))


def _manifest(tree: Any) -> list[dict[str, Any]]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return [
        {"path": jax.tree_util.keystr(path), "shape": list(np.shape(leaf)), "dtype": str(leaf.dtype)}
        for path, leaf in leaves
    ]


def _flat(tree: Any) -> dict[str, Any]:
    return {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(tree))}


class Checkpointer:
    """Saves and restores :class:`TrainState` under ``directory``.

    Args:
      directory: where the step directories live (created on first save).
      keep: how many of the most recent checkpoints to keep.
    """

    def __init__(self, directory: str | Path, *, keep: int = 3):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self._manager.latest_step()

    def save(self, state: TrainState) -> None:
        """Writes ``state`` at its own step (a no-op if that step is already saved)."""
        step = int(state.step)
        if step in self._manager.all_steps():
            return
        storable = _storable(state)
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(_flat(storable)),
            manifest=ocp.args.JsonSave({"leaves": _manifest(storable)}),
        )
        self._manager.save(step, args=args, force=True)
        self._manager.wait_until_finished()

    def restore(self, abstract_state: TrainState, step: int | None = None) -> TrainState:
        """Loads a checkpoint into the structure and shardings of ``abstract_state``.

        Args:
          abstract_state: a state of ``jax.ShapeDtypeStruct`` leaves (with
            ``sharding``) as built by the current configuration; its ``key``
            leaf is a typed key.
          step: which step; the latest by default.

        Raises:
          CheckpointError: no checkpoint, an unreadable one, or one whose
            leaves differ from what this configuration builds.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint found in {self.directory}")
        expected_tree = _storable_abstract(abstract_state)
        expected = _manifest(expected_tree)
        try:
            found = self._manager.restore(step, args=ocp.args.Composite(manifest=ocp.args.JsonRestore()))
        except Exception as error:  # noqa: BLE001 - any failure to read means a corrupt directory
            raise CheckpointError(
                f"checkpoint at step {step} in {self.directory} is unreadable ({type(error).__name__}: {error}); "
                "it may be corrupt or not written by jaxlab. Nothing was changed; use another --workdir."
            ) from error
        _check_manifest(found["manifest"]["leaves"], expected, where=f"{self.directory} step {step}")
        targets = _flat(expected_tree)
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(targets))
            )["state"]
        except Exception as error:  # noqa: BLE001
            raise CheckpointError(
                f"checkpoint at step {step} in {self.directory} could not be loaded "
                f"({type(error).__name__}: {error}); it may be corrupt. Nothing was changed."
            ) from error
        leaves = [restored[name] for name in sorted(restored)]
        state = jax.tree.unflatten(jax.tree.structure(expected_tree), leaves)
        return state.replace(key=jax.random.wrap_key_data(state.key))  # the default impl, as jax.random.key makes

    def close(self) -> None:
        self._manager.close()


def _storable_abstract(abstract_state: TrainState) -> TrainState:
    key_data = jax.eval_shape(jax.random.key_data, abstract_state.key)
    sharding = getattr(abstract_state.key, "sharding", None)
    return abstract_state.replace(key=jax.ShapeDtypeStruct(key_data.shape, key_data.dtype, sharding=sharding))


def _check_manifest(found: list[dict], expected: list[dict], *, where: str) -> None:
    if found == expected:
        return
    found_by_path = {leaf["path"]: leaf for leaf in found}
    expected_by_path = {leaf["path"]: leaf for leaf in expected}
    missing = sorted(set(expected_by_path) - set(found_by_path))
    extra = sorted(set(found_by_path) - set(expected_by_path))
    changed = [
        f"{path}: checkpoint {found_by_path[path]['shape']} {found_by_path[path]['dtype']}, "
        f"expected {leaf['shape']} {leaf['dtype']}"
        for path, leaf in expected_by_path.items()
        if path in found_by_path and found_by_path[path] != leaf
    ]
    details = [f"missing leaves: {missing[:5]}"] if missing else []
    details += [f"unexpected leaves: {extra[:5]}"] if extra else []
    details += changed[:5]
    raise CheckpointError(
        f"the checkpoint in {where} was written by a different experiment or configuration "
        f"({'; '.join(details) or 'leaf order differs'}). Nothing was changed; use another --workdir."
    )
