"""Where a bulk load's time goes after parsing: the BM25 build, the chunk writes and the
HNSW build, step by step, on a collection a ``bench.scale --keep`` run left behind.

    python -m bench.build_steps /tmp/scale/data-100000 bm25
    python -m bench.build_steps /tmp/scale/data-100000 writes --rows 30000
    python -m bench.build_steps /tmp/scale/data-100000 hnsw --memory 256MB 2GB
    python -m bench.build_steps /tmp/scale/data-100000 hnsw-precision --rounds 2

Every step runs in a transaction that is rolled back: the collection is left as it was.

- ``bm25``: ``ragstore_bm25_bulk_finish`` whole, as a bulk load ends (``documents.
  finish_bulk``; on a kept collection it first deletes the postings it rewrites, which a
  first load does not), then its pieces alone: the document frequencies, the postings' select
  unsorted and sorted into list order, the heap insert, the list index and the chunk
  index (the statements of revision 0013's ``ragstore_bm25_write_postings``, at the
  collection's own k1, b, average length and list depth).
- ``writes``: ``--rows`` of the collection's chunks written again (copies under new
  ordinals, BM25 triggers off as in a bulk load): as a load writes them (the row trigger
  computes the tsvector), with the tsvector given, with every trigger and foreign key
  off (``session_replication_role = replica``), and the tsvector alone, computed and
  summed without a write.
- ``hnsw``: the active space's HNSW index dropped and built again at each
  ``maintenance_work_mem`` given, with the build workers a bulk load uses.
- ``hnsw-precision``: the index built over the full-precision column (as before revision
  0028) and over its half-precision cast (as now), alternated ``--rounds`` times, with the
  build workers a bulk load uses and 1 GB: build seconds, index size, and recall@10 and
  time of 200 stored vectors as queries at ``ef_search`` 40 and 100 against the exact
  nearest (a sequential scan).

The figures go to stdout, one step a line; docs/benchmarks.md quotes them ("Parse workers
on 2 cores").
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.scale import existing
from ragstore.db import documents, spaces

# revision 0013's postings select (ragstore_bm25_write_postings), as one statement
_POSTINGS = """
    SELECT t.term_id, ragstore_bm25_impact(x.tf, n.tsv_length, %(k1)s, %(b)s, %(avgdl)s),
           n.id, x.tf, n.tsv_length
    FROM chunks n
    CROSS JOIN LATERAL (SELECT u.lexeme, greatest(cardinality(u.positions), 1) AS tf
                        FROM unnest(n.tsv) u) x
    JOIN bm25_terms t ON t.collection_id = %(cid)s AND t.lexeme = x.lexeme
    WHERE n.collection_id = %(cid)s AND n.chunk_type <> 'heading' AND t.df <= %(keep)s"""
_DF = """
    SELECT count(*) FROM (
        SELECT u.lexeme, count(*) FROM chunks n
        CROSS JOIN LATERAL unnest(tsvector_to_array(n.tsv)) AS u(lexeme)
        WHERE n.collection_id = %(cid)s AND n.chunk_type <> 'heading' GROUP BY u.lexeme) s"""
_INDEXES = (
    (
        "list index",
        "CREATE INDEX bm25_postings_impact_idx ON bm25_postings (term_id, impact DESC)"
        " INCLUDE (chunk_id, tf, len)",
    ),
    ("chunk index", "CREATE INDEX bm25_postings_chunk_idx ON bm25_postings (chunk_id)"),
)
# what a load writes of a chunk; the trigger fills ts_config, tsv and tsv_length
_COLUMNS = (
    "document_id, collection_id, ordinal, chunk_type, text, section_path, parent_id,"
    " char_start, char_end, page, token_count, metadata, content_hash, context"
)
_TSV = ", ts_config, tsv, tsv_length"


def _timer(conn: Any) -> Callable[..., float]:
    def step(label: str, query: str, params: Any = None) -> float:
        t0 = time.perf_counter()
        conn.execute(query, params)
        took = time.perf_counter() - t0
        print(f"{label:<40} {took:8.2f} s", flush=True)
        return took

    return step


def bm25(conn: Any, cid: int, memory: str) -> None:
    """``ragstore_bm25_bulk_finish`` whole, then its pieces, each rolled back."""
    step = _timer(conn)
    documents.begin_bulk(conn, cid)
    t0 = time.perf_counter()
    written = documents.finish_bulk(conn, cid, memory)
    print(f"{'bulk finish (whole)':<40} {time.perf_counter() - t0:8.2f} s  {written} postings")
    conn.rollback()
    row = conn.execute(
        "SELECT coalesce(impact_k1, 1.2), coalesce(impact_b, 0.75),"
        " greatest(tokens::float8 / greatest(chunks, 1), 1.0), list_keep"
        " FROM bm25_collection_stats WHERE collection_id = %s",
        (cid,),
    ).fetchone()
    params = {"cid": cid, "k1": row[0], "b": row[1], "avgdl": row[2], "keep": row[3]}
    conn.execute("SELECT set_config('work_mem', %s, true)", (memory,))
    step("document frequencies", _DF, params)
    step("postings select, unsorted", f"SELECT count(*) FROM ({_POSTINGS}) s", params)
    step(
        "postings select, sorted",
        f"SELECT count(*) FROM ({_POSTINGS} ORDER BY 1, 2 DESC OFFSET 0) s",
        params,
    )
    conn.execute("DELETE FROM bm25_postings")
    conn.execute("DROP INDEX bm25_postings_impact_idx; DROP INDEX bm25_postings_chunk_idx")
    step(
        "heap insert, sorted (select included)",
        f"INSERT INTO bm25_postings (term_id, impact, chunk_id, tf, len) {_POSTINGS}"
        " ORDER BY 1, 2 DESC",
        params,
    )
    for label, query in _INDEXES:
        step(label, query)
    conn.rollback()


def writes(conn: Any, cid: int, rows: int) -> None:
    """``rows`` chunks written again four ways, each rolled back."""
    step = _timer(conn)
    variants = (
        ("as a load writes them", _COLUMNS, ""),
        ("tsvector given", _COLUMNS + _TSV, ""),
        ("triggers and foreign keys off", _COLUMNS + _TSV, "replica"),
    )
    for label, columns, role in variants:
        conn.execute("SELECT set_config('ragstore.bulk', 'on', true)")
        conn.execute(
            "CREATE TEMP TABLE src ON COMMIT DROP AS SELECT * FROM chunks"
            " WHERE collection_id = %s ORDER BY id LIMIT %s",
            (cid, rows),
        )
        if role:
            conn.execute("SET LOCAL session_replication_role = replica")
        copied = columns.replace("ordinal", "ordinal + 1000000").replace("parent_id", "NULL")
        step(f"{rows} chunks, {label}", f"INSERT INTO chunks ({columns}) SELECT {copied} FROM src")
        conn.rollback()
    conn.execute(
        "CREATE TEMP TABLE src ON COMMIT DROP AS SELECT * FROM chunks"
        " WHERE collection_id = %s ORDER BY id LIMIT %s",
        (cid, rows),
    )
    step(
        f"{rows} tsvectors alone",
        "SELECT sum(ragstore_tsv_length(to_tsvector(ts_config::regconfig,"
        " ragstore_chunk_search_text(chunk_type, section_path, text)))) FROM src",
    )
    conn.rollback()


def hnsw(conn: Any, table: str, distance: str, memories: list[str]) -> None:
    """The space's HNSW index built again at each ``maintenance_work_mem``, rolled back."""
    for memory in memories:
        conn.execute(f"DROP INDEX {table}_hnsw")
        t0 = time.perf_counter()
        spaces.ensure_index(conn, table, distance, memory=memory, workers=spaces.build_workers())
        print(f"{'hnsw build at ' + memory:<40} {time.perf_counter() - t0:8.2f} s", flush=True)
        conn.rollback()


