"""SIGTERM as an interrupt, for commands that change data.

A service manager, ``docker stop`` or ``timeout`` ends a command with SIGTERM, which by
default kills Python without unwinding: no summary, no exit handlers (the embedded server
keeps the dead process on its list of users), and nothing said about what was stored.
Inside :func:`terminate_as_interrupt` SIGTERM raises :class:`Terminated` in the main
thread instead, a :class:`KeyboardInterrupt`, so the command stops exactly as on Ctrl-C:
the transaction in flight commits or rolls back whole, and the command can say so.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, what a shell reports for a SIGTERM death


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived inside :func:`terminate_as_interrupt`."""


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` for the block (main thread only; elsewhere a
    no-op). A second SIGTERM while the first unwinds kills the process at once, as
    before: the database never holds half a transaction either way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def raise_terminated(_signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated()

    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def interrupt_status(exc: BaseException) -> tuple[str, int]:
    """How ``exc`` (a KeyboardInterrupt, or one raised from it) came about, and the exit
    status that says so: ``("SIGTERM", 143)`` or ``("Ctrl-C", 130)``."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, Terminated):
            return "SIGTERM", EXIT_TERMINATED
        seen = seen.__cause__
    return "Ctrl-C", 128 + signal.SIGINT


@contextmanager
def interrupt_says(what_happened: str | Callable[[], str]) -> Iterator[None]:
    """:func:`terminate_as_interrupt` for the block; an interrupt (SIGTERM or Ctrl-C) ends
    the command with ``interrupted by HOW: WHAT_HAPPENED`` and its exit status, for a
    command whose one transaction makes that sentence the same whenever it stops.

    A callable is asked at the interrupt: for a block that goes on after its transaction
    committed (closing its connections, printing), where "rolled back" is no longer true.
    """
    try:
        with terminate_as_interrupt():
            yield
    except KeyboardInterrupt as exc:
        from ragstore.cli.output import err_console

        how, status = interrupt_status(exc)
        said = what_happened if isinstance(what_happened, str) else what_happened()
        err_console().print(f"interrupted by {how}: {said}")
        sys.exit(status)
