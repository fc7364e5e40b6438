"""The documentation site: its ``>>>`` examples run, and it builds without a warning.

Every ```` ```pycon ```` block of a page under ``docs/`` is a doctest; the
blocks of one page share their names, in order, like one interpreter session.
The build uses Sphinx's ``dummy`` builder (it reads every page and every
docstring, resolves references and writes nothing), so it catches what
``make docs`` would warn about in a fraction of the time.
"""

from __future__ import annotations

import doctest
import importlib
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
API_PACKAGES = (
    "generative", "nn", "ssm", "linalg", "optim", "quant", "density",
    "data", "eval", "train", "parallel", "testing", "tasks",
)  # fmt: skip
OPEN_FENCE = re.compile(r"^(`{3,}|~{3,})\s*\{?pycon\}?\s*$")


def doctest_source(text: str) -> str:
    """The page with every line outside a ``pycon`` fence blanked, so doctest line numbers are the page's."""
    out, fence = [], None
    for line in text.splitlines():
        stripped = line.strip()
        if fence is None:
            match = OPEN_FENCE.match(stripped)
            fence = match.group(1) if match else None
            out.append("")
        elif stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
            fence = None
            out.append("")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def test_doctest_source_keeps_only_pycon_blocks():
    page = "text\n```pycon\n>>> 1 + 1\n2\n```\n```python\n>>> no\n```\n````{pycon}\n>>> 3\n3\n````\n"
    assert doctest_source(page).splitlines() == ["", "", ">>> 1 + 1", "2", "", "", "", "", "", ">>> 3", "3", ""]


def _page_id(path: Path) -> str:
    return str(path.relative_to(DOCS))


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_examples(page: Path):
    source = doctest_source(page.read_text(encoding="utf-8"))
    test = doctest.DocTestParser().get_doctest(source, {"__name__": "__docs__"}, _page_id(page), str(page), 0)
    if not test.examples:
        pytest.skip("no examples on this page")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    result = runner.run(test, out=report.append)
    test.globs.clear()
    assert result.failed == 0, "".join(report)


def test_site_builds_without_warnings(tmp_path: Path):
    pytest.importorskip("sphinx")
    pytest.importorskip("sphinx_book_theme")
    pytest.importorskip("myst_parser")
    doctrees = tmp_path / "doctrees"
    command = [sys.executable, "-m", "sphinx", "-b", "dummy", "-W", "--keep-going", "-q", "-E"]
    command += ["-d", str(doctrees), str(DOCS), str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr

    # Every public name of every subpackage has an entry in the API reference.
    with open(doctrees / "environment.pickle", "rb") as file:
        objects = pickle.load(file).domaindata["py"]["objects"]
    missing = []
    for package in API_PACKAGES:
        module = importlib.import_module(f"jaxlab.{package}")
        missing += [f"jaxlab.{package}.{name}" for name in module.__all__ if f"jaxlab.{package}.{name}" not in objects]
    for name in ("Context", "Method", "OwnTrainStep", "named_key", "Params", "ApplyFn", "Batch"):
        missing += [f"jaxlab.base.{name}"] if f"jaxlab.base.{name}" not in objects else []
    assert not missing, f"public names without an API entry (add them to docs/api/): {missing}"
