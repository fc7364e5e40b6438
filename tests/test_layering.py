"""The dependency direction of DESIGN.md: math and layers never import the trainer or the CLI."""

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "jaxlab"
LOWER = ("generative", "nn", "ssm", "linalg", "quant", "density")
UPPER = ("jaxlab.train", "jaxlab.cli", "jaxlab.tasks")


def imported_modules(path: pathlib.Path) -> set[str]:
    """Every module an ``import``/``from`` statement in the file names, at any depth (lazy imports too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", LOWER)
def test_lower_packages_import_neither_the_trainer_nor_the_cli(package):
    offenders = [
        f"{path.relative_to(ROOT.parent)} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in sorted(imported_modules(path))
        if any(name == upper or name.startswith(upper + ".") for upper in UPPER)
    ]
    assert not offenders, "\n".join(offenders)


def test_the_walker_sees_lazy_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from jaxlab.train.state import TrainState\n    import jaxlab.cli\n")
    assert {"jaxlab.train.state", "jaxlab.cli"} <= imported_modules(module)


def test_importing_the_library_pieces_loads_no_checkpointing_plotting_or_progress_bars():
    pieces = ", ".join(f"jaxlab.{p}" for p in (*LOWER, "optim", "eval", "data", "parallel", "base"))
    code = (
        f"import sys, {pieces}\n"
        "heavy = [m for m in ('orbax', 'matplotlib', 'tqdm', 'jaxlab.train', 'jaxlab.cli') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"importing the library loaded: {result.stdout.strip()}"


def test_importing_and_plotting_with_the_trainer_leaves_the_users_process_settings_alone(tmp_path):
    code = (
        "import logging, matplotlib\n"
        "matplotlib.use('svg')\n"
        "logging.getLogger('absl').setLevel(logging.DEBUG)\n"
        "import jaxlab.train, jaxlab.train.checkpoint\n"
        "from jaxlab.train.plots import plot_metrics\n"
        f"plot_metrics([{{'step': 1, 'loss': 1.0}}, {{'step': 2, 'loss': 0.5}}], {str(tmp_path / 'loss.png')!r})\n"
        "print(matplotlib.get_backend(), logging.getLogger('absl').level)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["svg", str(10)]
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
