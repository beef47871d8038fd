"""Search quality per mode on a BEIR dataset (default: SciFact), tuned on train only.

    RAGSTORE_DATA_DIR=/work/bench-data python -m bench.search_quality \
        --data ../shared/data/scifact --tune-queries 400

1. Ingests the corpus into the cached scratch collection ``eval-<dataset>`` (minutes on
   CPU the first time, nothing afterwards).
2. ``--tune-queries N``: on the first N queries of ``qrels/train.tsv``, fetches each
   query's vector and full-text chunk lists once and fuses them in Python with
   :func:`ragstore.search.rrf` (the rule the SQL implements; a test checks they agree)
   over a grid of RRF constants and full-text weights; picks the best nDCG@10.
3. Scores every mode on ``qrels/test.tsv`` with the defaults and, for hybrid, with the
   tuned fusion too, through the real one-statement SQL path; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

from ragstore.runtime import Runtime
from ragstore.search import FusionParams, rrf
from ragstore.search.eval import (
    CHUNKS_PER_QUERY,
    DOCS_PER_QUERY,
    collection_name,
    evaluate,
    ingest_records,
    load_beir,
    score_run,
)
from ragstore.search.hybrid import DEFAULT_RRF_K
from ragstore.search.service import SearchParams, run

RRF_KS = (10, 20, 40, 60, 100)
FT_WEIGHTS = (0.8, 1.0, 1.2, 1.5, 2.0)


def _docs(chunk_sources: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for s in chunk_sources:
        seen.setdefault(s, None)
    return list(seen)[:DOCS_PER_QUERY]


def tune(rt: Runtime, data: Path, collection: str, n: int) -> tuple[float, float, float]:
    train = load_beir(data, "train")
    qids = list(train.qrels)[:n]
    qrels = {q: train.qrels[q] for q in qids}
    lists: dict[str, tuple[list[int], list[int]]] = {}
    source: dict[int, str] = {}
    depth = max(CHUNKS_PER_QUERY, 100)
    t0 = time.perf_counter()
    for q in qids:
        got = []
        for mode in ("vector", "fulltext"):
            # plain, as the scored runs (evaluate): prose, not query syntax
            params = SearchParams(k=depth, mode=mode, plain=True)
            hits = run(rt, train.queries[q], collection, params)
            source.update((h.chunk_id, h.source) for h in hits)
            got.append([h.chunk_id for h in hits])
        lists[q] = (got[0], got[1])
    print(f"tuning: {len(qids)} train queries fetched in {time.perf_counter() - t0:.0f}s")
    best = (0.0, 60.0, 1.0)
    for k, wf in itertools.product(RRF_KS, FT_WEIGHTS):
        fused = {
            q: _docs([source[c] for c, _ in rrf(list(lists[q]), k=k, weights=[1.0, wf])])
            for q in qids
        }
        ndcg = score_run(fused, qrels)["ndcg@10"]
        print(f"  rrf k={k:<4g} fulltext weight={wf:<4g} nDCG@10={ndcg:.4f}")
        if ndcg > best[0]:
            best = (ndcg, float(k), wf)
    print(f"best on train: k={best[1]:g}, fulltext weight={best[2]:g}, nDCG@10={best[0]:.4f}")
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    ap.add_argument(
        "--tune-queries",
        type=int,
        default=0,
        help="train queries used to tune the fusion (0: no tuning)",
    )
    args = ap.parse_args()
    ds = load_beir(args.data, "test")
    name = collection_name(ds.name)
    with Runtime() as rt:
        t0 = time.perf_counter()
        added = ingest_records(rt, name, [(i, t, x) for i, (t, x) in ds.corpus.items()])
        print(
            f"{name}: {len(ds.corpus)} documents, {added} ingested now "
            f"({time.perf_counter() - t0:.0f}s)"
        )
        results = evaluate(rt, ds, name)
        rows = [
            (r.mode, f"defaults: k={DEFAULT_RRF_K:g}, weights 1/1" if r.mode == "hybrid" else "", r)
            for r in results
        ]
        customary = evaluate(rt, ds, name, ["hybrid"], fusion=FusionParams(k=60))[0]
        rows.append(("hybrid", "k=60 (the customary constant), weights 1/1", customary))
        if args.tune_queries:
            _, k, wf = tune(rt, args.data, name, args.tune_queries)
            fusion = FusionParams(k=k, fulltext_weight=wf)
            tuned = evaluate(rt, ds, name, ["hybrid"], fusion=fusion)[0]
            rows.append(("hybrid", f"tuned on train: k={k:g}, full-text weight {wf:g}", tuned))
    print(f"\n{ds.name} test split, {len(ds.qrels)} queries\n")
    print("| mode | settings | nDCG@10 | Recall@100 | MRR@10 | ms/query |")
    print("|---|---|---|---|---|---|")
    for mode, note, r in rows:
        m = r.metrics
        print(
            f"| {mode} | {note} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} | "
            f"{m['mrr@10']:.4f} | {r.ms_per_query:.0f} |"
        )


if __name__ == "__main__":
    main()
