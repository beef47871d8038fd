"""Searches filtered by a range of ``created_at`` on a kept scale collection, with the
range's candidates (revision 0027's index) and without them (the probe switched off in
this process, as before that revision).

    python -m bench.scale --sizes 100000 --work DIR --keep --build-only --no-rebuild
    python -m bench.created_range DIR/data-100000

One load gives its documents one creation time, so the documents are first spread over
100 days by id (``UPDATE documents``: the collection as if it had grown a day at a
time); a range from day 99 keeps 1% of the chunks, from day 90 10%. p50 / p99 in ms of
60 SciFact queries per mode, 1 client, the two arms alternated over ``--rounds``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench.scale import COLLECTION, DATA, existing
from ragstore.search import filters, service

SPREAD = "timestamptz '2026-01-01' + (id % 100) * interval '1 day'"
WHERES = {
    "1%": {"created_at": {"$gte": "2026-04-10"}},
    "10%": {"created_at": {"$gte": "2026-04-01"}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--queries", type=int, default=60)
    args = ap.parse_args()
    lines = (DATA / "scifact" / "queries.jsonl").read_text(encoding="utf-8").splitlines()
    queries = [json.loads(line)["text"] for line in lines][: args.queries]
    probe = filters._created_probes
    with existing(args.data_dir) as (rt, _):
        with rt.db.connection() as conn:
            conn.execute(
                f"UPDATE documents SET created_at = {SPREAD}"
                f" WHERE created_at IS DISTINCT FROM {SPREAD}"
            )
        conn = rt.db.connect(autocommit=True)
        try:  # settled before the clock starts: no autovacuum of the update mid-run
            conn.execute("VACUUM ANALYZE documents")
        finally:
            conn.close()
        for r in range(args.rounds):
            for arm in ("without candidates", "with candidates"):
                filters._created_probes = probe if arm == "with candidates" else lambda _: None
                for name, where in WHERES.items():
                    cells = []
                    for mode in ("vector", "fulltext", "hybrid"):
                        for q in queries[:5]:  # warm
                            service.search(rt, q, collection=COLLECTION, mode=mode, where=where)
                        ms = []
                        for q in queries:
                            t0 = time.perf_counter()
                            service.search(rt, q, collection=COLLECTION, mode=mode, where=where)
                            ms.append((time.perf_counter() - t0) * 1000)
                        ms.sort()
                        p99 = ms[max(0, round(0.99 * len(ms)) - 1)]
                        cells.append(f"{mode} {statistics.median(ms):.1f} / {p99:.1f}")
                    print(f"round {r + 1}, {arm}, {name}: " + ", ".join(cells), flush=True)
        filters._created_probes = probe


if __name__ == "__main__":
    main()
