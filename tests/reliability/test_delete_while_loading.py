"""Creating and deleting collections while other transactions write chunks.

A large load of one collection holds ``chunks`` until it commits, minutes later. Space
tables have no foreign key to ``chunks`` (revision 0026), so creating or dropping one locks
that table only: a collection is created or deleted at once, whatever other collections'
writers do, and searches never queue behind the drop. What can still hold a deletion up is
a transaction on the collection's own vector table (its own load): past
``spaces.DROP_TABLES_LOCK_TIMEOUT`` the deletion gives up with a clear conflict and deletes
nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from ragstore.db import catalog, spaces
from ragstore.db.errors import translated
from ragstore.errors import CollectionNotFoundError, ConflictError
from ragstore.ingest import ingest_paths
from ragstore.runtime import Runtime
from ragstore.search import search
from tests.models.corpus import write_corpus


@pytest.fixture()
def two(rt: Runtime, tmp_path: Path) -> Iterator[None]:
    for name in ("kept", "gone"):
        report = ingest_paths(rt, [write_corpus(tmp_path / name, 2, 2, prefix=name)], name)
        assert not report.failed
    yield


def test_a_collection_is_deleted_while_another_collection_is_written(
    rt: Runtime, two: None
) -> None:
    coll = rt.collection("gone")
    with rt.db.connection() as writer:
        writer.execute("DELETE FROM chunks WHERE id < 0")  # a writer's lock, held open
        t0 = time.perf_counter()
        with rt.db.connection() as conn, translated("deleting collection 'gone'"):
            catalog.delete_collection(conn, coll)
        assert time.perf_counter() - t0 < 2
        with pytest.raises(CollectionNotFoundError):
            rt.collection("gone")
        assert search(rt, "history of tomatoes", collection="kept", k=1, mode="hybrid")
    with rt.db.connection() as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relname = %s", (coll.table,)
        ).fetchone()
    assert left == (0,)


def test_a_collection_is_created_while_another_collection_is_written(
    rt: Runtime, two: None, tmp_path: Path
) -> None:
    """It used to wait, with no timeout, for the writer to commit: its table's foreign key
    needed a lock on ``chunks`` that a writer's excludes."""
    done: list[object] = []

    def create() -> None:
        report = ingest_paths(rt, [write_corpus(tmp_path / "new", 1, 2, prefix="new")], "new")
        done.append(report)

    with rt.db.connection() as writer:
        writer.execute("DELETE FROM chunks WHERE id < 0")
        thread = threading.Thread(target=create, daemon=True)
        thread.start()
        thread.join(20)
        finished_while_writer_open = bool(done)
    thread.join(60)  # with the writer gone, a regression finishes too (and fails below)
    assert finished_while_writer_open
    assert search(rt, "roses", collection="new", k=1, mode="vector")


