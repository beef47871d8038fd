"""SQL for embedding spaces beyond the active one: list, backfill, switch, retire, drop.

A space is a collection paired with a model and its own ``emb_<id>`` table. A collection
has one ``active`` space (the one searched), at most one ``building`` space (being
backfilled by ``ragstore models migrate``, written to by ingest as well) and any number of
``retired`` spaces (kept for an instant rollback until pruned).

Concurrency: the collection row is the lock. Every document write takes it ``FOR SHARE``
(``ragstore.db.documents``); a switch of the active space takes it ``FOR UPDATE``, so it waits
for writes in flight and no write can land between its last completeness check and the
switch. Functions run in the caller's transaction and never commit.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from ragstore.db import changes
from ragstore.db.models import MODEL_COLS, spec_from_row
from ragstore.errors import ConflictError, InputError, RagstoreError
from ragstore.models import ModelSpec

Conn = psycopg.Connection[Any]
log = logging.getLogger("ragstore.db")

# the one map from a model's distance to pgvector: index operator class and query operator
HALF_DISTANCE_OPS = {"cosine": "halfvec_cosine_ops", "l2": "halfvec_l2_ops", "ip": "halfvec_ip_ops"}
OPERATORS = {"cosine": "<=>", "l2": "<->", "ip": "<#>"}

# Every space keeps its vectors in full precision and indexes them over their
# half-precision cast (revision 0028), pgvector's recipe for smaller indexes: the HNSW
# index orders candidates by the half-precision distance, each row returned carries its
# full-precision one, and the search re-sorts by that. At 100k chunks of 384 dimensions
# the index is 43% smaller and builds 7-17% faster, at the same recall@10 against exact
# search and the same query time (docs/benchmarks.md). It also lets a space reach the
# 4,000 dimensions pgvector's HNSW takes in half precision (2,000 in full): OpenAI's
# text-embedding-3-large has 3,072. A value must fit half precision (±65,504) to be
# indexed: ``check_indexable`` refuses one that does not before anything is written.
HALFVEC_MAX_DIMENSIONS = 4000
HALFVEC_MAX_VALUE = 65504.0
# half precision's smallest normal value: a vector whose values are all below it is kept by
# the HNSW index as subnormals or zeros, its direction coarse or gone (cosine has nothing to
# rank it by)
HALFVEC_SMALLEST_NORMAL = 2.0**-14
# a value of this magnitude or less is zero in half precision (half the smallest subnormal,
# 2**-24, rounds to even: to zero)
HALFVEC_ZERO = 2.0**-25


def without_direction(vectors: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """For each row of ``vectors`` (a single vector is one row): whether every value is
    zero in half precision (:data:`HALFVEC_ZERO` or less in magnitude), an all-zero vector
    included. The index keeps such a vector as zeros, so its cosine distance to every
    query is NaN: stored in a cosine space, it is never found. (Values between that and
    :data:`HALFVEC_SMALLEST_NORMAL` are kept as subnormals: coarse, but with a direction,
    and found.) The one check ``add_texts`` refuses such a vector by and ``ragstore
    import`` counts it by, both where the space ranks by cosine."""
    tops = np.abs(np.atleast_2d(np.asarray(vectors, dtype=np.float32))).max(axis=1, initial=0.0)
    return np.asarray(tops <= HALFVEC_ZERO)


def check_dimension(dimension: int, what: str) -> None:
    """Refuse a space no HNSW index can serve, before anything is written or embedded."""
    if dimension > HALFVEC_MAX_DIMENSIONS:
        raise InputError(
            f"{what}: {dimension} dimensions is over the {HALFVEC_MAX_DIMENSIONS:,} that "
            "pgvector's HNSW index takes (in half precision); pin the model with fewer "
            "dimensions (`ragstore models add --truncate-dim N` for a local model, or a "
            "model whose endpoint answers shorter vectors)"
        )


def indexed(value: sql.Composable, dimension: int) -> sql.Composable:
    """``value`` (the embedding column, or a query vector) as the space's HNSW index orders
    it: its half-precision cast."""
    return sql.SQL("({}::halfvec({}))").format(value, sql.Literal(dimension))


MODEL_FIX = (
    "pin the model with normalised vectors (`ragstore models add --normalize`, or an "
    "endpoint answering unit vectors) and ingest again"
)


def check_indexable(
    vectors: np.ndarray, what: str, fix: str = MODEL_FIX, error: type[RagstoreError] = InputError
) -> None:
    """Refuse vectors the half-precision index cannot take: ``what`` names them, ``fix``
    says what to do, ``error`` is raised (a model's answer is a ModelError, not input).

    PostgreSQL would refuse them itself, but only when the index is written, which for a
    bulk load is its last step, after every file was parsed and embedded."""
    if vectors.size == 0:
        return
    if not np.isfinite(vectors).all():
        raise error(f"{what}: NaN or infinite values, which no index can rank; {fix}")
    top = float(np.abs(vectors).max())
    if top > HALFVEC_MAX_VALUE:
        raise error(
            f"{what}: a value of {top:.6g} is beyond the ±{HALFVEC_MAX_VALUE:,.0f} the HNSW "
            f"index keeps in half precision; {fix}"
        )


def table_dimension(conn: Conn, table: str) -> int:
    """The dimension of a space's ``embedding`` column (pgvector keeps it as the typmod)."""
    row = conn.execute(
        "SELECT atttypmod FROM pg_attribute"
        " WHERE attrelid = to_regclass(quote_ident(%s)) AND attname = 'embedding'",
        (table,),
    ).fetchone()
    if row is None:
        raise InputError(f"embedding table {table!r} does not exist")
    return int(row[0])


@dataclass(frozen=True)
class Space:
    id: int
    collection_id: int
    table: str
    status: str  # building | active | retired
    model_id: int
    model: ModelSpec
    created_at: datetime
    activated_at: datetime | None


_SPACE_SELECT = (
    "SELECT s.id, s.collection_id, s.table_name, s.status, s.model_id, s.created_at,"
    f" s.activated_at, {MODEL_COLS}"
    " FROM embedding_spaces s JOIN embedding_models m ON m.id = s.model_id"
)


def _space(row: Sequence[Any]) -> Space:
    return Space(
        int(row[0]),
        int(row[1]),
        row[2],
        row[3],
        int(row[4]),
        spec_from_row(row[7:]),
        row[5],
        row[6],
    )


def list_spaces(conn: Conn, collection_id: int) -> list[Space]:
    """Every space of a collection, oldest first."""
    rows = conn.execute(
        _SPACE_SELECT + " WHERE s.collection_id = %s ORDER BY s.id", (collection_id,)
    ).fetchall()
    return [_space(r) for r in rows]


def get_space(conn: Conn, space_id: int) -> Space | None:
    row = conn.execute(_SPACE_SELECT + " WHERE s.id = %s", (space_id,)).fetchone()
    return _space(row) if row else None


def building_spaces(conn: Conn, collection_id: int) -> list[Space]:
    rows = conn.execute(
        _SPACE_SELECT + " WHERE s.collection_id = %s AND s.status = 'building' ORDER BY s.id",
        (collection_id,),
    ).fetchall()
    return [_space(r) for r in rows]


def lock_collection(conn: Conn, collection_id: int) -> int | None:
    """Lock the collection row for a switch (writes hold it shared); its active space."""
    row = conn.execute(
        "SELECT active_space_id FROM collections WHERE id = %s FOR UPDATE", (collection_id,)
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def set_status(conn: Conn, space_id: int, status: str) -> None:
    conn.execute("UPDATE embedding_spaces SET status = %s WHERE id = %s", (status, space_id))


def activate(conn: Conn, collection_id: int, new_space_id: int, old_space_id: int) -> None:
    """Make ``new`` the searched space and retire ``old`` (caller holds the exclusive lock)."""
    conn.execute("UPDATE embedding_spaces SET status = 'retired' WHERE id = %s", (old_space_id,))
    conn.execute(
        "UPDATE embedding_spaces SET status = 'active', activated_at = now() WHERE id = %s",
        (new_space_id,),
    )
    conn.execute(
        "UPDATE collections SET active_space_id = %s WHERE id = %s", (new_space_id, collection_id)
    )
    changes.collections_changed(conn)


def create_space(
    conn: Conn, collection_id: int, model_id: int, spec: ModelSpec, *, index: bool = True
) -> tuple[int, str]:
    """A new embedding space: its row and its ``emb_<id>`` table (with its HNSW index
    unless ``index`` is False: a backfill or bulk load builds it once at the end).

    The table has no foreign key to ``chunks``: a key would put triggers on ``chunks``,
    and creating it would wait for every transaction writing chunks (another collection's
    large load holds ``chunks`` for minutes). A chunk's vectors go with it by the statement
    trigger of revision 0026, and every writer of vectors holds their chunks
    (:func:`insert_vectors`)."""
    check_dimension(spec.dimension, f"model {spec.key}")
    row = conn.execute(
        "INSERT INTO embedding_spaces (collection_id, model_id, table_name)"
        " VALUES (%s, %s, 'emb_pending_' || gen_random_uuid()) RETURNING id",
        (collection_id, model_id),
    ).fetchone()
    assert row is not None
    space_id = int(row[0])
    table = f"emb_{space_id}"
    conn.execute("UPDATE embedding_spaces SET table_name = %s WHERE id = %s", (table, space_id))
    conn.execute(
        sql.SQL(
            "CREATE TABLE {t} (chunk_id bigint PRIMARY KEY, embedding vector({dim}) NOT NULL)"
        ).format(t=sql.Identifier(table), dim=sql.Literal(spec.dimension))
    )
    if index:
        ensure_index(conn, table, spec.distance)
    return space_id, table


def copy_vectors(conn: Conn, table: str, ids: Sequence[int], vectors: np.ndarray) -> None:
    """Binary COPY of (chunk id, vector) rows into ``table``: the one vector COPY there is,
    so the one place vectors are checked against what the index takes."""
    check_indexable(vectors, f"the vectors written to {table}")
    with conn.cursor().copy(
        sql.SQL("COPY {t} (chunk_id, embedding) FROM STDIN (FORMAT BINARY)").format(
            t=sql.Identifier(table)
        )
    ) as copy:
        copy.set_types(["int8", "vector"])
        for cid, vec in zip(ids, vectors, strict=True):
            copy.write_row((cid, vec))


def lock_for_load(conn: Conn, table: str) -> None:
    """Lock a space's table before deciding, from its emptiness, to drop its index for a
    bulk write: two loads that both read it first and then asked for the lock DROP INDEX
    takes deadlocked, and one of them failed. The second now waits for the first's
    decision (a short transaction for an ingest, the whole import for an import).

    SHARE ROW EXCLUSIVE is the weakest mode that conflicts with itself and with writers:
    searches (ACCESS SHARE) go on. It used to be ACCESS EXCLUSIVE, which an import into
    a collection that has rows held to its end, so the collection's searches waited for
    the whole import; a load that drops the index takes ACCESS EXCLUSIVE then, on an
    empty table."""
    conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(sql.Identifier(table)))


def drop_index(conn: Conn, table: str) -> None:
    """Drop a space's HNSW index: a bulk backfill then builds it once, at the end."""
    conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(f"{table}_hnsw")))


