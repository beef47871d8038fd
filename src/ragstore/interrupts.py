"""Interrupts held off for a block that must not stop half way.

Below the CLI (the client's uploads, backups) as well as in it: a SIGTERM or Ctrl-C raised
between an ``open()`` and the code that closes its file leaves the file to the garbage
collector (a ``ResourceWarning``, an error under the test suite's warning filter).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGTERM and Ctrl-C for a short block that must not stop half way, and deliver
    the first one that came when the block ends (main thread only; elsewhere a no-op).

    An interrupt raised between ``open()`` and the ``with`` that closes the file leaves the
    file to the garbage collector (a ``ResourceWarning``); reading a batch of files inside
    this block keeps every interrupt at a point where nothing is held open."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {
        signum: handler
        for signum in (signal.SIGTERM, signal.SIGINT)
        if (handler := signal.getsignal(signum)) is not signal.SIG_IGN  # stays ignored
    }

    def hold(signum: int, _frame: FrameType | None) -> None:
        held.append(signum)

    for signum in previous:
        signal.signal(signum, hold)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        if held:
            signal.raise_signal(held[0])
