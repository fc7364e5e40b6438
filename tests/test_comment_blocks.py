"""No comment block in ``experiments/`` or ``jaxlab/recipes/`` (the parts experiments share) runs longer than four lines.

A comment says why in a line or two; measured figures of runs belong in
``docs/results.md`` (DESIGN.md, "Comments and results"). A block is a run of
consecutive lines that hold a comment token and nothing else.
"""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT_CODE = (ROOT / "experiments", ROOT / "jaxlab" / "recipes")
MAX_LINES = 4
_LAYOUT = {
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENCODING,
    tokenize.ENDMARKER,
}


def comment_blocks(source: str) -> list[tuple[int, int]]:
    """``(first line, number of lines)`` of each run of consecutive comment-only lines."""
    tokens_by_line: dict[int, list[tokenize.TokenInfo]] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in _LAYOUT:
            tokens_by_line.setdefault(token.start[0], []).append(token)
    lines = sorted(n for n, toks in tokens_by_line.items() if len(toks) == 1 and toks[0].type == tokenize.COMMENT)
    blocks: list[tuple[int, int]] = []
    for n in lines:
        if blocks and blocks[-1][0] + blocks[-1][1] == n:
            blocks[-1] = (blocks[-1][0], blocks[-1][1] + 1)
        else:
            blocks.append((n, 1))
    return blocks


def test_comment_blocks_counts_only_comment_only_lines():
    source = "x = 1  # trailing\n# a\n# b\n\n# c\ny = 2\n    # not code: a comment line inside nothing\n"
    assert comment_blocks(source) == [(2, 2), (5, 1), (7, 1)]
    assert comment_blocks("def f():\n    # one\n    # two\n    return 1  # three\n") == [(2, 2)]


@pytest.mark.parametrize("path", sorted(path for folder in EXPERIMENT_CODE for path in folder.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_long_comment_blocks_in_experiments(path: Path):
    long = [
        f"{path.relative_to(ROOT)}:{first}: {length} consecutive comment lines (at most {MAX_LINES})"
        for first, length in comment_blocks(path.read_text(encoding="utf-8"))
        if length > MAX_LINES
    ]
    assert not long, "move run diaries to docs/results.md:\n" + "\n".join(long)
