"""Atomic, sharding-aware checkpoints of a train state (orbax).

A checkpoint step directory holds two orbax items:

* ``state`` — the train state as a named tree (``params``, ``opt_state``,
  ``ema_params``, ``step``, ``key`` with the parameter names below them), so
  plain orbax reads it: ``ocp.StandardCheckpointer().restore(".../20/state")``;
* ``manifest`` — JSON: the leaves' paths, shapes and dtypes.

Restoring first reads the manifest and compares it with the state the current
configuration builds, so a checkpoint from another experiment or
configuration is refused with a message that says what differs, before
anything is loaded or overwritten. A checkpoint that cannot be read (a
truncated or damaged file) is skipped for the newest readable one, with a
warning naming both; training moves the unreadable one aside
(``checkpoints/<step>.unreadable``) rather than deleting it. Orbax writes each
step into a temporary directory and renames it when complete, so an
interrupted write never replaces the last good checkpoint.

Checkpoints of jaxlab before the named layout (``state`` stored as a flat
``{"00000": leaf, ...}`` tree; the manifest has no ``format``) are still read.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxlab.train.state import TrainState
from jaxlab.train.unraisable import ignore_unraisable

log = logging.getLogger("jaxlab.train")

T = TypeVar("T")
FORMAT = 2  # the named layout; manifests without "format" are the flat layout (1)


class CheckpointError(RuntimeError):
    """A checkpoint directory that cannot be used for this run."""


class UnreadableCheckpointError(CheckpointError):
    """One checkpoint step could not be read (damaged or not written by jaxlab)."""

    def __init__(self, step: int, reason: str):
        self.step, self.reason = step, reason
        super().__init__(f"checkpoint step {step} is unreadable ({reason})")


def _storable(state: TrainState) -> TrainState:
    """Typed PRNG keys are stored as their raw uint32 data."""
    return state.replace(key=jax.random.key_data(state.key))


def _manifest(tree: Any) -> list[dict[str, Any]]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return [{"path": jax.tree_util.keystr(path), "shape": list(np.shape(leaf)), "dtype": str(leaf.dtype)} for path, leaf in leaves]


def _flat(tree: Any) -> dict[str, Any]:
    """The format-1 layout, kept to read old checkpoints."""
    return {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(tree))}


def _named(tree: TrainState) -> dict[str, Any]:
    """The state as nested dicts keyed by field and parameter names (tuples as "0", "1", ...)."""
    return flax.serialization.to_state_dict(tree)


@contextlib.contextmanager
def _quiet_absl():
    """Orbax logs a damaged file's content at ERROR before raising; the raised error is reported instead."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        absl.setLevel(level)


def _is_closed_loop_callback(unraisable: Any) -> bool:
    tb, last = unraisable.exc_traceback, None
    while tb is not None:
        last, tb = tb, tb.tb_next
    return (
        isinstance(unraisable.exc_value, RuntimeError)
        and str(unraisable.exc_value) == "Event loop is closed"
        and last is not None
        and last.tb_frame.f_code.co_name == "_check_closed"
    )


def _silence_late_read_callbacks() -> None:
    """Drops the "Event loop is closed" errors of reads still in flight when a failed restore gave up.

    Orbax runs a restore's reads on an event loop that it closes as soon as
    one read fails; TensorStore then reports every other read's completion
    callback as an unraisable error, dozens of tracebacks after the one error
    that is reported, some of them before the failure reaches the caller.
    Only that exact error is dropped; installed before every read (a no-op
    when the filter is already in place).
    """
    ignore_unraisable(_is_closed_loop_callback)


def short_reason(error: BaseException, limit: int = 200) -> str:
    """A one-line cause of a read failure, without TensorStore's multi-kilobyte spec dumps."""
    text = str(error).split(" [tensorstore_spec", 1)[0].strip()
    array = re.search(r'Error reading "([^"/]+)/', text)
    cause = text.rsplit(": ", 1)[-1] if ": " in text else text
    reason = f"{type(error).__name__}: " + (f"array {array.group(1)}: " if array else "") + cause
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


