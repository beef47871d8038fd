"""A worker outlives an outage of its database (a restart, a failover): it works again
once the database answers, and a job accepted after the outage is run, not left queued
for an operator to notice. The outage is the module database's own: its sessions ended
and new ones refused (``ALLOW_CONNECTIONS false``) for a few seconds."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from ragstore import Client
from ragstore.config import Settings
from ragstore.db import embedded
from ragstore.errors import DatabaseUnavailableError
from ragstore.jobs.liveness import WORKER_LOCKS, LiveJobManager
from ragstore.jobs.queue import build_queue
from ragstore.jobs.runner import run_job
from ragstore.runtime import Runtime
from tests.api.conftest import with_

APP_NAME = "ragstore-outage-worker"  # libpq's PGAPPNAME: the worker's sessions, found by it


def _sessions(admin: psycopg.Connection[tuple[object, ...]]) -> int:
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (APP_NAME,)
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def _end_sessions(admin: psycopg.Connection[tuple[object, ...]]) -> int:
    rows = admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        (APP_NAME,),
    ).fetchall()
    return len(rows)


def test_a_worker_whose_connections_end_works_on(
    open_url: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **os.environ,
        **cli_env,
        "PGAPPNAME": APP_NAME,
        "RAGSTORE_WORKER_HEARTBEAT_S": "0.5",
        "RAGSTORE_WORKER_STALLED_AFTER_S": "2",
        "RAGSTORE_LOG_LEVEL": "warning",
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-c", "from ragstore.cli import main; main()", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with (
            psycopg.connect(cli_env["RAGSTORE_DATABASE_URL"], autocommit=True) as admin,
            Client(open_url) as api,
        ):
            deadline = time.monotonic() + 120
            while _sessions(admin) < 2:  # its pool and procrastinate's listener
                assert worker.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the worker never connected"
                time.sleep(0.2)
            time.sleep(1.0)  # past its first fetch: the loop is polling
            # the outage: no new session for a while, the worker's sessions ended; its
            # next fetch (every 0.5 s) cannot connect, and before, it exited 1 there
            database = admin.info.dbname
            with psycopg.connect(
                cli_env["RAGSTORE_DATABASE_URL"], dbname="postgres", autocommit=True
            ) as server:
                server.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
                try:
                    assert _end_sessions(admin) >= 2
                    time.sleep(3.0)
                finally:
                    server.execute(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
            assert worker.poll() is None, f"the worker exited:\n{log.read_text()[-3000:]}"
            api.create_collection("after-outage")
            job = api.upload(
                "after-outage",
                [("n.md", b"# Note\n\nWritten after the outage.\n")],
                background=True,
            )
            deadline = time.monotonic() + 120
            while (state := api.get_job(job["id"]))["status"] in ("queued", "running"):
                assert worker.poll() is None, f"the worker exited:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"job not run: {state}"
                time.sleep(0.2)
            assert state["status"] == "succeeded", state
            assert [d["name"] for d in api.list_documents("after-outage")["data"]] == ["n.md"]
        os.killpg(worker.pid, signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)


def test_a_job_whose_connection_is_lost_mid_ingest_is_run_again_not_failed(
    open_url: str, settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backend writing the job's second document ends (a trigger makes it terminate
    itself, twice: a sequence counts, outside the transactions it kills), so both the
    round's write and the document's own write are lost. Run once, the job reported that
    document failed as ``database_unavailable`` for a moment's outage, for the client to
    notice and send again; the job is run again and stores it, the document the lost run
    stored counted as added by the job."""
    monkeypatch.setattr("ragstore.jobs.runner.RETRY_S", 0.1)
    with Client(open_url) as api:
        api.create_collection("lost-mid-ingest")
        job = api.upload(
            "lost-mid-ingest",
            [("a.md", b"# A\n\nfirst text"), ("b.md", b"# B\n\nsecond text")],
            background=True,
        )
        fault = """
            CREATE SEQUENCE ingest_lost_once;
            CREATE FUNCTION ingest_lost_once() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF nextval('ingest_lost_once') <= 2 THEN
                    PERFORM pg_terminate_backend(pg_backend_pid());
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER ingest_lost_once BEFORE INSERT ON documents FOR EACH ROW
                WHEN (NEW.source LIKE '%/b.md') EXECUTE FUNCTION ingest_lost_once();
        """
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(fault)
            try:
                with Runtime(with_(settings, ingest_batch_chunks=1)) as rt:
                    done = run_job(rt, job["id"])
                tries = admin.execute("SELECT last_value FROM ingest_lost_once").fetchone()
            finally:
                admin.execute(
                    "DROP TRIGGER ingest_lost_once ON documents;"
                    " DROP FUNCTION ingest_lost_once(); DROP SEQUENCE ingest_lost_once"
                )
        assert tries == (3,)  # b.md's round and its own write were lost, the third kept
        assert done.status == "succeeded", done
        state = api.get_job(job["id"])
        assert state["status"] == "succeeded" and state["errors"] == [], state
        assert state["summary"]["added"] == 2, state["summary"]
        names = sorted(d["name"] for d in api.list_documents("lost-mid-ingest")["data"])
        assert names == ["a.md", "b.md"]


