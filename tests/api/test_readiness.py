"""/readyz and the errors of a server whose database is missing its schema or unreachable,
and `ragstore serve` itself saying at start that auth is off."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr

from ragstore import Client
from ragstore.config import Settings
from ragstore.db.database import describe, refused_for_limit
from ragstore.errors import (
    ConflictError,
    DatabaseUnavailableError,
    NotReadyError,
    SchemaMismatchError,
    public_detail,
)
from tests.api.conftest import running_server, with_


def test_database_without_schema_is_not_ready(settings: Settings, empty_database_url: str) -> None:
    bare = with_(settings, database_url=SecretStr(empty_database_url), auth="off")
    # retries=0: the not_ready answer is what is asserted, not the client's retries of it
    # (tests/api/test_client_retries.py); three retries waited out ~15 s of Retry-After
    with running_server(bare) as url, Client(url, retries=0) as c:
        assert c.health()["status"] == "ok"
        with pytest.raises(NotReadyError, match="schema is at none"):
            c.ready()
        with pytest.raises(SchemaMismatchError, match="ragstore db upgrade"):
            c.list_collections()


def test_unreachable_database_is_not_ready(settings: Settings) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = with_(
        settings,
        database_url=SecretStr(f"postgresql://nobody@127.0.0.1:{port}/none"),
        auth="off",
        connect_timeout_s=1.0,
    )
    with running_server(down) as url, Client(url, retries=0) as c:
        r = httpx.get(f"{url}/readyz")
        assert r.status_code == 503 and r.json()["code"] == "not_ready"
        assert "database unreachable" in r.json()["detail"]
        with pytest.raises(DatabaseUnavailableError):
            c.list_collections()


def test_serve_command_says_auth_is_off_and_serves(cli_env: dict[str, str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, **cli_env, "RAGSTORE_AUTH": "off"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from ragstore.cli import main; main()",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Uvicorn running" in line or "Application startup complete" in line:
                break
        text = "".join(lines)
        assert "authentication is OFF" in text, text
        with Client(f"http://127.0.0.1:{port}") as c:
            assert c.health()["status"] == "ok"
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_schema_mismatchs_answer_names_no_database_address(
    settings: Settings, empty_database_url: str
) -> None:
    """A server whose database lacks its schema answered every request with "the database
    schema on postgresql://user@host:port/db is at revision none ...": the database's
    address, user and name told to any API caller. The CLI's message keeps it (an
    operator's); the API's problem detail names no address now."""
    parts = conninfo_to_dict(empty_database_url)
    bare = with_(settings, database_url=SecretStr(empty_database_url), auth="off")
    with running_server(bare) as url:
        r = httpx.get(f"{url}/v1/collections")
    assert r.status_code >= 500 and r.json()["code"] == "schema_mismatch", r.text
    detail = r.json()["detail"]
    assert "ragstore db upgrade" in detail, detail
    assert "postgresql://" not in detail, detail
    for part in ("dbname", "host"):
        assert str(parts.get(part)) not in detail, (part, detail)


def test_public_detail_hides_every_described_address() -> None:
    """Any error's public text hides a database address ``describe`` wrote into it, even
    one with a space in its socket directory (a regular expression alone would keep the
    rest of it); the message itself (the CLI's, the log's) keeps it."""
    where = describe("host='/srv/my data/pg' port=5433 user=alice dbname=kb")
    err = SchemaMismatchError(f"the database schema on {where} is at revision none")
    assert where in err.message
    detail = public_detail(err)
    assert "alice" not in detail and "my data" not in detail and "5433" not in detail, detail
    assert detail == "the database schema on the database is at revision none", detail
    other = ConflictError("using postgresql://bob@db.example:5432/x: it already exists")
    assert "bob" not in public_detail(other) and "example" not in public_detail(other)
    hint = ConflictError("give a .jsonl file or a postgresql:// URL")  # no address in it
    assert public_detail(hint) == hint.message


def test_a_busy_pool_leaves_the_server_ready_and_its_database_up(settings: Settings) -> None:
    """A pool whose every connection is held, a request queued for one: load, not a fault.
    /readyz listed the collections on a pooled connection, so it waited out the pool
    timeout (past any balancer's probe timeout) and answered 503, taking a busy server out
    of rotation and its load onto the others; the scrape did too and reported
    ``ragstore_db_up 0``, paging RagstoreDatabaseDown for a database that answered. Both
    now answer at once: ready, ``checks.pool`` saying busy, the database up."""
    from ragstore.api import create_app

    busy = with_(settings, auth="off", pool_min_size=1, pool_max_size=1, connect_timeout_s=15.0)
    app = create_app(busy)
    holding, release = threading.Event(), threading.Event()
    with running_server(busy, app) as url:
        db = app.state.ragstore.runtime.db

        def hold() -> None:
            with db.connection() as conn:
                conn.execute("SELECT 1")
                holding.set()
                release.wait(60)

        def queue() -> None:
            with db.connection():
                pass

        threads = [threading.Thread(target=hold), threading.Thread(target=queue)]
        threads[0].start()
        try:
            assert holding.wait(30)
            threads[1].start()
            deadline = time.monotonic() + 10
            while db._pool is not None and not db._pool.get_stats().get("requests_waiting"):
                assert time.monotonic() < deadline, "the second request never queued"
                time.sleep(0.02)
            ready = httpx.get(f"{url}/readyz", timeout=5)
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["pool"].startswith("busy: 1 of 1 connections in use")
            scraped = httpx.get(f"{url}/metrics", timeout=5).text
            assert "\nragstore_db_up 1.0\n" in scraped, scraped[:2000]
        finally:
            release.set()
            for t in threads:
                t.join(30)


@pytest.mark.parametrize("limit", ["role", "database"])
def test_a_database_at_its_connection_limit_is_full_not_down(
    settings: Settings, pg_admin_uri: str, limit: str
) -> None:
    """A server at its connection limit refuses a fresh connection (SQLSTATE 53300: "too
    many connections for role", or for the database) yet answers every pooled one. /readyz
    and the scrape each opened a fresh one and read that refusal as a database down: 503
    (every API server on it drained by its balancer) and ``ragstore_db_up 0`` (paging
    RagstoreDatabaseDown). They now read on a pooled connection: ready, ``checks.database``
    saying full, the database up and ``ragstore_db_full 1``; with every pooled connection
    held too, still ready (load, as a busy pool is) and up."""
    from psycopg import sql

    from ragstore.api import create_app
    from tests.conftest import TEMPLATE, create_database, drop_database

    role = f"full_{limit}"
    url = create_database(pg_admin_uri, TEMPLATE)
    dbname = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(pg_admin_uri, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        role_limit = sql.SQL(" CONNECTION LIMIT 4" if limit == "role" else "")
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)) + role_limit)
        # the tables are the admin's: the role reads them as a member (no superuser, which
        # no connection limit binds)
        owner = admin.execute("SELECT current_user").fetchone()
        assert owner is not None
        admin.execute(
            sql.SQL("GRANT {} TO {}").format(sql.Identifier(owner[0]), sql.Identifier(role))
        )
        if limit == "database":
            admin.execute(
                sql.SQL("ALTER DATABASE {} CONNECTION LIMIT 4").format(sql.Identifier(dbname))
            )
    as_role = psycopg.conninfo.make_conninfo(url, user=role)
    held: list[psycopg.Connection[tuple[object, ...]]] = []
    full = with_(
        settings,
        database_url=SecretStr(as_role),
        auth="off",
        pool_min_size=1,
        pool_max_size=1,
        connect_timeout_s=15.0,
    )
    app = create_app(full)
    release = threading.Event()
    try:
        with running_server(full, app) as base:
            assert httpx.get(f"{base}/v1/collections", timeout=30).status_code == 200
            # take every slot left (the server holds its pooled one); refused twice, half a
            # second apart: a backend of a connection closed at start may still be exiting
            refusals = 0
            while refusals < 2:
                try:
                    held.append(psycopg.connect(as_role, connect_timeout=5))
                    refusals = 0
                except psycopg.OperationalError as exc:
                    assert refused_for_limit(exc), exc
                    refusals += 1
                    time.sleep(0.5)
                assert len(held) < 10, "the connection limit never refused"
            app.state.ragstore_readiness = None  # no answer from before the limit was hit

            ready = httpx.get(f"{base}/readyz", timeout=10)
            assert ready.status_code == 200, ready.text
            checks = ready.json()["checks"]
            assert checks["database"].startswith("full: it refuses new connections"), checks
            assert checks["models"].endswith("collection(s) validated"), checks
            scraped = httpx.get(f"{base}/metrics", timeout=10).text
            assert "\nragstore_db_up 1.0\n" in scraped, scraped[:3000]
            assert "\nragstore_db_full 1.0\n" in scraped, scraped[:3000]
            assert "ragstore_collections " in scraped  # read on the pooled connection

            db = app.state.ragstore.runtime.db
            holding = threading.Event()

            def hold() -> None:
                with db.connection() as conn:
                    conn.execute("SELECT 1")
                    holding.set()
                    release.wait(60)

            holder = threading.Thread(target=hold)
            holder.start()
            try:
                assert holding.wait(30)
                app.state.ragstore_readiness = None
                busy = httpx.get(f"{base}/readyz", timeout=10)
                assert busy.status_code == 200, busy.text
                assert "every pooled connection is in use" in busy.json()["checks"]["database"]
                scraped = httpx.get(f"{base}/metrics", timeout=10).text
                assert "\nragstore_db_up 1.0\n" in scraped, scraped[:3000]
                assert "\nragstore_db_full 1.0\n" in scraped, scraped[:3000]
            finally:
                release.set()
                holder.join(30)
    finally:
        release.set()
        for conn in held:
            conn.close()
        drop_database(pg_admin_uri, url)
        with psycopg.connect(pg_admin_uri, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
