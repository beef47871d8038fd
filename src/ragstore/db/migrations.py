"""Schema migrations: Alembic, wrapped so that upgrades are locked and the schema is checked.

Revisions live in ``db/alembic/versions`` as explicit SQL with real downgrades. Upgrades
and downgrades hold a PostgreSQL advisory lock for their whole transaction, so two
processes upgrading at once run one after the other, and the second finds nothing to do.
"""

from __future__ import annotations

import ast
import contextlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ragstore.db.database import Database, unparseable
from ragstore.db.errors import translate, translated
from ragstore.errors import (
    ConflictError,
    DatabaseError,
    DatabaseUnavailableError,
    InputError,
    OutcomeUnknownError,
    RagstoreError,
    SchemaMismatchError,
    StatementCancelledError,
)

if TYPE_CHECKING:
    from alembic.config import Config

SCRIPT_LOCATION = Path(__file__).parent / "alembic"
# Arbitrary but fixed: pg_advisory_xact_lock key shared by every ragstore process.
MIGRATION_LOCK_KEY = 0x7261_6773_746F_7265 & 0x7FFF_FFFF_FFFF_FFFF
# How long a migration's statements wait for a table lock (``lock_timeout``) in one try,
# how long it pauses before the next (rolled back: no lock held, the service runs on), and
# how long it tries in all before it gives up with one error naming the sessions that hold
# the tables (a running backup's pg_dump holds every table until it ends).
LOCK_WAIT_S = 2.0
LOCK_RETRY_PAUSE_S = 1.0
LOCK_GIVE_UP_S = 60.0


def _config(url: str | None = None) -> Config:
    from alembic.config import Config

    cfg = Config(stdout=io.StringIO())
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


# SQLAlchemy's dialect, and no more: the connection itself is libpq's (:func:`_connect_args`)
_DIALECT_URL = "postgresql+psycopg://"


def _connect_args(db: Database) -> dict[str, Any]:
    """``db``'s conninfo, with the TCP keepalives of every other connection
    (:attr:`Database.tcp_conninfo`), as the keyword settings SQLAlchemy's engine hands to
    ``psycopg.connect`` (which quotes each value again for libpq).

    The engine was given the conninfo as a SQLAlchemy URL: only ``postgresql://`` URLs
    were rewritten, so a libpq ``key=value`` string (``host=db dbname=x password='a b'``),
    which RAGSTORE_DATABASE_URL accepts and every other connection takes, made ``ragstore
    db upgrade`` and every start that upgrades fail with SQLAlchemy's "Could not parse
    SQLAlchemy URL". Parsed by libpq here, the URL and the keyword forms, every option
    (``sslmode``, ``options``, several hosts) and any character of a password reach the
    server as they do for the rest of ragstore."""
    try:
        params = conninfo_to_dict(db.tcp_conninfo)
    except psycopg.ProgrammingError as exc:
        raise unparseable(exc) from None
    return {k: v for k, v in params.items() if v is not None}


def head_revision() -> str:
    """The revision the code expects."""
    return known_revisions()[-1]


def _declared(path: Path) -> tuple[str, str | None] | None:
    """(revision, down_revision) as a revision file assigns them, or None if it does not
    assign both as plain constants."""
    found: dict[str, object] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
        ):
            found[node.targets[0].id] = node.value.value
    rev, down = found.get("revision"), found.get("down_revision", ...)
    if isinstance(rev, str) and (down is None or isinstance(down, str)):
        return rev, down
    return None


def _chain_from_files() -> list[str] | None:
    """The revisions base first, read from the files without importing Alembic (which
    costs every command about half a second); None unless they form one straight line."""
    declared = [_declared(p) for p in sorted((SCRIPT_LOCATION / "versions").glob("*.py"))]
    if not declared or any(d is None for d in declared):
        return None
    parent_of = dict(d for d in declared if d is not None)
    child_of = {down: rev for rev, down in parent_of.items()}
    if len(child_of) != len(parent_of):  # two revisions with one parent: a branch
        return None
    chain: list[str] = []
    rev = child_of.get(None)
    while rev is not None:
        chain.append(rev)
        rev = child_of.get(rev)
    return chain if len(chain) == len(parent_of) else None


