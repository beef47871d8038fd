"""One HNSW build over synthetic vectors, with each maintenance_work_mem and worker count.

    python -m bench.hnsw_build --rows 135000 --memory 256MB 1GB --workers 1
    python -m bench.hnsw_build --rows 135000 --memory 1GB --workers 1 0

Writes ``--rows`` unit vectors of 384 dimensions (200 clusters, so the graph is not
trivial) into a table of a fresh embedded server under ``--data-dir``, then builds the same
index as a bulk load does (``vector_cosine_ops``, pgvector's default m and ef_construction)
once per combination, printing its seconds and any notice from pgvector: "hnsw graph no
longer fits into maintenance_work_mem after N tuples" says where the in-memory phase
ended. ``--workers 0`` is the one-process build ragstore falls back to when the server's
shared memory cannot hold a parallel one (``spaces.ensure_index``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ragstore.db import embedded


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rows", type=int, default=135_000)
    ap.add_argument("--memory", nargs="+", default=["256MB"])
    ap.add_argument("--workers", type=int, nargs="+", default=[1])
    ap.add_argument("--data-dir", type=Path, help="default: a temporary folder")
    args = ap.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="ragstore-hnsw-build-"))
    import psycopg

    uri = embedded.start(data_dir)
    try:
        with psycopg.connect(uri) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute("DROP TABLE IF EXISTS hnsw_build")
            conn.execute("CREATE TABLE hnsw_build (id bigint, embedding vector(384))")
            rng = np.random.default_rng(1)
            centers = rng.standard_normal((200, 384)).astype(np.float32)
            with conn.cursor() as cur, cur.copy("COPY hnsw_build FROM STDIN") as copy:
                for i in range(args.rows):
                    v = centers[i % 200] + 0.5 * rng.standard_normal(384).astype(np.float32)
                    v /= np.linalg.norm(v)
                    copy.write_row((i, "[" + ",".join(f"{x:.6f}" for x in v) + "]"))
            conn.commit()
            heap = conn.execute("SELECT pg_table_size('hnsw_build')").fetchone()
            notices: list[str] = []
            conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
            for memory in args.memory:
                for workers in args.workers:
                    notices.clear()
                    conn.execute(f"SET maintenance_work_mem = '{memory}'")
                    conn.execute(f"SET max_parallel_maintenance_workers = {int(workers)}")
                    conn.execute(f"ALTER TABLE hnsw_build SET (parallel_workers = {int(workers)})")
                    t0 = time.perf_counter()
                    conn.execute(
                        "CREATE INDEX hnsw_build_idx ON hnsw_build"
                        " USING hnsw (embedding vector_cosine_ops)"
                    )
                    seconds = time.perf_counter() - t0
                    conn.rollback()  # the next build starts from the same table
                    result = {
                        "rows": args.rows,
                        "heap_mb": round(int(heap[0]) / 1e6, 1) if heap else None,
                        "memory": memory,
                        "workers": workers,
                        "build_s": round(seconds, 2),
                        "notices": [n for n in notices if "hnsw" in n],
                    }
                    print(json.dumps(result), flush=True)
    finally:
        embedded.stop(data_dir)
        embedded.release(data_dir)


if __name__ == "__main__":
    main()
