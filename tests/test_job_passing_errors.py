"""A background job's documents not stored for a passing cause (a lock timeout, a collision,
a model switched under the job) are run again and, still not stored, fail the job; a
document's own failure (here a 53200 of its write alone) fails that document and the job
succeeds. On the real database, with the real model, through :func:`run_job`.

Before, only an unreachable database counted as passing: a job whose documents a lock
timeout or a model switch kept out was recorded ``succeeded`` with nothing stored, and a
53200 of one document's write ran the job five times and failed it as unreachable. A
vector table pruned under the job failed it at once ("retry the request")."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ragstore.config import Settings
from ragstore.db import documents
from ragstore.db import jobs as store
from ragstore.embedding.registry import TRUNCATED_MODEL
from ragstore.errors import (
    CollectionNotFoundError,
    ConflictError,
    DatabaseUnavailableError,
    StatementCancelledError,
)
from ragstore.ingest.documents import NewDocument, add_documents
from ragstore.jobs import runner
from ragstore.jobs.queue import build_queue
from ragstore.jobs.runner import run_job
from ragstore.jobs.service import submit_ingest
from ragstore.modelops import migrate, prune
from ragstore.runtime import Runtime
from ragstore.store import Store
from ragstore.uploads import names


def _text(name: str) -> bytes:
    """A document of over 1 KB: with ``ingest_batch_chunks=1`` a round of its own."""
    paras = [
        f"{name} paragraph {p}: notes on glaciers, roses, espresso, violins and lighthouses, "
        "with a word on bicycles, sourdough and penguins."
        for p in range(10)
    ]
    return (f"# {name}\n\n" + "\n\n".join(paras) + "\n").encode()


def _queue(rt: Runtime, collection: str, files: list[str]) -> int:
    queue = build_queue(rt.db.conninfo, sync=True)
    with queue.open():
        return submit_ingest(rt, queue, collection, [store.JobFile(n, _text(n)) for n in files]).id


def _stored(rt: Runtime, collection: str) -> list[str]:
    with rt.db.connection() as conn:
        rows = conn.execute(
            "SELECT d.source FROM documents d JOIN collections c ON c.id = d.collection_id"
            " WHERE c.name = %s ORDER BY d.source",
            (collection,),
        ).fetchall()
    return [str(r[0]).rsplit("/", 1)[-1] for r in rows]


@contextmanager
def _trigger(database_url: str, body: str, when: str) -> Iterator[psycopg.Connection[Any]]:
    """A BEFORE INSERT trigger on ``documents`` running ``body`` where ``when`` holds."""
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(
            "CREATE SEQUENCE fault_seq;"
            " CREATE FUNCTION fault() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN {body} RETURN NEW; END $$;"
            " CREATE TRIGGER fault BEFORE INSERT ON documents FOR EACH ROW"
            f" WHEN ({when}) EXECUTE FUNCTION fault();"
        )
        try:
            yield admin
        finally:
            admin.execute(
                "DROP TRIGGER fault ON documents; DROP FUNCTION fault(); DROP SEQUENCE fault_seq"
            )


def test_a_job_whose_collection_switches_model_runs_again_and_stores_every_document(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`ragstore models migrate` switches the collection's model after the job's first
    document is stored: the next write is refused (``conflict``, "switched to another
    embedding model") and the ingest stops, the rest ``not_attempted``. The job took
    those for the documents' own errors and was recorded ``succeeded`` ({'added': 1,
    'failed': 1, 'not_attempted': 3}) with four documents never stored. It runs the
    ingest again now, at once, and stores them with the new model."""
    name = "pass-switch"
    Store.from_runtime(rt).create_collection(name)
    (tmp_path / "seed.md").write_bytes(_text("seed"))
    assert add_documents(rt, name, [NewDocument("seed.md", tmp_path / "seed.md")])[0].status == (
        "added"
    )
    files = [f"s{i}.md" for i in range(5)]
    job_id = _queue(rt, name, files)
    switched: list[str] = []
    write = documents.write_documents
    writes: list[int] = []

    def switching(*args: Any, **kwargs: Any) -> Any:
        # the first document stored, the second embedded for the old model: switch now,
        # before the second is written (its transaction holds nothing yet)
        writes.append(1)
        if len(writes) == 2:
            switched.append(migrate(rt, name, TRUNCATED_MODEL, sample_queries=0).target)
        return write(*args, **kwargs)

    monkeypatch.setattr(documents, "write_documents", switching)
    one_a_round = Settings(**{**rt.settings.model_dump(), "ingest_batch_chunks": 1})
    with Runtime(one_a_round) as small:
        done = run_job(small, job_id)
    assert switched and rt.collection(name).model.key == switched[0]
    assert (done.status, done.errors) == ("succeeded", []), done.errors
    assert done.summary["added"] == 5 and done.documents_done == 5, done.summary
    assert _stored(rt, name) == ["s0.md", "s1.md", "s2.md", "s3.md", "s4.md", "seed.md"]