def _chain_from_alembic() -> list[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_config())
    return [s.revision for s in reversed(list(script.walk_revisions()))]


@cache
def _revisions() -> tuple[str, ...]:
    return tuple(_chain_from_files() or _chain_from_alembic())


def known_revisions() -> list[str]:
    """Every revision id, base first (Alembic itself decides when the files are not one
    straight chain)."""
    return list(_revisions())


def current_revision(conn: psycopg.Connection[tuple[object, ...]]) -> str | None:
    """The revision the database is at; None for a database ragstore never touched."""
    exists = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(row[0]) if row else None


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None
    head: str
    pending: list[str]
    unknown: bool  # the database is at a revision this code does not know (newer code ran)

    @property
    def is_current(self) -> bool:
        return self.current == self.head


def status(db: Database) -> SchemaStatus:
    with db.connect(autocommit=True) as conn, translated(f"reading schema version on {db.where}"):
        current = current_revision(conn)
    return status_of(current)


def status_of(current: str | None) -> SchemaStatus:
    """The :class:`SchemaStatus` of a database at revision ``current``."""
    revisions = known_revisions()
    head = revisions[-1]
    if current is None:
        return SchemaStatus(None, head, revisions, unknown=False)
    if current not in revisions:
        return SchemaStatus(current, head, [], unknown=True)
    return SchemaStatus(current, head, revisions[revisions.index(current) + 1 :], unknown=False)


def holds_ragstore_data(db: Database) -> bool:
    """Whether the database holds a ragstore schema: a revision, or ragstore's tables with
    their revision lost (:func:`lost_revision`). What a restore backs up first: judged by
    the revision alone, a database whose revision row was lost was replaced unbacked."""
    with db.connect(autocommit=True) as conn, translated(f"inspecting {db.where}"):
        return current_revision(conn) is not None or lost_revision(conn, db.where) is not None


def ensure_current(db: Database) -> None:
    """Refuse to touch data unless the schema is exactly what this code expects."""
    st = status(db)
    if st.current is None:
        refuse_lost(db)
    if not st.is_current:
        raise _mismatch(db.where, st)


def refuse_lost(db: Database) -> None:
    """Raise :func:`lost_revision`'s error where the database holds ragstore's tables but
    no revision: what a command that found no revision says before it acts on "empty"."""
    with db.connect(autocommit=True) as conn, translated(f"inspecting {db.where}"):
        lost = lost_revision(conn, db.where)
    if lost is not None:
        raise lost


# ragstore's first revision's tables, present in every schema it has made since
RAGSTORE_TABLES = ("collections", "embedding_models", "embedding_spaces", "documents", "chunks")
_RAGSTORE_TABLES_FOUND = (
    "SELECT array_agg(t ORDER BY t) FILTER (WHERE to_regclass('public.' || quote_ident(t)) "
    "IS NOT NULL), to_regclass('public.alembic_version') IS NOT NULL "
    "FROM unnest(%s::text[]) AS t"
)


