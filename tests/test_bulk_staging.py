"""A bulk load's vectors go to a staging table on a second connection, indexed there while
the load's own transaction builds BM25, and swapped in for the space's empty table before
the load commits (``ingest.staging``, ``spaces.attach_load_table``).

The swapped-in table must be indistinguishable from one the incremental path fills (same
columns, key and index, deletes reaching it); vectors of chunks the load replaced are not
carried over; a swap that fails copies the rows instead;
and no failure leaves a staging table behind.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ragstore import integrity
from ragstore.config import Settings
from ragstore.db import catalog, documents, spaces
from ragstore.db import integrity as db_integrity
from ragstore.errors import ConflictError, DatabaseUnavailableError
from ragstore.ingest import ingest_paths, service, staging
from ragstore.ingest.service import IngestReport, Item, ingest_items
from ragstore.runtime import Runtime
from ragstore.search import search
from ragstore.search import service as search_service
from tests.models.corpus import write_corpus


@pytest.fixture(autouse=True)
def stage_small_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stage loads of any size (only loads of tens of megabytes are staged by default)."""
    monkeypatch.setattr(service, "STAGE_MIN_BYTES", 0)


@pytest.fixture(scope="module")
def bulk_rt(settings: Settings) -> Iterator[Runtime]:
    """Bulk loads from 2 KB, written in rounds of a few chunks."""
    rt = Runtime(settings.model_copy(update={"bulk_load_bytes": 2048, "ingest_batch_chunks": 8}))
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def incremental_shape(
    bulk_rt: Runtime, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, object]:
    """The shape of a space table the incremental path filled (a load under
    ``bulk_load_bytes``): what every swapped-in table is compared with, made here so that
    each test also runs alone."""
    folder = write_corpus(tmp_path_factory.mktemp("inc-ref"), docs=1, paragraphs=1)
    report = ingest_paths(bulk_rt, [folder], "inc-ref")
    assert not report.failed and "attach" not in report.stages
    return _shape(bulk_rt, bulk_rt.collection("inc-ref").table)


def _shape(rt: Runtime, table: str) -> dict[str, object]:
    """A space table's definition with its own name taken out: columns, constraints,
    indexes and options."""
    with rt.db.connection() as conn:
        cols = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
            " WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped"
            " ORDER BY attnum",
            (table,),
        ).fetchall()
        cons = conn.execute(
            "SELECT conname, contype, convalidated, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = to_regclass(%s) ORDER BY conname",
            (table,),
        ).fetchall()
        idx = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s ORDER BY 1",
            (table,),
        ).fetchall()
        opts = conn.execute(
            "SELECT reloptions, relpersistence FROM pg_class WHERE oid = to_regclass(%s)",
            (table,),
        ).fetchone()
    return {
        "columns": cols,
        "constraints": [tuple(str(v).replace(table, "T") for v in c) for c in cons],
        "indexes": [tuple(str(v).replace(table, "T") for v in i) for i in idx],
        "options": opts,
    }


def _staged_tables(rt: Runtime) -> list[str]:
    with rt.db.connection() as conn:
        return [
            str(r[0])
            for r in conn.execute(
                "SELECT relname FROM pg_class WHERE relkind = 'r'"
                " AND (relname LIKE 'ragstore\\_load\\_%' OR relname LIKE 'ragstore\\_old\\_%')"
            )
        ]


def _vectors(rt: Runtime, table: str) -> int:
    with rt.db.connection() as conn:
        return spaces.count_vectors(conn, table)


