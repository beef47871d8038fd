"""Two first bulk builds at once, in a store with no postings (revision 0039).

Each build found the postings table empty and dropped its indexes, and each held the lock
its look took, so both waited for the other and PostgreSQL rolled one back (a deadlock,
after all its loading). Here two connections write the same CISI records into two new
collections with the BM25 triggers off, as a bulk load does, wait for each other, and
finish at once: both commit, round after round, and each collection's statistics and
postings are those a rebuild writes. Each round starts from a store with no postings.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import psycopg
import pytest

from ragstore.runtime import Runtime
from tests.bm25_rows import bm25_rows, collection_keeping

CISI = Path(__file__).resolve().parents[2] / "shared" / "data" / "cisi"
N_DOCS = 100
ROUNDS = 6


@pytest.fixture(scope="module")
def texts() -> list[str]:
    out: list[str] = []
    with (CISI / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            out.append(f"{row['title']}\n{row['text']}")
            if len(out) == N_DOCS:
                break
    return out


def _write(conn: psycopg.Connection[tuple[object, ...]], cid: int, texts: list[str]) -> None:
    """One document of one chunk per text, the BM25 triggers skipped (a bulk load's write)."""
    conn.execute("SELECT set_config('ragstore.bulk', 'on', true)")
    conn.execute(
        "INSERT INTO documents (collection_id, source, format, content_hash)"
        " SELECT %s, 'doc-' || n, 'text', md5(t) FROM unnest(%s::text[]) WITH ORDINALITY u(t, n)",
        (cid, texts),
    )
    conn.execute(
        "INSERT INTO chunks (document_id, collection_id, ordinal, chunk_type, text, char_start,"
        " char_end, token_count, content_hash)"
        " SELECT d.id, %s, 0, 'paragraph', u.t, 0, length(u.t), 1, md5(u.t)"
        " FROM unnest(%s::text[]) WITH ORDINALITY u(t, n)"
        " JOIN documents d ON d.collection_id = %s AND d.source = 'doc-' || u.n",
        (cid, texts, cid),
    )


def _postings(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM bm25_postings").fetchone()
    return int(row[0]) if row else -1


def _finish_together(url: str, cids: list[int], texts: list[str]) -> list[BaseException]:
    """Each collection written on a connection of its own, then both finished at once;
    what either raised."""
    barrier = threading.Barrier(len(cids), timeout=120)
    errors: list[BaseException] = []

    def load(cid: int) -> None:
        try:
            with psycopg.connect(url) as conn:
                _write(conn, cid, texts)
                barrier.wait()
                conn.execute("SELECT ragstore_bm25_bulk_finish(%s)", (cid,))
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=load, args=(cid,)) for cid in cids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_two_first_bulk_builds_both_commit(
    rt: Runtime, database_url: str, texts: list[str]
) -> None:
    for round_ in range(ROUNDS):
        assert _postings(database_url) == 0, "the round does not start from an empty store"
        colls = [collection_keeping(rt, f"first-{round_}-{side}", 6) for side in "xy"]
        errors = _finish_together(database_url, [c.id for c in colls], texts)
        assert errors == [], f"round {round_}: {errors!r}"
        rows = [bm25_rows(rt, c.id) for c in colls]
        assert rows[0]["stats"][0] == N_DOCS
        assert rows[0]["postings"] and rows[0] == rows[1]
        with psycopg.connect(database_url) as conn:
            indexes = conn.execute(
                "SELECT count(*) FROM pg_indexes WHERE tablename = 'bm25_postings'"
            ).fetchone()
            conn.execute("SELECT ragstore_bm25_rebuild(%s)", (colls[0].id,))
        assert indexes is not None and indexes[0] == 2
        assert bm25_rows(rt, colls[0].id) == rows[0], "the postings are not a rebuild's"
        with psycopg.connect(database_url) as conn:
            conn.execute("DELETE FROM collections WHERE id = ANY(%s)", ([c.id for c in colls],))
