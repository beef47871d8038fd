"""The first requests of a server arrive together and all reach for the runtime's database
and read router at once: they must share one of each. A second one built and dropped
leaves its connection pool unclosed, and the garbage collector then stops it on one of
the pool's own threads (``RuntimeError: cannot join current thread``, seen in CI)."""

from __future__ import annotations

import threading

from ragstore.config import Settings
from ragstore.runtime import Runtime


def test_threads_opening_the_runtime_at_once_share_one_database_and_router(
    settings: Settings,
) -> None:
    threads = 8
    barrier = threading.Barrier(threads)
    dbs: list[object] = []
    routers: list[object] = []
    lock = threading.Lock()
    with Runtime(settings) as rt:

        def open_both() -> None:
            barrier.wait()
            db, router = rt.primary, rt.router
            with lock:
                dbs.append(db)
                routers.append(router)

        workers = [threading.Thread(target=open_both) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert len(dbs) == threads
        assert len({id(d) for d in dbs}) == 1
        assert len({id(r) for r in routers}) == 1
        assert rt.primary is dbs[0]
