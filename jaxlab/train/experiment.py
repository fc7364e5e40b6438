"""What a runnable experiment declares, and the run-directory bookkeeping around it.

An experiment module in ``experiments/`` defines ``EXPERIMENTS`` (a list of
:class:`Experiment`). The CLI discovers them; nothing in the library imports
them. ``run(config, workdir)`` trains and evaluates and returns the figures
for ``results.json``; ``sample(config, workdir, *, num, steps, seed)`` loads the
latest checkpoint and returns samples.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jaxlab.train.files import write_json_atomic, write_results


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    Attributes:
      name: the command-line name (``jaxlab train NAME``).
      description: one line for ``jaxlab list``.
      config: the default configuration (a frozen dataclass instance).
      run: ``(config, workdir) -> results`` — trains/evaluates, returns the
        flat results dict (written to ``results.json`` by :func:`run_experiment`).
      sample: optional ``(config, workdir, *, num, steps, seed) -> np.ndarray``
        for ``jaxlab sample``: loads the latest checkpoint and samples.
      plot_samples: optional ``(samples, path) -> None`` drawing them to a PNG.
    """

    name: str
    description: str
    config: Any
    run: Callable[[Any, Path], dict[str, Any]]
    sample: Callable[..., Any] | None = None
    plot_samples: Callable[[Any, Path], None] | None = None


def import_experiment_file(path: str | Path) -> types.ModuleType:
    """Imports the experiment file ``path`` once, as module ``jaxlab_experiments.<stem>``.

    Experiment files are loaded by path, not as a package; an experiment that
    builds on another (``upsample-digits`` on ``digits_generation.py``) loads
    its sibling through this too, so both see the same module and classes.
    A file that fails to import leaves nothing registered.
    """
    path = Path(path)
    name = f"jaxlab_experiments.{path.stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


class WorkdirError(RuntimeError):
    """A run directory that belongs to something else."""


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(default: Any, values: dict[str, Any]) -> Any:
    """Rebuilds a config from ``config.json`` values, converting lists back to tuples."""
    hints = typing.get_type_hints(type(default))
    fields = {f.name for f in dataclasses.fields(default)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise WorkdirError(f"config.json has fields {unknown} that {type(default).__name__} does not know")
    converted = {
        name: tuple(value) if isinstance(value, list) and "tuple" in str(hints.get(name, "")) else value
        for name, value in values.items()
    }
    return dataclasses.replace(default, **converted)


def read_run_config(experiment: Experiment, workdir: str | Path) -> Any:
    """The configuration a run directory was trained with.

    Raises:
      WorkdirError: no ``config.json``, or one written for another experiment.
    """
    path = Path(workdir) / "config.json"
    if not path.exists():
        raise WorkdirError(f"{workdir} has no config.json: it is not a jaxlab run directory (train into it first)")
    saved = json.loads(path.read_text())
    if saved.get("experiment") != experiment.name:
        raise WorkdirError(f"{workdir} holds a run of {saved.get('experiment')!r}, not {experiment.name!r}")
    return config_from_dict(experiment.config, saved["config"])


# Fields a resumed run may change: they do not affect what is computed.
RESUMABLE_FIELDS = frozenset({"steps", "log_every", "checkpoint_every", "keep_checkpoints"})


def prepare_workdir(experiment: Experiment, config: Any, workdir: str | Path) -> Path:
    """Checks that ``workdir`` is new or a run of the same configuration, then records it.

    A run is resumed by re-running with the same configuration; only the
    fields in :data:`RESUMABLE_FIELDS` (``steps`` to extend a run) may change.

    Raises:
      WorkdirError: the directory belongs to another experiment, is not a run
        directory, or was trained with other values of some field. Nothing is
        written in that case.
    """
    workdir = Path(workdir)
    if (workdir / "config.json").exists():
        saved = read_run_config(experiment, workdir)
        differing = [
            f"{f.name} (saved {getattr(saved, f.name)!r}, now {getattr(config, f.name)!r})"
            for f in dataclasses.fields(config)
            if f.name not in RESUMABLE_FIELDS and getattr(config, f.name) != getattr(saved, f.name)
        ]
        if differing:
            raise WorkdirError(
                f"{workdir} was trained with a different configuration: {', '.join(differing)}. "
                "Resume with the saved values or use a new --workdir."
            )
    elif (workdir / "checkpoints").exists():
        raise WorkdirError(f"{workdir} has checkpoints but no config.json: not a jaxlab run directory")
    write_json_atomic(workdir / "config.json", {"experiment": experiment.name, "config": config_to_dict(config)})
    return workdir


def run_experiment(experiment: Experiment, config: Any, workdir: str | Path) -> dict[str, Any]:
    """Runs an experiment into ``workdir`` and writes ``results.json``."""
    workdir = prepare_workdir(experiment, config, workdir)
    results = experiment.run(config, workdir)
    write_results(workdir, results)
    return results