def lost_revision(conn: object, where: str) -> SchemaMismatchError | None:
    """The error for a database that holds ragstore's tables but records no schema
    revision (its ``alembic_version`` row, or the table, lost), or None. ``conn`` is a
    psycopg connection or a SQLAlchemy one (inside a migration's transaction).

    Such a database was taken for a brand-new one: ``db upgrade`` (and the embedded
    server's start) ran the first revision over the data, which failed saying that its
    tables were "not ragstore's", and ``restore`` took no backup of what it replaced."""
    run = getattr(conn, "exec_driver_sql", None) or conn.execute  # type: ignore[attr-defined]
    row = run(_RAGSTORE_TABLES_FOUND, (list(RAGSTORE_TABLES),)).fetchone()
    found = list(row[0] or []) if row is not None else []
    if len(found) != len(RAGSTORE_TABLES):
        return None
    table = (
        "its alembic_version table is empty"
        if row is not None and row[1]
        else "it has no alembic_version table"
    )
    create = (
        ""
        if row is not None and row[1]
        else "CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY); "
    )
    head = head_revision()
    return SchemaMismatchError(
        f"the database on {where} holds ragstore's tables ({', '.join(found)}) but no "
        f"schema revision ({table}: the row was lost); nothing was changed. Restore a "
        f"backup (`ragstore restore PATH`), or record the revision of the ragstore that "
        f"last used it (this version's is {head}) with psql: {create}INSERT INTO "
        f"alembic_version (version_num) VALUES ('{head}'); then `ragstore db status`"
    )


def still_current(where: str) -> Callable[[psycopg.Connection[Any]], None]:
    """A check for :meth:`Database.guard_schema`: SchemaMismatchError, as
    :func:`ensure_current` words it, once the revision read on a connection is not the
    code's head (a ``db upgrade`` or ``downgrade`` ran since the database was opened)."""
    head = known_revisions()[-1]

    def check(conn: psycopg.Connection[Any]) -> None:
        with translated(f"checking the schema revision on {where}"):
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        current = None if row is None else str(row[0])
        if current != head:
            raise _mismatch(where, status_of(current))

    return check


def _mismatch(where: str, st: SchemaStatus) -> SchemaMismatchError:
    if st.unknown:
        return SchemaMismatchError(
            f"the database schema on {where} is at revision {st.current}, which this version "
            f"of ragstore does not know (it expects {st.head}): upgrade ragstore, or run "
            f"`ragstore db downgrade --to {st.head}` with the newer version first"
        )
    return SchemaMismatchError(
        f"the database schema on {where} is at revision {st.current or 'none'} but this "
        f"version of ragstore needs {st.head}: run `ragstore db upgrade`"
    )


class MigrationInterrupted(KeyboardInterrupt):
    """An upgrade or downgrade stopped by Ctrl-C or SIGTERM (raised from that interrupt);
    ``what`` says where the schema is: the revision before, or after where the commit had
    gone through, or that it could not be read."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclass
class _Progress:
    """How far a migration's transaction got: its backend, the revision it found under
    the lock, the one it leaves, and whether its COMMIT was sent."""

    pid: int | None = None
    before: str | None = None
    known: bool = False  # ``before`` was read (under the lock, before any change)
    after: str | None = None
    committing: bool = False


def _revision_in(conn: object) -> str | None:
    """The revision as the migration's own transaction sees it (SQLAlchemy connection)."""
    exists = conn.exec_driver_sql(  # type: ignore[attr-defined]
        "SELECT to_regclass('alembic_version') IS NOT NULL"
    ).scalar()
    if not exists:
        return None
    row = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()  # type: ignore[attr-defined]
    return None if row is None else str(row)


def _read_back(db: Database, progress: _Progress) -> str | None:
    """The revision once the migration's transaction has ended, read on a new connection:
    its backend is ended (a COMMIT sent and never answered may still be running) and the
    migration lock, which that transaction holds to its end, is waited for. Tried again
    while the database cannot be reached (a restart); an error where it cannot be read."""
    import time

    def read() -> str | None:
        with db.connect() as conn, translated(f"reading back the schema version on {db.where}"):
            if progress.pid is not None:
                # only while it still holds a lock of ours: never a later session's pid
                conn.execute(
                    "SELECT pg_terminate_backend(pid, 10000) FROM pg_locks "
                    "WHERE pid = %s AND locktype = 'advisory' LIMIT 1",
                    (progress.pid,),
                )
            conn.execute("SET LOCAL lock_timeout = '60s'")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            return current_revision(conn)

    for delay in (0.5, 1.0, 2.0, 4.0):
        try:
            return read()
        except DatabaseUnavailableError:
            time.sleep(delay)
    return read()