def build_workers() -> int:
    """Parallel maintenance workers for a bulk index build: one per spare core, at most 4."""
    return min(4, max(0, (os.cpu_count() or 1) - 1))


# Above this heap size an index build takes the workers it is given; below it
# PostgreSQL's own rule (about 8 MB of heap) would build alone. Two cores halve a
# 2,000-vector HNSW build already; a few hundred rows are not worth a worker's start.
FORCE_WORKERS_BYTES = 1 << 20
MIN_BUILD_MEMORY = 64 << 20


def ensure_index(
    conn: Conn, table: str, distance: str, *, memory: str | None = None, workers: int | None = None
) -> None:
    """The space's HNSW index, built now if a backfill or bulk load deferred it.

    ``memory`` (maintenance_work_mem) and ``workers`` (parallel maintenance workers) apply
    to this transaction only: an index built once over many rows is much faster with the
    graph in memory and several workers inserting into it. PostgreSQL gives a build no
    worker below about 8 MB of heap (5,000 384-d vectors), so ``workers`` is set on the
    table for the build (``parallel_workers``, reset after it) once the heap passes
    ``FORCE_WORKERS_BYTES``. ``memory`` is a ceiling: a build takes four times the table
    (at least ``MIN_BUILD_MEMORY``), since a parallel build maps all it is given as shared
    memory (256 MB of it cost a 2,000-vector build a fifth of its time).
    """
    heap = _heap_bytes(conn, table)
    if memory is not None:
        # no more than the graph needs (under 4x the table from 64 dimensions up; at least
        # 64 MB, the least two participants are given): a parallel build maps it all
        conn.execute(
            "SELECT set_config('maintenance_work_mem', (least(pg_size_bytes(%s),"
            " greatest(%s, 4 * %s::bigint)) / 1024)::bigint || 'kB', true)",
            (memory, MIN_BUILD_MEMORY, heap),
        )
    if workers is not None:
        conn.execute(
            sql.SQL("SET LOCAL max_parallel_maintenance_workers = {}").format(sql.Literal(workers))
        )
    force = bool(workers) and heap >= FORCE_WORKERS_BYTES and not has_index(conn, table)
    t = sql.Identifier(table)
    if force:
        conn.execute(
            sql.SQL("ALTER TABLE {t} SET (parallel_workers = {n})").format(
                t=t, n=sql.Literal(workers)
            )
        )
    dimension = table_dimension(conn, table)
    create = sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING hnsw ({e} {ops})").format(
        i=sql.Identifier(f"{table}_hnsw"),
        t=t,
        e=indexed(sql.SQL("embedding"), dimension),
        ops=sql.SQL(HALF_DISTANCE_OPS[distance]),
    )
    try:
        with conn.transaction():  # a savepoint: a failed parallel build leaves the rest
            conn.execute(create)
    except (psycopg.errors.DiskFull, psycopg.errors.OutOfMemory) as exc:
        if not _shared_memory_short(exc):
            raise
        log.warning(
            "the server's shared memory cannot hold a parallel index build of %s (%s); "
            "building it in one process instead, which is slower. Give the database's "
            "container more shared memory (docker run --shm-size=2g, or shm_size: 2g in "
            "compose) or lower RAGSTORE_INDEX_BUILD_MEMORY",
            table,
            exc.diag.message_primary or exc,
        )
        # a build without workers keeps its graph in the backend's own memory
        conn.execute("SET LOCAL max_parallel_maintenance_workers = 0")
        conn.execute(create)
    if force:
        conn.execute(sql.SQL("ALTER TABLE {t} RESET (parallel_workers)").format(t=t))


