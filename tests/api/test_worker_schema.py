"""A ``ragstore worker`` left running while ``ragstore db upgrade`` (or ``downgrade``)
changes the schema under it: it stops taking jobs and exits (``schema_mismatch``, exit
69) for a worker of the matching version to take over, and a job it was running goes
back to the queue with what it stored kept, never acknowledged as done."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from ragstore import Client
from ragstore.config import Settings
from ragstore.db import database as database_module
from ragstore.db import jobs as store
from ragstore.db import migrations
from ragstore.db.database import Database
from ragstore.errors import SchemaMismatchError
from ragstore.jobs import runner as runner_module
from ragstore.jobs.worker import run_worker
from tests.api.conftest import with_


@pytest.fixture(scope="module")
def api(open_url: str) -> Iterator[Client]:
    with Client(open_url) as c:
        yield c


def _doc(i: int) -> bytes:
    body = "\n\n".join(f"Paragraph {p} of report {i}: " + "word " * 40 for p in range(4))
    return f"# Report {i}\n\n{body}\n".encode()


def _queue_state(database_url: str, job_id: int) -> tuple[store.JobRecord, Any]:
    with psycopg.connect(database_url) as conn:
        job = store.get(conn, job_id)
        row = conn.execute(
            "SELECT status::text FROM procrastinate_jobs WHERE id = %s", (job.queue_job_id,)
        ).fetchone()
    return job, None if row is None else row[0]


def _hand_out_now(database_url: str) -> None:
    """The queue's later hand-out of an entry put back (``BUSY_RETRY_S``), now."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE procrastinate_jobs SET scheduled_at = now() WHERE status = 'todo'")


