"""SQL of ``ragstore db check``: what a collection's rows should agree on, and the repairs.

Every figure a check compares is written in one transaction with what it describes (a
chunk with its vectors, its BM25 statistics by trigger or by a bulk load's recount), so
read in one snapshot (:func:`snapshot`) they agree unless something went wrong: a bug, a
hand-made change, a partial restore. Functions run in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ragstore.db import spaces
from ragstore.db.spaces import PendingChunk

Conn = psycopg.Connection[Any]

# the chunks that have vectors: every chunk but headings (``models.Chunk.embeddable``)
_EMBEDDABLE = "c.chunk_type <> 'heading'"


# How long a check waits for a collection's tables: a bulk load holds its space's table
# until it ends (minutes); the check then reports the collection busy instead.
CHECK_LOCK_TIMEOUT = "2s"


def snapshot(conn: Conn) -> None:
    """Make the caller's transaction read one snapshot (counts taken by several statements
    then agree even while ingests commit) and wait at most ``CHECK_LOCK_TIMEOUT`` for a
    table (LockNotAvailable past it)."""
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(CHECK_LOCK_TIMEOUT)))


def lock_space(conn: Conn, table: str) -> None:
    """Lock a collection's active space table (ACCESS SHARE) inside :func:`snapshot`'s
    transaction before its first query takes the snapshot (neither ``SET``, ``SAVEPOINT``
    nor ``LOCK`` takes one); a table gone meanwhile is left to the reads that follow.

    A rebuilding bulk load swaps a new table in under the space's name, its rows written
    by another transaction just before (``spaces.attach_load_table``). A snapshot taken
    before those rows were written saw none of them in the new table: every chunk was
    counted without a vector. Locked first, the check waits for a swap in progress
    (LockNotAvailable past ``CHECK_LOCK_TIMEOUT``: busy) or holds the old table whole."""
    try:
        with conn.transaction():  # a savepoint: a missing table fails it alone
            conn.execute(
                sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(sql.Identifier(table))
            )
    except psycopg.errors.UndefinedTable:
        pass


def collection_ids(conn: Conn) -> list[int]:
    """Every collection row, shadows (other chunk sets kept for a rollback) included."""
    return [int(r[0]) for r in conn.execute("SELECT id FROM collections ORDER BY id")]


def never_used(conn: Conn, collection_id: int, name: str) -> bool:
    """Whether the collection is as a write that made it left it before storing anything:
    no document, no other embedding space or shadow (no model migration), and no ingest
    job of its name, finished or not. What an ingest killed outright (SIGKILL, the
    out-of-memory killer) after it created its collection leaves behind: the removal of
    a collection its write left empty (``ingest.service.created_for_this_write``) runs
    only where an error reaches Python."""
    row = conn.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM documents WHERE collection_id = %(c)s)"
        " AND NOT EXISTS (SELECT 1 FROM collections WHERE shadow_of = %(c)s)"
        " AND (SELECT count(*) FROM embedding_spaces WHERE collection_id = %(c)s) <= 1"
        " AND NOT EXISTS (SELECT 1 FROM ingest_jobs WHERE collection = %(n)s)",
        {"c": collection_id, "n": name},
    ).fetchone()
    return bool(row and row[0])


def chunk_count(conn: Conn, collection_id: int) -> tuple[int, int]:
    """The collection's chunks, and how many of them are headings (which get no vector:
    a check's header names both, or its count read as that many vectors missing)."""
    row = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE c.chunk_type = 'heading')"
        " FROM chunks c WHERE c.collection_id = %s",
        (collection_id,),
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def missing_vectors(conn: Conn, table: str, collection_id: int) -> int:
    """Chunks of the collection that have no vector in ``table``."""
    row = conn.execute(
        sql.SQL(
            "SELECT count(*) FROM chunks c WHERE c.collection_id = %s AND "
            + _EMBEDDABLE
            + " AND NOT EXISTS (SELECT 1 FROM {t} e WHERE e.chunk_id = c.id)"
        ).format(t=sql.Identifier(table)),
        (collection_id,),
    ).fetchone()
    return int(row[0]) if row else 0


def _stray_where(table: str) -> sql.Composed:
    return sql.SQL(
        "NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = {t}.chunk_id"
        " AND c.collection_id = %s AND " + _EMBEDDABLE + ")"
    ).format(t=sql.Identifier(table))


def stray_vectors(conn: Conn, table: str, collection_id: int) -> int:
    """Vectors in ``table`` whose chunk is gone, is a heading or belongs to another
    collection: none should exist, and an HNSW search would spend places on them."""
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {t} WHERE ").format(t=sql.Identifier(table))
        + _stray_where(table),
        (collection_id,),
    ).fetchone()
    return int(row[0]) if row else 0


def delete_stray_vectors(conn: Conn, table: str, collection_id: int) -> int:
    cur = conn.execute(
        sql.SQL("DELETE FROM {t} WHERE ").format(t=sql.Identifier(table)) + _stray_where(table),
        (collection_id,),
    )
    return cur.rowcount


def chunks_without_vectors(
    conn: Conn, table: str, collection_id: int, after_id: int, limit: int
) -> list[PendingChunk]:
    """The next ``limit`` chunks (by id, after ``after_id``) with no vector in ``table``,
    with what the model reads of them."""
    rows = conn.execute(
        sql.SQL(
            "SELECT c.id, c.text, c.context FROM chunks c WHERE c.collection_id = %s AND "
            + _EMBEDDABLE
            + " AND c.id > %s AND NOT EXISTS (SELECT 1 FROM {t} e WHERE e.chunk_id = c.id)"
            " ORDER BY c.id LIMIT %s"
        ).format(t=sql.Identifier(table)),
        (collection_id, after_id, limit),
    ).fetchall()
    return [PendingChunk(int(r[0]), r[1], r[2]) for r in rows]