# The server source files that raise a dynamic shared memory segment's failures ("could
# not resize shared memory segment", "too many dynamic shared memory segments")
_DSM_SOURCES = frozenset({"dsm_impl.c", "dsm.c"})


def _shared_memory_short(exc: psycopg.Error) -> bool:
    """Whether a build failed for want of dynamic shared memory: a parallel HNSW build maps
    its whole graph (up to maintenance_work_mem) as one segment under /dev/shm, which is
    64 MB in a Docker container unless it is given more.

    Its SQLSTATE is a full disk's (53100, for ENOSPC under /dev/shm) or a backend out of
    memory's (53200), whose builds would fail again in one process, so the server source
    file it was raised in (the diagnostic field ``F``, sent untranslated) tells them
    apart: the message is in the server's ``lc_messages``, and a German server's
    "konnte Größe des Shared-Memory-Segments ... nicht ändern" was taken for a full disk
    and failed the build. Only an error without that field (a proxy that drops it) is
    told by PostgreSQL's English text."""
    source = exc.diag.source_file
    if source:
        return source.rsplit("/", 1)[-1] in _DSM_SOURCES
    return "shared memory" in (exc.diag.message_primary or str(exc))


def _heap_bytes(conn: Conn, table: str) -> int:
    """The table with its TOAST (vectors of over 2,000 dimensions are stored there)."""
    row = conn.execute("SELECT pg_table_size(to_regclass(quote_ident(%s)))", (table,)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def table_gone(conn: Conn, table: str) -> bool:
    """Whether the space's table ``table`` is gone: its collection deleted, or its model
    rolled back and pruned, while the caller worked on it."""
    row = conn.execute("SELECT to_regclass(quote_ident(%s)) IS NULL", (table,)).fetchone()
    return row is not None and bool(row[0])


def has_index(conn: Conn, table: str) -> bool:
    return _exists(conn, f"{table}_hnsw")


def is_empty(conn: Conn, table: str) -> bool:
    """Whether a space holds no vector yet (a first load may defer its index)."""
    row = conn.execute(
        sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))
    ).fetchone()
    return bool(row and row[0])


