"""The process's stdin as ``ragstore mcp`` reads it over stdio: a read a stop can leave.

The SDK's ``stdio_server`` reads stdin on anyio's worker threads. A cancelled read waits
for its thread, and the interpreter joins such threads before it exits: a server stopped
while its host kept stdin open (SIGTERM, Ctrl-C) waited for a line that never came, for
good, and its exit handlers (the embedded server's stop) never ran. :func:`claimed_stdin`
reads each line on a daemon thread of its own instead, which a cancel leaves blocked
and the exit does not wait for.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import threading
from collections.abc import Iterator
from typing import IO

import anyio
import anyio.from_thread
import anyio.lowlevel


class StdinLines(anyio.AsyncFile[str]):
    """Lines of ``fp``, each read on a daemon thread; a cancelled read leaves its thread
    (and the line it may still get) behind: for a stream read until the server stops."""

    def __init__(self, fp: IO[str]) -> None:
        super().__init__(fp)

    async def readline(self) -> str:
        token = anyio.lowlevel.current_token()
        done = anyio.Event()
        got: list[str] = []
        failed: list[BaseException] = []

        def read() -> None:
            try:
                got.append(self.wrapped.readline())
            except BaseException as exc:  # handed to the reader, as a worker thread would
                failed.append(exc)
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                anyio.from_thread.run_sync(done.set, token=token)

        threading.Thread(target=read, name="ragstore-mcp-stdin", daemon=True).start()
        await done.wait()
        if failed:
            raise failed[0]
        return got[0]


@contextlib.contextmanager
def claimed_stdin() -> Iterator[StdinLines | None]:
    """The process's stdin (fd 0) as :class:`StdinLines`, with fd 0 pointed at the null
    device while it is served, as the SDK does when it reads stdin itself: a tool or a
    child process that reads stdin reads EOF, not the client's messages. The duplicate
    it is read from stays open after the block (a thread may still be reading it).

    None where ``sys.stdin`` is not fd 0 (replaced, as under a test runner): the SDK's
    own reading is left to serve it."""
    if not _backed_by_fd0(sys.stdin):
        yield None
        return
    wire = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
    finally:
        os.close(null)
    try:
        yield StdinLines(
            open(wire, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        )
    finally:
        os.dup2(wire, 0)


def _backed_by_fd0(stream: IO[str] | None) -> bool:
    try:
        return stream is not None and stream.fileno() == 0
    except (AttributeError, OSError, ValueError):
        return False
