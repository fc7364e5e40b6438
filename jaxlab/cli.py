"""The ``jaxlab`` command: list, show, train and sample registered experiments.

    jaxlab list
    jaxlab show NAME
    jaxlab train NAME [--workdir DIR] [--steps N] [--seed S] [--set FIELD=VALUE ...]
    jaxlab sample NAME --workdir DIR [--steps K] [--num N]

Experiments are the ``EXPERIMENTS`` lists of the modules in the repository's
``experiments/`` folder (or the folder named by ``$JAXLAB_EXPERIMENTS``).
Configuration overrides are parsed and type-checked by tyro against the
experiment's config dataclass; a bad one exits with status 2 before anything
is compiled.

Exit status: 0 success; 1 failed run (non-finite loss, unreadable
checkpoint); 2 bad usage (unknown experiment or field, bad value, a run
directory of another configuration); 128+N stopped by signal N after writing
a checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from pathlib import Path
from typing import Annotated, Any

import tyro

import jaxlab

EXIT_FAILED, EXIT_USAGE = 1, 2


@dataclasses.dataclass(frozen=True)
class List:
    """List the registered experiments."""


@dataclasses.dataclass(frozen=True)
class Show:
    """Show an experiment's configuration fields, types and defaults."""

    name: tyro.conf.Positional[str]


@dataclasses.dataclass(frozen=True)
class Train:
    """Train an experiment (resumes when WORKDIR already holds a run of it)."""

    name: tyro.conf.Positional[str]
    workdir: str | None = None
    """run directory (default: runs/NAME)"""
    steps: int | None = None
    """total training steps (shorthand for --set steps=N)"""
    seed: int | None = None
    """random seed (shorthand for --set seed=S)"""
    overrides: Annotated[
        tuple[str, ...], tyro.conf.arg(name="set", metavar="FIELD=VALUE"), tyro.conf.UseAppendAction
    ] = ()
    """override a config field; repeat for several (see `jaxlab show NAME`)"""


@dataclasses.dataclass(frozen=True)
class Sample:
    """Sample from the latest checkpoint of a run; writes .npy and .png into the run directory."""

    name: tyro.conf.Positional[str]
    workdir: str
    steps: int | None = None
    """sampler steps (default: the experiment's)"""
    num: int = 1000
    """number of samples"""
    seed: int = 0


def experiments_dir() -> Path:
    """``$JAXLAB_EXPERIMENTS``, else ``experiments/`` beside the package source, else in the cwd."""
    if os.environ.get("JAXLAB_EXPERIMENTS"):
        return Path(os.environ["JAXLAB_EXPERIMENTS"])
    beside_source = Path(jaxlab.__file__).resolve().parents[1] / "experiments"
    return beside_source if beside_source.is_dir() else Path.cwd() / "experiments"


def discover(directory: Path | None = None) -> dict[str, Any]:
    """Imports every ``experiments/*.py`` and collects their ``EXPERIMENTS`` by name.

    A module that fails to import is reported on stderr and skipped, so one
    broken file does not take the other experiments down with it.
    """
    from jaxlab.train.experiment import import_experiment_file

    directory = experiments_dir() if directory is None else directory
    found: dict[str, Any] = {}
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            module = import_experiment_file(path)
        except Exception as error:  # noqa: BLE001 - report any failure and go on
            print(f"jaxlab: warning: skipping {path}: {type(error).__name__}: {error}", file=sys.stderr)
            continue
        for experiment in getattr(module, "EXPERIMENTS", ()):
            if experiment.name in found:
                raise RuntimeError(f"experiment {experiment.name!r} is defined twice (second in {path})")
            found[experiment.name] = experiment
    return found