def load_table(table: str) -> str:
    """Where a bulk load stages the vectors of ``table`` (see :func:`attach_load_table`)."""
    return f"ragstore_load_{table}"


def create_load_table(conn: Conn, table: str) -> str:
    """A bulk load's staging table for ``table``'s vectors: its columns and primary key,
    and no HNSW index yet. The leftover of a load killed between its two commits goes
    first."""
    load = load_table(table)
    drop_load_table(conn, table)
    staged = sql.Identifier(load)
    conn.execute(
        sql.SQL("CREATE TABLE {l} (LIKE {t} INCLUDING ALL EXCLUDING INDEXES)").format(
            l=staged, t=sql.Identifier(table)
        )
    )
    conn.execute(sql.SQL("ALTER TABLE {l} ADD PRIMARY KEY (chunk_id)").format(l=staged))
    return load


def drop_load_table(conn: Conn, table: str) -> None:
    """A staged table left behind."""
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(load_table(table))))


# Advisory-lock key space of staged tables: a bulk load holds (STAGED_LOCKS,
# hashtext(space table)) at session level from before it creates its staged table until
# its transaction has ended, so that ``db check`` tells a running load's table from a
# killed one's (``ingest.staging.StagedLock``, ``integrity.leftover_tables``).
STAGED_LOCKS = 0x5253_544C  # "RSTL"


