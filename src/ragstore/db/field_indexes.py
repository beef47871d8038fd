"""Indexed metadata fields: a metadata path whose number or string values a range filter
can find through an index.

A filter's range on a metadata path (``{"year": {"$gte": 2020}}``) reads
``coalesce(c.metadata #> p, d.metadata #> p)``, which no index holds, so a selective
range made both search lists read deep for the few chunks that pass. Values pinned with
``$eq``/``$in`` are found through the metadata GIN indexes; a range needs a btree on the
path's typed value, and there are too many paths to index them all. So an operator
declares the fields worth it (``ragstore db index-field year --type number``), as
Qdrant's payload indexes or a hand-made expression index are declared, and each gets two
btree indexes over every collection: on ``documents``, and on the ``chunks`` that carry
such a value of their own (a chunk's own value overrides its document's, so both are
needed). Search derives a range filter's candidate chunks from them
(search/filters.py).

The indexes are the registry: each is named ``ragstore_field_<kind>_<hash>_<table>`` and
carries its path and kind as a JSON comment, and a field counts as indexed while both of
its indexes are valid. They are built ``CONCURRENTLY`` (writers are not blocked; a
build that fails leaves an invalid index, which the next declaration rebuilds), so the
functions here need an autocommit connection.

Declarations run one at a time (:func:`declare` holds a session advisory lock): two
concurrent builds on one table wait for each other's transactions, and PostgreSQL ended
all but one of two or three identical requests with "deadlock detected". The lock is
polled with ``pg_try_advisory_lock``, not waited for, since a waiting statement is a
transaction the build holding the lock would itself wait for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from ragstore.db.errors import translated
from ragstore.errors import InputError, InvalidFilterError, RagstoreError
from ragstore.metadata_paths import BUILTIN_FIELDS, SCOPES, join_path, metadata_path
from ragstore.validation import problem_in

if TYPE_CHECKING:
    from ragstore.db.database import Database

log = logging.getLogger(__name__)

KINDS = ("number", "string")
PREFIX = "ragstore_field_"
_TABLES = {"d": "documents", "c": "chunks"}


_generation = 0  # bumped by every add and drop of this process (search's cache reads it)


def generation() -> int:
    """How many times this process has added or dropped field indexes."""
    return _generation


def _changed() -> None:
    global _generation
    _generation += 1


@dataclass(frozen=True)
class FieldIndex:
    """A metadata path (its keys) whose values of ``kind`` are indexed."""

    keys: tuple[str, ...]
    kind: str

    @property
    def field(self) -> str:
        """The path as a filter names it, a dot within a key escaped (``version\\.major``)."""
        return join_path(self.keys)

    def name(self, table: str) -> str:
        digest = hashlib.sha1(json.dumps(list(self.keys)).encode()).hexdigest()[:16]
        return f"{PREFIX}{self.kind}_{digest}_{table[0]}"


CASTS = {"number": "numeric", "string": "text"}  # what each kind of value compares as


def typed(value: sql.Composable, kind: str) -> sql.Composable:
    """A jsonb ``value`` as ``numeric`` (``kind`` number) or ``text`` (string), NULL where
    it is absent or of another JSON type: what a filter's range compares
    (search/filters.py), and what a field's indexes hold."""
    if kind == "number":
        return sql.SQL("(CASE WHEN jsonb_typeof({e}) = 'number' THEN ({e})::numeric END)").format(
            e=value
        )
    return sql.SQL("(CASE WHEN jsonb_typeof({e}) = 'string' THEN {e} #>> '{{}}' END)").format(
        e=value
    )


def typed_value(metadata: sql.Composable, keys: tuple[str, ...], kind: str) -> sql.Composable:
    """:func:`typed` of the value at ``keys`` in ``metadata``: the indexes' expression, and
    the one a candidate probe must repeat word for word for the planner to use them (the
    path is a literal here, not a parameter, for the same reason)."""
    path = sql.SQL("{}::text[]").format(sql.Literal(list(keys)))
    return typed(sql.SQL("({} #> {})").format(metadata, path), kind)


