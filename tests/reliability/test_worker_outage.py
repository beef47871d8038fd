"""A worker outlives an outage of its database (a restart, a failover): it works again
once the database answers, and a job accepted after the outage is run, not left queued
for an operator to notice. The outage is the module database's own: its sessions ended
and new ones refused (``ALLOW_CONNECTIONS false``) for a few seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from ragstore import Client

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
