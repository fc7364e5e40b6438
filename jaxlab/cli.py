"""The ``jaxlab`` command: list, show, train and sample registered experiments; FID reference statistics.

    jaxlab list
    jaxlab show NAME
    jaxlab train NAME [--workdir DIR] [--steps N] [--seed S] [--data-dir DIR] [--set FIELD=VALUE ...]
    jaxlab train NAME --set --help          (the config fields, as --set takes them)
    jaxlab sample NAME --workdir DIR [--steps K] [--num N]
    jaxlab fid-stats SOURCE OUT [--weights PATH] [--batch-size N]

Experiments are the ``EXPERIMENTS`` lists of the modules in the repository's
``experiments/`` folder (or the folder named by ``$JAXLAB_EXPERIMENTS``). They
ship with the source tree, not inside the ``jaxlab`` package: a plain
``pip install jaxlab`` has the library and this command but no experiments
until ``JAXLAB_EXPERIMENTS`` points at such a folder. ``list`` reads names and
descriptions from the files without importing them; the other commands import
only the file that defines the experiment asked for.

Configuration overrides are parsed and type-checked by tyro against the
experiment's config dataclass, whose own checks (positive sizes, finite
numbers, ...) and the device-count check of the batch run next; a bad one
exits with status 2 before anything is written or compiled.

Exit status: 0 success; 1 failed run (non-finite loss, no readable
checkpoint, an experiment file that fails to import); 2 bad usage (unknown
experiment or field, bad value, a run directory of another configuration or
with a damaged config.json); 128+N stopped by signal N (after writing a
checkpoint once training has started).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import itertools
import logging
import os
import signal
import sys
import typing
from collections.abc import Callable
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

    name: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="NAME", help="experiment (see `jaxlab list`)")]


@dataclasses.dataclass(frozen=True)
class Train:
    """Train an experiment (resumes when WORKDIR already holds a run of it)."""

    name: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="NAME", help="experiment (see `jaxlab list`)")]
    workdir: Annotated[str | None, tyro.conf.arg(metavar="DIR", help="run directory", help_behavior_hint="(default: runs/NAME)")] = None
    steps: Annotated[
        int | None,
        tyro.conf.arg(metavar="N", help="total training steps (shorthand for --set steps=N)", help_behavior_hint="(default: the experiment's)"),
    ] = None
    seed: Annotated[
        int | None,
        tyro.conf.arg(metavar="S", help="random seed (shorthand for --set seed=S)", help_behavior_hint="(default: the experiment's)"),
    ] = None
    data_dir: Annotated[
        str | None,
        tyro.conf.arg(
            metavar="DIR",
            help="data folder (shorthand for --set data_dir=DIR; only for experiments with a data_dir field)",
            help_behavior_hint="(default: the experiment's)",
        ),
    ] = None
    overrides: Annotated[
        tuple[str, ...],
        tyro.conf.arg(
            name="set",
            metavar="FIELD=VALUE",
            help="override a config field; repeat for several (fields: `jaxlab show NAME` or `jaxlab train NAME --set --help`)",
        ),
        tyro.conf.UseAppendAction,
    ] = ()


@dataclasses.dataclass(frozen=True)
class Sample:
    """Sample from the newest readable checkpoint of a run (EMA parameters); writes .npy and .png into the run directory."""

    name: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="NAME", help="experiment (see `jaxlab list`)")]
    workdir: Annotated[str, tyro.conf.arg(metavar="DIR", help="run directory (as given to `jaxlab train`)")]
    steps: Annotated[int | None, tyro.conf.arg(metavar="K", help="sampler steps", help_behavior_hint="(default: the experiment's)")] = None
    num: Annotated[int, tyro.conf.arg(metavar="N", help="number of samples")] = 1000
    seed: Annotated[int, tyro.conf.arg(metavar="S", help="sampling seed")] = 0


@dataclasses.dataclass(frozen=True)
class FidStats:
    """Compute FID reference statistics (mean, covariance of Inception pool-3 features) of an image folder or .npz once; writes an .npz of mu, sigma."""

    source: Annotated[
        str, tyro.conf.Positional, tyro.conf.arg(metavar="SOURCE", help="folder of image files (png, jpg, ...) or .npz of uint8 images (n, h, w[, c])")
    ]
    out: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="OUT", help="statistics file to write (.npz with mu, sigma)")]
    weights: Annotated[
        str | None,
        tyro.conf.arg(metavar="PATH", help="Inception weights .npz (see jaxlab.eval.inception)", help_behavior_hint="(default: the jaxlab cache directory)"),
    ] = None
    batch_size: Annotated[int, tyro.conf.arg(metavar="N", help="images per forward pass")] = 50


NOT_PACKAGED = (
    "experiments ship with jaxlab's source repository (its experiments/ folder), not inside the installed "
    "package; run jaxlab from a checkout (pip install -e .), or set JAXLAB_EXPERIMENTS to such a folder"
)


def experiments_dir() -> Path:
    """``$JAXLAB_EXPERIMENTS``, else ``experiments/`` beside the package source, else in the cwd."""
    if os.environ.get("JAXLAB_EXPERIMENTS"):
        return Path(os.environ["JAXLAB_EXPERIMENTS"])
    beside_source = Path(jaxlab.__file__).resolve().parents[1] / "experiments"
    return beside_source if beside_source.is_dir() else Path.cwd() / "experiments"


def _experiment_files(directory: Path) -> list[Path]:
    return [path for path in sorted(directory.glob("*.py")) if not path.name.startswith("_")]


def _import(path: Path) -> Any:
    from jaxlab.train.experiment import import_experiment_file

    return import_experiment_file(path)


def _import_or_warn(path: Path) -> Any | None:
    """The module, or None after a warning on stderr: one broken file does not take the others down."""
    try:
        return _import(path)
    except Exception as error:  # noqa: BLE001 - report any failure and go on
        print(f"jaxlab: warning: skipping {path}: {type(error).__name__}: {error}", file=sys.stderr)
        return None


def discover(directory: Path | None = None) -> dict[str, Any]:
    """Imports every ``experiments/*.py`` and collects their ``EXPERIMENTS`` by name.

    A module that fails to import is reported on stderr and skipped, so one
    broken file does not take the other experiments down with it.
    """
    directory = experiments_dir() if directory is None else directory
    found: dict[str, Any] = {}
    for path in _experiment_files(directory):
        module = _import_or_warn(path)
        if module is None:
            continue
        for experiment in getattr(module, "EXPERIMENTS", ()):
            if experiment.name in found:
                raise RuntimeError(f"experiment {experiment.name!r} is defined twice (second in {path})")
            found[experiment.name] = experiment
    return found


@dataclasses.dataclass(frozen=True)
class Entry:
    """Where an experiment is defined, read from the file without importing it."""

    name: str
    description: str
    path: Path


def _literal_entries(path: Path) -> list[tuple[str, str]] | None:
    """``(name, description)`` of each ``Experiment(...)`` in the file's ``EXPERIMENTS = [...]``.

    None when the list is not written with literal strings (it is then imported).
    """
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return None
    for node in tree.body:
        if not isinstance(node, (ast.Assign, ast.AnnAssign)):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if not any(isinstance(t, ast.Name) and t.id == "EXPERIMENTS" for t in targets):
            continue
        if not isinstance(node.value, (ast.List, ast.Tuple)):
            return None
        entries = []
        for call in node.value.elts:
            if not isinstance(call, ast.Call):
                return None
            fields = dict(zip(("name", "description"), call.args)) | {k.arg: k.value for k in call.keywords if k.arg}
            name, description = (fields.get(key) for key in ("name", "description"))
            if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
                return None
            if not (isinstance(description, ast.Constant) and isinstance(description.value, str)):
                return None
            entries.append((name.value, description.value))
        return entries
    return []


def index(directory: Path | None = None) -> dict[str, Entry]:
    """Names, descriptions and files of the experiments, reading the files without importing them.

    A file whose ``EXPERIMENTS`` is not a literal list is imported to read it
    (and skipped with a warning if that fails).
    """
    directory = experiments_dir() if directory is None else directory
    found: dict[str, Entry] = {}
    for path in _experiment_files(directory):
        entries = _literal_entries(path)
        if entries is None:
            module = _import_or_warn(path)
            if module is None:
                continue
            entries = [(e.name, e.description) for e in getattr(module, "EXPERIMENTS", ())]
        for name, description in entries:
            if name in found:
                raise RuntimeError(f"experiment {name!r} is defined twice ({found[name].path} and {path})")
            found[name] = Entry(name, description, path)
    return found


def _fail(message: str, status: int) -> typing.NoReturn:
    print(f"jaxlab: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def _unknown(name: str, names: list[str], directory: Path) -> typing.NoReturn:
    if not names:
        where = f"{directory} does not exist" if not directory.is_dir() else f"{directory} has none"
        _fail(f"no experiments found ({where}): {NOT_PACKAGED}", EXIT_USAGE)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    _fail(f"unknown experiment {name!r}; {hint}available: {', '.join(sorted(names))}", EXIT_USAGE)


def load(name: str, directory: Path | None = None) -> Any:
    """The :class:`~jaxlab.train.Experiment` called ``name``, importing only the file that defines it.

    Exits with status 2 (and a "did you mean") for an unknown name, and 1 if
    its file fails to import.
    """
    directory = experiments_dir() if directory is None else directory
    entries = index(directory)
    if name not in entries:
        _unknown(name, list(entries), directory)
    path = entries[name].path
    try:
        module = _import(path)
    except Exception as error:  # noqa: BLE001 - a missing optional dependency, a bug in the file
        _fail(f"experiment {name!r} could not be loaded from {path}: {type(error).__name__}: {error}", EXIT_FAILED)
    for experiment in getattr(module, "EXPERIMENTS", ()):
        if experiment.name == name:
            return experiment
    _fail(f"{path} does not define experiment {name!r} in its EXPERIMENTS", EXIT_FAILED)


def _tyro_config(name: str, default: Any, args: list[str]) -> Any:
    return tyro.cli(
        type(default),
        args=args,
        default=default,
        prog=f"jaxlab train {name} --set",
        description=f"Config fields of {name}, each set as --set FIELD=VALUE (shown here as --FIELD VALUE).",
        config=(tyro.conf.FlagConversionOff,),
        use_underscores=True,
    )


def apply_overrides(name: str, default: Any, overrides: tuple[str, ...]) -> Any:
    """Parses ``FIELD=VALUE`` overrides against the config dataclass with tyro.

    Unknown fields, values of the wrong type, values outside a ``Literal``
    and values the config's own checks reject (``width=-5``) exit with
    status 2 and a message naming the field.
    """
    args: list[str] = []
    for item in overrides:
        field, sep, value = item.partition("=")
        if not sep or not field:
            _fail(f"--set expects FIELD=VALUE, got {item!r}", EXIT_USAGE)
        args += [f"--{field}", *value.split()]
    try:
        return _tyro_config(name, default, args)
    except (ValueError, TypeError) as error:  # a field's own validation (__post_init__)
        _fail(str(error), EXIT_USAGE)


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _field_lines(config: Any) -> list[str]:
    """One line per field; a nested group's fields by dotted name (``sid.alpha``), as ``--set`` takes them."""
    from jaxlab.train.experiment import config_fields

    return [f"  {name:<28} {_type_name(hint):<40} = {value!r}" for name, value, hint in config_fields(config)]


def cmd_list() -> None:
    entries = index()
    if not entries:
        _unknown("", [], experiments_dir())
    width = max(len(n) for n in entries)
    for name in sorted(entries):
        print(f"{name:<{width}}  {entries[name].description}")


def cmd_show(command: Show) -> None:
    experiment = load(command.name)
    print(f"{experiment.name}: {experiment.description}")
    print("\n".join(_field_lines(experiment.config)))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (it may be replaced, e.g. by pytest)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("jaxlab: %(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        del value


def _set_logging() -> None:
    """The trainer's notes (checkpoint loaded, fallen back to) on stderr as ``jaxlab: ...`` lines.

    Orbax's routine INFO lines (absl) are silenced here, in the program, not on import of the library.
    """
    logging.getLogger("absl").setLevel(logging.WARNING)
    logger = logging.getLogger("jaxlab")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.INFO)
    logger.propagate = False


def cmd_train(command: Train) -> None:
    experiment = load(command.name)
    overrides = command.overrides
    overrides += (f"steps={command.steps}",) if command.steps is not None else ()
    overrides += (f"seed={command.seed}",) if command.seed is not None else ()
    if command.data_dir is not None:
        if not any(f.name == "data_dir" for f in dataclasses.fields(experiment.config)):
            _fail(f"--data-dir: experiment {command.name!r} reads no data folder (its config has no data_dir field)", EXIT_USAGE)
        overrides += (f"data_dir={command.data_dir}",)
    config = apply_overrides(command.name, experiment.config, overrides)
    workdir = Path(command.workdir or Path("runs") / command.name)

    from jaxlab import parallel, train

    try:
        parallel.maybe_initialize_distributed()
    except ValueError as error:  # a malformed launch variable
        _fail(str(error), EXIT_USAGE)
    except ConnectionError as error:
        _fail(str(error), EXIT_FAILED)
    try:
        train.validate_config(experiment, config)
    except ValueError as error:
        _fail(str(error), EXIT_USAGE)
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


def cmd_sample(command: Sample) -> None:
    experiment = load(command.name)
    if experiment.sample is None:
        _fail(f"experiment {command.name!r} has no sampler", EXIT_USAGE)
    if command.num < 1 or (command.steps is not None and command.steps < 1):
        _fail(f"--num and --steps must be positive, got num={command.num}, steps={command.steps}", EXIT_USAGE)
    import numpy as np

    from jaxlab import train

    workdir = Path(command.workdir)
    try:
        config = train.read_run_config(experiment, workdir)
        samples = experiment.sample(config, workdir, num=command.num, steps=command.steps, seed=command.seed)
    except train.WorkdirError as error:
        _fail(str(error), EXIT_USAGE)
    except train.CheckpointError as error:
        _fail(str(error), EXIT_FAILED)
    steps = command.steps if command.steps is not None else getattr(config, "sample_steps", None)
    stem = workdir / (f"samples-{steps}steps-{command.num}" if steps is not None else f"samples-{command.num}")
    if not train.is_writer():
        return
    with train.atomic_path(stem.with_suffix(".npy")) as tmp:
        np.save(tmp, samples)
    print(f"wrote {stem.with_suffix('.npy')} ({command.num} samples from the EMA parameters)")
    if experiment.plot_samples is not None:
        extra = {} if experiment.reference_data is None else {"data": np.asarray(experiment.reference_data(config, command.num))}
        with train.atomic_path(stem.with_suffix(".png")) as tmp:
            experiment.plot_samples(samples, tmp, **extra)
        print(f"wrote {stem.with_suffix('.png')}")


def cmd_fid_stats(command: FidStats) -> None:
    if command.batch_size < 1:
        _fail(f"--batch-size must be positive, got {command.batch_size}", EXIT_USAGE)
    from tqdm.auto import tqdm

    from jaxlab.eval import fid, inception

    try:  # a missing weights file or image folder, unreadable or mismatched images: a message, exit 2
        variables = inception.load_inception_variables(command.weights)
        batches = tqdm(fid.image_batches(command.source, command.batch_size), desc="Inception features", unit="batch", dynamic_ncols=True)
        stats = inception.inception_statistics(variables, batches, batch_size=command.batch_size)
        mu, sigma = stats.statistics()
    except (FileNotFoundError, ValueError, TypeError) as error:
        _fail(str(error), EXIT_USAGE)
    fid.save_statistics(command.out, mu, sigma, count=stats.samples)
    print(f"wrote {command.out} (mu, sigma of the Inception features of {stats.samples} images)")


def _field_help(argv: list[str]) -> bool:
    """``jaxlab train NAME --set --help``: the config fields as tyro parses them (tyro's own hint points here)."""
    if len(argv) < 3 or argv[0] != "train":
        return False
    asks = any(a == "--set" and b in ("--help", "-h") for a, b in itertools.pairwise(argv))
    names = [a for a in argv[1:] if not a.startswith("-")]
    if not asks or not names:
        return False
    experiment = load(names[0])
    _tyro_config(experiment.name, experiment.config, ["--help"])  # prints the help and exits 0
    return True


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``jaxlab`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if _field_help(argv):
            return
        commands: dict[str, Callable[..., Any]] = {"list": List, "show": Show, "train": Train, "sample": Sample, "fid-stats": FidStats}
        command = tyro.extras.subcommand_cli_from_dict(commands, prog="jaxlab", args=argv)
        if isinstance(command, List):
            cmd_list()
        elif isinstance(command, Show):
            cmd_show(command)
        elif isinstance(command, FidStats):
            cmd_fid_stats(command)
        else:
            from jaxlab.train.signals import interrupt_before_training

            interrupt_before_training()
            _set_logging()
            cmd_train(command) if isinstance(command, Train) else cmd_sample(command)
    except KeyboardInterrupt:
        # Ctrl-C outside the training loop (importing, compiling, restoring, evaluating); inside it the
        # loop checkpoints and raises TrainingInterrupted instead.
        print("jaxlab: interrupted; checkpoints already written are kept (re-run the same command to resume)", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None


if __name__ == "__main__":
    main()