def parse_field(field: str, kind: str) -> FieldIndex:
    """The field to index, checked: a dot-separated metadata path (no built-in field, no
    ``chunk.``/``document.`` prefix: both tables are indexed) and a known kind."""
    if kind not in KINDS:
        raise InputError(f"unknown field type {kind!r}: use one of {', '.join(KINDS)}")
    found = problem_in(field)
    if found:
        # a DELETE's query parameter reaches here unchecked (a body is checked by its
        # schema): a NUL in it was answered 200 "not indexed" for a path no filter can name
        raise InputError(f"invalid metadata field {field!r}: it holds {found}")
    try:
        # the filter's own rule for a field it can name: an index of a field no filter can
        # address ("$gt", read as an operator) was built and never used
        keys = metadata_path(field)
    except InvalidFilterError as exc:
        raise InputError(
            f"invalid metadata field {field!r}: no filter could name it; {exc.message}"
        ) from None
    if field in BUILTIN_FIELDS or keys[0] in SCOPES:
        raise InputError(
            f"{field!r} is not a metadata path: give the path as a filter reads it bare "
            "(e.g. 'year'); both the documents' and the chunks' values are indexed"
        )
    return FieldIndex(tuple(keys), kind)


def _create_sql(index: FieldIndex, table: str) -> sql.Composable:
    """The index of ``table``: partial on ``chunks`` (few chunks carry a value of their
    own; a chunk that does not costs its write nothing), whole on ``documents``, because
    the planner estimates a range from an expression index's statistics only when it is
    not partial (without them a one-sided range is a third of the rows, and the documents
    were scanned)."""
    alias = sql.Identifier(table)
    value = typed_value(sql.SQL("{}.metadata").format(alias), index.keys, index.kind)
    where = sql.SQL(" WHERE {} IS NOT NULL").format(value) if table == "chunks" else sql.SQL("")
    # strings in byte order, as a filter's range compares them (search.filters.byte_order):
    # an index of the database's collation would not serve that comparison
    collate = sql.SQL(' COLLATE "C"') if index.kind == "string" else sql.SQL("")
    return sql.SQL("CREATE INDEX CONCURRENTLY {i} ON {t} ({v}{c}){w}").format(
        i=sql.Identifier(index.name(table)), t=alias, v=value, c=collate, w=where
    )


def _state(conn: Any, name: str) -> bool | None:
    """Whether index ``name`` is valid; None where it does not exist."""
    row = conn.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = %s AND pg_table_is_visible(c.oid)",
        (name,),
    ).fetchone()
    return None if row is None else bool(row[0])


def add(conn: Any, index: FieldIndex) -> bool:
    """Build the field's two indexes (``conn`` in autocommit); False when both existed.

    An index left invalid by a failed or cancelled build is dropped and built again. The
    tables are analysed after a build: an expression index gets its statistics then."""
    built = False
    for table in _TABLES.values():
        name = index.name(table)
        state = _state(conn, name)
        if state is False:
            conn.execute(sql.SQL("DROP INDEX CONCURRENTLY {}").format(sql.Identifier(name)))
        if not state:
            try:
                conn.execute(_create_sql(index, table))
            except psycopg.errors.LockNotAvailable:
                _left_invalid(conn, index, name)
                raise
            built = True
        # labelled every time: a build stopped between its CREATE and this is valid, unnamed
        _label(conn, index, name)
    if built:  # the planner estimates a range over the new expressions from these statistics
        conn.execute("ANALYZE documents, chunks")
        _changed()
    return built


def _label(conn: Any, index: FieldIndex, name: str) -> None:
    """Name the field and kind of index ``name`` in its comment: the registry's label."""
    comment = json.dumps({"field": list(index.keys), "kind": index.kind})
    conn.execute(
        sql.SQL("COMMENT ON INDEX {} IS {}").format(sql.Identifier(name), sql.Literal(comment))
    )


CLEANUP_LOCK_TIMEOUT = "200ms"  # how long the drop of a build that gave up waits


def _left_invalid(conn: Any, index: FieldIndex, name: str) -> None:
    """Drop the index a concurrent build left when it gave up waiting (``lock_timeout``:
    its catalog entry is committed before it waits, invalid and not yet written to).

    The drop waits for the same transactions (any lock on the table), so behind one still
    open (a stuck bulk load) it cannot be done: it is tried briefly, and failing that the
    index is labelled (that needs no lock on the table), so that ``ragstore db check``
    reports it as the field's and ``--repair`` or the next declaration drops and builds it
    again. Unlabelled, it was reported as naming no field, and that repair's drop came
    after the field's rebuild and dropped the rebuilt index.

    Only an index still invalid and not being built is dropped: another session's build
    of the same field may have made it valid, or be making it, since this one gave up."""
    building = conn.execute(
        "SELECT 1 FROM pg_stat_progress_create_index p JOIN pg_class c"
        " ON c.oid = p.index_relid WHERE c.relname = %s",
        (name,),
    ).fetchone()
    if _state(conn, name) is not False or building is not None:
        return
    before = conn.execute("SELECT current_setting('lock_timeout')").fetchone()[0]
    conn.execute("SELECT set_config('lock_timeout', %s, false)", (CLEANUP_LOCK_TIMEOUT,))
    try:
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))
    except psycopg.errors.LockNotAvailable:
        _label(conn, index, name)
        log.info("index %s left invalid by a build that gave up; rebuilt by the next try", name)
    finally:
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (before,))


