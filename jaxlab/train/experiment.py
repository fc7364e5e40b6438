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
import math
import sys
import types
import typing
from collections.abc import Callable, Iterator
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
      plot_samples: optional ``(samples, path) -> None`` drawing them to a PNG;
        with ``reference_data`` it is called as ``(samples, path, data=...)``.
      reference_data: optional ``(config, num) -> np.ndarray``: data points
        that ``jaxlab sample`` draws beside the samples.
      sharded_fields: config fields split over all devices (the trainer's
        batch), so they must be divisible by the device count; checked before
        anything is written. Experiments that do not use the trainer set ``()``.
      tensor_fields: config fields that the mesh's ``tensor`` axis must divide
        (an attention head count: tensor parallelism splits the heads).
    """

    name: str
    description: str
    config: Any
    run: Callable[[Any, Path], dict[str, Any]]
    sample: Callable[..., Any] | None = None
    plot_samples: Callable[..., None] | None = None
    reference_data: Callable[[Any, int], Any] | None = None
    sharded_fields: tuple[str, ...] = ("batch_size",)
    tensor_fields: tuple[str, ...] = ()


def import_experiment_file(path: str | Path) -> types.ModuleType:
    """Imports the experiment file ``path`` once, as module ``jaxlab_experiments.<stem>``.

    The CLI loads experiment files by path, so a user's own folder
    (``JAXLAB_EXPERIMENTS``) needs no package layout. Code shared by several
    experiments lives in importable modules (:mod:`jaxlab.recipes`), never in
    a sibling file. A file that fails to import leaves nothing registered.
    """
    path = Path(path)
    name = f"jaxlab_experiments.{path.stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"{path} is not a Python file that can be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


class WorkdirError(RuntimeError):
    """A run directory that belongs to something else, or whose ``config.json`` cannot be read."""


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _nest_legacy_fields(default: Any, values: dict[str, Any]) -> dict[str, Any]:
    """Flat ``{group}_{field}`` keys of older ``config.json`` files (``sid_alpha``) moved into their group."""
    top_level = {f.name for f in dataclasses.fields(default)}
    groups = {name for name in top_level if dataclasses.is_dataclass(getattr(default, name))}
    values = {key: dict(value) if key in groups and isinstance(value, dict) else value for key, value in values.items()}
    for key in [key for key in values if key not in top_level]:
        group, _, field = key.partition("_")
        if group in groups and field in {f.name for f in dataclasses.fields(getattr(default, group))}:
            values.setdefault(group, {})[field] = values.pop(key)
    return values


def config_from_dict(default: Any, values: dict[str, Any]) -> Any:
    """Rebuilds a config from ``config.json`` values, converting lists back to tuples and dicts to nested configs.

    Fields that ``config.json`` lacks (added to the experiment since) take their
    defaults; flat keys of a field group from before it was nested
    (``sid_alpha`` for ``sid.alpha``) are read into the group.
    """
    values = _nest_legacy_fields(default, values)
    hints = typing.get_type_hints(type(default))
    fields = {f.name for f in dataclasses.fields(default)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise WorkdirError(f"config.json has fields {unknown} that {type(default).__name__} does not know")

    def convert(name: str, value: Any) -> Any:
        current = getattr(default, name)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            return config_from_dict(current, value)
        if isinstance(value, list) and "tuple" in str(hints.get(name, "")):
            return tuple(value)
        return value

    return dataclasses.replace(default, **{name: convert(name, value) for name, value in values.items()})


def config_fields(config: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    """``(name, value, type hint)`` of every field, a nested group's fields by dotted name (``sid.alpha``), as ``--set`` takes them."""
    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from config_fields(value, f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}", value, hints[field.name]


def flat_fields(config: Any) -> dict[str, Any]:
    """``{"steps": 1000, ..., "sid.alpha": 1.2, ...}``: every field by its :func:`config_fields` name."""
    return {name: value for name, value, _ in config_fields(config)}


def read_run_config(experiment: Experiment, workdir: str | Path) -> Any:
    """The configuration a run directory was trained with.

    Raises:
      WorkdirError: no ``config.json``, one that is not valid JSON or holds
        invalid values (a damaged file), or one written for another experiment.
    """
    path = Path(workdir) / "config.json"
    if not path.exists():
        raise WorkdirError(f"{workdir} has no config.json: it is not a jaxlab run directory (train into it first)")

    def damaged(reason: str) -> WorkdirError:
        return WorkdirError(
            f"{path} is damaged ({reason}); nothing was changed. Restore it (it holds "
            '{"experiment": NAME, "config": {FIELD: VALUE, ...}}, the values the run was trained with) '
            "or use a new --workdir."
        )

    try:
        saved = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise damaged(f"not valid JSON: {error}") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise damaged("expected an object with a 'config' object")
    if saved.get("experiment") != experiment.name:
        raise WorkdirError(f"{workdir} holds a run of {saved.get('experiment')!r}, not {experiment.name!r}")
    try:
        return config_from_dict(experiment.config, saved["config"])
    except (TypeError, ValueError) as error:  # a value of the wrong type or outside its range
        raise damaged(str(error)) from None


