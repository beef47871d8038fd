"""The native BM25 kernel (ragstore.db.native): the C ``bm25_contenders`` returns what the SQL
``ragstore_bm25_contenders`` returns, bit for bit, and searches rank the same with it and
without it; backups leave it out, and a kernel that cannot be built leaves search working.

The kernel is created here on the test database directly (the tests' databases are reached
by URL, so the runtime treats them as external and never installs it itself); the
compiler runs once per session at most (the library is cached by source and server), and
once more for the prebuilt folder of the Docker image's stages reproduced by hand.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ragstore.backup import create_backup
from ragstore.config import Settings
from ragstore.db import embedded, native, repository
from ragstore.db.embedded import pg_bin_dir
from ragstore.runtime import Runtime
from ragstore.search import search
from tests.search_helpers import Doc, make_collection, write_docs

CISI = Path(__file__).resolve().parents[2] / "shared" / "data" / "cisi"
N_DOCS = 80
NAME = "native"

# revision 0022's phase-2 statement (two ordered aggregates), the reference for both
_STATEMENT_0022 = """
WITH q AS (SELECT q.term_id, q.w * %(ratio)s::float8 AS wr, q.cut, q.cb
           FROM unnest(%(ids)s::int[], %(ws)s::float8[], %(cuts)s::float8[],
                       %(cbs)s::float8[]) AS q(term_id, w, cut, cb)
           WHERE q.cut IS NOT NULL),
c AS MATERIALIZED (
    SELECT p.chunk_id, (sum(p.g) + %(rest)s::float8) * 1.000001 AS bound
    FROM q CROSS JOIN LATERAL (
        SELECT x.chunk_id, q.wr * x.impact - q.cb AS g FROM bm25_postings x
        WHERE x.term_id = q.term_id AND x.impact >= q.cut) p
    GROUP BY p.chunk_id HAVING (sum(p.g) + %(rest)s::float8) * 1.000001 >= %(theta)s::float8)
SELECT array_agg(c.chunk_id ORDER BY c.bound DESC, c.chunk_id),
       array_agg(c.bound ORDER BY c.bound DESC, c.chunk_id)
FROM c WHERE c.chunk_id NOT IN (SELECT unnest(%(sids)s::bigint[]))
"""
_ARGS = (
    "%(ids)s::int[], %(ws)s::float8[], %(cuts)s::float8[], %(cbs)s::float8[], "
    "%(ratio)s::float8, %(rest)s::float8, %(theta)s::float8, %(sids)s::bigint[]"
)


@pytest.fixture(scope="module")
def cisi(rt: Runtime) -> tuple[repository.Collection, list[str]]:
    docs: list[Doc] = []
    with (CISI / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            docs.append(Doc(f"cisi-{row['_id']}.txt", [f"{row['title']}\n{row['text']}"]))
            if len(docs) == N_DOCS:
                break
    with (CISI / "queries.jsonl").open(encoding="utf-8") as fh:
        queries = [str(json.loads(line)["text"]) for line in fh][:12]
    coll = make_collection(rt, NAME)
    write_docs(rt, coll, docs)
    return coll, queries


@pytest.fixture(scope="session")
def native_cache(pg_data_dir: Path, pg_admin_uri: str) -> Path:
    """Inside the session server's data directory, as the runtime puts it (named relative
    to it: the folders above may not be open to the server's OS user)."""
    return pg_data_dir / "pg" / "ragstore_native_test"


def _install(rt: Runtime, cache: Path) -> None:
    assert native.sync(rt.db, cache), "the native kernel did not install"