def _embeddable_chunks(rt: Runtime, collection_id: int) -> int:
    with rt.db.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM chunks WHERE collection_id = %s AND chunk_type <> 'heading'",
            (collection_id,),
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_bulk_load_swaps_in_a_table_like_the_incremental_one(
    bulk_rt: Runtime, tmp_path: Path
) -> None:
    report = ingest_paths(bulk_rt, [write_corpus(tmp_path / "b", docs=8, paragraphs=3)], "stg")
    assert not report.failed and "attach" in report.stages
    small = ingest_paths(bulk_rt, [write_corpus(tmp_path / "s", docs=1, paragraphs=1)], "inc")
    assert not small.failed and "attach" not in small.stages
    bulk, inc = bulk_rt.collection("stg"), bulk_rt.collection("inc")
    assert _shape(bulk_rt, bulk.table) == _shape(bulk_rt, inc.table)
    assert _staged_tables(bulk_rt) == []
    assert _vectors(bulk_rt, bulk.table) == _embeddable_chunks(bulk_rt, bulk.id) >= 8
    text = "Paragraph 1 of doc3: how to care for espresso, with detail number 301"
    hits = search(bulk_rt, text, collection="stg", k=1, mode="vector")
    assert hits and text in hits[0].text
    # deleting a document takes its vectors (revision 0026's trigger on chunks)
    with bulk_rt.db.connection() as conn:
        documents.delete_documents(conn, bulk.id, [hits[0].source])
    assert _vectors(bulk_rt, bulk.table) == _embeddable_chunks(bulk_rt, bulk.id)


def test_vectors_of_chunks_a_load_replaced_are_not_carried_over(
    bulk_rt: Runtime, tmp_path: Path
) -> None:
    """The same source twice in one bulk load (two uploads of one name): the second
    replaces the first, whose vectors were already staged."""
    first = write_corpus(tmp_path / "one", docs=4, paragraphs=3, prefix="first")
    second = write_corpus(tmp_path / "two", docs=4, paragraphs=3, prefix="second")
    files = sorted(first.iterdir()) + sorted(second.iterdir())
    items = [Item(f"upload-{i % 4}", f, f.name, early_skip=False) for i, f in enumerate(files)]
    report = IngestReport("twice")
    ingest_items(bulk_rt, "twice", items, report)
    assert not report.failed and "attach" in report.stages
    assert sorted(o.status for o in report.outcomes) == ["added"] * 4 + ["updated"] * 4
    coll = bulk_rt.collection("twice")
    assert _vectors(bulk_rt, coll.table) == _embeddable_chunks(bulk_rt, coll.id)
    with bulk_rt.db.connection() as conn:
        orphans = conn.execute(
            f"SELECT count(*) FROM {coll.table} e"
            " WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = e.chunk_id)"
        ).fetchone()
    assert orphans == (0,)


