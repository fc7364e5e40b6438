"""Turning SIGINT/SIGTERM into a request the training loop honours between steps."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Self

from jaxlab.train.unraisable import ignore_unraisable

# A Ctrl-C that arrived before the loop started, kept in case its KeyboardInterrupt was lost:
# CPython ignores exceptions raised inside GC callbacks, and JAX runs one.
_early_interrupt: int | None = None

# What signal.signal installs and returns.
_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def _interrupt_and_remember(signum: int, frame: FrameType | None) -> None:
    global _early_interrupt
    _early_interrupt = signum
    signal.default_int_handler(signum, frame)


def _is_remembered_interrupt(unraisable: Any) -> bool:
    return isinstance(unraisable.exc_value, KeyboardInterrupt) and _early_interrupt is not None


def interrupt_before_training() -> None:
    """Ctrl-C raises ``KeyboardInterrupt`` as usual and is also remembered for the loop.

    A program (the ``jaxlab`` CLI) calls this once at start-up. If that
    ``KeyboardInterrupt`` is swallowed, the next :class:`StopRequest` starts
    out requested, so the loop stops after its first step instead of training
    on, and the "Exception ignored" report of the swallowed one is not printed.
    """
    global _early_interrupt
    _early_interrupt = None
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _interrupt_and_remember)
        ignore_unraisable(_is_remembered_interrupt)


class StopRequest:
    """Context manager: while active, SIGINT and SIGTERM set ``signum`` instead of killing.

    A second signal (of either kind) is handed to the handler that was there
    before (a second Ctrl-C raises ``KeyboardInterrupt``; a second SIGTERM
    terminates), so a stuck run can still be stopped. Outside the main thread
    (where Python cannot install handlers) it does nothing.
    """

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, _Handler] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            return
        previous = self._previous.get(signum) or signal.SIG_DFL
        if previous is _interrupt_and_remember:
            previous = signal.default_int_handler
        signal.signal(signum, previous)
        if callable(previous):
            previous(signum, frame)
        else:
            signal.raise_signal(signum)

    def __enter__(self) -> Self:
        global _early_interrupt
        if threading.current_thread() is threading.main_thread():
            for signum in self._SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        self.signum, _early_interrupt = _early_interrupt, None
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
