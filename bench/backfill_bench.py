"""Model-migration backfill throughput against the target model's raw encode throughput.

Ingests N SciFact abstracts into a fresh embedded database with the default model, then, in
one process: encodes the exact texts the backfill will embed with the target model (raw
throughput, timed before and after), runs ``migrate`` to the target model (backfill, sample
queries, switch), and times a rollback. Overhead = backfill time / mean raw encode time - 1.

    python -m bench.backfill_bench --docs 1000 --to all-MiniLM-L6-v2-256d --batch-size 256
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from psycopg import sql

from bench.ingest_bench import write_scifact
from ragstore.config import Settings
from ragstore.db.spaces import PendingChunk
from ragstore.ingest import ingest_paths
from ragstore.modelops import find_model, migrate, rollback
from ragstore.runtime import Runtime


def backfill_texts(rt: Runtime, collection: str) -> list[str]:
    """The texts the backfill sends to the target model, in its order."""
    coll = rt.collection(collection)
    with rt.db.connection() as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT c.id, c.text, c.context FROM {} e JOIN chunks c ON c.id = e.chunk_id"
                " ORDER BY e.chunk_id"
            ).format(sql.Identifier(coll.table))
        ).fetchall()
    return [PendingChunk(int(r[0]), r[1], r[2]).embed_text for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--docs", type=int, default=1000, help="SciFact documents to ingest")
    ap.add_argument("--to", default="all-MiniLM-L6-v2-256d", help="target model")
    ap.add_argument("--batch-size", type=int, default=256, help="chunks per committed batch")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ragstore-backfill-"))
    folder = work / "docs"
    folder.mkdir()
    write_scifact(folder, args.docs)
    rt = Runtime(Settings(data_dir=work / "data"))
    report = ingest_paths(rt, [folder], "bench")
    assert not report.failed, report.failed

    target = find_model(rt, args.to).spec
    embedder = rt.embedder(target)
    texts = backfill_texts(rt, "bench")
    embedder.embed(texts[:64])  # warm-up
    t0 = time.perf_counter()
    embedder.embed(texts)
    encode_1 = time.perf_counter() - t0

    mig = migrate(rt, "bench", args.to, batch_size=args.batch_size)
    assert mig.switched and mig.embedded == len(texts), (mig.embedded, len(texts))

    t0 = time.perf_counter()
    embedder.embed(texts)
    encode_2 = time.perf_counter() - t0
    encode = (encode_1 + encode_2) / 2

    t0 = time.perf_counter()
    rollback(rt, "bench")
    rollback_s = time.perf_counter() - t0

    n = len(texts)
    result = {
        "documents": len(report.outcomes),
        "chunks_backfilled": mig.embedded,
        "target": mig.target,
        "batch_size": args.batch_size,
        "batches": mig.batches,
        "raw_encode_s": round(encode, 2),
        "raw_encode_chunks_per_s": round(n / encode, 1),
        "migrate_s": round(mig.seconds, 2),
        "backfill_chunks_per_s": round(mig.embedded / mig.seconds, 1),
        "overhead_vs_encode": f"{(mig.seconds / encode - 1) * 100:.1f}%",
        "encode_share_of_migrate": f"{mig.encode_seconds / mig.seconds * 100:.1f}%",
        "sample_self_recall": round(mig.sample_self_recall, 2),
        "rollback_ms": round(rollback_s * 1000, 1),
    }
    print(json.dumps(result, indent=2))
    rt.close()


if __name__ == "__main__":
    main()
