"""``ragstore_db_pool_exhausted_processes``: each process says whether its own pool is
exhausted (every connection lent out, requests waiting), on a real pool of the test
database. Summed over the live processes (livesum), it is what RagstoreDbPoolExhausted
reads: the summed pool gauges met "in use >= max" only while every process (``--workers``)
was exhausted at once (the two-process case is a promtool test in alerts_test.yml)."""

from __future__ import annotations

import threading
import time

from psycopg_pool import ConnectionPool

from ragstore.observability.metrics import REGISTRY, sync_pool, sync_replica_pools


def _exhausted() -> float | None:
    return REGISTRY.get_sample_value("ragstore_db_pool_exhausted_processes")


def test_a_pool_with_every_connection_lent_and_a_request_waiting_reads_exhausted(
    database_url: str,
) -> None:
    pool = ConnectionPool(database_url, min_size=1, max_size=1, open=True, name="exhaust-test")
    try:
        held = pool.getconn(timeout=30)
        sync_pool(pool)
        assert _exhausted() == 0  # all lent out, but nobody waits: not exhausted
        got = threading.Event()

        def wait_for_one() -> None:
            with pool.connection(timeout=60):
                got.set()

        waiter = threading.Thread(target=wait_for_one)
        waiter.start()
        try:
            # the pool counts the waiter as it queues: waited for on the pool's own figure
            deadline = time.monotonic() + 30
            while pool.get_stats().get("requests_waiting", 0) < 1:
                assert time.monotonic() < deadline, "the request never queued"
                assert not got.is_set()
                time.sleep(0.01)
            sync_pool(pool)
            assert _exhausted() == 1
        finally:
            pool.putconn(held)
            waiter.join(60)
        assert got.is_set()
        sync_pool(pool)
        assert _exhausted() == 0
    finally:
        pool.close()


def _replica_exhausted(name: str) -> float | None:
    return REGISTRY.get_sample_value(
        "ragstore_db_replica_pool_exhausted_processes", {"replica": name}
    )


def test_a_read_replicas_pool_reads_exhausted_by_its_name(database_url: str) -> None:
    """A read replica's pool had its size, in-use and waiting gauges but no exhausted one:
    summed over ``--workers N`` processes, "in use >= max and waiting" on those held only
    while every process's pool of that replica was exhausted at once, as the primary's
    did before ``ragstore_db_pool_exhausted_processes``. Each process now says it of each
    replica's pool, by the replica's name; a replica with a free connection reads 0."""
    pool = ConnectionPool(database_url, min_size=1, max_size=1, open=True, name="replica-test")
    roomy = ConnectionPool(database_url, min_size=1, max_size=2, open=True, name="replica-room")
    pools = [("exhaust-replica", pool), ("roomy-replica", roomy)]
    try:
        held = pool.getconn(timeout=30)
        roomy_held = roomy.getconn(timeout=30)
        sync_replica_pools(pools)
        assert _replica_exhausted("exhaust-replica") == 0  # all lent out, nobody waits
        got = threading.Event()

        def wait_for_one() -> None:
            with pool.connection(timeout=60):
                got.set()

        waiter = threading.Thread(target=wait_for_one)
        waiter.start()
        try:
            deadline = time.monotonic() + 30
            while pool.get_stats().get("requests_waiting", 0) < 1:
                assert time.monotonic() < deadline, "the request never queued"
                assert not got.is_set()
                time.sleep(0.01)
            sync_replica_pools(pools)
            assert _replica_exhausted("exhaust-replica") == 1
            assert _replica_exhausted("roomy-replica") == 0
            assert _exhausted() in (None, 0)  # the primary's gauge is not the replica's
        finally:
            pool.putconn(held)
            waiter.join(60)
        assert got.is_set()
        sync_replica_pools(pools)
        assert _replica_exhausted("exhaust-replica") == 0
        roomy.putconn(roomy_held)
    finally:
        sync_replica_pools([])  # the replicas' series dropped, as when their pools close
        pool.close()
        roomy.close()
