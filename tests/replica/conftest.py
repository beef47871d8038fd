"""A primary and a streaming hot standby on loopback, shared by the replica tests.

The primary is the session's embedded server (a fresh database cloned from the migrated
template); the standby is made from it with the embedded ``pg_basebackup -R``
(:mod:`ragstore.db.standby`) and listens on a Unix socket closed to other users.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from ragstore.config import Settings
from ragstore.db import standby
from tests.conftest import TEMPLATE, create_database


@dataclass
class Pair:
    primary_url: str
    standby: standby.Standby
    data_dir: Path

    def settings(self, **update: object) -> Settings:
        """Settings of a server on the primary that reads from the standby."""
        base: dict[str, object] = {
            "database_url": self.primary_url,
            "read_database_urls": self.standby.conninfo,
            "data_dir": self.data_dir,
            "profile": "test",
            "auth": "off",
            "max_replica_lag_s": 5.0,
            "replica_wait_s": 2.0,
        }
        base.update(update)
        return Settings(**base)  # type: ignore[arg-type]

    def read_only_settings(self, **update: object) -> Settings:
        """Settings of a search-only server on the standby alone."""
        base: dict[str, object] = {
            "database_url": self.standby.conninfo,
            "data_dir": self.data_dir,
            "profile": "test",
            "auth": "off",
            "replica_wait_s": 0.5,
        }
        base.update(update)
        return Settings(**base)  # type: ignore[arg-type]

    def wait_caught_up(self, timeout_s: float = 10.0) -> None:
        """Until the standby has replayed everything the primary wrote so far."""
        with psycopg.connect(self.primary_url, autocommit=True) as p:
            target = p.execute("SELECT pg_current_wal_lsn()").fetchone()
        deadline = time.monotonic() + timeout_s
        with psycopg.connect(self.standby.conninfo, autocommit=True) as s:
            while time.monotonic() < deadline:
                row = s.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s", (target[0] if target else None,)
                ).fetchone()
                if row and row[0]:
                    return
                time.sleep(0.02)
        raise AssertionError("the standby did not catch up")

    def pause_replay(self, paused: bool) -> None:
        with psycopg.connect(self.standby.conninfo, autocommit=True) as s:
            s.execute("SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()")


@pytest.fixture(scope="package")
def pair(pg_admin_uri: str, template_url: str) -> Iterator[Pair]:
    # The session's server is the primary (no second initdb); the standby copies it whole.
    # Its directory is not under pytest's basetemp: concurrent pytest runs prune each other's
    # old basetemps, and a server's data directory must outlive the tests that use it.
    primary_url = create_database(pg_admin_uri, TEMPLATE)
    root = Path(tempfile.mkdtemp(prefix="ragstore-replica-"))
    node = standby.create(primary_url, root / "standby")
    try:
        yield Pair(primary_url, node, root / "data")
    finally:
        node.remove()
        shutil.rmtree(root, ignore_errors=True)
