"""A client killed in the middle of a statement: its backend stops within seconds and lets
go of its locks, instead of running the statement to its end (PostgreSQL notices a gone
client only when it writes to it, unless client_connection_check_interval is set)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import psycopg
import pytest

from ragstore.config import Settings
from ragstore.db.database import CLIENT_CHECK_INTERVAL, Database

# the child: one ragstore connection (pooled or not) that takes a lock on a table of its
# own and then sleeps for five minutes inside the same transaction
CHILD = """
import sys
from ragstore.db.database import Database
url, how, name, table = sys.argv[1:]
db = Database(url)
if how == "pool":
    with db.connection() as conn:
        conn.execute(f"SET application_name = '{name}'")
        conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        print("locked", flush=True)
        conn.execute("SELECT pg_sleep(300)")
else:
    conn = db.connect()
    conn.execute(f"SET application_name = '{name}'")
    conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    print("locked", flush=True)
    conn.execute("SELECT pg_sleep(300)")
"""


def _backends(conn: psycopg.Connection[tuple[object, ...]], name: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
    ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("how", ["pool", "connect"])
def test_a_killed_clients_statement_ends_and_frees_its_locks(settings: Settings, how: str) -> None:
    assert settings.database_url is not None
    url = settings.database_url.get_secret_value()
    name = f"ragstore-dead-{uuid.uuid4().hex[:8]}"
    table = f"dead_client_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as watcher:
        watcher.execute(f"CREATE TABLE {table} (x int)")
        try:
            with subprocess.Popen(
                [sys.executable, "-c", CHILD, url, how, name, table],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            ) as proc:
                try:
                    assert proc.stdout is not None
                    assert proc.stdout.readline().strip() == "locked"
                    deadline = time.monotonic() + 30
                    while not watcher.execute(
                        "SELECT 1 FROM pg_stat_activity WHERE application_name = %s"
                        " AND query LIKE 'SELECT pg_sleep%%' AND state = 'active'",
                        (name,),
                    ).fetchone():
                        assert time.monotonic() < deadline, "the child's statement never started"
                        time.sleep(0.05)
                finally:
                    proc.kill()
            # the backend notices within the check interval (5 s) and ends; without the
            # check it would sleep out its five minutes holding the lock
            killed = time.monotonic()
            while _backends(watcher, name):
                assert time.monotonic() - killed < 20, (
                    f"the dead client's backend still runs {time.monotonic() - killed:.0f} s on"
                )
                time.sleep(0.2)
            with watcher.transaction():
                watcher.execute("SET LOCAL lock_timeout = '2s'")
                watcher.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        finally:  # a failed run ends its child's backend rather than wait out its sleep
            watcher.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (name,),
            )
            watcher.execute(f"DROP TABLE IF EXISTS {table}")


def test_every_ragstore_connection_checks_its_client(settings: Settings) -> None:
    """The setting holds on pooled connections and after a rolled-back transaction."""
    assert settings.database_url is not None
    db = Database(settings.database_url.get_secret_value())
    try:
        with db.connection() as conn:
            conn.execute("SELECT 1")
            conn.rollback()
            row = conn.execute("SHOW client_connection_check_interval").fetchone()
            assert row is not None and row[0] == CLIENT_CHECK_INTERVAL
        with db.connect() as conn:
            conn.rollback()
            row = conn.execute("SHOW client_connection_check_interval").fetchone()
            assert row is not None and row[0] == CLIENT_CHECK_INTERVAL
    finally:
        db.close()
