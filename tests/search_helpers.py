"""Helpers for the search tests: small collections written through the real repository
with vectors from the real model, so that chunk metadata, types and pages can be set."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg

from ragstore.db import documents, repository
from ragstore.embedding.registry import resolve_spec
from ragstore.models import Chunk, ChunkType
from ragstore.runtime import Runtime


@dataclass
class Doc:
    source: str
    texts: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)
    chunk_type: ChunkType = ChunkType.PARAGRAPH
    page: int | None = None
    chunk_metadata: dict[str, Any] = field(default_factory=dict)
    title: str | None = None


def make_collection(
    rt: Runtime, name: str, settings: dict[str, Any] | None = None
) -> repository.Collection:
    with rt.db.connection() as conn:
        return repository.create_collection(conn, name, resolve_spec(rt.settings.model), settings)


def write_docs(rt: Runtime, coll: repository.Collection, docs: Sequence[Doc]) -> None:
    """Store each doc (one chunk per text) with the real model's vectors, in one encode."""
    embedder = rt.embedder_for(coll)
    vectors = embedder.embed([t for d in docs for t in d.texts])
    offset = 0
    for d in docs:
        chunks = [
            Chunk(
                ordinal=i,
                chunk_type=d.chunk_type,
                text=t,
                section_path=(),
                parent_ordinal=None,
                char_start=0,
                char_end=len(t),
                token_count=len(t.split()),
                content_hash=hashlib.sha256(t.encode()).hexdigest(),
                page=d.page,
                metadata=dict(d.chunk_metadata),
            )
            for i, t in enumerate(d.texts)
        ]
        record = documents.DocumentRecord(
            d.source,
            d.title,
            "text",
            hashlib.sha256("".join(d.texts).encode()).hexdigest(),
            sum(len(t) for t in d.texts),
            dict(d.metadata),
        )
        with rt.db.connection() as conn:
            documents.write_documents(
                conn,
                coll,
                [
                    documents.DocumentWrite(
                        record, chunks, np.asarray(vectors[offset : offset + len(d.texts)])
                    )
                ],
            )
        offset += len(d.texts)


def waiting_searches(conninfo: str) -> int:
    """Statements on ``chunks`` that wait for a lock: searches a test holds up with
    ``LOCK TABLE chunks``, to see them start and see them cancelled."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND state = 'active' AND wait_event_type = 'Lock'"
            " AND query ILIKE '%%chunks%%'"
        ).fetchone()
    return int(row[0]) if row else 0


def reference_mmr(
    query: np.ndarray, embeddings: np.ndarray, k: int, lambda_mult: float, ranked: bool = False
) -> list[int]:
    """LangChain's ``maximal_marginal_relevance``, written out (cosine similarity; the
    first pick the most similar; strict ``>`` so ties go to the earlier candidate).
    ``ranked``: relevance is the embeddings' order (best first) on the cosine scale, the
    i-th row given the i-th highest similarity to the query (search/mmr.py)."""

    def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return np.asarray(a @ b.T)

    to_query = cosine(query[None, :], embeddings)[0]
    if ranked:
        to_query = np.sort(to_query)[::-1]
    picked = [int(np.argmax(to_query))]
    while len(picked) < min(k, len(embeddings)):
        to_picked = cosine(embeddings, embeddings[picked])
        best, best_i = -np.inf, -1
        for i, sim in enumerate(to_query):
            if i in picked:
                continue
            score = lambda_mult * sim - (1 - lambda_mult) * max(to_picked[i])
            if score > best:
                best, best_i = score, i
        picked.append(best_i)
    return picked