def _fail(message: str, status: int) -> typing.NoReturn:
    print(f"jaxlab: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def _lookup(registry: dict[str, Any], name: str) -> Any:
    if name not in registry:
        _fail(f"unknown experiment {name!r}; available: {', '.join(sorted(registry)) or '(none)'}", EXIT_USAGE)
    return registry[name]


def apply_overrides(name: str, default: Any, overrides: tuple[str, ...]) -> Any:
    """Parses ``FIELD=VALUE`` overrides against the config dataclass with tyro.

    Unknown fields, values of the wrong type and values outside a ``Literal``
    exit with status 2 and a message naming the field.
    """
    args: list[str] = []
    for item in overrides:
        field, sep, value = item.partition("=")
        if not sep or not field:
            _fail(f"--set expects FIELD=VALUE, got {item!r}", EXIT_USAGE)
        args += [f"--{field}", *value.split()]
    try:
        return tyro.cli(
            type(default),
            args=args,
            default=default,
            prog=f"jaxlab train {name} --set",
            config=(tyro.conf.FlagConversionOff,),
            use_underscores=True,
        )
    except ValueError as error:  # a field's own validation (__post_init__)
        _fail(str(error), EXIT_USAGE)


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _field_lines(config: Any) -> list[str]:
    hints = typing.get_type_hints(type(config))
    return [
        f"  {field.name:<20} {_type_name(hints[field.name]):<40} = {getattr(config, field.name)!r}"
        for field in dataclasses.fields(config)
    ]


def cmd_list(registry: dict[str, Any]) -> None:
    width = max((len(n) for n in registry), default=0)
    for name in sorted(registry):
        print(f"{name:<{width}}  {registry[name].description}")


def cmd_show(registry: dict[str, Any], command: Show) -> None:
    experiment = _lookup(registry, command.name)
    print(f"{experiment.name}: {experiment.description}")
    print("\n".join(_field_lines(experiment.config)))


def cmd_train(registry: dict[str, Any], command: Train) -> None:
    from jaxlab import parallel, train

    experiment = _lookup(registry, command.name)
    overrides = command.overrides
    overrides += (f"steps={command.steps}",) if command.steps is not None else ()
    overrides += (f"seed={command.seed}",) if command.seed is not None else ()
    config = apply_overrides(command.name, experiment.config, overrides)
    workdir = Path(command.workdir or Path("runs") / command.name)
    parallel.maybe_initialize_distributed()
    try:
        results = train.run_experiment(experiment, config, workdir)
    except (train.WorkdirError, FileNotFoundError) as error:  # FileNotFoundError: a dataset to put in place
        _fail(str(error), EXIT_USAGE)
    except (train.CheckpointError, train.NonFiniteLossError) as error:
        _fail(str(error), EXIT_FAILED)
    except train.TrainingInterrupted as stop:
        print(f"jaxlab: {stop}; re-run the same command to resume from step {stop.step}", file=sys.stderr)
        raise SystemExit(128 + stop.signum) from None
    print(f"results written to {workdir / 'results.json'}")
    for key, value in results.items():
        print(f"  {key}: {value}")


def cmd_sample(registry: dict[str, Any], command: Sample) -> None:
    import numpy as np

    from jaxlab import train

    experiment = _lookup(registry, command.name)
    if experiment.sample is None:
        _fail(f"experiment {command.name!r} has no sampler", EXIT_USAGE)
    if command.num < 1 or (command.steps is not None and command.steps < 1):
        _fail(f"--num and --steps must be positive, got num={command.num}, steps={command.steps}", EXIT_USAGE)
    workdir = Path(command.workdir)
    try:
        config = train.read_run_config(experiment, workdir)
        samples = experiment.sample(config, workdir, num=command.num, steps=command.steps, seed=command.seed)
    except train.WorkdirError as error:
        _fail(str(error), EXIT_USAGE)
    except train.CheckpointError as error:
        _fail(str(error), EXIT_FAILED)
    stem = workdir / f"samples-{command.steps or 'default'}steps-{command.num}"
    np.save(stem.with_suffix(".npy"), samples)
    print(f"wrote {stem.with_suffix('.npy')}")
    if experiment.plot_samples is not None:
        experiment.plot_samples(samples, stem.with_suffix(".png"))
        print(f"wrote {stem.with_suffix('.png')}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``jaxlab`` console script."""
    command = tyro.extras.subcommand_cli_from_dict(
        {"list": List, "show": Show, "train": Train, "sample": Sample},
        prog="jaxlab",
        args=sys.argv[1:] if argv is None else argv,
    )
    registry = discover()
    if isinstance(command, List):
        cmd_list(registry)
    elif isinstance(command, Show):
        cmd_show(registry, command)
    elif isinstance(command, Train):
        cmd_train(registry, command)
    else:
        cmd_sample(registry, command)


if __name__ == "__main__":
    main()
