"""Search latency with web-search syntax: claims with an exclusion or a required phrase.

    python -m bench.query_syntax DATA_DIR [--queries 20] [--mode fulltext|hybrid]
        [--suffix ' "cancer"' ...] [--rounds 1] [--against-scored-required]

On a collection a ``bench.scale --keep`` run left in DATA_DIR (its instant server started
afresh), each of the first ``--queries`` claims of SciFact's ``queries.jsonl`` (in file
order) is searched as it is and with each suffix (``--suffix``, default
:data:`SUFFIXES`): two exclusions and two required phrases of words common in the corpus
(a claim may hold the excluded word itself, the hardest case for a filtered vector
list). One pass warms the caches and the query-vector cache, then ``--rounds`` are timed;
p50 and p90 per suffix, in ms.

``--against-scored-required`` alternates, within each round, today's rule with the one
before 2026-12-04, where any required phrase (a single quoted word too) had every chunk
holding it scored instead of going through the pruned top k (``bm25.uses_topk``), and
says how many top-10 lists of the warm-up pass are the same under both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from bench.scale import COLLECTION, DATA, existing
from ragstore.search import bm25, search
from ragstore.search.bm25 import FullTextQuery

SUFFIXES = ("", " -cells", " -patients", ' "gene expression"', ' "cancer"')


def _scored_required(q: FullTextQuery, exact: bool) -> bool:
    """``uses_topk`` before 2026-12-04: no pruned top k for any required phrase."""
    return not (exact or q.required)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--mode", choices=("fulltext", "hybrid"), default="hybrid")
    ap.add_argument("--suffix", action="append", help="a suffix to time (repeatable)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--against-scored-required", action="store_true")
    args = ap.parse_args()
    suffixes = tuple(args.suffix) if args.suffix else SUFFIXES
    with (DATA / "scifact" / "queries.jsonl").open(encoding="utf-8") as fh:
        claims = [str(json.loads(line)["text"]) for line in fh][: args.queries]
    rules: list[tuple[str, Callable[[FullTextQuery, bool], bool]]] = [("now", bm25.uses_topk)]
    if args.against_scored_required:
        rules.append(("scored", _scored_required))
    lists: dict[tuple[str, str], list[list[int]]] = {}
    with existing(args.data_dir) as (rt, _):
        try:
            for round_ in range(args.rounds + 1):
                for name, rule in rules if round_ % 2 else rules[::-1]:
                    bm25.uses_topk = rule
                    for suffix in suffixes:
                        ms: list[float] = []
                        for claim in claims:
                            t0 = time.perf_counter()
                            hits = search(
                                rt, claim + suffix, collection=COLLECTION, k=10, mode=args.mode
                            )
                            ms.append((time.perf_counter() - t0) * 1000)
                            if not round_:
                                lists.setdefault((name, suffix), []).append(
                                    [h.chunk_id for h in hits]
                                )
                        if round_:
                            ms.sort()
                            p90 = ms[int(len(ms) * 0.9)]
                            print(
                                f"round {round_} {name:6s} {suffix or '(none)':24s}"
                                f" p50 {statistics.median(ms):8.1f} ms  p90 {p90:8.1f} ms",
                                flush=True,
                            )
        finally:
            bm25.uses_topk = rules[0][1]
    if args.against_scored_required:
        for suffix in suffixes:
            now, before = lists[("now", suffix)], lists[("scored", suffix)]
            same = sum(a == b for a, b in zip(now, before, strict=True))
            print(f"{suffix or '(none)':24s} same top-10 lists {same} of {len(now)}")


if __name__ == "__main__":
    main()