def _terms(rt: Runtime, cid: int, query: str, quantile: float) -> dict[str, Any]:
    """Arguments as ragstore_bm25_topk builds them: the query's terms in lexeme order,
    their weights, a cut at a quantile of each term's impacts (every third term unread)."""
    with rt.db.connection() as conn:
        found = conn.execute(
            "SELECT t.term_id, ln(1.0 + (s.chunks - t.df + 0.5) / (t.df + 0.5))::float8,"
            " (SELECT percentile_disc(%s) WITHIN GROUP (ORDER BY x.impact)"
            "  FROM bm25_postings x WHERE x.term_id = t.term_id)::float8"
            " FROM (SELECT DISTINCT u.lexeme FROM unnest(to_tsvector('english', %s)) u) q"
            " JOIN bm25_terms t ON t.collection_id = %s AND t.lexeme = q.lexeme"
            " JOIN bm25_collection_stats s ON s.collection_id = t.collection_id"
            ' ORDER BY t.lexeme COLLATE "C"',
            (quantile, query, cid),
        ).fetchall()
    rows = [(r[0], float(str(r[1])), None if r[2] is None else float(str(r[2]))) for r in found]
    ratio = 1.0000013
    cuts = [None if i % 3 == 2 else r[2] for i, r in enumerate(rows)]
    cbs = [r[1] * (r[2] or 0.0) * ratio * 0.5 for r in rows]
    return {
        "ids": [r[0] for r in rows],
        "ws": [r[1] for r in rows],
        "cuts": cuts,
        "cbs": cbs,
        "ratio": ratio,
        "rest": sum(cb for cb, cut in zip(cbs, cuts, strict=True) if cut is None),
    }


