"""Turning SIGINT/SIGTERM into a request the training loop honours between steps."""

from __future__ import annotations

import signal
import threading
from types import FrameType


class StopRequest:
    """Context manager: while active, SIGINT and SIGTERM set ``signum`` instead of killing.

    A second signal of the same kind restores the default behaviour, so a
    stuck run can still be stopped by pressing Ctrl-C twice. Outside the main
    thread (where Python cannot install handlers) it does nothing.
    """

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self.signum is not None:
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
        self.signum = signum

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in self._SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
