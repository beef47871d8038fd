"""No vector outlives its chunk, now that space tables have no foreign key (revision 0026).

A backfill (``spaces.insert_vectors``, a model migration's writer) races deletes of the
chunks it embeds. The foreign key's check used to lock each chunk it wrote a vector for;
the backfill now reads them ``FOR KEY SHARE``, so a delete in flight is waited for and its
chunks skipped, and a delete that comes later waits for the backfill and then removes its
vectors. Without that lock each race below leaves vectors of deleted chunks behind.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ragstore.db import spaces
from ragstore.ingest import ingest_paths
from ragstore.runtime import Runtime
from tests.models.corpus import write_corpus


@pytest.fixture()
def building(rt: Runtime, tmp_path: Path) -> tuple[str, list[int], list[int]]:
    """A second space of collection ``c`` (as ``models migrate`` makes one), with the chunk
    ids of the document that the tests delete and of the others."""
    report = ingest_paths(rt, [write_corpus(tmp_path / "c", 3, 2)], "c")
    assert not report.failed
    coll = rt.collection("c")
    with rt.db.connection() as conn:
        _, table = spaces.create_space(conn, coll.id, coll.model_id, coll.model, index=False)
        rows = conn.execute(
            "SELECT c.id, d.source = min(d.source) OVER () FROM chunks c"
            " JOIN documents d ON d.id = c.document_id WHERE c.collection_id = %s ORDER BY c.id",
            (coll.id,),
        ).fetchall()
    gone = [int(r[0]) for r in rows if r[1]]
    kept = [int(r[0]) for r in rows if not r[1]]
    assert gone and kept
    return table, gone, kept


def _delete_first_document(conn: object) -> None:
    conn.execute(  # type: ignore[attr-defined]
        "DELETE FROM documents WHERE id = (SELECT min(id) FROM documents)"
    )


def _vectors(rt: Runtime, table: str) -> set[int]:
    with rt.db.connection() as conn:
        return {int(r[0]) for r in conn.execute(f"SELECT chunk_id FROM {table}")}


def _in_thread(work: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(work()), daemon=True)
    thread.start()
    return thread, out


def _vecs(rt: Runtime, n: int) -> np.ndarray:
    dim = rt.collection("c").model.dimension
    return np.random.default_rng(0).random((n, dim), dtype=np.float32)


def _blocked(thread: threading.Thread) -> bool:
    thread.join(1.0)
    return thread.is_alive()


def test_a_backfill_waits_for_a_delete_in_flight_and_skips_its_chunks(
    rt: Runtime, building: tuple[str, list[int], list[int]]
) -> None:
    table, gone, kept = building
    ids = sorted(gone + kept)

    def backfill() -> int:
        with rt.db.connection() as conn:
            return spaces.insert_vectors(conn, table, ids, _vecs(rt, len(ids)))

    with rt.db.connection() as deleter:
        _delete_first_document(deleter)
        thread, added = _in_thread(backfill)
        assert _blocked(thread), "the backfill waits for the delete"
    thread.join(30)
    assert added == [len(kept)]
    assert _vectors(rt, table) == set(kept)


def test_a_delete_waits_for_a_backfill_in_flight_and_removes_its_vectors(
    rt: Runtime, building: tuple[str, list[int], list[int]]
) -> None:
    table, gone, kept = building
    ids = sorted(gone + kept)

    def delete() -> None:
        with rt.db.connection() as conn:
            _delete_first_document(conn)

    with rt.db.connection() as backfill:
        assert spaces.insert_vectors(backfill, table, ids, _vecs(rt, len(ids))) == len(ids)
        thread, _ = _in_thread(delete)
        assert _blocked(thread), "the delete waits for the backfill's chunks"
    t0 = time.perf_counter()
    thread.join(30)
    assert time.perf_counter() - t0 < 30
    assert _vectors(rt, table) == set(kept)