def drop_indexes(conn: Any, index: FieldIndex) -> bool:
    """Drop the field's indexes (``conn`` in autocommit); False when there were none."""
    dropped = False
    for table in _TABLES.values():
        name = index.name(table)
        if _state(conn, name) is not None:
            conn.execute(sql.SQL("DROP INDEX CONCURRENTLY {}").format(sql.Identifier(name)))
            dropped = True
    _changed()
    return dropped


@dataclass(frozen=True)
class Blocker:
    """A transaction a concurrent index build or drop is waiting for."""

    pid: int
    since: datetime | None  # when its transaction began
    state: str | None  # active, idle in transaction ...
    query: str | None  # its latest statement, cut short


def _blocker(row: Sequence[object]) -> Blocker:
    pid, since, state, query = row
    return Blocker(
        int(str(pid)),
        since if isinstance(since, datetime) else None,
        None if state is None else str(state),
        None if query is None else str(query),
    )


WAIT_NOTICE_S = 2.0  # a build blocked this long is reported (a short wait is normal)
DECLARE_LOCK = 0x5246_4958  # "RFIX": the advisory lock of field index declarations
LOCK_POLL_S = 0.2


# How long a declaration made by a request (the API, ``Store``) waits, at one time, for
# the transactions its concurrent build waits for, before it gives up with an error that
# names them: a running backup's pg_dump holds one for the whole backup (hours, for a big
# database), and the request hung that long without a word. The CLI waits, saying which.
REQUEST_WAIT_S = 30.0


def declare(
    db: Database,
    field: str,
    kind: str,
    *,
    drop: bool = False,
    on_wait: Callable[[list[Blocker]], None] | None = None,
    wait_s: float | None = None,
) -> bool:
    """Index ``field``'s ``kind`` of values (or drop its indexes) on ``db``, checked first
    (:func:`parse_field`): what ``ragstore db index-field`` does. False when there was
    nothing to do.

    A concurrent build waits for every transaction older than it, in any table (a bulk
    load of minutes holds one from start to end, a backup's pg_dump one for the whole
    backup). ``on_wait`` is told, once, which ones when the build has been blocked for
    :data:`WAIT_NOTICE_S`, so that a command does not sit silent. With ``wait_s`` (a
    request, which has no one to tell) it waits at most that long at a time (for them, or
    for another declaration) and then raises ``StatementCancelledError`` naming the
    sessions that held it up: retry once they have ended."""
    index = parse_field(field, kind)
    doing = f"{'dropping' if drop else 'building'} the indexes of field {field!r}"
    with (
        db.connect(autocommit=True) as conn,
        translated(doing),
        _one_at_a_time(conn, wait_s, lambda: _gave_up(db, doing, wait_s)),
        _reporting_waits(db, conn.info.backend_pid, on_wait),
    ):
        if wait_s is None:
            return drop_indexes(conn, index) if drop else add(conn, index)
        conn.execute(
            sql.SQL("SET lock_timeout = {}").format(
                sql.Literal(f"{max(1, round(wait_s * 1000))}ms")
            )
        )
        try:
            return drop_indexes(conn, index) if drop else add(conn, index)
        except psycopg.errors.LockNotAvailable:
            raise _gave_up(db, doing, wait_s) from None


def _gave_up(db: Database, doing: str, wait_s: float | None) -> RagstoreError:
    """The error of a declaration that waited ``wait_s`` for older transactions (or
    another declaration) and gave up: who holds ragstore's tables, and what to do."""
    from ragstore.db import migrations
    from ragstore.errors import StatementCancelledError

    held = migrations.lock_holders(db, wait_s or 0.0)
    return StatementCancelledError(
        f"{doing}: waited {wait_s:g}s for transactions that began before it, which a "
        f"concurrent index build waits for (sessions holding ragstore's tables: {held}); "
        "the field's indexes are not changed (an index left half-built is rebuilt by the "
        "next try): retry once they have ended (a backup's pg_dump ends with the backup, "
        "a bulk import with the import), or run `ragstore db index-field`, which waits"
    )


