"""Does a filtered hybrid search give the same vector list every time it runs?

    python -m bench.plan_drift DATA_DIR --suffix ' "cancer" -cells' [--queries 10] [--passes 6]

On a collection a ``bench.scale --keep`` run left in DATA_DIR, the first ``--queries``
SciFact claims with the suffix (a required word or phrase, an exclusion: a filter the
vector list applies) are searched in hybrid mode ``--passes`` times over, and then once
with ``exact=True``. Per pass: the recall@100 of the vector lists the search fused (read
where ``fused_rows`` receives them) against the exact ones, and the milliseconds a search.
A list that changes between passes is a plan that changed (a prepared statement that went
to PostgreSQL's generic plan after a connection's first executions, before 2026-12-04).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ragstore.search.service as service
from bench.scale import COLLECTION, DATA, existing
from ragstore.search import search


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--suffix", required=True)
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--passes", type=int, default=6)
    args = ap.parse_args()
    with (DATA / "scifact" / "queries.jsonl").open(encoding="utf-8") as fh:
        claims = [str(json.loads(line)["text"]) for line in fh][: args.queries]
    lists: list[list[int]] = []
    fuse = service.fused_rows

    def reading(vec_rows: Sequence[tuple[Any, ...]], *rest: Any) -> list[tuple[Any, ...]]:
        lists.append([int(r[0]) for r in vec_rows])
        return fuse(vec_rows, *rest)

    service.fused_rows = reading
    try:
        with existing(args.data_dir) as (rt, _):
            passes: list[list[list[int]]] = []
            ms: list[float] = []
            for _ in range(args.passes):
                lists.clear()
                t0 = time.perf_counter()
                for claim in claims:
                    search(rt, claim + args.suffix, collection=COLLECTION, k=10, mode="hybrid")
                ms.append((time.perf_counter() - t0) * 1000 / len(claims))
                passes.append(list(lists))
            lists.clear()
            for claim in claims:
                search(
                    rt, claim + args.suffix, collection=COLLECTION, k=10, mode="hybrid", exact=True
                )
            exact = list(lists)
    finally:
        service.fused_rows = fuse
    total = sum(len(e) for e in exact)
    recall = [
        round(sum(len(set(p[i]) & set(exact[i])) for i in range(len(claims))) / total, 3)
        for p in passes
    ]
    print(f"suffix {args.suffix!r}: recall@100 per pass {recall}")
    print(f"ms a search per pass {[round(m, 1) for m in ms]} (the first pays the query encode)")


if __name__ == "__main__":
    main()
