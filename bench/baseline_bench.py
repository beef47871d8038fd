"""Basic store (brute-force NumPy) against ragstore's HNSW search, and bytes per vector.

For each size N: the vectors of :mod:`bench.baseline_data` (real MiniLM vectors of SciFact
chunks, then noisy re-normalised copies of them above the real count) are

* searched as a basic store does: the whole float32 matrix in memory, one matrix-vector
  product and an argpartition per query (the exact top 10 is also the ground truth);
* imported into ragstore with ``ragstore.imports`` (one transaction, HNSW built after the
  load, verification on), then searched with ragstore's own hit query (HNSW top 10 joined
  to chunks and documents) at increasing ``hnsw.ef_search`` until recall@10 >= 0.95;
* copied to a ``halfvec`` table with its own HNSW index, searched the same way, and the
  bytes per vector of both (heap + index) read from PostgreSQL.

Queries are the SciFact test queries embedded with the same model (query embedding time is
left out on both sides: both are given the query vector). One client, one query at a time.

    python -m bench.baseline_bench --sizes 10000 100000 --queries 200
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from bench.baseline_data import CACHE, Matrix, real_vectors, synthetic
from ragstore.config import Settings
from ragstore.imports import ImportOptions, Record, plan_import, run_import
from ragstore.runtime import Runtime

EF_STEPS = (40, 64, 100, 160, 256, 400, 600, 800, 1000)
TARGET = 0.95

HIT_SQL = (
    "WITH nn AS (SELECT chunk_id, embedding {op} %(q)s AS distance FROM {t}"
    " ORDER BY embedding {op} %(q)s LIMIT 10)"
    " SELECT c.id, d.source, c.text, nn.distance FROM nn JOIN chunks c ON c.id = nn.chunk_id"
    " JOIN documents d ON d.id = c.document_id ORDER BY nn.distance"
)


class ArraySource:
    """The benchmark's vectors as an import source (ids r0.., the parent chunk's text)."""

    def __init__(self, vectors: Matrix, texts: list[str]) -> None:
        self.vectors = vectors
        self.texts = texts

    @property
    def description(self) -> str:
        return f"benchmark matrix ({len(self.vectors)} x {self.vectors.shape[1]})"

    def records(self) -> Iterator[Record]:
        for i, vec in enumerate(self.vectors):
            yield Record(f"r{i}", self.texts[i % len(self.texts)], vec, {})


def brute_force(matrix: Matrix, queries: Matrix, k: int = 10) -> tuple[np.ndarray, list[float]]:
    """Exact top k per query, one query at a time; returns (ids, per-query seconds)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    times = []
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        scores = matrix @ q
        top = np.argpartition(-scores, k)[:k]
        out[i] = top[np.argsort(-scores[top])]
        times.append(time.perf_counter() - t0)
    return out, times


def summary(times: list[float]) -> dict[str, float]:
    ms = sorted(t * 1000 for t in times)
    return {
        "qps": len(ms) / (sum(ms) / 1000),
        "p50_ms": statistics.median(ms),
        "p95_ms": ms[int(0.95 * (len(ms) - 1))],
    }


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t.tolist())) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def pg_search(
    conn: psycopg.Connection[Any],
    table: str,
    queries: Matrix,
    ef: int,
    cast: str,
    id_of: dict[int, int],
) -> tuple[list[list[int]], list[float]]:
    conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(ef)))
    op = sql.SQL("<=>")
    qexpr = sql.SQL("%(q)s") if cast == "vector" else sql.SQL("%(q)s::halfvec")
    stmt = sql.SQL(HIT_SQL.replace("%(q)s", "{q}")).format(op=op, t=sql.Identifier(table), q=qexpr)
    for q in queries[:20]:  # warm-up
        conn.execute(stmt, {"q": q}).fetchall()
    found, times = [], []
    for q in queries:
        t0 = time.perf_counter()
        rows = conn.execute(stmt, {"q": q}).fetchall()
        times.append(time.perf_counter() - t0)
        found.append([id_of[int(r[0])] for r in rows])
    return found, times


def sizes_of(conn: psycopg.Connection[Any], table: str, index: str, n: int) -> dict[str, float]:
    row = conn.execute(
        "SELECT pg_table_size(%s::regclass), pg_relation_size(%s::regclass)", (table, index)
    ).fetchone()
    assert row is not None
    heap, idx = int(row[0]), int(row[1])
    return {
        "heap_bytes_per_vector": heap / n,
        "index_bytes_per_vector": idx / n,
        "total_bytes_per_vector": (heap + idx) / n,
    }


