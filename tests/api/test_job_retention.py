"""Finished jobs past ``RAGSTORE_JOB_RETENTION_DAYS`` are deleted by the workers, and the
database sessions holding a job's lock carry TCP settings that end them soon after their
machine goes silent."""

from __future__ import annotations

import asyncio
import socket

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ragstore.config import Settings
from ragstore.db import jobs as store
from ragstore.errors import ConfigError
from ragstore.jobs import runner as runner_module
from ragstore.jobs import worker as worker_module
from ragstore.jobs.liveness import LOCK_TCP, LiveJobManager, with_lock_tcp
from ragstore.jobs.queue import build_queue
from ragstore.jobs.worker import run_worker
from ragstore.profiles import get_settings
from ragstore.runtime import Runtime
from tests.api.conftest import with_

SERVER_TCP = tuple(store.SESSION_TCP)


def _job(
    conn: psycopg.Connection[tuple[object, ...]],
    status: str,
    *,
    days_ago: float,
    entry: str | None = None,
) -> int:
    """A job row of ``status`` made (and, when finished, finished) ``days_ago`` days ago,
    with a queue entry in state ``entry`` where given."""
    finished = status in store.FINISHED
    row = conn.execute(
        "INSERT INTO ingest_jobs (collection, status, created_at, finished_at, updated_at)"
        " VALUES ('kept-or-not', %(status)s, now() - make_interval(days => %(d)s::int),"
        " CASE WHEN %(finished)s THEN now() - make_interval(days => %(d)s::int) END,"
        " now() - make_interval(days => %(d)s::int)) RETURNING id",
        {"status": status, "d": int(days_ago), "finished": finished},
    ).fetchone()
    assert row is not None
    job_id = int(row[0])
    conn.execute(
        "INSERT INTO ingest_job_files (job_id, ordinal, name, metadata, content)"
        " VALUES (%s, 0, 'a.md', '{}', 'x')",
        (job_id,),
    )
    if entry is not None:
        queued = conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status)"
            " VALUES ('ingest', 'ragstore.ingest', %s, %s::procrastinate_job_status)"
            " RETURNING id",
            (psycopg.types.json.Jsonb({"job_id": job_id}), entry),
        ).fetchone()
        assert queued is not None
        store.set_queue_job(conn, job_id, int(queued[0]))
    return job_id