def _three(rt: Runtime, args: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(contenders, bounds) from revision 0022's statement, the SQL function and the C one."""
    with rt.db.connection() as conn:
        old = conn.execute(_STATEMENT_0022, args).fetchone()
        sql = conn.execute(f"SELECT * FROM ragstore_bm25_contenders({_ARGS})", args).fetchone()
        c = conn.execute(f"SELECT * FROM ragstore_native.bm25_contenders({_ARGS})", args).fetchone()
    assert old is not None and sql is not None and c is not None
    return [(r[0], r[1]) for r in (old, sql, c)]


def test_native_contenders_are_the_sql_ones_bit_for_bit(
    rt: Runtime, cisi: tuple[repository.Collection, list[str]], native_cache: Path
) -> None:
    _install(rt, native_cache)
    coll, queries = cisi
    kept = 0
    for query in queries[:6]:
        for quantile in (0.0, 0.5):
            args = _terms(rt, coll.id, query, quantile)
            assert any(c is not None for c in args["cuts"])
            everything = _three(rt, {**args, "theta": -1e300, "sids": None})
            ids, bounds = everything[0]
            assert ids and len(set(ids)) == len(ids)
            theta = sorted(bounds)[len(bounds) // 2]  # keeps about half
            cases = [
                {"theta": -1e300, "sids": None},
                {"theta": theta, "sids": []},
                {"theta": theta, "sids": ids[:3] + ids[-2:] + [10**15]},  # NOT IN
                {"theta": max(bounds) * 2 + 1, "sids": None},  # keeps nothing: NULL arrays
                {"theta": -1e300, "sids": [ids[0], None]},  # NOT IN (.., NULL): nothing
            ]
            for case in cases:
                old, sql, c = _three(rt, {**args, **case})
                assert sql == old, (query[:40], case)
                assert c == sql, (query[:40], case)
                assert [b.hex() for b in c[1] or []] == [b.hex() for b in sql[1] or []]
                kept += len(c[0] or [])
            assert _three(rt, {**args, "theta": max(bounds) * 2 + 1, "sids": None})[2] == (
                None,
                None,
            )
    assert kept > 0


_LISTS_ARGS = (
    "%(ids)s::int[], %(ws)s::float8[], %(n)s::int, %(k1)s::float8, %(b)s::float8, %(avgdl)s::float8"
)


def _query_terms(rt: Runtime, cid: int, query: str) -> dict[str, Any]:
    """ids and ws as ragstore_bm25_topk looks them up (NULL arrays when no term is known)."""
    with rt.db.connection() as conn:
        row = conn.execute(
            'SELECT array_agg(tt.term_id ORDER BY tt.lexeme COLLATE "C"),'
            " array_agg((q.qtf * ln(1.0 + (s.chunks - tt.df + 0.5) / (tt.df + 0.5)))::float8"
            '           ORDER BY tt.lexeme COLLATE "C")'
            " FROM (SELECT u.lexeme, greatest(cardinality(u.positions), 1) AS qtf"
            "       FROM unnest(to_tsvector('english', %s)) u) q"
            " JOIN bm25_terms tt ON tt.collection_id = %s AND tt.lexeme = q.lexeme"
            " JOIN bm25_collection_stats s ON s.collection_id = tt.collection_id",
            (query, cid),
        ).fetchone()
    assert row is not None
    return {"ids": row[0], "ws": row[1]}


def _lists_c_and_sql(conn: Any, args: dict[str, Any]) -> tuple[Any, Any, bool]:
    """(C (cand, all_read), SQL (cand, all_read), whether C read through SPI) on CONN."""
    notices = _explained(conn)
    c = conn.execute(f"SELECT * FROM ragstore_native.bm25_lists({_LISTS_ARGS})", args).fetchone()
    spi = any("FROM bm25_postings x WHERE x.term_id" in n for n in notices)
    conn.execute("SET LOCAL auto_explain.log_min_duration = -1")
    sql = conn.execute(f"SELECT * FROM ragstore_bm25_lists({_LISTS_ARGS})", args).fetchone()
    assert c is not None and sql is not None
    return tuple(c), tuple(sql), spi


def test_native_lists_are_the_sql_ones_bit_for_bit(
    rt: Runtime, cisi: tuple[repository.Collection, list[str]], native_cache: Path
) -> None:
    """Phase 1's lists (revision 0024): the same chunks in the same order and the same flag
    from C as from SQL, for CISI queries, a term the collection lacks, a stop-word-only
    query, terms out of the usual shape (an unknown id, a repeat, NULLs), and each n."""
    _install(rt, native_cache)
    coll, queries = cisi
    with rt.db.connect(autocommit=True) as conn:
        conn.execute("VACUUM bm25_postings")  # all-visible: index-only reads
    base = [_query_terms(rt, coll.id, q) for q in queries[:8]]
    absent = _query_terms(rt, coll.id, f"{queries[0]} zzqxvunseen")
    stop = _query_terms(rt, coll.id, "the of and to in a")
    assert stop == {"ids": None, "ws": None}
    assert absent == base[0]  # the unknown lexeme has no term: left out as topk leaves it
    ids0, ws0 = base[0]["ids"], base[0]["ws"]
    odd = [
        stop,
        {"ids": [], "ws": []},
        {"ids": [*ids0, 2_000_000_000], "ws": [*ws0, 1.5]},  # a term with no postings
        {"ids": [ids0[0], *ids0], "ws": [0.5, *ws0]},  # a term twice
        {"ids": [ids0[0], None], "ws": [None, 1.0]},  # NULLs as unnest pads them
        {"ids": ids0, "ws": ws0[:-1]},
    ]
    seen = 0
    with rt.db.connection() as conn:
        for terms in [*base, *odd]:
            for n in (32, 3, 1, 0, 100000, None):
                for k1, b, avgdl in ((1.2, 0.75, 97.3), (0.9, 0.4, 12.0), (None, 0.75, 1.0)):
                    args = {**terms, "n": n, "k1": k1, "b": b, "avgdl": avgdl}
                    c, sql, spi = _lists_c_and_sql(conn, args)
                    assert c == sql, (terms, n, k1)
                    assert not spi
                    seen += len(c[0] or [])
        # all read (n above every list), and not (n = 1)
        full = _lists_c_and_sql(conn, {**base[0], "n": 100000, "k1": 1.2, "b": 0.75, "avgdl": 9.0})
        assert full[0][1] is True and full[0][0]
        one = _lists_c_and_sql(conn, {**base[0], "n": 1, "k1": 1.2, "b": 0.75, "avgdl": 9.0})
        assert one[0][1] is False
        # a document's postings deleted in this transaction: gone for C as for SQL
        with conn.transaction(force_rollback=True):
            best = full[0][0][0]
            gone = conn.execute(
                "DELETE FROM bm25_postings x USING chunks c WHERE c.id = x.chunk_id"
                " AND c.document_id = (SELECT document_id FROM chunks WHERE id = %s)"
                " RETURNING x.chunk_id",
                (best,),
            ).fetchall()
            for n in (32, 3):
                args = {**base[0], "n": n, "k1": 1.2, "b": 0.75, "avgdl": 9.0}
                c, sql, spi = _lists_c_and_sql(conn, args)
                assert c == sql and not spi and not {r[0] for r in gone} & set(c[0] or [])
        with pytest.raises(psycopg.errors.InvalidRowCountInLimitClause):
            conn.execute(
                f"SELECT * FROM ragstore_native.bm25_lists({_LISTS_ARGS})",
                {**base[0], "n": -1, "k1": 1.2, "b": 0.75, "avgdl": 9.0},
            )
    assert seen > 0
    serializable = rt.db.connect()
    try:
        serializable.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
        for terms in base[:2]:
            args = {**terms, "n": 32, "k1": 1.2, "b": 0.75, "avgdl": 97.3}
            c, sql, spi = _lists_c_and_sql(serializable, args)
            assert c == sql and c[0] and spi  # the executor takes its predicate locks
        serializable.rollback()
    finally:
        serializable.close()


def _explained(conn: Any) -> list[str]:
    """auto_explain on CONN for this transaction: the list its notices go to (a C function's
    SPI statement shows in it; a direct read does not)."""
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
    conn.execute("LOAD 'auto_explain'")
    for setting in (
        "auto_explain.log_min_duration = 0",
        "auto_explain.log_nested_statements = on",
        "auto_explain.log_level = notice",
        "client_min_messages = notice",
    ):
        conn.execute(f"SET LOCAL {setting}")
    return notices


def _c_and_sql(conn: Any, args: dict[str, Any]) -> tuple[Any, Any, bool]:
    """(C arrays, SQL arrays, whether the C function read postings through SPI), on CONN
    in its transaction."""
    notices = _explained(conn)
    c = conn.execute(f"SELECT * FROM ragstore_native.bm25_contenders({_ARGS})", args).fetchone()
    spi = any("FROM bm25_postings x WHERE x.term_id" in n for n in notices)
    conn.execute("SET LOCAL auto_explain.log_min_duration = -1")
    sql = conn.execute(f"SELECT * FROM ragstore_bm25_contenders({_ARGS})", args).fetchone()
    assert c is not None and sql is not None
    return (c[0], c[1]), (sql[0], sql[1]), spi


def _same(c: Any, sql: Any) -> None:
    assert c == sql
    assert [b.hex() for b in c[1] or []] == [b.hex() for b in sql[1] or []]


def test_native_contenders_read_the_index_directly_and_see_what_the_sql_sees(
    rt: Runtime, cisi: tuple[repository.Collection, list[str]], native_cache: Path
) -> None:
    """The C function reads postings through the index AM (no executor): values from the
    index tuple on all-visible pages, the heap asked otherwise; the postings a transaction
    deleted are gone for it as for the SQL; a serializable transaction reads through SPI."""
    _install(rt, native_cache)
    coll, queries = cisi
    cases = [
        {**_terms(rt, coll.id, query, quantile), "theta": -1e300, "sids": None}
        for query in queries[:4]
        for quantile in (0.0, 0.7)
    ]
    with rt.db.connect(autocommit=True) as conn:
        conn.execute("VACUUM bm25_postings")  # all-visible: index-only reads
    with rt.db.connection() as conn:
        for args in cases:
            c, sql, spi = _c_and_sql(conn, args)
            _same(c, sql)
            assert c[0] and not spi
        best = _c_and_sql(conn, cases[0])[0][0][0]
        # one document's postings deleted in this transaction: their index entries stay,
        # their pages are no longer all-visible, the heap says they are gone
        with conn.transaction(force_rollback=True):
            gone = conn.execute(
                "DELETE FROM bm25_postings x USING chunks c WHERE c.id = x.chunk_id"
                " AND c.document_id = (SELECT document_id FROM chunks WHERE id = %s)"
                " RETURNING x.chunk_id",
                (best,),
            ).fetchall()
            assert gone
            for args in cases:
                c, sql, spi = _c_and_sql(conn, args)
                _same(c, sql)
                assert not spi and not {r[0] for r in gone} & set(c[0] or [])
        # an index of another shape (no chunk_id in it): the postings through SPI
        with conn.transaction(force_rollback=True):
            conn.execute("DROP INDEX bm25_postings_impact_idx")
            conn.execute("CREATE INDEX bm25_postings_impact_idx ON bm25_postings (term_id, impact)")
            c, sql, spi = _c_and_sql(conn, cases[0])
            _same(c, sql)
            assert c[0] and spi
    serializable = rt.db.connect()
    try:
        serializable.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
        for args in cases[:2]:
            c, sql, spi = _c_and_sql(serializable, args)
            _same(c, sql)
            assert c[0] and spi  # the executor takes its predicate locks
        serializable.rollback()
    finally:
        serializable.close()


def test_native_scores_are_the_sql_ones_bit_for_bit(
    rt: Runtime, cisi: tuple[repository.Collection, list[str]], native_cache: Path
) -> None:
    _install(rt, native_cache)
    coll, queries = cisi
    scored = 0
    with rt.db.connection() as conn:
        ids = [
            r[0] for r in conn.execute("SELECT id FROM chunks WHERE collection_id = %s", (coll.id,))
        ]
        ids += [10**15]  # no such chunk
        for query in queries[:8]:
            args = _terms(rt, coll.id, query, 0.0)
            with rt.db.connection() as conn2:
                lexs = [
                    r[0]
                    for r in conn2.execute(
                        "SELECT lexeme FROM bm25_terms WHERE term_id = ANY(%s)"
                        ' ORDER BY lexeme COLLATE "C"',
                        (args["ids"],),
                    )
                ]
            # weights out of lexeme order, and a lexeme no chunk holds
            lexs, ws = [*lexs[::-1], "zzzunseen"], [*args["ws"][::-1], 1.5]
            for k1, b, avgdl in ((1.2, 0.75, 97.3), (0.9, 0.4, 12.0)):
                rows = []
                for fn in ("ragstore_bm25_score", "ragstore_native.bm25_score"):
                    rows.append(
                        conn.execute(
                            f"SELECT chunk_id, raw FROM {fn}(%s::bigint[], %s::text[],"
                            " %s::float8[], %s, %s, %s) ORDER BY chunk_id",
                            (ids, lexs, ws, k1, b, avgdl),
                        ).fetchall()
                    )
                sql, c = rows
                assert [(i, float(str(r)).hex()) for i, r in c] == [
                    (i, float(str(r)).hex()) for i, r in sql
                ], query[:40]
                scored += len(c)
    assert scored > 0


def test_native_scores_read_the_chunks_directly_and_see_what_the_sql_sees(
    rt: Runtime, cisi: tuple[repository.Collection, list[str]], native_cache: Path
) -> None:
    """bm25_score probes chunks_pkey through the index AM (each id once, NULLs and repeats
    as = ANY takes them) and scores the visible row: chunks deleted in the transaction are
    gone for it as for the SQL; a serializable transaction reads through SPI."""
    _install(rt, native_cache)
    coll, queries = cisi
    args = _terms(rt, coll.id, queries[1], 0.0)
    lexs: list[str] = []

    def both(conn: Any, ids: list[int | None]) -> tuple[list[Any], bool]:
        notices = _explained(conn)
        rows = []
        for fn in ("ragstore_native.bm25_score", "ragstore_bm25_score"):
            rows.append(
                [
                    (i, float(str(r)).hex())
                    for i, r in conn.execute(
                        f"SELECT chunk_id, raw FROM {fn}(%s::bigint[], %s::text[],"
                        " %s::float8[], 1.2, 0.75, 97.3) ORDER BY chunk_id",
                        (ids, lexs, args["ws"]),
                    )
                ]
            )
            conn.execute("SET LOCAL auto_explain.log_min_duration = -1")
        assert rows[0] == rows[1]
        return rows[0], any("FROM chunks c WHERE c.id = ANY" in n for n in notices)

    with rt.db.connection() as conn:
        lexs += [
            r[0]
            for r in conn.execute(
                'SELECT lexeme FROM bm25_terms WHERE term_id = ANY(%s) ORDER BY lexeme COLLATE "C"',
                (args["ids"],),
            )
        ]
        ids: list[int | None] = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM chunks WHERE collection_id = %s ORDER BY id DESC", (coll.id,)
            )
        ]
        ids += [ids[0], ids[3], None, 10**15]  # repeats, a NULL, no such chunk
        rows, spi = both(conn, ids)
        assert len(rows) > 10 and not spi
        with conn.transaction(force_rollback=True):
            gone = conn.execute(
                "DELETE FROM chunks WHERE document_id = (SELECT document_id FROM chunks"
                " WHERE id = %s) RETURNING id",
                (rows[0][0],),
            ).fetchall()
            after, spi = both(conn, ids)
            assert not spi and gone
            assert after == [r for r in rows if r[0] not in {g[0] for g in gone}]
    serializable = rt.db.connect()
    try:
        serializable.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
        assert both(serializable, ids) == (rows, True)
        serializable.rollback()
    finally:
        serializable.close()


