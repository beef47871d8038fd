"""Deleting a collection while another transaction writes chunks (a large load of another
collection holds ``chunks`` until it commits, minutes later).

Dropping the collection's vector tables locks ``chunks``, and every search of every
collection queues behind that lock while it waits. The deletion must give up after
``spaces.DROP_TABLES_LOCK_TIMEOUT`` with a clear conflict, delete nothing, and succeed once
the writer has finished; searches of other collections must not stay frozen meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

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


def test_a_deletion_that_cannot_lock_chunks_gives_up_and_deletes_nothing(
    rt: Runtime, two: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spaces, "DROP_TABLES_LOCK_TIMEOUT", "300ms")
    coll = rt.collection("gone")
    with rt.db.connection() as writer:
        writer.execute("DELETE FROM chunks WHERE id < 0")  # a writer's lock, held open
        t0 = time.perf_counter()
        with (
            pytest.raises(ConflictError, match="another write") as failed,
            rt.db.connection() as conn,
            translated("deleting collection 'gone'"),
        ):
            catalog.delete_collection(conn, coll)
        assert time.perf_counter() - t0 < 5
        assert "retry when that has finished" in str(failed.value)
        # nothing was deleted, and other collections are searched as before
        assert search(rt, "roses", collection="gone", k=1, mode="fulltext")
        assert search(rt, "history of tomatoes", collection="kept", k=1, mode="hybrid")
    with rt.db.connection() as conn, translated("deleting collection 'gone'"):
        catalog.delete_collection(conn, coll)
    with pytest.raises(CollectionNotFoundError):
        rt.collection("gone")
    assert search(rt, "history of tomatoes", collection="kept", k=1, mode="hybrid")


def test_dropping_a_space_that_cannot_lock_chunks_gives_up(
    rt: Runtime, two: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for a space alone (pruning a retired model, cancelling a migration)."""
    monkeypatch.setattr(spaces, "DROP_TABLES_LOCK_TIMEOUT", "300ms")
    coll = rt.collection("kept")
    with rt.db.connection() as conn:
        (space,) = spaces.list_spaces(conn, coll.id)
    with rt.db.connection() as writer:
        writer.execute("DELETE FROM chunks WHERE id < 0")
        with (
            pytest.raises(ConflictError, match=f"space {space.table} was not dropped"),
            rt.db.connection() as conn,
            translated("pruning"),
        ):
            spaces.drop_space(conn, space)
    with rt.db.connection() as conn:
        assert [s.table for s in spaces.list_spaces(conn, coll.id)] == [space.table]
        assert spaces.has_index(conn, space.table)
