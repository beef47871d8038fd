"""Vector search over a collection's active embedding space (HNSW)."""

from __future__ import annotations

import time
from typing import Any

from psycopg import sql

from ragstore.db.errors import translated
from ragstore.errors import InputError
from ragstore.models import Hit
from ragstore.observability import metrics
from ragstore.runtime import Runtime

_OPERATORS = {"cosine": "<=>", "l2": "<->", "ip": "<#>"}


def _score(distance: float, metric: str) -> float:
    if metric == "cosine":
        return 1.0 - distance
    if metric == "ip":
        return -distance
    return -distance


def search(rt: Runtime, query: str, *, collection: str | None = None, k: int | None = None,
           ef_search: int | None = None) -> list[Hit]:
    """The ``k`` chunks nearest to ``query`` in the collection's active model space."""
    t0 = time.perf_counter()
    if not query.strip():
        raise InputError("the query is empty; give the words to search for")
    k = k or rt.settings.search_k
    if not 1 <= k <= 1000:
        raise InputError(f"k must be between 1 and 1000, got {k}")
    coll = rt.collection(collection or rt.settings.collection)
    embedder = rt.embedder_for(coll)
    vector = embedder.embed([query])[0]
    op = sql.SQL(_OPERATORS[coll.model.distance])
    stmt = sql.SQL(
        "WITH nn AS (SELECT chunk_id, embedding {op} %(q)s AS distance FROM {t}"
        " ORDER BY embedding {op} %(q)s LIMIT %(k)s)"
        " SELECT c.id, d.id, d.source, d.title, c.text, c.chunk_type, c.section_path,"
        " c.ordinal, c.page, c.metadata, nn.distance"
        " FROM nn JOIN chunks c ON c.id = nn.chunk_id JOIN documents d ON d.id = c.document_id"
        " ORDER BY nn.distance"
    ).format(op=op, t=sql.Identifier(coll.table))
    with rt.db.connection() as conn, translated(f"searching {coll.name!r}"):
        conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(
            sql.Literal(ef_search or max(rt.settings.hnsw_ef_search, k))))
        rows = conn.execute(stmt, {"q": vector, "k": k}).fetchall()
    hits = [_hit(r, coll.model.distance) for r in rows]
    metrics.observe_search("vector", time.perf_counter() - t0, len(hits))
    return hits


def _hit(r: tuple[Any, ...], metric: str) -> Hit:
    return Hit(chunk_id=int(r[0]), document_id=int(r[1]), source=r[2], title=r[3], text=r[4],
               chunk_type=r[5], section_path=list(r[6]), ordinal=int(r[7]), page=r[8],
               metadata=dict(r[9]), score=_score(float(r[10]), metric))