def _downgrade_under_the_job(
    api: Client,
    collection: str,
    worker_settings: Settings,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[dict[str, Any], SchemaMismatchError]:
    """Queue a job of four documents and run a worker on it; once the job stored one, a real
    ``db downgrade`` of one revision lands (another machine's), and the worker stops. The
    schema is upgraded back after; the job and the worker's error."""
    api.create_collection(collection)
    files = [(f"r{i}.md", _doc(i)) for i in range(4)]
    job = api.upload(collection, files, background=True)
    monkeypatch.setattr(database_module, "SCHEMA_RECHECK_S", 0.0)  # looked at every time
    head = migrations.known_revisions()[-1]
    below = migrations.known_revisions()[-2]
    real_call = runner_module._Progress.__call__
    moved: list[bool] = []

    def progress(self: Any, event: str, files_done: int, chunks_done: int) -> None:
        if files_done >= 1 and not moved:
            moved.append(True)
            # another machine's `ragstore db downgrade`, while this job runs
            done = threading.Thread(
                target=migrations.downgrade, args=(Database(database_url), below)
            )
            done.start()
            done.join(30)
            assert not done.is_alive()
        real_call(self, event, files_done, chunks_done)

    monkeypatch.setattr(runner_module._Progress, "__call__", progress)
    try:
        with pytest.raises(SchemaMismatchError) as stopped:
            run_worker(worker_settings, burst=True, signals=False)
    finally:
        migrations.upgrade(Database(database_url), head)
        monkeypatch.setattr(runner_module._Progress, "__call__", real_call)
    assert moved
    said = stopped.value.message
    assert f"at revision {below}" in said and f"needs {head}" in said, said
    return job, stopped.value


def _stored(database_url: str, collection: str) -> tuple[int, int, int]:
    """The collection's documents, chunks, and chunks distinct by (document, ordinal)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM documents d WHERE d.collection_id = c.id),"
            " count(k.id), count(DISTINCT (k.document_id, k.ordinal))"
            " FROM collections c LEFT JOIN chunks k ON k.collection_id = c.id"
            " WHERE c.name = %s AND c.shadow_of IS NULL GROUP BY c.id",
            (collection,),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def test_a_downgrade_under_a_running_job_puts_it_back_and_stops_the_worker(
    api: Client, settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real ``db downgrade`` of one revision lands while a worker is in the middle of a
    job (one document stored). The job is neither finished nor failed by that worker: it
    goes back to the queue, the worker exits with ``schema_mismatch``, and a worker on a
    schema that matches again finishes it, counting the stored document as the job's."""
    worker_settings = with_(settings, worker_heartbeat_s=0.5, ingest_batch_chunks=1)
    job, stopped = _downgrade_under_the_job(
        api, "under-run", worker_settings, database_url, monkeypatch
    )
    said = stopped.message
    assert "stopped taking jobs" in said and "files were stored" not in said, said
    waiting, state = _queue_state(database_url, job["id"])
    assert state == "todo", (waiting, state)
    assert waiting.status == "queued" and waiting.attempts == 1, waiting
    _hand_out_now(database_url)
    real_call = runner_module._Progress.__call__
    seen: list[tuple[int, int]] = []  # (documents, chunks) the run's progress reached

    def progress(self: Any, event: str, files_done: int, chunks_done: int) -> None:
        real_call(self, event, files_done, chunks_done)
        seen.append((self.docs, self.chunks))

    monkeypatch.setattr(runner_module._Progress, "__call__", progress)
    run_worker(worker_settings, burst=True, signals=False)
    monkeypatch.setattr(runner_module._Progress, "__call__", real_call)
    done = api.get_job(job["id"])
    # the interrupted run gave its attempt back: one run counts
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
    assert done["documents_done"] == 4 and done["errors"] == [], done
    assert done["summary"]["added"] == 4, done
    # the chunks of the document the stopped run stored count too: the figures add up
    docs, chunks, distinct = _stored(database_url, "under-run")
    assert docs == 4 and chunks == distinct == done["chunks_done"], (chunks, done)
    # and so did the run's progress, as each document's outcome landed
    assert seen[-1] == (4, chunks), seen


def test_a_job_interrupted_by_a_schema_change_keeps_its_attempt(
    api: Client, settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job allowed one attempt (``RAGSTORE_WORKER_MAX_ATTEMPTS=1``) whose run a schema
    change stopped was failed ``worker_lost`` by the matching version's worker, though it
    never failed itself: the put-back now gives the attempt back (0 while the job waits),
    the next worker runs it to completion, and its attempts read one run. Each document
    and chunk is stored once."""
    worker_settings = with_(
        settings, worker_heartbeat_s=0.5, ingest_batch_chunks=1, worker_max_attempts=1
    )
    job, _ = _downgrade_under_the_job(
        api, "one-attempt", worker_settings, database_url, monkeypatch
    )
    waiting = api.get_job(job["id"])
    assert waiting["status"] == "queued" and waiting["attempts"] == 0, waiting
    assert waiting["started_at"] is None and waiting["errors"] == [], waiting
    _hand_out_now(database_url)
    run_worker(worker_settings, burst=True, signals=False)
    done = api.get_job(job["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
    assert done["documents_done"] == 4 and done["errors"] == [], done
    assert done["summary"]["added"] == 4, done
    docs, chunks, distinct = _stored(database_url, "one-attempt")
    assert docs == 4 and chunks == distinct > 0, (docs, chunks, distinct)
    assert done["chunks_done"] == chunks, done  # the stopped run's document's included
    record, state = _queue_state(database_url, job["id"])
    assert record.attempts == 1 and state is None, (record, state)  # its entry done, deleted


def test_an_idle_worker_stops_once_db_upgrade_changes_the_schema(
    settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle worker left running through a schema change (here a real ``db downgrade``
    of one revision: to it, the code's schema was upgraded away) kept running the old code
    until its next job, which it then took and put back every few seconds for good. It now
    stops on its next look at the schema and ends with ``schema_mismatch`` (``ragstore
    worker`` exits 69), the two revisions named, for a supervisor to start the matching
    version."""
    monkeypatch.setattr(database_module, "SCHEMA_RECHECK_S", 0.0)
    head, below = migrations.known_revisions()[-1], migrations.known_revisions()[-2]
    ended: list[BaseException | None] = []

    def work() -> None:
        try:
            run_worker(with_(settings, worker_heartbeat_s=0.5), signals=False)
            ended.append(None)
        except BaseException as exc:  # handed to the test's thread
            ended.append(exc)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        time.sleep(1.0)  # started, waiting for jobs
        assert worker.is_alive() and not ended, ended
        migrations.downgrade(Database(database_url), below)
        worker.join(10)
        assert not worker.is_alive(), "the worker kept running on a schema not its own"
    finally:
        migrations.upgrade(Database(database_url), head)
    (error,) = ended
    assert isinstance(error, SchemaMismatchError) and error.exit_code == 69, error
    assert f"at revision {below}" in error.message and f"needs {head}" in error.message
    assert "stopped taking jobs" in error.message


def test_a_run_given_back_keeps_its_number_and_the_fence_holds(
    api: Client, database_url: str
) -> None:
    """The give-back, step by step (``db.jobs.GIVE_BACK``, as the put-back runs it): the
    stopped run's attempt is the next start's number again, so a run superseded before it
    stays fenced out; a give-back by a run no longer the latest does nothing."""
    api.create_collection("given-back")
    job = api.upload("given-back", [("g.md", b"# G\n\ngiven back")], background=True)
    with psycopg.connect(database_url) as conn:
        assert store.start(conn, job["id"]) == 1
        assert store.start(conn, job["id"]) == 2  # the first judged dead: taken again
        conn.execute(store.GIVE_BACK, {"ingest_job": job["id"], "attempt": 1})  # not latest
        assert store.get(conn, job["id"]).status == "running"
        conn.execute(store.GIVE_BACK, {"ingest_job": job["id"], "attempt": 2})
        waiting = store.get(conn, job["id"])
        assert waiting.given_back and waiting.attempts_spent == 1, waiting
        assert store.start(conn, job["id"]) == 2  # its attempt again, not a third
        ran = store.get(conn, job["id"])
        assert not ran.given_back and ran.attempts_spent == 2 and ran.started_at, ran
        assert not store.progress(conn, job["id"], 1, 1, attempt=1)  # still fenced out
        assert store.progress(conn, job["id"], 1, 1, attempt=2)
