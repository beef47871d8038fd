"""A real ``ragstore`` command killed outright (SIGKILL) at a chosen moment, for the tests
that prove such a kill loses nothing and leaves nothing half-written.

The command runs in a child process (its own process group) whose database sessions carry
an application name of their own (libpq's ``PGAPPNAME``), so that the wait for them to end
counts its backends only, beside the test's own pool. The moment to kill is a SQL probe,
asked on one held connection (a new connection every few milliseconds costs the server a
fork each, time the child needs on a loaded machine), or a callable.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

_runs = itertools.count()


def killed_when(
    args: list[str],
    env: dict[str, str],
    url: str,
    ready: str | Callable[[], bool],
    log: Path,
    *,
    release: Callable[[], None] | None = None,
    timeout_s: float = 180.0,
) -> None:
    """Run ``ragstore ARGS`` with ``env``, SIGKILL its process group once ``ready`` holds
    (the command must not have ended first: the test would prove nothing), then wait until
    its sessions on ``url``'s server are gone, their transactions rolled back and their
    locks released. ``ready`` is a query whose first column is truthy at that moment, or a
    callable; ``log`` gets the command's output, shown when it ends too early. ``release``
    lets go of what the test held to stop the command where it is killed (a lock it
    waits on): its backend ends only once it is granted the lock and reads from the
    dead client."""
    app = f"ragstore-killed-{os.getpid()}-{next(_runs)}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from ragstore.cli import main; main()", *args],
            env={**env, "PGAPPNAME": app},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with psycopg.connect(url, autocommit=True) as watch:
            _await(proc, log, ready, watch, timeout_s)
            with contextlib.suppress(ProcessLookupError):  # ended: its status says so
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            assert proc.returncode == -signal.SIGKILL, _ended(proc, log)
            if release is not None:
                release()
            _await_gone(watch, app)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _await(
    proc: subprocess.Popen[bytes],
    log: Path,
    ready: str | Callable[[], bool],
    watch: psycopg.Connection[tuple[object, ...]],
    timeout_s: float,
) -> None:
    deadline = time.monotonic() + timeout_s
    while not _holds(ready, watch):
        assert proc.poll() is None, _ended(proc, log)
        assert time.monotonic() < deadline, "the command never got where it is to be killed"
        time.sleep(0.005)  # one query on a held connection: cheap


def _holds(ready: str | Callable[[], bool], watch: psycopg.Connection[tuple[object, ...]]) -> bool:
    if callable(ready):
        return ready()
    row = watch.execute(ready).fetchone()
    return bool(row and row[0])


def _await_gone(watch: psycopg.Connection[tuple[object, ...]], app: str) -> None:
    """Until no session of the killed command is left (each rolled back)."""
    deadline = time.monotonic() + 60
    while watch.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
    ).fetchone() != (0,):
        assert time.monotonic() < deadline, "the killed command's sessions never ended"
        time.sleep(0.02)


def _ended(proc: subprocess.Popen[bytes], log: Path) -> str:
    return (
        f"the command ended (status {proc.returncode}) before it was killed: "
        + (log.read_text(errors="replace")[-2000:])
    )
