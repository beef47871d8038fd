"""A single-list search (vector or full-text): its pool in one statement, sections in Python.

The statement returns the list's pool (the best ``max(k, SECTION_POOL)`` chunks, or ``k``
when sections are off) in list order, each with the fields the section rule needs
(document, section, chunk type) and, only where the chunk can be a hit, the fields a hit
carries (text, source, title, section path, metadata). The section rule then runs here
(:func:`ragstore.search.aggregate.rank_sections`, the reference hybrid search also uses).

Why not in SQL: grouping 50 pooled chunks into sections took seven CTEs with four window
passes and an aggregate, about 0.9 ms of the statement and 0.4 ms of its planning on the
full SciFact collection, against 0.1 ms for the same rule over 50 tuples in Python
(docs/benchmarks.md, "Vector search: sections in Python"). The rows still come in one round
trip, and only the hits' texts travel: a chunk can be a hit only as the best pooled chunk
of one of the top ``k`` sections, and a chunk with no heading above it (or a heading) is
a section of its own scored ``1 / (SECTION_RANK_K + rank)``, below every section whose best
chunk ranks higher; so such a chunk needs its fields only when it ranks within ``k`` plus
the number of pooled chunks under a heading (every chunk under a heading gets them). In a
collection without headings (every BEIR dataset) that is the first ``k`` rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from psycopg import sql

from ragstore.search.aggregate import Candidate, rank_sections
from ragstore.search.fused import section_of

# A chunk under a heading: it groups with the others of its section.
_HEADED = "c.parent_id IS NOT NULL AND c.chunk_type <> 'heading'"


def pool_sql(list_sql: sql.Composable, order: str) -> sql.Composed:
    """The pool of a ranked list (``chunk_id, raw``, ``order`` the list's order over
    ``raw``), best first: ``chunk_id, raw, document_id, source, title, text, chunk_type,
    section_path, ordinal, page, metadata, parent_id, full`` where ``source``, ``title``,
    ``text``, ``section_path`` and ``metadata`` (JSON text, parsed for the hits) are NULL
    unless ``full``. Parameter ``%(k)s``."""
    return sql.SQL(
        "SELECT p.chunk_id, p.raw, p.document_id, CASE WHEN p.f THEN d.source END,"
        " CASE WHEN p.f THEN d.title END, CASE WHEN p.f THEN p.text END, p.chunk_type,"
        " CASE WHEN p.f THEN p.section_path END, p.ordinal, p.page,"
        " CASE WHEN p.f THEN p.metadata::text END, p.parent_id, p.f"
        " FROM (SELECT l.chunk_id, l.raw, l.r, c.document_id, c.text, c.chunk_type,"
        " c.section_path, c.ordinal, c.page, c.metadata, c.parent_id,"
        " ({h}) OR l.r <= %(k)s + count(*) FILTER (WHERE {h}) OVER () AS f"
        " FROM (SELECT x.chunk_id, x.raw, row_number() OVER (ORDER BY {o}, x.chunk_id) AS r"
        " FROM ({l}) x) l JOIN chunks c ON c.id = l.chunk_id) p"
        " JOIN documents d ON d.id = p.document_id ORDER BY p.r"
    ).format(h=sql.SQL(_HEADED), o=sql.SQL(order), l=list_sql)


def final_rows(
    rows: Sequence[tuple[Any, ...]],
    k: int,
    sections: bool,
    score: Callable[[float], float],
    vector: bool,
) -> list[tuple[Any, ...]]:
    """The final rows of a single-list search, best first, in the layout of
    :func:`ragstore.search.fused.fused_rows` (``c.id, d.id, source, title, text,
    chunk_type, section_path, ordinal, page, metadata, score, vector rank, distance, BM25
    rank, BM25 score, section_score, section_hits, parent_id``).

    ``rows`` are :func:`pool_sql`'s, in list order; ``score`` turns a row's ``raw`` into
    its score (higher is better); ``vector`` says which list it is (for ``explain``).
    """
    scores = [score(float(r[1])) for r in rows]
    chosen: list[tuple[int, float | None, list[int] | None]]
    if sections:
        ranked = rank_sections(
            [
                Candidate(int(r[0]), s, int(r[2]), section_of(r))
                for r, s in zip(rows, scores, strict=True)
            ],
            k,
            hybrid=False,
        )
        at = {int(r[0]): i for i, r in enumerate(rows)}
        chosen = [(at[s.chunk_id], s.section_score, list(s.section_hits)) for s in ranked]
    else:
        chosen = [(i, None, None) for i in range(min(k, len(rows)))]
    out: list[tuple[Any, ...]] = []
    for i, section_score, hits in chosen:
        r = rows[i]
        if not r[12]:
            raise AssertionError(f"chunk {r[0]} was chosen without its fields (pool_sql's rule)")
        listed = (i + 1, r[1])
        v, t = (listed, (None, None)) if vector else ((None, None), listed)
        out.append((r[0], *r[2:11], scores[i], *v, *t, section_score, hits, r[11]))
    return out