def lock_staged(conn: Conn, table: str) -> None:
    """Take the session lock on ``table``'s staged table, waiting for it (under the
    caller's ``lock_timeout``): a repair or a failed load's clean-up holds it for the
    instant of its drop. It outlives the transaction: :func:`unlock_staged` releases it."""
    conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (STAGED_LOCKS, table))


def unlock_staged(conn: Conn, table: str) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (STAGED_LOCKS, table))


def try_lock_staged(conn: Conn, table: str) -> bool:
    """Take the lock on ``table``'s staged table for the caller's transaction if no load
    holds it; never waits. Held, the staged table is no running load's to keep."""
    row = conn.execute(
        "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))", (STAGED_LOCKS, table)
    ).fetchone()
    return bool(row and row[0])


def staged_held(conn: Conn, table: str) -> bool:
    """Whether another session holds the lock on ``table``'s staged table (a running
    load does), read from ``pg_locks`` without taking it."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND classid::bigint = %s AND objid::bigint = hashtext(%s)::bigint & 4294967295"
        " AND objsubid = 2 AND pid <> pg_backend_pid())",
        (STAGED_LOCKS, table),
    ).fetchone()
    return bool(row and row[0])


# How long the swap below waits for its locks (the load already holds the space's table;
# this bounds a wait nothing should cause) before the slower way round.
ATTACH_LOCK_TIMEOUT = "5s"


@contextmanager
def _waiting_at_most(conn: Conn, timeout: str) -> Iterator[None]:
    """A savepoint whose statements wait at most ``timeout`` for a lock (LockNotAvailable
    past it); the session's own lock timeout applies again after it."""
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(timeout)))
        yield
        conn.execute("SET LOCAL lock_timeout TO DEFAULT")


def attach_load_table(conn: Conn, table: str, *, replacing: bool = False) -> bool:
    """Put a bulk load's staged vectors (committed, with their index, by another
    connection) in place of the space's table, in the load's own transaction, so readers
    see the load's chunks and vectors together.

    The space's table is empty (a first load starts only on an empty space and holds its
    table locked: :func:`lock_for_load`), or, ``replacing``, the staged table holds its
    rows as well (:func:`carry_over`; the load holds every source lock of the collection,
    so no other writer added any since). It is dropped and the staged table takes its
    name and its indexes' names, less the rows whose chunk was not stored. Space tables
    have no foreign key (revision 0026), so the swap locks no table but these two, which
    the load holds already: searches of other collections and other writers never wait
    for it, and a search of this one that waited for the load reads the new table once
    the load commits (PostgreSQL looks the name up again after a lock wait). Returns True.

    Where the lock is not had within ``ATTACH_LOCK_TIMEOUT`` or the wait would deadlock,
    or the space's table is not empty after all, the rows are copied into the space's own
    table instead, the staged table is dropped and False is returned: the caller then
    builds that table's index.
    """
    load = load_table(table)
    t, staged = sql.Identifier(table), sql.Identifier(load)
    try:
        with _waiting_at_most(conn, ATTACH_LOCK_TIMEOUT):
            conn.execute(sql.SQL("LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE").format(t=t))
            if not replacing and not is_empty(conn, table):
                raise _NotSwapped(f"{table} is not empty")
            conn.execute(
                sql.SQL(
                    "DELETE FROM {l} s WHERE NOT EXISTS"
                    " (SELECT 1 FROM chunks c WHERE c.id = s.chunk_id)"
                ).format(l=staged)
            )
            conn.execute(sql.SQL("DROP TABLE {t}").format(t=t))
            _rename(conn, load, table)
    except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected, _NotSwapped) as exc:
        why = exc.diag.message_primary if isinstance(exc, psycopg.Error) else None
        log.warning(
            "bulk load: %s could not take the place of %s (%s); copying its rows instead",
            load,
            table,
            why or exc,
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {t} (chunk_id, embedding) SELECT s.chunk_id, s.embedding FROM {l} s"
                " WHERE EXISTS (SELECT 1 FROM chunks c WHERE c.id = s.chunk_id)"
                " AND NOT EXISTS (SELECT 1 FROM {t} e WHERE e.chunk_id = s.chunk_id)"
            ).format(t=t, l=staged)
        )
        conn.execute(sql.SQL("DROP TABLE {l}").format(l=staged))
        return False
    return True


