"""Every connection ragstore opens to a server over TCP carries libpq's keepalives and TCP
user timeout (a path gone silent ends it in about a minute, not in hours), unless the
URL sets its own; Unix-socket connections (the embedded server's) are unaffected.

The embedded server listens on a Unix socket only: ``tcp_to_socket`` (tests/conftest.py)
relays a loopback TCP port to it, and the settings are read off the real socket."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import psycopg
from fastapi.testclient import TestClient
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ragstore import backup
from ragstore.api.app import create_app
from ragstore.config import Settings
from ragstore.db import migrations
from ragstore.db.database import CLIENT_TCP, Database, missing_tcp
from ragstore.db.routing import REPLICA_TCP, ReadRouter, ReplicaDatabase
from tests.conftest import tcp_options


def _expected(tcp: dict[str, int]) -> dict[str, int]:
    return {
        "keepalive": tcp["keepalives"],
        "idle": tcp["keepalives_idle"],
        "interval": tcp["keepalives_interval"],
        "count": tcp["keepalives_count"],
        "user_timeout": tcp["tcp_user_timeout"],
    }


def _options(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, int]:
    return tcp_options(conn.pgconn.socket)


def test_pooled_and_fresh_connections_carry_keepalives_over_tcp(tcp_to_socket: str) -> None:
    """A pooled connection (a request's) and a fresh one (``connect``: migrations, admin
    work, readiness) have ragstore's keepalives and user timeout: without them a query
    whose network went silent waited hours (idle) or about 15 minutes (unacknowledged)."""
    db = Database(tcp_to_socket, min_size=1, max_size=2)
    try:
        with db.connection() as conn:
            pooled = _options(conn)
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with db.connect(autocommit=True) as conn:
            fresh = _options(conn)
        assert db.answers()
    finally:
        db.close()
    assert pooled == _expected(CLIENT_TCP)
    assert fresh == _expected(CLIENT_TCP)
    # the operator's URL is left as given (a job's lock session adds its own on it)
    assert "keepalives" not in db.conninfo


def test_keepalive_settings_in_the_url_are_kept(tcp_to_socket: str) -> None:
    """A ``keepalives*`` or ``tcp_user_timeout`` parameter of the URL stands (even 0); the
    ones it leaves out get ragstore's."""
    url = make_conninfo(tcp_to_socket, keepalives_idle=120, tcp_user_timeout=0)
    db = Database(url)
    try:
        with db.connection() as conn:
            mine = _options(conn)
    finally:
        db.close()
    assert mine == {**_expected(CLIENT_TCP), "idle": 120, "user_timeout": 0}

    off = Database(make_conninfo(tcp_to_socket, keepalives=0))
    try:
        with off.connect() as conn:
            assert _options(conn)["keepalive"] == 0
    finally:
        off.close()


def test_replica_connections_and_probes_carry_the_replicas_settings(tcp_to_socket: str) -> None:
    """A replica's pool and the router's probes (of the replica and of the primary) carry
    TCP settings too: the replicas' tighter ones, the primary's probe ragstore's."""
    primary = Database(tcp_to_socket)
    router = ReadRouter(primary, [tcp_to_socket], max_lag_s=5, wait_s=0, pool_min_size=1)
    replica = router._replicas[0]
    try:
        assert isinstance(replica.db, ReplicaDatabase)
        with replica.db.pool.connection() as conn:
            pooled = _options(conn)
        router._probe(replica, router._primary_lsn())
        assert router._primary_conn is not None and replica.probe_conn is not None
        primary_probe = _options(router._primary_conn)
        replica_probe = _options(replica.probe_conn)
    finally:
        router.close()
        primary.close()
    assert pooled == replica_probe == _expected(REPLICA_TCP)
    assert primary_probe == _expected(CLIENT_TCP)


def test_the_embedded_servers_unix_socket_connections_still_work(database_url: str) -> None:
    """libpq ignores the TCP settings on a Unix socket: the embedded server's connections
    open and answer as before."""
    db = Database(database_url)
    try:
        with db.connection() as conn:
            with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
                family = sock.family
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with db.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert db.answers()
    finally:
        db.close()
    assert family == socket.AF_UNIX


def test_the_api_job_queues_connections_carry_keepalives(
    tcp_to_socket: str, tmp_path: Path
) -> None:
    """The API server's job queue (deferring an ingest from a request's thread) connects
    with ragstore's TCP settings too."""
    settings = Settings(database_url=tcp_to_socket, data_dir=tmp_path, profile="test")
    app = create_app(settings)
    with TestClient(app):
        connector = app.state.ragstore.queue.connector
        with connector.pool.connection() as conn:
            queued = _options(conn)
    assert queued == _expected(CLIENT_TCP)


def test_a_migrations_connection_carries_keepalives(tcp_to_socket: str) -> None:
    """``ragstore db upgrade`` (Alembic's SQLAlchemy engine) connected with the plain URL:
    a migration whose server went silent waited hours on the system's defaults, its
    locks held all along. Read off the real socket of the migration's connection."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    seen: list[dict[str, int]] = []

    def connected(dbapi_connection: psycopg.Connection[tuple[object, ...]], _: object) -> None:
        seen.append(_options(dbapi_connection))

    # as a URL, and as the relay's keyword conninfo (which the engine once could not take)
    params = conninfo_to_dict(tcp_to_socket)
    url = f"postgresql://{params['user']}@{params['host']}:{params['port']}/{params['dbname']}"
    event.listen(Engine, "connect", connected)
    try:
        for conninfo, action, to in ((url, "downgrade", "0030"), (tcp_to_socket, "upgrade", "")):
            db = Database(conninfo)
            try:
                done = migrations.migrate(db, action, to or migrations.head_revision())
                assert done.status.current == (to or migrations.head_revision())
            finally:
                db.close()
    finally:
        event.remove(Engine, "connect", connected)
    assert len(seen) >= 2 and all(options == _expected(CLIENT_TCP) for options in seen), seen
    # an operator's setting in the URL stands there too
    mine = make_conninfo(tcp_to_socket, keepalives_idle=120)
    assert missing_tcp(mine) == {k: v for k, v in CLIENT_TCP.items() if k != "keepalives_idle"}


def test_backup_and_restore_tools_get_the_keepalives(tcp_to_socket: str) -> None:
    """pg_dump and psql (``ragstore backup`` / ``restore``) were given the plain URL. Their
    sockets are another process's, so this reads the conninfo they are given, then has
    the bundled psql connect with it over TCP (its libpq takes every setting)."""
    db = Database(make_conninfo(tcp_to_socket, password="not-in-argv"))
    try:
        conninfo, env = backup._client_args(db)
    finally:
        db.close()
    given = conninfo_to_dict(conninfo)
    assert {k: int(str(given[k])) for k in CLIENT_TCP} == CLIENT_TCP
    assert "password" not in given and env["PGPASSWORD"] == "not-in-argv"
    env.pop("PGPASSWORD")  # the embedded server trusts local connections
    out = subprocess.run(
        [backup._tool("psql"), "--no-psqlrc", "-Atc", "SELECT 1", "--dbname", conninfo],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (out.returncode, out.stdout.strip()) == (0, "1"), out.stderr