def _rankings(rt: Runtime, queries: list[str]) -> list[list[tuple[int, float]]]:
    out = []
    for query in queries:
        for mode in ("fulltext", "hybrid"):
            assert mode in ("fulltext", "hybrid")
            hits = search(rt, query, collection=NAME, k=10, mode=mode)
            out.append([(h.chunk_id, h.score) for h in hits])
    return out


def _native_calls(rt: Runtime, cid: int, query: str) -> dict[str, int]:
    """Calls of each C function one ragstore_bm25_topk made (this transaction's statistics)."""
    with rt.db.connection() as conn, conn.transaction():
        conn.execute("SET LOCAL track_functions = 'all'")
        conn.execute(
            "SELECT count(*) FROM ragstore_bm25_topk(%s, 'english', %s, 10, 1.2, 0.75)",
            (cid, query),
        )
        rows = conn.execute(
            "SELECT p.proname, coalesce(pg_stat_get_xact_function_calls(p.oid), 0) FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'ragstore_native'"
        ).fetchall()
    return {str(name): int(str(calls)) for name, calls in rows}


def test_searches_rank_the_same_with_and_without_the_native_kernel(
    rt: Runtime, cisi: tuple[repository.Collection, list[str]], native_cache: Path
) -> None:
    coll, queries = cisi
    _install(rt, native_cache)
    calls = _native_calls(rt, coll.id, queries[0])  # the search took the native path
    assert calls["bm25_contenders"] >= 1 and calls["bm25_score"] >= 1, calls
    assert calls["bm25_lists"] >= 1, calls
    with_native = _rankings(rt, queries)
    assert native.sync(rt.db, native_cache, enabled=False) is False
    with rt.db.connection() as conn:
        assert native.installed(conn) is None
    without = _rankings(rt, queries)
    assert with_native == without
    assert any(with_native)