def test_a_deletion_that_cannot_lock_its_tables_gives_up_and_deletes_nothing(
    rt: Runtime, two: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction holding the collection's own vector table (its load) stays ahead."""
    monkeypatch.setattr(spaces, "DROP_TABLES_LOCK_TIMEOUT", "300ms")
    coll = rt.collection("gone")
    with rt.db.connection() as load:
        load.execute(
            sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(sql.Identifier(coll.table))
        )
        t0 = time.perf_counter()
        with (
            pytest.raises(ConflictError, match="was not deleted") as failed,
            rt.db.connection() as conn,
            translated("deleting collection 'gone'"),
        ):
            catalog.delete_collection(conn, coll)
        assert time.perf_counter() - t0 < 5
        assert "retry when that has finished" in str(failed.value)
        # nothing was deleted, and other collections are searched as before
        assert search(rt, "history of tomatoes", collection="kept", k=1, mode="hybrid")
    assert search(rt, "roses", collection="gone", k=1, mode="hybrid")
    with rt.db.connection() as conn, translated("deleting collection 'gone'"):
        catalog.delete_collection(conn, coll)
    with pytest.raises(CollectionNotFoundError):
        rt.collection("gone")


def test_dropping_a_space_that_cannot_lock_its_table_gives_up(
    rt: Runtime, two: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for a space alone (pruning a retired model, cancelling a migration)."""
    monkeypatch.setattr(spaces, "DROP_TABLES_LOCK_TIMEOUT", "300ms")
    coll = rt.collection("kept")
    with rt.db.connection() as conn:
        (space,) = spaces.list_spaces(conn, coll.id)
    with rt.db.connection() as load:
        load.execute(
            sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(sql.Identifier(space.table))
        )
        with (
            pytest.raises(ConflictError, match=f"space {space.table} was not dropped"),
            rt.db.connection() as conn,
            translated("pruning"),
        ):
            spaces.drop_space(conn, space)
    with rt.db.connection() as conn:
        assert [s.table for s in spaces.list_spaces(conn, coll.id)] == [space.table]
        assert spaces.has_index(conn, space.table)


def test_a_deletion_waits_for_a_write_of_the_collection_in_flight_without_deadlock(
    rt: Runtime, two: None
) -> None:
    """A write holds its collection's row FOR SHARE, then writes the vector table. The
    deletion takes the rows' locks before the tables': taking the tables first, it would
    hold what the write needs next while waiting for the write's row lock (a deadlock,
    one of the two aborted)."""
    coll = rt.collection("gone")
    outcome: list[Exception | None] = []

    def delete() -> None:
        try:
            with rt.db.connection() as conn, translated("deleting collection 'gone'"):
                catalog.delete_collection(conn, coll)
            outcome.append(None)
        except Exception as exc:  # reported below
            outcome.append(exc)

    with rt.db.connection() as write:
        write.execute("SELECT 1 FROM collections WHERE id = %s FOR SHARE", (coll.id,))
        thread = threading.Thread(target=delete, daemon=True)
        thread.start()
        time.sleep(1.0)  # the deletion is waiting now
        assert not outcome, "the deletion waits for the write in flight"
        write.execute("SET LOCAL lock_timeout = '5s'")
        write.execute(
            sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(sql.Identifier(coll.table))
        )
    thread.join(30)
    assert outcome == [None]
    with pytest.raises(CollectionNotFoundError):
        rt.collection("gone")


def test_an_ingest_whose_collection_is_deleted_meanwhile_reports_its_files(
    rt: Runtime, tmp_path: Path
) -> None:
    """The collection deleted (by another request) while a bulk load of it runs: the
    ingest's last step, the vector index's check, raised "embedding table 'emb_N' does not
    exist" (an input error, 422) out of the whole ingest, in place of its report or its
    own error. The ingest's own answer now stands: the conflict with the deletion, or a
    report whose files after it failed on it (the first ``collection_not_found``, the
    write that found the collection gone; the ingest stops there, the rest not
    attempted)."""
    root = write_corpus(tmp_path / "racing", 40, 6, prefix="racing")  # a bulk load
    (root / "000-empty.md").write_text("")  # its outcome comes first, before any write
    assert not ingest_paths(rt, [write_corpus(tmp_path / "w", 1, 1, prefix="w")], "racing").failed
    coll = rt.collection("racing")
    deleter: list[threading.Thread] = []

    def delete() -> None:
        with rt.db.connection() as conn:
            catalog.delete_collection(conn, coll)

    def delete_once(stage: str, files: int, chunks: int) -> None:
        if not deleter:  # another request's deletion, while the load goes on
            deleter.append(threading.Thread(target=delete))
            deleter[0].start()

    try:
        report = ingest_paths(rt, [root], "racing", progress=delete_once)
    except (ConflictError, CollectionNotFoundError) as exc:  # the ingest's own error
        assert "deleted" in str(exc)
    else:
        gone = {"conflict", "collection_not_found"}
        failed = {Path(o.source).name: o.code for o in report.outcomes if o.status == "failed"}
        # the empty file fails on its own, or on the deletion where that came first
        assert failed.pop("000-empty.md", "empty_document") in {"empty_document", *gone}
        assert set(failed.values()) <= gone, report.outcomes
        assert len(report.outcomes) == 41
    finally:
        deleter[0].join()
    with pytest.raises(CollectionNotFoundError):
        rt.collection("racing")
