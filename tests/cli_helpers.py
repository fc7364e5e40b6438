"""Running the ``jaxlab`` command in-process, for the CLI and experiment tests."""

import json

from jaxlab import cli


def run_cli(*argv: str) -> int:
    """``jaxlab ARGV...`` in this process; returns the exit status."""
    try:
        cli.main(list(argv))
    except SystemExit as exit_:
        return exit_.code or 0
    return 0


def overrides(**fields) -> list[str]:
    """``--set NAME=VALUE`` for every field."""
    return [arg for name, value in fields.items() for arg in ("--set", f"{name}={value}")]


def results_of(workdir) -> dict:
    """The run's ``results.json``, checked to be one flat object of scalars."""
    results = json.loads((workdir / "results.json").read_text())
    assert all(value is None or isinstance(value, (int, float, str)) for value in results.values())
    return results
