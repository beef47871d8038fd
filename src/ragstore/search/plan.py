"""How a search will run, as data: which candidate lists, how deep, how they are fused.

``explain`` answers this beside the hits so an operator can see why a chunk ranks where
it does: the vector list (space table, metric, HNSW ``ef_search``, and
``exact_when_short`` when a filter or the query's phrases bind it: such a list that comes
back short of its depth is ranked exactly), the full-text list (text-search
configuration, BM25 ``k1``/``b``, the parsed query) and the reciprocal-rank fusion that
merges them. It mirrors :func:`ragstore.search.service.run` and reads the
same :class:`~ragstore.search.service.SearchParams`, so the plan and the search cannot
disagree on the parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ragstore.runtime import Runtime
from ragstore.search import bm25
from ragstore.search import mmr as mmr_params
from ragstore.search.filters import compile_filter
from ragstore.search.hybrid import FusionParams
from ragstore.search.service import (
    EXACT_FILTER_CHUNKS,
    Mode,
    SearchParams,
    indexed_fields,
    upload_sources,
)


def search_plan(
    rt: Runtime,
    query: str,
    collection: str,
    *,
    k: int | None = None,
    mode: Mode = "hybrid",
    where: Mapping[str, Any] | None = None,
    ef_search: int | None = None,
    fusion: FusionParams | None = None,
    sections: bool = True,
    mmr: tuple[int | None, float | None] | None = None,
) -> dict[str, Any]:
    """The lists, depths and fusion of one search, without running it.

    ``fusion`` and ``sections`` are the search's own: without them the plan of an
    ``explain`` search said the default RRF constant and weights beside hits fused with
    the ones asked for, and a depth of 50 for a ``sections=False`` list that was ``k``
    deep. ``mmr`` (``fetch_k``, ``lambda_mult``) when the hits are picked by maximal
    marginal relevance among the ranking's best ``fetch_k``: the lists are that deep."""
    asked = rt.settings.search_k if k is None else k
    picked = mmr_params.resolved(asked, *mmr) if mmr is not None else None
    p = SearchParams(
        k=asked if picked is None else picked[0],
        mode=mode,
        where=where,
        ef_search=ef_search,
        fusion=fusion or FusionParams(),
        sections=sections,
    )
    coll = rt.collection(collection)
    lists: list[dict[str, Any]] = []
    ftq = bm25.parse_query(query) if p.mode != "vector" else None
    if p.mode in ("vector", "hybrid"):
        vector: dict[str, Any] = {
            "list": "vector",
            "model": coll.model.key,
            "table": coll.table,
            "metric": coll.model.distance,
            "depth": p.depth,
            "index": "hnsw",
            "ef_search": p.ef_search or max(rt.settings.hnsw_ef_search, min(p.depth, 1000)),
        }
        constrained = False
        if ftq is not None and (ftq.required or ftq.excluded):
            constrained = True
            # hybrid: the phrases and exclusions bind this list too; the model reads the
            # words searched for (service._syntax_condition)
            vector.update(embedded=ftq.terms, required=ftq.required, excluded=ftq.excluded)
        if where or constrained:
            # a filtered index scan ends at hnsw.max_scan_tuples: a list that comes back
            # short of its depth is ranked exactly over the chunks that pass, in the same
            # statement (service._vector_sql)
            vector["exact_when_short"] = True
        lists.append(vector)
    if ftq is not None:
        settings = coll.settings
        lists.append(
            {
                "list": "fulltext",
                "depth": p.fulltext_list_depth,
                # ranks after it are the pruned top k's tail (service.HYBRID_FULLTEXT_EXACT)
                "exact_depth": p.fulltext_exact_depth,
                "ts_config": str(settings.get("ts_config", bm25.DEFAULT_TS_CONFIG)),
                "k1": float(settings.get("bm25_k1", bm25.DEFAULT_K1)),
                "b": float(settings.get("bm25_b", bm25.DEFAULT_B)),
                "match": ftq.match,
                "required": ftq.required,
                "excluded": ftq.excluded,
                "skipped": ftq.empty,
            }
        )
    fused: dict[str, Any] | None = None
    if p.mode == "hybrid":
        fused = {
            "method": "rrf",
            "k": p.fusion.k,
            "vector_weight": p.fusion.vector_weight,
            "fulltext_weight": p.fusion.fulltext_weight,
        }
    wide = upload_sources(rt, collection, where)  # as the search compiles it
    compiled = compile_filter(wide, indexed=indexed_fields(rt, wide)) if wide else None
    if compiled is not None and compiled.candidates is not None:
        for each in lists:  # a selective filter's chunks are ranked exactly (service.py)
            if each["list"] != "vector" or not compiled.by_document:
                each["filter_exact_at_most"] = EXACT_FILTER_CHUNKS
    return {
        "mode": p.mode,
        "k": asked,
        "lists": lists,
        "fusion": fused,
        "filter": dict(where) if where else None,
        "mmr": None if picked is None else _mmr_entry(*picked),
    }


def _mmr_entry(fetch_k: int, lambda_mult: float) -> dict[str, Any]:
    """The plan's ``mmr``: what the pick weighed (search/mmr.py). Relevance is the
    search's own ranking (this plan's mode, lists and fusion), its order given out on
    the cosine scale; said as ``"similarity": "cosine"`` alone, it read as each hit's
    cosine to the query, which it is only in vector mode. ``similarity`` is the measure
    of redundancy: the cosine of the stored vectors to the hits already picked."""
    return {
        "fetch_k": fetch_k,
        "lambda_mult": lambda_mult,
        "relevance": "ranking",
        "relevance_scale": "cosine",
        "similarity": "cosine",
    }
