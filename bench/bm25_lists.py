"""The BM25 top-k function's lists, paired: exact against hybrid's, on a kept collection.

For ``--queries`` SciFact claims, each claim runs ``ragstore_bm25_topk`` once as a
full-text search asks for it (exact: ``floors_exact`` true, the default) and once as an
unfiltered hybrid search does (``floors_exact => false``, revision 0019), in alternating
order, for ``--rounds`` rounds (the first warms the caches and is not timed). It prints the
latency percentiles of each and how much of the exact top k the hybrid list holds.
Nothing is written.

    python -m bench.bm25_lists /tmp/m1-scale/data-1000000 --queries 100 --k 20 --tail 30
    python -m bench.bm25_lists /tmp/m1-scale/data-1000000 --queries 100 --k 10 --enough

``--enough`` measures revision 0020 instead: for the claims whose exact list takes the
"chunks holding enough terms" path (its ``RAISE DEBUG``), the function against the
exhaustive statement it used to fall back to, paired, and whether the lists are identical.

The collection is one a ``bench.scale --keep`` run left (the ``scale`` collection).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench.scale import COLLECTION, _queries
from ragstore.config import Settings
from ragstore.runtime import Runtime

_CALL = (
    "SELECT chunk_id, raw FROM ragstore_bm25_topk(%s, 'english', %s, %s, 1.2::float8,"
    " 0.75::float8, tail => %s, floors_exact => %s)"
)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _collection_id(conn: Any, data_dir: Path) -> int:
    """The bench collection's id, or exit saying the directory holds none."""
    found = conn.execute("SELECT id FROM collections WHERE name = %s", (COLLECTION,)).fetchone()
    if found is None:
        raise SystemExit(f"{data_dir} holds no {COLLECTION!r} collection")
    return int(found[0])


def measure(data_dir: Path, queries: list[str], k: int, tail: int, rounds: int) -> dict[str, Any]:
    """Per list: p50/p90/p99/max/mean ms; the hybrid list's share of the exact top k."""
    times: dict[str, list[float]] = {"exact": [], "hybrid": []}
    same = 0
    overlap: list[float] = []
    with Runtime(Settings(data_dir=data_dir)) as rt:
        conn = rt.db.connect(autocommit=True)
        try:
            cid = _collection_id(conn, data_dir)
            for rnd in range(rounds):
                for i, q in enumerate(queries):
                    order = ["exact", "hybrid"] if (i + rnd) % 2 == 0 else ["hybrid", "exact"]
                    ids: dict[str, list[int]] = {}
                    for name in order:
                        t0 = time.perf_counter()
                        rows = conn.execute(_CALL, (cid, q, k, tail, name == "exact")).fetchall()
                        if rnd:
                            times[name].append((time.perf_counter() - t0) * 1000)
                        ids[name] = [int(r[0]) for r in rows[:k]]
                    if rnd == rounds - 1:
                        same += ids["exact"] == ids["hybrid"]
                        exact = set(ids["exact"])
                        overlap.append(len(exact & set(ids["hybrid"])) / max(len(exact), 1))
        finally:
            conn.close()
    out: dict[str, Any] = {
        name: {
            "p50_ms": round(statistics.median(v), 1),
            "p90_ms": round(_pct(v, 0.9), 1),
            "p99_ms": round(_pct(v, 0.99), 1),
            "max_ms": round(max(v), 1),
            "mean_ms": round(statistics.mean(v), 1),
        }
        for name, v in times.items()
    }
    out["same_top_k"] = f"{same}/{len(queries)}"
    out["hybrid_share_of_exact_top_k"] = round(statistics.mean(overlap), 4)
    out["worst_claim_share"] = round(min(overlap), 2)
    return out


def enough(data_dir: Path, queries: list[str], k: int) -> dict[str, Any]:
    """The claims on revision 0020's path: its time against scoring every match."""
    new: list[float] = []
    old: list[float] = []
    same = 0
    with Runtime(Settings(data_dir=data_dir)) as rt:
        conn = rt.db.connect(autocommit=True)
        try:
            cid = _collection_id(conn, data_dir)
            notes: list[str] = []
            conn.add_notice_handler(lambda d: notes.append(d.message_primary or ""))
            conn.execute("SET client_min_messages = debug1")
            picked = []
            for q in queries:  # also the warm-up round
                notes.clear()
                conn.execute(_CALL, (cid, q, k, 0, True)).fetchall()
                if any("chunks holding enough terms" in n for n in notes):
                    picked.append(q)
            conn.execute("RESET client_min_messages")
            for q in picked:
                t0 = time.perf_counter()
                a = conn.execute(_CALL, (cid, q, k, 0, True)).fetchall()
                t1 = time.perf_counter()
                b = conn.execute(
                    "SELECT chunk_id, raw FROM ragstore_bm25_exhaustive(%s, 'english', %s, %s,"
                    " 1.2::float8, 0.75::float8)",
                    (cid, q, k),
                ).fetchall()
                t2 = time.perf_counter()
                new.append((t1 - t0) * 1000)
                old.append((t2 - t1) * 1000)
                same += a == b
        finally:
            conn.close()
    if not picked:
        return {"claims": 0}
    return {
        "claims": len(picked),
        "identical": f"{same}/{len(picked)}",
        **{
            name: {
                "p50_ms": round(statistics.median(v), 1),
                "mean_ms": round(statistics.mean(v), 1),
                "max_ms": round(max(v), 1),
            }
            for name, v in (("enough_terms", new), ("exhaustive", old))
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data_dir", type=Path, help="a data directory bench.scale --keep left")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--k", type=int, default=20, help="exact depth (hybrid asks for 20)")
    ap.add_argument("--tail", type=int, default=30, help="rows returned (hybrid: 30)")
    ap.add_argument("--rounds", type=int, default=2, help="the first one is not timed")
    ap.add_argument("--enough", action="store_true", help="revision 0020's path, see above")
    args = ap.parse_args()
    if args.enough:
        print(json.dumps(enough(args.data_dir, _queries(args.queries), args.k), indent=1))
        return
    if args.rounds < 2:
        ap.error("--rounds must be at least 2 (the first only warms the caches)")
    result = measure(args.data_dir, _queries(args.queries), args.k, args.tail, args.rounds)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
