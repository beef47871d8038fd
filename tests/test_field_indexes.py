"""Indexed metadata fields: a range on one gives candidates found through its two indexes,
every filter keeps the same chunks with them as without, and the indexes come and go."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg import sql

from ragstore.db import field_indexes
from ragstore.db.field_indexes import FieldIndex
from ragstore.errors import InputError, RagstoreError
from ragstore.runtime import Runtime
from ragstore.search import compile_filter, service
from tests.behind import run_behind
from tests.conftest import run_cli
from tests.test_filters import CASES, COLL, PROBED, candidates_plan, docs, sources

__all__ = ["docs"]  # the filter tests' collection, built again in this module's database

INDEXED = [
    FieldIndex(("year",), "number"),
    FieldIndex(("year",), "string"),
    FieldIndex(("author", "age"), "number"),
]
# a.md: document year 2019, its chunk's own 2018; b.md 2021; c.md 2023; d.md "unknown"
RANGE_CASES: list[tuple[str, dict[str, Any], set[str]]] = [
    ("either-lt", {"year": {"$lt": 2019}}, {"a.md"}),
    ("either-gte-overridden", {"year": {"$gte": 2019}}, {"b.md", "c.md"}),
    ("chunk-range", {"chunk.year": {"$lte": 2018}}, {"a.md"}),
    ("string-range", {"year": {"$gt": "t"}}, {"d.md"}),
    ("nested-range", {"author.age": {"$gt": 30}}, {"a.md"}),
    ("or-range-value", {"$or": [{"year": {"$gt": 2022}}, {"team": "infra"}]}, {"b.md", "c.md"}),
    ("and-value-first", {"year": {"$gt": 2020}, "team": "search"}, {"c.md"}),
    ("mixed-kinds", {"year": {"$gte": 2000, "$lt": "z"}}, set()),
    ("kind-not-indexed", {"author.name": {"$gt": "A"}}, {"a.md", "b.md"}),
    ("not-range", {"$not": {"year": {"$lt": 2019}}}, {"b.md", "c.md", "d.md"}),
]
ALL = CASES + RANGE_CASES
# with the fields above indexed, these give candidates beyond the value-pinning ones: the
# document.year ranges of the filter tests, and every range case but the two without
RANGED = {"gt", "gt-none", "gte", "range", "string-compare"} | {
    name for name, _, _ in RANGE_CASES if name not in ("kind-not-indexed", "not-range")
}


@pytest.fixture(scope="module")
def indexed(docs: Runtime) -> Iterator[Runtime]:
    with docs.db.connect(autocommit=True) as conn:
        for index in INDEXED:
            assert field_indexes.add(conn, index)
    yield docs
    with docs.db.connect(autocommit=True) as conn:
        for index in INDEXED:
            field_indexes.drop_indexes(conn, index)


@pytest.mark.parametrize(
    ("where", "expected"), [(w, e) for _, w, e in ALL], ids=[name for name, _, _ in ALL]
)
def test_filters_keep_the_same_chunks_with_indexed_fields(
    indexed: Runtime, monkeypatch: pytest.MonkeyPatch, where: dict[str, Any], expected: set[str]
) -> None:
    """Through the candidates (exact branch) or past the bound (the index scans), a
    filter keeps what it keeps without indexes, chunk values overriding documents'."""
    for bound in (0, 1, service.EXACT_FILTER_CHUNKS):
        monkeypatch.setattr(service, "EXACT_FILTER_CHUNKS", bound)
        for mode in ("vector", "hybrid"):
            assert sources(indexed, where, mode=mode) == expected, (bound, mode)


def _found(rt: Runtime, where: dict[str, Any]) -> set[str] | None:
    with rt.db.connection() as conn:
        compiled = compile_filter(where, indexed=field_indexes.indexed(conn))
    if compiled.candidates is None:
        return None
    stmt = sql.SQL(
        "SELECT DISTINCT d.source FROM ({}) f JOIN chunks c ON c.id = f.id"
        " JOIN documents d ON d.id = c.document_id"
    ).format(compiled.candidates)
    with rt.db.connection() as conn:
        rows = conn.execute(stmt, {**compiled.params, "cid": rt.collection(COLL).id})
        return {r[0] for r in rows}