def test_a_backup_leaves_the_native_schema_out(
    rt: Runtime,
    cisi: tuple[repository.Collection, list[str]],
    native_cache: Path,
    tmp_path: Path,
) -> None:
    _install(rt, native_cache)
    info = create_backup(rt.db, rt.settings, tmp_path / "b.dump")
    listing = subprocess.run(
        [str(pg_bin_dir() / "pg_restore"), "--list", info.path],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "ragstore_bm25_contenders" in listing  # the SQL function is in it
    assert "ragstore_native" not in listing


def test_a_kernel_that_does_not_compile_leaves_search_working(
    rt: Runtime,
    cisi: tuple[repository.Collection, list[str]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, queries = cisi
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # nothing built yet
    native.uninstall(rt.db)
    expected = _rankings(rt, queries[:2])
    with caplog.at_level(logging.WARNING, logger="ragstore.db.native"):
        assert native.sync(rt.db, tmp_path / "cache", cc="/bin/false") is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "/bin/false exited with 1" in warnings[0].getMessage()
    with rt.db.connection() as conn:
        assert native.installed(conn) is None
    assert _rankings(rt, queries[:2]) == expected
    caplog.clear()  # the failure is remembered: the next open neither compiles nor warns
    with caplog.at_level(logging.WARNING, logger="ragstore.db.native"):
        assert native.sync(rt.db, tmp_path / "cache", cc="/bin/false") is False
    assert not caplog.records


def test_a_library_the_server_refuses_is_warned_about_once(
    rt: Runtime,
    pg_data_dir: Path,
    native_cache: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A library at the kernel's path that the server will not load (a corrupt copy, a
    prebuilt one for another platform): one warning, the SQL path, and later opens
    neither offer it again nor warn; a new file at that path is tried at once."""
    with rt.db.connection() as conn:
        row = conn.execute("SELECT current_setting('server_version')").fetchone()
    assert row is not None
    folder = pg_data_dir / "pg" / "native_refused"
    lib = native.library_path(folder, str(row[0]))
    lib.parent.mkdir(parents=True, exist_ok=True)
    lib.write_bytes(b"\x7fELF not really a shared object")
    lib.chmod(0o755)
    native.uninstall(rt.db)
    try:
        with caplog.at_level(logging.DEBUG, logger="ragstore.db.native"):
            assert native.sync(rt.db, folder) is False
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1 and "native BM25 kernel not in use" in warnings[0]
            caplog.clear()
            assert native.sync(rt.db, folder) is False
            assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert any("remembered in" in r.getMessage() for r in caplog.records)
            lib.write_bytes(b"\x7fELF another copy, refused again")  # a new file: tried again
            caplog.clear()
            assert native.sync(rt.db, folder) is False
            assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
        with rt.db.connection() as conn:
            assert native.installed(conn) is None
    finally:
        _install(rt, native_cache)


def test_a_machine_without_a_compiler_tries_once_and_says_so(
    rt: Runtime, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing compiler fails the build in the machine's cache once (remembered there),
    with one warning that names it; it is not taken for an unwritable cache and tried
    again in the data directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    native.uninstall(rt.db)
    with caplog.at_level(logging.WARNING, logger="ragstore.db.native"):
        assert native.sync(rt.db, tmp_path / "lib", cc="/nonexistent/cc") is False
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no C compiler '/nonexistent/cc'" in warnings[0]
    assert len(list((tmp_path / "xdg").rglob(".*.failed"))) == 1
    assert not list((tmp_path / "lib").glob(".*.failed")), "compiled again in place"


def test_install_is_cached_and_idempotent(rt: Runtime, native_cache: Path) -> None:
    _install(rt, native_cache)
    libs = list(native_cache.glob("*.so"))
    assert len(libs) == 1
    built = libs[0].stat().st_mtime_ns
    _install(rt, native_cache)  # already in place: one query, no compile
    assert libs[0].stat().st_mtime_ns == built
    with rt.db.connection() as conn:
        assert native.installed(conn) == f"{native_cache.name}/{libs[0].name}"


def test_the_runtime_puts_it_on_the_embedded_server_and_the_setting_drops_it(
    pg_data_dir: Path,
) -> None:
    def opened(enabled: bool) -> str | None:
        settings = Settings(
            data_dir=pg_data_dir, database_url=None, profile="test", native_bm25=enabled
        )
        with Runtime(settings) as rt, rt.db.connection() as conn:
            lib: str | None = native.installed(conn)
            return lib

    lib = opened(True)
    assert lib is not None and lib.startswith("ragstore_native/")
    assert (pg_data_dir / "pg" / lib).exists()
    assert opened(True) == lib  # already in place
    assert opened(False) is None


def test_a_library_built_once_serves_every_data_directory(
    rt: Runtime, pg_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compiled once into the machine's build cache, then copied: a second data directory
    (a test's, a second store's) needs no compiler and no compile time."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    # inside the server's data directory, where the server may read them
    first, second = pg_data_dir / "pg" / "native_one", pg_data_dir / "pg" / "native_two"
    native.uninstall(rt.db)
    _install(rt, first)
    built = list((tmp_path / "xdg" / "ragstore" / "native").glob("*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns

    def no_compiler(lib: Path, cc: str) -> None:
        raise AssertionError(f"compiled {lib} again")

    monkeypatch.setattr(native, "compile_library", no_compiler)
    native.uninstall(rt.db)
    _install(rt, second)
    (lib,) = second.glob("*.so")
    assert lib.read_bytes() == built[0].read_bytes()
    assert built[0].stat().st_mtime_ns == stamp
    with rt.db.connection() as conn:
        assert native.installed(conn) == f"native_two/{lib.name}"


def test_prebuild_names_the_library_for_the_embedded_servers_version(rt: Runtime) -> None:
    """``prebuild`` runs without a server: the version it reads from the binary is the one
    ``install`` reads from the running server, so both name the same file."""
    with rt.db.connection() as conn:
        row = conn.execute("SELECT current_setting('server_version')").fetchone()
    assert row is not None
    assert native.embedded_server_version() == row[0]


def test_a_prebuilt_library_serves_a_machine_without_a_compiler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The Docker image by hand: its build stage prebuilds with a compiler; its runtime
    stage opens a fresh data directory with no compiler and an empty build cache, and
    copies the prebuilt library (the SQL path without it, or with one for another server)."""
    prebuilt = native.prebuild(tmp_path / "opt" / "native")  # the build stage
    assert prebuilt == native.library_path(prebuilt.parent, native.embedded_server_version())
    other = native.library_path(tmp_path / "other", "17.0")  # built for another server
    other.parent.mkdir()
    other.write_bytes(prebuilt.read_bytes())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # nothing built yet
    data_dir = tmp_path / "data"

    def opened(prebuilt_dir: str) -> str | None:
        settings = Settings(
            data_dir=data_dir,
            database_url=None,
            profile="test",
            native_bm25_cc="/nonexistent/cc",
            native_bm25_prebuilt=prebuilt_dir,
        )
        with Runtime(settings) as rt, rt.db.connection() as conn:
            lib: str | None = native.installed(conn)
            return lib

    try:
        with caplog.at_level(logging.WARNING, logger="ragstore.db.native"):
            assert opened("") is None  # no prebuilt folder: the SQL path, as before
        assert any("/nonexistent/cc" in r.getMessage() for r in caplog.records)
        assert opened(str(other.parent)) is None
        lib = opened(str(prebuilt.parent))
        assert lib == f"ragstore_native/{prebuilt.name}"
        assert (data_dir / "pg" / lib).read_bytes() == prebuilt.read_bytes()
        assert not list((tmp_path / "xdg").rglob("*.so"))  # nothing compiled at run time
    finally:
        embedded.release(data_dir)
        embedded.stop(data_dir)