def _clear(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """No job and no queue entry (a waiting entry of another test's job would be run)."""
    conn.execute("DELETE FROM procrastinate_jobs")
    conn.execute("DELETE FROM ingest_jobs")


def _left(url: str, ids: list[int]) -> set[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id FROM ingest_jobs WHERE id = ANY(%s)", (ids,)).fetchall()
    return {int(r[0]) for r in rows}


def test_finished_jobs_past_the_retention_are_deleted_the_rest_kept(database_url: str) -> None:
    """Only finished jobs older than the age go, with their finished queue entries; a
    queued or running job stays however old, and so does a finished one whose queue
    entry still waits (the queue hands it out again and its run reads the row)."""
    with psycopg.connect(database_url) as conn:
        _clear(conn)
        old_ok = _job(conn, "succeeded", days_ago=40)
        old_failed = _job(conn, "failed", days_ago=40, entry="failed")
        young = _job(conn, "succeeded", days_ago=10)
        old_queued = _job(conn, "queued", days_ago=40, entry="todo")
        old_running = _job(conn, "running", days_ago=40, entry="doing")
        still_handed_out = _job(conn, "succeeded", days_ago=40, entry="todo")
        entry = conn.execute(
            "SELECT queue_job_id FROM ingest_jobs WHERE id = %s", (old_failed,)
        ).fetchone()
        assert entry is not None
    everyone = [old_ok, old_failed, young, old_queued, old_running, still_handed_out]
    with psycopg.connect(database_url) as conn:
        assert store.prune_finished(conn, 30) == 2
    assert _left(database_url, everyone) == {young, old_queued, old_running, still_handed_out}
    with psycopg.connect(database_url) as conn:
        gone = conn.execute(
            "SELECT (SELECT count(*) FROM procrastinate_jobs WHERE id = %s),"
            " (SELECT count(*) FROM ingest_job_files WHERE job_id = ANY(%s))",
            (entry[0], [old_ok, old_failed]),
        ).fetchone()
        assert gone == (0, 0)
        # a shorter age takes the younger one too; nothing unfinished ever
        assert store.prune_finished(conn, 5) == 1
        assert store.prune_finished(conn, 0.0001) == 0
    assert _left(database_url, everyone) == {old_queued, old_running, still_handed_out}
    with psycopg.connect(database_url) as conn:
        _clear(conn)


def test_a_worker_sweeps_the_finished_jobs_in_batches_at_its_start(
    database_url: str, settings: Settings
) -> None:
    """``ragstore worker`` deletes them at its start (then at most hourly), a small batch
    a statement; with the retention 0 it keeps them for ever."""
    with psycopg.connect(database_url) as conn:
        _clear(conn)
        old = [_job(conn, "succeeded", days_ago=400) for _ in range(5)]
        young = _job(conn, "failed", days_ago=3)

    run_worker(with_(settings, job_retention_days=0), burst=True, signals=False)
    assert _left(database_url, [*old, young]) == {*old, young}

    async def batches() -> tuple[int, int]:
        with Runtime(settings) as rt:
            app = build_queue(rt.db.conninfo)
            async with app.open_async():
                capped = await worker_module.prune_finished(app, 365, batch=2, max_batches=2)
                return capped, await worker_module.prune_finished(app, 365, batch=2)

    # a sweep goes on batch after batch (2 + 2), up to its cap; the next takes the rest
    assert asyncio.run(batches()) == (4, 1)
    assert _left(database_url, [*old, young]) == {young}

    run_worker(with_(settings, job_retention_days=2), burst=True, signals=False)
    assert _left(database_url, [*old, young]) == set()


@pytest.mark.parametrize("value", ["-1", "forever", "nan"])
def test_a_bad_retention_is_one_config_error_naming_it(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAGSTORE_JOB_RETENTION_DAYS", value)
    with pytest.raises(ConfigError) as bad:
        get_settings()
    assert str(bad.value).startswith(f"RAGSTORE_JOB_RETENTION_DAYS={value!r} is invalid: ")


def test_the_retention_defaults_to_30_days_and_0_keeps_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RAGSTORE_JOB_RETENTION_DAYS", raising=False)
    assert get_settings().job_retention_days == 30
    monkeypatch.setenv("RAGSTORE_JOB_RETENTION_DAYS", "0")
    assert get_settings().job_retention_days == 0


def _server_tcp_sources(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, str]:
    """Where the session's server-side TCP settings come from (over a Unix socket, as
    the embedded server listens, PostgreSQL shows their values as 0, but not whence)."""
    rows = conn.execute(
        "SELECT name, source FROM pg_settings WHERE name = ANY(%s)", (list(SERVER_TCP),)
    ).fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


def test_a_job_run_holds_its_row_on_a_session_with_keepalives(settings: Settings) -> None:
    """The transaction writing a round of a job's documents holds the job's row until its
    commit: its session is given the server's TCP keepalives and user timeout first, so
    one of a machine gone silent is ended in about a minute, not hours."""
    one = with_(settings, pool_min_size=1, pool_max_size=1)
    with Runtime(one) as rt:
        with rt.db.connection() as conn:
            assert set(_server_tcp_sources(conn).values()) == {"default"}
            job_id = store.create(conn, "held", [store.JobFile("a.md", b"# A\n\nheld text")])
            attempt = store.start(conn, job_id)
            assert attempt is not None
        with rt.db.connection() as conn:
            runner_module._fence(job_id, attempt)(conn)
        with rt.db.connection() as conn:  # the pool's one connection, after its commit
            assert _server_tcp_sources(conn) == dict.fromkeys(SERVER_TCP, "session")


def test_a_workers_liveness_lock_session_carries_keepalives_at_both_ends(
    tcp_to_socket: str,
) -> None:
    """The session holding a worker's liveness lock has the server's TCP keepalives and
    user timeout, and its own socket libpq's (over TCP), unless the URL sets its own."""

    async def scenario() -> tuple[dict[str, str], dict[str, str], dict[str, int]]:
        app = build_queue(tcp_to_socket)
        manager = LiveJobManager(app.connector, tcp_to_socket, stalled_after_s=30.0)
        async with app.open_async():
            worker = await manager.register_worker()
            try:
                conn = manager._held[worker]
                cur = await conn.execute(
                    "SELECT name, source FROM pg_settings WHERE name = ANY(%s)",
                    (list(SERVER_TCP),),
                )
                sources = {str(r[0]): str(r[1]) for r in await cur.fetchall()}
                sock = socket.socket(fileno=conn.fileno())
                try:
                    tcp = {
                        "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                        "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                        "user_timeout": sock.getsockopt(socket.IPPROTO_TCP, 18),
                    }
                finally:
                    sock.detach()  # the connection's descriptor, not ours to close
                return sources, conn.info.get_parameters(), tcp
            finally:
                await manager.unregister_worker(worker)

    sources, params, tcp = asyncio.run(scenario())
    assert sources == dict.fromkeys(SERVER_TCP, "session")
    assert {k: params.get(k) for k in LOCK_TCP} == {k: str(v) for k, v in LOCK_TCP.items()}
    assert tcp == {"keepalive": 1, "idle": 15, "user_timeout": 60_000}
    # an operator's own values in the URL stand
    mine = conninfo_to_dict(
        with_lock_tcp(make_conninfo(tcp_to_socket, keepalives_idle=120, tcp_user_timeout=0))
    )
    assert mine["keepalives_idle"] == "120" and mine["tcp_user_timeout"] == "0"
    assert mine["keepalives_count"] == str(LOCK_TCP["keepalives_count"])
