"""Run-directory files: atomic JSON writes and the ``metrics.jsonl`` log."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def _jsonable(value: Any) -> Any:
    """Numbers as plain floats/ints; non-finite floats as strings (JSON has no NaN)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Writes JSON to a temporary file in the same directory, then renames it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False, default=_jsonable)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    write_json_atomic(path, flat)
    return path


class MetricsLog:
    """Appends one JSON object per logged step to ``metrics.jsonl``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def truncate_after(self, step: int) -> None:
        """Drops lines past ``step`` (written after the checkpoint a run resumes from)."""
        if not self.path.exists():
            return
        kept = [line for line in self.read() if line.get("step", 0) <= step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(line) + "\n" for line in kept))
        os.replace(tmp, self.path)

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