@dataclass(frozen=True)
class Bm25Drift:
    """A collection's stored BM25 statistics against a recount from its chunks."""

    stored: tuple[int, int]  # (chunks, tokens) as stored
    counted: tuple[int, int]  # the same, recounted
    terms: int  # distinct lexemes in the recount
    terms_differing: int  # lexemes whose stored df differs from the recount, or missing

    @property
    def drifted(self) -> bool:
        return self.stored != self.counted or self.terms_differing > 0


def bm25_drift(conn: Conn, collection_id: int) -> Bm25Drift:
    """Recount what full-text ranking reads (chunk count, total length, each lexeme's
    document frequency) and compare it with what is stored. Reads every tsvector of the
    collection once: seconds per hundred thousand chunks."""
    row = conn.execute(
        "WITH s AS (SELECT chunks, tokens FROM bm25_collection_stats WHERE collection_id = %(c)s)"
        " SELECT coalesce((SELECT chunks FROM s), 0), coalesce((SELECT tokens FROM s), 0),"
        " count(*), coalesce(sum(c.tsv_length), 0) FROM chunks c"
        " WHERE c.collection_id = %(c)s AND " + _EMBEDDABLE,
        {"c": collection_id},
    ).fetchone()
    assert row is not None  # aggregates answer one row
    terms = conn.execute(
        "WITH counted AS (SELECT u.lexeme, count(*) AS df FROM chunks c"
        " CROSS JOIN LATERAL unnest(tsvector_to_array(c.tsv)) AS u(lexeme)"
        " WHERE c.collection_id = %(c)s AND " + _EMBEDDABLE + " GROUP BY u.lexeme),"
        " stored AS (SELECT lexeme, df FROM bm25_terms WHERE collection_id = %(c)s AND df > 0)"
        " SELECT (SELECT count(*) FROM counted),"
        " (SELECT count(*) FROM counted FULL JOIN stored USING (lexeme)"
        "  WHERE counted.df IS DISTINCT FROM stored.df)",
        {"c": collection_id},
    ).fetchone()
    assert terms is not None
    return Bm25Drift(
        (int(row[0]), int(row[1])), (int(row[2]), int(row[3])), int(terms[0]), int(terms[1])
    )


@dataclass(frozen=True)
class Leftover:
    table: str  # ragstore_load_emb_<id>
    space_table: str  # the emb_<id> it belongs to
    in_use: bool  # a bulk load of that space holds it now: not a leftover yet


_LEFTOVER_PREFIX = "ragstore_load_"


def leftover_tables(conn: Conn) -> list[Leftover]:
    """What bulk loads left: staged tables of loads killed between their two commits.

    A staged table is visible to this check only once its load's staging transaction has
    committed. Its load holds the staged table's session lock (``spaces.lock_staged``)
    from before it created it until its own transaction has ended, swap and all: a table
    whose lock is held is reported ``in_use`` and never dropped. Only the lock tells: the
    load's transaction holds the space's table in SHARE ROW EXCLUSIVE mode at most (an
    import; an ingest locks it in a short transaction of its own) until its swap, and a
    ``--repair`` landing between the load's two commits dropped its staged table, failing
    a load of hours whole. A table whose space's table another transaction holds
    exclusively (the swap) counts as in use too."""
    names = [
        str(r[0])
        for r in conn.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace ="
            " current_schema()::regnamespace AND relname LIKE 'ragstore\\_load\\_emb\\_%'"
            " ORDER BY relname"
        )
    ]
    out = []
    for name in names:
        space_table = name[len(_LEFTOVER_PREFIX) :]
        held = spaces.staged_held(conn, space_table) or _held(conn, space_table)
        out.append(Leftover(name, space_table, held))
    return out


def _held(conn: Conn, table: str) -> bool:
    """Whether another transaction holds ``table`` exclusively (a bulk load's swap does)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE relation = to_regclass(quote_ident(%s))"
        " AND mode = 'AccessExclusiveLock' AND granted AND pid <> pg_backend_pid())",
        (table,),
    ).fetchone()
    return bool(row and row[0])


def drop_leftovers(conn: Conn, leftovers: Sequence[Leftover]) -> list[str]:
    """Drop the leftovers no load holds; returns those dropped.

    Each is dropped in a transaction of its own under its staged table's lock, taken
    without waiting (``spaces.try_lock_staged``): one a load holds (it started since the
    leftovers were listed) is skipped, and a load starting meanwhile waits for the drop
    before it creates its own table. Nothing else is locked, so a repair never waits
    behind a running load (an import holds its space's table to its end) nor holds that
    collection's searches up; a drop that would wait past ``CHECK_LOCK_TIMEOUT`` for the
    table is skipped too."""
    dropped = []
    for left in leftovers:
        if left.in_use:
            continue
        try:
            with conn.transaction():
                conn.execute(
                    sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(CHECK_LOCK_TIMEOUT))
                )
                if not spaces.try_lock_staged(conn, left.space_table):
                    continue
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(left.table)))
        except psycopg.errors.LockNotAvailable:
            continue
        dropped.append(left.table)
    return dropped
