"""Changing documents that exist, against the real database and model: an update replaces
the old version whole or leaves it whole, and the answer says which."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from ragstore import integrity
from ragstore.config import Settings
from ragstore.db import catalog
from ragstore.ingest import ingest_paths
from ragstore.ingest.service import IngestReport
from ragstore.runtime import Runtime


def _wait_for(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _waiting(admin: psycopg.Connection[Any]) -> int:
    """Backends of this database waiting on a lock."""
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock'"
    ).fetchone()
    return int(row[0]) if row else 0


def _texts(rt: Runtime, collection: str) -> list[str]:
    coll = rt.collection(collection)
    with rt.db.connection() as conn:
        rows = conn.execute(
            "SELECT c.text FROM chunks c WHERE c.collection_id = %s ORDER BY c.id", (coll.id,)
        ).fetchall()
    return [r[0] for r in rows]


def test_a_document_deleted_while_its_new_version_is_written_is_added_again(
    rt: Runtime, settings: Settings, tmp_path: Path
) -> None:
    """A delete by id that holds the row when a re-ingest of its file reads it: the
    re-ingest used to find the row gone under it (its UPDATE returned nothing) and crash
    with a KeyError; it now waits for the delete and stores the file as added."""
    doc = tmp_path / "d.md"
    doc.write_text("Walruses rest on sea ice.\n")
    ingest_paths(rt, [doc], "upd-del")
    coll = rt.collection("upd-del")
    doc.write_text("Walruses haul out on beaches when the ice is gone.\n")
    assert settings.database_url is not None
    url = settings.database_url.get_secret_value()
    with psycopg.connect(url) as held, psycopg.connect(url, autocommit=True) as admin:
        doc_id = int(
            held.execute(
                "SELECT id FROM documents WHERE collection_id = %s", (coll.id,)
            ).fetchone()[0]  # type: ignore[index]
        )
        catalog.delete_document(held, coll, doc_id)
        got: list[IngestReport | BaseException] = []

        def run() -> None:
            try:
                got.append(ingest_paths(rt, [doc], "upd-del"))
            except BaseException as exc:
                got.append(exc)

        t = threading.Thread(target=run)
        t.start()
        _wait_for(lambda: _waiting(admin) >= 1 or not t.is_alive(), "the re-ingest to wait")
        held.commit()
        t.join(60)
    assert len(got) == 1 and isinstance(got[0], IngestReport), got
    assert [o.status for o in got[0].outcomes] == ["added"]
    assert _texts(rt, "upd-del") == ["Walruses haul out on beaches when the ice is gone."]
    assert integrity.check(rt, "upd-del").ok