def chunk_ids(conn: Conn, table: str) -> list[int]:
    """The chunk ids of a space's vectors, as this transaction sees them."""
    rows = conn.execute(sql.SQL("SELECT chunk_id FROM {}").format(sql.Identifier(table)))
    return [int(r[0]) for r in rows]


class _Every(enum.Enum):
    VECTOR = "every vector"


EVERY_VECTOR: Final = _Every.VECTOR
"""What :func:`carry_over` copies for a load that replaces no chunk (an import): the whole
space, without sending its ids back and forth."""

Carried = Sequence[int] | Literal[_Every.VECTOR]


def carry_over(conn: Conn, table: str, ids: Carried) -> int:
    """Copy the space's vectors of chunks ``ids`` into its staged table (a bulk load into
    a collection that holds chunks already: the index built there then covers the old
    vectors and the new). ``ids`` come from the load's own transaction, which has deleted
    the chunks it replaced; this connection, another one, still sees those.
    :data:`EVERY_VECTOR`: the whole space, for a load that replaces none. Returns the rows
    copied."""
    which, params = sql.SQL(""), None
    if ids is not EVERY_VECTOR:
        which, params = sql.SQL(" WHERE e.chunk_id = ANY(%s::bigint[])"), (list(ids),)
    cur = conn.execute(
        sql.SQL(
            "INSERT INTO {l} (chunk_id, embedding) SELECT e.chunk_id, e.embedding FROM {t} e{w}"
        ).format(l=sql.Identifier(load_table(table)), t=sql.Identifier(table), w=which),
        params,
    )
    return cur.rowcount


def _rename(conn: Conn, table: str, to: str) -> None:
    """A table and its indexes (whose names start with the table's) renamed to ``to``."""
    conn.execute(
        sql.SQL("ALTER TABLE {t} RENAME TO {n}").format(
            t=sql.Identifier(table), n=sql.Identifier(to)
        )
    )
    for (name,) in conn.execute(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = to_regclass(quote_ident(%s))",
        (to,),
    ).fetchall():
        if str(name).startswith(table):
            conn.execute(
                sql.SQL("ALTER INDEX {i} RENAME TO {n}").format(
                    i=sql.Identifier(str(name)), n=sql.Identifier(to + str(name)[len(table) :])
                )
            )


class _NotSwapped(Exception):
    """The space's table cannot simply be replaced by the staged one."""


def _exists(conn: Conn, relation: str) -> bool:
    row = conn.execute("SELECT to_regclass(quote_ident(%s)) IS NOT NULL", (relation,)).fetchone()
    return bool(row and row[0])


def drop_space(conn: Conn, space: Space) -> None:
    drop_tables(conn, [space.table], f"space {space.table} was not dropped")
    conn.execute("DELETE FROM embedding_spaces WHERE id = %s", (space.id,))


# How long dropping vector tables waits for their locks: searches of the collection hold
# them for milliseconds, a load or a model migration's batch of the same collection for
# longer (a large first load until it ends, minutes later); past this the drop gives up
# (and searches of the collection that queued behind it go on).
DROP_TABLES_LOCK_TIMEOUT = "3s"


def drop_tables(conn: Conn, tables: Sequence[str], what: str) -> None:
    """Drop vector tables and what bulk loads left of them (a staged table), in a
    savepoint that waits at most ``DROP_TABLES_LOCK_TIMEOUT`` for each; past that
    ConflictError (``what`` says what was not done, and the caller's transaction should
    roll back with it). Only
    these tables are locked: space tables have no foreign key (revision 0026)."""
    try:
        with _waiting_at_most(conn, DROP_TABLES_LOCK_TIMEOUT):
            for table in tables:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
                drop_load_table(conn, table)
    except psycopg.errors.LockNotAvailable:
        raise ConflictError(
            f"{what}: another transaction has held its vector tables for over "
            f"{DROP_TABLES_LOCK_TIMEOUT} (a load or a model migration's batch of the "
            "collection, or a long search of it); retry when that has finished"
        ) from None


def count_vectors(conn: Conn, table: str) -> int:
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
    got = row.fetchone()
    return int(got[0]) if got else 0


def max_chunk_id(conn: Conn, table: str) -> int:
    """The highest chunk id with a vector in ``table`` (0 when empty): chunks stored
    later have higher ones."""
    row = conn.execute(
        sql.SQL("SELECT coalesce(max(chunk_id), 0) FROM {}").format(sql.Identifier(table))
    ).fetchone()
    return int(row[0]) if row else 0


