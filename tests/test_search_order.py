"""A filtered vector list comes back ranked by distance, whichever way it was found.

A filter makes pgvector's HNSW scan iterate (``hnsw.iterative_scan = relaxed_order``),
and its rows then come slightly out of order by distance. The collection must be large
enough for PostgreSQL to plan the HNSW scan at all (a few thousand rows are sorted
whole): 20,000 chunks whose vectors are given (random unit vectors, as an import of
another model's vectors would bring), searched by a given vector.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest

from ragstore.config import Settings
from ragstore.db import documents, spaces
from ragstore.models import Chunk, ChunkType
from ragstore.runtime import Runtime
from ragstore.search import search, service
from ragstore.search.plan import search_plan
from tests.search_helpers import make_collection

COLL = "order"
DOCS, PER_DOC = 200, 100
RARE = 123  # the document whose chunks the selective filters keep
FAR_QUERY: list[float] = []  # a vector far from that document's (set by the fixture)


@pytest.fixture(scope="module")
def ordered(rt: Runtime) -> Runtime:
    coll = make_collection(rt, COLL)
    rng = np.random.default_rng(7)
    writes = []
    for d in range(DOCS):
        vectors = rng.standard_normal((PER_DOC, coll.model.dimension)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        chunks = [
            Chunk(
                ordinal=i,
                chunk_type=ChunkType.PARAGRAPH,
                text=f"note {d}-{i}",
                section_path=(),
                parent_ordinal=None,
                char_start=0,
                char_end=10,
                token_count=2,
                content_hash=hashlib.sha256(f"{d}-{i}".encode()).hexdigest(),
            )
            for i in range(PER_DOC)
        ]
        # one document of the 200 is rare: only its chunks have "rare", or a tag but "c"
        meta: dict[str, Any] = {"bucket": d % 10, "tag": "c"}
        if d == RARE:
            meta.update(rare=1, tag="r")
            rare_vectors = vectors
        record = documents.DocumentRecord(
            f"d{d:03}.md", None, "text", f"{d:064x}", 10 * PER_DOC, meta
        )
        writes.append(documents.DocumentWrite(record, chunks, vectors))
    with rt.db.connection() as conn:  # a bulk load, as a large first ingest writes it
        spaces.drop_index(conn, coll.table)
        documents.begin_bulk(conn, coll.id)
        documents.write_documents(conn, coll, writes)
        documents.finish_bulk(conn, coll.id)
        spaces.ensure_index(conn, coll.table, coll.model.distance)
    with rt.db.connection() as conn:
        conn.execute("ANALYZE chunks")
        conn.execute("ANALYZE documents")
    # a query far from the rare chunks: an index scan meets them last
    far = -rare_vectors.mean(axis=0)
    FAR_QUERY[:] = (far / np.linalg.norm(far)).tolist()
    return rt


@pytest.mark.parametrize(
    "where",
    [{"bucket": {"$gte": 1}}, {"bucket": {"$in": [1, 2, 3, 4, 5, 6, 7, 8, 9]}}],
    ids=["range", "values"],
)
def test_filtered_vector_hits_come_in_score_order(
    ordered: Runtime, monkeypatch: pytest.MonkeyPatch, where: dict[str, Any]
) -> None:
    """90% of the chunks pass; 100 hits from a scan of ef_search=10 candidates a round.
    The second filter pins values: with the exact bound at 0 it takes the same index scan
    instead of ranking its candidates exactly."""
    monkeypatch.setattr(service, "EXACT_FILTER_CHUNKS", 0)
    rng = np.random.default_rng(11)
    for _ in range(5):
        q = rng.standard_normal(384).astype(np.float32)
        hits = search(
            ordered,
            None,
            collection=COLL,
            mode="vector",
            vector=(q / np.linalg.norm(q)).tolist(),
            k=100,
            ef_search=10,
            where=where,
            sections=False,
        )
        scores = [h.score for h in hits]
        assert len(hits) == 100
        assert all(h.source != "d000.md" for h in hits)  # bucket 0 is filtered out
        assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(
    "where",
    [{"rare": {"$exists": True}}, {"tag": {"$ne": "c"}}, {"$not": {"tag": "c"}}],
    ids=["exists", "ne", "not"],
)
def test_a_selective_filter_fills_k_when_the_index_scan_stops_short(
    ordered: Runtime, settings: Settings, database_url: str, where: dict[str, Any]
) -> None:
    """A filter no metadata index can count (``$exists``, ``$ne``, ``$not``) runs as an
    HNSW iterative scan, which pgvector ends after ``hnsw.max_scan_tuples`` tuples (20,000
    by default; 100 here, for this server's sessions, so that 20,000 chunks show it): 100
    chunks of the 20,000 pass, far from the query, and the scan came back with 7 of its 50
    (a hybrid search's vector list as short). The list is then ranked exactly: k hits, the
    nearest of the rare chunks."""
    options = "options=-c%20hnsw.max_scan_tuples%3D100"
    url = database_url + ("&" if "?" in database_url else "?") + options
    rt = Runtime(Settings(database_url=url, data_dir=settings.data_dir, profile="test"))
    try:
        hits = search(
            rt,
            "note",
            collection=COLL,
            mode="vector",
            vector=FAR_QUERY,
            k=10,
            where=where,
        )
        exact = search(
            rt,
            "note",
            collection=COLL,
            mode="vector",
            vector=FAR_QUERY,
            k=10,
            where=where,
            exact=True,
        )
        plan = search_plan(rt, "note", COLL, k=10, mode="vector", where=where)
    finally:
        rt.close()
    assert plan["lists"][0]["exact_when_short"] is True  # explain says so
    assert len(hits) == 10
    assert {h.source for h in hits} == {f"d{RARE:03}.md"}
    assert [h.chunk_id for h in hits] == [h.chunk_id for h in exact]