def test_a_writer_of_chunks_does_not_hold_the_swap_up(
    bulk_rt: Runtime, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another transaction writing ``chunks`` (here a delete that matched nothing; in life
    another collection's load) used to hold the lock the space table's foreign key
    needed, for creating the collection and for the swap. Space tables have no foreign key
    now (revision 0026): neither waits."""
    folder = write_corpus(tmp_path / "l", docs=8, paragraphs=3, prefix="locked")
    with bulk_rt.db.connection() as other, caplog.at_level(logging.WARNING, "ragstore.db"):
        other.execute("DELETE FROM chunks WHERE id < 0")
        bulk_rt.collection("locked", create=True)
        report = ingest_paths(bulk_rt, [folder], "locked")
    assert not report.failed and "attach" in report.stages
    assert "could not take the place" not in caplog.text
    coll = bulk_rt.collection("locked")
    assert _vectors(bulk_rt, coll.table) == _embeddable_chunks(bulk_rt, coll.id) >= 8
    assert _staged_tables(bulk_rt) == []


def test_a_swap_that_cannot_replace_the_table_copies_the_rows_instead(
    bulk_rt: Runtime,
    incremental_shape: dict[str, object],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A swap that fails inside its savepoint (here the rename, as a lock timeout or a
    space's table found not empty would): the staged rows are copied into the space's
    own table, which then gets its index, and the load is stored whole."""

    def refused(*_: object) -> None:
        raise spaces._NotSwapped("refused by the test")

    monkeypatch.setattr(spaces, "_rename", refused)
    folder = write_corpus(tmp_path / "c", docs=8, paragraphs=3, prefix="copied")
    with caplog.at_level(logging.WARNING, "ragstore.db"):
        report = ingest_paths(bulk_rt, [folder], "copied")
    assert not report.failed
    assert "could not take the place" in caplog.text and "refused by the test" in caplog.text
    assert report.stages.keys() >= {"attach", "index_build", "bm25_build"}
    coll = bulk_rt.collection("copied")
    with bulk_rt.db.connection() as conn:
        assert spaces.has_index(conn, coll.table)
    assert _vectors(bulk_rt, coll.table) == _embeddable_chunks(bulk_rt, coll.id) >= 8
    assert _staged_tables(bulk_rt) == []
    assert _shape(bulk_rt, coll.table) == incremental_shape


def test_a_load_whose_staging_connection_dies_leaves_nothing(
    bulk_rt: Runtime, tmp_path: Path
) -> None:
    folder = write_corpus(tmp_path / "d", docs=8, paragraphs=3, prefix="dies")
    coll = bulk_rt.collection("dies", create=True)
    killed: list[int] = []

    def kill(*_: object) -> None:
        if killed:
            return
        with bulk_rt.db.connection() as conn:
            pids = [
                int(r[0])
                # the staging table is not committed yet: its connection is the one that
                # holds the space's table, which it was created LIKE
                for r in conn.execute(
                    "SELECT DISTINCT pid FROM pg_locks WHERE relation = to_regclass(%s)"
                    " AND pid <> pg_backend_pid()",
                    (coll.table,),
                )
            ]
            killed.extend(pids)
            for pid in pids:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))

    report = ingest_paths(bulk_rt, [folder], "dies", progress=kill)
    assert len(killed) == 1, "one connection stages the load's vectors"
    # the rounds written before the load's end failed with it; the ingest stopped at the
    # lost connection, so the rounds after it were not read or encoded: not attempted
    assert report.stopped_by is not None
    assert any(o.status == "failed" for o in report.outcomes)
    assert all(o.status in ("failed", "not_attempted") for o in report.outcomes)
    assert len(report.outcomes) == len(list(folder.iterdir()))
    assert bulk_rt.db.breaker.failures == 0
    assert _embeddable_chunks(bulk_rt, coll.id) == 0 and _vectors(bulk_rt, coll.table) == 0
    assert _staged_tables(bulk_rt) == []
    # the collection still takes a load
    again = ingest_paths(bulk_rt, [folder], "dies")
    assert not again.failed and _vectors(bulk_rt, coll.table) >= 8


def test_a_leftover_staging_table_goes_with_the_next_load_or_the_collection(
    bulk_rt: Runtime, tmp_path: Path
) -> None:
    """As a process killed between the staging and the load commits would leave it."""
    ingest_paths(bulk_rt, [write_corpus(tmp_path / "x", docs=1, paragraphs=1)], "left")
    coll = bulk_rt.collection("left")
    with bulk_rt.db.connection() as conn:
        spaces.create_load_table(conn, coll.table)
    assert _staged_tables(bulk_rt) == [spaces.load_table(coll.table)]
    with bulk_rt.db.connection() as conn:
        catalog.delete_collection(conn, coll)
    assert _staged_tables(bulk_rt) == []
    ingest_paths(bulk_rt, [write_corpus(tmp_path / "y", docs=1, paragraphs=1)], "left2")
    coll2 = bulk_rt.collection("left2")
    with bulk_rt.db.connection() as conn:  # emptied, as a killed first load leaves it
        conn.execute(f"DELETE FROM documents WHERE collection_id = {coll2.id}")
        spaces.create_load_table(conn, coll2.table)
    report = ingest_paths(bulk_rt, [write_corpus(tmp_path / "z", docs=8, paragraphs=3)], "left2")
    assert not report.failed and "attach" in report.stages
    assert _staged_tables(bulk_rt) == []


