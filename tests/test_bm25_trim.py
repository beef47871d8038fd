"""A postings list's trim (revision 0031): each term's edge is found once, whatever the
caller's planner settings, and the trim keeps what revision 0006's kept.

The plan is read from the server itself: auto_explain (shipped with PostgreSQL) logs the
trim's nested statement as a NOTICE to this connection. Before revision 0031 the edge's
subquery sat in the delete's join filter, run once per posting of the term (a list of
40,000 postings read 20,000 index entries for each); that is what is asserted absent.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from ragstore.runtime import Runtime
from tests.bm25_rows import collection_keeping
from tests.search_helpers import Doc, write_docs

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


@pytest.mark.parametrize("nestloop", ["on", "off"])
def test_a_trim_finds_each_terms_edge_once(
    rt: Runtime, zebra: dict[str, Any], nestloop: str
) -> None:
    notices: list[str] = []
    with rt.db.connect(autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute("LOAD 'auto_explain'")
        for setting in (
            "auto_explain.log_min_duration = 0",
            "auto_explain.log_nested_statements = on",
            "auto_explain.log_level = notice",
        ):
            conn.execute(f"SET {setting}")
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
