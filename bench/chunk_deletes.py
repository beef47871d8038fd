"""What deleting chunks costs: documents one by one, and a whole collection.

Revision 0026 replaced each space table's foreign key to ``chunks`` (a cascade trigger per
deleted row) with one statement trigger on ``chunks`` (a query and a DELETE per space and
statement), and deleting a collection now drops its vector tables before its rows. This
bench times both on the same data, so that two trees can be compared (run it with one
tree's ``src`` on ``PYTHONPATH``, then the other's, alternating):

    PYTHONPATH=src python -m bench.chunk_deletes --chunks 20000 --deletes 300

It builds the corpus of ``bench.scale`` (about ``--chunks`` chunks of Markdown, the instant
embedding server pinned as the model), loads it twice into a fresh data directory
(the bench's collection and ``other``), then deletes ``--deletes`` documents of the
first one
transaction each (as ``ragstore documents delete`` and a changed file's re-ingest do),
and finally deletes that collection whole while ``other`` stays. It prints JSON: the schema
revision, per-document delete p50 and p90 in ms, and the collection delete in s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.instant_embedder import InstantServer
from bench.scale import COLLECTION, instant_collection, write_corpus
from bench.scratch import discard
from ragstore.config import Settings
from ragstore.db import catalog, documents, migrations, repository
from ragstore.ingest import ingest_paths
from ragstore.runtime import Runtime


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--chunks", type=int, default=20_000, help="chunks per collection")
    ap.add_argument("--deletes", type=int, default=300, help="documents deleted one by one")
    ap.add_argument("--work", type=Path, help="where data and files go (default: a temp dir)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ragstore-chunk-deletes-"))
    folder = work / "docs"
    folder.mkdir(parents=True, exist_ok=True)
    result: dict[str, object] = {}
    with InstantServer() as server, Runtime(Settings(data_dir=work / "data")) as rt:
        coll = instant_collection(rt, server)  # the bench's collection, pinned to the server
        result["documents"] = write_corpus(folder, args.chunks, rt, coll)
        with rt.db.connection() as conn:  # a second collection on the same model
            repository.create_collection(conn, "other", coll.model)
        for name in (COLLECTION, "other"):
            report = ingest_paths(rt, [folder], name)
            assert not report.failed, report.failed[:3]
        result["revision"] = migrations.status(rt.db).current
        a = rt.collection(COLLECTION)
        with rt.db.connection() as conn:
            sources = [
                str(r[0])
                for r in conn.execute(
                    "SELECT source FROM documents WHERE collection_id = %s ORDER BY id LIMIT %s",
                    (a.id, args.deletes),
                )
            ]
            row = conn.execute(
                "SELECT count(*) FROM chunks WHERE collection_id = %s", (a.id,)
            ).fetchone()
            result["chunks"] = row[0] if row else 0
        times: list[float] = []
        for source in sources:
            t0 = time.perf_counter()
            with rt.db.connection() as conn:
                documents.delete_documents(conn, a.id, [source])
            times.append(1000 * (time.perf_counter() - t0))
        times.sort()
        result["document_delete_ms"] = {
            "p50": round(statistics.median(times), 2),
            "p90": round(times[int(0.9 * (len(times) - 1))], 2),
        }
        t0 = time.perf_counter()
        with rt.db.connection() as conn:
            catalog.delete_collection(conn, a)
        result["collection_delete_s"] = round(time.perf_counter() - t0, 3)
    print(json.dumps(result))
    discard(work)


if __name__ == "__main__":
    main()
