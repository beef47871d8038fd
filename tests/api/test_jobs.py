"""Background ingest: 202 with a job, progress and per-document errors, and a job that a
killed worker leaves half-done and another worker finishes with no duplicate chunks."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import httpx
import psycopg
import pytest
from procrastinate.jobs import Job, Status

from ragstore import Client
from ragstore.config import Settings
from ragstore.db import database as database_module
from ragstore.db import documents
from ragstore.db import jobs as store
from ragstore.errors import CollectionNotFoundError, ConfigError, RagstoreError
from ragstore.jobs import runner as runner_module
from ragstore.jobs import worker as worker_module
from ragstore.jobs.liveness import WORKER_LOCKS, LiveJobManager
from ragstore.jobs.queue import QUEUE, build_queue
from ragstore.jobs.runner import run_job
from ragstore.jobs.service import submit_ingest
from ragstore.jobs.worker import run_worker, watching_stalled
from ragstore.runtime import Runtime
from tests.api.conftest import running_server, with_

WORDS = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
)


def _doc(i: int) -> bytes:
    paras = []
    for p in range(8):
        words = [WORDS[(i * 7 + p * 3 + j) % len(WORDS)] for j in range(45)]
        paras.append(f"Document {i} paragraph {p}: " + " ".join(words) + ".")
    return (f"# Report {i}\n\n" + "\n\n".join(paras) + "\n").encode()


@pytest.fixture(scope="module")
def jobs_settings(settings: Settings) -> Settings:
    return with_(
        settings, worker_heartbeat_s=0.5, worker_stalled_after_s=2.0, ingest_batch_chunks=1
    )


@pytest.fixture(scope="module")
def api(open_url: str) -> Iterator[Client]:
    with Client(open_url) as c:
        yield c


def test_background_document_is_a_job_that_a_worker_finishes(
    api: Client, jobs_settings: Settings
) -> None:
    api.create_collection("bg")
    job = api.add_document("bg", "later.md", "# Later\n\ningested by a worker", background=True)
    assert job["status"] == "queued" and job["total_documents"] == 1
    run_worker(jobs_settings, burst=True, signals=False)
    done = api.get_job(job["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert done["documents_done"] == 1 and done["chunks_done"] == 2 and done["errors"] == []
    assert [d["name"] for d in api.list_documents("bg")["data"]] == ["later.md"]
    listed = api.list_jobs(status="succeeded", collection="bg")
    assert [j["id"] for j in listed["data"]] == [job["id"]]


def test_job_reports_each_failed_document(api: Client, jobs_settings: Settings) -> None:
    job = api.upload(
        "bg", [("good.md", b"# Good\n\nfine text"), ("empty.xyz", b"")], background=True
    )
    run_worker(jobs_settings, burst=True, signals=False)
    done = api.wait_for_job(job["id"], timeout=5)
    assert done["status"] == "succeeded" and done["documents_done"] == 2
    assert done["errors"] == [
        {
            "document": "empty.xyz",
            "code": "empty_document",
            "detail": done["errors"][0]["detail"],
        }
    ]
    assert done["summary"]["added"] == 1 and done["summary"]["failed"] == 1


def test_large_upload_goes_to_a_job_by_itself(
    api: Client, jobs_settings: Settings, settings: Settings
) -> None:
    big = b"word " * (settings.background_ingest_bytes // 5 + 10)
    job = api.upload("bg", [("big.txt", big)])
    assert job["status"] == "queued" and "id" in job
    run_worker(jobs_settings, burst=True, signals=False)
    assert api.get_job(job["id"])["status"] == "succeeded"


def test_the_stalled_job_watcher_stops_when_a_cancellation_would_be_lost(
    jobs_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Python 3.11 psycopg_pool can swallow a cancellation (``asyncio.wait_for``'s race);
    a watcher stopped by cancelling it then polled forever and a burst worker never
    returned. Here every round swallows its cancellation: the watcher must still end,
    within the round it is in, because it is asked to stop rather than cancelled."""
    real = worker_module.retry_stalled
    rounds: list[float] = []

    async def deaf_round(app: object, stalled_after_s: float) -> list[int]:
        rounds.append(time.monotonic())
        in_round.set()
        try:
            await real(app, stalled_after_s)  # type: ignore[arg-type]
            await asyncio.sleep(1.0)
        except asyncio.CancelledError:
            pass  # what the race does: the task goes on as if never cancelled
        return []

    monkeypatch.setattr(worker_module, "retry_stalled", deaf_round)
    in_round = asyncio.Event()
    left: list[float] = []

    async def scenario() -> None:
        with Runtime(jobs_settings) as rt:
            conninfo = rt.db.conninfo
            app = build_queue(conninfo)
            app.job_manager = LiveJobManager(app.connector, conninfo, stalled_after_s=2.0)
            async with app.open_async():
                async with watching_stalled(app, jobs_settings):
                    await in_round.wait()
                left.append(time.monotonic())

    thread = threading.Thread(target=asyncio.run, args=(scenario(),), daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), f"the watcher did not stop: {len(rounds)} rounds ran"
    assert len(rounds) == 1 and left and left[0] - rounds[0] < 5.0, rounds


