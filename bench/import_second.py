"""An import into a collection that has rows: rebuilt on the side, or written through the
live index, timed in one run.

    PYTHONPATH=src:. python -m bench.import_second --records 20000 --more 20000 --rounds 2

On a fresh embedded database in a temporary folder, each round and each way makes a
collection of ``--records`` imported records (a first import: the bulk path), then times
an import of ``--more`` records into it: ``rebuild`` as ``ragstore import`` decides it
(at least ``ingest.staging.REBUILD_SHARE`` of the collection's vectors: staged with them,
indexed on the side, postings added at the end) and ``incremental`` with that share set
out of reach (every vector through the live HNSW graph, every round's postings through the
triggers), the order of the two swapped every round so that a drift in the machine's load
falls on both. Records are SciFact abstracts, repeated under new ids past its 5,183; the
vectors are 384-d and random in a 48-dimensional subspace plus a little noise, so that the
HNSW index reaches the import's recall check (purely random 384-d vectors sit near 0.93,
real embeddings well above it); even so an index grown insert by insert fell short of
0.95 at 50,000 + 50,000 where the one built at once passed, so both are checked at
``ef_search`` 200. No backup, 20 verification queries.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.scifact import records
from ragstore.config import Settings
from ragstore.imports.files import JsonlSource
from ragstore.imports.service import ImportOptions, plan_import, run_import
from ragstore.ingest import staging
from ragstore.runtime import Runtime

DIM = 384
SUBSPACE = 48


def write_source(path: Path, first: int, n: int, seed: int) -> Path:
    """``n`` records with ids from ``first``: SciFact texts in turn, clustered vectors."""
    docs = records()
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(0).standard_normal((SUBSPACE, DIM))
    vecs = rng.standard_normal((n, SUBSPACE)) @ basis + 0.3 * rng.standard_normal((n, DIM))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    with path.open("w") as fh:
        for i in range(n):
            doc = docs[(first + i) % len(docs)]
            row = {
                "id": f"r{first + i}",
                "text": f"{doc.get('title') or ''}\n{doc.get('text') or ''}",
                "vector": vecs[i].round(6).tolist(),
            }
            fh.write(json.dumps(row) + "\n")
    return path


def _import(rt: Runtime, name: str, path: Path) -> tuple[float, dict[str, float]]:
    opts = ImportOptions(
        collection=name,
        model="bench-model",
        dimension=DIM,
        backup=False,
        verify_queries=20,
        ef_search=200,
    )
    plan = plan_import(rt, JsonlSource(path), opts)
    t0 = time.perf_counter()
    report = run_import(rt, plan, opts)
    return time.perf_counter() - t0, {k: round(v, 2) for k, v in report.seconds.items()}


def run(n: int, more: int, rounds: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ragstore-import-second-"))
    share = staging.REBUILD_SHARE
    try:
        first = write_source(work / "first.jsonl", 0, n, 1)
        second = write_source(work / "second.jsonl", n, more, 2)
        rt = Runtime(Settings(data_dir=work / "data"))
        out: dict[str, Any] = {"records": n, "more": more, "rounds": []}
        try:
            for r in range(rounds):
                ways = ["rebuild", "incremental"]
                row: dict[str, Any] = {}
                for way in ways if r % 2 == 0 else ways[::-1]:
                    name = f"{way}-{r}"
                    _import(rt, name, first)
                    staging.REBUILD_SHARE = share if way == "rebuild" else float("inf")
                    try:
                        seconds, stages = _import(rt, name, second)
                    finally:
                        staging.REBUILD_SHARE = share
                    row[way] = {"seconds": round(seconds, 2), "stages": stages}
                    print(name, json.dumps(row[way]), flush=True)
                row["speedup"] = round(row["incremental"]["seconds"] / row["rebuild"]["seconds"], 2)
                out["rounds"].append(row)
        finally:
            rt.close()
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--records", type=int, default=20_000, help="the collection's first import")
    ap.add_argument("--more", type=int, default=20_000, help="the import timed into it")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if min(args.records, args.more, args.rounds) < 1:
        ap.error("--records, --more and --rounds must be at least 1")
    print(json.dumps(run(args.records, args.more, args.rounds), indent=1))


if __name__ == "__main__":
    main()
