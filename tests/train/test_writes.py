"""Run files other than JSON (text, figures, arrays) are written atomically and by process 0 only."""

from __future__ import annotations

import ast
from pathlib import Path

import jax
import numpy as np
import pytest
from matplotlib.figure import Figure

from jaxlab.train import save_array, save_arrays, save_figure, save_image, write_text_atomic
from tests.cli_helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT_CODE = sorted([*(ROOT / "experiments").glob("*.py"), *(ROOT / "jaxlab" / "recipes").glob("*.py")])


def _figure() -> Figure:
    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    return fig


def _write_all(directory: Path) -> None:
    write_text_atomic(directory / "table.md", "| a |\n")
    save_figure(_figure(), directory / "plot.png", dpi=50)
    save_array(directory / "samples.npy", np.arange(6).reshape(2, 3))
    save_arrays(directory / "curves.npz", a=np.ones(2), b=np.zeros(3))
    save_image(directory / "grid.png", np.eye(4), cmap="gray_r")


def test_process_zero_writes_each_kind_of_file(tmp_path):
    _write_all(tmp_path / "run")
    assert (tmp_path / "run" / "table.md").read_text() == "| a |\n"
    assert (tmp_path / "run" / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(np.load(tmp_path / "run" / "samples.npy"), np.arange(6).reshape(2, 3))
    with np.load(tmp_path / "run" / "curves.npz") as curves:
        assert sorted(curves.files) == ["a", "b"] and curves["b"].shape == (3,)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["curves.npz", "grid.png", "plot.png", "samples.npy", "table.md"]  # no temporaries left


def test_other_processes_write_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda *args, **kwargs: 1)
    _write_all(tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_figure_that_fails_to_save_leaves_the_previous_file(tmp_path):
    save_figure(_figure(), tmp_path / "plot.png")
    before = (tmp_path / "plot.png").read_bytes()

    class Failing(Figure):
        def savefig(self, *args, **kwargs):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_figure(Failing(), tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def _direct_writes(path: Path, root: Path = ROOT) -> list[str]:
    """Calls that write a file without the process-0 helpers: ``x.savefig``, ``np.save*``, ``x.write_text/bytes``, ``open``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in {"savefig", "save", "savez", "savez_compressed", "write_text", "write_bytes", "imsave", "open"}:
            found.append(f"{path.relative_to(root)}:{node.lineno}: {name}")
    return found


@pytest.mark.parametrize("path", EXPERIMENT_CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_experiments_write_files_only_through_the_process_zero_helpers(path):
    assert not _direct_writes(path), "\n".join(_direct_writes(path))


def test_the_write_finder_sees_direct_writes(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import numpy as np\nnp.save('x.npy', 1)\nfig.savefig('a.png')\n(p / 'x').write_text('t')\nopen('f', 'w')\n")
    assert [line.rsplit(": ", 1)[1] for line in _direct_writes(module, tmp_path)] == ["save", "savefig", "write_text", "open"]


def test_an_experiment_on_process_one_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_index", lambda *args, **kwargs: 1)
    workdir = tmp_path / "hippo"
    tiny = ["--set", "dt=0.004", "--set", "Ns=16", "--set", "plot_n=16", "--set", "measures=legs", "--set", "num_signals=2"]
    assert run_cli("train", "hippo-reconstruct", "--workdir", str(workdir), *tiny) == 0
    assert not workdir.exists() or not any(workdir.rglob("*"))
