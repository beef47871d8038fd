"""What a collection's BM25 state is, read the same way by the tests that compare two
ways of writing it (bulk against incremental, a rebuilding load against round by round)."""

from __future__ import annotations

from typing import Any

from ragstore.db import repository
from ragstore.embedding.registry import resolve_spec
from ragstore.runtime import Runtime
from ragstore.search.bm25 import DEFAULT_B, DEFAULT_K1


def bulk_loads(rt: Runtime, on: bool) -> None:
    """Loads above 2 KB are bulk loads (or none are), written in rounds of 16 chunks. One
    runtime for both kinds: the model is loaded once."""
    rt.settings = rt.settings.model_copy(
        update={"bulk_load_bytes": 2048 if on else 0, "ingest_batch_chunks": 16}
    )


def collection_keeping(rt: Runtime, name: str, keep: int) -> repository.Collection:
    """A new collection keeping ``keep`` postings per term: its lists are trimmed and
    floors rise with a few documents, as for common words at scale."""
    with rt.db.connection() as conn:
        coll = repository.create_collection(conn, name, resolve_spec(rt.settings.model))
        conn.execute(
            "INSERT INTO bm25_collection_stats (collection_id, list_keep) VALUES (%s, %s)",
            (coll.id, keep),
        )
    return coll


def bm25_rows(rt: Runtime, cid: int) -> dict[str, Any]:
    """The collection's statistics row, each term's df and (floor, stored), and every
    posting by lexeme, source and chunk ordinal (ids differ between two collections)."""
    with rt.db.connection() as conn:
        stats = conn.execute(
            "SELECT chunks, tokens, impact_k1, impact_b, impact_avgdl, list_keep"
            " FROM bm25_collection_stats WHERE collection_id = %s",
            (cid,),
        ).fetchone()
        terms = conn.execute(
            "SELECT lexeme, df, floor, stored FROM bm25_terms WHERE collection_id = %s",
            (cid,),
        ).fetchall()
        postings = conn.execute(
            "SELECT t.lexeme, d.source, c.ordinal, p.impact, p.tf, p.len FROM bm25_postings p"
            " JOIN bm25_terms t ON t.term_id = p.term_id JOIN chunks c ON c.id = p.chunk_id"
            " JOIN documents d ON d.id = c.document_id WHERE t.collection_id = %s",
            (cid,),
        ).fetchall()
    return {
        "stats": tuple(stats) if stats else None,
        "df": {r[0]: r[1] for r in terms},
        "lists": {r[0]: (r[2], r[3]) for r in terms},
        "postings": sorted(postings),
    }


def full_text(conn: Any, cid: int, query: str, fn: str = "topk") -> list[tuple[str, int, float]]:
    """``ragstore_bm25_topk`` (or ``_exhaustive``) at the default k1 and b: the top 10 as
    (source, ordinal, score)."""
    rows = conn.execute(
        f"SELECT d.source, c.ordinal, r.raw FROM ragstore_bm25_{fn}"
        "(%s, 'english', %s, 10, %s, %s) r"
        " JOIN chunks c ON c.id = r.chunk_id JOIN documents d ON d.id = c.document_id"
        # a join keeps no order of its own (revision 0022 changed the plan here)
        " ORDER BY r.raw DESC, d.source, c.ordinal",
        (cid, query, DEFAULT_K1, DEFAULT_B),
    ).fetchall()
    return [(str(r[0]), int(r[1]), float(r[2])) for r in rows]