def test_jobs_page_newest_first_by_cursor(api: Client) -> None:
    first = api.list_jobs(limit=2)
    rest = api.list_jobs(limit=2, cursor=first["next_cursor"])
    ids = [j["id"] for j in first["data"] + rest["data"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 3
    # the last page exactly full: no cursor to an empty page after it
    assert api.list_jobs(limit=3)["next_cursor"] is None and rest["next_cursor"] is None


def test_a_job_leaves_a_document_written_after_it_was_accepted(
    api: Client, jobs_settings: Settings
) -> None:
    """A job accepted with version 1 of a document, then a direct write of version 2
    (answered 201): when the worker runs, version 2 stays, and the job says it left that
    document for the later write. It used to put version 1 back over the acknowledged one."""
    job = api.add_document("bg", "race.md", "# Race\n\nversion one", background=True)
    later = api.add_document("bg", "race.md", "# Race\n\nversion two")
    assert later["status"] in ("added", "updated")
    first = api.add_document("bg", "kept.md", "# Kept\n\nolder than the job")
    queued = api.upload(
        "bg",
        [("kept.md", b"# Kept\n\nnewer, from the job"), ("other.md", b"# O\n\nok")],
        background=True,
    )
    run_worker(jobs_settings, burst=True, signals=False)
    done = api.wait_for_job(job["id"], timeout=5)
    assert done["status"] == "succeeded" and done["errors"] == []
    assert done["summary"].get("superseded") == 1, done["summary"]
    stored = api.get_document("bg", later["id"])
    assert stored["content_hash"] == later["content_hash"], "the acknowledged write stays"
    # a document written before the job was accepted is the job's to replace
    other = api.wait_for_job(queued["id"], timeout=5)
    assert other["summary"].get("updated") == 1 and other["summary"].get("added") == 1
    assert api.get_document("bg", first["id"])["content_hash"] != first["content_hash"]


def test_a_job_leaves_a_document_deleted_after_it_was_accepted(
    api: Client, jobs_settings: Settings
) -> None:
    """Upload in the background (202), then delete the document (acknowledged): the worker
    stored the job's upload again, although the client's last request was the delete. A
    delete now leaves a tombstone the job's write compares with its acceptance; a direct
    write after the delete counts as the later request, and a job accepted after the
    delete stores its document."""
    api.create_collection("bg-tomb")
    gone = api.add_document("bg-tomb", "gone.md", "# Gone\n\nversion one")
    job = api.add_document("bg-tomb", "gone.md", "# Gone\n\nversion two", background=True)
    api.delete_document("bg-tomb", gone["id"])
    # deleted, then written again directly: the re-added version is the latest request
    back = api.add_document("bg-tomb", "back.md", "# Back\n\nversion one")
    older = api.add_document("bg-tomb", "back.md", "# Back\n\nfrom the job", background=True)
    api.delete_document("bg-tomb", back["id"])
    again = api.add_document("bg-tomb", "back.md", "# Back\n\nadded again")
    # deleted before the job was accepted: the job is the latest request
    late = api.add_document("bg-tomb", "late.md", "# Late\n\nversion one")
    api.delete_document("bg-tomb", late["id"])
    newer = api.add_document("bg-tomb", "late.md", "# Late\n\nfrom the job", background=True)
    run_worker(jobs_settings, burst=True, signals=False)
    for queued in (job, older):
        done = api.wait_for_job(queued["id"], timeout=5)
        assert done["status"] == "succeeded" and done["errors"] == []
        assert done["summary"].get("superseded") == 1, done["summary"]
    done = api.wait_for_job(newer["id"], timeout=5)
    assert done["summary"].get("added") == 1, done["summary"]
    stored = {d["name"]: d for d in api.list_documents("bg-tomb")["data"]}
    assert sorted(stored) == ["back.md", "late.md"], "the deleted document stays deleted"
    assert stored["back.md"]["content_hash"] == again["content_hash"]
    # no job waits now: the next delete leaves only its own tombstone
    api.delete_document("bg-tomb", stored["late.md"]["id"])
    assert jobs_settings.database_url is not None
    with psycopg.connect(jobs_settings.database_url.get_secret_value()) as conn:
        left = conn.execute(  # this test's collection only: other tests delete too
            "SELECT t.source FROM document_tombstones t JOIN collections c"
            " ON c.id = t.collection_id WHERE c.name = 'bg-tomb'"
        ).fetchall()
    assert [r[0].rsplit("/", 1)[-1] for r in left] == ["late.md"], left


def test_tombstones_are_pruned_per_collection_and_when_a_job_finishes(
    api: Client, jobs_settings: Settings, database_url: str
) -> None:
    """Each delete pruned the tombstones older than the oldest unfinished job of any
    collection: one job waiting in one collection kept every other collection's
    tombstones, growing by every delete there. And only a delete pruned: those a finished
    job had needed stayed until the collection's next delete, for good without one. A
    collection's tombstones now go when no job of that collection needs them, at its
    deletes and at the finish of its jobs."""

    def kept(collection: str) -> list[str]:
        with psycopg.connect(database_url) as conn:
            rows = conn.execute(
                "SELECT t.source FROM document_tombstones t JOIN collections c"
                " ON c.id = t.collection_id WHERE c.name = %s ORDER BY 1",
                (collection,),
            ).fetchall()
        return [str(r[0]).rsplit("/", 1)[-1] for r in rows]

    api.create_collection("tomb-wait")
    api.create_collection("tomb-busy")
    busy = [api.add_document("tomb-busy", f"{n}.md", f"# {n}\n\nbusy {n}") for n in "ab"]
    waits = api.add_document("tomb-wait", "c.md", "# C\n\nstored before the job")
    job = api.add_document("tomb-wait", "w.md", "# W\n\nqueued for later", background=True)
    for doc in busy:  # no job of this collection waits: each delete keeps only its own
        api.delete_document("tomb-busy", doc["id"])
    assert kept("tomb-busy") == ["b.md"]
    api.delete_document("tomb-wait", waits["id"])  # deleted after the job's acceptance
    assert kept("tomb-wait") == ["c.md"]
    run_worker(jobs_settings, burst=True, signals=False)
    assert api.wait_for_job(job["id"], timeout=5)["status"] == "succeeded"
    assert kept("tomb-wait") == []  # no job of it is left to need it


def test_a_jobs_finish_and_a_delete_do_not_deadlock_on_the_collections_tombstones(
    api: Client, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's finish prunes its collection's old tombstones, row by row, while a delete
    in the collection holds the tombstone it rewrote: the finish held one old row and
    waited for the delete's, the delete's own pruning then waited for the finish's, and
    PostgreSQL failed one of them (deadlock detected). The pruning now leaves a
    tombstone another transaction holds to a later one."""
    api.create_collection("tomb-race")
    for n in "xy":
        api.add_document("tomb-race", f"{n}.md", f"# {n}\n\nraced {n}")
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT id FROM collections WHERE name = 'tomb-race'").fetchone()
        assert row is not None
        coll = int(row[0])
        x, y = sorted(
            str(r[0])
            for r in conn.execute("SELECT source FROM documents WHERE collection_id = %s", (coll,))
        )
        assert documents.delete_documents(conn, coll, [x, y]) == 2  # both tombstones old
    api.add_document("tomb-race", "y.md", "# y\n\nstored again")  # its tombstone stays
    prune = documents.prune_tombstones
    rewritten, finishing = threading.Event(), threading.Event()

    def after_the_finish(conn: documents.Conn, collection_id: int) -> None:
        rewritten.set()  # y's tombstone written again and held
        assert finishing.wait(10)
        prune(conn, collection_id)

    def finish() -> None:  # what ``jobs.finish`` runs
        assert rewritten.wait(10)
        with psycopg.connect(database_url) as conn:
            prune(conn, coll)
        finishing.set()  # done without waiting for the delete's

    def waiting_for_a_lock() -> None:  # the finish waits for the delete's tombstone
        with psycopg.connect(database_url, autocommit=True) as conn:
            for _ in range(200):
                if finishing.is_set():
                    return
                found = conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"
                    " AND query LIKE 'DELETE FROM document_tombstones%'"
                ).fetchone()
                if found:
                    break
                time.sleep(0.05)
        finishing.set()

    monkeypatch.setattr(documents, "prune_tombstones", after_the_finish)

    def delete() -> int:
        with psycopg.connect(database_url) as conn:
            return documents.delete_documents(conn, coll, [y])

    with ThreadPoolExecutor(3) as pool:
        done = [pool.submit(f) for f in (delete, finish, waiting_for_a_lock)]
        assert [f.result() for f in done] == [1, None, None]
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT source FROM document_tombstones WHERE collection_id = %s", (coll,)
        ).fetchall()
    assert [str(r[0]) for r in rows] == [y]


def test_a_job_finished_before_its_worker_died_is_not_run_again(
    api: Client, jobs_settings: Settings
) -> None:
    """A worker that recorded its job as succeeded and died before procrastinate marked
    the queue's job done: the stalled-job check puts that job back on the queue. Its
    re-run put back a document the client deleted after reading "succeeded" (and, on
    the last allowed attempt, turned the finished job into ``failed: worker_lost``)."""
    api.create_collection("rerun")
    job = api.upload(
        "rerun", [("a.md", b"# A\n\nalpha text"), ("b.md", b"# B\n\nbravo text")], background=True
    )
    with Runtime(jobs_settings) as rt:  # the job runs; its queue entry stays, as if killed
        assert run_job(rt, job["id"]).status == "succeeded"
    done = api.get_job(job["id"])
    gone = next(d["id"] for d in api.list_documents("rerun")["data"] if d["name"] == "a.md")
    api.delete_document("rerun", gone)
    run_worker(jobs_settings, burst=True, signals=False)  # the queue's job comes back
    assert [d["name"] for d in api.list_documents("rerun")["data"]] == ["b.md"]
    assert api.get_job(job["id"]) == done


def test_a_finished_job_keeps_no_copy_of_its_uploads(
    api: Client, jobs_settings: Settings, database_url: str
) -> None:
    """A job's uploaded bytes wait in ``ingest_job_files`` for a worker. They were kept
    after the job finished, forever: the table grew by every background upload, and the
    text of documents and collections deleted since stayed in the database (and in every
    backup). A finished job drops them; what it did stays in its record."""
    api.create_collection("kept")
    job = api.upload("kept", [("k.md", b"# K\n\nsecret text"), ("e.xyz", b"")], background=True)
    run_worker(jobs_settings, burst=True, signals=False)
    done = api.get_job(job["id"])
    assert done["status"] == "succeeded" and done["total_documents"] == 2
    assert done["summary"]["added"] == 1 and done["summary"]["failed"] == 1
    api.delete_collection("kept")
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM ingest_job_files WHERE job_id = %s", (job["id"],)
        ).fetchone()
    assert row is not None and row[0] == 0


def _worker(env: dict[str, str], out: int | IO[bytes], *args: str) -> subprocess.Popen[bytes]:
    """``ragstore worker`` in a session of its own (``os.killpg`` ends it and its children),
    its output and errors to ``out``."""
    return subprocess.Popen(
        [sys.executable, "-c", "from ragstore.cli import main; main()", "worker", *args],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _counts(url: str, collection: str) -> tuple[int, int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM documents d JOIN collections c"
            "        ON c.id = d.collection_id WHERE c.name = %(n)s),"
            " (SELECT count(*) FROM chunks k JOIN collections c"
            "        ON c.id = k.collection_id WHERE c.name = %(n)s),"
            " (SELECT count(*) FROM (SELECT DISTINCT k.document_id, k.ordinal FROM chunks k"
            "        JOIN collections c ON c.id = k.collection_id WHERE c.name = %(n)s) u)",
            {"n": collection},
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def test_killed_worker_job_is_finished_by_another_without_duplicates(
    api: Client, jobs_settings: Settings, cli_env: dict[str, str]
) -> None:
    """The retry's summary says what the job as a whole did: the documents the killed
    worker stored count as added, not as unchanged; only what was stored before the job
    was sent (r28, r29 the same, r27 older) is unchanged or updated."""
    total = 30
    api.create_collection("big")
    api.upload("big", [("r27.md", _doc(99)), ("r28.md", _doc(28)), ("r29.md", _doc(29))])
    job = api.upload("big", [(f"r{i:02d}.md", _doc(i)) for i in range(total)], background=True)
    env = {
        **os.environ,
        **cli_env,
        "RAGSTORE_WORKER_HEARTBEAT_S": "0.5",
        "RAGSTORE_WORKER_STALLED_AFTER_S": "2",
        "RAGSTORE_INGEST_BATCH_CHUNKS": "1",
        "RAGSTORE_LOG_LEVEL": "warning",
    }
    first = _worker(env, subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while True:
            state = api.get_job(job["id"])
            if state["documents_done"] >= 3:
                break
            assert state["status"] in ("queued", "running"), state
            assert first.poll() is None, "the first worker exited"
            assert time.monotonic() < deadline, "the first worker made no progress"
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    url = cli_env["RAGSTORE_DATABASE_URL"]
    docs_left, _, _ = _counts(url, "big")
    half = api.get_job(job["id"])
    assert half["status"] == "running" and 3 < docs_left < total, (half, docs_left)
    time.sleep(2.5)  # the dead worker's heartbeat goes stale
    run_worker(jobs_settings, burst=True, signals=False)
    done = api.get_job(job["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    assert done["documents_done"] == total and done["errors"] == []
    outcomes = {k: v for k, v in done["summary"].items() if k not in ("embedded", "reused")}
    assert outcomes == {"added": total - 3, "updated": 1, "unchanged": 2}, done["summary"]
    docs, chunks, distinct = _counts(url, "big")
    # a heading and 8 paragraphs of ~60 tokens: the heading chunk and two merged chunks
    assert docs == total and chunks == distinct == total * 3
    # chunks_done: those of the documents the summary counts as added or updated, the
    # killed worker's included (the two unchanged ones were stored before the job)
    assert done["chunks_done"] == (total - 2) * 3, done


def test_a_job_whose_workers_keep_dying_fails_as_worker_lost(
    api: Client, jobs_settings: Settings, cli_env: dict[str, str]
) -> None:
    # three workers died in it already (out of memory, killed): the stalled-job check put it
    # back on the queue each time; the next worker gives it up instead of dying in turn
    api.create_collection("poison")
    job = api.upload("poison", [("p.md", _doc(1))], background=True)
    with psycopg.connect(cli_env["RAGSTORE_DATABASE_URL"]) as conn:
        conn.execute(
            # as their starts left it (a job given back after a schema change, queued with
            # no started_at, has the last of those attempts back: test_worker_schema)
            "UPDATE ingest_jobs SET attempts = %s, started_at = now() WHERE id = %s",
            (jobs_settings.worker_max_attempts, job["id"]),
        )
    run_worker(jobs_settings, burst=True, signals=False)
    done = api.get_job(job["id"])
    assert done["status"] == "failed" and done["attempts"] == jobs_settings.worker_max_attempts
    assert [e["code"] for e in done["errors"]] == ["worker_lost"]
    assert "RAGSTORE_WORKER_MAX_ATTEMPTS" in done["errors"][0]["detail"]
    assert _counts(cli_env["RAGSTORE_DATABASE_URL"], "poison")[0] == 0


def test_a_worker_loading_its_model_longer_than_stalled_after_runs_its_job_once(
    api: Client, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A fresh worker loads the embedding model inside its first job (seconds) while its
    heartbeat is older than a short RAGSTORE_WORKER_STALLED_AFTER_S: the stalled-job
    check must not take the job from the live worker that holds it and run it a second
    time (beside it, in the worker's second slot), nor prune the worker (its next fetch
    failed on the missing worker row)."""
    api.create_collection("slow")
    job = api.upload("slow", [(f"s{i}.md", _doc(i)) for i in range(2)], background=True)
    env = {
        **os.environ,
        **cli_env,
        # the check runs every 0.5 s, the beat every 2 s: most checks find it stale
        "RAGSTORE_WORKER_HEARTBEAT_S": "2",
        "RAGSTORE_WORKER_STALLED_AFTER_S": "0.5",
        "RAGSTORE_LOG_LEVEL": "info",
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = _worker(env, out, "--concurrency", "2")
    try:
        done = api.wait_for_job(job["id"], timeout=120)
        time.sleep(1.0)  # a second run, had the job been taken back, would start by now
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
    text = log.read_text()
    final = api.get_job(job["id"])
    assert done["status"] == final["status"] == "succeeded", (final, text)
    assert done["attempts"] == final["attempts"] == 1, (final, text)
    assert "its worker stopped; retrying it" not in text, text
    assert "is silent but alive (it holds its lock" in text, text


def test_a_worker_whose_lock_session_ended_takes_its_lock_again(
    jobs_settings: Settings, database_url: str
) -> None:
    """A worker's liveness lock lives in a session of its own. When that session ended
    under a live worker (an administrator or a server-wide ``idle_session_timeout`` ended
    idle sessions) it was never opened again: from then on the worker counted as dead whenever its
    heartbeat was late, the very case the lock is there for (its row pruned, its job run
    a second time). Its next heartbeat takes the lock again."""

    async def scenario() -> tuple[bool, list[int]]:
        with Runtime(jobs_settings) as rt:
            conninfo = rt.db.conninfo
            app = build_queue(conninfo)
            manager = LiveJobManager(app.connector, conninfo, stalled_after_s=2.0)
            app.job_manager = manager
            async with app.open_async():
                wid = await manager.register_worker()
                try:
                    held = manager._held[wid]
                    shown = await (await held.execute("SHOW idle_session_timeout")).fetchone()
                    assert shown == ("0",), "a server-wide idle_session_timeout ends it"
                    pid = held.info.backend_pid
                    with psycopg.connect(database_url, autocommit=True) as conn:
                        conn.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))
                    await manager.update_heartbeat(wid)
                    with psycopg.connect(database_url, autocommit=True) as conn:
                        conn.execute(
                            "UPDATE procrastinate_workers"
                            " SET last_heartbeat = now() - interval '1 hour' WHERE id = %s",
                            (wid,),
                        )
                        row = conn.execute(
                            "SELECT pg_try_advisory_lock(%s, %s)", (WORKER_LOCKS, wid)
                        ).fetchone()
                    free = bool(row and row[0])
                    pruned = await manager.prune_stalled_workers(2.0)
                finally:
                    await manager.unregister_worker(wid)
                return free, pruned

    free, pruned = asyncio.run(scenario())
    assert not free, "the live worker's lock was free"
    assert pruned == [], "a live worker was pruned"


def test_a_connection_lost_as_a_job_is_recorded_finished_is_not_left_running(
    api: Client, jobs_settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's documents are stored, then the connection that records it finished is
    ended (a restart, a failover, an administrator): here a trigger makes the backend
    writing the record terminate itself, once (a sequence counts, outside the transaction
    it kills). Written once, that left the job ``running`` for good: the queue took the
    error as the job's failure and never ran it again, and a client polling it waited
    until its own timeout."""
    monkeypatch.setattr("ragstore.jobs.runner.RETRY_S", 0.1)
    job = api.upload("lost", [("l.md", b"# L\n\nlost connection text")], background=True)
    fault = f"""
        CREATE SEQUENCE lost_once;
        CREATE FUNCTION lost_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('lost_once') = 1 THEN
                PERFORM pg_terminate_backend(pg_backend_pid());
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER lost_once BEFORE UPDATE ON ingest_jobs FOR EACH ROW
            WHEN (NEW.id = {int(job["id"])} AND NEW.status = 'succeeded')
            EXECUTE FUNCTION lost_once();
    """
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(fault)
        try:
            with Runtime(jobs_settings) as rt:
                assert run_job(rt, job["id"]).status == "succeeded"
            tries = admin.execute("SELECT last_value FROM lost_once").fetchone()
        finally:
            admin.execute(
                "DROP TRIGGER lost_once ON ingest_jobs; DROP FUNCTION lost_once();"
                " DROP SEQUENCE lost_once"
            )
    assert tries == (2,)  # the first record was lost with its connection, the second kept
    done = api.get_job(job["id"])
    assert done["status"] == "succeeded" and done["summary"]["added"] == 1


def test_a_job_whose_outcome_cannot_be_recorded_does_not_stay_running(
    api: Client, jobs_settings: Settings, database_url: str
) -> None:
    """The job's documents are stored, then the database refuses its outcome (here a
    trigger raises, once; not a lost connection, so not written again). The queue took
    the task's error as the job's failure and never ran it again, while the job stayed
    ``running`` for good and a client polling it waited forever. The worker now records
    such a job failed, with a code saying its outcome was lost."""
    api.create_collection("refused")
    job = api.upload("refused", [("r.md", b"# R\n\nrefused outcome text")], background=True)
    fault = f"""
        CREATE SEQUENCE refused_once;
        CREATE FUNCTION refused_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('refused_once') = 1 THEN
                RAISE EXCEPTION 'outcome refused by a test trigger';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refused_once BEFORE UPDATE ON ingest_jobs FOR EACH ROW
            WHEN (NEW.id = {int(job["id"])} AND NEW.status = 'succeeded')
            EXECUTE FUNCTION refused_once();
    """
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(fault)
        try:
            run_worker(jobs_settings, burst=True, signals=False)
            tries = admin.execute("SELECT last_value FROM refused_once").fetchone()
        finally:
            admin.execute(
                "DROP TRIGGER refused_once ON ingest_jobs; DROP FUNCTION refused_once();"
                " DROP SEQUENCE refused_once"
            )
    assert tries == (1,)
    done = api.wait_for_job(job["id"], timeout=5)
    assert done["status"] == "failed" and done["finished_at"] is not None
    assert [e["code"] for e in done["errors"]] == ["outcome_not_recorded"]
    assert [d["name"] for d in api.list_documents("refused")["data"]] == ["r.md"]
    with psycopg.connect(database_url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM ingest_job_files WHERE job_id = %s", (job["id"],)
        ).fetchone()
    assert left == (0,)


def test_a_background_upload_answered_an_error_was_not_queued(
    api: Client, jobs_settings: Settings, database_url: str
) -> None:
    """The job's row was committed and deferred, then recording its queue entry failed
    (here a trigger raises, once): the upload was answered an error, yet the worker ran
    the job, and a re-send was told ``unchanged``. The row, its files and its queue entry
    are now one transaction: an error answer leaves nothing queued."""
    api.create_collection("honest")
    fault = """
        CREATE SEQUENCE entry_once;
        CREATE FUNCTION entry_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('entry_once') = 1 THEN
                RAISE EXCEPTION 'queue entry refused by a test trigger';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER entry_once BEFORE UPDATE ON ingest_jobs FOR EACH ROW
            WHEN (OLD.queue_job_id IS NULL AND NEW.queue_job_id IS NOT NULL
                  AND NEW.collection = 'honest')
            EXECUTE FUNCTION entry_once();
    """
    upload = [("h.md", b"# H\n\nhonest answer text")]
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(fault)
        try:
            with pytest.raises(RagstoreError):
                api.upload("honest", upload, background=True)
        finally:
            admin.execute(
                "DROP TRIGGER entry_once ON ingest_jobs; DROP FUNCTION entry_once();"
                " DROP SEQUENCE entry_once"
            )
    run_worker(jobs_settings, burst=True, signals=False)
    assert api.list_documents("honest")["data"] == []
    assert api.list_jobs(collection="honest")["data"] == []
    job = api.upload("honest", upload, background=True)  # the re-send is the one job
    assert job["status"] == "queued"
    run_worker(jobs_settings, burst=True, signals=False)
    done = api.wait_for_job(job["id"], timeout=5)
    assert done["status"] == "succeeded" and done["summary"]["added"] == 1


def test_a_dead_workers_job_shows_queued_with_no_worker_running(
    jobs_settings: Settings, database_url: str
) -> None:
    """Only workers put a dead worker's job back on the queue: with none running, the job
    showed ``running`` for good to ``GET /v1/jobs/{id}`` and the listing, for a client to
    wait on. Reading it now settles it: ``queued`` (waiting for a worker, which is true),
    and the next worker runs it, the attempt counted."""
    with running_server(with_(jobs_settings, auth="off")) as url, Client(url) as api:
        _orphaned(api, jobs_settings, database_url)


def _orphaned(api: Client, jobs_settings: Settings, database_url: str) -> None:
    api.create_collection("orphan")
    job = api.upload("orphan", [("o.md", b"# O\n\norphaned job text")], background=True)
    with psycopg.connect(database_url, autocommit=True) as conn:
        # a worker took it and died: its row silent an hour, its lock free
        row = conn.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat)"
            " VALUES (now() - interval '1 hour') RETURNING id"
        ).fetchone()
        assert row is not None
        conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s"
            " WHERE id = (SELECT queue_job_id FROM ingest_jobs WHERE id = %s)",
            (row[0], job["id"]),
        )
        conn.execute(
            "UPDATE ingest_jobs SET status = 'running', attempts = 1, started_at = now()"
            " WHERE id = %s",
            (job["id"],),
        )
    listed = api.list_jobs(collection="orphan")["data"]
    assert [j["status"] for j in listed] == ["queued"], listed
    seen = api.get_job(job["id"])
    assert seen["status"] == "queued" and seen["attempts"] == 1, seen
    run_worker(jobs_settings, burst=True, signals=False)
    done = api.get_job(job["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 2, done


def test_a_worker_judged_dead_leaves_the_entry_another_took_to_it(
    jobs_settings: Settings, database_url: str
) -> None:
    """A worker cut off from the database long enough is judged dead and its queue entry
    is taken by another, while it still runs the job. Finishing its run, it marked the
    entry anyway: ``failed`` had the job failed as ``outcome_not_recorded`` while the
    other worker still ran it. The entry is now the other worker's to finish."""

    async def scenario() -> tuple[str, str]:
        with Runtime(jobs_settings) as rt:
            conninfo = rt.db.conninfo
            app = build_queue(conninfo)
            manager = LiveJobManager(app.connector, conninfo, stalled_after_s=2.0)
            app.job_manager = manager
            async with app.open_async():
                first = await manager.register_worker()
                other = await manager.register_worker()
                try:
                    with psycopg.connect(database_url, autocommit=True) as conn:
                        conn.execute(
                            "INSERT INTO procrastinate_jobs (queue_name, task_name, args)"
                            " VALUES ('fenced', 'ragstore.ingest', '{}')"
                        )
                    job = await manager.fetch_job(queues=["fenced"], worker_id=first)
                    assert job is not None and job.worker_id == first
                    with psycopg.connect(database_url, autocommit=True) as conn:
                        # judged dead, put back, taken by the other worker
                        conn.execute(
                            "UPDATE procrastinate_jobs SET worker_id = %s WHERE id = %s",
                            (other, job.id),
                        )
                    await manager.finish_job(job, Status.FAILED, delete_job=False)
                    with psycopg.connect(database_url, autocommit=True) as conn:
                        row = conn.execute(
                            "SELECT status::text FROM procrastinate_jobs WHERE id = %s",
                            (job.id,),
                        ).fetchone()
                    assert row is not None
                    after_stale = str(row[0])
                    mine = job.evolve(worker_id=other)
                    await manager.finish_job(mine, Status.SUCCEEDED, delete_job=False)
                    with psycopg.connect(database_url, autocommit=True) as conn:
                        row = conn.execute(
                            "SELECT status::text FROM procrastinate_jobs WHERE id = %s",
                            (job.id,),
                        ).fetchone()
                    assert row is not None
                    return after_stale, str(row[0])
                finally:
                    await manager.unregister_worker(first)
                    await manager.unregister_worker(other)

    assert asyncio.run(scenario()) == ("doing", "succeeded")


CUT_OFF = "ragstore-cut-off-worker"  # libpq's PGAPPNAME: the cut-off worker's sessions


def _job_row(url: str, job_id: int) -> tuple[object, ...]:
    """Everything a run writes to the job's row, ``updated_at`` included."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT status, attempts, documents_done, chunks_done, errors, summary,"
            " finished_at, updated_at FROM ingest_jobs WHERE id = %s",
            (job_id,),
        ).fetchone()
    assert row is not None
    return tuple(row)


def test_a_worker_judged_dead_while_cut_off_stops_and_leaves_the_outcome_standing(
    api: Client, jobs_settings: Settings, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A worker is cut off from the database mid-job (stopped, every session of its
    ended) past stalled_after_s: judged dead, its job is put back and another worker
    runs it to the end. When the first comes back, its run went on and wrote its
    progress and its outcome over those of the run that counts. It now stops at its
    next step and writes nothing of the job."""
    total = 30
    url = cli_env["RAGSTORE_DATABASE_URL"]
    api.create_collection("cut-off")
    job = api.upload("cut-off", [(f"c{i:02d}.md", _doc(i)) for i in range(total)], background=True)
    env = {
        **os.environ,
        **cli_env,
        "PGAPPNAME": CUT_OFF,
        "RAGSTORE_WORKER_HEARTBEAT_S": "0.5",
        "RAGSTORE_WORKER_STALLED_AFTER_S": "2",
        "RAGSTORE_INGEST_BATCH_CHUNKS": "1",
        "RAGSTORE_LOG_LEVEL": "warning",
    }
    log = tmp_path / "first.log"
    with log.open("wb") as out:
        first = _worker(env, out)
    try:
        deadline = time.monotonic() + 240
        while _job_row(url, job["id"])[2] < 3:  # type: ignore[operator]
            assert first.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the first worker made no progress"
            time.sleep(0.05)
        # the partition: the worker can reach nothing, and its sessions (its liveness
        # lock's among them) end; no job read meanwhile, to leave the judging to a worker
        os.killpg(first.pid, signal.SIGSTOP)
        with psycopg.connect(url, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (CUT_OFF,),
            ).fetchall()
        assert len(ended) >= 2, ended
        time.sleep(2.5)  # its heartbeat goes stale: judged dead
        run_worker(jobs_settings, burst=True, signals=False)
        counted = _job_row(url, job["id"])
        assert counted[:3] == ("succeeded", 2, total), counted
        os.killpg(first.pid, signal.SIGCONT)  # the partition heals
        deadline = time.monotonic() + 90
        while "attempt 1 stopped" not in log.read_text():
            assert first.poll() is None, log.read_text()[-3000:]
            assert _job_row(url, job["id"]) == counted, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        assert _job_row(url, job["id"]) == counted
        docs, chunks, distinct = _counts(url, "cut-off")
        assert docs == total and chunks == distinct == total * 3
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGCONT)
            os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)


