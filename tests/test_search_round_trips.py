"""A repeated vector or full-text search is one round trip to PostgreSQL: one Sync from the
client, no BEGIN or COMMIT around its statement (sent with its transaction-local
statement_timeout), and the pooled connection goes back as it
came (not in autocommit, no transaction open). A hybrid search is two statements of one
round trip each: its two lists at once on two connections, fused in Python (search/fused.py).
Counted from libpq's own protocol trace."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragstore import runtime
from ragstore.runtime import Runtime
from ragstore.search import search
from tests.search_helpers import Doc, make_collection, write_docs


def _traced(rt: Runtime, trace: Path, run: object) -> list[str]:
    """The frontend messages (``F`` lines) libpq sent while ``run()`` ran on every pooled
    connection."""
    pool = rt.db.pool
    conns = [pool.getconn() for _ in range(pool.get_stats()["pool_size"])]
    fh = trace.open("w")
    for conn in conns:
        conn.pgconn.trace(fh.fileno())
        conn.pgconn.set_trace_flags(1 | 2)  # no timestamps, stable output
    for conn in conns:
        pool.putconn(conn)
    try:
        run()  # type: ignore[operator]
    finally:
        conns = [pool.getconn() for _ in range(pool.get_stats()["pool_size"])]
        for conn in conns:
            conn.pgconn.untrace()
            pool.putconn(conn)
        fh.close()
    return [line.split("\t")[2] for line in trace.read_text().splitlines() if line[:1] == "F"]


def _on_every_connection(rt: Runtime, run: object) -> None:
    """``run()`` once with each pooled connection the only one free (the pool grown to its
    largest first), so every connection has had the settings a search sends once per
    connection."""
    pool = rt.db.pool
    conns = [pool.getconn() for _ in range(pool.max_size)]
    try:
        for i, conn in enumerate(conns):
            pool.putconn(conn)
            run()  # type: ignore[operator]
            conns[i] = pool.getconn()
    finally:
        for conn in conns:
            pool.putconn(conn)


@pytest.mark.parametrize(("mode", "trips"), [("vector", 1), ("hybrid", 2), ("fulltext", 1)])
def test_a_repeated_search_is_one_round_trip(
    rt: Runtime, tmp_path: Path, mode: str, trips: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the collection is re-read once a second; a slow machine must not count that read
    monkeypatch.setattr(runtime, "COLLECTION_CACHE_S", 3600.0)
    coll = make_collection(rt, f"trips_{mode}")
    write_docs(rt, coll, [Doc("a.txt", ["pgvector keeps the embeddings"]), Doc("b.txt", ["x"])])
    query = "where are embeddings kept"
    first = search(rt, query, collection=coll.name, k=2, mode=mode)  # settings sent, cached
    assert first[0].source == "a.txt"
    # hybrid's vector list may land on any pooled connection: each gets its settings first
    _on_every_connection(rt, lambda: search(rt, query, collection=coll.name, k=2, mode=mode))
    sent = _traced(
        rt, tmp_path / "trace.txt", lambda: search(rt, query, collection=coll.name, k=2, mode=mode)
    )
    assert sent.count("Sync") == trips, sent
    # each search statement goes with its transaction-local statement_timeout
    # (RAGSTORE_SEARCH_TIMEOUT_S), in the same round trip
    assert sent.count("Execute") == 2 * trips, sent
    statements = " ".join(sent)
    assert "BEGIN" not in statements and "COMMIT" not in statements
    with rt.db.connection() as conn:  # handed back as any other pooled connection
        assert conn.autocommit is False
        conn.execute("SELECT 1")
        assert conn.info.transaction_status == 2  # INTRANS: a transaction as usual
        row = conn.execute("SHOW statement_timeout").fetchone()
        assert row is not None and row[0] == "0"  # the search's limit did not stay behind


def _prepared(rt: Runtime) -> list[str]:
    """The statements prepared on every pooled connection."""
    pool = rt.db.pool
    conns = [pool.getconn() for _ in range(pool.get_stats()["pool_size"])]
    try:
        out: list[str] = []
        for conn in conns:
            out += [str(r[0]) for r in conn.execute("SELECT statement FROM pg_prepared_statements")]
            conn.rollback()
        return out
    finally:
        for conn in conns:
            pool.putconn(conn)


def test_a_filtered_vector_list_is_planned_at_every_search(rt: Runtime) -> None:
    """Prepared, a filtered vector statement went to PostgreSQL's generic plan after a
    connection's first executions, which changed its rows and doubled its time at 100k
    chunks (docs/benchmarks.md): it is never prepared. An unfiltered one is, on purpose
    (its one plan, no planning)."""
    coll = make_collection(rt, "replan")
    write_docs(
        rt,
        coll,
        [Doc(f"{i}.txt", [f"note {i} about embeddings"], {"n": i}) for i in range(6)],
    )

    def filtered() -> None:
        for mode in ("vector", "hybrid"):
            search(rt, "embeddings", collection=coll.name, k=3, mode=mode, where={"n": {"$lt": 3}})
            search(rt, 'embeddings -"note 5"', collection=coll.name, k=3, mode=mode)

    for _ in range(8):  # past psycopg's prepare threshold (5) on every connection
        _on_every_connection(rt, filtered)
    # the filtered vector list joins chunks to the vectors (``c.id = e.chunk_id``)
    vector_filtered = [s for s in _prepared(rt) if "<=>" in s and "c.id = e.chunk_id" in s]
    assert vector_filtered == []
    for _ in range(8):
        _on_every_connection(
            rt, lambda: search(rt, "embeddings", collection=coll.name, k=3, mode="vector")
        )
    assert any("<=>" in s and "c.id = e.chunk_id" not in s for s in _prepared(rt))