def _ended_at(db: Database, action: str, progress: _Progress, why: str) -> str | None:
    """Where a migration whose COMMIT went out but whose answer never came back left the
    schema (``progress.after`` if it committed, ``progress.before`` if not); an
    :class:`OutcomeUnknownError` where that cannot be read."""
    try:
        return _read_back(db, progress)
    except RagstoreError as exc:
        raise OutcomeUnknownError(
            f"{action} of {db.where} from {progress.before or '(empty)'} to "
            f"{progress.after or 'base'}: the connection was lost as it committed ({why}) "
            f"and whether it did could not be read ({exc}); once the database answers, "
            f"`ragstore db status` shows {progress.after or '(empty database)'} if it did, "
            f"{progress.before or '(empty database)'} if not"
        ) from None


class _LockWaitEnded(Exception):
    """One try of a migration gave up waiting for a table lock (``lock_timeout``); its
    transaction was rolled back. ``before``: the revision it found under the lock."""

    def __init__(self, before: str | None) -> None:
        super().__init__(before)
        self.before = before


def _run(db: Database, action: str, target: str) -> tuple[str | None, str | None]:
    """:func:`_run_once`, tried again while its statements cannot have their table locks
    in :data:`LOCK_WAIT_S`, for :data:`LOCK_GIVE_UP_S` in all; then one error naming the
    sessions that hold them, the schema as it was.

    A migration's ``ALTER TABLE`` waited without end behind a session holding that table
    (a backup's pg_dump holds every table until it ends: hours), saying nothing, and its
    queued ACCESS EXCLUSIVE request held every other query on that table (each search,
    each write of the service) waiting behind it all that time."""
    import time

    deadline = time.monotonic() + LOCK_GIVE_UP_S
    tries = 0
    while True:
        tries += 1
        try:
            return _run_once(db, action, target)
        except _LockWaitEnded as ended:
            if time.monotonic() + LOCK_RETRY_PAUSE_S >= deadline:
                raise _locked_out(db, action, ended.before, tries) from None
            try:
                time.sleep(LOCK_RETRY_PAUSE_S)
            except KeyboardInterrupt as exc:
                raise MigrationInterrupted(
                    f"the {action} was rolled back; the schema is at "
                    f"{ended.before or '(empty)'}, as it was"
                ) from exc


# sessions other than this one, in transactions older than a lock wait, holding locks on
# ragstore's tables, and any holding the migration lock (a migration, a restore; or a
# session-level lock, held outside a transaction): what a migration or a restore that
# could not have its locks waited behind. A bigint advisory key is classid (high 32 bits)
# and objid (low) with objsubid 1 in pg_locks.
_LOCK_HOLDERS = """
SELECT a.pid, coalesce(nullif(a.application_name, ''), a.backend_type),
       coalesce(a.state, ''), to_char(a.xact_start AT TIME ZONE 'UTC', 'HH24:MI:SS'),
       m.pid IS NOT NULL
FROM pg_stat_activity a
LEFT JOIN (SELECT DISTINCT l.pid FROM pg_locks l
           WHERE l.granted AND l.locktype = 'advisory' AND l.objsubid = 1
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
             AND (l.classid::bigint << 32) | l.objid::bigint = %(key)s) m ON m.pid = a.pid
WHERE a.pid <> pg_backend_pid() AND a.datname = current_database()
  AND (m.pid IS NOT NULL
       OR a.xact_start < clock_timestamp() - make_interval(secs => %(waited)s)
          AND EXISTS (SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                      WHERE l.pid = a.pid AND l.granted AND l.locktype = 'relation'
                        AND c.relnamespace = 'public'::regnamespace))
ORDER BY m.pid IS NULL, a.xact_start NULLS FIRST LIMIT 6
"""