def test_a_run_writes_only_while_its_attempt_counts(api: Client, database_url: str) -> None:
    """The fence, step by step: the earlier attempt's progress and outcome write nothing
    once another attempt started, and a start landing after a run recorded its outcome
    (it read the job unfinished just before) does not turn the job ``running`` again
    with its files gone, for a run of zero documents to report as the job's outcome."""
    api.create_collection("fenced-writes")
    job = api.upload("fenced-writes", [("f.md", b"# F\n\nfenced text")], background=True)
    outcome = {"documents": 1, "chunks": 1, "errors": [], "summary": {"added": 1}}
    with psycopg.connect(database_url) as conn:
        assert store.start(conn, job["id"]) == 1
        assert store.start(conn, job["id"]) == 2  # judged dead: taken again
        assert not store.progress(conn, job["id"], 1, 1, attempt=1)
        assert not store.finish(conn, job["id"], "failed", attempt=1, **outcome)
        assert store.progress(conn, job["id"], 1, 1, attempt=2)
        assert store.finish(conn, job["id"], "succeeded", attempt=2, **outcome)
        done = store.get(conn, job["id"])
        assert store.start(conn, job["id"]) is None
        assert not store.progress(conn, job["id"], 0, 0, attempt=2)
        assert not store.finish(conn, job["id"], "failed", attempt=2, **outcome)
        assert store.get(conn, job["id"]) == done
    assert done.status == "succeeded" and done.attempts == 2 and done.documents_done == 1