def test_a_reader_of_chunks_does_not_hold_the_swap_up(
    bulk_rt: Runtime,
    incremental_shape: dict[str, object],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Dropping the space's empty table locks that table only (revision 0026): a reader's
    transaction open on ``chunks`` lets the load swap at once."""
    folder = write_corpus(tmp_path / "r", docs=8, paragraphs=3, prefix="read")
    bulk_rt.collection("reader", create=True)
    with bulk_rt.db.connection() as reader, caplog.at_level(logging.WARNING, "ragstore.db"):
        reader.execute("SELECT count(*) FROM chunks")
        report = ingest_paths(bulk_rt, [folder], "reader")
        assert not report.failed and "attach" in report.stages
        assert "could not take the place" not in caplog.text, "readers do not stop the swap"
        assert _staged_tables(bulk_rt) == []
    coll = bulk_rt.collection("reader")
    assert _shape(bulk_rt, coll.table) == incremental_shape
    assert _vectors(bulk_rt, coll.table) == _embeddable_chunks(bulk_rt, coll.id)


def test_two_first_loads_of_one_collection_at_once_are_both_stored(
    bulk_rt: Runtime, tmp_path: Path
) -> None:
    """Both start on the empty space; the second waits for the first's write locks, then
    finds the space filled and copies its staged rows into it."""
    folders = [
        write_corpus(tmp_path / f"t{i}", docs=8, paragraphs=3, prefix=f"twin{i}") for i in (0, 1)
    ]
    bulk_rt.collection("twins", create=True)
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(lambda f: ingest_paths(bulk_rt, [f], "twins"), folders))
    assert all(not r.failed and r.count("added") == 8 for r in reports)
    assert sum("attach" in r.stages for r in reports) >= 1
    coll = bulk_rt.collection("twins")
    assert _vectors(bulk_rt, coll.table) == _embeddable_chunks(bulk_rt, coll.id) >= 16
    with bulk_rt.db.connection() as conn:
        assert spaces.has_index(conn, coll.table)
    ingest_paths(bulk_rt, [write_corpus(tmp_path / "t2", docs=1, paragraphs=1)], "twins")
    assert _staged_tables(bulk_rt) == []


@pytest.mark.parametrize(
    ("pool", "stage_from", "name"), [(3, 0, "pool3"), (10, 1 << 20, "small-load")]
)
def test_a_small_pool_or_a_small_load_builds_in_the_load_transaction(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pool: int,
    stage_from: int,
    name: str,
) -> None:
    """With fewer pooled connections than a staged load takes, or a load below
    ``STAGE_MIN_BYTES``, the load stays whole in one transaction, its two builds one
    after the other."""
    monkeypatch.setattr(service, "STAGE_MIN_BYTES", stage_from)
    update = {"bulk_load_bytes": 2048, "ingest_batch_chunks": 8, "pool_max_size": pool}
    with Runtime(settings.model_copy(update=update)) as rt:
        report = ingest_paths(rt, [write_corpus(tmp_path / "p", docs=8, paragraphs=3)], name)
        assert not report.failed
        assert report.stages.keys() >= {"bm25_build", "index_build"}
        assert "attach" not in report.stages
        coll = rt.collection(name)
        with rt.db.connection() as conn:
            assert spaces.has_index(conn, coll.table)
        assert _vectors(rt, coll.table) == _embeddable_chunks(rt, coll.id) >= 8


def test_a_load_whose_bm25_build_fails_leaves_nothing(
    bulk_rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The load's connection dies while the staged vectors are being indexed: the build on
    the staging connection is stopped, and neither transaction leaves anything."""

    def dying(conn: psycopg.Connection[Any], *_: object) -> int:
        conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return 0

    real = documents.finish_bulk
    monkeypatch.setattr(documents, "finish_bulk", dying)
    folder = write_corpus(tmp_path / "f", docs=8, paragraphs=3, prefix="fails")
    # made first: a collection the failed load made itself would be removed with it
    bulk_rt.collection("fails", create=True)
    report = ingest_paths(bulk_rt, [folder], "fails")
    assert report.outcomes and all(o.status == "failed" for o in report.outcomes)
    coll = bulk_rt.collection("fails")
    assert _embeddable_chunks(bulk_rt, coll.id) == 0 and _vectors(bulk_rt, coll.table) == 0
    assert _staged_tables(bulk_rt) == []
    monkeypatch.setattr(documents, "finish_bulk", real)
    again = ingest_paths(bulk_rt, [folder], "fails")
    assert not again.failed and "attach" in again.stages


def test_a_bulk_load_waiting_behind_a_stuck_one_fails_by_its_deadline(
    settings: Settings, tmp_path: Path
) -> None:
    """A bulk load waits for its share of the pool (``staging.load_connections``) while this
    process's other loads hold it; behind one that was stuck it waited for good. It now
    fails after ``RAGSTORE_BULK_LOAD_WAIT_S``, retryable, with nothing stored."""
    folder = write_corpus(tmp_path / "late", docs=8, paragraphs=3)
    update = {"bulk_load_bytes": 1024, "pool_max_size": 4, "bulk_load_wait_s": 0.5}
    with Runtime(settings.model_copy(update=update)) as rt:

        @contextmanager
        def stuck_load() -> Iterator[None]:  # holds the loads' whole share, and a connection
            with staging.load_connections(rt, 2), rt.db.connection() as conn:
                conn.execute("SELECT 1")
                yield

        report = _ingest_behind(rt, stuck_load, folder, "late")
        err = report.stopped_by
        assert isinstance(err, DatabaseUnavailableError) and err.busy, report.outcomes
        assert "RAGSTORE_BULK_LOAD_WAIT_S" in str(err) and "nothing" in str(err), err
        assert {o.status for o in report.outcomes} <= {"failed", "not_attempted"}, report
        assert rt.db.breaker.failures == 0
        with rt.db.connection() as conn:
            assert catalog.collection_names(conn).count("late") <= 1
            stored = conn.execute(
                "SELECT count(*) FROM documents d JOIN collections c ON c.id = d.collection_id"
                " WHERE c.name = 'late'"
            ).fetchone()
        assert stored == (0,)


def test_a_bulk_load_behind_a_stuck_load_of_its_collection_fails_by_its_deadline(
    settings: Settings, tmp_path: Path
) -> None:
    """A second bulk load of a collection waits for its write locks (``begin_bulk``) while
    another write of it holds them; behind a stuck one it waited for good. It now fails
    after ``RAGSTORE_BULK_LOAD_WAIT_S``, retryable, nothing stored, the breaker shut."""
    folder = write_corpus(tmp_path / "locked", docs=8, paragraphs=3)
    update = {"bulk_load_bytes": 1024, "pool_max_size": 6, "bulk_load_wait_s": 0.5}
    with Runtime(settings.model_copy(update=update)) as rt:
        name = f"locked_{uuid.uuid4().hex[:8]}"  # the database outlives a run: a new one
        coll = rt.collection(name, create=True)

        @contextmanager
        def stuck_load() -> Iterator[None]:  # a load of the collection that took its locks
            with rt.db.connection() as conn:
                documents.begin_bulk(conn, coll.id)
                yield

        report = _ingest_behind(rt, stuck_load, folder, name)
        errors = [o.exc for o in report.outcomes if o.exc is not None] + [report.stopped_by]
        err = next(e for e in errors if e is not None)
        assert isinstance(err, DatabaseUnavailableError) and err.busy, report.outcomes
        assert repr(name) in str(err) and "RAGSTORE_BULK_LOAD_WAIT_S" in str(err), err
        assert {o.status for o in report.outcomes} <= {"failed", "not_attempted"}, report
        assert rt.db.breaker.failures == 0
        with rt.db.connection() as conn:
            stored = conn.execute(
                "SELECT count(*) FROM documents WHERE collection_id = %s", (coll.id,)
            ).fetchone()
        assert stored == (0,)
        again = ingest_paths(rt, [folder], name)  # once the stuck load ended
        assert not again.failed and len(again.outcomes) == 8, again


def _ingest_behind(
    rt: Runtime, stuck: Callable[[], AbstractContextManager[None]], folder: Path, name: str
) -> IngestReport:
    """The report of a bulk ingest of ``folder`` into ``name`` started while another thread
    sits inside ``stuck()`` (a load that took what this one waits for, then hung); the
    stuck one is let go once the ingest has ended, which it must do by its deadline."""
    holding, release = threading.Event(), threading.Event()

    def hang() -> None:
        with stuck():
            holding.set()
            release.wait(60)

    reports: list[IngestReport] = []
    stuck_thread = threading.Thread(target=hang)
    late = threading.Thread(target=lambda: reports.append(ingest_paths(rt, [folder], name)))
    try:
        stuck_thread.start()
        assert holding.wait(20)
        late.start()
        late.join(60)  # the model's loading included: on a loaded machine, seconds
        assert not late.is_alive(), "the load waited past its deadline"
    finally:
        release.set()
        stuck_thread.join(60)
        late.join(60)
    (report,) = reports
    return report


def test_a_one_snapshot_search_across_a_rebuilding_swap_reads_the_old_vectors(
    bulk_rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hybrid search's last resort (both lists in one REPEATABLE READ snapshot) whose
    snapshot was taken before a rebuilding load staged its vectors, and whose vector list
    read after the load swapped its table in: the new table's rows were written after the
    snapshot, so the vector list found nothing, and the answer was the BM25 list alone,
    as if the collection had no vectors. The space's table is locked before the snapshot
    now: the swap waits for the search (or copies its rows), and the search reads the old
    table whole."""
    name = "swapsearch"
    ingest_paths(bulk_rt, [write_corpus(tmp_path / "o", docs=1, paragraphs=2, prefix="old")], name)
    big = write_corpus(tmp_path / "n", docs=12, paragraphs=3, prefix="new")
    monkeypatch.setattr(search_service, "_mixed_writes", lambda *_: True)  # the last resort
    monkeypatch.setattr(spaces, "ATTACH_LOCK_TIMEOUT", "1s")  # the swap waits for the search
    snapshot, loaded = threading.Event(), threading.Event()
    original = search_service._bind_ftcond

    def bind(conn: Any, values: Any, ftcond: Any) -> None:
        in_transaction = conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        if in_transaction and not snapshot.is_set():  # the one-snapshot one: the load runs now
            conn.execute("SELECT 1")  # its snapshot, as its first query takes it
            snapshot.set()
            assert loaded.wait(120)
        original(conn, values, ftcond)

    monkeypatch.setattr(search_service, "_bind_ftcond", bind)
    vector_rows: list[int] = []
    run = search_service._Statement.execute_in_one_snapshot

    def one_snapshot(self: Any, lists: Any) -> Any:
        out = run(self, lists)
        vector_rows.append(len(out[0]))
        return out

    monkeypatch.setattr(search_service._Statement, "execute_in_one_snapshot", one_snapshot)
    with ThreadPoolExecutor(1) as pool:
        hits = pool.submit(search, bulk_rt, "tomatoes notes", collection=name, mode="hybrid")
        assert snapshot.wait(60) or hits.result()
        try:
            report = ingest_paths(bulk_rt, [big], name)
        finally:
            loaded.set()
        found = hits.result(timeout=120)
    assert not report.failed and "attach" in report.stages, report.stages
    assert vector_rows and vector_rows[0] > 0, vector_rows
    assert {h.source for h in found} == {str(tmp_path / "o" / "old000.md")}


def test_a_check_across_a_rebuilding_swap_finds_no_missing_vectors(
    bulk_rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``db check`` reads a collection in one REPEATABLE READ snapshot. One taken before a
    rebuilding load staged its vectors, counting them after the load swapped its table
    in, saw none of the new table's rows: every chunk was reported without a vector (exit
    1, and ``--repair`` embedded the whole collection again). The space's table is
    locked before the snapshot now, so the check reads one table whole."""
    name = "swapcheck"
    ingest_paths(bulk_rt, [write_corpus(tmp_path / "o", docs=1, paragraphs=2, prefix="old")], name)
    big = write_corpus(tmp_path / "n", docs=12, paragraphs=3, prefix="new")
    counted, loaded = threading.Event(), threading.Event()
    original = db_integrity.chunk_count

    def chunk_count(conn: Any, collection_id: int) -> int:
        n = original(conn, collection_id)  # the check's snapshot: the load runs now
        if not counted.is_set():
            counted.set()
            assert loaded.wait(120)
        return n

    monkeypatch.setattr(db_integrity, "chunk_count", chunk_count)
    with ThreadPoolExecutor(1) as pool:
        checked = pool.submit(integrity.check, bulk_rt, name)
        assert counted.wait(60) or checked.result()
        try:
            report = ingest_paths(bulk_rt, [big], name)
        finally:
            loaded.set()
        found = checked.result(timeout=120)
    assert not report.failed and "attach" in report.stages, report.stages
    assert found.findings == [] and found.ok, found.as_dict()


def _staged_locks(rt: Runtime) -> int:
    """Sessions holding a staged table's lock (``spaces.lock_staged``)."""
    with rt.db.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2"
            " AND classid::bigint = %s AND database ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())",
            (spaces.STAGED_LOCKS,),
        ).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def _paused_before_the_swap(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[threading.Event, threading.Event]]:
    """A load stops between its two commits (its staged table committed, its swap not
    begun) until the test sets the second event; the first says it got there."""
    paused, go_on = threading.Event(), threading.Event()
    real = spaces.attach_load_table

    def attach(conn: psycopg.Connection[Any], table: str, **kw: Any) -> bool:
        paused.set()
        assert go_on.wait(120), "the test never let the load go on"
        return real(conn, table, **kw)

    monkeypatch.setattr(spaces, "attach_load_table", attach)
    try:
        yield paused, go_on
    finally:
        go_on.set()


def test_a_check_between_a_loads_two_commits_neither_reports_nor_drops_its_table(
    bulk_rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The staged table is committed and the load's transaction holds no lock that tells
    (an ingest locks its space's table in a short transaction of its own): the load's
    lock on it does. A ``--repair`` there dropped it and the load failed whole."""
    ingest_paths(bulk_rt, [write_corpus(tmp_path / "b", docs=1, paragraphs=1)], "beside")
    folder = write_corpus(tmp_path / "w", docs=8, paragraphs=3, prefix="window")
    with _paused_before_the_swap(monkeypatch) as (paused, go_on), ThreadPoolExecutor(1) as pool:
        load = pool.submit(ingest_paths, bulk_rt, [folder], "window")
        assert paused.wait(120), "the load never reached its swap"
        staged = spaces.load_table(bulk_rt.collection("window").table)
        assert staged in _staged_tables(bulk_rt)
        report = integrity.check(bulk_rt, "beside")
        assert staged not in report.leftovers and report.ok, report.findings
        report = integrity.check(bulk_rt, "beside", repair=True)
        assert staged not in report.leftovers and report.ok, report.findings
        assert staged in _staged_tables(bulk_rt)
        go_on.set()
        done = load.result(timeout=120)
    assert not done.failed and "attach" in done.stages
    coll = bulk_rt.collection("window")
    assert _vectors(bulk_rt, coll.table) == _embeddable_chunks(bulk_rt, coll.id) >= 8
    # the load over, its lock is gone with it (no pooled connection kept it): a table
    # left under that name now is a leftover, reported and dropped as before
    assert _staged_locks(bulk_rt) == 0
    with bulk_rt.db.connection() as conn:
        spaces.create_load_table(conn, coll.table)
    assert staged in integrity.check(bulk_rt, "beside").leftovers
    assert staged in integrity.check(bulk_rt, "beside", repair=True).leftovers
    assert staged not in _staged_tables(bulk_rt)


def test_a_load_failing_between_its_two_commits_drops_its_table_and_lets_go_of_it(
    bulk_rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*_: object, **__: object) -> bool:
        raise ConflictError("refused by the test")

    real = spaces.attach_load_table
    monkeypatch.setattr(spaces, "attach_load_table", refused)
    folder = write_corpus(tmp_path / "f", docs=8, paragraphs=3, prefix="letgo")
    bulk_rt.collection("letgo", create=True)
    report = ingest_paths(bulk_rt, [folder], "letgo")
    assert report.outcomes and all(o.status == "failed" for o in report.outcomes)
    assert all("refused by the test" in (o.error or "") for o in report.outcomes)
    assert _staged_tables(bulk_rt) == [] and _staged_locks(bulk_rt) == 0
    monkeypatch.setattr(spaces, "attach_load_table", real)
    again = ingest_paths(bulk_rt, [folder], "letgo")
    assert not again.failed and "attach" in again.stages and _staged_locks(bulk_rt) == 0
