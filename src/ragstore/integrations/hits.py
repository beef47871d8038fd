"""One hit per stored text, whole: what the LangChain and LlamaIndex stores answer.

A text added without an embedding is embedded and chunked by ragstore like any document,
and a search hit is one chunk: a text longer than a chunk is found once per matching
chunk, each hit holding a part of its text. The frameworks' stores (PGVector, Chroma,
LlamaIndex's own) answer each stored text once, whole, and ``k`` of them: a search for
two texts answered the long one twice and never the second best.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

from ragstore.errors import CollectionNotFoundError
from ragstore.integrations.backend import Backend
from ragstore.search.mmr import resolved

MAX_K = 1000  # the most hits one search returns


def one_hit_per_text(hits: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first (best) hit of each text (by its id, the hit's ``source``), in order."""
    seen: set[str] = set()
    out = []
    for hit in hits:
        source = str(hit["source"])
        if source not in seen:
            seen.add(source)
            out.append(hit)
    return out


def distinct_hits(
    search: Callable[[int], Sequence[dict[str, Any]]], k: int
) -> list[dict[str, Any]]:
    """The best hit of each of the ``k`` best texts: ``search(n)`` (the ``n`` best hits)
    is asked for twice as many hits while the chunks of some texts fill the list, up to
    :data:`MAX_K`."""
    fetch = k
    while True:
        found = search(fetch)
        hits = one_hit_per_text(found)
        if len(hits) >= k or len(found) < fetch or fetch >= MAX_K:
            return hits[:k]
        fetch = min(MAX_K, fetch * 2)  # chunks of one text filled the list: ask more


def distinct_mmr_hits(
    search: Callable[[int, int], Sequence[dict[str, Any]]], k: int, fetch_k: int | None
) -> list[dict[str, Any]]:
    """The ``k`` texts a maximal-marginal-relevance search picks, each by its first
    picked hit, in the order picked: ``search(n, pool)`` picks ``n`` hits among the
    ranking's best ``pool``. MMR picks chunks, and two chunks of one text count once: the
    duplicates were dropped, so fewer than ``k`` texts came back from a store holding
    more. MMR is greedy, so ``n`` picks among one pool begin with the ``k`` picks: more
    are asked for (twice as many, up to the pool) until ``k`` texts are among them; a pool
    whose every candidate was picked holds fewer than ``k`` texts and is doubled
    (``fetch_k``, LangChain's number of documents to choose among, counted in texts),
    up to :data:`MAX_K`. A search that picks fewer than asked had no more candidates:
    the store (under the filter) holds no more texts."""
    pool = resolved(k, fetch_k, None)[0]
    picks = k
    while True:
        found = search(picks, pool)
        hits = one_hit_per_text(found)
        if len(hits) >= k or len(found) < picks or picks >= MAX_K:
            return hits[:k]
        if picks < pool:
            picks = min(pool, picks * 2)  # the same pool: the picks so far come first
        else:
            pool = picks = min(MAX_K, pool * 2)  # every candidate picked: a larger pool


def whole_texts(backend: Backend, collection: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The stored texts under ``ids`` (``get_texts``: ``id``, ``text``, ``metadata``) by
    id, for the hits that hold only a chunk of theirs; none when the collection is gone."""
    if not ids:
        return {}
    with suppress(CollectionNotFoundError):
        return {t["id"]: t for t in backend.get_texts(collection, list(ids))}
    return {}
