"""Search latency with web-search syntax: claims with an exclusion or a required phrase.

    python -m bench.query_syntax DATA_DIR [--queries 20] [--mode fulltext|hybrid]

On a collection a ``bench.scale --keep`` run left in DATA_DIR (its instant server started
afresh), each of the first ``--queries`` claims of SciFact's ``queries.jsonl`` (in file
order) is searched as it is and with each
suffix of :data:`SUFFIXES` appended: two exclusions and two required phrases of words
common in the corpus (a claim may hold the excluded word itself, the hardest case for a
filtered vector list). One pass warms the caches and the query-vector cache, the second
is timed; p50 and p90 per suffix, in ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench.scale import COLLECTION, DATA, existing
from ragstore.search import search

SUFFIXES = ("", " -cells", " -patients", ' "gene expression"', ' "cancer"')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--mode", choices=("fulltext", "hybrid"), default="hybrid")
    args = ap.parse_args()
    with (DATA / "scifact" / "queries.jsonl").open(encoding="utf-8") as fh:
        claims = [str(json.loads(line)["text"]) for line in fh][: args.queries]
    with existing(args.data_dir) as (rt, _):
        for timed in (False, True):
            for suffix in SUFFIXES:
                ms: list[float] = []
                for claim in claims:
                    t0 = time.perf_counter()
                    search(rt, claim + suffix, collection=COLLECTION, k=10, mode=args.mode)
                    ms.append((time.perf_counter() - t0) * 1000)
                if timed:
                    ms.sort()
                    p90 = ms[int(len(ms) * 0.9)]
                    print(
                        f"{suffix or '(none)':22s} p50 {statistics.median(ms):8.1f} ms"
                        f"  p90 {p90:8.1f} ms",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