class Checkpointer:
    """Saves and restores :class:`TrainState` under ``directory``.

    Saves are asynchronous: :meth:`save` returns once the state is copied to
    host memory and the files are written on a background thread (into a
    temporary directory renamed when complete), so training goes on meanwhile.
    Every read (:meth:`latest_step`, :meth:`all_steps`, restores) and
    :meth:`close` first waits for a write in flight.

    Args:
      directory: where the step directories live (created on first save).
      keep: how many of the most recent checkpoints to keep.
    """

    def __init__(self, directory: str | Path, *, keep: int = 3):
        self.directory = Path(directory).absolute()
        self.keep = keep
        self._manager = self._open()

    def _open(self) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(max_to_keep=self.keep, create=True, enable_async_checkpointing=True)
        return ocp.CheckpointManager(self.directory, options=options)

    def _finished(self) -> ocp.CheckpointManager:
        """The manager, once a save in flight is written."""
        self._manager.wait_until_finished()
        return self._manager

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self._finished().latest_step()

    def all_steps(self) -> list[int]:
        """The steps of all complete checkpoints, oldest first."""
        return sorted(self._finished().all_steps())

    def save(self, state: TrainState) -> None:
        """Writes ``state`` at its own step (a no-op if that step is already saved)."""
        step = int(state.step)
        if step in self.all_steps():
            return
        storable = _storable(state)
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(_named(storable)),
            manifest=ocp.args.JsonSave({"format": FORMAT, "leaves": _manifest(storable)}),
        )
        self._manager.save(step, args=args, force=True)

    def restore(self, abstract_state: TrainState, step: int | None = None) -> TrainState:
        """Loads one checkpoint into the structure and shardings of ``abstract_state``.

        Args:
          abstract_state: a state of ``jax.ShapeDtypeStruct`` leaves (with
            ``sharding``) as built by the current configuration; its ``key``
            leaf is a typed key.
          step: which step; the latest by default (see
            :meth:`restore_newest_readable` for falling back to older ones).

        Raises:
          CheckpointError: no checkpoint, an unreadable one
            (:class:`UnreadableCheckpointError`), or one whose leaves differ
            from what this configuration builds.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint found in {self.directory}")
        expected_tree = _storable_abstract(abstract_state)
        expected = _manifest(expected_tree)
        leaves, layout = self._read_manifest(step)
        _check_manifest(leaves, expected, where=f"{self.directory} step {step}")
        targets = _named(expected_tree) if layout >= FORMAT else _flat(expected_tree)
        _silence_late_read_callbacks()
        try:
            with _quiet_absl():
                restored = self._finished().restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(targets)))
            restored = restored["state"]
        except Exception as error:
            raise UnreadableCheckpointError(step, short_reason(error)) from error
        if layout >= FORMAT:
            state = flax.serialization.from_state_dict(expected_tree, restored)
        else:
            state = jax.tree.unflatten(jax.tree.structure(expected_tree), [restored[k] for k in sorted(restored)])
        return state.replace(key=jax.random.wrap_key_data(state.key))  # the default impl, as jax.random.key makes

    def restore_newest_readable(self, abstract_state: TrainState) -> tuple[TrainState, list[UnreadableCheckpointError]]:
        """The newest checkpoint that can be read, and the newer ones that could not.

        A checkpoint of another configuration is refused at once (older ones
        are of the same run); only unreadable ones are skipped.

        Raises:
          CheckpointError: no checkpoint at all, none readable (each one's
            reason listed), or a checkpoint of another configuration.
        """
        return self.newest_readable(lambda step: self.restore(abstract_state, step))

    def newest_readable(self, read: Callable[[int], T]) -> tuple[T, list[UnreadableCheckpointError]]:
        """``read(step)`` of the newest step it can read, and the errors of the newer steps it could not.

        Raises:
          CheckpointError: no checkpoint at all, or none readable (each one's reason listed).
        """
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"no checkpoint found in {self.directory}")
        skipped: list[UnreadableCheckpointError] = []
        for step in reversed(steps):
            try:
                return read(step), skipped
            except UnreadableCheckpointError as error:
                skipped.append(error)
        reasons = "; ".join(f"step {e.step}: {e.reason}" for e in skipped)
        raise CheckpointError(
            f"no readable checkpoint in {self.directory} ({reasons}). Nothing was changed; "
            "the files may be damaged or not written by jaxlab. Train into a new --workdir."
        )

    def _read_manifest(self, step: int) -> tuple[list[dict[str, Any]], int]:
        """One step's manifest: its leaves and its layout format (1: flat, 2: named)."""
        try:
            with _quiet_absl():
                found = self._finished().restore(step, args=ocp.args.Composite(manifest=ocp.args.JsonRestore()))
            return found["manifest"]["leaves"], found["manifest"].get("format", 1)
        except Exception as error:  # any failure to read means a damaged step directory
            raise UnreadableCheckpointError(step, f"manifest: {short_reason(error)}") from error

    def restore_field(self, field: str, step: int, sharding: jax.sharding.Sharding) -> Any:
        """One field of a stored state (``"ema_params"``, ``"params"``) alone, as nested dicts, placed by ``sharding``.

        Reads what the manifest lists under ``field``, so no configuration,
        optimizer or batch is needed to rebuild the rest of the state.

        Raises:
          UnreadableCheckpointError: a damaged step, or one without ``field``.
        """
        leaves, layout = self._read_manifest(step)
        prefix = f".{field}"
        wanted = [(i, leaf) for i, leaf in enumerate(leaves) if leaf["path"].startswith((prefix + "[", prefix + "."))]
        if not wanted:
            raise UnreadableCheckpointError(step, f"it holds no {field!r}")

        def abstract(leaf: dict[str, Any]) -> jax.ShapeDtypeStruct:
            return jax.ShapeDtypeStruct(tuple(leaf["shape"]), np.dtype(leaf["dtype"]), sharding=sharding)

        if layout >= FORMAT:
            target: dict[str, Any] = {}
            for _, leaf in wanted:
                _set_nested(target, [field, *_path_keys(leaf["path"][len(prefix) :])], abstract(leaf))
        else:
            target = {f"{i:05d}": abstract(leaf) for i, leaf in wanted}
        self._finished()  # a save in flight in this process
        reader = ocp.CheckpointManager(self.directory, item_handlers={"state": ocp.PyTreeCheckpointHandler()})
        restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding), target)
        _silence_late_read_callbacks()
        try:
            with _quiet_absl():
                restored = reader.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(target, restore_args=restore_args, partial_restore=True)))[
                    "state"
                ]
        except Exception as error:
            raise UnreadableCheckpointError(step, short_reason(error)) from error
        finally:
            reader.close()
        if layout >= FORMAT:
            return restored[field]
        flat: dict[str, Any] = {}
        for i, leaf in wanted:
            _set_nested(flat, _path_keys(leaf["path"][len(prefix) :]), restored[f"{i:05d}"])
        return flat

    def set_aside(self, step: int) -> Path:
        """Renames step ``step``'s directory to ``<step>.unreadable`` (kept, out of orbax's way); process 0 only."""
        self._finished()
        source = self.directory / str(step)
        target = self.directory / f"{step}.unreadable"
        suffix = 1
        while target.exists():
            suffix += 1
            target = self.directory / f"{step}.unreadable-{suffix}"
        if jax.process_index() == 0:
            source.rename(target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"jaxlab set aside checkpoint {step}")
        self._manager.close()
        self._manager = self._open()  # forget the step it had listed
        return target

    def close(self) -> None:
        self._manager.close()


_PATH_KEY = re.compile(r"\['((?:[^'\\]|\\.)*)'\]|\[(\d+)\]|\.(\w+)")


def _path_keys(path: str) -> list[str]:
    """``"['params']['Dense_0'][0]"`` (a ``jax.tree_util.keystr``) -> ``["params", "Dense_0", "0"]``, as state dicts key them."""
    keys = [next(group for group in match.groups() if group is not None) for match in _PATH_KEY.finditer(path)]
    if "".join(match.group(0) for match in _PATH_KEY.finditer(path)) != path:
        raise ValueError(f"cannot read the leaf path {path!r}")
    return keys


def _set_nested(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    tree[keys[-1]] = value


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
        f"{path}: checkpoint {found_by_path[path]['shape']} {found_by_path[path]['dtype']}, expected {leaf['shape']} {leaf['dtype']}"
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