def count_vectors_after(conn: Conn, table: str, after_id: int, excluding: Sequence[int]) -> int:
    """Vectors in ``table`` of chunks with an id above ``after_id``, those of
    ``excluding`` left out."""
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE chunk_id > %s AND NOT chunk_id = ANY(%s)").format(
            sql.Identifier(table)
        ),
        (after_id, list(excluding)),
    ).fetchone()
    return int(row[0]) if row else 0


def count_missing(conn: Conn, source_table: str, target_table: str) -> int:
    """Chunks with a vector in ``source`` and none yet in ``target``."""
    row = conn.execute(
        sql.SQL(
            "SELECT count(*) FROM {s} a WHERE NOT EXISTS"
            " (SELECT 1 FROM {t} b WHERE b.chunk_id = a.chunk_id)"
        ).format(s=sql.Identifier(source_table), t=sql.Identifier(target_table))
    ).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class PendingChunk:
    id: int
    text: str
    context: str  # the section path as the model read it at ingest (chunks.context)

    @property
    def embed_text(self) -> str:
        """Exactly what ingest embedded: ``models.Chunk.embed_text`` of the stored row."""
        return f"{self.context}\n{self.text}" if self.context else self.text


def missing_batch(
    conn: Conn, source_table: str, target_table: str, after_id: int, limit: int
) -> list[PendingChunk]:
    """The next ``limit`` chunks (by id, after ``after_id``) in source but not in target."""
    rows = conn.execute(
        sql.SQL(
            "SELECT c.id, c.text, c.context FROM {s} a JOIN chunks c ON c.id = a.chunk_id"
            " WHERE a.chunk_id > %s AND NOT EXISTS"
            " (SELECT 1 FROM {t} b WHERE b.chunk_id = a.chunk_id)"
            " ORDER BY a.chunk_id LIMIT %s"
        ).format(s=sql.Identifier(source_table), t=sql.Identifier(target_table)),
        (after_id, limit),
    ).fetchall()
    return [PendingChunk(int(r[0]), r[1], r[2]) for r in rows]


def insert_vectors(conn: Conn, table: str, ids: Sequence[int], vectors: np.ndarray) -> int:
    """Add vectors for chunks that still exist and have none yet; returns rows added.

    Binary COPY into a temporary table, then one INSERT that skips chunks deleted or
    embedded meanwhile (a document re-ingested during a backfill), so a batch never fails
    on a race with ingest. It reads those chunks ``FOR KEY SHARE`` (what a foreign key's
    check would lock): a delete of one of them in flight is waited for and its chunk
    skipped, and a delete that comes later waits for this transaction, then removes the
    vector with the chunk (revision 0026's trigger), so no vector outlives its chunk.
    """
    if not ids:
        return 0
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS ragstore_backfill"
        " (chunk_id bigint, embedding vector) ON COMMIT DELETE ROWS"
    )
    copy_vectors(conn, "ragstore_backfill", ids, vectors)
    cur = conn.execute(
        sql.SQL(
            "INSERT INTO {t} (chunk_id, embedding) SELECT s.chunk_id, s.embedding"
            " FROM ragstore_backfill s JOIN chunks c ON c.id = s.chunk_id"
            " FOR KEY SHARE OF c ON CONFLICT (chunk_id) DO NOTHING"
        ).format(t=sql.Identifier(table))
    )
    conn.execute("TRUNCATE ragstore_backfill")
    return cur.rowcount


MIGRATION_LOCKS = 0x5247_4D4D  # "RGMM": advisory-lock key space of model migrations


def try_migration_lock(conn: Conn, collection_id: int) -> bool:
    """Take the collection's session-level migration lock if free (one migrate, rollback or
    prune at a time; released when the connection closes, also when the process dies)."""
    row = conn.execute(
        "SELECT pg_try_advisory_lock(%s, %s)", (MIGRATION_LOCKS, collection_id)
    ).fetchone()
    return bool(row and row[0])


def holds_migration_lock(conn: Conn, collection_id: int) -> bool:
    """Whether this connection's session still holds the collection's migration lock.

    Asked on the lock's own connection: one that was ended (``idle_session_timeout``, a
    network drop, ``pg_terminate_backend``) fails here, and the lock went with it."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 2"
        " AND pid = pg_backend_pid())",
        (MIGRATION_LOCKS, collection_id),
    ).fetchone()
    return bool(row and row[0])


def migration_lock_holders(conn: Conn) -> list[tuple[int, str]]:
    """Who holds a collection's model-migration lock now (a ``models migrate``, rollback,
    prune or cancel), other than this session: (collection id, the session in words).
    A look, taking nothing; read from pg_locks, so it answers in a database without
    ragstore's tables too."""
    rows = conn.execute(
        "SELECT l.objid::bigint, l.pid, coalesce(nullif(a.application_name, ''), 'no name'),"
        " a.state FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
        " AND l.classid::bigint = %s AND l.pid <> pg_backend_pid()"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " ORDER BY l.objid, l.pid",
        (MIGRATION_LOCKS,),
    ).fetchall()
    return [(int(cid), f"pid {pid} ({app}, {state or 'open'})") for cid, pid, app, state in rows]


