"""How a long command (build, train) is stopped: SIGTERM (a scheduler's or ``kill``'s stop) ends
like Ctrl-C, in the command's one sentence and exit code ``128 + signal``."""

from __future__ import annotations

import signal
import threading
from types import FrameType, TracebackType


class SigtermAsInterrupt:
    """Inside the block SIGTERM raises KeyboardInterrupt, as Ctrl-C does; ``signum`` says which
    came. Enter it *inside* the ``try`` that catches KeyboardInterrupt: a SIGTERM landing as the
    block ends is raised from ``__exit__`` while the handler is still ours, and a ``finally`` that
    restored the handler outside the ``try`` let that interrupt escape as an uncaught Ctrl-C
    (exit -2 instead of 143)."""

    def __init__(self) -> None:
        self.signum: int = signal.SIGINT
        self._previous = None

    def __enter__(self) -> SigtermAsInterrupt:
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous = signal.signal(signal.SIGTERM, self._interrupt)
        return self

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        raise KeyboardInterrupt

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