# whether a session other than this one holds the migration lock (the key as _LOCK_HOLDERS
# reads it from pg_locks)
_LOCK_HELD = """
SELECT EXISTS (SELECT 1 FROM pg_locks l
               WHERE l.granted AND l.locktype = 'advisory' AND l.objsubid = 1
                 AND l.database = (SELECT oid FROM pg_database
                                   WHERE datname = current_database())
                 AND (l.classid::bigint << 32) | l.objid::bigint = %(key)s
                 AND l.pid <> pg_backend_pid())
"""


def migration_lock_held(conn: psycopg.Connection[Any]) -> bool:
    """Whether another session holds :data:`MIGRATION_LOCK_KEY` now (a ``db upgrade``,
    ``db downgrade`` or restore in its transaction); a look, taking nothing."""
    row = conn.execute(_LOCK_HELD, {"key": MIGRATION_LOCK_KEY}).fetchone()
    return bool(row and row[0])


def lock_holders(db: Database, waited_s: float) -> str:
    """The sessions holding ragstore's tables in transactions older than ``waited_s``, and
    those holding the migration lock (:data:`MIGRATION_LOCK_KEY`), first, in words (pid,
    application, state, since when; read now): what a migration or a restore that could
    not have its locks waited behind. "could not be read" where the database does not
    answer."""
    try:
        with db.connect(autocommit=True) as conn, translated(f"reading {db.where}"):
            args = {"key": MIGRATION_LOCK_KEY, "waited": waited_s}
            rows = conn.execute(_LOCK_HOLDERS, args).fetchall()
    except RagstoreError as exc:
        return f"could not be read ({exc})"
    return (
        "; ".join(
            f"pid {pid} ({app}{': a backup' if app == 'pg_dump' else ''}, "
            f"{'holding the schema migration lock, ' if migrating else ''}{state or 'open'}"
            f"{f', in a transaction since {since} UTC' if since else ''})"
            for pid, app, state, since, migrating in rows[:5]
        )
        or "none now (they have ended since)"
    )


def _locked_out(db: Database, action: str, before: str | None, tries: int) -> RagstoreError:
    """The error of a migration that never had its table locks: who holds them and how
    to go on."""
    held = lock_holders(db, LOCK_WAIT_S)
    return StatementCancelledError(
        f"{action} of {db.where}: other sessions held its tables for {LOCK_GIVE_UP_S:g}s "
        f"({tries} tries, each waiting {LOCK_WAIT_S:g}s for the table locks); sessions "
        f"holding ragstore's tables: {held}. Nothing was changed (rolled back, the schema "
        f"is at {before or '(empty)'}): run it again once they have ended (a backup, "
        "pg_dump, ends by itself; another session can be ended with "
        "SELECT pg_terminate_backend(PID))"
    )