def test_a_write_answered_after_a_job_was_accepted_stays_though_it_began_before(
    api: Client, open_url: str, jobs_settings: Settings
) -> None:
    """A direct write that began before a job of the same document was accepted, waited
    for the document's write lock (another writer held it) and was answered after the
    job's acceptance: its row's ``updated_at`` was its transaction's start, before the
    acceptance, so the worker put the job's older version over the acknowledged one. The
    row's time is now taken once the lock is held."""
    api.create_collection("bg-lock")
    api.add_document("bg-lock", "held.md", "# Held\n\nversion one")
    assert jobs_settings.database_url is not None
    url = jobs_settings.database_url.get_secret_value()
    with psycopg.connect(url) as held, psycopg.connect(url, autocommit=True) as admin:
        coll_id, source = held.execute(
            "SELECT c.id, d.source FROM documents d JOIN collections c"
            " ON c.id = d.collection_id WHERE c.name = 'bg-lock'"
        ).fetchone()  # type: ignore[misc]
        documents.lock_sources(held, coll_id, [source])  # another writer's, held
        with Client(open_url) as other, ThreadPoolExecutor(max_workers=1) as pool:
            direct = pool.submit(other.add_document, "bg-lock", "held.md", "# Held\n\nversion two")
            _wait_until(
                lambda: (
                    direct.done()
                    or admin.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'"
                        " AND datname = current_database()"
                    ).fetchone()
                    == (1,)
                ),
                "the direct write to wait for the lock",
            )
            job = api.add_document("bg-lock", "held.md", "# Held\n\nthree", background=True)
            held.commit()
            later = direct.result(timeout=60)
    assert later["status"] == "updated"
    run_worker(jobs_settings, burst=True, signals=False)
    done = api.wait_for_job(job["id"], timeout=5)
    assert done["status"] == "succeeded" and done["errors"] == []
    assert done["summary"].get("superseded") == 1, done["summary"]
    stored = api.get_document("bg-lock", later["id"])
    assert stored["content_hash"] == later["content_hash"], "the acknowledged write stays"


@pytest.mark.parametrize("between", ["write", "delete"])
def test_a_job_answered_after_a_direct_change_is_the_later_request(
    api: Client, open_url: str, jobs_settings: Settings, between: str
) -> None:
    """A job's acceptance was its queueing transaction's start (``created_at``'s default),
    and that transaction can wait (here on another request under its Idempotency-Key)
    before it commits: a direct write or delete of the same document answered while it
    waited, before the job's 202, was stamped later than the job, and the worker took
    the job for the older request (``superseded``), so the version the client sent last
    never landed. The acceptance is now stamped as the transaction's last statement."""
    name = f"bg-stamp-{between}"
    api.create_collection(name)
    first = api.add_document(name, "d.md", "# One\n\nversion one")
    key = f"stamp-{between}"
    scoped = hashlib.sha256(f"\0{key}".encode()).hexdigest()  # auth off: no key id
    assert jobs_settings.database_url is not None
    url = jobs_settings.database_url.get_secret_value()
    with (
        psycopg.connect(url) as held,
        psycopg.connect(url, autocommit=True) as admin,
        httpx.Client(base_url=open_url, timeout=60) as http,
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        assert store.job_for_key(held, name, scoped) is None  # its lock held until commit
        queued = pool.submit(
            http.post,
            f"/v1/collections/{name}/documents",
            json={"name": "d.md", "text": "# Three\n\nversion three", "background": True},
            headers={"Idempotency-Key": key},
        )
        _wait_until(
            lambda: (
                queued.done()
                or admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'"
                    " AND datname = current_database()"
                ).fetchone()
                == (1,)
            ),
            "the job's request to wait for its key's lock",
        )
        if between == "write":
            assert api.add_document(name, "d.md", "# Two\n\nversion two")["status"] == "updated"
        else:
            api.delete_document(name, first["id"])
        assert not queued.done()  # answered after the direct change was
        held.commit()
        answer = queued.result(timeout=60)
    assert answer.status_code == 202, answer.text
    run_worker(jobs_settings, burst=True, signals=False)
    done = api.wait_for_job(answer.json()["id"], timeout=5)
    assert done["status"] == "succeeded" and done["errors"] == []
    status = "updated" if between == "write" else "added"
    assert done["summary"].get(status) == 1, done["summary"]
    assert "superseded" not in done["summary"], done["summary"]
    stored = api.list_documents(name)["data"]
    assert [d["title"] for d in stored] == ["Three"], "the job's upload, sent last, is stored"