def test_a_job_whose_write_a_lock_timeout_cancels_runs_again_then_fails(
    rt: Runtime, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database sets ``lock_timeout`` (as hosted ones do) and another transaction
    holds the document's write lock (a concurrent upload of the same name): the write is
    cancelled (``statement_cancelled``, "only this request failed, retry it"). The job
    was recorded ``succeeded`` with {'failed': 1} and nothing stored. It runs again now
    (here: the lock let go after the first run, and the document is stored), and where
    it is still cancelled after its last run the job fails, saying why; its record of
    the document says to send it again (it said "only this request failed, retry it")."""
    monkeypatch.setattr(runner, "RETRY_S", 0.01)
    monkeypatch.setattr(runner, "ATTEMPTS", 2)
    name = "pass-lock"
    Store.from_runtime(rt).create_collection(name)
    coll_id = rt.collection(name).id
    dbname = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {dbname} SET lock_timeout = '300ms'")
    try:
        with (
            Runtime(rt.settings) as timed,  # new sessions: they take the database's setting
            psycopg.connect(database_url) as holder,
        ):
            source = names.source_of(rt.settings, name, "held.md")

            def hold() -> None:
                documents.lock_sources(holder, coll_id, [source])

            hold()
            failed_id = _queue(rt, name, ["held.md", "free.md"])
            with pytest.raises(StatementCancelledError):  # recorded, and told the queue
                run_job(timed, failed_id)
            holder.rollback()  # the lock let go

            ingest = runner._ingest
            runs: list[int] = []

            def let_go_after_first(*args: Any, **kwargs: Any) -> Any:
                out = ingest(*args, **kwargs)
                runs.append(1)
                holder.rollback()
                return out

            hold()
            monkeypatch.setattr(runner, "_ingest", let_go_after_first)
            stored = run_job(timed, _queue(rt, name, ["held.md"]))
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {dbname} RESET lock_timeout")
    with rt.db.connection() as conn:
        failed = store.get(conn, failed_id)
    assert failed.status == "failed", (failed.summary, failed.errors)
    assert [e["code"] for e in failed.errors] == ["statement_cancelled"] * 2
    assert failed.errors[0]["document"] == "held.md"
    _says_send_it_again(failed.errors[0]["detail"], "gave up waiting for a lock")
    whole = failed.errors[-1]
    assert (
        whole["document"] is None
        and "1 of the job's 2 documents were not stored" in (whole["detail"])
    )
    assert (
        "gave up waiting for their writes' locks" in whole["detail"]
        and "'held.md'" in whole["detail"]
    )
    assert "could not be reached" not in whole["detail"]
    assert failed.summary.get("added") == 1 and failed.summary.get("failed") == 1
    assert (stored.status, stored.errors, len(runs)) == ("succeeded", [], 2), stored.errors
    assert stored.summary.get("added") == 1
    assert _stored(rt, name) == ["free.md", "held.md"]


def test_a_collision_of_a_job_s_write_runs_it_again(
    rt: Runtime, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that collided with a concurrent one (SQLSTATE class 40, here raised once
    by a trigger as a serialization failure, through the job's first run) is a retryable
    ``conflict``: the job stored the other document and was recorded ``succeeded``
    without this one. It runs again, and stores it."""
    monkeypatch.setattr(runner, "RETRY_S", 0.01)
    name = "pass-collide"
    Store.from_runtime(rt).create_collection(name)
    body = (
        "IF nextval('fault_seq') <= 2 THEN"  # its round's write, then its own: one run
        " RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001'; END IF;"
    )
    with _trigger(database_url, body, "NEW.source LIKE '%/raced.md'") as admin:
        done = run_job(rt, _queue(rt, name, ["raced.md", "calm.md"]))
        tries = admin.execute("SELECT last_value FROM fault_seq").fetchone()
    assert tries == (3,)  # the second run stored it
    assert (done.status, done.errors) == ("succeeded", []), done.errors
    assert done.summary.get("added") == 2
    assert _stored(rt, name) == ["calm.md", "raced.md"]


def test_a_collision_in_every_run_fails_the_job_saying_to_send_it_again(
    rt: Runtime, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A document whose write collides (SQLSTATE class 40) in every run of the job: the
    job fails, its record of the document saying it was not stored and to send it again.
    It said the HTTP API's "retry the request", of a request the job's reader never made.
    Each document's passing cause is told once a run: it was told twice, and again after
    the last run."""
    monkeypatch.setattr(runner, "RETRY_S", 0.01)
    monkeypatch.setattr(runner, "ATTEMPTS", 2)
    told = runner.passing_cause
    asked: list[str | None] = []

    def counted(err: Any) -> str | None:
        cause = told(err)
        asked.append(cause)
        return cause

    monkeypatch.setattr(runner, "passing_cause", counted)
    name = "pass-collide-always"
    Store.from_runtime(rt).create_collection(name)
    body = "RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001';"
    with _trigger(database_url, body, "NEW.source LIKE '%/raced.md'"):
        job_id = _queue(rt, name, ["raced.md", "calm.md"])
        with pytest.raises(ConflictError):  # recorded, and told the queue
            run_job(rt, job_id)
    with rt.db.connection() as conn:
        failed = store.get(conn, job_id)
    assert failed.status == "failed", (failed.summary, failed.errors)
    assert [(e["document"], e["code"]) for e in failed.errors] == [
        ("raced.md", "conflict"),
        (None, "conflict"),
    ]
    _says_send_it_again(failed.errors[0]["detail"], "collided with a concurrent change")
    assert failed.errors[1]["detail"].endswith(
        "; send them again (the documents that were stored stay stored)"
    )
    # two runs, two documents: each told once a run (the calm one's None too)
    assert sorted(asked, key=str) == [None, None, "collided", "collided"], asked
    assert _stored(rt, name) == ["calm.md"]


def _says_send_it_again(detail: str, why: str) -> None:
    """A job's record of a document not stored: why, and to send it again; none of the
    HTTP API's "retry it" / "retry the request", said of a request nobody had made."""
    assert detail.startswith("not stored: ") and why in detail, detail
    assert detail.endswith("; send it again (the worker's log has the details)"), detail
    assert "retry" not in detail, detail


@pytest.mark.parametrize(
    ("state", "message", "code", "why"),
    [
        # (its own reason: ``Database._lost`` told it "the database closed the connection
        # in use" whenever the server still answered, which it had not)
        ("53200", "out of memory", "database_unavailable", "the database is out of resources"),
        (
            "57014",
            "canceling statement due to statement timeout",
            "statement_cancelled",
            "the database cancelled the statement",
        ),
    ],
)
def test_a_document_s_own_out_of_memory_or_statement_timeout_fails_it_not_the_job(
    rt: Runtime,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    state: str,
    message: str,
    code: str,
    why: str,
) -> None:
    """SQLSTATE 53200 (out of memory) of one document's write is that document's failure
    (the ingest goes on past it: ``stops_ingest``), though it is a
    ``database_unavailable``: the job ran again five times for it and then failed,
    saying the database could not be reached. The job succeeds now, the document's error
    listed, after one run. So does a ``statement_timeout`` of its write (57014): unlike a
    lock timeout (55P03, another write held the lock), the write takes as long again, and
    a job run five times over it told the client to send it again. The document's record
    says to send it again, as a job's records do: a statement timeout's said "only this
    request failed, retry it", of a request the job's reader never made."""
    monkeypatch.setattr(runner, "RETRY_S", 0.01)
    name = f"pass-own-{state}"
    Store.from_runtime(rt).create_collection(name)
    body = f"PERFORM nextval('fault_seq'); RAISE EXCEPTION '{message}' USING ERRCODE = '{state}';"
    ingest = runner._ingest
    runs: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        runs.append(1)
        return ingest(*args, **kwargs)

    monkeypatch.setattr(runner, "_ingest", counted)
    with _trigger(database_url, body, "NEW.source LIKE '%/huge.md'") as admin:
        done = run_job(rt, _queue(rt, name, ["huge.md", "small.md"]))
        tries = admin.execute("SELECT last_value FROM fault_seq").fetchone()
    assert tries is not None and tries[0] >= 1  # the fault was met
    assert len(runs) == 1  # not run again for a document's own failure
    assert done.status == "succeeded", done.errors
    assert [(e["document"], e["code"]) for e in done.errors] == [("huge.md", code)]
    _says_send_it_again(done.errors[0]["detail"], why)
    assert done.summary.get("added") == 1 and done.summary.get("failed") == 1
    assert _stored(rt, name) == ["small.md"]


def test_a_job_whose_vector_table_is_pruned_runs_again_unless_its_collection_is_gone(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collection's model is switched and the old one's vectors pruned (``ragstore
    models migrate``, ``models prune``) while the job runs: its next lookup of stored
    vectors reads a table that is gone (42P01, "deleted or its model rolled back ...;
    retry the request"). The job failed there with the documents not stored; it runs
    again at once now and stores them. Where the collection itself was deleted, the job
    still fails, as ``collection_not_found``."""
    name, gone = "pass-pruned", "pass-deleted"
    for coll in (name, gone):
        Store.from_runtime(rt).create_collection(coll)
    kept_id, gone_id = _queue(rt, name, ["p0.md", "p1.md"]), _queue(rt, gone, ["d0.md", "d1.md"])
    look = documents.stored_embeddings
    lookups: list[int] = []
    pruned: list[str] = []

    def dropping(conn: Any, coll: Any, *args: Any) -> Any:
        lookups.append(1)
        if len(lookups) == 2:  # the second round's lookup: the first document stored
            if coll.name == name:
                migrate(rt, name, TRUNCATED_MODEL, sample_queries=0)
                pruned.extend(s.table for s in prune(rt, name))
            else:
                Store.from_runtime(rt).delete_collection(gone)
        return look(conn, coll, *args)

    monkeypatch.setattr(documents, "stored_embeddings", dropping)
    one_a_round = Settings(**{**rt.settings.model_dump(), "ingest_batch_chunks": 1})
    with Runtime(one_a_round) as small:
        done = run_job(small, kept_id)
        lookups.clear()
        # failed by the delete (Superseded) or by the run itself, whichever records first
        with contextlib.suppress(CollectionNotFoundError):
            run_job(small, gone_id)
    assert pruned, "no vector table was pruned under the job"
    assert (done.status, done.errors) == ("succeeded", []), done.errors
    assert done.summary.get("added") == 2
    assert _stored(rt, name) == ["p0.md", "p1.md"]
    with rt.db.connection() as conn:
        failed = store.get(conn, gone_id)
    assert failed.status == "failed"
    assert [e["code"] for e in failed.errors] == ["collection_not_found"], failed.errors


def test_a_job_whose_database_turns_read_only_runs_again_then_fails(
    rt: Runtime, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database turns read-only in the middle of a run (``default_transaction_read_only``
    set on it, as hosted databases do when their disk is nearly full; a failover onto a
    standby refuses the same way, SQLSTATE 25006): the write is refused and the ingest
    stops, the rest ``not_attempted``. Those are not the documents' own: the job runs
    again with the usual waits and stores them once the database takes writes; read-only
    again in its last run, the job fails (``database_unavailable``, naming them), its
    recorded errors saying to send them again: they said "retry in 5s (the server log has
    the details)", the HTTP API's words for a request answered with Retry-After."""
    monkeypatch.setattr(runner, "RETRY_S", 0.01)
    monkeypatch.setattr(runner, "ATTEMPTS", 2)
    monkeypatch.setattr(runner, "PROGRESS_EVERY_S", 1e9)  # a run's first progress write only
    name = "pass-read-only"
    Store.from_runtime(rt).create_collection(name)
    dbname = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    read_only_runs = [1]  # the runs in which the database turns read-only
    runs: list[int] = []
    writes: list[int] = []
    with psycopg.connect(database_url, autocommit=True) as admin:

        def read_only(on: bool, keep: int = 0) -> None:
            value = "on" if on else "off"
            admin.execute(f"ALTER DATABASE {dbname} SET default_transaction_read_only = {value}")
            # the database's other sessions end: the new ones take the setting. Waited for
            # (up to 5 s each): a pooled session whose end had not reached its socket yet
            # passed the pool's check and failed the next run's first statement
            admin.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                " WHERE datname = %s AND pid NOT IN (pg_backend_pid(), %s)",
                (dbname, keep),
            )

        write = documents.write_documents

        def turning(conn: Any, *args: Any, **kwargs: Any) -> Any:
            writes.append(1)
            if len(writes) == 2 and len(runs) in read_only_runs:  # the run's second document
                read_only(True, keep=conn.info.backend_pid)
                # this session too, which the write goes on in (committed: it outlives
                # the write's rollback, as the database's setting would)
                conn.execute("SET default_transaction_read_only = on")
                conn.commit()
            return write(conn, *args, **kwargs)

        ingest = runner._ingest

        def run(*args: Any, **kwargs: Any) -> Any:
            runs.append(1)
            writes.clear()
            try:
                return ingest(*args, **kwargs)
            finally:
                read_only(False)

        monkeypatch.setattr(documents, "write_documents", turning)
        monkeypatch.setattr(runner, "_ingest", run)
        one_a_round = Settings(**{**rt.settings.model_dump(), "ingest_batch_chunks": 1})
        try:
            with Runtime(one_a_round) as small:
                done = run_job(small, _queue(rt, name, ["r0.md", "r1.md", "r2.md"]))
                done_runs = len(runs)
                runs.clear()
                read_only_runs[:] = [1, 2]
                failed_id = _queue(rt, name, ["f0.md", "f1.md"])
                with pytest.raises(DatabaseUnavailableError):  # recorded, and told the queue
                    run_job(small, failed_id)
        finally:
            read_only(False)
    assert (done.status, done.errors, done_runs) == ("succeeded", [], 2), done.errors
    assert done.summary.get("added") == 3
    with rt.db.connection() as conn:
        failed = store.get(conn, failed_id)
    assert failed.status == "failed", (failed.summary, failed.errors)
    assert [(e["document"], e["code"]) for e in failed.errors] == [
        ("f1.md", "database_unavailable"),
        (None, "database_unavailable"),
    ]
    document, whole = (e["detail"] for e in failed.errors)
    assert document.startswith("not stored: the database refuses writes: it is read-only")
    assert document.endswith("; send it again (the worker's log has the details)"), document
    assert whole.startswith("1 of the job's 2 documents were not stored ('f1.md')"), whole
    assert whole.endswith("; send them again (the documents that were stored stay stored)")
    # the API's words for a request answered 503 with Retry-After: no request to repeat
    # in seconds here, the job is over
    assert not any("retry in" in d or "server log" in d for d in (document, whole))
    assert _stored(rt, name) == ["f0.md", "r0.md", "r1.md", "r2.md"]
