"""Run-directory files: atomic writes of JSON, text, figures and arrays, and the ``metrics.jsonl`` log.

Only process 0 writes (every process of a multi-host run computes the same
figures); on the others these functions do nothing. Files are created with
the usual permissions (0666 less the umask), like any other file a run writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np


def _jsonable(value: Any) -> Any:
    """Numbers as plain floats/ints; non-finite floats as strings (JSON has no NaN)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def is_writer() -> bool:
    """Whether this process writes run files: process 0 only."""
    import jax

    return jax.process_index() == 0


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) to write to; renamed over ``path`` if the block succeeds.

    For files written by other libraries (``np.save``, ``savefig``): a crash
    or a full disk leaves the previous file as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _replace_atomically(path: Path, text: str) -> None:
    """Writes ``text`` to a temporary file beside ``path``, syncs it to disk, and renames it over ``path``."""
    # os.open with 0o666 applies the umask (tempfile.mkstemp would force 0600).
    with atomic_path(path) as tmp, os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Writes JSON to a temporary file in the same directory, then renames it over ``path`` (process 0 only)."""
    if not is_writer():
        return
    _replace_atomically(Path(path), json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file renamed over it (process 0 only)."""
    if is_writer():
        _replace_atomically(Path(path), text)


def _write_through_temporary(path: str | Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then renamed over it (process 0 only)."""
    if is_writer():
        with atomic_path(path) as tmp:
            write(tmp)


def save_figure(fig: Any, path: str | Path, **savefig_kwargs: Any) -> None:
    """``fig.savefig`` to ``path`` (its suffix picks the format) through a temporary file (process 0 only)."""
    _write_through_temporary(path, lambda tmp: fig.savefig(tmp, **savefig_kwargs))


def save_array(path: str | Path, array: Any) -> None:
    """``np.save`` to ``path`` (a ``.npy`` name) through a temporary file (process 0 only)."""
    _write_through_temporary(path, lambda tmp: np.save(tmp, np.asarray(array)))


def save_arrays(path: str | Path, **arrays: Any) -> None:
    """``np.savez`` of the named arrays to ``path`` (a ``.npz`` name) through a temporary file (process 0 only)."""
    named = {name: np.asarray(a) for name, a in arrays.items()}
    _write_through_temporary(path, lambda tmp: np.savez(tmp, **named))  # type: ignore[arg-type]  # mypy also matches **named against savez's allow_pickle: bool


def save_image(path: str | Path, image: Any, **imsave_kwargs: Any) -> None:
    """``matplotlib.image.imsave`` of a 2-D array to ``path`` through a temporary file (process 0 only)."""
    import matplotlib.image

    _write_through_temporary(path, lambda tmp: matplotlib.image.imsave(tmp, np.asarray(image), **imsave_kwargs))


def write_results(workdir: str | Path, results: dict[str, Any]) -> Path:
    """Writes the results contract: one flat JSON object of named figures.

    Raises:
      ValueError: if a value is not a number, string, bool or None.
    """
    flat = {}
    for name, value in results.items():
        value = _jsonable(value)
        if not isinstance(value, (int, float, str, bool, type(None))):
            raise ValueError(f"results[{name!r}] must be a number or string, got {type(value).__name__}")
        flat[name] = value
    path = Path(workdir) / "results.json"
    write_json_atomic(path, flat)  # process 0 only
    return path


class MetricsLog:
    """Appends one JSON object per logged step to ``metrics.jsonl`` (process 0 only)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def truncate_after(self, step: int) -> None:
        """Drops lines past ``step`` (written after the checkpoint a run resumes from)."""
        if not self.path.exists() or not is_writer():
            return
        kept = [line for line in self.read() if line.get("step", 0) <= step]
        _replace_atomically(self.path, "".join(json.dumps(line) + "\n" for line in kept))

    def append(self, record: dict[str, Any]) -> None:
        if not is_writer():
            return
        with self.path.open("a") as f:
            f.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")

    def read(self) -> list[dict[str, Any]]:
        """The logged records; a line cut short (a crash while appending) is skipped."""
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def evaluations(self) -> list[dict[str, Any]]:
        """The logged evaluations, ``{"step", "seconds", <name>: value}`` per line with ``eval_<name>`` entries.

        ``seconds`` is the training time up to that step (see :meth:`training_seconds`), for curves against wall time.
        """
        evaluations = []
        for record, seconds in self._with_training_seconds():
            values = {name.removeprefix("eval_"): value for name, value in record.items() if name.startswith("eval_")}
            if values:
                evaluations.append({"step": record["step"], "seconds": seconds, **values})
        return evaluations

    def training_seconds(self) -> float:
        """The training time of the logged steps, summed from each interval's ``steps_per_sec`` (compilation, evaluation and checkpoint writes excluded)."""
        return max((seconds for _, seconds in self._with_training_seconds()), default=0.0)

    def _with_training_seconds(self) -> list[tuple[dict[str, Any], float]]:
        """Each record with the training seconds up to its step."""
        out, seconds, previous = [], 0.0, 0
        for record in self.read():
            seconds += (record["step"] - previous) / record["steps_per_sec"]
            previous = record["step"]
            out.append((record, seconds))
        return out
