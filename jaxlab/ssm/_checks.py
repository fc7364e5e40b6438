"""Input validation shared by the ``jaxlab.ssm`` modules (private)."""

from __future__ import annotations

from collections.abc import Sequence


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, received {value!r}")


def check_positive_int(name: str, value: int, *, even: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive (optionally even) integer."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or (even and value % 2):
        kind = "a positive even int" if even else "a positive int"
        raise ValueError(f"{name}: expected {kind}, received {value!r}")


def check_ndim(name: str, shape: Sequence[int], ndim: int, layout: str) -> None:
    """Raise ``ValueError`` unless ``shape`` has ``ndim`` axes (``layout`` names them)."""
    if len(shape) != ndim:
        raise ValueError(f"{name}: expected shape {layout} ({ndim} axes), received {tuple(shape)}")


def check_shape(name: str, shape: Sequence[int], expected: Sequence[int | None], layout: str) -> None:
    """Raise ``ValueError`` unless ``shape`` matches ``expected`` (``None`` matches any size)."""
    ok = len(shape) == len(expected) and all(e is None or s == e for s, e in zip(shape, expected))
    if not ok:
        want = tuple("?" if e is None else e for e in expected)
        raise ValueError(f"{name}: expected shape {layout} = {want}, received {tuple(shape)}")