@contextmanager
def _one_at_a_time(
    conn: Any, wait_s: float | None = None, gave_up: Callable[[], RagstoreError] | None = None
) -> Iterator[None]:
    """Hold the declarations' session advisory lock for the block, polling for it (see the
    module docstring); the server releases it if the connection dies. With ``wait_s``,
    ``gave_up()`` is raised once it has polled that long (the declaration holding it may
    itself be waiting for a backup)."""
    deadline = None if wait_s is None else time.monotonic() + wait_s
    while not conn.execute("SELECT pg_try_advisory_lock(%s)", (DECLARE_LOCK,)).fetchone()[0]:
        if deadline is not None and gave_up is not None and time.monotonic() > deadline:
            raise gave_up()
        time.sleep(LOCK_POLL_S)
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (DECLARE_LOCK,))


@contextmanager
def _reporting_waits(
    db: Database, pid: int, on_wait: Callable[[list[Blocker]], None] | None
) -> Iterator[None]:
    """Watch backend ``pid`` from a connection of its own while the block runs, and call
    ``on_wait`` with the transactions blocking it, the first time there are any after
    :data:`WAIT_NOTICE_S`. Only a notice: a failure to watch is logged and the build goes
    on."""
    if on_wait is None:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        try:
            with db.connect(autocommit=True) as conn:
                while not done.wait(WAIT_NOTICE_S):
                    rows = conn.execute(
                        "SELECT pid, xact_start, state, left(query, 80) FROM pg_stat_activity"
                        " WHERE pid = ANY(pg_blocking_pids(%s)) ORDER BY xact_start, pid",
                        (pid,),
                    ).fetchall()
                    if rows:
                        on_wait([_blocker(r) for r in rows])
                        return
        except (psycopg.Error, RagstoreError) as exc:  # a notice: the build itself goes on
            log.debug("cannot watch the index build's waits: %s", exc)

    watcher = threading.Thread(target=watch, name="ragstore-index-wait", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join(timeout=5)


def listed(db: Database) -> list[FieldIndex]:
    """The indexed fields of ``db`` (:func:`indexed` on a connection of its own)."""
    with db.connect(autocommit=True) as conn, translated("listing the indexed fields"):
        return indexed(conn)


def indexed(conn: Any) -> list[FieldIndex]:
    """The fields whose two indexes are both valid, by field and kind."""
    found, _ = _ours(conn)
    full = [i for i, tables in found.items() if len(tables) == len(_TABLES)]
    return sorted(full, key=lambda i: (i.keys, i.kind))


def broken(conn: Any) -> tuple[list[FieldIndex], list[str]]:
    """What ``ragstore db check`` reports: the fields with one index missing or invalid (a
    build that failed or was cancelled, a hand-made drop), and the names of indexes of
    ours that name no field (a build stopped before its label): search uses neither."""
    found, unlabelled = _ours(conn)
    partial = [i for i, tables in found.items() if len(tables) < len(_TABLES)]
    return sorted(partial, key=lambda i: (i.keys, i.kind)), unlabelled


def _ours(conn: Any) -> tuple[dict[FieldIndex, set[str]], list[str]]:
    """Each labelled field with the tables its valid indexes are on (none, where all its
    indexes are invalid), and the names of our indexes with no label."""
    rows = conn.execute(
        "SELECT c.relname, obj_description(c.oid, 'pg_class'), t.relname, i.indisvalid"
        " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_class t ON t.oid = i.indrelid"
        " WHERE c.relname LIKE %s AND pg_table_is_visible(c.oid) AND t.relname = ANY(%s)"
        # one being built now is invalid and unlabelled until its build ends: not broken
        " AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p"
        " WHERE p.index_relid = c.oid)",
        (PREFIX.replace("_", r"\_") + "%", list(_TABLES.values())),
    ).fetchall()
    found: dict[FieldIndex, set[str]] = {}
    unlabelled: list[str] = []
    for name, comment, table, valid in rows:
        index = _labelled(comment)
        if index is None or index.name(table) != name:
            unlabelled.append(name)
            continue
        tables = found.setdefault(index, set())
        if valid:
            tables.add(table)
    return found, sorted(unlabelled)


def drop_named(conn: Any, names: list[str]) -> None:
    """Drop our indexes by name (``conn`` in autocommit): those that name no field."""
    for name in names:
        if name.startswith(PREFIX):
            conn.execute(
                sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name))
            )
    _changed()


def _labelled(comment: str | None) -> FieldIndex | None:
    """The field an index's comment names, if it is one :func:`add` wrote."""
    try:
        meta = json.loads(comment or "")
        index = FieldIndex(tuple(meta["field"]), meta["kind"])
    except (ValueError, KeyError, TypeError):
        return None
    return index if index.kind in KINDS else None
