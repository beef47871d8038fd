"""Search a collection: vector (HNSW), full-text (BM25) or hybrid (RRF of both), with filters.

Vector and full-text search are one SQL statement each, sent in one round trip (in
autocommit: a single read needs no BEGIN or COMMIT), with its session settings in the same
pipeline when a pooled connection needs them: the statement returns the list's pool of
candidates, and the sections are ranked in Python (search/single.py; only the chunks that
can be hits bring their text).

Hybrid search runs its two lists at once on two pooled connections (the full-text list on
a small thread pool), each returning its candidates with their chunk and document rows,
and fuses and groups them in Python (search/fused.py, the same section rule): its
latency is the slower list, not the sum of both, and no third statement (at 100k chunks
the BM25 list alone cost about three vector searches; a fusing statement added 2.5-3 ms).
The BM25 list is :data:`HYBRID_FULLTEXT_DEPTH` deep (at least ``k``), its first
:data:`HYBRID_FULLTEXT_EXACT` ranks exact and the rest a tail of chunks scored exactly on
the way (search/bm25.py); the vector list is :data:`MIN_CANDIDATES` deep.

Vector search turns on pgvector's iterative index scan (``hnsw.iterative_scan =
relaxed_order``, pgvector >= 0.8) and re-sorts the rows it returns: without it a filter
that keeps 1% of the chunks leaves an HNSW scan of ``ef_search`` candidates with almost
nothing to return, the best-known pgvector pitfall. Such a scan still reads deep for a
selective filter, so a filter whose passing chunks the metadata indexes can count (pinned
values, and ranges on indexed fields: search/filters.py, db/field_indexes.py) has them
ranked exactly in both lists when at most :data:`EXACT_FILTER_CHUNKS` pass
(:func:`_by_filter_size`). Any other filter's scan ends at pgvector's
``hnsw.max_scan_tuples``; a list that comes back short of its depth is ranked exactly
in the same statement (:func:`_vector_sql`).

Round trips: the collection comes from the runtime's short-lived cache, the query vector
from the embedder's query cache and goes as a binary parameter, and the HNSW session
settings are sent once per pooled connection (again only when a search needs another
``ef_search``), so a repeated vector or full-text search costs exactly one round trip.

Every search statement runs under ``RAGSTORE_SEARCH_TIMEOUT_S``: a transaction-local
``statement_timeout`` sent in the same pipeline (:func:`_search_deadline`), so PostgreSQL
ends a runaway search and nothing else that uses the pooled connection afterwards (ingest,
index builds) inherits the limit. An API search whose HTTP client disconnects is cancelled
at once instead (``cancellable``; see api/disconnect.py); the timeout bounds the rest: the
CLI's and the library's searches, and API searches whose client waits. Exact searches
(eval's and the benchmarks' reference lists, not offered by the API or the CLI) are not
limited.
"""

from __future__ import annotations

import contextvars
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal
from weakref import WeakKeyDictionary

import numpy as np
import numpy.typing as npt
from psycopg import ClientCursor, errors, sql
from psycopg.pq import TransactionStatus

from ragstore.db import field_indexes, spaces
from ragstore.db.cancel import cancellable
from ragstore.db.database import Database, stored_json
from ragstore.db.errors import translated
from ragstore.db.field_indexes import FieldIndex
from ragstore.db.repository import Collection
from ragstore.errors import (
    ConflictError,
    InputError,
    ModelError,
    RagstoreError,
    SearchTimeoutError,
)
from ragstore.models import VECTOR_ONLY_PROVIDER, Hit
from ragstore.observability import metrics
from ragstore.runtime import Runtime
from ragstore.search import bm25, mmr, single
from ragstore.search.aggregate import SECTION_CAP, SECTION_DECAY, SECTION_POOL, pool_size
from ragstore.search.filters import compile_filter, ranges_metadata, widen_sources
from ragstore.search.fused import fused_rows
from ragstore.search.hybrid import FusionParams
from ragstore.uploads.names import exact_source, source_name
from ragstore.validation import (
    MAX_QUERY_CHARS,
    finite_number,
    float32_array,
    integral,
    storable_text,
)

Mode = Literal["vector", "fulltext", "hybrid"]
MODES: tuple[Mode, ...] = ("vector", "fulltext", "hybrid")
MIN_CANDIDATES = 100  # depth of each list fused in hybrid mode (at least k)
# The BM25 list's depth in hybrid mode (at least k). A BM25 top 100 cost about three vector
# searches at 100k chunks; 30 gives the same nDCG@10 on SciFact, CISI and Cranfield at
# k = 10 and the same nodejs-api section hits on q21-40 (docs/benchmarks.md, "Scale").
HYBRID_FULLTEXT_DEPTH = 30
# How much of that list is exact (at least k): ranks beyond it are the best of the other
# chunks the pruned top k scored exactly on the way (revision 0017's ``tail``), 99% of the
# exact top 30 at 121k chunks for about three quarters of its cost. RRF weighs rank 21 and
# rank 30 alike (1/31 against 1/40), so the fused lists hardly move.
HYBRID_FULLTEXT_EXACT = 20
# A filter that lets at most this many chunks pass (counted through the metadata indexes,
# search/filters.py) has them ranked exactly, both lists: at 100k chunks a 1% filter's
# 1,324 chunks ranked in ~7 ms, where the HNSW scan and the pruned top k read deep for
# them (~100 ms each). Above it, those index scans find enough passing chunks soon.
EXACT_FILTER_CHUNKS = 2_000

_iterative: WeakKeyDictionary[Database, bool] = WeakKeyDictionary()
_session_ef: WeakKeyDictionary[Any, int] = WeakKeyDictionary()  # connection -> its ef_search