def _wait_until(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_superseded_run_stores_no_document_once_it_no_longer_counts(
    api: Client, jobs_settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run's attempt was checked at its progress writes only: a run superseded between
    two of them (its worker judged dead while cut off from the database, the job taken by
    another) went on storing documents, after the other run's outcome, where a document
    the client deleted after reading that outcome came back. Each transaction writing
    the job's documents now commits only while its attempt counts. Progress writes are
    turned off here, so that only those transactions can notice."""
    total = 80
    api.create_collection("fenced-docs")
    job = api.upload(
        "fenced-docs", [(f"f{i:02d}.md", _doc(i)) for i in range(total)], background=True
    )
    monkeypatch.setattr(runner_module, "PROGRESS_EVERY_S", float("inf"))
    ran: list[store.JobRecord] = []

    def first_run() -> None:
        with Runtime(jobs_settings) as rt:
            ran.append(run_job(rt, job["id"]))

    thread = threading.Thread(target=first_run)
    thread.start()
    try:
        deadline = time.monotonic() + 240
        while _counts(database_url, "fenced-docs")[0] < 2:
            assert thread.is_alive() and time.monotonic() < deadline, "no document stored"
            time.sleep(0.01)
        with psycopg.connect(database_url) as conn:  # another worker takes the job
            assert store.start(conn, job["id"]) == 2
        stored = _counts(database_url, "fenced-docs")[0]
        assert stored < total, "the run ended before it was superseded"
    finally:
        thread.join(timeout=240)
    assert not thread.is_alive()
    assert ran and ran[0].attempts == 2 and ran[0].status == "running", ran
    assert _counts(database_url, "fenced-docs")[0] == stored


def test_a_job_written_as_a_bulk_load_is_fenced_once_and_finishes(
    api: Client, jobs_settings: Settings, database_url: str
) -> None:
    """A bulk load is one transaction: its attempt is checked once, after its rounds
    (whose progress writes went before, on other connections, and would wait on the
    job's row lock held by the load's transaction) and before its build and commit."""
    total = 6
    api.create_collection("fenced-bulk")
    job = api.upload("fenced-bulk", [(f"b{i}.md", _doc(i)) for i in range(total)], background=True)
    with Runtime(with_(jobs_settings, bulk_load_bytes=1)) as rt:
        done = run_job(rt, job["id"])
    assert done.status == "succeeded" and done.summary.get("added") == total, done
    assert _counts(database_url, "fenced-bulk")[0] == total


@pytest.mark.parametrize("taken_again", [False, True])
def test_a_dead_workers_entry_put_back_by_another_first_is_left_alone(
    jobs_settings: Settings, database_url: str, taken_again: bool
) -> None:
    """Two parties put a dead worker's entry back at once (two workers' stalled checks,
    or one and a job read): the second's retry raised "invalid status", which a worker
    took for the database gone away. And where a worker had taken the entry again in
    between, the second put back that live worker's entry, for a third run beside it.
    The race is made certain here: the other party acts between the listing and the
    retry."""
    from ragstore.jobs.liveness import requeue_abandoned

    class Raced(LiveJobManager):
        async def get_stalled_jobs(self, *args: object, **kwargs: object) -> list[Job]:
            listed = list(await super().get_stalled_jobs(*args, **kwargs))  # type: ignore[arg-type]
            with psycopg.connect(database_url, autocommit=True) as conn:
                assert requeue_abandoned(conn, "ingest", 2.0) == [entry]  # a job read
                if taken_again:
                    conn.execute(
                        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s"
                        " WHERE id = %s",
                        (taker, entry),
                    )
            return listed

    async def scenario() -> tuple[list[int], tuple[object, ...] | None]:
        nonlocal entry, taker
        with Runtime(jobs_settings) as rt:
            conninfo = rt.db.conninfo
            app = build_queue(conninfo)
            manager = Raced(app.connector, conninfo, stalled_after_s=2.0)
            app.job_manager = manager
            async with app.open_async():
                dead = await manager.register_worker()
                taker = await manager.register_worker()
                await manager._held.pop(dead).close()  # its process gone
                with psycopg.connect(database_url, autocommit=True) as conn:
                    # silent for an hour; and the server up past stalled_after_s, from
                    # which a heartbeat counts at the earliest
                    conn.execute(
                        "UPDATE procrastinate_workers SET last_heartbeat = %s WHERE id = %s",
                        (datetime.now(UTC) - timedelta(hours=1), dead),
                    )
                    conn.execute(
                        "SELECT pg_sleep(greatest(0, 2.5 - extract(epoch FROM"
                        " now() - pg_postmaster_start_time())))"
                    )
                    row = conn.execute(
                        "INSERT INTO procrastinate_jobs (queue_name, task_name, status, args,"
                        " worker_id) VALUES ('ingest', 'ragstore.ingest', 'doing', '{}', %s)"
                        " RETURNING id",
                        (dead,),
                    ).fetchone()
                    assert row is not None
                    entry = int(row[0])
                try:
                    retried = await worker_module.retry_stalled(app, 2.0)
                finally:
                    with psycopg.connect(database_url, autocommit=True) as conn:
                        state = conn.execute(
                            "SELECT status::text, worker_id, attempts FROM procrastinate_jobs"
                            " WHERE id = %s",
                            (entry,),
                        ).fetchone()
                        conn.execute("DELETE FROM procrastinate_jobs WHERE id = %s", (entry,))
                    await manager.unregister_worker(taker)
                return retried, None if state is None else tuple(state)

    entry = taker = 0
    retried, state = asyncio.run(scenario())
    assert retried == []
    assert state == (("doing", taker, 1) if taken_again else ("todo", None, 1))


def test_a_dead_workers_job_put_back_by_a_worker_shows_queued(
    api: Client, jobs_settings: Settings, database_url: str
) -> None:
    """A worker's stalled check put a dead worker's entry back on the queue and left the
    job ``running`` until another worker started it (a job read, which puts it back
    too, shows it ``queued``): a client saw it run while it waited for a worker."""
    api.create_collection("stalled-shown")
    job = api.upload("stalled-shown", [("s.md", b"# S\n\nstalled text")], background=True)

    async def scenario() -> tuple[list[int], str]:
        with Runtime(jobs_settings) as rt:
            conninfo = rt.db.conninfo
            app = build_queue(conninfo)
            manager = LiveJobManager(app.connector, conninfo, stalled_after_s=2.0)
            app.job_manager = manager
            async with app.open_async():
                dead = await manager.register_worker()
                await manager._held.pop(dead).close()  # its process gone
                with psycopg.connect(database_url, autocommit=True) as conn:
                    row = conn.execute(
                        "SELECT queue_job_id FROM ingest_jobs WHERE id = %s", (job["id"],)
                    ).fetchone()
                    assert row is not None and row[0] is not None
                    entry = int(row[0])
                    conn.execute(  # the dead worker took the job and started it
                        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s"
                        " WHERE id = %s",
                        (dead, entry),
                    )
                    assert store.start(conn, job["id"]) == 1
                    conn.execute(
                        "UPDATE procrastinate_workers SET last_heartbeat = %s WHERE id = %s",
                        (datetime.now(UTC) - timedelta(hours=1), dead),
                    )
                    conn.execute(
                        "SELECT pg_sleep(greatest(0, 2.5 - extract(epoch FROM"
                        " now() - pg_postmaster_start_time())))"
                    )
                retried = await worker_module.retry_stalled(app, 2.0)
                assert retried == [entry]
                with psycopg.connect(database_url) as conn:
                    return retried, store.get(conn, job["id"]).status

    _, status = asyncio.run(scenario())
    assert status == "queued"
    run_worker(jobs_settings, burst=True, signals=False)  # the next worker runs it
    done = api.get_job(job["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 2, done


def test_a_worker_loop_that_stops_itself_unasked_is_started_again(
    jobs_settings: Settings,
) -> None:
    """procrastinate's loop stops itself, and returns normally, when one of its side tasks
    raises (here its job listener). ``ragstore worker`` took that for a requested stop and
    exited 0 for good, its queue left to wait for an operator; the loop is started again."""

    class DeafListener(LiveJobManager):
        async def listen_for_jobs(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("the job listener failed (a test's)")

    async def scenario() -> bool:
        with Runtime(jobs_settings) as rt:
            conninfo = rt.db.conninfo
            app = build_queue(conninfo)
            app.job_manager = DeafListener(app.connector, conninfo, stalled_after_s=2.0)
            loop = functools.partial(
                app.run_worker_async,
                queues=["no-jobs-here"],
                wait=True,
                name="self-stopping",
                install_signal_handlers=False,
            )
            async with app.open_async():
                return await asyncio.wait_for(
                    worker_module._work_until_lost(
                        app, jobs_settings, loop, asyncio.Event(), burst=False
                    ),
                    timeout=30,
                )

    assert asyncio.run(scenario()) is False  # not stopped: to be started again


def test_a_jobs_recorded_errors_name_no_database_and_no_internals() -> None:
    """Every holder of a read key reads a job's errors: a document that failed because the
    database was unreachable was recorded with ``str(exc)``, which named the database
    (host, port, user, name); an error not ragstore's own was recorded with its text."""
    from ragstore.db.database import Database
    from ragstore.errors import DatabaseUnavailableError
    from ragstore.jobs.runner import _error_entry

    db = Database("postgresql://secretuser@127.0.0.1:1/secretdb?connect_timeout=2")
    with pytest.raises(DatabaseUnavailableError) as lost, db.connect():
        pass
    assert "secretdb" in str(lost.value)  # the log's message names it
    entry = _error_entry(1, "a.md", lost.value)
    assert entry["code"] == "database_unavailable" and entry["document"] == "a.md"
    assert not any(s in entry["detail"] for s in ("secretuser", "secretdb", "127.0.0.1:1"))
    # a finished job's record: what became of the document, not the API's "retry in 5s"
    assert entry["detail"].startswith("not stored: the database"), entry
    assert entry["detail"].endswith("; send it again (the worker's log has the details)")
    whole = _error_entry(1, None, lost.value)["detail"]
    assert whole.startswith("the job failed: the database") and "send its documents again" in whole
    assert not any("retry in" in d for d in (entry["detail"], whole)), whole
    broke = _error_entry(1, None, KeyError("/srv/internal/path"))
    assert broke["code"] == "internal_error" and "/srv/internal" not in broke["detail"]


@contextlib.contextmanager
def _row_held(
    url: str, job_id: int, hold_s: int
) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A transaction holding the job's row as a run's write does before its commit
    (``db.jobs.hold_current``), left open: the worker's machine vanished there. The
    server ends it after ``hold_s`` (as it would once keepalives noticed), so that a
    wait on it ends too, late."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "SELECT set_config('idle_in_transaction_session_timeout', %s, true)",
            (f"{hold_s}s",),
        )
        conn.execute("SELECT 1 FROM ingest_jobs WHERE id = %s FOR SHARE", (job_id,))
        yield conn
        with contextlib.suppress(psycopg.Error):
            conn.rollback()


