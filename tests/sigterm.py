"""SIGTERM sent to this very process at a chosen moment, for in-process CLI runs.

A harmless handler stands in while the helper is active, so a signal that arrives after
the command under test has returned (and restored the handler it found) ends nothing.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def sigterm_when(ready: Callable[[], bool], timeout_s: float = 120.0) -> Iterator[list[bool]]:
    """Send SIGTERM to this process once ``ready()`` holds; yields ``[sent]``."""
    sent = [False]
    stop = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while not stop.is_set() and time.monotonic() < deadline:
            if ready():
                sent[0] = True
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.01)

    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    thread = threading.Thread(target=watch, name="sigterm-when", daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        stop.set()
        thread.join()
        signal.signal(signal.SIGTERM, previous)


def backends_where(url: str, condition: str) -> int:
    """How many backends of the database at ``url``, other than the asking one, match
    ``condition`` (SQL over ``pg_stat_activity``): the moment a signal should land."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(backends_sql(condition)).fetchone()
    return int(row[0]) if row else 0


def backends_sql(condition: str) -> str:
    """The query that counts the backends ``backends_where`` counts."""
    return "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND " + condition
