"""Model switches that race each other, on the real database: two commands must never both
act, and neither may act on a collection read before the other one switched it.

The race is made deterministic in the database: a transaction holds the collection row
``FOR SHARE`` (as a document write does) so the commands queue on it, and the migration
lock's connection of the first one is ended (``pg_terminate_backend``: a connection lost),
so the second one gets the lock while the first still works. The first then finds its
lock gone and stops without changing anything; the second, which read the collection
while the first waited, acts once, as if alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ragstore.config import Settings
from ragstore.db import spaces
from ragstore.embedding.registry import TRUNCATED_MODEL
from ragstore.errors import MigrationStateError
from ragstore.ingest import ingest_paths
from ragstore.modelops import migrate, model_status, rollback
from ragstore.runtime import Runtime
from tests.models.corpus import write_corpus

COLL = "race"


@pytest.fixture(scope="module")
def corpus(rt: Runtime, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_corpus(tmp_path_factory.mktemp("race"), docs=3, paragraphs=2, long=True)
    report = ingest_paths(rt, [folder], COLL)
    assert report.count("added") == 3 and not report.failed
    return folder


class _Run(threading.Thread):
    """``fn(Runtime)`` in a thread with a Runtime of its own; its result or error kept."""

    def __init__(self, settings: Settings, fn: Callable[[Runtime], Any]) -> None:
        super().__init__(daemon=True)
        self.settings, self.fn = settings, fn
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        with Runtime(self.settings) as rt:
            try:
                self.result = self.fn(rt)
            except BaseException as exc:  # handed to the test
                self.error = exc


def _wait_for(cond: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _lock_holder(admin: psycopg.Connection[Any], coll_id: int) -> int | None:
    """The backend holding the collection's migration lock."""
    row = admin.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 2",
        (spaces.MIGRATION_LOCKS, coll_id),
    ).fetchone()
    return int(row[0]) if row else None


def _waiting_on_row(admin: psycopg.Connection[Any]) -> int:
    """Backends waiting for a row lock of ``collections`` (a switch's FOR UPDATE)."""
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND query ILIKE %s",
        ("%FROM collections%FOR UPDATE%",),
    ).fetchone()
    return int(row[0]) if row else 0


def _one_active(rt: Runtime) -> list[str]:
    return [r["table"] for r in model_status(rt, COLL) if r["status"] == "active"]


def _race(
    rt: Runtime,
    settings: Settings,
    held: psycopg.Connection[Any],
    first: Callable[[Runtime], Any],
    second: Callable[[Runtime], Any],
) -> tuple[_Run, _Run]:
    """``first`` queued on the held row with its migration lock's connection ended, then
    ``second`` queued behind it (it read the collection before ``first`` switched)."""
    assert settings.database_url is not None
    coll_id = rt.collection(COLL).id
    with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as admin:
        one = _Run(settings, first)
        one.start()
        _wait_for(lambda: _waiting_on_row(admin) == 1, "the first command to queue")
        pid = _lock_holder(admin, coll_id)
        assert pid is not None
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        _wait_for(lambda: _lock_holder(admin, coll_id) is None, "the lock to go")
        two = _Run(settings, second)
        two.start()
        _wait_for(lambda: _waiting_on_row(admin) == 2, "the second command to queue")
        held.commit()
        one.join(120)
        two.join(120)
    return one, two


def test_a_rollback_that_read_the_collection_before_another_rollback_changes_nothing(
    rt: Runtime, settings: Settings, corpus: Path
) -> None:
    """Two rollbacks at once (a double click), the first one's lock lost while it waited.
    Both used to act: the second marked the space it had read as active again, so the
    collection had two ``active`` spaces (one never written to again, never prunable) and
    answered "rolled back from X to X". Now the first stops and the second rolls back."""
    old = rt.collection(COLL)
    migrate(rt, COLL, TRUNCATED_MODEL, batch_size=64)
    new = rt.collection(COLL)
    assert new.table != old.table
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        conn.execute("SELECT id FROM collections WHERE id = %s FOR SHARE", (new.id,))
        one, two = _race(
            rt, settings, conn, lambda r: rollback(r, COLL), lambda r: rollback(r, COLL)
        )
    assert isinstance(one.error, MigrationStateError), one.result
    assert "lost its migration lock" in str(one.error)
    assert two.error is None and two.result == (new.model.key, old.model.key)
    assert rt.collection(COLL).table == old.table
    assert _one_active(rt) == [old.table]
    statuses = {r["table"]: r["status"] for r in model_status(rt, COLL)}
    assert statuses == {old.table: "active", new.table: "retired"}


def test_a_migrate_that_read_the_collection_before_a_rollback_changes_nothing(
    rt: Runtime, settings: Settings, corpus: Path
) -> None:
    """``models migrate --to`` the old model while a rollback to it runs, the rollback's lock
    lost while it waited: the migrate used to build a second space of the model the
    rollback had made active and switch to it, re-embedding every chunk, leaving that model
    both active and retired. Now the rollback stops and the migrate switches back to the
    retired space of that model, as a rollback would have."""
    old = rt.collection(COLL)
    migrate(rt, COLL, TRUNCATED_MODEL, batch_size=64)  # the retired space, switched to again
    new = rt.collection(COLL)
    before = {r["table"] for r in model_status(rt, COLL)}
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        conn.execute("SELECT id FROM collections WHERE id = %s FOR SHARE", (new.id,))
        one, two = _race(
            rt,
            settings,
            conn,
            lambda r: rollback(r, COLL),
            lambda r: migrate(r, COLL, old.model.key, batch_size=64),
        )
    assert isinstance(one.error, MigrationStateError), one.result
    assert "lost its migration lock" in str(one.error)
    assert two.error is None and two.result.switched and two.result.embedded == 0
    assert {r["table"] for r in model_status(rt, COLL)} == before, "no new space"
    assert rt.collection(COLL).table == old.table
    assert _one_active(rt) == [old.table]