def _run_once(db: Database, action: str, target: str) -> tuple[str | None, str | None]:
    """Run the migration in one transaction under the lock; the revision it found under
    the lock and the one it committed; :class:`_LockWaitEnded` where a statement waited
    :data:`LOCK_WAIT_S` for a table lock (rolled back).

    That revision is read inside the transaction, before its COMMIT: read afterwards in a
    transaction of its own, a database that went away once the migration had committed
    (a restart) made a done upgrade end with an error. A COMMIT whose answer is lost is
    read back (:func:`_read_back`), and an interrupt (Ctrl-C, SIGTERM) says where the
    schema is (:class:`MigrationInterrupted`)."""
    from alembic import command
    from sqlalchemy import create_engine
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.pool import NullPool

    # the TCP keepalives of every other connection (``database.CLIENT_TCP``): without
    # them a migration whose server went silent (a failover, a forgotten NAT flow) waited
    # hours on the system's defaults, its advisory lock and table locks held all along
    engine = create_engine(_DIALECT_URL, poolclass=NullPool, connect_args=_connect_args(db))
    progress = _Progress()
    try:
        with translated(f"migrating {db.where}"), engine.begin() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
            progress.pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            progress.before = _revision_in(conn)
            progress.known = True
            refuse_unknown(db, action, progress.before)
            if progress.before is None and (lost := lost_revision(conn, db.where)) is not None:
                raise lost
            _refuse_below(db, action, target, progress.before)
            # after the migration lock (another upgrade's turn is waited for in full)
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{round(LOCK_WAIT_S * 1000)}ms'")
            cfg = _config()
            cfg.attributes["connection"] = conn
            with _target_refused(f"{action} to {target!r}"):
                if action == "upgrade":
                    command.upgrade(cfg, target)
                else:
                    command.downgrade(cfg, target)
            progress.after = _revision_in(conn)
            progress.committing = True
        return progress.before, progress.after
    except KeyboardInterrupt as exc:
        raise MigrationInterrupted(_interrupted(db, action, progress)) from exc
    except Exception as exc:
        if isinstance(exc, DBAPIError) and isinstance(exc.orig, psycopg.Error):
            if isinstance(exc.orig, psycopg.errors.LockNotAvailable) and not progress.committing:
                raise _LockWaitEnded(progress.before) from None
            if progress.committing and isinstance(
                exc.orig, psycopg.OperationalError | psycopg.InterfaceError
            ):
                now = _ended_at(db, action, progress, str(exc.orig).strip().splitlines()[0])
                if now == progress.after:
                    return progress.before, now  # it committed: the migration is done
            # SQLAlchemy wraps the driver's error (and quotes the whole revision's SQL)
            raise _failed(exc.orig, db, action, progress) from None
        raise
    finally:
        engine.dispose()


def refuse_unknown(db: Database, action: str, found: str | None) -> None:
    """Refuse to migrate a database at a revision this code does not know (a newer
    ragstore upgraded it), read under the migration lock: Alembic said "Can't locate
    revision identified by 'X'", which ``ragstore db upgrade`` reported as a bad ``--to``
    (invalid_input), naming neither the cause nor what to run."""
    if found is None or found in _revisions():
        return
    raise SchemaMismatchError(
        f"cannot {action} {db.where}: its schema is at revision {found}, which this version "
        f"of ragstore does not know (it knows up to {head_revision()}; a newer ragstore "
        f"wrote it); nothing was changed: upgrade ragstore, or run `ragstore db downgrade "
        f"--to {head_revision()}` with the newer version first"
    )


def _refuse_below(db: Database, action: str, target: str, found: str | None) -> None:
    """Refuse an upgrade to a revision below the database's (or to base), read under the
    migration lock: Alembic does nothing then, and ``migrations.upgrade(db, REV)`` returned
    as if the database were at REV (``ragstore db upgrade`` refused it; the library did
    not)."""
    if action != "upgrade" or found is None:
        return
    known = _revisions()
    if target != "base" and (target not in known or known.index(target) >= known.index(found)):
        return
    raise InputError(
        f"cannot upgrade {db.where} to {target}: it is below the database's revision "
        f"{found}, and an upgrade only goes up (`ragstore db downgrade --to {target}` goes "
        "down); nothing was changed"
    )


def _interrupted(db: Database, action: str, progress: _Progress) -> str:
    """What an interrupted migration left: before its COMMIT went out, the transaction was
    rolled back; after, it is read back."""
    if not progress.known:  # stopped before it changed anything (waiting for the lock)
        return f"the {action} did not start; the schema is as it was"
    as_was = (
        f"the {action} was rolled back; the schema is at {progress.before or '(empty)'}, as it was"
    )
    if not progress.committing:
        return as_was
    try:
        now = _read_back(db, progress)
    except RagstoreError as exc:
        return (
            f"the {action} was interrupted as it committed and whether it did could not be "
            f"read ({exc}); `ragstore db status` shows {progress.after or '(empty database)'} "
            f"if it did, {progress.before or '(empty database)'} if not"
        )
    if now == progress.after and now != progress.before:
        return f"the {action} had committed; the schema is at {now or '(empty)'}"
    return as_was


