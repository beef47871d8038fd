"""Threads of one process that reach the embedded server at the same moment.

When every pooled connection is busy, each waiting request probes the database, and a
probe joins the embedded server (restarting a postmaster that died). The package's lock
over its list of users is an inter-process file lock, not a thread lock: two threads of
one process inside it at once made the second release raise ``RuntimeError: Unable to
release an unaquired lock`` in a loaded hybrid search (docs/benchmarks.md, 1M run).
"""

from __future__ import annotations

import threading
from pathlib import Path

from ragstore.db import embedded
from ragstore.errors import DatabaseUnavailableError


def test_threads_joining_the_embedded_server_at_once_all_get_its_address(
    pg_data_dir: Path, pg_admin_uri: str
) -> None:
    threads, rounds = 8, 5
    barrier = threading.Barrier(threads)
    errors: list[Exception] = []
    uris: set[str] = set()
    lock = threading.Lock()

    def join() -> None:
        try:
            barrier.wait()
            for _ in range(rounds):
                uri = embedded.start(pg_data_dir)
                with lock:
                    uris.add(uri)
        except (RuntimeError, DatabaseUnavailableError) as exc:  # the lock's and start's own
            with lock:
                errors.append(exc)

    workers = [threading.Thread(target=join) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    assert len(uris) == 1 and next(iter(uris)).rsplit("/", 1)[0] == pg_admin_uri.rsplit("/", 1)[0]
