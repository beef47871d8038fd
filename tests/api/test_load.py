"""A real server under more load than its database pool serves: every write is answered
as it ended (stored and 201, or not stored and an error), never the other way round."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI

from ragstore.api import create_app
from ragstore.api.server import server_config
from ragstore.config import Settings
from ragstore.db import documents, lsn
from ragstore.db.database import Database
from ragstore.uploads import names
from tests.api.conftest import running_server, with_

POOL = 2
WAIT_S = 2.0  # the server's wait for a pooled connection


@contextmanager
def serving(app: FastAPI, settings: Settings) -> Iterator[str]:
    """``app`` on 127.0.0.1 at a free port (as conftest.running_server), its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = server_config(app, settings, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    try:
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="module")
def small(settings: Settings) -> Iterator[tuple[str, FastAPI, Settings]]:
    """A server whose pool lends two connections and waits a second for one."""
    tight = with_(
        settings, auth="off", pool_max_size=POOL, pool_min_size=1, connect_timeout_s=WAIT_S
    )
    app = create_app(tight)
    with serving(app, tight) as url:
        yield url, app, tight


def _names(h: httpx.Client, collection: str) -> set[str]:
    r = h.get(f"/v1/collections/{collection}/documents", params={"limit": 500})
    assert r.status_code == 200, r.text
    return {d["name"] for d in r.json()["data"]}


def _waiting_on_advisory(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'"
        ).fetchone()
    return int(row[0]) if row else 0


def _write_as_the_pool_runs_dry(small: tuple[str, FastAPI, Settings], name: str) -> dict[str, Any]:
    """POST ``name`` while its source lock is held, fill the pool, let the write commit:
    the answer (status, body, headers, seconds from the commit's release to the answer),
    and whether the document is stored."""
    url, app, settings = small
    assert settings.database_url is not None
    dsn = settings.database_url.get_secret_value()
    with httpx.Client(base_url=url, timeout=30) as h:
        assert h.post("/v1/collections/c/documents", json={"name": "seed.md", "text": "seed"})
    db: Database = app.state.ragstore.runtime.db
    coll = app.state.ragstore.runtime.collection("c")
    # another writer of y.md holds its source lock: the request's write waits, holding
    # one pooled connection
    holder = psycopg.connect(dsn)
    documents.lock_sources(holder, coll.id, [names.source_of(settings, "c", name)])
    answer: dict[str, Any] = {}
    released = float("inf")

    def write() -> None:
        with httpx.Client(base_url=url, timeout=30) as h:
            r = h.post("/v1/collections/c/documents", json={"name": name, "text": "why"})
            answer.update(status=r.status_code, body=r.text, headers=r.headers)
            answer["took_s"] = time.monotonic() - released

    writer = threading.Thread(target=write)
    writer.start()
    taken: list[Any] = []
    queued = threading.Thread(target=lambda: taken.append(db.pool.getconn(timeout=20)))
    try:
        deadline = time.monotonic() + 10
        while _waiting_on_advisory(dsn) < 1:
            assert time.monotonic() < deadline, "the write never reached its source lock"
            time.sleep(0.02)
        taken.append(db.pool.getconn(timeout=5))  # the other connection: in use elsewhere
        queued.start()  # and a request waiting for the next one that frees
        while db.pool.get_stats().get("requests_waiting", 0) < 1:
            assert time.monotonic() < deadline, "the pool request never queued"
            time.sleep(0.02)
        released = time.monotonic()
        holder.rollback()  # the write goes on, commits, and its connection goes to the queue
        writer.join(timeout=20)
    finally:
        holder.close()
        queued.join(timeout=20)
        for conn in taken:
            db.pool.putconn(conn)
    with httpx.Client(base_url=url, timeout=30) as h:
        answer["stored"] = name in _names(h, "c")
    return answer


def test_a_write_stored_when_the_pool_then_runs_dry_is_answered_201(
    small: tuple[str, FastAPI, Settings],
) -> None:
    """The write commits, then the ingest's index check finds every pooled connection
    busy: that wait's 503 told the client its stored document was not stored."""
    answer = _write_as_the_pool_runs_dry(small, "y.md")
    assert answer["stored"], answer
    assert answer["status"] == 201, answer


def test_a_write_stored_as_the_pool_runs_dry_is_answered_without_waiting_for_its_position(
    small: tuple[str, FastAPI, Settings],
) -> None:
    """A committed write's ``RAGStore-LSN`` was read on a pooled connection waited for up
    to the pool timeout, three times: with the pool full its 201 came about three pool
    timeouts late. Its position is now read with a short wait, else ``primary``; and the
    index check before it waited one pool timeout, now a short wait too."""
    answer = _write_as_the_pool_runs_dry(small, "z.md")
    assert answer["stored"] and answer["status"] == 201, answer
    position = answer["headers"]["RAGStore-LSN"]
    assert lsn.on_primary(position) or lsn.parse(position) > 0
    # the commit, then the index check's and the position's short waits: no pool timeout
    assert answer["took_s"] < WAIT_S, answer


def test_an_error_under_a_full_pool_is_not_delayed_by_its_position(
    small: tuple[str, FastAPI, Settings],
) -> None:
    """A write's error answer looked for its WAL position on a pooled connection, waited
    for up to the pool timeout: a 503 for a full pool came after two pool timeouts."""
    url, app, _ = small
    db: Database = app.state.ragstore.runtime.db
    with httpx.Client(base_url=url, timeout=30) as h:
        assert h.post("/v1/collections/c/documents", json={"name": "s.md", "text": "seed"})
        taken = [db.pool.getconn(timeout=5) for _ in range(POOL)]
        try:
            started = time.monotonic()
            r = h.post("/v1/collections/c/documents", json={"name": "e.md", "text": "err"})
            took = time.monotonic() - started
        finally:
            for conn in taken:
                db.pool.putconn(conn)
        assert r.status_code == 503, r.text
        assert "RAGStore-LSN" not in r.headers  # not readable at once: none
        assert took < WAIT_S + 0.6, took
        assert "e.md" not in _names(h, "c")


# a client that opens connections and leaves them idle (they stay open for the server's
# header timeout, 10 s by default)
_IDLE = """
import socket, sys, time
socks = []
for _ in range(int(sys.argv[2])):
    try:
        socks.append(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2))
    except OSError:
        break
print(len(socks), flush=True)
sys.stdin.read()
"""


def test_a_write_when_idle_connections_use_up_the_open_files_is_503(settings: Settings) -> None:
    """Idle connections took every file descriptor the server may open: a write could not
    open its staging file and was answered 500 internal_error, "check the disk"."""
    with (
        running_server(with_(settings, auth="off")) as url,
        httpx.Client(base_url=url, timeout=30) as h,
    ):
        r = h.post("/v1/collections/f/documents", json={"name": "a.md", "text": "alpha"})
        assert r.status_code == 201, r.text  # the client's connection is open from here
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 40, hard))
        idle = subprocess.Popen(
            [sys.executable, "-c", _IDLE, url.rsplit(":", 1)[1], "200"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert idle.stdout is not None and int(idle.stdout.readline()) > 40
            time.sleep(0.5)  # the server accepts them until it has no descriptor left
            r = h.post("/v1/collections/f/documents", json={"name": "b.md", "text": "bravo"})
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            idle.communicate("")
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert int(r.headers["Retry-After"]) >= 1
        assert "open files" in r.json()["detail"] and "nothing" in r.json()["detail"]
        assert "b.md" not in _names(h, "f")
