"""SIGTERM as an interrupt, for commands that change data.

A service manager, ``docker stop`` or ``timeout`` ends a command with SIGTERM, which by
default kills Python without unwinding: no summary, no exit handlers (the embedded server
keeps the dead process on its list of users), and nothing said about what was stored.
Inside :func:`terminate_as_interrupt` SIGTERM raises :class:`Terminated` in the main
thread instead, a :class:`KeyboardInterrupt`, so the command stops exactly as on Ctrl-C:
the transaction in flight commits or rolls back whole, and the command can say so.

A one-process HTTP server (``serve --workers 1``, ``mcp --transport http``) stops on
SIGTERM and SIGINT under :func:`stop_signals_end_cleanly` instead: gracefully, exit 0;
``mcp`` over stdio likewise under :func:`until_stopped`.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

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


@contextmanager
def stop_signals_end_cleanly(server: Any) -> Iterator[None]:
    """SIGTERM and SIGINT stop a one-process server (a ``uvicorn.Server``: ``serve
    --workers 1``, ``mcp --transport http``) as they stop several: gracefully, and the
    command exits 0.

    uvicorn's server raises the signal that stopped it again once its shutdown is done,
    under the handlers it found: with Python's, ``serve --workers 1`` then died of SIGTERM
    (status -15, 143 in a shell; "Error" to Kubernetes, "Exited (143)" to Docker) or
    exited 130 on Ctrl-C, while ``--workers 2`` (uvicorn's supervisor, which exits 0, as
    gunicorn and ``ragstore worker`` do) ended 0 on the same stop; dying of SIGTERM also
    skipped the exit handlers, so the embedded server the command had started kept
    running. The handlers it finds now ask the server to stop (what its own do): its
    raise lands there when the server is done, and a signal that comes before it takes
    over still stops it."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only: uvicorn leaves them alone there too
        return

    def stop(_signum: int, _frame: FrameType | None) -> None:
        server.should_exit = True

    found = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in found.items():
            signal.signal(sig, handler)


async def until_stopped(serve: Callable[[], Awaitable[None]]) -> None:
    """Run ``serve`` (an async server: ``ragstore mcp`` over stdio) until it returns or
    SIGTERM or SIGINT comes, which cancels it: it stops as it does when its client goes
    away, and the command exits 0, as :func:`stop_signals_end_cleanly` has an HTTP
    server do.

    ``anyio.run`` had no handler of its own: SIGTERM killed the command (status -15)
    before its exit handlers ran, so the embedded server it had started kept running,
    and Ctrl-C did not stop it at all (the read of stdin it waited for never ended). A
    second signal, while the first unwinds, stops it as it did before (SIGTERM kills,
    SIGINT raises KeyboardInterrupt). Off the main thread, signals are left alone."""
    if threading.current_thread() is not threading.main_thread():
        await serve()
        return
    import anyio
    import anyio.abc

    async with anyio.create_task_group() as tasks:

        async def cancel_on_a_signal(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                task_status.started()
                async for _ in signals:
                    tasks.cancel_scope.cancel()
                    return

        await tasks.start(cancel_on_a_signal)
        await serve()
        tasks.cancel_scope.cancel()