@dataclass(frozen=True)
class SearchParams:
    """Everything about one search besides the query text and the collection."""

    k: int = 10
    mode: Mode = "hybrid"
    where: Mapping[str, Any] | None = None
    ef_search: int | None = None
    candidates: int | None = None
    fusion: FusionParams = field(default_factory=FusionParams)
    k1: float | None = None
    b: float | None = None
    explain: bool = False
    exact: bool = False  # exhaustive BM25 and a sequential vector scan: the recall reference
    plain: bool = False  # every query word an alternative: no phrases, ``or`` or ``-word``
    sections: bool = True  # rank sections by all their chunks, one hit each (search/aggregate)
    fulltext_depth: int | None = None  # hybrid: the BM25 list's depth (default: see below)
    # maximal marginal relevance (search/mmr.py): the ranking's best ``fetch_k`` are the
    # candidates, ``k`` of them chosen for relevance and diversity, weighed by lambda_mult
    mmr: bool = False
    fetch_k: int | None = None
    lambda_mult: float | None = None

    def __post_init__(self) -> None:
        # the types first, as the HTTP schema checks them (no coercion): in process k="3"
        # raised a TypeError below, k=True searched for 1 hit and k=2.5 reached LIMIT
        for name, value in (
            ("k", self.k),
            ("ef_search", self.ef_search),
            ("candidates", self.candidates),
            ("fulltext_depth", self.fulltext_depth),
            ("fetch_k", self.fetch_k),
        ):
            if value is not None and not integral(value):
                raise InputError(f"{name} must be an integer, got {value!r}")
        for attr, label in (("k1", "BM25 k1"), ("b", "BM25 b"), ("lambda_mult", "lambda_mult")):
            real = getattr(self, attr)
            if real is not None:  # a NaN was said to be out of range (validation.finite_number)
                object.__setattr__(self, attr, finite_number(real, label))
        if self.mode not in MODES:
            raise InputError(f"unknown search mode {self.mode!r}; use one of {', '.join(MODES)}")
        if not 1 <= self.k <= 1000:
            raise InputError(f"k must be between 1 and 1000, got {self.k}")
        if self.ef_search is not None and not 1 <= self.ef_search <= 1000:
            raise InputError(f"ef_search must be between 1 and 1000, got {self.ef_search}")
        if self.candidates is not None and not 1 <= self.candidates <= 10_000:
            raise InputError(f"candidates must be between 1 and 10000, got {self.candidates}")
        if self.fulltext_depth is not None and not 1 <= self.fulltext_depth <= 10_000:
            raise InputError(
                f"the full-text depth must be between 1 and 10000, got {self.fulltext_depth}"
            )
        if self.k1 is not None and not 0 <= self.k1 <= 10:
            raise InputError(f"BM25 k1 must be between 0 and 10, got {self.k1:g}")
        if self.b is not None and not 0 <= self.b <= 1:
            raise InputError(f"BM25 b must be between 0 and 1, got {self.b:g}")
        mmr.check(self.mmr, self.k, self.fetch_k, self.lambda_mult)

    @property
    def depth(self) -> int:
        """How many candidates each list contributes."""
        if self.mode != "hybrid":
            return max(self.k, SECTION_POOL) if self.sections else self.k
        return max(self.k, self.candidates or MIN_CANDIDATES)

    @property
    def fulltext_list_depth(self) -> int:
        """How many candidates the full-text list contributes: in hybrid mode
        :data:`HYBRID_FULLTEXT_DEPTH` (at least ``k``) unless ``candidates`` or
        ``fulltext_depth`` say otherwise; else :attr:`depth`."""
        if self.mode != "hybrid":
            return self.depth
        if self.fulltext_depth is not None:
            return max(self.k, self.fulltext_depth)
        if self.candidates is not None:
            return self.depth
        return max(self.k, HYBRID_FULLTEXT_DEPTH)

    @property
    def fulltext_exact_depth(self) -> int:
        """How many of the full-text list's ranks are exact: all of them, but in an
        unfiltered hybrid search at the default depth, where the first
        :data:`HYBRID_FULLTEXT_EXACT` (at least ``k``) are and the rest is the pruned top
        k's tail (search/bm25.py). A filter keeps the list exact: the function scores
        fewer chunks that pass it, so the tail would be thinner (hybrid recall@10 with a
        10% filter 0.94 against 0.95 at 100k), and the filtered vector list costs far more
        than the BM25 list anyway."""
        if (
            self.mode != "hybrid"
            or self.fulltext_depth is not None
            or self.candidates
            or self.where
        ):
            return self.fulltext_list_depth
        return min(self.fulltext_list_depth, max(self.k, HYBRID_FULLTEXT_EXACT))

    @property
    def pool(self) -> int:
        """How many ranked chunks the final list is drawn from (grouped into sections)."""
        return pool_size(self.k, self.depth, self.mode == "hybrid") if self.sections else self.k


def similarity(distance: float, metric: str) -> float:
    """A higher-is-better score from a pgvector distance (cosine: 1 - distance)."""
    if metric == "cosine":
        return 1.0 - distance
    return -distance


def _supports_iterative_scan(rt: Runtime) -> bool:
    db = rt.db
    if db not in _iterative:
        with db.connection() as conn, translated("reading the pgvector version"):
            row = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            ).fetchone()
        version = tuple(int(p) for p in str(row[0] if row else "0").split(".") if p.isdigit())
        _iterative[db] = version >= (0, 8)
    return _iterative[db]


def search(
    rt: Runtime,
    query: str | None,
    *,
    collection: str | None = None,
    k: int | None = None,
    mode: Mode = "hybrid",
    where: Mapping[str, Any] | None = None,
    ef_search: int | None = None,
    explain: bool = False,
    fusion: FusionParams | None = None,
    candidates: int | None = None,
    k1: float | None = None,
    b: float | None = None,
    vector: Sequence[float] | None = None,
    exact: bool = False,
    sections: bool = True,
    mmr: bool = False,
    fetch_k: int | None = None,
    lambda_mult: float | None = None,
) -> list[Hit]:
    """The best ``k`` chunks for ``query`` in a collection, by ``mode``.

    ``vector`` stands in for the query's embedding: the vector list ranks by it and the
    model is never loaded, which is how a collection of imported vectors (a model ragstore
    cannot run) is searched. With a vector and no text only ``mode="vector"`` makes sense.
    ``exact`` trades speed for the exact lists (no HNSW, no BM25 pruning): what the
    approximate lists are measured against. ``sections=False`` ranks chunks alone, as
    before section-level aggregation (search/aggregate.py). ``mmr`` picks the ``k`` among
    the ranking's best ``fetch_k`` by maximal marginal relevance (search/mmr.py).
    """
    if query is not None and not isinstance(query, str):  # .strip() raised AttributeError
        raise InputError(f"the query must be text, got {type(query).__name__} {query!r}")
    params = SearchParams(
        k=rt.settings.search_k if k is None else k,
        mode=mode,
        where=where,
        ef_search=ef_search,
        candidates=candidates,
        fusion=fusion or FusionParams(),
        k1=k1,
        b=b,
        explain=explain,
        exact=exact,
        sections=sections,
        mmr=mmr,
        fetch_k=fetch_k,
        lambda_mult=lambda_mult,
    )
    # only None is "the default collection": "" was searched as it, where the Client and
    # the API refuse it as an invalid collection name
    name = rt.settings.collection if collection is None else collection
    return run(rt, query or "", name, params, vector=vector)


def _refused(exc: RagstoreError) -> bool:
    """Whether ``exc`` refuses the request as its own error (an HTTP 4xx: an unknown
    collection, bad input, a conflict), not a search that ran and failed (a timeout, the
    database or the model: 5xx)."""
    return 400 <= exc.http_status < 500