def sample_texts(conn: Conn, table: str, n: int, count: int) -> list[str]:
    """``n`` chunk texts spread evenly over the ``count`` vectors of a space, by chunk id."""
    step = max(1, count // max(n, 1))
    rows = conn.execute(
        sql.SQL(
            "SELECT c.text FROM (SELECT chunk_id, row_number() OVER (ORDER BY chunk_id) AS r"
            " FROM {t}) e JOIN chunks c ON c.id = e.chunk_id WHERE (e.r - 1) %% %s = 0"
            " ORDER BY e.r LIMIT %s"
        ).format(t=sql.Identifier(table)),
        (step, n),
    ).fetchall()
    return [str(r[0]) for r in rows]


def nearest_texts(conn: Conn, table: str, distance: str, vector: np.ndarray, k: int) -> list[str]:
    """Texts of the ``k`` chunks nearest ``vector`` in a space, through its HNSW index."""
    conn.execute("SET LOCAL hnsw.ef_search = 100")
    dimension = len(vector)  # the space's, as the query vector is: no catalog round trip
    rows = conn.execute(
        sql.SQL(
            "SELECT c.text FROM {t} e JOIN chunks c ON c.id = e.chunk_id"
            " ORDER BY {e} {op} {q} LIMIT %(k)s"
        ).format(
            t=sql.Identifier(table),
            e=indexed(sql.SQL("e.embedding"), dimension),
            op=sql.SQL(OPERATORS[distance]),
            q=indexed(sql.SQL("%(q)s"), dimension),
        ),
        {"q": vector, "k": k},
    ).fetchall()
    return [str(r[0]) for r in rows]


VECTOR_BLOCK = 10_000  # rows per block of vector_blocks_except


def vector_blocks_except(
    conn: Conn, table: str, chunk_ids: Sequence[int], rows: int | None = None
) -> Iterator[tuple[npt.NDArray[np.int64], np.ndarray]]:
    """(chunk ids, vectors) of a space, leaving out ``chunk_ids``, in blocks of at most
    ``rows`` (default ``VECTOR_BLOCK``) through a server-side cursor, in bounded memory
    (an import's verification of a large collection, which read them all at once before).
    Empty blocks are not yielded."""
    rows = rows or VECTOR_BLOCK
    stmt = sql.SQL(
        "SELECT chunk_id, embedding FROM {t} WHERE NOT (chunk_id = ANY(%s::int8[]))"
    ).format(t=sql.Identifier(table))
    with conn.cursor(name="ragstore_vector_blocks", binary=True) as cur:
        cur.itersize = rows
        cur.execute(stmt, (list(chunk_ids),))
        while batch := cur.fetchmany(rows):
            yield (
                np.fromiter((r[0] for r in batch), dtype=np.int64, count=len(batch)),
                np.stack([np.asarray(r[1].to_numpy(), dtype=np.float32) for r in batch]),
            )


def index_knn(
    conn: Conn, table: str, distance: str, vector: np.ndarray, k: int, ef_search: int
) -> list[tuple[int, float]]:
    """(chunk id, distance) of the ``k`` nearest through the HNSW index (sequential scans
    off for the transaction, so a small table is not answered exactly instead)."""
    conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(ef_search)))
    conn.execute("SET LOCAL enable_seqscan = off")
    op = sql.SQL(OPERATORS[distance])
    dimension = len(vector)  # the space's, as the query vector is: no catalog round trip
    rows = conn.execute(
        sql.SQL(
            "SELECT chunk_id, embedding {op} %(q)s FROM {t} ORDER BY {e} {op} {q} LIMIT %(k)s"
        ).format(
            op=op,
            t=sql.Identifier(table),
            e=indexed(sql.SQL("embedding"), dimension),
            q=indexed(sql.SQL("%(q)s"), dimension),
        ),
        {"q": vector, "k": k},
    ).fetchall()
    # a wide space's index orders by half-precision distance: the full one decides
    return sorted(((int(r[0]), float(r[1])) for r in rows), key=lambda r: r[1])
