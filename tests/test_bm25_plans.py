"""Two BM25 write statements whose plans went quadratic, read from the server itself:
auto_explain (shipped with PostgreSQL) logs each nested statement's plan as a NOTICE to
the connection that runs it.

- A postings list's trim (revision 0031): each term's edge is found once, whatever the
  caller's planner settings, and the trim keeps what revision 0006's kept. Before, the
  edge's subquery sat in the delete's join filter, run once per posting of the term (a
  list of 40,000 postings read 20,000 index entries for each).
- A rebuilding load's postings (revision 0032): the collection's terms are read once, not
  once per new chunk. Before, the new chunks were read from ``chunks`` past its
  statistics, and a plan made for a handful of them rebuilt a hash of the terms for each.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from ragstore.db import documents
from ragstore.models import Chunk, ChunkType
from ragstore.runtime import Runtime
from tests.bm25_rows import collection_keeping
from tests.search_helpers import Doc, make_collection, write_docs

DOCS = 60
KEEP = 10


@pytest.fixture(scope="module")
def zebra(rt: Runtime) -> dict[str, Any]:
    """A collection whose 'zebra' list holds one posting per document (impacts vary with
    the chunk's length), written with lists kept long, then cut to KEEP per term."""
    coll = collection_keeping(rt, "trim-edge", 1000)
    docs = [Doc(f"d{i}", [f"zebra {'stripe ' * (i % 9)}savanna {i}"]) for i in range(DOCS)]
    write_docs(rt, coll, docs)
    with rt.db.connection() as conn:
        conn.execute(
            "UPDATE bm25_collection_stats SET list_keep = %s WHERE collection_id = %s",
            (KEEP, coll.id),
        )
        row = conn.execute(
            "SELECT term_id, stored FROM bm25_terms WHERE collection_id = %s AND lexeme = 'zebra'",
            (coll.id,),
        ).fetchone()
    assert row is not None and row[1] == DOCS
    return {"coll": coll, "term": int(row[0])}


def _trimmed(conn: psycopg.Connection[Any], term: int, nestloop: str) -> tuple[int, float, int]:
    """Trim ``term`` under ``enable_nestloop = nestloop`` (rolled back); its stored count,
    floor, and the postings left in the table."""
    with conn.transaction(force_rollback=True):
        conn.execute(f"SET LOCAL enable_nestloop = {nestloop}")
        conn.execute("SELECT ragstore_bm25_trim(%s)", ([term],))
        row = conn.execute(
            "SELECT stored, floor, (SELECT count(*) FROM bm25_postings WHERE term_id = %s)"
            " FROM bm25_terms WHERE term_id = %s",
            (term, term),
        ).fetchone()
    assert row is not None
    return int(row[0]), float(row[1]), int(row[2])


@contextmanager
def explained(rt: Runtime, analyze: bool = False) -> Iterator[tuple[Any, list[str]]]:
    """An autocommit connection that, once :func:`explain_from_now` was called on it, has
    the plan of every statement, nested ones included (with row counts and loops where
    ``analyze``), appended to the list yielded with it. (Not while it writes: a COPY's
    trigger statements would send plans faster than psycopg reads them mid-COPY.)"""
    notices: list[str] = []
    with rt.db.connect(autocommit=True) as conn:
        register_vector(conn)
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute("LOAD 'auto_explain'")
        for setting in (
            "auto_explain.log_nested_statements = on",
            "auto_explain.log_level = notice",
            f"auto_explain.log_analyze = {'on' if analyze else 'off'}",
            "auto_explain.log_timing = off",
        ):
            conn.execute(f"SET {setting}")
        yield conn, notices


def explain_from_now(conn: Any) -> None:
    conn.execute("SET auto_explain.log_min_duration = 0")


@pytest.mark.parametrize("nestloop", ["on", "off"])
def test_a_trim_finds_each_terms_edge_once(
    rt: Runtime, zebra: dict[str, Any], nestloop: str
) -> None:
    with explained(rt) as (conn, notices):
        explain_from_now(conn)
        stored, floor, left = _trimmed(conn, zebra["term"], nestloop)
    plans = [n for n in notices if "Delete on bm25_postings" in n]
    assert plans, notices  # the trim's statement was explained
    lines = [line.strip() for plan in plans for line in plan.splitlines()]
    assert not [line for line in lines if line.startswith("Join Filter") and "SubPlan" in line]
    assert any(line.startswith("CTE edge") for line in lines)
    # the KEEP best and their ties stay; the floor is the best impact dropped
    assert KEEP <= stored == left < DOCS
    assert floor > 0


def test_a_trim_keeps_the_best_postings_of_the_list(rt: Runtime, zebra: dict[str, Any]) -> None:
    term = zebra["term"]
    with rt.db.connect(autocommit=True) as conn:
        impacts = [
            float(r[0])
            for r in conn.execute(
                "SELECT impact FROM bm25_postings WHERE term_id = %s ORDER BY impact DESC",
                (term,),
            )
        ]
        edge = impacts[KEEP - 1]
        expected = (
            sum(1 for i in impacts if i >= edge),
            max(i for i in impacts if i < edge),
        )
        for nestloop in ("on", "off"):
            stored, floor, left = _trimmed(conn, term, nestloop)
            assert (stored, floor) == pytest.approx(expected)
            assert left == stored


def _writes(first: int, n: int) -> list[documents.DocumentWrite]:
    """``n`` one-chunk documents of a few words each, with unit vectors."""
    rng = np.random.default_rng(first)
    out = []
    for i in range(first, first + n):
        text = f"heron {i} wades the marsh at dawn, reed number {i % 37} bends"
        digest = hashlib.sha256(text.encode()).hexdigest()
        chunk = Chunk(0, ChunkType.PARAGRAPH, text, (), None, 0, len(text), 12, digest)
        record = documents.DocumentRecord(f"h{i}", None, "text", digest, len(text), {})
        vec = rng.standard_normal((1, 384)).astype(np.float32)
        out.append(documents.DocumentWrite(record, [chunk], vec / np.linalg.norm(vec)))
    return out


def test_a_rebuilding_loads_postings_read_the_terms_once(rt: Runtime) -> None:
    """A small collection written and analysed, then thirty times as many chunks in a
    bulk write (past the statistics, as a rebuilding load's are, and so are the terms
    whose df it recounts) and its BM25 end explained. Before revision 0032 each new chunk
    could join the terms on its own; whether the planner did depended on its estimates,
    which this small store happens to keep near enough (the old statement passes here;
    the store of bench.import_second did not): so the fence that makes the plan
    independent of them is asserted, with the terms read once."""
    coll = make_collection(rt, "plan-bulk-add")
    with rt.db.connection() as conn:
        documents.write_documents(conn, coll, _writes(0, 20))
    with rt.db.connect(autocommit=True) as conn:  # statistics of a small collection
        conn.execute("ANALYZE chunks, bm25_terms, bm25_collection_stats")
    with explained(rt, analyze=True) as (conn, notices), conn.transaction(force_rollback=True):
        documents.begin_bulk(conn, coll.id)
        mark = documents.chunk_mark(conn, coll.id)
        documents.write_documents(conn, coll, _writes(20, 600))
        explain_from_now(conn)
        documents.finish_bulk_add(conn, coll.id, mark)
        added = conn.execute(
            "SELECT count(DISTINCT p.chunk_id) FROM bm25_postings p"
            " JOIN chunks c ON c.id = p.chunk_id WHERE c.collection_id = %s",
            (coll.id,),
        ).fetchone()
    assert added == (620,)
    plan = next(n for n in notices if "INSERT INTO bm25_postings" in n and "Insert on" in n)
    terms = [line for line in plan.splitlines() if re.search(r"on bm25_terms t\b", line)]
    assert terms, plan
    assert all("loops=1)" in line for line in terms), plan
    assert any(line.strip().startswith("CTE lexemes") for line in plan.splitlines()), plan