def _failed(exc: psycopg.Error, db: Database, action: str, progress: _Progress) -> RagstoreError:
    """The one-line error for a revision that failed; the transaction rolled it back. The
    revision is named where it was read (not before the lock was had: then it is not
    known, and "(empty)" would be false)."""
    at = f": {progress.before or '(empty)'}" if progress.known else ""
    where = f"{action} of {db.where} (rolled back, the schema is as it was{at})"
    if isinstance(exc, psycopg.errors.DuplicateTable | psycopg.errors.DuplicateObject):
        first = str(exc).strip().splitlines()[0]
        return ConflictError(
            f"{where}: {first}; the database holds tables that are not ragstore's: give "
            "ragstore a database of its own (RAGSTORE_DATABASE_URL)"
        )
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        # "permission denied for schema public" alone, exit 70 as though ragstore's bug:
        # an external database whose role may not create tables (PostgreSQL 15 takes
        # CREATE on public from everyone but the owner) or the pgvector extension; a
        # downgrade by a role that does not own the tables it drops
        first = str(exc).strip().splitlines()[0]
        return DatabaseError(
            f"{where}: {first}; the role of RAGSTORE_DATABASE_URL lacks a privilege the "
            f"{action} needs there: run it as the role that owns the database and ragstore's "
            "tables, or have the owner run GRANT CREATE ON DATABASE <db> TO <role>; GRANT "
            "CREATE ON SCHEMA public TO <role> (or ALTER DATABASE <db> OWNER TO <role>), and a "
            f"superuser CREATE EXTENSION vector in that database; then `ragstore db {action}`"
        )
    return translate(exc, where)


def upgrade(db: Database, to: str = "head") -> SchemaStatus:
    """Bring the schema up to ``to`` (default: the code's head) under the advisory lock."""
    return migrate(db, "upgrade", to).status


def downgrade(db: Database, to: str) -> SchemaStatus:
    """Take the schema down to ``to`` ("base" removes every ragstore table)."""
    return migrate(db, "downgrade", to).status


@dataclass(frozen=True)
class Migrated:
    """What a migration found and left: ``found`` is the revision read under the lock,
    before any change (another process may have moved it since the caller last looked)."""

    found: str | None
    status: SchemaStatus

    @property
    def changed(self) -> bool:
        return self.found != self.status.current


def migrate(db: Database, action: str, to: str) -> Migrated:
    """:func:`upgrade` (``action`` "upgrade") or :func:`downgrade`, saying also the
    revision found once the lock was had: a second ``db upgrade`` run alongside another
    read the old revision, waited for the lock, found nothing to do and reported
    "upgraded X -> Y" for the other's work."""
    found, after = _run(db, action, to)
    return Migrated(found, status_of(after))


class _OneTerminator(io.StringIO):
    """Alembic's offline output, one ``;`` after each statement: Alembic appends its
    terminator to a statement as written, and a revision's ``op.execute("...;")`` (most
    of them end so) printed ``);;`` in ``db upgrade --sql``. A write is one statement
    and its terminator (``static_output``), so only its own end is looked at: a ``;;``
    inside a statement (a function body) is left as written."""

    def write(self, s: str, /) -> int:
        if s.endswith(";;\n\n"):
            s = s[: -len(";;\n\n")] + ";\n\n"
        return super().write(s)


def sql_header(where: str, end: str) -> str:
    """The SQL comment ``db upgrade --sql`` opens with: where it starts, where it ends, and
    what ``db upgrade`` does around the same SQL that a hand-applied copy does not."""
    wait_ms = round(LOCK_WAIT_S * 1000)
    lines = [
        f"ragstore db upgrade --sql: the upgrade from {where} to {end}.",
        "Applied by hand it runs without what `ragstore db upgrade` does around it:",
        "- no backup first (`ragstore backup` takes one);",
        "- no migration lock: `ragstore db upgrade` first takes",
        f"  SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY});",
        "  so that two upgrades run one after the other;",
        f"- no lock_timeout: `ragstore db upgrade` runs SET LOCAL lock_timeout = '{wait_ms}ms';",
        f"  and tries again for {LOCK_GIVE_UP_S:g} s; without it a statement waits",
        "  for its table lock without end, and the service's queries on that table wait",
        "  behind it.",
        "Add those two statements after BEGIN for the same lock and lock wait (one try).",
    ]
    return "".join(f"-- {line}\n" for line in lines) + "\n"


