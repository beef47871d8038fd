"""Fixtures: one embedded PostgreSQL per test session, a migrated template database, and a
fresh database cloned from it for each test module. The real model is loaded once per
session (the embedder cache is process-wide)."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ragstore.config import Settings
from ragstore.db import embedded, migrations
from ragstore.db.database import Database
from ragstore.runtime import Runtime

TEMPLATE = "ragstore_template"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

_DEFAULT_HOME: Path | None = None  # the session's XDG_DATA_HOME (pytest_configure)


def pytest_configure(config: pytest.Config) -> None:
    """Every process of the session gets a default data dir of its own (XDG_DATA_HOME,
    where ``Settings.data_dir`` defaults): a test that forgot to name its database or data
    dir (a CLI call without ``cli_env``) used the developer's own
    ``~/.local/share/ragstore``, writing into a real store and leaving its embedded
    server running after the session."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    global _DEFAULT_HOME
    _DEFAULT_HOME = Path(tempfile.mkdtemp(prefix="ragstore-tests-home-"))
    os.environ["XDG_DATA_HOME"] = str(_DEFAULT_HOME)
    # at exit, not at pytest_unconfigure: an embedded server started in this process
    # releases its data dir from an atexit handler, which (registered later) runs first;
    # removing the folder before it made that release log "could not open the lock"
    atexit.register(_remove_default_home)


def _remove_default_home() -> None:
    """Stop an embedded server some test started under the session's default data dir,
    then remove the folder."""
    if _DEFAULT_HOME is None:
        return
    for pid_file in _DEFAULT_HOME.glob("**/postmaster.pid"):
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGINT)  # a fast shutdown
        except (OSError, ValueError, IndexError):
            continue
        deadline = time.monotonic() + 15
        while pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    shutil.rmtree(_DEFAULT_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data dir of the session-wide embedded server."""
    return tmp_path_factory.mktemp("pg")


@pytest.fixture(scope="session")
def pg_admin_uri(pg_data_dir: Path) -> str:
    """Admin URI of a session-wide embedded server (its own data dir, Unix socket)."""
    return embedded.start(pg_data_dir)


def _with_db(uri: str, dbname: str) -> str:
    base, _, query = uri.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{dbname}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def template_url(pg_admin_uri: str) -> str:
    url = _with_db(pg_admin_uri, TEMPLATE)
    with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(TEMPLATE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    migrations.upgrade(Database(url))
    return url


def create_database(pg_admin_uri: str, template: str | None) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
        if template:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        else:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _with_db(pg_admin_uri, name)


def drop_database(pg_admin_uri: str, url: str) -> None:
    """Drop the database ``url`` names, ending the sessions still connected to it."""
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="module")
def database_url(pg_admin_uri: str, template_url: str) -> Iterator[str]:
    """A fresh, migrated database for one test module, dropped when the module ends: kept,
    the session's server held a database per module run so far (a GB and more by the
    replica tests), which every ``pg_basebackup`` of it (each standby they make) copied
    whole, tens of seconds a standby on a loaded machine."""
    url = create_database(pg_admin_uri, TEMPLATE)
    yield url
    drop_database(pg_admin_uri, url)


def tcp_options(fd: int) -> dict[str, int]:
    """The TCP settings of a connection's socket (``conn.fileno()``): SO_KEEPALIVE,
    TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT and TCP_USER_TIMEOUT (ms; Linux)."""
    sock = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)  # a duplicate: ours
    try:
        return {
            "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            "interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            "user_timeout": sock.getsockopt(
                socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", 18)
            ),
        }
    finally:
        sock.close()


@pytest.fixture()
def tcp_to_socket(database_url: str) -> Iterator[str]:
    """``database_url`` reached over TCP on loopback: a relay to the embedded server's
    Unix socket (which listens on no port), so that libpq's TCP settings apply (read
    them off a connection's socket with :func:`tcp_options`)."""
    params = conninfo_to_dict(database_url)
    path = f"{params['host']}/.s.PGSQL.{params.get('port', 5432)}"
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    opened: list[socket.socket] = []

    def pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            opened.extend((client, upstream))
            upstream.connect(path)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    params.update(host="127.0.0.1", port=str(listener.getsockname()[1]))
    try:
        yield make_conninfo("", **params)
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
        for s in opened:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@pytest.fixture()