def test_a_job_row_held_by_a_vanished_workers_transaction_stalls_no_check(
    api: Client, jobs_settings: Settings, database_url: str
) -> None:
    """A worker whose machine vanished between its write's row lock and its commit left
    the job's row held until the server noticed (minutes; hours by the system's default
    keepalives). The stalled-job check showing its job ``queued`` waited on it all that
    while, every other dead worker's job with it, and so did a job read. Both now leave
    it for later, at once, and put it back once the transaction is gone."""
    from ragstore.jobs.liveness import requeue_abandoned

    api.create_collection("held-row")
    job = api.upload("held-row", [("h.md", b"# H\n\nheld row text")], background=True)

    async def scenario() -> tuple[float, list[int], list[int], list[int], str]:
        with Runtime(jobs_settings) as rt:
            conninfo = rt.db.conninfo
            app = build_queue(conninfo)
            manager = LiveJobManager(app.connector, conninfo, stalled_after_s=2.0)
            app.job_manager = manager
            async with app.open_async():
                dead = await manager.register_worker()
                await manager._held.pop(dead).close()  # its process gone
                with psycopg.connect(database_url, autocommit=True) as conn:
                    row = conn.execute(
                        "SELECT queue_job_id FROM ingest_jobs WHERE id = %s", (job["id"],)
                    ).fetchone()
                    assert row is not None and row[0] is not None
                    entry = int(row[0])
                    conn.execute(
                        "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s"
                        " WHERE id = %s",
                        (dead, entry),
                    )
                    assert store.start(conn, job["id"]) == 1
                    conn.execute(
                        "UPDATE procrastinate_workers SET last_heartbeat = %s WHERE id = %s",
                        (datetime.now(UTC) - timedelta(hours=1), dead),
                    )
                    conn.execute(
                        "SELECT pg_sleep(greatest(0, 2.5 - extract(epoch FROM"
                        " now() - pg_postmaster_start_time())))"
                    )
                with _row_held(database_url, job["id"], 30):
                    t0 = time.monotonic()
                    held = await worker_module.retry_stalled(app, 2.0)
                    with psycopg.connect(database_url, autocommit=True) as conn:
                        read = requeue_abandoned(conn, "ingest", 2.0)
                    took = time.monotonic() - t0
                after = await worker_module.retry_stalled(app, 2.0)
                with psycopg.connect(database_url) as conn:
                    return took, held, read, after, store.get(conn, job["id"]).status

    took, held, read, after, status = asyncio.run(scenario())
    assert took < 10, f"the check and the read waited {took:.0f} s on the held row"
    assert held == [] and read == []
    assert len(after) == 1 and status == "queued"
    run_worker(jobs_settings, burst=True, signals=False)
    done = api.get_job(job["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 2, done


def test_a_start_on_a_row_held_by_a_vanished_workers_transaction_tries_later(
    api: Client, jobs_settings: Settings, database_url: str
) -> None:
    """A worker's start of a job (its attempt counted on the job's row) waited on the row
    lock of an earlier attempt's transaction left open by a vanished machine, its slot
    taken, until the server noticed. The start now gives up after a few seconds, the job
    not started (nor failed), and the queue hands it out again a little later."""
    api.create_collection("held-start")
    job = api.upload("held-start", [("s.md", b"# S\n\nheld start text")], background=True)
    with _row_held(database_url, job["id"], 40):
        t0 = time.monotonic()
        run_worker(jobs_settings, burst=True, signals=False)
        took = time.monotonic() - t0
        with psycopg.connect(database_url) as conn:
            waiting = store.get(conn, job["id"])
            state = conn.execute(
                "SELECT status::text FROM procrastinate_jobs WHERE id = %s",
                (waiting.queue_job_id,),
            ).fetchone()
    assert took < 25, f"the start waited {took:.0f} s on the held row"
    assert waiting.status == "queued" and waiting.attempts == 0, waiting
    assert state == ("todo",)
    time.sleep(5.5)  # the queue's later hand-out
    run_worker(jobs_settings, burst=True, signals=False)
    done = api.get_job(job["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 1, done


def test_a_worker_left_running_through_a_schema_upgrade_leaves_its_job_queued(
    api: Client, jobs_settings: Settings, database_url: str
) -> None:
    """A worker still running when ``db upgrade`` changed the schema (the upgrade's step
    "stop the workers" skipped) refused the job's start (schema_mismatch), and its queue
    entry failed: the job was failed as ``outcome_not_recorded`` with no attempt made, an
    upload accepted before the upgrade lost. The job now waits, queued, for a worker of
    the matching version."""
    api.create_collection("upgraded-under")
    job = api.upload("upgraded-under", [("u.md", b"# U\n\nupgraded under it")], background=True)
    with psycopg.connect(database_url, autocommit=True) as conn:
        head = str(conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])

    async def old_worker() -> None:
        with Runtime(jobs_settings) as rt:
            app = build_queue(rt.db.conninfo, runtime=rt)  # the schema checked: the head
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute("UPDATE alembic_version SET version_num = '9999'")  # "upgraded"
            time.sleep(database_module.SCHEMA_RECHECK_S + 0.5)  # its next look sees it
            async with app.open_async():
                await app.run_worker_async(
                    queues=[QUEUE], wait=False, install_signal_handlers=False
                )

    try:
        asyncio.run(old_worker())
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("UPDATE alembic_version SET version_num = %s", (head,))
    with psycopg.connect(database_url) as conn:
        waiting = store.get(conn, job["id"])
        state = conn.execute(
            "SELECT status::text FROM procrastinate_jobs WHERE id = %s", (waiting.queue_job_id,)
        ).fetchone()
    assert waiting.status == "queued" and waiting.attempts == 0, waiting
    assert state == ("todo",)
    time.sleep(5.5)  # the queue's later hand-out
    run_worker(jobs_settings, burst=True, signals=False)  # the matching version's worker
    done = api.get_job(job["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 1, done


def test_a_lost_jobs_row_held_by_a_vanished_workers_transaction_stalls_no_read(
    api: Client, jobs_settings: Settings, database_url: str
) -> None:
    """A job whose queue entry ended unrecorded (here ``failed``) is failed by every job
    read and every worker's check (``outcome_not_recorded``), all such jobs in one
    statement. Where a transaction of its run's vanished machine still held its row, that
    statement waited on it until the server noticed: every read of any unfinished job,
    the listing, and the worker's stalled check (and so its stop) with it. The row is
    now left for a later round, at once, and the job failed once the transaction is gone."""
    api.create_collection("held-lost")
    job = api.upload("held-lost", [("l.md", b"# L\n\nheld lost text")], background=True)
    other = api.upload("held-lost", [("m.md", b"# M\n\nanother job text")], background=True)
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert store.start(conn, job["id"]) == 1
        conn.execute(
            "UPDATE procrastinate_jobs SET status = 'failed'"
            " WHERE id = (SELECT queue_job_id FROM ingest_jobs WHERE id = %s)",
            (job["id"],),
        )

    async def check() -> list[int]:
        app = build_queue(database_url)
        async with app.open_async():
            return await worker_module.fail_lost(app)

    with _row_held(database_url, job["id"], 30):
        t0 = time.monotonic()
        seen = api.get_job(job["id"])
        read = time.monotonic() - t0
        t0 = time.monotonic()
        listed = api.list_jobs(collection="held-lost")["data"]
        waiting = api.get_job(other["id"])
        listing = time.monotonic() - t0
        t0 = time.monotonic()
        failed = asyncio.run(check())
        checked = time.monotonic() - t0
    assert read < 10, f"the job read waited {read:.0f} s on the held row"
    assert listing < 10, f"the listing waited {listing:.0f} s on the held row"
    assert checked < 10, f"the worker's check waited {checked:.0f} s on the held row"
    assert seen["status"] == "running" and failed == [], (seen, failed)
    assert [j["status"] for j in listed] == ["queued", "running"], listed
    assert waiting["status"] == "queued", waiting
    done = api.get_job(job["id"])
    assert done["status"] == "failed", done
    assert [e["code"] for e in done["errors"]] == ["outcome_not_recorded"]
    with psycopg.connect(database_url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM ingest_job_files WHERE job_id = %s", (job["id"],)
        ).fetchone()
    assert left == (0,)


def test_a_bulk_load_superseded_before_its_commit_stores_nothing(
    api: Client,
    jobs_settings: Settings,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bulk load's one transaction is checked once, before its build and commit: where
    another worker took the job meanwhile (this one judged dead while cut off from the
    database), none of the load's documents may commit, and the run reports itself
    superseded, leaving the other attempt's run to count. The other worker's start lands
    here just before that check, after every round was written in the transaction."""
    total = 6
    api.create_collection("fenced-bulk-gone")
    job = api.upload(
        "fenced-bulk-gone", [(f"g{i}.md", _doc(i)) for i in range(total)], background=True
    )
    monkeypatch.setattr(runner_module, "PROGRESS_EVERY_S", float("inf"))
    real_fence = runner_module._fence
    checks: list[int] = []

    def fence_after_a_takeover(job_id: int, attempt: int) -> Callable[[store.Conn], None]:
        guard = real_fence(job_id, attempt)

        def taken_first(conn: store.Conn) -> None:
            checks.append(attempt)
            with psycopg.connect(database_url) as other:  # another worker takes the job
                assert store.start(other, job_id) == attempt + 1
            guard(conn)

        return taken_first

    monkeypatch.setattr(runner_module, "_fence", fence_after_a_takeover)
    with (
        caplog.at_level("WARNING", logger="ragstore.jobs"),
        Runtime(with_(jobs_settings, bulk_load_bytes=1)) as rt,
    ):
        ran = run_job(rt, job["id"])
    assert checks == [1], checks  # one check: the bulk load's
    assert ran.attempts == 2 and ran.status == "running", ran
    assert "attempt 1 stopped" in caplog.text
    assert _counts(database_url, "fenced-bulk-gone") == (0, 0, 0)
    monkeypatch.setattr(runner_module, "_fence", real_fence)
    with Runtime(with_(jobs_settings, bulk_load_bytes=1)) as rt:  # a later attempt's run
        done = run_job(rt, job["id"])
    assert done.status == "succeeded" and done.summary.get("added") == total, done
    assert _counts(database_url, "fenced-bulk-gone")[0] == total


def test_a_worker_loop_that_keeps_stopping_itself_is_started_again_ever_later(
    jobs_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A side task that fails every time (a job listener the database refuses) ended
    procrastinate's loop at once each time, and the worker started it again after one
    second, for good: a loop and an error line a second. The pause now grows with each
    end in a row, up to a cap."""

    class DeafListener(LiveJobManager):
        async def listen_for_jobs(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("the job listener failed (a test's)")

    monkeypatch.setattr(worker_module, "RESTART_EVERY_S", (0.2, 0.6, 1.5))
    took: list[float] = []

    async def scenario() -> None:
        with Runtime(jobs_settings) as rt:
            conninfo = rt.db.conninfo
            app = build_queue(conninfo)
            app.job_manager = DeafListener(app.connector, conninfo, stalled_after_s=2.0)
            loop = functools.partial(
                app.run_worker_async,
                queues=["no-jobs-here"],
                wait=True,
                name="self-stopping",
                install_signal_handlers=False,
            )
            restarts = worker_module.Restarts()
            async with app.open_async():
                for _ in range(4):
                    t0 = time.monotonic()
                    ended = await asyncio.wait_for(
                        worker_module._work_until_lost(
                            app, jobs_settings, loop, asyncio.Event(), restarts=restarts
                        ),
                        timeout=30,
                    )
                    assert ended is False
                    took.append(time.monotonic() - t0)

    asyncio.run(scenario())
    # each end is followed by its pause (0.2, 0.6, then the cap 1.5): a loop's own start
    # adds to each (0.2 s of the first under load), so each is held to its pause alone
    assert took[1] >= 0.6 and took[2] >= 1.5, took
    assert took[3] >= 1.5 and took[3] < took[2] + 1.0, took  # capped


def test_a_job_whose_collection_was_deleted_after_it_was_queued_stores_nothing(
    api: Client, jobs_settings: Settings
) -> None:
    """A job (202) queued before its collection was deleted: it fails saying so, and makes
    nothing again. It failed with "does not exist (collections: <every other name>);
    ingest into it to create it", naming the other collections to any reader of the job.
    Deleted and made again under its name, the job wrote its documents into the new
    collection, which the user had made afresh. A job into a collection its request made
    (none existed) still runs."""
    api.create_collection("dropped")
    job = api.add_document("dropped", "a.md", "# A\n\nalpha text", background=True)
    api.delete_collection("dropped")
    api.create_collection("remade")
    again = api.add_document("remade", "b.md", "# B\n\nbravo text", background=True)
    api.delete_collection("remade")
    api.create_collection("remade")
    fresh = api.add_document("made-by-job", "c.md", "# C\n\ncharlie text", background=True)
    run_worker(jobs_settings, burst=True, signals=False)
    done = api.get_job(job["id"])
    assert done["status"] == "failed", done
    [error] = done["errors"]
    assert error["code"] == "collection_not_found"
    assert "'dropped' was deleted after this job was queued" in error["detail"]
    assert "remade" not in error["detail"]  # no other collection named
    assert "dropped" not in [c["name"] for c in api.list_collections()]
    done = api.get_job(again["id"])
    assert done["status"] == "failed", done
    assert "'remade' was deleted after this job was queued" in done["errors"][0]["detail"]
    assert api.list_documents("remade")["data"] == []
    assert api.get_job(fresh["id"])["status"] == "succeeded"
    assert [d["name"] for d in api.list_documents("made-by-job")["data"]] == ["c.md"]


def test_a_job_whose_collection_is_made_again_after_its_start_writes_nothing_there(
    api: Client, jobs_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collection deleted and made again between the job's start check and its
    writes: each transaction writing the job's documents checks it again (the row it
    writes held), so nothing lands in the new collection and the job fails as above."""
    api.create_collection("swapped")
    job = api.upload(
        "swapped", [("a.md", b"# A\n\nalpha text"), ("b.md", b"# B\n\nbravo")], background=True
    )
    real_check = runner_module._check_collection_at_start

    def check_then_replace(rt: Runtime, record: store.JobRecord) -> None:
        real_check(rt, record)
        api.delete_collection("swapped")
        api.create_collection("swapped")

    monkeypatch.setattr(runner_module, "_check_collection_at_start", check_then_replace)
    with Runtime(jobs_settings) as rt:
        ran = run_job(rt, job["id"])  # failed by the delete: the run stops, writing nothing
    done = api.get_job(job["id"])
    assert ran.status == "failed" and ran.errors == done["errors"]
    assert done["status"] == "failed", done
    assert done["errors"][-1]["code"] == "collection_not_found", done
    assert "was deleted after this job was queued" in done["errors"][-1]["detail"]
    assert api.list_documents("swapped")["data"] == []


def test_a_job_whose_collection_is_deleted_while_it_runs_fails_saying_so(
    api: Client, jobs_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deleted between two of the job's rounds, the job failed as a ``conflict`` telling
    the client to "retry the request ... see 'stored_files'", which a job has neither of;
    deleted after its start check and before the ingest looked it up, it failed naming
    every other collection. Both now record the deletion."""
    api.create_collection("midrun")
    job = api.upload("midrun", [(f"m{i}.md", _doc(i)) for i in range(6)], background=True)
    real = runner_module._Progress.__call__
    deleted: list[int] = []

    def deleting(self: runner_module._Progress, event: str, files: int, chunks: int) -> None:
        real(self, event, files, chunks)
        if files >= 1 and not deleted:
            deleted.append(files)
            api.delete_collection("midrun")

    monkeypatch.setattr(runner_module._Progress, "__call__", deleting)
    with Runtime(jobs_settings) as rt:
        run_job(rt, job["id"])
    assert deleted
    done = api.get_job(job["id"])
    assert done["status"] == "failed", done
    assert done["errors"][-1]["code"] == "collection_not_found", done
    assert "'midrun' was deleted after this job was queued" in done["errors"][-1]["detail"]
    monkeypatch.undo()
    api.create_collection("midway")
    job = api.upload("midway", [("a.md", b"# A\n\nalpha text")], background=True)
    real_check = runner_module._check_collection_at_start
    checks: list[int] = []

    def check_then_delete(rt: Runtime, record: store.JobRecord) -> None:
        real_check(rt, record)
        if not checks:
            checks.append(1)
            api.delete_collection("midway")

    monkeypatch.setattr(runner_module, "_check_collection_at_start", check_then_delete)
    with Runtime(jobs_settings) as rt:
        run_job(rt, job["id"])
    done = api.get_job(job["id"])
    assert done["status"] == "failed", done
    assert "'midway' was deleted after this job was queued" in done["errors"][-1]["detail"]
    assert "midrun" not in done["errors"][-1]["detail"]


def test_deleting_a_collection_fails_its_queued_jobs_and_drops_their_files(
    api: Client, jobs_settings: Settings, database_url: str
) -> None:
    """A collection's queued jobs held their uploaded text in ``ingest_job_files`` after
    the collection was deleted, until a worker ran them (only to fail them): with no worker
    running, for good, and in every backup. The delete fails them and drops their files;
    a worker then leaves them as they are. Another collection's jobs stay.

    Their queue entries go too: a waiting entry kept the failed job out of the
    finished-job sweep (which keeps a job whose entry waits) until a worker ran it; with
    none running, for good."""
    api.create_collection("leftover")
    first = api.upload("leftover", [("s.md", b"# S\n\nsecret alpha text")], background=True)
    second = api.add_document("leftover", "t.md", "# T\n\nsecret bravo", background=True)
    api.create_collection("bystander")
    other = api.add_document("bystander", "o.md", "# O\n\nother text", background=True)
    api.delete_collection("leftover")
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM ingest_job_files WHERE job_id = ANY(%s)",
            ([first["id"], second["id"]],),
        ).fetchone()
        kept = conn.execute(
            "SELECT count(*) FROM ingest_job_files WHERE job_id = %s", (other["id"],)
        ).fetchone()
        entries = conn.execute(
            "SELECT j.id, p.status::text FROM ingest_jobs j"
            " LEFT JOIN procrastinate_jobs p ON p.id = j.queue_job_id WHERE j.id = ANY(%s)",
            ([first["id"], second["id"], other["id"]],),
        ).fetchall()
    assert row is not None and row[0] == 0
    assert kept is not None and kept[0] == 1
    assert dict(entries) == {first["id"]: None, second["id"]: None, other["id"]: "todo"}
    failed = [api.get_job(job["id"]) for job in (first, second)]
    for done in failed:
        assert done["status"] == "failed" and done["finished_at"] is not None, done
        [error] = done["errors"]
        assert error["code"] == "collection_not_found"
        assert "'leftover' was deleted after this job was queued" in error["detail"]
    run_worker(jobs_settings, burst=True, signals=False)
    assert [api.get_job(job["id"]) for job in (first, second)] == failed  # left as they are
    assert api.get_job(other["id"])["status"] == "succeeded"
    assert "leftover" not in [c["name"] for c in api.list_collections()]


def test_deleting_a_collection_waits_on_no_job_row_another_transaction_holds(
    api: Client, jobs_settings: Settings, database_url: str
) -> None:
    """A job row held by a worker's transaction (a vanished machine's, open until the
    server notices) is skipped by the collection's delete, not waited on: the delete
    answers at once, and the run that takes the job fails it and drops its files."""
    api.create_collection("heldjob")
    job = api.add_document("heldjob", "h.md", "# H\n\nheld text", background=True)
    deleted = threading.Event()
    with psycopg.connect(database_url) as holder:
        holder.execute("SELECT 1 FROM ingest_jobs WHERE id = %s FOR SHARE", (job["id"],))
        t = threading.Thread(target=lambda: (api.delete_collection("heldjob"), deleted.set()))
        t.start()
        finished = deleted.wait(30)
    t.join()
    assert finished, "the delete waited for the held job row"
    assert api.get_job(job["id"])["status"] == "queued"
    run_worker(jobs_settings, burst=True, signals=False)
    done = api.get_job(job["id"])
    assert done["status"] == "failed" and done["errors"][-1]["code"] == "collection_not_found"
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM ingest_job_files WHERE job_id = %s", (job["id"],)
        ).fetchone()
    assert row is not None and row[0] == 0


def test_a_job_queued_after_its_collections_delete_is_refused_not_kept(
    api: Client, jobs_settings: Settings, database_url: str
) -> None:
    """A request makes a missing collection, then queues its job: a delete between the two
    failed the collection's jobs without this one, answered 202 and kept with its uploaded
    text until a worker ran it (with none, for good). The queueing now finds the
    collection gone and refuses, recording nothing."""
    api.create_collection("raced")
    api.delete_collection("raced")
    with psycopg.connect(database_url) as conn:
        before = conn.execute("SELECT coalesce(max(id), 0) FROM ingest_jobs").fetchone()
    assert before is not None
    with Runtime(jobs_settings) as rt:
        queue = build_queue(rt.db.conninfo, sync=True)
        files = [store.JobFile("r.md", b"# R\n\nraced text")]
        with queue.open(), pytest.raises(CollectionNotFoundError, match="'raced' was deleted"):
            submit_ingest(rt, queue, "raced", files)
    with psycopg.connect(database_url) as conn:
        after = conn.execute(
            "SELECT count(*) FROM ingest_jobs WHERE id > %s", (before[0],)
        ).fetchone()
    assert after is not None and after[0] == 0


def test_a_worker_start_removes_the_staging_files_a_killed_process_left(
    jobs_settings: Settings,
) -> None:
    """A request or job killed mid-way (SIGKILL, out of memory) left its staging files,
    the uploaded text, in the data folder for good, after its documents or collection
    were deleted too. A starting worker (or server) removes those no live process holds;
    a held one (a live request's, however old) and a fresh one stay."""
    root = jobs_settings.data_dir / "staging"
    root.mkdir(parents=True, exist_ok=True)
    orphan = root / "upload-killed"
    orphan.write_bytes(b"# Secret\n\nleft by a killed worker")
    old = time.time() - 3600
    os.utime(orphan, (old, old))
    fresh = root / "upload-fresh"
    fresh.write_bytes(b"just made")
    # an area whose process died: its lock file is there, held by no one
    dead_lock = root / "area-deadbeef.lock"
    dead_lock.write_bytes(b"")
    dead_files = [root / f"upload-deadbeef-{i}" for i in range(3)]
    for path in (dead_lock, *dead_files):
        path.write_bytes(b"" if path is dead_lock else b"left by a killed request")
        os.utime(path, (old, old))
    with runner_module.staging.staging_area(jobs_settings) as area:
        held = [area.write(b"a live request's upload %d" % i) for i in range(50)]
        for path in held:
            os.utime(path, (old, old))
        for lock in root.glob("area-*.lock"):
            os.utime(lock, (old, old))  # a long request's: its lock is old but held
        run_worker(jobs_settings, burst=True, signals=False)
        assert all(path.exists() for path in held)
        open_there = [
            fd
            for fd in os.listdir("/proc/self/fd")
            if os.path.realpath(f"/proc/self/fd/{fd}").startswith(str(root.resolve()))
        ]
        assert len(open_there) == 1, "one descriptor (the area's lock) for its 50 files"
    assert not orphan.exists() and fresh.exists()
    assert not any(path.exists() for path in (dead_lock, *dead_files, *held))
    assert list(root.glob("area-*")) == []
    fresh.unlink()


def test_a_running_worker_sweeps_the_staging_files_a_process_killed_meanwhile_left(
    api: Client, jobs_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker swept the staging folder only as it started: the files of a worker killed
    while it ran (another one on the machine) stayed, with their uploaded text, until a
    restart, on a machine running only workers (the API server sweeps every minute). A
    running worker now sweeps as the server does, and stops sweeping when it stops."""
    monkeypatch.setattr(runner_module.staging, "SWEEP_AFTER_S", 0.2)
    made: list[runner_module.staging.Sweeper] = []

    class Recorded(runner_module.staging.Sweeper):
        def __init__(self, settings: Settings) -> None:
            super().__init__(settings)
            made.append(self)

    monkeypatch.setattr(runner_module.staging, "Sweeper", Recorded)
    api.create_collection("swept")
    job = api.upload("swept", [(f"s{i}.md", _doc(i)) for i in range(3)], background=True)
    root = jobs_settings.data_dir / "staging"
    # an area whose process was killed after this worker started: its lock held by no one
    left = [root / "area-killedw.lock", root / "upload-killedw-0"]
    real = runner_module._Progress.__call__
    swept: list[bool] = []

    def progress(self: runner_module._Progress, event: str, files: int, chunks: int) -> None:
        real(self, event, files, chunks)
        if swept:
            return
        for path in left:
            path.write_bytes(b"" if path.suffix else b"# Secret\n\nleft by a killed worker")
        deadline = time.monotonic() + 30  # the job waits here while the worker runs
        while any(path.exists() for path in left) and time.monotonic() < deadline:
            time.sleep(0.05)
        swept.append(not any(path.exists() for path in left))

    monkeypatch.setattr(runner_module._Progress, "__call__", progress)
    run_worker(jobs_settings, burst=True, signals=False)
    assert swept == [True], f"still there: {sorted(os.listdir(root))}"
    assert api.get_job(job["id"])["status"] == "succeeded"
    assert len(made) == 1 and not made[0]._thread.is_alive(), "the sweeper outlived the worker"


def test_a_worker_that_cannot_write_its_staging_folder_refuses_to_start(
    api: Client, jobs_settings: Settings, tmp_path: Path
) -> None:
    """A worker writes each job's files to its staging folder before ingesting them.
    Started where it could not (here a file in the folder's place; a read-only or full
    filesystem is the same), it took every queued job in turn and failed each for good
    (``internal_error``, its uploaded bytes dropped) after the clients were told 202. It
    now refuses to start, naming the folder, and the jobs wait for a worker that can."""
    api.create_collection("unstaged")
    job = api.add_document("unstaged", "a.md", "# A\n\nalpha text", background=True)
    broken = tmp_path / "data"
    broken.mkdir()
    (broken / "staging").write_text("a file where the staging folder goes")
    with pytest.raises(ConfigError) as refused:
        run_worker(with_(jobs_settings, data_dir=broken), burst=True, signals=False)
    assert str(broken / "staging") in str(refused.value)
    assert "no job was taken" in str(refused.value)
    waiting = api.get_job(job["id"])
    assert (waiting["status"], waiting["attempts"]) == ("queued", 0), waiting
    run_worker(jobs_settings, burst=True, signals=False)  # a worker that can runs it
    assert api.get_job(job["id"])["status"] == "succeeded"
    assert [d["name"] for d in api.list_documents("unstaged")["data"]] == ["a.md"]


def test_a_burst_worker_runs_the_jobs_queued_behind_one_of_their_collection(
    api: Client, jobs_settings: Settings
) -> None:
    """Jobs of one collection share a queue lock: the second waits while the first runs.
    procrastinate's burst loop stops at the first fetch that finds nothing, so a burst
    worker with two slots took the first job, found the second held back by it, and
    exited when the first ended: ``--burst`` ("exit once the queue is empty") left the
    second queued, for a next worker that a cron job or CI run never starts."""
    api.create_collection("burst")
    jobs = [
        api.add_document("burst", f"{n}.md", f"# {n}\n\n{n} text", background=True)
        for n in ("first", "second")
    ]
    run_worker(jobs_settings, burst=True, signals=False, concurrency=2)
    assert [api.get_job(j["id"])["status"] for j in jobs] == ["succeeded", "succeeded"]
    assert sorted(d["name"] for d in api.list_documents("burst")["data"]) == [
        "first.md",
        "second.md",
    ]


def test_concurrent_bulk_loads_on_a_small_pool_wait_their_turn_and_all_store(
    api: Client, jobs_settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ragstore worker --concurrency N`` runs N jobs in one process on one pool. Bulk
    loads each held one pooled connection (two staged) for their whole length, and with
    more of them at once than the pool could lend their own lookups found no free one:
    jobs ended with their documents not stored (``database_unavailable``). Loads past
    what the pool can lend now wait their turn (``staging.load_connections``)."""
    from ragstore.ingest import service

    monkeypatch.setattr(service, "STAGE_MIN_BYTES", 0)  # every load stages: two connections
    monkeypatch.setattr(runner_module, "RETRY_S", 0.1)
    jobs = []
    for n in range(6):
        name = f"pool-bulk-{n}"
        api.create_collection(name)
        files = [(f"p{n}-{i}.md", _doc(n * 3 + i)) for i in range(2)]
        jobs.append((name, api.upload(name, files, background=True)["id"]))
    small = with_(jobs_settings, pool_max_size=4, bulk_load_bytes=1, connect_timeout_s=3.0)
    with Runtime(small) as rt, ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        runs = [pool.submit(run_job, rt, job_id) for _, job_id in jobs]
        done = [r.result() for r in runs]
    assert [d.status for d in done] == ["succeeded"] * len(jobs), [d.errors for d in done]
    assert all(d.errors == [] and d.summary.get("added") == 2 for d in done), done
    assert [_counts(database_url, name)[0] for name, _ in jobs] == [2] * len(jobs)


def test_jobs_show_names_a_failed_document_once(
    api: Client,
    jobs_settings: Settings,
    open_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``jobs show`` printed "empty.md: empty_document: empty.md: the file is empty": the
    detail names its file itself, so the line does not name it again. (Last in the file:
    its job would be counted by the tests that list every job.)"""
    from tests.conftest import run_cli

    api.create_collection("jobs-show")
    job = api.upload("jobs-show", [("empty.md", b"")], background=True)
    run_worker(jobs_settings, burst=True, signals=False)
    detail = api.wait_for_job(job["id"], timeout=5)["errors"][0]["detail"]
    assert detail.startswith("empty.md: "), detail  # else the test could not fail
    monkeypatch.setenv("RAGSTORE_URL", open_url)
    monkeypatch.delenv("RAGSTORE_API_KEY", raising=False)
    assert run_cli("jobs", "show", str(job["id"])) == 0
    out = capsys.readouterr().out
    assert f"  empty.md: empty_document: {detail.removeprefix('empty.md: ')}\n" in out, out
    assert out.count("empty.md") == 1, out
