"""The embedded server's ``shared_buffers``, paired: a second load and searches at each value.

A kept scale collection (``bench.scale --keep``) is started with each value in turn, one
after the other for ``--rounds`` rounds; each start loads ``--docs`` more documents of the
scale corpus through ``ingest_items`` (the incremental path: HNSW kept, BM25 postings by
the triggers; written as files under the bench's work folder) and then times the vector,
full-text and hybrid searches of ``--queries`` SciFact claims (query vectors cached, one
client). Same collection, same code, alternating values: the ratios between them are what
a run shows on a shared machine.

    python -m bench.server_memory /tmp/copy-of-data-100000 --values 128MB 2GB --rounds 2

It changes the data directory (documents are added; the value found at the start is set
again at the end): run it on a copy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import scale, scale_build
from ragstore.config import Settings
from ragstore.db import embedded
from ragstore.ingest import IngestReport
from ragstore.ingest.service import ingest_items
from ragstore.runtime import Runtime

FIRST_DOCUMENT = 5_000_000  # the added documents' numbers start past any kept collection's


def _set_shared_buffers(data_dir: Path, value: str | None) -> str:
    """Set (or with None keep) the server's ``shared_buffers`` and restart it; its value."""
    with Runtime(Settings(data_dir=data_dir)) as rt, rt.db.connect(autocommit=True) as conn:
        row = conn.execute("SHOW shared_buffers").fetchone()
        if value is not None:
            conn.execute(f"ALTER SYSTEM SET shared_buffers = '{value}'")
    embedded.stop(data_dir)
    return str(row[0]) if row else ""


def _one(data_dir: Path, first: int, docs: int, queries: list[str], work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with scale.existing(data_dir) as (rt, _coll):
        with rt.db.connection() as conn:
            out["shared_buffers"] = str(conn.execute("SHOW shared_buffers").fetchone()[0])  # type: ignore[index]
        folder = work / f"docs-{first}"
        items = scale_build.write_files(folder, first, first + docs, scale._records())
        report = IngestReport(collection=scale.COLLECTION)
        t0 = time.perf_counter()
        ingest_items(rt, scale.COLLECTION, items, report)
        seconds = time.perf_counter() - t0
        shutil.rmtree(folder, ignore_errors=True)
        out["load"] = {
            "chunks": report.chunks,
            "seconds": round(seconds, 1),
            "chunks_per_s": round(report.chunks / seconds, 1),
            "write_s": round(report.stages.get("write", 0.0), 1),
        }
        got = scale.measure(
            rt, queries, [1], recall_queries=0, only=["vector", "fulltext", "hybrid"]
        )
        out["p50_ms"] = {k.split("@")[0]: v["p50_ms"] for k, v in got["latency"].items()}
    embedded.stop(data_dir)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--values", nargs="+", default=["128MB", "2GB"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    queries = scale._queries(args.queries)
    before = _set_shared_buffers(args.data_dir, None)
    runs: list[dict[str, Any]] = []
    with scale.existing(args.data_dir) as (rt, coll), rt.db.connection() as conn:
        row = conn.execute("SELECT count(*) FROM documents WHERE collection_id = %s", (coll.id,))
        first = FIRST_DOCUMENT + int(row.fetchone()[0])  # type: ignore[index]  # new sources
    embedded.stop(args.data_dir)
    with tempfile.TemporaryDirectory(prefix="rs-mem-") as tmp:
        try:
            for r in range(args.rounds):
                for value in args.values:
                    _set_shared_buffers(args.data_dir, value)
                    run = {
                        "round": r,
                        "value": value,
                        **_one(args.data_dir, first, args.docs, queries, Path(tmp)),
                    }
                    first += args.docs
                    runs.append(run)
                    print(json.dumps(run), flush=True)
        finally:
            _set_shared_buffers(args.data_dir, before)
    summary: dict[str, Any] = {}
    for value in args.values:
        mine = [x for x in runs if x["value"] == value]
        summary[value] = {
            "chunks_per_s": statistics.median(x["load"]["chunks_per_s"] for x in mine),
            **{
                m: statistics.median(x["p50_ms"][m] for x in mine)
                for m in ("vector", "fulltext", "hybrid")
            },
        }
    print(json.dumps({"medians": summary}, indent=1))
    if args.out:
        args.out.write_text(json.dumps({"runs": runs, "medians": summary}, indent=1))


if __name__ == "__main__":
    main()
