"""Hybrid search's last step in Python: the two ranked lists fused, grouped into sections.

Hybrid runs its vector list and its BM25 list at the same time on two pooled
connections; each statement returns its candidates with their chunk and document rows
(:data:`LIST_ROW`). Fusing them here rather than in a third statement saves a round trip
and a statement's planning on the critical path: the vector list (the faster one) has
its rows decoded while the BM25 list is still running, and what is left after the BM25
list arrives is RRF over at most ``depth + fulltext depth`` ids and the section rule over
the pool, well under a millisecond (at 100k chunks the fusing statement cost 2.5-3 ms of
the 13-17 ms a hybrid search took; docs/benchmarks.md, "Scale").

The rules: :func:`ragstore.search.hybrid.rrf` and
:func:`ragstore.search.aggregate.rank_sections` (which single-list searches also run, in
search/single.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ragstore.search.aggregate import Candidate, rank_sections
from ragstore.search.hybrid import FusionParams, rrf

# The columns each list statement returns, in order (search/service.py ``_with_rows``).
LIST_ROW = (
    "chunk_id",
    "raw",
    "document_id",
    "source",
    "title",
    "text",
    "chunk_type",
    "section_path",
    "ordinal",
    "page",
    "metadata",  # JSON text, parsed for the hits only
    "parent_id",
    "document_version",  # the document row's xmin: which write of it the list read
)


def fused_rows(
    vec_rows: Sequence[tuple[Any, ...]],
    ft_rows: Sequence[tuple[Any, ...]],
    k: int,
    pool: int,
    fusion: FusionParams,
    sections: bool,
) -> list[tuple[Any, ...]]:
    """The final rows of a hybrid search, best first, in the layout the single-list
    statements return (``c.id, d.id, source, title, text, chunk_type, section_path,
    ordinal, page, metadata, score, vector rank, distance, BM25 rank, BM25 score,
    section_score, section_hits, parent_id``).

    ``vec_rows`` and ``ft_rows`` are the two lists, best first. RRF fuses them; the best
    ``pool`` chunks are grouped into sections (``sections``) and the best chunk of each of
    the top ``k`` sections returned, or else the best ``k`` chunks.
    """
    rows: dict[int, tuple[Any, ...]] = {}
    vec_at: dict[int, tuple[int, float]] = {}
    ft_at: dict[int, tuple[int, float]] = {}
    for at, listed in ((vec_at, vec_rows), (ft_at, ft_rows)):
        for rank, r in enumerate(listed, 1):
            cid = int(r[0])
            at[cid] = (rank, float(r[1]))
            rows.setdefault(cid, r)
    fused = rrf(
        [[int(r[0]) for r in vec_rows], [int(r[0]) for r in ft_rows]],
        k=fusion.k,
        weights=[fusion.vector_weight, fusion.fulltext_weight],
    )[:pool]
    score = dict(fused)
    chosen: list[tuple[int, float | None, list[int] | None]]
    if sections:
        ranked = rank_sections(
            [Candidate(cid, s, rows[cid][2], section_of(rows[cid])) for cid, s in fused],
            k,
            hybrid=True,
        )
        chosen = [(s.chunk_id, s.section_score, list(s.section_hits)) for s in ranked]
    else:
        chosen = [(cid, None, None) for cid, _ in fused[:k]]
    out: list[tuple[Any, ...]] = []
    for cid, section_score, hits in chosen:
        r = rows[cid]
        v = vec_at.get(cid, (None, None))
        t = ft_at.get(cid, (None, None))
        out.append((cid, *r[2:11], score[cid], v[0], v[1], t[0], t[1], section_score, hits, r[11]))
    return out


def section_of(row: tuple[Any, ...]) -> int | None:
    """The heading chunk a listed or pooled chunk (a :data:`LIST_ROW`-shaped row: chunk type
    at 6, parent at 11) sits under; ``None`` for a heading itself and a
    chunk with no heading above it (each a section of its own)."""
    if row[6] == "heading" or row[11] is None:
        return None
    return int(row[11])