def test_a_job_whose_documents_stay_unstored_after_every_run_fails(
    open_url: str, settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backend writing the job's second document ends every time. After the job's
    last run that document is still not stored for a reason that is not its own (the
    database away): the job ended ``succeeded`` with the error listed, and a client
    waiting on it never sent the document again. It fails now, the error saying which
    documents to send again; the one that was stored stays."""
    monkeypatch.setattr("ragstore.jobs.runner.RETRY_S", 0.01)
    monkeypatch.setattr("ragstore.jobs.runner.ATTEMPTS", 2)
    with Client(open_url) as api:
        api.create_collection("lost-for-good")
        job = api.upload(
            "lost-for-good",
            [("a.md", b"# A\n\nfirst text"), ("b.md", b"# B\n\nsecond text")],
            background=True,
        )
        fault = """
            CREATE FUNCTION ingest_lost_always() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_terminate_backend(pg_backend_pid());
                RETURN NEW;
            END $$;
            CREATE TRIGGER ingest_lost_always BEFORE INSERT ON documents FOR EACH ROW
                WHEN (NEW.source LIKE '%/b.md') EXECUTE FUNCTION ingest_lost_always();
        """
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(fault)
            try:
                with (
                    Runtime(with_(settings, ingest_batch_chunks=1)) as rt,
                    pytest.raises(DatabaseUnavailableError, match=r"'b\.md'"),
                ):
                    run_job(rt, job["id"])
            finally:
                admin.execute(
                    "DROP TRIGGER ingest_lost_always ON documents;"
                    " DROP FUNCTION ingest_lost_always()"
                )
        state = api.get_job(job["id"])
        assert state["status"] == "failed", state
        codes = [(e["document"], e["code"]) for e in state["errors"]]
        assert codes == [("b.md", "database_unavailable"), (None, "database_unavailable")], codes
        assert "send them again" in state["errors"][-1]["detail"], state["errors"]
        names = [d["name"] for d in api.list_documents("lost-for-good")["data"]]
        assert names == ["a.md"]


def _worker_row(admin: psycopg.Connection[tuple[object, ...]]) -> tuple[int, float]:
    """The one registered worker: its id and its heartbeat's age in seconds."""
    rows = admin.execute(
        "SELECT id, extract(epoch FROM now() - last_heartbeat)::float8 FROM procrastinate_workers"
    ).fetchall()
    assert len(rows) == 1, rows
    return int(str(rows[0][0])), float(str(rows[0][1]))


def test_a_worker_whose_heartbeat_failed_beats_again_and_keeps_its_jobs(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """One heartbeat fails (here a trigger refuses it, once, as an outage would) while
    the session holding the worker's liveness lock ends. procrastinate's beat is a side
    task nothing watches: it ended there for the rest of the loop, the lock was never
    taken again, and the live worker counted as dead: its row pruned (by its own stalled
    check) and the jobs it ran retried beside it. The beat now goes on."""
    env = {
        **os.environ,
        **cli_env,
        "PGAPPNAME": APP_NAME,
        "RAGSTORE_WORKER_HEARTBEAT_S": "0.5",
        "RAGSTORE_WORKER_STALLED_AFTER_S": "2",
        "RAGSTORE_LOG_LEVEL": "warning",
    }
    log = tmp_path / "worker.log"
    fault = """
        CREATE SEQUENCE beat_refused_once;
        CREATE FUNCTION beat_refused_once() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('beat_refused_once') = 1 THEN
                RAISE EXCEPTION 'heartbeat refused by a test trigger';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER beat_refused_once BEFORE UPDATE ON procrastinate_workers
            FOR EACH ROW EXECUTE FUNCTION beat_refused_once();
    """
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-c", "from ragstore.cli import main; main()", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with psycopg.connect(cli_env["RAGSTORE_DATABASE_URL"], autocommit=True) as admin:
            deadline = time.monotonic() + 120
            while admin.execute("SELECT count(*) FROM procrastinate_workers").fetchone() != (1,):
                assert worker.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the worker never registered"
                time.sleep(0.2)
            first, _ = _worker_row(admin)
            # its lock taken (on a connection of its own, after the row: on a loaded CI
            # machine the beat was refused before the lock was held, and none was ended)
            held = (
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND classid = %s AND objid = %s"
            )
            while admin.execute(held, (WORKER_LOCKS, first)).fetchone() != (1,):
                assert worker.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the worker never took its lock"
                time.sleep(0.05)
            admin.execute(fault)
            try:
                while admin.execute("SELECT last_value FROM beat_refused_once").fetchone() != (1,):
                    assert time.monotonic() < deadline, "no heartbeat came"
                    time.sleep(0.05)
                ended = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND classid = %s AND objid = %s",
                    (WORKER_LOCKS, first),
                ).fetchall()
                assert ended == [(True,)], ended
                time.sleep(4.0)  # twice stalled_after_s: a silent worker is judged by now
            finally:
                admin.execute(
                    "DROP TRIGGER beat_refused_once ON procrastinate_workers;"
                    " DROP FUNCTION beat_refused_once(); DROP SEQUENCE beat_refused_once"
                )
            now, age = _worker_row(admin)
            assert worker.poll() is None, log.read_text()[-3000:]
            assert now == first, f"the live worker was pruned:\n{log.read_text()[-3000:]}"
            assert age < 1.5, f"its heartbeat is {age:.1f} s old:\n{log.read_text()[-3000:]}"
        os.killpg(worker.pid, signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)


def test_workers_silent_while_the_database_restarted_are_not_judged_dead(
    tmp_path: Path,
) -> None:
    """The embedded PostgreSQL restarts: every worker's lock session ends and none could
    beat while it was down, so every heartbeat is older than stalled_after_s when it
    answers again. The first worker back (its loop restarted: the stalled check runs
    first) judged the others dead before they could beat again, and ran their jobs a
    second time beside them, an attempt counted. A heartbeat now counts from the
    server's start at the earliest: a worker silent since is dead only once
    stalled_after_s has passed with the server up."""
    data_dir = tmp_path / "data"
    local = Settings(data_dir=data_dir, profile="test", model="no-such-model")

    async def scenario(conninfo: str) -> tuple[int, int]:
        app = build_queue(conninfo)
        silent = LiveJobManager(app.connector, conninfo, stalled_after_s=2.0)
        app.job_manager = silent
        async with app.open_async():
            wid = await silent.register_worker()
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(
                    "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour'"
                    " WHERE id = %s",
                    (wid,),
                )
                seeded = conn.execute(
                    "INSERT INTO procrastinate_jobs (queue_name, task_name, status, args,"
                    " worker_id) VALUES ('ingest', 'ragstore.ingest', 'doing', '{}', %s)"
                    " RETURNING id",
                    (wid,),
                ).fetchone()
            assert seeded is not None
            await silent._held.pop(wid).close()  # its process gone with the restart
        return wid, int(str(seeded[0]))

    async def judged(conninfo: str) -> tuple[list[int], list[int]]:
        app = build_queue(conninfo)
        judge = LiveJobManager(app.connector, conninfo, stalled_after_s=2.0)
        app.job_manager = judge
        async with app.open_async():
            pruned = await judge.prune_stalled_workers(2.0)
            stalled = await judge.get_stalled_jobs(queue="ingest", seconds_since_heartbeat=2.0)
            return pruned, [j.id for j in stalled if j.id is not None]

    with Runtime(local) as rt:
        conninfo = rt.db.conninfo
        wid, job = asyncio.run(scenario(conninfo))
        # the restart: the silent worker's lock session ends with it
        assert embedded.stop(data_dir)
        embedded.start(data_dir)
        right_after = asyncio.run(judged(conninfo))
        time.sleep(2.5)  # stalled_after_s with the server up: silent since, dead now
        later = asyncio.run(judged(conninfo))
    assert right_after == ([], []), "workers silent only while the database was down"
    assert later == ([wid], [job])