def run(
    rt: Runtime, query: str, collection: str, p: SearchParams, vector: Sequence[float] | None = None
) -> list[Hit]:
    """:func:`search` with its parameters gathered (used by eval to reuse one object)."""
    t0 = time.perf_counter()
    hits: list[Hit] | None = None
    refused = False
    try:
        hits = (
            _run_mmr(rt, query, collection, p, vector)
            if p.mmr
            else (_run_current(rt, query, collection, p, vector))
        )
    except RagstoreError as exc:
        refused = _refused(exc)  # the request's own refusal (4xx) ran nothing
        raise
    finally:
        if hits is None:  # failed: a refusal kept out of the latency
            metrics.observe_search(p.mode, time.perf_counter() - t0, None, ran=not refused)
    metrics.observe_search(p.mode, time.perf_counter() - t0, len(hits))
    name_uploads(rt, collection, hits)
    return hits


def upload_sources(
    rt: Runtime, collection: str, where: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    """``where`` with a ``source`` that names an upload also matching its stored path:
    answers give an upload's source as its name (:func:`ragstore.uploads.names.answered`),
    and a filter on a hit's source must find it (:func:`filters.widen_sources`)."""
    if not where:
        return where
    return widen_sources(where, lambda name: exact_source(rt.settings, collection, name))  # type: ignore[no-any-return]


def name_uploads(rt: Runtime, collection: str, hits: Sequence[Hit]) -> None:
    """Each hit of an uploaded document given the name documents list shows for it
    (``Hit.name``, :func:`ragstore.uploads.names.source_name`); a hit of a file from disk
    or of a text keeps ``None``. Set here, where every search's hits are made, so the HTTP
    answer, the Store, the CLI, MCP and the console cannot name them differently: they
    showed only the ``source``, the server's own ``<data dir>/uploads/...`` path, which the
    uploader never chose and which told every reader where the server keeps its data."""
    names: dict[str, str | None] = {}  # one lookup per document, not per hit
    for hit in hits:
        if hit.source not in names:
            name = source_name(rt.settings, collection, hit.source)
            names[hit.source] = None if name == hit.source else name
        hit.name = names[hit.source]


def _run_current(
    rt: Runtime,
    query: str,
    collection: str,
    p: SearchParams,
    vector: Sequence[float] | None,
    used: list[Collection] | None = None,
) -> list[Hit]:
    """:func:`_run`, once more with the collection looked up afresh when its answer may
    come from a cached row that another process deleted (or switched to another space)
    since: no hits (the deleted row's chunks are gone) or a conflict (its vector table
    is). Any hit proves the row read was current when the search ran. Costs a lookup only
    on those answers. The collection that answered is the last one appended to ``used``."""
    used = [] if used is None else used
    try:
        hits = _run(rt, query, collection, p, vector, used=used)
    except ConflictError:
        if not used or (fresh := rt.recheck_collection(used[-1])) is None:
            raise
        used.append(fresh)
        return _run(rt, query, collection, p, vector, cached=fresh)
    if not hits and used and (fresh := rt.recheck_collection(used[-1])) is not None:
        used.append(fresh)
        return _run(rt, query, collection, p, vector, cached=fresh)
    return hits


def _run_mmr(
    rt: Runtime, query: str, collection: str, p: SearchParams, vector: Sequence[float] | None
) -> list[Hit]:
    """A maximal-marginal-relevance search (search/mmr.py): the search's own ranking, in
    its mode and under its filter, gives its best ``fetch_k`` hits; their stored
    embeddings come in one more statement, and MMR picks ``k`` of them by relevance (the
    ranking's order, on the scale of their cosine similarities to the query's vector: the
    given one, or the query's text embedded with the collection's model, in full-text mode
    too) and cosine similarity to the hits already picked.

    The hits come in the order MMR picked them; each keeps the ranking's ``score``."""
    if vector is None and query.strip():
        # checked before anything runs: without a vector the query's text must be embedded
        coll = rt.cached_collection(collection)
        if coll.model.provider == VECTOR_ONLY_PROVIDER:
            raise InputError(
                f"collection {coll.name!r} holds vectors of {coll.model.key}, a model "
                "ragstore cannot run, and mmr compares the hits with the query's vector; "
                "give the query's vector (`vector=` / --vector), or search without mmr"
            )
    fetch_k, lambda_mult = mmr.resolved(p.k, p.fetch_k, p.lambda_mult)
    base = dataclasses.replace(p, k=fetch_k, mmr=False, fetch_k=None, lambda_mult=None)
    used: list[Collection] = []
    candidates = _run_current(rt, query, collection, base, vector, used=used)
    if not candidates:
        return []
    coll = used[-1]
    given = _given_vector(coll, query, vector)
    embedded = query
    if p.mode != "vector":
        ftq = bm25.parse_query(query, plain=p.plain)
        if bm25.syntax_tests(ftq):
            embedded = ftq.terms  # the words searched for, as the vector list embeds them
    q = _query_vector(rt, coll, embedded, given)
    ids = [h.chunk_id for h in candidates]
    rows = _Statement(
        rt=rt, coll=coll, ef=0, iterative=False, timeout_s=rt.settings.search_timeout_s
    ).execute(
        sql.SQL("SELECT chunk_id, embedding FROM {t} WHERE chunk_id = ANY(%(ids)s)").format(
            t=sql.Identifier(coll.table)
        ),
        {"ids": ids},
        binary=True,
    )
    stored = {int(r[0]): np.asarray(r[1].to_numpy(), dtype=np.float32) for r in rows}
    # a hit whose chunk was deleted since the ranking read it has no vector left: dropped
    kept = [h for h in candidates if h.chunk_id in stored]
    if not kept:
        return []
    picks = mmr.select(q, np.stack([stored[h.chunk_id] for h in kept]), p.k, lambda_mult)
    out: list[Hit] = []
    for rank, pick in enumerate(picks, 1):
        hit = kept[pick.index]
        if p.explain:
            hit.explain = dict(hit.explain or {})
            hit.explain["mmr"] = {
                "rank": rank,
                "candidate_rank": pick.index + 1,
                "similarity": pick.similarity,
                "relevance": pick.relevance,
                "max_similarity_to_picked": pick.redundancy,
                "fetch_k": fetch_k,
                "lambda_mult": lambda_mult,
            }
        out.append(hit)
    return out


def _given_vector(
    coll: Collection, query: str, vector: Sequence[float] | None
) -> npt.NDArray[np.float32] | None:
    """The given query vector, checked; ``None`` when the query's text is to be embedded
    (:func:`_query_vector`). Raises before any statement runs when text cannot be embedded."""
    if vector is not None:
        arr = float32_array(vector, "the query vector")
        spaces.check_indexable(arr, "the query vector", "give a vector of the model's scale")
        if arr.ndim != 1 or arr.shape[0] != coll.model.dimension:
            got = arr.shape[0] if arr.ndim == 1 else f"an array of shape {arr.shape}"
            raise InputError(
                f"collection {coll.name!r} holds {coll.model.dimension}-dimensional vectors "
                f"({coll.model.key}), got {got}; give a vector of that model"
            )
        if coll.model.distance == "cosine" and not arr.any():
            # no direction: every cosine distance is NaN, the hits came in an arbitrary
            # order with a score of NaN (null in the API's JSON)
            raise InputError(
                f"the query vector is all zeros, and collection {coll.name!r} ranks by "
                "cosine similarity, which a vector with no direction has none of; give a "
                "non-zero vector"
            )
        if coll.model.distance == "cosine":
            arr = _scaled_for_cosine(arr)
        return arr
    if coll.model.provider == VECTOR_ONLY_PROVIDER:
        raise InputError(
            f"collection {coll.name!r} holds vectors of {coll.model.key}, a model ragstore "
            "cannot run, so text cannot be embedded for it; search it with a vector "
            "(`vector=` / --vector) or with mode fulltext"
        )
    return None


def _scaled_for_cosine(arr: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``arr`` scaled by a power of two when its largest value is below half precision's
    smallest normal: cosine ignores a vector's length, but a tiny one (all values 1e-45,
    say) has no direction where the search computes. The index casts it to half precision
    (zeros), and its float32 norm underflows to 0, so every distance was NaN and the hits
    came back in an arbitrary order scored null. A power of two changes no digit of any
    value, so the direction, and every score, stays exactly the given vector's."""
    top = float(np.abs(arr).max())
    if top >= spaces.HALFVEC_SMALLEST_NORMAL:
        return arr
    # the largest value becomes one in [0.5, 1): exponent of top, as frexp gives it
    _, exponent = np.frexp(top)
    return np.ldexp(arr, -int(exponent)).astype(np.float32)


def _query_vector(
    rt: Runtime, coll: Collection, query: str, given: npt.NDArray[np.float32] | None
) -> npt.NDArray[np.float32]:
    """The vector the vector list ranks by: the given one or the query's (the embedder's
    query cache, else the model), checked as ingest checks the model's vectors."""
    if given is not None:
        return given
    vector = rt.embedder_for(coll).embed_query(query)
    spaces.check_indexable(
        vector, f"the query's vector from model {coll.model.key}", error=ModelError
    )
    return vector


def _check_query(query: str) -> None:
    """Refuse query text the search could not send, as the HTTP API's schema does: a lone
    surrogate (from a bad ``\\u`` escape, or a command-line argument of bytes that are
    not UTF-8) reached the model's tokenizer or psycopg's encoder and came out of
    ``Store.search`` and ``ragstore search`` as a ``TypeError`` or ``UnicodeEncodeError``;
    a NUL, which PostgreSQL text cannot hold, came back from the full-text list as a value
    that "cannot be stored". A query longer than the API's :data:`MAX_QUERY_CHARS` is
    refused too: in process (``Store.search``, the MCP tools over stdio, the local CLI)
    nothing else bounded it, and a 5-million-character query was parsed, tokenized and
    sent to PostgreSQL."""
    if len(query) > MAX_QUERY_CHARS:
        raise InputError(
            f"the query is {len(query)} characters long; a query takes at most "
            f"{MAX_QUERY_CHARS} characters (as the HTTP API's does): shorten it"
        )
    storable_text(query, "the query")


def _run(
    rt: Runtime,
    query: str,
    collection: str,
    p: SearchParams,
    vector: Sequence[float] | None = None,
    *,
    cached: Collection | None = None,
    used: list[Collection] | None = None,
) -> list[Hit]:
    """The search; of ``cached`` when given, else of the (cached) collection named, which
    is appended to ``used`` once looked up."""
    if not query.strip() and (vector is None or p.mode != "vector"):
        if vector is not None:
            raise InputError(
                f"a search by vector alone needs mode 'vector', not {p.mode!r}; "
                "give query text too for full-text or hybrid search"
            )
        raise InputError("the query is empty; give the words to search for")
    if vector is not None and p.mode == "fulltext":
        # a full-text list has no use for a vector: it was dropped unsaid, and the caller
        # took the BM25 ranking of the words for one by their vector
        raise InputError(
            "a vector was given with mode 'fulltext', which ranks by the query's words "
            "alone and would ignore it; leave out the vector, or use mode 'vector' or "
            "'hybrid' to rank by it"
        )
    _check_query(query)
    where = upload_sources(rt, collection, p.where)
    compiled = compile_filter(where, indexed=indexed_fields(rt, where))
    coll = cached if cached is not None else rt.cached_collection(collection)
    if used is not None:
        used.append(coll)
    values: dict[str, Any] = dict(compiled.params)
    values.update({"k": p.k, "n": p.depth, "cid": coll.id})
    filtered = p.where is not None and bool(p.where)
    # a selective filter's chunks are ranked exactly (see _by_filter_size)
    candidates = compiled.candidates if filtered and not p.exact else None
    vec_sql: sql.Composable | None = None
    ft_sql: sql.Composable | None = None
    ftcond: sql.Composable | None = None  # the condition the BM25 top k takes as SQL text

    given: npt.NDArray[np.float32] | None = None
    ftq = bm25.parse_query(query, plain=p.plain) if p.mode != "vector" else None
    # the query's phrases and exclusions bind both lists (see _syntax_condition)
    tests = bm25.syntax_tests(ftq) if ftq is not None else []
    constrained = bool(tests)
    if constrained and ftq is not None and ftq.empty and (vector is None or p.mode == "fulltext"):
        # nothing but exclusions, and no vector to rank by: answered as no hits, which read
        # as "nothing matches" though nothing was searched for (a hybrid search's vector
        # list would rank by the embedding of the very words excluded). With a vector a
        # hybrid search ranks by it, the exclusions binding its list.
        raise InputError(
            f'the query {query[:80]!r} only excludes (-word, -"phrase"): nothing to search '
            "for; add the words to look for, e.g. 'backups -tape'"
        )
    condition = _syntax_condition(tests, compiled.condition) if constrained else compiled.condition
    if ftq is not None and constrained:  # the condition's parameters, in either list
        values.update(
            {
                "cfg": str(coll.settings.get("ts_config", bm25.DEFAULT_TS_CONFIG)),
                "required": ftq.required,
                "excluded": ftq.excluded,
            }
        )
    if ftq is not None and not ftq.empty:
        settings = coll.settings
        values.update(
            {
                "cfg": str(settings.get("ts_config", bm25.DEFAULT_TS_CONFIG)),
                "match": ftq.match,
                "required": ftq.required,
                "excluded": ftq.excluded,
                "terms": ftq.terms,
                "k1": float(p.k1 if p.k1 is not None else settings.get("bm25_k1", bm25.DEFAULT_K1)),
                "b": float(p.b if p.b is not None else settings.get("bm25_b", bm25.DEFAULT_B)),
            }
        )
        ft_sql = bm25.ranked_list_sql(
            ftq,
            compiled.condition,
            filtered,
            p.exact,
            # a constrained list is exact all through, like a filtered one
            tail=not constrained and p.fulltext_exact_depth < p.fulltext_list_depth,
        )
        if candidates is not None:
            scored = bm25.scored_list_sql(ftq, _among_candidates(compiled.condition), True)
            ft_sql = _by_filter_size(candidates, scored, ft_sql, compiled.candidate_repeats)
        if (filtered or constrained) and bm25.uses_topk(ftq, p.exact):
            ftcond = condition
    if p.mode in ("vector", "hybrid"):
        given = _given_vector(coll, query, vector)
        vec_sql = _vector_sql(coll, condition, filtered or constrained, p.exact, p.depth)
        if candidates is not None and not compiled.by_document:
            # (a filter by source or creation time alone: PostgreSQL already plans the few
            # files' chunks exactly, 1.3-2.9 ms at 100k, where the count and the gate cost
            # 5-7; a 1% created_at range 6.6 ms against 9.3)
            vec_sql = _by_filter_size(
                candidates, _exact_vector_sql(coll, condition), vec_sql, compiled.candidate_repeats
            )
    # the model reads the words searched for, not the excluded ones
    embedded = ftq.terms if ftq is not None and constrained else query
    if vec_sql is None and ft_sql is None:
        return []  # full-text search for nothing but stop words

    run_ = _Statement(
        rt=rt,
        coll=coll,
        ef=p.ef_search or max(rt.settings.hnsw_ef_search, min(p.depth, 1000)),
        iterative=vec_sql is not None and _supports_iterative_scan(rt),
        replan_vector=filtered or constrained,
        # exact lists are eval's and the benchmarks' reference (not offered by the API or
        # the CLI) and take seconds at 1M by design: not cut off
        timeout_s=0.0 if p.exact else rt.settings.search_timeout_s,
    )
    if vec_sql is not None and ft_sql is not None:
        # the two lists at once, on two pooled connections, each with its rows; fused here.
        # The BM25 list goes first: it is the slower one, and a query that is not in the
        # query cache is embedded while it runs (the encode no longer delays it)
        exact_depth = p.fulltext_list_depth if constrained else p.fulltext_exact_depth
        vec_rows, ft_rows = _hybrid_lists(
            run_,
            _ListRun(_with_rows(vec_sql, "l.raw, l.chunk_id"), values, hnsw=True),
            _ListRun(
                _with_rows(ft_sql, "l.raw DESC, l.chunk_id"),
                dict(values, n=exact_depth, tail=p.fulltext_list_depth),
                ftcond=ftcond,
            ),
            lambda: _query_vector(rt, coll, embedded, given),
        )
        rows = fused_rows(vec_rows, ft_rows, p.k, p.pool, p.fusion, p.sections)
        return [_hit(r, coll, p) for r in rows]
    # one list: its pool in one statement, grouped into sections in Python (search/single.py)
    if vec_sql is not None:
        values["q"] = _query_vector(rt, coll, query, given)
        rows = run_.execute(single.pool_sql(vec_sql, "x.raw"), values, hnsw=True)
        metric = coll.model.distance
        rows = single.final_rows(
            rows, p.k, p.sections, lambda raw: similarity(raw, metric), vector=True
        )
    else:
        assert ft_sql is not None
        rows = run_.execute(single.pool_sql(ft_sql, "x.raw DESC"), values, ftcond=ftcond)
        rows = single.final_rows(rows, p.k, p.sections, float, vector=False)
    return [_hit(r, coll, p) for r in rows]


# How many more times a hybrid search runs its two lists at once when they saw a document
# at two writes (:func:`_mixed_writes`), before it reads both in one snapshot instead
SNAPSHOT_RETRIES = 1


@dataclass
class _ListRun:
    """One of a hybrid search's two list statements, with what :meth:`_Statement.execute`
    takes besides it."""

    stmt: sql.Composed
    values: dict[str, Any]
    hnsw: bool = False
    ftcond: sql.Composable | None = None


def _hybrid_lists(
    run_: _Statement,
    vec: _ListRun,
    ft: _ListRun,
    embed: Callable[[], npt.NDArray[np.float32]],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The vector list's rows and the BM25 list's, of one version of each document.

    The two lists run at once on two pooled connections (their latency is the slower
    one's), each statement its own autocommit transaction, so each reads the database at
    its own moment (on its own server, with read replicas). A document replaced in
    between came back with hits of its old chunks from one list and of its new chunks
    from the other: two versions of one document in one answer. Each row carries the
    version of its document row (``d.xmin``, :func:`_with_rows`); when the lists saw one
    document at two versions, or one source as two documents (deleted and added again),
    they run again, and after :data:`SNAPSHOT_RETRIES` more tries both run on one
    connection in one ``REPEATABLE READ READ ONLY`` transaction: one snapshot of one
    server, slower (the sum of both lists) but only under a document written again and
    again while it is searched. ``embed`` gives the query's vector (computed while the
    first BM25 list runs, once)."""
    for _ in range(1 + SNAPSHOT_RETRIES):
        vec_rows, ft_rows = _lists_at_once(run_, vec, ft, embed)
        if not _mixed_writes(vec_rows, ft_rows):
            return vec_rows, ft_rows
    vec_rows, ft_rows = run_.execute_in_one_snapshot([vec, ft])
    return vec_rows, ft_rows


def _lists_at_once(
    run_: _Statement, vec: _ListRun, ft: _ListRun, embed: Callable[[], npt.NDArray[np.float32]]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Both lists at once, on two pooled connections: the BM25 list goes first (it is the
    slower one, and a query that is not in the query cache is embedded while it runs)."""
    pending = _lists_executor().submit(
        contextvars.copy_context().run,
        run_.execute,
        ft.stmt,
        ft.values,
        ftcond=ft.ftcond,
    )
    try:
        if "q" not in vec.values:
            vec.values["q"] = embed()
        vec_rows = run_.execute(vec.stmt, vec.values, hnsw=vec.hnsw)
    finally:
        # whatever happened here, the BM25 list has given its connection back before
        # the search returns; an error of the embed or the vector list is the one raised
        wait([pending])
    return vec_rows, pending.result()


def _mixed_writes(first: Sequence[tuple[Any, ...]], second: Sequence[tuple[Any, ...]]) -> bool:
    """Whether two lists' rows (:data:`ragstore.search.fused.LIST_ROW`) hold one document
    at two versions of its row, or one source as two documents: lists read at different
    moments around a write of it. The rows of one list are one statement's (one snapshot),
    so only the second list's rows are checked against the first's: two dicts of about a
    hundred rows and a loop over thirty, a few microseconds."""
    version = {r[2]: r[12] for r in first}
    document = {r[3]: r[2] for r in first}
    return any(
        version.get(r[2], r[12]) != r[12] or document.get(r[3], r[2]) != r[2] for r in second
    )


_executor_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
LIST_THREADS = 16  # full-text lists of concurrent hybrid searches run on these threads


def _forget_executor_in_child() -> None:
    """A forked child has none of the parent's threads, but its copy of the executor
    counts the parent's idle ones and starts none: a hybrid search waited for its
    full-text list forever. The child starts its own."""
    global _executor, _executor_lock
    _executor = None
    _executor_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_executor_in_child)


def _lists_executor() -> ThreadPoolExecutor:
    """The threads that run a hybrid search's full-text list beside its vector list.

    A search never holds a pooled connection while it waits for the other list (each
    statement checks one out and returns it), so a busy pool makes lists wait, never
    deadlock."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(LIST_THREADS, thread_name_prefix="ragstore-fulltext")
        return _executor


def _with_rows(list_sql: sql.Composable, order: str) -> sql.Composed:
    """A ranked list (``chunk_id, raw``) with each candidate's chunk and document: the
    rows :func:`ragstore.search.fused.fused_rows` fuses and returns (:data:`LIST_ROW`).

    The metadata comes as JSON text, parsed only for the hits (:func:`_hit`, as for the
    single-list pools): a hybrid search pools about 130 rows and returns ``k``, and
    parsing every row's JSON cost about as much as fusing them.

    The document row's ``xmin`` (the transaction that wrote that version of it; the row is
    joined anyway) tells which write of a document each list read (see
    :func:`_hybrid_lists`)."""
    return sql.SQL(
        "SELECT l.chunk_id, l.raw, d.id, d.source, d.title, c.text, c.chunk_type,"
        " c.section_path, c.ordinal, c.page, c.metadata::text, c.parent_id, d.xmin::text"
        " FROM ({l}) l JOIN chunks c ON c.id = l.chunk_id"
        " JOIN documents d ON d.id = c.document_id ORDER BY {o}"
    ).format(o=sql.SQL(order), l=list_sql)


def _timeout_ms(timeout_s: float) -> int:
    """The ``statement_timeout`` (ms) a search of ``timeout_s`` runs under (at least 1)."""
    return max(1, round(timeout_s * 1000))


@contextmanager
def _search_deadline(collection: str, timeout_s: float) -> Iterator[None]:
    """Turn the end PostgreSQL put to a search for its ``statement_timeout`` into one clear
    :class:`SearchTimeoutError`; any other cancel (an administrator's ``pg_cancel_backend``)
    stays as it is: 503 ``statement_cancelled``, only this request failed, retry it.

    Both are SQLSTATE 57014, raised at the same place in the server; only their message
    tells them apart, and it is in the server's ``lc_messages``: under a German one
    ("storniere Anfrage wegen Zeitüberschreitung der Anfrage") every search timeout was
    taken for an administrator's cancel (503, "retry it") instead of 504
    ``search_timeout`` saying to narrow the search. The clock tells them apart instead:
    the server's timer starts after the statement was sent, which is after this block
    began, so a timeout cannot end it before ``timeout_s`` has passed here, and a cancel
    that comes sooner is not the timeout. (Without a timeout, ``timeout_s`` 0, no cancel
    is one.)"""
    limit_s = _timeout_ms(timeout_s) / 1000 if timeout_s else None
    started = time.monotonic()
    try:
        yield
    except errors.QueryCanceled:
        if limit_s is None or time.monotonic() - started < limit_s:
            raise
        raise SearchTimeoutError(
            f"the search of collection {collection!r} ran longer than {timeout_s:g} s and "
            f"was stopped (RAGSTORE_SEARCH_TIMEOUT_S={timeout_s:g}); narrow it (a filter, a "
            "smaller k), retry when the database is less busy, or raise "
            "the limit"
        ) from None


def _bind_ftcond(conn: Any, values: dict[str, Any], ftcond: sql.Composable | None) -> None:
    """``values["ftcond"]``: ``ftcond`` as SQL text for the BM25 top k, every value in it
    quoted client-side by psycopg, as in a bound parameter."""
    if ftcond is not None:
        values["ftcond"] = ClientCursor(conn).mogrify(sql.Composed([ftcond]), values)


@dataclass(frozen=True)
class _Statement:
    """Runs one search statement on a pooled connection, in one round trip."""

    rt: Runtime
    coll: Collection
    ef: int
    iterative: bool
    timeout_s: float  # statement_timeout of each statement; 0 = none
    # A filtered vector list is planned at every execution, never prepared: prepared, the
    # statement went to PostgreSQL's generic plan after a connection's first executions,
    # and a 10%-filtered hybrid search at 100k chunks then changed its results (recall@100
    # of the vector list 0.92 -> 0.998, against the exact list) and took twice as long
    # (55-68 -> 110-136 ms), depending on how often that pooled connection had run it.
    replan_vector: bool = False

    def execute(
        self,
        stmt: sql.Composed,
        values: dict[str, Any],
        *,
        hnsw: bool = False,
        ftcond: sql.Composable | None = None,
        binary: bool = False,
    ) -> list[tuple[Any, ...]]:
        """The statement's rows; ``hnsw`` when it scans the HNSW index (its session
        settings go first, once per connection); ``ftcond``, the condition (over ``values``)
        that the BM25 top k takes as SQL text (``%(ftcond)s``); ``binary`` rows in binary
        format (vectors as 4 bytes a dimension)."""
        timeout_s = self.timeout_s
        with (
            self.rt.db.connection() as conn,
            translated(f"searching {self.coll.name!r}"),
            _search_deadline(self.coll.name, timeout_s),
            cancellable(conn),  # an API search whose client went away (db/cancel.py)
        ):
            _bind_ftcond(conn, values, ftcond)
            set_session = hnsw and _session_ef.get(conn) != self.ef
            prepare = False if hnsw and self.replan_vector else None  # None: psycopg's rule
            # One read statement is its own transaction: in autocommit no BEGIN goes ahead
            # of it and no COMMIT after, so the search is one Parse/Bind/Execute/Sync round
            # trip (a transaction with a pipeline took three: BEGIN, the query, the exit's
            # Sync).
            conn.autocommit = True  # idle pooled connection: a client-side switch, no message
            try:
                if set_session or timeout_s:
                    with conn.pipeline():
                        self._settings(conn, set_session)
                        cur = conn.execute(stmt, values, prepare=prepare, binary=binary)
                else:
                    cur = conn.execute(stmt, values, prepare=prepare, binary=binary)
                rows: list[tuple[Any, ...]] = cur.fetchall()
            finally:
                if conn.info.transaction_status == TransactionStatus.IDLE:
                    conn.autocommit = False
                else:
                    # a server gone mid-pipeline leaves it ACTIVE, where switching back
                    # would raise and hide the lost connection (what lets a replica's
                    # search fall back to the primary); closed, the pool replaces it
                    conn.close()
            if set_session:
                _session_ef[conn] = self.ef
        return rows

    def _settings(self, conn: Any, set_session: bool) -> None:
        """The statement timeout (transaction-local: the statements after it in this
        transaction, nothing after it) and, where ``set_session``, the HNSW scan settings
        (session-level: later searches on this connection skip them)."""
        if self.timeout_s:
            conn.execute(
                "SELECT set_config('statement_timeout', %s, true)",
                (str(_timeout_ms(self.timeout_s)),),
            )
        if set_session:
            conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", (str(self.ef),))
            if self.iterative:
                conn.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', false)")

    def _lock_space_table(self, conn: Any) -> None:
        """Lock the space's table (ACCESS SHARE) before the transaction takes its snapshot
        (neither ``SET`` nor ``LOCK`` takes one), within the search's timeout.

        A rebuilding bulk load swaps a new table in under the space's name, its rows
        written by another transaction just before (``spaces.attach_load_table``). A
        snapshot taken before those rows were written, reading the new table after the
        swap, saw none of them: the vector list came back empty, and the answer was the
        BM25 list's alone. Locked first, the search waits for a swap in progress and
        then reads the new table with a snapshot that holds its rows, or holds the old
        table while the swap waits (or copies its rows instead)."""
        if self.timeout_s:
            conn.execute(
                sql.SQL("SET LOCAL statement_timeout = {}").format(
                    sql.Literal(_timeout_ms(self.timeout_s))
                )
            )
        conn.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(sql.Identifier(self.coll.table))
        )

    def execute_in_one_snapshot(self, lists: Sequence[_ListRun]) -> list[list[tuple[Any, ...]]]:
        """Each list's rows, all read on one pooled connection (one server) in one
        ``REPEATABLE READ READ ONLY`` transaction: one snapshot of the database for all of
        them (:func:`_hybrid_lists`'s last resort). Several round trips, each statement
        under the search's ``statement_timeout`` (transaction-local, as in :meth:`execute`)."""
        timeout_s = self.timeout_s
        out: list[list[tuple[Any, ...]]] = []
        with (
            self.rt.db.connection() as conn,  # idle, not in autocommit: committed at the end
            translated(f"searching {self.coll.name!r}"),
            _search_deadline(self.coll.name, timeout_s),
            cancellable(conn),
        ):
            set_session = any(x.hnsw for x in lists) and _session_ef.get(conn) != self.ef
            # before any query of the transaction, which takes its snapshot
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            self._lock_space_table(conn)
            self._settings(conn, set_session)
            for x in lists:
                _bind_ftcond(conn, x.values, x.ftcond)
                prepare = False if x.hnsw and self.replan_vector else None
                out.append(conn.execute(x.stmt, x.values, prepare=prepare).fetchall())
        if set_session:
            # committed: the session settings stay on this connection
            _session_ef[conn] = self.ef
        return out


def _syntax_condition(tests: list[sql.Composable], condition: sql.Composable) -> sql.Composable:
    """``condition`` and the query's required-phrase and exclusion ``tests``
    (:func:`bm25.syntax_tests`), over ``c`` (the chunk): what a hybrid search's vector
    list keeps, and what the BM25 top k takes as its ``cond`` text.

    Quoted phrases and ``-word`` are constraints, not words to rank by. Applied to the
    full-text list alone, a hybrid search for ``replication -logical`` still returned the
    chunks about logical replication that the vector list found (the model read
    "-logical" as one more word about it). So both lists keep only the chunks that hold
    every required phrase and no excluded word or phrase, the same ``websearch_to_tsquery``
    tests as the full-text list, with the same placeholders (``cfg``, ``required``,
    ``excluded``). The vector list is then a filtered one: PostgreSQL plans each
    execution by how selective the condition is. The BM25 list prunes with it like with
    a filter, instead of scoring every match (seconds at a million chunks).
    """
    return sql.SQL(" AND ").join(sql.SQL("({})").format(x) for x in [condition, *tests])


def _vector_sql(
    coll: Collection, condition: sql.Composable, filtered: bool, exact: bool, depth: int
) -> sql.Composable:
    """The ``depth`` nearest embeddings; joined to chunks and documents only to filter.

    The vector is a binary parameter (``%(q)b``: 4 bytes a dimension, no text parsing).
    ``exact`` orders by an expression the HNSW index cannot serve: a sequential scan.

    Unfiltered, the depth is a literal: the statement then has one plan whatever the
    vector (the HNSW scan), PostgreSQL's plan cache switches the prepared statement to its
    generic plan after five executions and a search skips planning (about 0.4 ms a search
    on SciFact, same rows). With ``LIMIT`` a parameter the generic plan cannot know how
    few rows are wanted and sorts the whole table instead (slower, other rows). A
    filtered search's plan depends on the filter's selectivity, so its statement is
    never prepared (``_Statement.replan_vector``): PostgreSQL plans every execution.
    """
    limit = sql.Literal(depth) if not filtered else sql.SQL("%(n)s")
    op = sql.SQL(spaces.OPERATORS[coll.model.distance])
    dim = coll.model.dimension
    order = (
        sql.SQL("(e.embedding {op} %(q)b) + 0").format(op=op)
        if exact
        else sql.SQL("{e} {op} {q}").format(
            e=spaces.indexed(sql.SQL("e.embedding"), dim),
            op=op,
            q=spaces.indexed(sql.SQL("%(q)b"), dim),
        )
    )
    if not filtered:
        return sql.SQL(
            "SELECT e.chunk_id, e.embedding {op} %(q)b AS raw FROM {t} e"
            " ORDER BY {order} LIMIT {limit}"
        ).format(op=op, t=sql.Identifier(coll.table), order=order, limit=limit)
    # A filtered scan iterates (hnsw.iterative_scan = relaxed_order) and returns its rows
    # slightly out of order; selected straight, the statements around it trusted its
    # ORDER BY and ranked them as they came (10%-filtered at 100k chunks: 53 of 60 lists
    # out of order). Materialized, the rows carry no order and every consumer sorts them,
    # as pgvector's documentation advises.
    relaxed = sql.SQL(
        "WITH relaxed AS MATERIALIZED (SELECT e.chunk_id, e.embedding {op} %(q)b AS raw"
        " FROM {t} e JOIN chunks c ON c.id = e.chunk_id JOIN documents d ON d.id = c.document_id"
        " WHERE {cond} ORDER BY {order} LIMIT {limit})"
    ).format(op=op, t=sql.Identifier(coll.table), cond=condition, order=order, limit=limit)
    if exact:
        return relaxed + sql.SQL(" SELECT chunk_id, raw FROM relaxed")
    # pgvector ends an iterative scan after hnsw.max_scan_tuples tuples (20,000 by
    # default), so a filter that few chunks pass, far from the query, came back short: 2
    # hits of k=10 at 30,000 chunks, 20 of them passing, with any ef_search. When the scan
    # returns fewer rows than the list's depth, the filter's chunks are ranked exactly
    # instead (the scan's rows are among them): a one-time filter on the scan's count
    # picks one branch, so a list that fills runs nothing more (no second statement),
    # and the exact one still ends at the search's timeout. A filter that fewer chunks
    # than the depth pass takes the exact branch too, rightly: the scan's rows are then
    # all of them or fewer. The exact branch filters first and measures the distances
    # of the chunks that pass (``passing``), each read by its key: a scan that came back
    # short says few do, and PostgreSQL, left to plan it, sorted every embedding of the
    # collection by distance and walked them for passing ones (380 ms at 20,000 chunks,
    # 100 passing), or hashed all of them (160 ms), where filtering first took 25 ms. (A
    # chunk whose embedding is gone since has no distance: NULLS LAST, then dropped.)
    passing = sql.SQL(
        ", passing AS MATERIALIZED (SELECT c.id FROM chunks c JOIN documents d"
        " ON d.id = c.document_id WHERE c.collection_id = %(cid)s AND {cond})"
    ).format(cond=condition)
    short = sql.SQL("(SELECT count(*) FROM relaxed) < %(n)s")
    return (
        relaxed
        + passing
        + sql.SQL(
            " SELECT chunk_id, raw FROM relaxed WHERE NOT {short}"
            " UNION ALL SELECT chunk_id, raw FROM (SELECT f.id AS chunk_id, (SELECT"
            " e.embedding {op} %(q)b FROM {t} e WHERE e.chunk_id = f.id) AS raw FROM passing f"
            " ORDER BY raw, f.id LIMIT %(n)s) x WHERE {short} AND raw IS NOT NULL"
        ).format(short=short, op=op, t=sql.Identifier(coll.table))
    )


FIELD_INDEXES_CACHE_S = 1.0
_field_indexes: WeakKeyDictionary[Database, tuple[float, int, list[FieldIndex]]] = (
    WeakKeyDictionary()
)


def indexed_fields(rt: Runtime, where: Mapping[str, Any] | None) -> list[FieldIndex]:
    """The indexed metadata fields, needed when ``where`` has a range on metadata (whose
    candidates they give, search/filters.py). Read from the catalog at most once a second
    (a round trip of about a millisecond), at once after this process added or dropped
    one; until another process's change is seen, a range runs as before or, on an index
    just dropped, reads the table: slower, never wrong."""
    if not ranges_metadata(where):
        return []
    db, now, gen = rt.db, time.monotonic(), field_indexes.generation()
    hit = _field_indexes.get(db)
    if hit is not None and hit[1] == gen and now - hit[0] < FIELD_INDEXES_CACHE_S:
        return hit[2]
    with db.connection() as conn, translated("reading the indexed metadata fields"):
        found = field_indexes.indexed(conn)
    _field_indexes[db] = (now, gen, found)
    return found


def _by_filter_size(
    candidates: sql.Composable, few: sql.Composable, many: sql.Composable, repeats: int = 1
) -> sql.Composable:
    """One list statement that runs ``few`` (over the ``candidates`` table) when the
    filter's candidates number at most :data:`EXACT_FILTER_CHUNKS` chunks, else ``many``.

    The candidates are read once, at most ``repeats`` times the bound and one row more
    (``UNION ALL`` and ``LIMIT``: a broad filter stops early), and the choice is a
    one-time filter: only one branch runs. A chunk can come ``repeats`` times (once a
    branch of the candidate statement, :attr:`CompiledFilter.candidate_repeats`), so the
    bound is on distinct chunks: counted as rows, a filter on metadata that add_texts
    stores on both the chunk and its document counted each chunk twice, and one of
    1,001-2,000 chunks was read from the index instead of ranked exactly. Read that far,
    the rows hold more than the bound's chunks or all of them."""
    small = sql.SQL("(SELECT count(DISTINCT id) FROM candidates) <= {}").format(
        sql.Literal(EXACT_FILTER_CHUNKS)
    )
    return sql.SQL(
        "WITH candidates AS MATERIALIZED (SELECT id FROM ({c}) f LIMIT {over})"
        " SELECT chunk_id, raw FROM ({few}) a WHERE {small}"
        " UNION ALL SELECT chunk_id, raw FROM ({many}) b WHERE NOT {small}"
    ).format(
        c=candidates,
        over=sql.Literal(repeats * EXACT_FILTER_CHUNKS + 1),
        few=few,
        many=many,
        small=small,
    )


def _among_candidates(condition: sql.Composable) -> sql.Composable:
    return sql.SQL("{} AND c.id IN (SELECT id FROM candidates)").format(condition)


def _exact_vector_sql(coll: Collection, condition: sql.Composable) -> sql.Composable:
    """The ``%(n)s`` nearest of the ``candidates`` that pass ``condition``, by exact distance."""
    op = sql.SQL(spaces.OPERATORS[coll.model.distance])
    return sql.SQL(
        "SELECT e.chunk_id, e.embedding {op} %(q)b AS raw"
        " FROM (SELECT DISTINCT id FROM candidates) f JOIN {t} e ON e.chunk_id = f.id"
        " JOIN chunks c ON c.id = e.chunk_id JOIN documents d ON d.id = c.document_id"
        " WHERE {cond} ORDER BY raw, e.chunk_id LIMIT %(n)s"
    ).format(op=op, t=sql.Identifier(coll.table), cond=condition)


def _hit(r: tuple[Any, ...], coll: Collection, p: SearchParams) -> Hit:
    explain: dict[str, Any] | None = None
    if p.explain:
        vrank, vraw, frank, fraw = r[11], r[12], r[13], r[14]
        explain = {
            "mode": p.mode,
            "vector": None
            if vrank is None
            else {
                "rank": int(vrank),
                "distance": float(vraw),
                "metric": coll.model.distance,
                "similarity": similarity(float(vraw), coll.model.distance),
            },
            "fulltext": None if frank is None else {"rank": int(frank), "bm25": float(fraw)},
        }
        if r[15] is not None:
            explain["section"] = {
                "score": float(r[15]),
                "chunks": 1 + len(r[16] or ()),
                "decay": SECTION_DECAY,
                "cap": SECTION_CAP,
            }
        if p.mode == "hybrid":
            explain["rrf"] = {
                "k": p.fusion.k,
                "vector_weight": p.fusion.vector_weight,
                "fulltext_weight": p.fusion.fulltext_weight,
            }
    return Hit(
        chunk_id=int(r[0]),
        document_id=int(r[1]),
        source=r[2],
        title=r[3],
        text=r[4],
        chunk_type=r[5],
        section_path=list(r[6]),
        ordinal=int(r[7]),
        page=r[8],
        metadata=stored_json(r[9]),  # JSON text (_with_rows, single.pool_sql), read as stored JSON
        score=float(r[10]),
        explain=explain,
        section_score=None if r[15] is None else float(r[15]),
        section_hits=[int(i) for i in r[16] or ()],
        section_id=int(r[0]) if r[5] == "heading" else None if r[17] is None else int(r[17]),
    )


def resolve_mode(mode: str | None, query: str | None, vector: object | None) -> Mode:
    """The mode a request asked for, or its default: ``vector`` for a vector with no text,
    ``hybrid`` otherwise."""
    if mode is None:
        return "vector" if vector is not None and not (query or "").strip() else "hybrid"
    return parse_mode(mode)


def parse_mode(text: str) -> Mode:
    """A mode from user input, or one error listing the choices."""
    for mode in MODES:
        if text == mode:
            return mode
    raise InputError(f"unknown search mode {text!r}; use one of {', '.join(MODES)}")
