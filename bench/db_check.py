"""How long ``ragstore db check`` takes, and its repairs, on a collection of some size.

    python -m bench.db_check --chunks 100000

Builds the corpus of ``bench.scale`` (about ``--chunks`` chunks of Markdown, the instant
embedding server pinned as the model) and loads it into a fresh data directory; times a
check of the healthy collection; then deletes 1% of its vectors and skews its full-text
statistics, times a check that finds both and the repair (the vectors re-embedded through
the server, the statistics recounted), and a last check. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.instant_embedder import InstantServer
from bench.scale import COLLECTION, instant_collection, write_corpus
from bench.scratch import discard
from ragstore.config import Settings
from ragstore.ingest import ingest_paths
from ragstore.integrity import CheckReport, check
from ragstore.runtime import Runtime


def _timed(rt: Runtime, repair: bool = False) -> tuple[float, CheckReport]:
    t0 = time.perf_counter()
    report = check(rt, COLLECTION, repair=repair)
    return round(time.perf_counter() - t0, 2), report


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--chunks", type=int, default=20_000, help="target stored chunks")
    ap.add_argument("--work", type=Path, help="where data and files go (default: a temp dir)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ragstore-db-check-"))
    folder = work / "docs"
    folder.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    with InstantServer() as server, Runtime(Settings(data_dir=work / "data")) as rt:
        coll = instant_collection(rt, server)
        result["documents"] = write_corpus(folder, args.chunks, rt, coll)
        report = ingest_paths(rt, [folder], COLLECTION)
        assert not report.failed, report.failed[:3]
        result["chunks"] = report.chunks
        seconds, healthy = _timed(rt)
        assert healthy.ok and not healthy.findings, healthy.findings
        result["check_healthy_s"] = seconds
        with rt.db.connection() as conn:
            cur = conn.execute(f"DELETE FROM {coll.table} WHERE chunk_id % 100 = 0")
            result["vectors_deleted"] = cur.rowcount
            conn.execute(
                "UPDATE bm25_collection_stats SET tokens = tokens + 1 WHERE collection_id = %s",
                (coll.id,),
            )
        seconds, broken = _timed(rt)
        result["check_broken_s"] = seconds
        result["found"] = [f.problem for f in broken.findings]
        seconds, repaired = _timed(rt, repair=True)
        result["check_and_repair_s"] = seconds
        assert repaired.ok
        seconds, after = _timed(rt)
        assert after.ok and not after.findings, after.findings
        result["check_after_s"] = seconds
    print(json.dumps(result))
    discard(work)


if __name__ == "__main__":
    main()
