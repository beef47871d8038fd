"""Search latency when every query is embedded (no query cache) by a model with a round trip.

    python -m bench.query_overlap /tmp/s7-scale/data-100000 --delay-ms 0 20 --queries 100

On a collection a ``bench.scale --keep`` run left, with the instant embedding server
holding each answer ``--delay-ms`` (a remote embedding API's round trip; 0: the server
on loopback), it times vector, full-text and hybrid searches of SciFact claims with the
query cache emptied before each, interleaved per claim (one client, in-process
``search``). A hybrid search starts its BM25 list before it embeds the query, so with a
model that answers late its latency is about the slower of (embed + vector list) and the
BM25 list, not their sum. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench.scale import COLLECTION, _queries, existing
from ragstore.embedding.cache import query_cache
from ragstore.search import search

MODES = ("vector", "fulltext", "hybrid")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--delay-ms", type=float, nargs="+", default=[0.0, 20.0])
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    queries = _queries(args.queries)
    out: dict[str, dict[str, float]] = {}
    for delay in args.delay_ms:
        with existing(args.data_dir, delay) as (rt, _coll):
            for q in queries[:10]:  # warm the pool, the plans and the pages
                search(rt, q, collection=COLLECTION, k=10, mode="hybrid")
            times: dict[str, list[float]] = {m: [] for m in MODES}
            for _ in range(args.rounds):
                for q in queries:
                    for mode in MODES:
                        query_cache().clear()
                        t0 = time.perf_counter()
                        search(rt, q, collection=COLLECTION, k=10, mode=mode)  # type: ignore[arg-type]
                        times[mode].append((time.perf_counter() - t0) * 1000)
            out[f"delay_{delay:g}ms"] = {
                f"{m}_p50_ms": round(statistics.median(v), 2) for m, v in times.items()
            }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