def empty_database_url(pg_admin_uri: str) -> Iterator[str]:
    """A brand-new database with no schema at all, dropped after the test (see
    ``database_url``)."""
    url = create_database(pg_admin_uri, None)
    yield url
    drop_database(pg_admin_uri, url)


@pytest.fixture(scope="module")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url, data_dir=tmp_path_factory.mktemp("data"), profile="test"
    )


@pytest.fixture(scope="module")
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(settings)
    yield runtime
    runtime.close()


@pytest.fixture()
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for running the CLI in-process against this module's database."""
    assert settings.database_url is not None
    env = {
        "RAGSTORE_DATABASE_URL": settings.database_url.get_secret_value(),
        "RAGSTORE_DATA_DIR": str(settings.data_dir),
        "RAGSTORE_PROFILE": "test",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def run_cli(*args: str) -> int:
    """Run ``ragstore ARGS`` in this process; return its exit status."""
    from ragstore.cli import main

    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _drop_handlers_on_closed_streams() -> None:
    """Remove every log handler whose stream is closed, from the root logger and each named
    one."""
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for logger in loggers:
        for handler in list(logger.handlers):
            stream = getattr(handler, "stream", None)
            if stream is not None and getattr(stream, "closed", False):
                logger.removeHandler(handler)


@pytest.fixture(autouse=True)
def _no_log_handler_on_a_closed_stream() -> Iterator[None]:
    """A handler left writing to an earlier test's closed capture is dropped.

    ``configure_logging`` (each ``create_app``, ``ragstore worker`` and ``serve`` in
    process) puts the root handler on the ``sys.stderr`` of the moment: in a test with
    ``capsys`` or ``capfd``, a stream pytest closes after that test. Every line logged
    later, in whatever test file ran next in the process, printed "--- Logging error ---
    ValueError: I/O operation on closed file" until another call replaced the handler,
    so a test's output depended on the files run before it (pytest-xdist orders them
    differently). Dropped here rather than made to follow ``sys.stderr`` in the product:
    a process has one stderr for its life, only tests swap it, and this also covers
    handlers that the standard library's ``basicConfig`` or a library left."""
    _drop_handlers_on_closed_streams()
    yield
    _drop_handlers_on_closed_streams()


def _forget_a_signalled_sse_shutdown() -> None:
    """Clear sse-starlette's process-wide "the server is stopping" flag, if it is loaded."""
    sse = sys.modules.get("sse_starlette.sse")
    if sse is not None:
        sse.AppStatus.should_exit = False


@pytest.fixture(autouse=True)
def _no_sse_shutdown_left_by_a_signal() -> Iterator[None]:
    """A server an earlier test stopped with a signal does not end later SSE streams.

    sse-starlette (the MCP SDK's streamable HTTP answers every request on an SSE stream)
    patches ``uvicorn.Server.handle_exit``: a SIGTERM or SIGINT that stops a uvicorn
    server in a process's main thread sets ``AppStatus.should_exit``, process-wide, and
    nothing clears it (a served process is expected to exit). A test that stops an
    in-process ``serve`` or ``mcp --transport http`` so (``serve_in_process``) left it
    set, and every MCP HTTP stream later in that pytest-xdist worker ended at once,
    before its answer: ``initialize`` failed with "SSE stream ended without a response",
    only when pytest-xdist gave both files to one worker. Cleared here, as sse-starlette's
    documentation says of tests that signal an in-process server and go on."""
    _forget_a_signalled_sse_shutdown()
    yield
    _forget_a_signalled_sse_shutdown()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the browser tests last.

    pytest-playwright's sync API keeps an event loop running in the main thread from the
    first browser test until the session ends; the async tests after it (langchain-tests'
    async suite, the MCP client sessions, both on pytest-asyncio/anyio) then fail with
    "Cannot run the event loop while another loop is running". The sort is stable, so
    every other test keeps its order. Under pytest-xdist (pyproject's addopts) each worker
    process runs whole files in this order (``--dist loadfile --no-loadscope-reorder``):
    the browser file is then the last file given out, so nothing runs after it on its
    worker. xdist's default reorder (largest files first) gave it out early, and every
    async test after it on that worker failed so.
    """
    items.sort(key=lambda item: item.path.name == "test_console_browser.py")
