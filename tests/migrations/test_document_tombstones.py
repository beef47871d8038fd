"""Revision 0038: document deletes leave tombstones (``document_tombstones``) that a queued
job's write compares with its acceptance. Every delete of documents writes one and prunes
those no unfinished job needs; down to 0037 the table goes and the documents stay, and
back up deletes write tombstones again."""

from __future__ import annotations

from ragstore import Store
from ragstore.config import Settings
from ragstore.db import migrations
from ragstore.db.database import Database


def _tombstones(db: Database) -> list[str]:
    with db.connect() as conn:
        rows = conn.execute("SELECT source FROM document_tombstones ORDER BY 1").fetchall()
    return [str(r[0]) for r in rows]


def test_deletes_leave_tombstones_down_and_up_again(upgraded: tuple[Database, Settings]) -> None:
    db, settings = upgraded
    with Store(settings=settings) as store:
        store.add_texts("tb", ["orchids", "ferns", "roses"], ids=["t1", "t2", "t3"])
        assert store.delete_texts("tb", ["t1"]) == 1
    assert _tombstones(db) == ["t1"]
    migrations.downgrade(db, "0037")
    with db.connect() as conn:
        assert conn.execute("SELECT to_regclass('document_tombstones')").fetchone() == (None,)
    migrations.upgrade(db)
    assert _tombstones(db) == []
    with Store(settings=settings) as store:
        assert sorted(store.text_ids("tb")) == ["t2", "t3"]
        assert store.delete_texts_where("tb", ids=["t2"]) == ["t2"]
        assert _tombstones(db) == ["t2"]
        # no job waits: the delete pruned every tombstone before its own
        assert store.delete_texts("tb", ["t3"]) == 1
    assert _tombstones(db) == ["t3"]
