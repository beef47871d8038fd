"""HNSW recall@10 against exact search, queries/s, and filtered recall by selectivity.

    RAGSTORE_DATA_DIR=/work/bench-data python -m bench.hnsw_bench --size 100000

Vectors: the real all-MiniLM-L6-v2 chunk vectors of the SciFact corpus, read from the
``eval-scifact`` collection that ``bench.search_quality`` ingests (about 9k), grown to
``--size`` with synthetic neighbours because embedding 100k real chunks takes hours on
this project's 2 CPU cores: each extra vector is ``normalize(v_i + 0.3 * v_j + noise)``
for random real chunks i, j and Gaussian noise of sigma 0.03 per dimension (cosine about
0.85 to v_i, close to how near real neighbours sit). Queries: the 300 SciFact test claims,
embedded by the same model. Ground truth: exact cosine top-10 in numpy.

Each vector gets a random ``tag`` in 0..99; ``tag < 1``, ``tag < 10`` and ``tag < 50``
are 1%, 10% and 50% selective filters. The SQL is the search service's vector list
(``ORDER BY embedding <=> q LIMIT k`` on an HNSW ``vector_cosine_ops`` index, m=16,
ef_construction=64, pgvector defaults), run on one connection, one query at a time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from ragstore.runtime import Runtime
from ragstore.search.eval import load_beir

TABLE = "bench_hnsw"


def real_vectors(rt: Runtime, collection: str) -> np.ndarray:
    coll = rt.collection(collection)
    with rt.db.connection() as conn:
        rows = conn.execute(
            sql.SQL("SELECT embedding FROM {} ORDER BY chunk_id").format(sql.Identifier(coll.table))
        ).fetchall()
    return np.stack([np.asarray(r[0].to_numpy(), dtype=np.float32) for r in rows])


def grow(real: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    extra = size - len(real)
    if extra <= 0:
        return real[:size]
    i = rng.integers(0, len(real), extra)
    j = rng.integers(0, len(real), extra)
    synth = real[i] + 0.3 * real[j] + rng.normal(0, 0.03, (extra, real.shape[1])).astype(np.float32)
    synth /= np.linalg.norm(synth, axis=1, keepdims=True)
    return np.concatenate([real, synth.astype(np.float32)])


def exact_top(
    vectors: np.ndarray, queries: np.ndarray, mask: np.ndarray | None, k: int = 10
) -> list[set[int]]:
    sims = queries @ vectors.T
    if mask is not None:
        sims[:, ~mask] = -np.inf
    top = np.argpartition(-sims, k, axis=1)[:, :k]
    return [set(int(x) for x in row) for row in top]


def load(
    conn: psycopg.Connection[tuple[object, ...]], vectors: np.ndarray, tags: np.ndarray
) -> float:
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(TABLE)))
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (id bigint PRIMARY KEY, tag int NOT NULL,"
            " embedding vector({}) NOT NULL)"
        ).format(sql.Identifier(TABLE), sql.Literal(vectors.shape[1]))
    )
    with conn.cursor().copy(
        sql.SQL("COPY {} (id, tag, embedding) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(TABLE)
        )
    ) as copy:
        copy.set_types(["int8", "int4", "vector"])
        for i, (tag, vec) in enumerate(zip(tags, vectors, strict=True)):
            copy.write_row((i, int(tag), vec))
    conn.execute("SET maintenance_work_mem = '1GB'")
    t0 = time.perf_counter()
    conn.execute(
        sql.SQL("CREATE INDEX ON {} USING hnsw (embedding vector_cosine_ops)").format(
            sql.Identifier(TABLE)
        )
    )
    conn.execute(sql.SQL("CREATE INDEX ON {} (tag)").format(sql.Identifier(TABLE)))
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(TABLE)))
    return time.perf_counter() - t0


def run_queries(
    conn: psycopg.Connection[tuple[object, ...]],
    queries: np.ndarray,
    ef: int,
    where: int | None,
    iterative: bool,
    k: int = 10,
) -> tuple[list[set[int]], float]:
    conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", (str(ef),))
    conn.execute(
        "SELECT set_config('hnsw.iterative_scan', %s, false)",
        ("relaxed_order" if iterative else "off",),
    )
    cond = (
        sql.SQL("WHERE tag < {}").format(sql.Literal(where)) if where is not None else sql.SQL("")
    )
    stmt = sql.SQL(
        "SELECT id FROM (SELECT id, embedding <=> %s AS d FROM {} {}"
        " ORDER BY embedding <=> %s LIMIT %s) x ORDER BY d"
    ).format(sql.Identifier(TABLE), cond)
    out = []
    t0 = time.perf_counter()
    for q in queries:
        out.append({int(r[0]) for r in conn.execute(stmt, (q, q, k))})
    return out, time.perf_counter() - t0


def recall(got: list[set[int]], truth: list[set[int]]) -> float:
    return float(np.mean([len(g & t) / len(t) for g, t in zip(got, truth, strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--collection", default="eval-scifact")
    args = ap.parse_args()
    with Runtime() as rt:
        real = real_vectors(rt, args.collection)
        ds = load_beir(args.data, "test")
        coll = rt.collection(args.collection)
        queries = rt.embedder_for(coll).embed(list(ds.queries.values()))
        conninfo = rt.db.conninfo
    vectors = grow(real, args.size)
    tags = np.random.default_rng(1).integers(0, 100, len(vectors))
    print(
        f"{len(real)} real SciFact chunk vectors grown to {len(vectors)}; "
        f"{len(queries)} real queries"
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        register_vector(conn)
        build = load(conn, vectors, tags)
        print(f"HNSW build (m=16, ef_construction=64): {build:.0f}s\n")
        truth = exact_top(vectors, queries, None)
        print("| ef_search | recall@10 | queries/s |")
        print("|---|---|---|")
        for ef in (40, 100, 200):
            run_queries(conn, queries[:20], ef, None, True)  # warm the cache
            got, secs = run_queries(conn, queries, ef, None, True)
            print(f"| {ef} | {recall(got, truth):.4f} | {len(queries) / secs:.0f} |")
        print(
            "\n| filter | selectivity | iterative scan | recall@10 | queries with < 10 hits "
            "| queries/s |"
        )
        print("|---|---|---|---|---|---|")
        for where in (1, 10, 50):
            ftruth = exact_top(vectors, queries, tags < where)
            for iterative in (False, True):
                got, secs = run_queries(conn, queries, 100, where, iterative)
                short = sum(1 for g in got if len(g) < 10)
                print(
                    f"| tag < {where} | {where}% | {'relaxed_order' if iterative else 'off'} "
                    f"| {recall(got, ftruth):.4f} | {short} | {len(queries) / secs:.0f} |"
                )
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(TABLE)))


if __name__ == "__main__":
    main()