# Fields a resumed run may change: they do not affect what is computed.
RESUMABLE_FIELDS = frozenset({"steps", "log_every", "checkpoint_every", "keep_checkpoints", "steps_per_execution"})


def has_progress(workdir: str | Path) -> bool:
    """Whether a run directory holds anything a new configuration would lose.

    That is a complete checkpoint (``checkpoints/<step>``, also in the
    per-network subdirectories some experiments train into) or a
    ``results.json``. A directory without either — a start that failed before
    its first checkpoint — counts as fresh.
    """
    workdir = Path(workdir)
    if (workdir / "results.json").exists():
        return True
    directories = [workdir / "checkpoints", *workdir.glob("*/checkpoints")]
    return any(step.name.isdigit() for ckpt in directories if ckpt.is_dir() for step in ckpt.iterdir())


def validate_config(experiment: Experiment, config: Any, num_devices: int | None = None) -> None:
    """The checks that need the machine, run before anything is written or compiled.

    The fields' own checks ran when the config was built; this adds that a
    ``mesh`` shape (if the config has one) holds exactly ``num_devices`` (all
    of ``jax.devices()`` by default) and that the fields in
    ``experiment.sharded_fields`` divide over the data-parallel size (the
    mesh's ``data`` × ``fsdp``; every device without a ``mesh`` shape) and the
    mesh's ``tensor`` size divides the fields in ``experiment.tensor_fields``.

    Raises:
      ValueError: naming the field, the size it must divide by and the value.
    """
    from jaxlab.train.config import check_divisible

    spec = getattr(config, "mesh", "")
    if not experiment.sharded_fields and not spec:
        return
    if num_devices is None:
        import jax

        num_devices = jax.device_count()
    if spec:
        from jaxlab.parallel.mesh import BATCH_AXES, parse_mesh_spec

        shape = parse_mesh_spec(spec)
        if math.prod(shape.values()) != num_devices:
            raise ValueError(f"mesh {spec!r} holds {math.prod(shape.values())} devices (the product of its sizes), but there are {num_devices}")
        split = math.prod(shape[axis] for axis in BATCH_AXES)
        check_divisible(config, experiment.sharded_fields, split, over=f"the data-parallel size (data × fsdp of mesh {spec!r}: {split})")
        check_divisible(config, experiment.tensor_fields, shape["tensor"], over=f"the tensor-parallel size (tensor of mesh {spec!r}: {shape['tensor']})")
    else:
        check_divisible(config, experiment.sharded_fields, num_devices)


def prepare_workdir(experiment: Experiment, config: Any, workdir: str | Path) -> Path:
    """Checks that ``workdir`` is new or a run of the same configuration, then records it.

    A run is resumed by re-running with the same configuration; only the
    fields in :data:`RESUMABLE_FIELDS` (``steps`` to extend a run) may change.
    A directory with a ``config.json`` but no checkpoint and no results (a
    start that failed early) is treated as fresh and takes the new values.

    Raises:
      WorkdirError: the directory belongs to another experiment, is not a run
        directory, or holds progress made with other values of some field.
        Nothing is written in that case.
    """
    workdir = Path(workdir)
    if (workdir / "config.json").exists():
        saved = read_run_config(experiment, workdir)
        now, before = flat_fields(config), flat_fields(saved)
        differing = [f"{name} (saved {before[name]!r}, now {value!r})" for name, value in now.items() if name not in RESUMABLE_FIELDS and value != before[name]]
        if differing and has_progress(workdir):
            raise WorkdirError(
                f"{workdir} was trained with a different configuration: {', '.join(differing)}. Resume with the saved values or use a new --workdir."
            )
    elif has_progress(workdir):
        raise WorkdirError(f"{workdir} has checkpoints or results but no config.json: not a jaxlab run directory")
    write_json_atomic(workdir / "config.json", {"experiment": experiment.name, "config": config_to_dict(config)})
    return workdir


def run_experiment(experiment: Experiment, config: Any, workdir: str | Path) -> dict[str, Any]:
    """Checks ``config`` against the machine and ``workdir``, runs the experiment and writes ``results.json``."""
    validate_config(experiment, config)
    workdir = prepare_workdir(experiment, config, workdir)
    results = experiment.run(config, workdir)
    write_results(workdir, results)
    return results