def hnsw_precision(conn: Any, table: str, distance: str, rounds: int) -> None:
    """Full- against half-precision HNSW builds and their recall, each rolled back."""
    dim = spaces.table_dimension(conn, table)
    op = spaces.OPERATORS[distance]
    queries = conn.execute(
        f"SELECT chunk_id, embedding FROM {table} ORDER BY md5(chunk_id::text) LIMIT 200"
    ).fetchall()
    conn.execute("SET LOCAL enable_indexscan = off")
    exact = {
        cid: {
            r[0]
            for r in conn.execute(
                f"SELECT chunk_id FROM {table} ORDER BY embedding {op} %s LIMIT 10", (q,)
            )
        }
        for cid, q in queries
    }
    conn.rollback()
    kinds = {
        "full": (
            f"embedding {spaces.HALF_DISTANCE_OPS[distance].replace('halfvec', 'vector')}",
            f"embedding {op} %s",
        ),
        "half": (
            f"(embedding::halfvec({dim})) {spaces.HALF_DISTANCE_OPS[distance]}",
            f"embedding::halfvec({dim}) {op} %s::halfvec({dim})",
        ),
    }
    for _ in range(rounds):
        for kind, (column, order) in kinds.items():
            conn.execute(f"DROP INDEX {table}_hnsw")
            conn.execute("SET LOCAL maintenance_work_mem = '1GB'")
            conn.execute(f"SET LOCAL max_parallel_maintenance_workers = {spaces.build_workers()}")
            t0 = time.perf_counter()
            conn.execute(f"CREATE INDEX {table}_hnsw ON {table} USING hnsw ({column})")
            built = time.perf_counter() - t0
            size = conn.execute(f"SELECT pg_relation_size('{table}_hnsw')").fetchone()[0]
            line = [f"{kind}: build {built:6.2f} s, index {size / 2**20:4.0f} MB"]
            for ef in (40, 100):
                conn.execute(f"SET LOCAL hnsw.ef_search = {ef}")
                hits, t0 = 0, time.perf_counter()
                for cid, q in queries:
                    got = conn.execute(
                        f"SELECT chunk_id FROM {table} ORDER BY {order} LIMIT 10", (q,)
                    ).fetchall()
                    hits += len({r[0] for r in got} & exact[cid])
                ms = 1000 * (time.perf_counter() - t0) / len(queries)
                line.append(f"ef {ef}: recall@10 {hits / 10 / len(queries):.3f}, {ms:.2f} ms")
            print("; ".join(line), flush=True)
            conn.rollback()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, help="a data directory bench.scale --keep left")
    parser.add_argument("what", choices=("bm25", "writes", "hnsw", "hnsw-precision"))
    parser.add_argument("--rounds", type=int, default=2, help="hnsw-precision: alternations")
    parser.add_argument("--rows", type=int, default=30_000, help="writes: chunks written")
    parser.add_argument("--memory", nargs="+", default=["1GB"], help="work/maintenance memory")
    args = parser.parse_args(argv)
    with existing(args.data_dir) as (rt, coll):
        conn = rt.db.connect(autocommit=False)
        try:
            if args.what == "bm25":
                bm25(conn, coll.id, args.memory[0])
            elif args.what == "writes":
                writes(conn, coll.id, args.rows)
            elif args.what == "hnsw":
                hnsw(conn, coll.table, coll.model.distance, args.memory)
            else:
                hnsw_precision(conn, coll.table, coll.model.distance, args.rounds)
        finally:
            conn.rollback()
            conn.close()


if __name__ == "__main__":
    main()