def test_candidates_hold_every_chunk_a_range_keeps(indexed: Runtime) -> None:
    """The candidate statement finds at least what each filter keeps; exactly the
    value-pinning filters and the ranges of an indexed field's kind get one."""
    probed = set()
    for name, where, expected in ALL:
        found = _found(indexed, where)
        if found is not None:
            probed.add(name)
            assert expected <= found, name
    assert probed == PROBED | RANGED


def test_values_are_probed_before_a_range() -> None:
    """Of ANDed conditions a pinned value is the probe (its width is known small), not
    the range; a range alone is probed through the typed value the indexes hold."""
    both = compile_filter({"year": {"$gt": 2020}, "team": "search"}, indexed=INDEXED)
    assert both.candidates is not None
    text = both.candidates.as_string(None)
    assert "@>" in text and "jsonb_typeof" not in text
    alone = compile_filter({"year": {"$gt": 2020}}, indexed=INDEXED)
    assert alone.candidates is not None and "jsonb_typeof" in alone.candidates.as_string(None)
    assert compile_filter({"year": {"$gt": 2020}}).candidates is None


@pytest.mark.parametrize(
    ("where", "kind"), [({"year": {"$gte": 2019}}, "number"), ({"year": {"$lt": "v"}}, "string")]
)
def test_a_range_reads_both_indexes(indexed: Runtime, where: dict[str, Any], kind: str) -> None:
    """The probe repeats the indexes' expression: the planner uses them."""
    plan = candidates_plan(indexed, compile_filter(where, indexed=INDEXED))
    index = FieldIndex(("year",), kind)
    assert index.name("documents") in plan and index.name("chunks") in plan


def test_an_index_left_invalid_is_not_used_and_is_built_again(docs: Runtime) -> None:
    index = FieldIndex(("score",), "number")
    with docs.db.connect(autocommit=True) as conn:
        assert field_indexes.add(conn, index)
        assert not field_indexes.add(conn, index)  # both there already
        assert index in field_indexes.indexed(conn)
        # what a failed CREATE INDEX CONCURRENTLY leaves
        conn.execute(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass",
            (index.name("chunks"),),
        )
        assert index not in field_indexes.indexed(conn)
        assert field_indexes.add(conn, index)
        assert index in field_indexes.indexed(conn)
        assert field_indexes.drop_indexes(conn, index)
        assert not field_indexes.drop_indexes(conn, index)
        assert index not in field_indexes.indexed(conn)


def test_search_sees_this_process_s_changes_at_once(docs: Runtime) -> None:
    index = FieldIndex(("rank",), "number")
    where = {"rank": {"$lt": 3}}
    assert index not in service.indexed_fields(docs, where)
    with docs.db.connect(autocommit=True) as conn:
        field_indexes.add(conn, index)
    assert index in service.indexed_fields(docs, where)
    assert service.indexed_fields(docs, {"rank": 2}) == []  # no range: not read
    with docs.db.connect(autocommit=True) as conn:
        field_indexes.drop_indexes(conn, index)
    assert index not in service.indexed_fields(docs, where)


def test_a_build_waiting_for_an_older_transaction_says_which_then_finishes(
    docs: Runtime,
) -> None:
    """A concurrent build waits for every older transaction (a bulk load's, for minutes):
    the waiter is told which, once, and the build completes when it ends."""
    told: list[list[field_indexes.Blocker]] = []
    result: list[bool] = []
    with docs.db.connect() as holder:  # a writer's transaction open since before the build
        holder.execute("UPDATE documents SET title = title WHERE false")
        holder_pid = holder.info.backend_pid
        build = threading.Thread(
            target=lambda: result.append(
                field_indexes.declare(docs.db, "floor", "number", on_wait=told.append)
            )
        )
        build.start()
        deadline = time.monotonic() + 30
        while not told and time.monotonic() < deadline:
            time.sleep(0.1)
        assert build.is_alive() and not result, "the build waits for the open transaction"
        holder.commit()
    build.join(timeout=60)
    assert result == [True]
    assert len(told) == 1 and [b.pid for b in told[0]] == [holder_pid]
    assert told[0][0].state == "idle in transaction" and told[0][0].since is not None
    with docs.db.connect(autocommit=True) as conn:
        assert FieldIndex(("floor",), "number") in field_indexes.indexed(conn)
        field_indexes.drop_indexes(conn, FieldIndex(("floor",), "number"))


