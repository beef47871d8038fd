"""Where a hybrid search's time goes on a kept ``bench.scale`` collection.

    python -m bench.hybrid_split /tmp/scale/data-100000 --queries 100

Hybrid runs its BM25 list on a second pooled connection while the vector list runs
(search/service.py), then fuses the two in Python. This times, per search, each list's
statement as the search runs it (wall time around ``_Statement.execute``: the round trip
with its rows), when each starts after the search does, and what follows the later of the
two (fusion, sections, hits), for:

- ``vector``: a vector search (the issue's denominator);
- ``hybrid``: the default search, the two lists at once;
- ``hybrid-sequential``: the same search with the BM25 list run before the vector list in
  the calling thread, so each statement's cost is seen without the other beside it;
- ``fulltext``: a full-text search (its exact, 50-deep pool: not hybrid's list).

Also, with ``--functions``, the BM25 function alone as hybrid calls it
(``ragstore_bm25_topk`` with hybrid's depth and tail, no rows), best of three runs per
claim: the floor under the BM25 list's statement.

Each query runs three times after one warm-up pass (query vectors cached, buffers warm);
p50 over all runs. SciFact test claims as in ``bench.scale``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from bench.scale import COLLECTION, _queries, existing
from ragstore.search import service
from ragstore.search.service import HYBRID_FULLTEXT_DEPTH, HYBRID_FULLTEXT_EXACT, search

_log: list[tuple[str, float, float]] = []
_execute = service._Statement.execute


def _timed(
    self: Any, stmt: Any, values: Any, *, hnsw: bool = False, pruned_filter: bool = False
) -> Any:
    t0 = time.perf_counter()
    try:
        return _execute(self, stmt, values, hnsw=hnsw, pruned_filter=pruned_filter)
    finally:
        _log.append(("vector" if hnsw else "bm25", t0, time.perf_counter()))


class _InThread:
    """An executor that runs the submitted call at once, in the calling thread (an error
    surfaces from ``submit``: a benchmark's search has no error to hand on)."""

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        f: Future[Any] = Future()
        f.set_result(fn(*args, **kwargs))
        return f


def _p50(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f}" if xs else "-"


def split(rt: Any, queries: list[str], mode: str, reps: int = 3) -> dict[str, str]:
    """p50 ms of the whole search, each list's statement, when it starts (from the
    search's start: the BM25 list waits for its thread) and what follows the lists."""
    total: list[float] = []
    lists: dict[str, list[float]] = {"vector": [], "bm25": []}
    starts: dict[str, list[float]] = {"vector": [], "bm25": []}
    after: list[float] = []
    for _ in range(reps):
        for q in queries:
            _log.clear()
            t0 = time.perf_counter()
            search(rt, q, collection=COLLECTION, k=10, mode=mode)  # type: ignore[arg-type]
            t1 = time.perf_counter()
            total.append(1000 * (t1 - t0))
            for kind, a, b in _log:
                lists[kind].append(1000 * (b - a))
                starts[kind].append(1000 * (a - t0))
            if _log:
                after.append(1000 * (t1 - max(b for _, _, b in _log)))
    return {
        "search": _p50(total),
        "vector list": _p50(lists["vector"]),
        "bm25 list": _p50(lists["bm25"]),
        "vector starts at": _p50(starts["vector"]),
        "bm25 starts at": _p50(starts["bm25"]),
        "after the lists": _p50(after),
    }


def function_floor(rt: Any, queries: list[str]) -> str:
    """p50 over claims of the best of three calls of hybrid's BM25 function, ms."""
    coll = rt.collection(COLLECTION)
    best: list[float] = []
    with rt.db.connection() as conn:
        for q in queries:
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                conn.execute(
                    "SELECT chunk_id, raw FROM ragstore_bm25_topk(%s, 'english'::regconfig, %s,"
                    " %s, 1.2, 0.75, tail => %s, floors_exact => false)",
                    (coll.id, q, HYBRID_FULLTEXT_EXACT, HYBRID_FULLTEXT_DEPTH),
                ).fetchall()
                times.append(1000 * (time.perf_counter() - t0))
            best.append(min(times))
    return _p50(best)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("data_dir", type=Path, help="a kept bench.scale data directory")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--functions", action="store_true", help="also the BM25 function alone")
    args = ap.parse_args()
    queries = _queries(args.queries)
    service._Statement.execute = _timed  # type: ignore[method-assign]
    with existing(args.data_dir) as (rt, _coll):
        for q in queries:  # query vectors cached, buffers warm
            search(rt, q, collection=COLLECTION, k=10, mode="hybrid")
        for mode in ("vector", "hybrid", "fulltext"):
            print(f"{mode:18s} {split(rt, queries, mode)}", flush=True)
        in_parallel = service._lists_executor
        service._lists_executor = lambda: _InThread()  # type: ignore[assignment,return-value]
        try:
            print(f"{'hybrid-sequential':18s} {split(rt, queries, 'hybrid')}", flush=True)
        finally:
            service._lists_executor = in_parallel
        if args.functions:
            print(f"{'bm25 function':18s} best-of-3 p50 {function_floor(rt, queries)} ms")


if __name__ == "__main__":
    main()
