"""Dropping known, already-handled "Exception ignored in ..." reports (``sys.unraisablehook``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

Predicate = Callable[[Any], bool]


def ignore_unraisable(predicate: Predicate) -> None:
    """Installs, once per predicate, a hook that drops the reports ``predicate`` matches.

    Every other report goes on to the hook that was installed before, so
    several filters (and a user's own hook) compose.
    """
    previous = sys.unraisablehook
    installed: tuple[Predicate, ...] = getattr(previous, "_jaxlab_predicates", ())
    if predicate in installed:
        return

    def hook(unraisable: Any) -> None:
        if not predicate(unraisable):
            previous(unraisable)

    hook._jaxlab_predicates = (*installed, predicate)  # type: ignore[attr-defined]
    sys.unraisablehook = hook
