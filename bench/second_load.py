"""A later load into a kept ``bench.scale`` collection: the incremental write path, timed.

    python -m bench.second_load /tmp/scale/data-100000 --docs 2000 --first 40000

A first load into an empty collection takes the bulk path (COPY, then BM25 and HNSW built
once); any later load writes round by round into the live indexes: the HNSW inserts, the
chunk row trigger (the tsvector) and the BM25 statement triggers (document frequencies,
postings at the current average length, list trims). This writes the corpus's documents
``--first`` to ``--first + --docs - 1`` as Markdown files (``bench.scale_build``'s
documents, new to a collection built from the first ones), ingests them into the
collection with the instant embedding server, and prints chunks/s and the ingest's stage
times. With ``--functions`` it turns on ``track_functions`` (``ALTER SYSTEM``: it stays on
in that data directory) and prints what each trigger function took during the load
(``pg_stat_user_functions`` before and after).

A load of at least a quarter of the bytes the collection holds takes the bulk path instead
(``ingest.service.BulkLoad.REBUILD``: the collection's vectors staged with the load's and
indexed anew, BM25 rewritten); ``--incremental`` keeps such a load on the round-by-round
path, for the comparison (``path`` in the output says which ran):

    cp -a /tmp/scale/data-100000 /tmp/a && python -m bench.second_load /tmp/a --docs 17000
    cp -a /tmp/scale/data-100000 /tmp/b && python -m bench.second_load /tmp/b --docs 17000 \
        --incremental

The collection keeps the documents: copy the data directory first to measure it again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import scale_build
from bench.scale import COLLECTION, _records, existing
from ragstore.ingest import staging
from ragstore.ingest.service import IngestReport, ingest_items


def _functions(rt: Any) -> dict[str, tuple[int, float]]:
    """Each PL/pgSQL function's calls and seconds so far (``track_functions`` on from now)."""
    with rt.db.connect(autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET track_functions = 'pl'")
        conn.execute("SELECT pg_reload_conf()")
        rows = conn.execute(
            "SELECT funcname, calls, total_time / 1000 FROM pg_stat_user_functions"
        ).fetchall()
    return {str(r[0]): (int(r[1]), float(r[2])) for r in rows}


def _spent(before: dict[str, tuple[int, float]], after: dict[str, tuple[int, float]]) -> Any:
    """What each function took between the two readings, the costliest first."""
    spent = [
        (name, calls - before.get(name, (0, 0.0))[0], round(s - before.get(name, (0, 0.0))[1], 2))
        for name, (calls, s) in after.items()
    ]
    return sorted((row for row in spent if row[1]), key=lambda row: -row[2])[:10]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, help="a data directory bench.scale --keep left")
    parser.add_argument("--docs", type=int, default=2000, help="documents to add")
    parser.add_argument("--first", type=int, default=40_000, help="the first one's number")
    parser.add_argument("--functions", action="store_true", help="time the trigger functions")
    parser.add_argument(
        "--incremental",
        action="store_true",
        help="write round by round even where the load would rebuild (bulk_load_bytes=0)",
    )
    parser.add_argument(
        "--rebuild-share",
        type=float,
        help="the share of the stored bytes from which a load rebuilds (default: "
        "ingest.staging.REBUILD_SHARE), to find where the two paths break even",
    )
    args = parser.parse_args(argv)
    if args.rebuild_share is not None:
        staging.REBUILD_SHARE = args.rebuild_share
    folder = Path(tempfile.mkdtemp(prefix="ragstore-second-load-"))
    try:
        out = _load(args, folder)
    finally:  # the files written (up to hundreds of MB); the collection keeps their text
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(out, indent=1), flush=True)


def _load(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Write the documents into ``folder`` and ingest them; the figures."""
    with existing(args.data_dir) as (rt, _):
        items = scale_build.write_files(folder, args.first, args.first + args.docs, _records())
        if args.incremental:
            rt.settings = rt.settings.model_copy(update={"bulk_load_bytes": 0})
        before = _functions(rt) if args.functions else {}
        report = IngestReport(collection=COLLECTION)
        t0 = time.perf_counter()
        ingest_items(rt, COLLECTION, items, report)
        took = time.perf_counter() - t0
        out: dict[str, Any] = {
            "documents": args.docs,
            # a load of a quarter of the collection or more rebuilds it (ingest.service.BulkLoad)
            "path": "rebuild" if "attach" in report.stages else "incremental",
            "chunks": report.chunks,
            "seconds": round(took, 2),
            "chunks_per_s": round(report.chunks / took, 1),
            "stages_s": {k: round(v, 2) for k, v in report.stages.items()},
        }
        if args.functions:
            time.sleep(11)  # an idle session reports its statistics within 10 s (PG 15+)
            out["functions_s"] = _spent(before, _functions(rt))
    return out


if __name__ == "__main__":
    main()