def sweep(
    conn: psycopg.Connection[Any],
    table: str,
    queries: Matrix,
    truth: np.ndarray,
    cast: str,
    id_of: dict[int, int],
) -> list[dict[str, float]]:
    rows = []
    for ef in EF_STEPS:
        found, times = pg_search(conn, table, queries, ef, cast, id_of)
        r = recall(found, truth)
        rows.append({"ef_search": ef, "recall_at_10": r, **summary(times)})
        print(
            f"    {cast:<7} ef_search {ef:>3}: recall@10 {r:.3f}, "
            f"{rows[-1]['qps']:.0f} q/s, p50 {rows[-1]['p50_ms']:.2f} ms",
            flush=True,
        )
        if r >= TARGET:
            break
    return rows


def run_size(
    n: int,
    base: Matrix,
    texts: list[str],
    queries: Matrix,
    work: Path,
    halfvec: bool,
    mem: str,
    verify_ef: int | None,
) -> dict[str, Any]:
    print(f"== {n} vectors", flush=True)
    matrix = synthetic(base, n)
    truth, bf_times = brute_force(matrix, queries[:20])  # warm-up
    truth, bf_times = brute_force(matrix, queries)
    result: dict[str, Any] = {
        "n": n,
        "real": min(n, len(base)),
        "load_average_at_start": os.getloadavg()[0],
        "basic": {
            **summary(bf_times),
            "recall_at_10": 1.0,
            "bytes_per_vector": matrix.shape[1] * 4,
        },
    }
    print(
        f"  basic store: {result['basic']['qps']:.1f} q/s, p50 {result['basic']['p50_ms']:.2f} ms",
        flush=True,
    )
    settings = Settings(data_dir=work / f"pg{n}", profile="test", model="all-MiniLM-L6-v2")
    with Runtime(settings) as rt:
        opts = ImportOptions(
            collection=f"bench{n}",
            model="all-MiniLM-L6-v2",
            backup=False,
            maintenance_work_mem=mem,
            ef_search=verify_ef,
        )
        t0 = time.perf_counter()
        plan = plan_import(rt, ArraySource(matrix, texts), opts)
        report = run_import(rt, plan, opts)
        total = time.perf_counter() - t0
        v = report.verification
        result["import"] = {
            "seconds_total": total,
            **{f"seconds_{k}": s for k, s in report.seconds.items()},
            "verified": v.ok,
            "verify_recall_at_10": v.recall_at_10,
            "checksum_equal": v.checksum_ok,
        }
        print(
            f"  import: {total:.0f}s ({report.seconds}); verification ok={v.ok}, "
            f"recall@10 {v.recall_at_10:.3f}",
            flush=True,
        )
        with psycopg.connect(rt.db.conninfo, autocommit=True) as conn:
            from pgvector.psycopg import register_vector

            register_vector(conn)
            table = rt.collection(f"bench{n}").table
            id_of = {
                int(r[0]): int(str(r[1])[1:])
                for r in conn.execute(
                    "SELECT c.id, d.source FROM chunks c JOIN documents d ON d.id = c.document_id"
                )
            }
            result["vector"] = {
                "sweep": sweep(conn, table, queries, truth, "vector", id_of),
                **sizes_of(conn, table, f"{table}_hnsw", n),
            }
            if halfvec:
                t0 = time.perf_counter()
                conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(mem)))
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE half AS SELECT chunk_id, embedding::"
                        "halfvec(384) AS embedding FROM {}"
                    ).format(sql.Identifier(table))
                )
                conn.execute(
                    "CREATE INDEX half_hnsw ON half USING hnsw (embedding halfvec_cosine_ops)"
                )
                build = time.perf_counter() - t0
                result["halfvec"] = {
                    "build_seconds": build,
                    "sweep": sweep(conn, "half", queries, truth, "halfvec", id_of),
                    **sizes_of(conn, "half", "half_hnsw", n),
                }
    result["load_average_at_end"] = os.getloadavg()[0]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--no-halfvec", action="store_true")
    ap.add_argument(
        "--verify-ef-search",
        type=int,
        default=None,
        help="hnsw.ef_search of the import's own verification (default 100)",
    )
    ap.add_argument(
        "--maintenance-work-mem",
        default="2GB",
        help="for the HNSW builds (the graph should fit in it)",
    )
    ap.add_argument("--out", type=Path, default=CACHE / "results.json")
    args = ap.parse_args()
    base, qvecs = real_vectors()
    texts = json.loads((CACHE / "scifact_chunks.json").read_text())
    queries = qvecs[: args.queries]
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    # the embedded servers stop when this process exits, after the directory cleanup
    with tempfile.TemporaryDirectory(prefix="ragstore-bench-", ignore_cleanup_errors=True) as tmp:
        for n in args.sizes:
            results[str(n)] = run_size(
                n,
                base,
                texts,
                queries,
                Path(tmp),
                not args.no_halfvec,
                args.maintenance_work_mem,
                args.verify_ef_search,
            )
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
