"""Full-text latency of a small collection with and without BM25 postings (revision 0015).

For each size N, the first N SciFact abstracts are imported (8-d random vectors: only the
text matters here) twice: into a collection whose postings are deferred (the default below
``postings_from``) and into one built with postings (``postings_from`` 0). The first 300
SciFact queries then run through ``ragstore_bm25_topk`` on both, right after the import and
again after ``VACUUM ANALYZE`` (what autovacuum does a minute later); p50/p90/p99 in ms, and
whether both collections return the same scores.

    PYTHONPATH=src:. python -m bench.fulltext_deferred --docs 1000,2000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from psycopg import sql

from bench.scifact import SCIFACT, records
from ragstore.config import Settings
from ragstore.imports.files import JsonlSource
from ragstore.imports.service import ImportOptions, plan_import, run_import
from ragstore.runtime import Runtime

POSTINGS_FROM = 2500  # revision 0015's default
_DEFAULT = sql.SQL("ALTER TABLE bm25_collection_stats ALTER COLUMN postings_from SET DEFAULT {}")


def _source(work: Path, n: int) -> Path:
    path = work / f"scifact-{n}.jsonl"
    rng = np.random.default_rng(0)
    with path.open("w") as fh:
        for r in records(n):
            v = rng.standard_normal(8)
            text = f"{r.get('title') or ''}\n{r.get('text') or ''}"
            fh.write(json.dumps({"id": str(r["_id"]), "text": text, "vector": v.tolist()}) + "\n")
    return path


def _import(rt: Runtime, name: str, path: Path, postings_from: int) -> int:
    with rt.db.connection() as conn:
        conn.execute(_DEFAULT.format(sql.Literal(postings_from)))
    opts = ImportOptions(collection=name, model="bench-8d", dimension=8, backup=False)
    run_import(rt, plan_import(rt, JsonlSource(path), opts), opts)
    with rt.db.connection() as conn:
        conn.execute(_DEFAULT.format(sql.Literal(POSTINGS_FROM)))
        row = conn.execute("SELECT id FROM collections WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def _latency(rt: Runtime, cid: int, queries: list[str]) -> tuple[dict[str, float], list[Any]]:
    times, lists = [], []
    with rt.db.connection() as conn:
        for q in queries:
            t0 = time.perf_counter()
            rows = conn.execute(
                "SELECT * FROM ragstore_bm25_topk(%s, 'english', %s, 10, 1.2, 0.75)", (cid, q)
            ).fetchall()
            times.append((time.perf_counter() - t0) * 1000)
            lists.append(rows)
    times.sort()
    pct = {p: round(times[min(len(times) - 1, int(len(times) * p / 100))], 2) for p in (50, 90, 99)}
    return {f"p{p}": v for p, v in pct.items()}, lists


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--docs", default="1000,2000", help="collection sizes, comma-separated")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ragstore-ft-deferred-"))
    rt = Runtime(Settings(data_dir=work / "data"))
    with (SCIFACT / "queries.jsonl").open(encoding="utf-8") as fh:
        queries = [str(json.loads(line)["text"]) for line in fh][:300]
    out: dict[str, Any] = {}
    for n in (int(x) for x in args.docs.split(",")):
        path = _source(work, n)
        ids = {
            "deferred": _import(rt, f"d{n}", path, POSTINGS_FROM),
            "postings": _import(rt, f"p{n}", path, 0),
        }
        res: dict[str, Any] = {}
        for vacuumed in (False, True):
            if vacuumed:
                with rt.db.connection() as conn:
                    conn.autocommit = True
                    for t in ("chunks", "bm25_terms", "bm25_postings"):
                        conn.execute(f"VACUUM ANALYZE {t}")
            lists = {}
            for label, cid in ids.items():
                res[f"{label}{'_vacuumed' if vacuumed else ''}"], lists[label] = _latency(
                    rt, cid, queries
                )
            # chunk ids differ between the two collections; the scores are bit-identical
            res["same_scores" + ("_vacuumed" if vacuumed else "")] = [
                [r[1] for r in a] for a in lists["deferred"]
            ] == [[r[1] for r in b] for b in lists["postings"]]
        out[str(n)] = res
        print(json.dumps({n: res}), flush=True)
    rt.close()


if __name__ == "__main__":
    main()