def upgrade_sql(db: Database | None, to: str = "head", start: str | None = None) -> str:
    """The SQL an upgrade would run, without running it (Alembic offline mode): from
    ``start``, else from ``db``'s revision (read, and refused as :func:`upgrade` refuses a
    database at a revision this code does not know or one that lost its revision), else
    from an empty database. ``BEGIN; COMMIT;`` alone where there is nothing to apply.

    ``ragstore db upgrade --sql`` printed every revision from the first, whatever the
    database's revision: applied to a live one it failed on its first statement. A target
    Alembic cannot resolve is an InputError, as in :func:`upgrade`: ``ragstore db upgrade
    --sql --to bogus`` ended with Alembic's traceback."""
    from alembic import command

    if start is None and db is not None:
        start = status(db).current
        if start is None:
            refuse_lost(db)
        refuse_unknown(db, "upgrade", start)
    # the dialect is all offline mode needs of a database: given ``db``'s conninfo, a
    # libpq ``key=value`` one failed as a URL SQLAlchemy could not parse
    cfg = _config(_DIALECT_URL)
    out = _OneTerminator()
    cfg.output_buffer = out
    rng = f"{start}:{to}" if start else to
    with _target_refused(f"print the SQL of an upgrade to {rng!r}"):
        if start and ":" in to:  # a range in a range: Alembic's ValueError, a traceback
            from alembic.util import CommandError

            raise CommandError("Range revision not allowed")
        command.upgrade(cfg, rng, sql=True)
    return out.getvalue()


def refuse_unresolvable(start: str, to: str) -> None:
    """Raise the InputError an upgrade from ``start`` to ``to`` ends with where Alembic
    cannot resolve ``to`` (a typo, a prefix of no revision, a range), found from the
    revision files alone (offline mode, no database): ``ragstore db upgrade --to nope``
    took a whole backup first (minutes at a million chunks, kept on disk) and only then
    was refused."""
    from alembic import command

    cfg = _config(_DIALECT_URL)
    cfg.output_buffer = io.StringIO()
    with _target_refused(f"upgrade to {to!r}"):
        if ":" in to:  # offline mode takes a range, an upgrade refuses it: as it says
            from alembic.util import CommandError

            raise CommandError("Range revision not allowed")
        command.upgrade(cfg, f"{start}:{to}", sql=True)


@contextlib.contextmanager
def _target_refused(what: str) -> Iterator[None]:
    """Alembic refusing a revision target, as one InputError (``cannot WHAT: why``): its
    CommandError, and the ``assert`` some targets fail in its revision map
    (:func:`_unresolvable`). Any other error passes through."""
    from alembic.util import CommandError

    try:
        yield
    except (CommandError, AssertionError) as exc:
        if isinstance(exc, AssertionError) and not _unresolvable(exc):
            raise
        raise InputError(f"cannot {what}: {str(exc) or _NOT_A_REVISION}") from None


_NOT_A_REVISION = "not a revision; give one that `ragstore db status` names, or head"


def _unresolvable(exc: BaseException) -> bool:
    """Whether ``exc`` is Alembic failing to parse a revision target: some (``:``, ``@``,
    ``base:``, ``0031+5``) fail an ``assert`` in its revision map instead of raising its
    CommandError, which ended ``ragstore db upgrade --to`` with a traceback."""
    if not isinstance(exc, AssertionError):
        return False
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_globals.get("__name__") == "alembic.script.revision"
