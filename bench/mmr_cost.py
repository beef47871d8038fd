"""What maximal marginal relevance (``mmr``) adds to a search's latency.

    python -m bench.mmr_cost [--records 1500] [--queries 50] [--rounds 2]
        [--modes vector,hybrid] [--json]

An MMR search (search/mmr.py) runs the plain ranking ``fetch_k`` deep, reads the
candidates' stored embeddings in one more statement and picks ``k`` of them in numpy.
This bench loads the first ``--records`` SciFact records (../shared/data, titles and
abstracts as texts: a few thousand chunks) into a fresh data directory, the instant
embedding server (bench/instant_embedder.py) pinned as the model so that embedding costs
microseconds and the query's vector is no part of the difference, then times ``k``=10
searches of the first ``--queries`` SciFact claims in each mode: plain, and with ``mmr``
at ``fetch_k`` 20 (the default) and 100. One pass warms the caches (the query-vector
cache too), then ``--rounds`` passes are timed, the variants interleaved query by query
so that the machine's drift touches each alike. Prints a table (``--json``: JSON) of
p50 and p90 in ms per mode and variant, and the added p50 against plain.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.instant_embedder import InstantServer
from bench.scale import COLLECTION, DATA, instant_collection
from bench.scifact import records
from bench.scratch import discard
from ragstore.config import Settings
from ragstore.ingest import texts as text_service
from ragstore.runtime import Runtime
from ragstore.search import search

K = 10
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "mmr fetch_k 20": {"mmr": True, "fetch_k": 20},
    "mmr fetch_k 100": {"mmr": True, "fetch_k": 100},
}


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--records", type=int, default=1500, help="SciFact records loaded")
    ap.add_argument("--queries", type=int, default=50, help="SciFact claims searched")
    ap.add_argument("--rounds", type=int, default=2, help="timed passes after the warm-up")
    ap.add_argument("--modes", default="vector,hybrid", help="comma-separated search modes")
    ap.add_argument("--work", type=Path, help="where the data goes (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    with (DATA / "scifact" / "queries.jsonl").open(encoding="utf-8") as fh:
        claims = [str(json.loads(line)["text"]) for line in fh][: args.queries]
    work = args.work or Path(tempfile.mkdtemp(prefix="ragstore-mmr-cost-"))
    result: dict[str, Any] = {"k": K, "queries": len(claims), "rounds": args.rounds}
    try:
        with InstantServer() as server, Runtime(Settings(data_dir=work / "data")) as rt:
            instant_collection(rt, server)
            docs = records(args.records)
            t0 = time.perf_counter()
            text_service.add_texts(
                rt,
                COLLECTION,
                [f"{d['title']}\n\n{d['text']}" for d in docs],
                ids=[str(d["_id"]) for d in docs],
            )
            result["load_s"] = round(time.perf_counter() - t0, 1)
            with rt.db.connection() as conn:
                conn.execute("ANALYZE")
                row = conn.execute(
                    "SELECT count(*) FROM chunks c JOIN collections l ON l.id = c.collection_id "
                    "WHERE l.name = %s",
                    (COLLECTION,),
                ).fetchone()
            result["records"], result["chunks"] = len(docs), int(row[0]) if row else 0
            table: dict[str, dict[str, dict[str, float]]] = {}
            for mode in modes:
                ms: dict[str, list[float]] = {v: [] for v in VARIANTS}
                for round_ in range(args.rounds + 1):
                    for claim in claims:
                        for variant, options in VARIANTS.items():
                            t = time.perf_counter()
                            search(rt, claim, collection=COLLECTION, k=K, mode=mode, **options)
                            if round_:  # round 0 warms up
                                ms[variant].append((time.perf_counter() - t) * 1000)
                base = statistics.median(ms["plain"])
                table[mode] = {
                    v: {
                        "p50_ms": round(statistics.median(xs), 2),
                        "p90_ms": round(_pct(xs, 0.9), 2),
                        "added_p50_ms": round(statistics.median(xs) - base, 2),
                    }
                    for v, xs in ms.items()
                }
            result["latency"] = table
    finally:
        discard(work)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['records']} SciFact records, {result['chunks']} chunks (loaded in "
        f"{result['load_s']} s); k={K}, {len(claims)} claims x {args.rounds} rounds"
    )
    print(f"{'mode':8s} {'variant':16s} {'p50 ms':>8s} {'p90 ms':>8s} {'+p50 ms':>8s}")
    for mode, rows in result["latency"].items():
        for variant, r in rows.items():
            print(
                f"{mode:8s} {variant:16s} {r['p50_ms']:8.2f} {r['p90_ms']:8.2f} "
                f"{r['added_p50_ms']:8.2f}"
            )


if __name__ == "__main__":
    main()