def test_concurrent_declarations_run_one_at_a_time(docs: Runtime) -> None:
    """Three identical requests and one for another field at once (two HTTP clients, or
    a script run twice): each succeeds, one of the identical ones builds and the others
    find it built. Unserialised, PostgreSQL ended two of three with a deadlock."""
    results: dict[int, object] = {}

    def declare(i: int, field: str) -> None:
        try:
            results[i] = field_indexes.declare(docs.db, field, "number")
        except RagstoreError as exc:  # a deadlock came back as a ConflictError
            results[i] = exc

    calls = [(0, "lift"), (1, "lift"), (2, "lift"), (3, "stairs")]
    threads = [threading.Thread(target=declare, args=c) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(str(results[i]) for i in (0, 1, 2)) == ["False", "False", "True"], results
    assert results[3] is True
    with docs.db.connect(autocommit=True) as conn:
        assert field_indexes.broken(conn) == ([], [])
        for field in ("lift", "stairs"):
            assert FieldIndex((field,), "number") in field_indexes.indexed(conn)
            assert field_indexes.drop_indexes(conn, FieldIndex((field,), "number"))


def test_a_build_nothing_blocks_is_not_reported(docs: Runtime) -> None:
    told: list[list[field_indexes.Blocker]] = []
    assert field_indexes.declare(docs.db, "storey", "number", on_wait=told.append)
    assert field_indexes.declare(docs.db, "storey", "number", drop=True, on_wait=told.append)
    assert told == []


@pytest.mark.parametrize(
    ("field", "kind", "message"),
    [
        ("year", "date", "unknown field type 'date'"),
        ("a..b", "number", "invalid metadata field"),
        ("", "number", "invalid metadata field"),
        ("x" * 300, "string", "invalid metadata field"),
        ("$gt", "number", "invalid metadata field '\\$gt': no filter could name it"),
        ("page", "number", "'page' is not a metadata path"),
        ("chunk.year", "number", "is not a metadata path"),
        ("document.year", "number", "is not a metadata path"),
    ],
)
def test_bad_fields_are_refused(field: str, kind: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        field_indexes.parse_field(field, kind)


def test_cli_indexes_lists_and_drops_a_field(
    docs: Runtime, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("db", "index-field", "published", "--type", "string") == 0
    assert "indexed: string field 'published'" in capsys.readouterr().out
    assert run_cli("db", "index-fields", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert {"field": "published", "type": "string"} in listed
    assert run_cli("db", "index-field", "published", "--type", "date") == 65
    assert "unknown field type" in capsys.readouterr().err
    assert run_cli("db", "index-field", "published", "--type", "string", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {
        "field": "published",
        "type": "string",
        "indexed": True,
        "changed": False,
    }
    assert run_cli("db", "index-field", "published", "--type", "string", "--drop") == 0
    assert "dropped" in capsys.readouterr().out
    assert run_cli("db", "index-fields", "--json") == 0
    assert {"field": "published", "type": "string"} not in json.loads(capsys.readouterr().out)


def test_db_check_finds_and_repairs_field_indexes_search_cannot_use(docs: Runtime) -> None:
    from ragstore.integrity import check

    index = FieldIndex(("grade",), "number")
    stray = f"{field_indexes.PREFIX}number_0123456789abcdef_d"
    with docs.db.connect(autocommit=True) as conn:
        field_indexes.add(conn, index)
        conn.execute(  # what a failed CREATE INDEX CONCURRENTLY leaves
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass",
            (index.name("documents"),),
        )
        conn.execute(sql.SQL("CREATE INDEX {} ON documents ((1))").format(sql.Identifier(stray)))
    problems = [f.problem for f in check(docs).findings]
    assert any("'grade' (number)" in p for p in problems), problems
    assert any(stray in p for p in problems), problems
    repaired = check(docs, repair=True)
    assert repaired.ok and len(repaired.findings) == 2
    assert check(docs).findings == []
    with docs.db.connect(autocommit=True) as conn:
        assert index in field_indexes.indexed(conn)
        assert field_indexes.broken(conn) == ([], [])
        field_indexes.drop_indexes(conn, index)


def test_a_fields_index_left_unlabelled_is_rebuilt_and_kept(docs: Runtime) -> None:
    """A build killed between its CREATE and its label leaves the field's index under its
    own name with no label: the repair rebuilt the field under that name, then dropped
    the unlabelled names it had read before (that very index), said repaired, and the
    next check found the index missing."""
    from ragstore.integrity import check

    index = FieldIndex(("level",), "number")
    with docs.db.connect(autocommit=True) as conn:
        field_indexes.add(conn, index)
        conn.execute(
            sql.SQL("COMMENT ON INDEX {} IS NULL").format(sql.Identifier(index.name("chunks")))
        )
        assert index.name("chunks") in field_indexes.broken(conn)[1]
    repaired = check(docs, repair=True)
    assert repaired.ok and all(f.repaired for f in repaired.findings), repaired.findings
    assert check(docs).findings == []
    with docs.db.connect(autocommit=True) as conn:
        assert field_indexes.broken(conn) == ([], [])
        field_indexes.drop_indexes(conn, index)


def test_db_check_repairs_of_field_indexes_behind_a_stuck_load_give_up_busy(
    docs: Runtime,
) -> None:
    """A concurrent build or drop waits for every transaction holding a lock on its table:
    behind a stuck bulk load ``db check --repair`` rebuilt an indexed field's index for
    good. It now gives up after ``RAGSTORE_BULK_LOAD_WAIT_S``, reported busy (retry), the
    index its build left labelled as the field's (it cannot be dropped while the load
    holds the table), and repairs the field once the load has ended."""
    from ragstore.db import documents
    from ragstore.integrity import check

    index = FieldIndex(("shelf",), "number")
    with docs.db.connect(autocommit=True) as conn:
        field_indexes.add(conn, index)
        conn.execute(f"DROP INDEX {index.name('chunks')}")  # a hand-made drop
    short = Runtime(docs.settings.model_copy(update={"bulk_load_wait_s": 0.5}))
    with short, docs.db.connection() as stuck:  # a bulk load, hung: it holds its tables
        documents.begin_bulk(stuck, docs.collection(COLL).id)
        stuck.execute("LOCK TABLE documents, chunks IN ROW EXCLUSIVE MODE")  # its inserts'
        stuck_for_good, done, failed = run_behind(lambda: check(short, repair=True), stuck.rollback)
    assert not stuck_for_good, "the repair waited past its deadline"
    assert not failed, failed
    (report,) = done
    (found,) = [f for f in report.findings if "'shelf'" in f.problem]
    assert not found.repaired and not report.ok and report.retry
    assert found.busy is not None and found.busy.startswith(
        "rebuilding the indexes of field 'shelf' waited 0.5s for transactions holding its table"
    ), found.busy
    with docs.db.connect(autocommit=True) as conn:
        # the build's invalid index names its field: not reported as naming none (that
        # repair dropped the field's index after rebuilding it)
        assert field_indexes.broken(conn) == ([index], [])
    assert check(docs, repair=True).ok  # once the load has ended
    with docs.db.connect(autocommit=True) as conn:
        assert field_indexes.broken(conn) == ([], [])
        assert index in field_indexes.indexed(conn)
        field_indexes.drop_indexes(conn, index)
