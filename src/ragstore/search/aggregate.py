"""Section-level aggregation: rank sections by all the evidence they hold, return each once.

A long document is cut into chunks of a section; a question about that section often
matches several of them, each only in part, while a fragment of an unrelated section
matches one sentence well. Ranking chunks alone lets the fragment win and fills the top
of the list with pieces of one section. So every search ranks a pool of candidate
chunks (the fused list in hybrid mode, the single list otherwise) and then:

- groups them by section: the heading chunk they sit under (``parent_id``); a chunk
  outside any section (no heading above it, e.g. one-paragraph records) and a heading
  chunk itself are sections of their own, so such collections rank exactly as before;
- scores a section ``sum(decay**(j-1) * value_j)`` over its best ``SECTION_CAP`` chunks
  (``j`` = 1 for its best), where a chunk's value is its fused RRF score in hybrid mode
  and ``1 / (SECTION_RANK_K + rank)`` in the single-list modes (cosine and BM25 scores do
  not add up; ranks do);
- adds to a section under a heading ``DOCUMENT_SHARE`` times the summed scores of its
  document's best ``DOCUMENT_CAP`` pooled sections under a heading (its own included): a
  section of a long document that matches the question in several places is likelier the
  answer than an equally scored section of a document that matches once. Between
  sections of one document the order does not change. Chunks with no heading above them
  get no share: in a collection of short records split into a few chunks (SciFact) it
  would favour the longer records (hybrid nDCG@10 0.716 to 0.715 when it applied to all);
- returns the best chunk of each of the top ``k`` sections, carrying the section's score
  and the other chunks of the section that matched (``section_hits``).

``decay`` 0.5 and a cap of 5 were chosen on the tuning half of the nodejs-api question set
(questions 1-20; docs/benchmarks.md); they keep one strong chunk ahead of a section
with several weak ones while letting two or three good ones of one section outrank a
single slightly better fragment. The document share (0.05 of the best 10 sections) was
chosen on the same questions afterwards: it raised every mode's top-1 and top-3 there
except hybrid top-3, already 18 of 20 (shares 0.05-0.2 with caps of 10 or 20 gave the
same).

The rule runs in Python (:func:`rank_sections`) over the pool a search's one statement
returns: search/single.py for a single list, search/fused.py for hybrid. It ran in SQL
until 2026-12-01 (seven CTEs; about 1.3 ms of a SciFact vector search against 0.1 ms here).
Offline studies replay it over candidate lists without a database
(``bench/longdoc_variants.py``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

SECTION_DECAY = 0.5
SECTION_CAP = 5
SECTION_RANK_K = 10.0  # the RRF constant of a single list's ranks
SECTION_POOL = 50  # candidates ranked before grouping in the single-list modes (hybrid: 100)
DOCUMENT_SHARE = 0.05  # the share of its document's evidence added to a section's score
DOCUMENT_CAP = 10  # the document's evidence: its best this many pooled sections


def pool_size(k: int, depth: int, hybrid: bool) -> int:
    """How many ranked candidates are grouped into sections: enough that the top ``k``
    sections see their other chunks, never fewer than ``k``."""
    return max(k, depth if hybrid else SECTION_POOL)


@dataclass(frozen=True)
class Candidate:
    """A pooled chunk as the section rule sees it. ``section`` is the id of the heading
    chunk it sits under, or ``None`` for a heading chunk itself and a chunk with no heading
    above it (each a section of its own)."""

    chunk_id: int
    score: float
    document: Hashable
    section: int | None


@dataclass(frozen=True)
class RankedSection:
    chunk_id: int  # the section's best pooled chunk
    section_score: float
    section_hits: tuple[int, ...]  # the section's other pooled chunks, best first


def rank_sections(
    pool: Sequence[Candidate],
    k: int,
    *,
    hybrid: bool,
    decay: float = SECTION_DECAY,
    cap: int = SECTION_CAP,
    rank_k: float = SECTION_RANK_K,
    share: float = DOCUMENT_SHARE,
    document_cap: int = DOCUMENT_CAP,
) -> list[RankedSection]:
    """The top ``k`` sections of ``pool`` by the rule above, best first. The pool is ranked
    by score (ties: chunk id)."""
    ranked = sorted(pool, key=lambda c: (-c.score, c.chunk_id))
    # a key (document, under a heading?, id): the heading chunk's id, or the chunk's own
    groups: dict[tuple[Hashable, bool, int], list[tuple[int, Candidate]]] = {}
    for r, c in enumerate(ranked, 1):
        key = (c.document, c.section is not None, c.chunk_id if c.section is None else c.section)
        groups.setdefault(key, []).append((r, c))
    own = {
        key: sum(
            (c.score if hybrid else 1.0 / (rank_k + r)) * decay ** (j - 1)
            for j, (r, c) in enumerate(members[:cap], 1)
        )
        for key, members in groups.items()
    }
    best_of: dict[Hashable, list[tuple[float, int]]] = {}
    for key, members in groups.items():
        if key[1]:
            best_of.setdefault(key[0], []).append((-own[key], members[0][0]))
    evidence = {
        doc: sum(-v for v, _ in sorted(scores)[:document_cap]) for doc, scores in best_of.items()
    }
    scored = sorted(
        (
            (-(own[key] + (share * evidence[key[0]] if key[1] else 0.0)), members[0][0], key)
            for key, members in groups.items()
        ),
        key=lambda t: (t[0], t[1]),
    )
    return [
        RankedSection(
            groups[key][0][1].chunk_id, -neg, tuple(c.chunk_id for _, c in groups[key][1:])
        )
        for neg, _, key in scored[:k]
    ]
