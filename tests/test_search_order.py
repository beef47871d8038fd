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

from ragstore.db import documents, spaces
from ragstore.models import Chunk, ChunkType
from ragstore.runtime import Runtime
from ragstore.search import search, service
from tests.search_helpers import make_collection

COLL = "order"
DOCS, PER_DOC = 200, 100


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
        record = documents.DocumentRecord(
            f"d{d:03}.md", None, "text", f"{d:064x}", 10 * PER_DOC, {"bucket": d % 10}
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
