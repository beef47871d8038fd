"""SQL for documents and chunks: the one write path, and what callers need to plan a write.

:func:`write_documents` is the only code that inserts or replaces documents. Ingest (files,
uploads, jobs), eval and import all call it with records, chunks and vectors; it writes
them for every live embedding space of the collection, in the caller's transaction.

Concurrency: writes of one document are serialized per (collection, source) by a
transaction-level advisory lock, taken before the stored row is read. Whether a document
is added, updated or unchanged is decided under that lock, from the row as it is then, and
the row handed back is the one this transaction wrote: an acknowledgement built from it
always describes what this request stored. Two writers of the same source simply run one
after the other; the second sees the first's row (same bytes: ``unchanged``; other bytes:
``updated``). Lock keys are sorted, so writers of overlapping batches cannot deadlock, and
folded into a fixed number of buckets per collection so a large load takes a bounded
number of locks.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ragstore.db import spaces
from ragstore.db.repository import Collection
from ragstore.errors import CollectionNotFoundError, ConflictError, InputError
from ragstore.models import Chunk, ChunkType

Conn = psycopg.Connection[Any]

LOCK_BUCKETS = 256  # advisory locks per collection: sources hash into these
_LOCK_SPACE = 0x5257  # "RW": high bits of the advisory-lock keys of document writes


@dataclass
class DocumentRecord:
    source: str
    title: str | None
    format: str
    content_hash: str
    size_bytes: int
    metadata: dict[str, Any]
    parsed: bytes | None = None  # what the chunks were cut from (chunking.recipe), if kept
    # where it came from (revision 0035): file (a path on disk, which ``--sync`` checks
    # and ``--prune`` removes once gone), upload, text or import (never looked for on disk)
    origin: str = "file"


@dataclass
class DocumentWrite:
    """One document to store: its record, chunks and vectors (one row per embeddable chunk,
    in chunk order; headings have none). ``extra_vectors`` (table -> vectors, same rows)
    fills spaces being built by a model migration, so they keep up with ingest."""

    record: DocumentRecord
    chunks: Sequence[Chunk]
    vectors: np.ndarray
    extra_vectors: Mapping[str, np.ndarray] | None = None
    lexemes: Lexemes | None = None  # the chunks' tsvectors, when computed beforehand
    # when the request that sent it was answered (a queued job's acceptance): a stored row
    # of other content updated since then was written by a later request, and is kept
    accepted_at: datetime | None = None


@dataclass(frozen=True)
class Lexemes:
    """Chunks' tsvectors computed before a bulk write (:func:`text_search_vectors`).

    ``tsv`` holds each chunk's tsvector in PostgreSQL's binary form and ``lengths`` its
    ``ragstore_tsv_length``, in chunk order; ``config`` is the name of the text search
    configuration they were computed with (as ``regconfig`` prints it: revision 0025 stores
    it by name). In a bulk write (:func:`begin_bulk`) the chunk trigger keeps them when
    ``config`` is the collection's (revision 0015) instead of computing ``to_tsvector``
    again in the writing backend.
    """

    config: str
    tsv: Sequence[bytes]
    lengths: Sequence[int]

    def split(self, sizes: Sequence[int]) -> list[Lexemes]:
        """Consecutive parts of ``sizes`` chunks each (one per document)."""
        out, at = [], 0
        for n in sizes:
            out.append(Lexemes(self.config, self.tsv[at : at + n], self.lengths[at : at + n]))
            at += n
        return out


@dataclass(frozen=True)
class Written:
    """What one write did to one document, and the row as this transaction left it."""

    status: str  # added | updated | unchanged | superseded
    # id, source, title, format, content_hash, size_bytes, ...; None for a document a
    # job's write left deleted (``superseded`` by a delete after the job's acceptance)
    document: dict[str, Any] | None
    source: str

    @property
    def id(self) -> int:
        assert self.document is not None, f"{self.source!r} was not stored"
        return int(self.document["id"])


_DOC_COLS = "id, source, title, format, content_hash, size_bytes, metadata, created_at, updated_at"


def document_row(r: Sequence[Any], chunks: int) -> dict[str, Any]:
    """A document as the API shows it, from a row of ``_DOC_COLS`` (catalog reads use it too)."""
    return {
        "id": int(r[0]),
        "source": r[1],
        "title": r[2],
        "format": r[3],
        "content_hash": r[4],
        "size_bytes": int(r[5]),
        "metadata": dict(r[6]),
        "created_at": r[7],
        "updated_at": r[8],
        "chunks": chunks,
    }


def lock_sources(conn: Conn, collection_id: int, sources: Sequence[str]) -> None:
    """Hold the write locks of these sources until the transaction ends (sorted: no deadlock)."""
    keys = sorted(
        {
            (_LOCK_SPACE << 48) | (collection_id << 16) | (zlib.crc32(s.encode()) % LOCK_BUCKETS)
            for s in sources
        }
    )
    if keys:
        conn.execute(
            "SELECT count(pg_advisory_xact_lock(k)) FROM"
            " (SELECT k FROM unnest(%s::int8[]) AS u(k) ORDER BY k) AS s",
            (keys,),
        )


# The BM25 build's sorts gained nothing from 1 GB over 256 MB in a 100k load
# (docs/benchmarks.md), and every sort or hash of its statements may take this much: the
# vector index's larger build memory (RAGSTORE_INDEX_BUILD_MEMORY) is not passed on past it.
MAX_BUILD_WORK_MEM = 256 << 20


def begin_bulk(conn: Conn, collection_id: int) -> None:
    """Start a bulk write of one collection in this transaction (revision 0011).

    Every BM25 trigger then skips for the rest of the transaction, and
    :func:`finish_bulk` must be called before it commits. Every source lock of the
    collection is taken first (in key order, like :func:`lock_sources`), so no other writer
    changes the collection's chunks until this transaction ends and the recount that
    :func:`finish_bulk` does from scratch is exact.

    The wait for them is the caller's to bound (``staging.waiting_for_locks``, as every
    bulk writer does): unbounded, one behind a stuck write of the collection waits for good.
    """
    keys = [(_LOCK_SPACE << 48) | (collection_id << 16) | b for b in range(LOCK_BUCKETS)]
    conn.execute(
        "SELECT count(pg_advisory_xact_lock(k)) FROM"
        " (SELECT k FROM unnest(%s::int8[]) AS u(k) ORDER BY k) AS s",
        (keys,),
    )
    conn.execute("SELECT set_config('ragstore.bulk', 'on', true)")


@contextmanager
def bm25_dropped(conn: Conn, collection_ids: Sequence[int]) -> Iterator[None]:
    """Delete the collections' chunks inside this block without the BM25 triggers' work.

    Deleting chunks makes the triggers of revisions 0004 and 0006 subtract every lexeme
    of every chunk from its document frequency and delete the chunk's postings by chunk
    id: at 28k chunks 4.2 of the 5.7 s a collection's delete took. When whole collections
    go, their postings (found through their terms' ids) and terms are deleted here in
    one statement each, and the triggers skip (``ragstore.bulk``, revision 0011) while the
    block deletes the collections' rows; the statistics row goes with the collection's.
    The block must delete only chunks of these collections: others would keep postings
    and counts of chunks that are gone."""
    ids = list(collection_ids)
    # by the postings' term index, reading these collections' postings only (a join with
    # the terms was planned as a scan of every collection's: 2.2 s against 1.8 at 28k)
    conn.execute(
        "DELETE FROM bm25_postings WHERE term_id = ANY(ARRAY("
        "SELECT term_id FROM bm25_terms WHERE collection_id = ANY(%(ids)s)))",
        {"ids": ids},
    )
    conn.execute("DELETE FROM bm25_terms WHERE collection_id = ANY(%(ids)s)", {"ids": ids})
    conn.execute("SELECT set_config('ragstore.bulk', 'on', true)")
    yield  # an error aborts the transaction, and the setting with it
    conn.execute("SELECT set_config('ragstore.bulk', 'off', true)")


def finish_bulk(conn: Conn, collection_id: int, memory: str | None = None) -> int:
    """End a bulk write: the collection's BM25 statistics recounted and its postings
    rewritten in one set-based pass each, in the writer's transaction, so that readers see
    the chunks and their statistics together. ``memory`` is the ``work_mem`` of the rest of
    the transaction (the grouping and ranking sorts), at most ``MAX_BUILD_WORK_MEM``.
    Returns the postings written."""
    _build_memory(conn, memory)
    row = conn.execute("SELECT ragstore_bm25_bulk_finish(%s)", (collection_id,)).fetchone()
    conn.execute("SELECT set_config('ragstore.bulk', 'off', true)")
    return int(row[0]) if row else 0


def chunk_mark(conn: Conn, collection_id: int) -> tuple[int, int]:
    """The collection's largest chunk id (0 when it has none) and its chunk count: taken
    once a bulk load holds the collection's locks, every chunk id above the mark is the
    load's (ids come from one sequence), and fewer chunks up to it at the end means the
    load deleted some."""
    row = conn.execute(
        "SELECT coalesce(max(id), 0), count(*) FROM chunks WHERE collection_id = %s",
        (collection_id,),
    ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def finish_bulk_add(
    conn: Conn, collection_id: int, mark: tuple[int, int], memory: str | None = None
) -> None:
    """End a bulk write into a collection that had chunks before it (revision 0030):
    statistics and document frequencies recounted, and only the postings of the chunks
    above the :func:`chunk_mark` written, as the insert triggers would have (the old ones
    stay); where the load deleted chunks, their postings go first. ``memory`` as for
    :func:`finish_bulk`."""
    _build_memory(conn, memory)
    since, before = mark
    conn.execute("SELECT ragstore_bm25_bulk_add(%s, %s, %s)", (collection_id, since, before))
    conn.execute("SELECT set_config('ragstore.bulk', 'off', true)")


def _build_memory(conn: Conn, memory: str | None) -> None:
    """``work_mem`` for the rest of the transaction: ``memory``, at most
    ``MAX_BUILD_WORK_MEM``."""
    if memory is not None:
        conn.execute(
            "SELECT set_config('work_mem', (least(pg_size_bytes(%s), %s) / 1024)::bigint"
            " || 'kB', true)",
            (memory, MAX_BUILD_WORK_MEM),
        )


# the text search configuration of a collection without a ``ts_config`` setting: the
# chunks' ``ts_config`` column default, which the chunk trigger falls back to
NEW_COLLECTION_TS_CONFIG = "english"
# A text's tsvector takes at most about 5 bytes per byte of text (hyphenated words: the
# compound and each part, with their positions), so one under 64 KB cannot reach the 1 MB
# PostgreSQL allows; a longer one is asked of the server (an import's texts, and those
# stored whole with a caller's vector).
TSVECTOR_CHECK_BYTES = 64 * 1024


def check_tsvector(conn: Conn, config: str, text: str) -> None:
    """Compute ``text``'s tsvector under configuration ``config`` on the server:
    ``psycopg.errors.ProgramLimitExceeded`` where it is over PostgreSQL's 1 MB (a text
    longer than :data:`TSVECTOR_CHECK_BYTES`, checked before it is stored: the chunk
    trigger's failure would end a whole write). Run it in a savepoint of its own."""
    conn.execute("SELECT to_tsvector(%s::regconfig, %s) IS NULL", (config, text))


def ts_config_name(conn: Conn, collection_id: int) -> str:
    """The text search configuration the chunk trigger gives this collection's chunks, by
    name: its ``ts_config`` setting, else the column default
    (:data:`NEW_COLLECTION_TS_CONFIG`)."""
    row = conn.execute(
        "SELECT coalesce((settings->>'ts_config')::regconfig, %s::regconfig)::text"
        " FROM collections WHERE id = %s",
        (NEW_COLLECTION_TS_CONFIG, collection_id),
    ).fetchone()
    if row is None:
        raise InputError(f"collection id {collection_id} does not exist")
    return str(row[0])


def text_search_vectors(conn: Conn, config: str, texts: Sequence[str]) -> Lexemes:
    """``to_tsvector(config, text)`` and its length for each text, in order, in binary form.

    A pure function of the texts: it reads no table, so it runs on any connection of the
    same server, outside the writer's transaction. An import runs it on a second
    connection for the next slice of chunks while the writer stores the current one
    (``imports.service``); the chunk trigger then keeps the values (revision 0015).
    ``OFFSET 0`` keeps the subquery whole: pulled up, ``v`` would be computed twice.
    """
    if not texts:
        return Lexemes(config, [], [])
    rows = (
        conn.cursor(binary=True)
        .execute(
            "SELECT v, ragstore_tsv_length(v) FROM (SELECT to_tsvector(%s::regconfig, t)"
            " AS v, o FROM unnest(%b::text[]) WITH ORDINALITY AS u(t, o) OFFSET 0) AS s"
            " ORDER BY o",
            (config, list(texts)),
        )
        .fetchall()
    )
    return Lexemes(config, [bytes(r[0]) for r in rows], [int(r[1]) for r in rows])


def lexeme_counts(conn: Conn, config: str, texts: Sequence[str]) -> list[dict[str, int]]:
    """Each text's lexemes under configuration ``config`` with their term frequencies, in
    order: ``to_tsvector`` as the chunk trigger and a full-text query compute it, a
    lexeme's frequency the number of its positions (at least 1), as BM25 counts it
    (``ragstore_tsv_length`` sums the same numbers). Reads no table: a pure function of
    the texts, for a BM25 outside the database that analyses text as the database does
    (``ragstore eval-sections``' window baseline)."""
    out: list[dict[str, int]] = [{} for _ in texts]
    if not texts:
        return out
    rows = conn.execute(
        "SELECT u.o, l.lexeme, greatest(cardinality(l.positions), 1)"
        " FROM unnest(%s::text[]) WITH ORDINALITY AS u(t, o)"
        " CROSS JOIN LATERAL unnest(to_tsvector(%s::regconfig, u.t)) AS l",
        (list(texts), config),
    ).fetchall()
    for o, lexeme, tf in rows:
        out[int(o) - 1][str(lexeme)] = int(tf)
    return out


# A bulk load's vectors of the active space, kept back for its staging table: (chunk ids,
# their vectors) per COPY that would have written them (see ``write_documents``).
StagedRows = list[tuple[list[int], np.ndarray]]


def write_documents(
    conn: Conn,
    coll: Collection,
    docs: Sequence[DocumentWrite],
    *,
    force: bool = False,
    staged: StagedRows | None = None,
) -> list[Written]:
    """Add or replace documents with their chunks and vectors; one outcome per document.

    The caller holds the transaction, so the documents land together or not at all. A
    round is written in a fixed number of statements: one INSERT of the new documents, one
    UPDATE of the replaced ones, one COPY of all chunks and one per space, so statement
    triggers (BM25 statistics) run once per round. A document whose stored content hash
    equals the new one is left as it is (``unchanged``) unless ``force``; one whose stored
    row, of other content, was written after the write's ``accepted_at`` is left as it is
    too (``superseded``). The collection row is held ``FOR SHARE`` so a model switch
    waits for this write; if the active space changed since ``coll`` was read and no
    vectors for it were given, the write is refused (409) rather than leave the searched
    space without these documents. Array parameters go in binary (``%b``): in text form
    psycopg escapes every quote of every JSON metadata string with a regular expression,
    about 40 ms per 1,000 documents of the writer's time.

    With ``staged`` the active space's vectors are appended there instead of written: a
    bulk load copies them into its staging table on another connection once this
    transaction (its savepoint) has stored their chunks (``ingest.staging``).
    """
    if not docs:
        return []
    sources = [d.record.source for d in docs]
    if len(set(sources)) != len(sources):
        dup = next(s for s in sources if sources.count(s) > 1)
        raise InputError(f"document {dup!r} appears twice in one write; send it once")
    provided = set.intersection(*({coll.table, *(d.extra_vectors or {})} for d in docs))
    live = _live_tables(conn, coll, provided)
    lock_sources(conn, coll.id, sources)
    stored = {
        str(r[1]): r
        for r in conn.execute(
            f"SELECT {_DOC_COLS} FROM documents WHERE collection_id = %s AND source = ANY(%b)",
            (coll.id, sources),
        ).fetchall()
    }
    # when the sources not stored were last deleted (revision 0038), under the same locks:
    # read for a job's write only, the one a tombstone can supersede (a direct write, a
    # bulk load's rounds, skip the round trip; a tombstone they leave behind decides
    # nothing, since a stored row's own time is compared first)
    jobs_write = any(d.accepted_at is not None for d in docs)
    buried = (
        _tombstones(conn, coll.id, [s for s in sources if s not in stored]) if jobs_write else {}
    )
    out: list[Written | None] = [None] * len(docs)
    replaced: list[int] = []
    added: list[int] = []
    for i, d in enumerate(docs):
        old = stored.get(d.record.source)
        gone = buried.get(d.record.source)
        if old is None and d.accepted_at is not None and gone is not None and gone > d.accepted_at:
            # deleted by a request answered after this one was: a queued job must not
            # bring back what a later, acknowledged delete removed
            out[i] = Written("superseded", None, d.record.source)
        elif old is None:
            added.append(i)
        elif old[4] == d.record.content_hash and not force:
            out[i] = Written("unchanged", document_row(old, -1), d.record.source)
        elif d.accepted_at is not None and old[8] > d.accepted_at:
            # written by a request answered after this one was: a queued job must not put
            # back what a later, acknowledged write replaced
            out[i] = Written("superseded", document_row(old, -1), d.record.source)
        else:
            replaced.append(i)
    _fill_chunk_counts(conn, out)
    doc_ids: dict[int, int] = {}
    # The rows' time, read now that the locks are held: ``now()`` is the transaction's
    # start, which for a write that waited for a lock is before a job accepted meanwhile,
    # and that job's worker then took this later, acknowledged write for an older one and
    # replaced it (the ``superseded`` rule above). One value for the whole write, as
    # ``now()`` was (readers order a write's rows by id among equal times).
    stamp = _clock(conn) if replaced or added else None
    if replaced:
        old_ids = [int(stored[docs[i].record.source][0]) for i in replaced]
        conn.execute("DELETE FROM chunks WHERE document_id = ANY(%s)", (old_ids,))
        recs = [docs[i].record for i in replaced]
        rows = conn.execute(
            "UPDATE documents d SET title = u.t, format = u.f, content_hash = u.h,"
            " size_bytes = u.b, metadata = u.m::jsonb, parsed = u.p, origin = u.o,"
            " updated_at = %b"
            " FROM unnest(%b::int8[], %b::text[], %b::text[], %b::text[], %b::int8[],"
            " %b::text[], %b::bytea[], %b::text[]) AS u(i, t, f, h, b, m, p, o)"
            " WHERE d.id = u.i"
            f" RETURNING {', '.join('d.' + c.strip() for c in _DOC_COLS.split(','))}",
            (
                stamp,
                old_ids,
                [r.title for r in recs],
                [r.format for r in recs],
                [r.content_hash for r in recs],
                [r.size_bytes for r in recs],
                [json.dumps(r.metadata) for r in recs],
                [r.parsed for r in recs],
                [r.origin for r in recs],
            ),
        ).fetchall()
        by_source = {str(r[1]): r for r in rows}
        for i in replaced:
            row = by_source[docs[i].record.source]
            out[i] = Written("updated", document_row(row, len(docs[i].chunks)), row[1])
            doc_ids[i] = int(row[0])
    if added:
        recs = [docs[i].record for i in added]
        back = [r.source for r in recs if r.source in buried]
        if back:  # stored again: a job accepted before this write is superseded by its row
            conn.execute(
                "DELETE FROM document_tombstones WHERE collection_id = %s AND source = ANY(%s)",
                (coll.id, back),
            )
        rows = conn.execute(
            "INSERT INTO documents (collection_id, source, title, format, content_hash,"
            " size_bytes, metadata, parsed, origin, created_at, updated_at)"
            " SELECT %s, s, t, f, h, b, m::jsonb, p, o, %b, %b FROM unnest(%b::text[], %b::text[],"
            " %b::text[], %b::text[], %b::int8[], %b::text[], %b::bytea[], %b::text[])"
            f" AS u(s, t, f, h, b, m, p, o) RETURNING {_DOC_COLS}",
            (
                coll.id,
                stamp,
                stamp,
                [r.source for r in recs],
                [r.title for r in recs],
                [r.format for r in recs],
                [r.content_hash for r in recs],
                [r.size_bytes for r in recs],
                [json.dumps(r.metadata) for r in recs],
                [r.parsed for r in recs],
                [r.origin for r in recs],
            ),
        ).fetchall()
        by_source = {str(r[1]): r for r in rows}
        for i in added:
            row = by_source[docs[i].record.source]
            out[i] = Written("added", document_row(row, len(docs[i].chunks)), row[1])
            doc_ids[i] = int(row[0])
    todo = sorted(doc_ids)
    _store_chunks(
        conn, coll, [docs[i] for i in todo], [doc_ids[i] for i in todo], provided & live, staged
    )
    return [w for w in out if w is not None]


def _clock(conn: Conn) -> datetime:
    """The database's clock now (``clock_timestamp()``), not the transaction's start."""
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def _fill_chunk_counts(conn: Conn, out: list[Written | None]) -> None:
    """Chunk counts of the documents left unchanged (read, since nothing was written)."""
    ids = [w.id for w in out if w is not None and w.document is not None]
    if not ids:
        return
    counts = dict(
        conn.execute(
            "SELECT document_id, count(*) FROM chunks WHERE document_id = ANY(%s)"
            " GROUP BY document_id",
            (ids,),
        ).fetchall()
    )
    for w in out:
        if w is not None and w.document is not None:
            w.document["chunks"] = int(counts.get(w.id, 0))


def _tombstones(conn: Conn, collection_id: int, sources: Sequence[str]) -> dict[str, datetime]:
    """source -> when it was last deleted, for those of ``sources`` with a tombstone."""
    if not sources:
        return {}
    rows = conn.execute(
        "SELECT source, deleted_at FROM document_tombstones"
        " WHERE collection_id = %s AND source = ANY(%s)",
        (collection_id, list(sources)),
    ).fetchall()
    return {str(r[0]): r[1] for r in rows}


def bury(conn: Conn, collection_id: int, sources: Sequence[str], *, stamp: bool = True) -> None:
    """Record that these sources were just deleted (their write locks held), for the queued
    jobs that would store them again, and drop the collection's tombstones no unfinished
    job can need.

    Every delete of documents calls it (a collection's delete does not: its jobs go with
    it). A job's write compares a tombstone with the job's acceptance like a stored row's
    time (:func:`write_documents`): without it, an upload queued (202) and then deleted
    was stored again by the worker, although the client's last acknowledged request was
    the delete. The time is the clock's once the locks are held, as a write's is.
    ``stamp=False`` only prunes: a re-cut migration's catch-up delete in its shadow
    repeats a user's delete whose tombstone the live row holds, with the time that delete
    was acknowledged (moved over at the switch, :func:`move_tombstones`); stamped with the
    catch-up's time, a job accepted between the two was told ``superseded`` after the
    switch and its document was lost."""
    if sources and stamp:
        conn.execute(
            "INSERT INTO document_tombstones (collection_id, source, deleted_at)"
            " SELECT %s, s, clock_timestamp() FROM unnest(%s::text[]) AS s"
            " ON CONFLICT (collection_id, source) DO UPDATE SET deleted_at = excluded.deleted_at",
            (collection_id, list(sources)),
        )
    prune_tombstones(conn, collection_id)


def prune_tombstones(conn: Conn, collection_id: int) -> None:
    """Drop the collection's tombstones that no unfinished job can need: those older than
    the acceptance of the oldest unfinished job of the collection (every one written
    before this transaction, when none waits). Run at each delete and at each job's
    finish, the table stays as small as the deletes of a job's span.

    Per collection: pruned against the oldest unfinished job of any collection, one job
    queued for long in one collection kept every other collection's tombstones, growing
    by every delete there. Jobs name their collection (``ingest_jobs.collection``); the
    unfinished ones are read through ``ingest_jobs_status_idx``, the tombstones through
    their key's leading column.

    A tombstone another transaction holds (a delete rewriting it, another pruning) is
    left to a later pruning (``SKIP LOCKED``): waited for, a job's finish holding one old
    tombstone and waiting for the one a delete rewrote, while that delete's own pruning
    waited for the finish's, ended in a deadlock that PostgreSQL broke by failing one."""
    conn.execute(
        "DELETE FROM document_tombstones WHERE collection_id = %(c)s AND source IN ("
        "SELECT source FROM document_tombstones WHERE collection_id = %(c)s"
        " AND deleted_at < coalesce((SELECT min(j.created_at) FROM ingest_jobs j"
        " WHERE j.status IN ('queued', 'running')"
        " AND j.collection = (SELECT name FROM collections WHERE id = %(c)s)), now())"
        " FOR UPDATE SKIP LOCKED)",
        {"c": collection_id},
    )


def move_tombstones(conn: Conn, source_id: int, target_id: int) -> None:
    """Move a collection row's tombstones to the row that takes over its name (a re-cut
    migration's switch, either way), keeping each source's latest delete time.

    Jobs name their collection, so a job queued before the switch writes into the other
    row after it: without its tombstones, a document deleted before the backfill copied
    it (so never deleted from the shadow) was stored again by a job accepted before the
    delete."""
    conn.execute(
        "INSERT INTO document_tombstones (collection_id, source, deleted_at)"
        " SELECT %(to)s, source, deleted_at FROM document_tombstones WHERE collection_id = %(from)s"
        " ON CONFLICT (collection_id, source) DO UPDATE"
        " SET deleted_at = greatest(document_tombstones.deleted_at, excluded.deleted_at)",
        {"from": source_id, "to": target_id},
    )
    conn.execute("DELETE FROM document_tombstones WHERE collection_id = %s", (source_id,))


def _store_chunks(
    conn: Conn,
    coll: Collection,
    docs: Sequence[DocumentWrite],
    doc_ids: Sequence[int],
    tables: set[str],
    staged: StagedRows | None = None,
) -> None:
    """Chunks of freshly written documents, then their vectors into every live space (the
    active one's into ``staged`` when given)."""
    ids = allocate_chunk_ids(conn, sum(len(d.chunks) for d in docs))
    _copy_chunks(conn, coll, docs, doc_ids, ids)
    embedded_ids: list[int] = []
    offset = 0
    for d in docs:
        embedded_ids += [
            cid
            for cid, ch in zip(ids[offset : offset + len(d.chunks)], d.chunks, strict=True)
            if ch.embeddable
        ]
        offset += len(d.chunks)
    if not embedded_ids:
        return
    for table in sorted(tables):  # not a space retired or pruned meanwhile
        vecs = [d.vectors if table == coll.table else (d.extra_vectors or {})[table] for d in docs]
        stacked = np.concatenate(vecs) if len(vecs) > 1 else vecs[0]
        if staged is not None and table == coll.table:
            # checked now: the staged table is written on another connection, later
            spaces.check_indexable(stacked, f"the vectors of {coll.name!r}")
            staged.append((embedded_ids, stacked))
        else:
            spaces.copy_vectors(conn, table, embedded_ids, stacked)


def _copy_chunks(
    conn: Conn,
    coll: Collection,
    docs: Sequence[DocumentWrite],
    doc_ids: Sequence[int],
    ids: Sequence[int],
) -> None:
    """One binary COPY of every document's chunks, parents resolved to the drawn ids; with
    their tsvectors when every document brings them (:class:`Lexemes`)."""
    if not ids:
        return
    lex = [d.lexemes for d in docs]
    with_lexemes = all(x is not None for x in lex)
    columns = _CHUNK_COLUMNS + (", ts_config, tsv, tsv_length" if with_lexemes else "")
    types = _CHUNK_TYPES + (_LEXEME_TYPES if with_lexemes else [])
    with conn.cursor().copy(f"COPY chunks ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        offset = 0
        for doc_id, d, x in zip(doc_ids, docs, lex, strict=True):
            mine = ids[offset : offset + len(d.chunks)]
            offset += len(d.chunks)
            for j, (cid, ch) in enumerate(zip(mine, d.chunks, strict=True)):
                parent = mine[ch.parent_ordinal] if ch.parent_ordinal is not None else None
                row: tuple[Any, ...] = (
                    cid,
                    doc_id,
                    coll.id,
                    ch.ordinal,
                    ch.chunk_type.value,
                    ch.text,
                    list(ch.section_path),
                    parent,
                    ch.char_start,
                    ch.char_end,
                    ch.page,
                    ch.token_count,
                    Jsonb(ch.metadata),
                    ch.content_hash,
                    ch.context,
                )
                if x is not None and with_lexemes:
                    row += (x.config, x.tsv[j], x.lengths[j])
                copy.write_row(row)


_CHUNK_COLUMNS = (
    "id, document_id, collection_id, ordinal, chunk_type, text, section_path, parent_id,"
    " char_start, char_end, page, token_count, metadata, content_hash, context"
)
_CHUNK_TYPES = [
    "int8",
    "int8",
    "int4",
    "int4",
    "text",
    "text",
    "text[]",
    "int8",
    "int4",
    "int4",
    "int4",
    "int4",
    "jsonb",
    "text",
    "text",
]
# ts_config, tsv, tsv_length: a binary COPY field is the type's own binary form, so the
# tsvector PostgreSQL sent (text_search_vectors) goes back as it came, as raw bytes
_LEXEME_TYPES = ["text", "bytea", "int4"]


def allocate_chunk_ids(conn: Conn, n: int) -> list[int]:
    """Draw ``n`` chunk ids up front, so parents and vectors can name them in one COPY."""
    if n <= 0:
        return []
    return [
        int(r[0])
        for r in conn.execute(
            "SELECT nextval(pg_get_serial_sequence('chunks', 'id')) FROM generate_series(1, %s)",
            (n,),
        )
    ]


def _live_tables(conn: Conn, coll: Collection, provided: set[str]) -> set[str]:
    """Lock the collection against a model switch; the tables a write must fill.

    A row that became a shadow (a re-chunking migration switched away from it) while the
    caller held it as the live collection is refused like a switch of its space."""
    hold_live(
        conn,
        coll,
        "while this document was being embedded; run the ingest again to store it",
    )
    rows = conn.execute(
        "SELECT s.table_name, s.status, s.id = c.active_space_id FROM embedding_spaces s"
        " JOIN collections c ON c.id = s.collection_id"
        " WHERE s.collection_id = %s AND s.status IN ('active', 'building')",
        (coll.id,),
    ).fetchall()
    active = next((r[0] for r in rows if r[2]), coll.table)
    if active not in provided:
        raise ConflictError(
            f"collection {coll.name!r} {MODEL_SWITCHED} while this document was being "
            "embedded; run the ingest again to store it"
        )
    return {r[0] for r in rows}


def document_hashes(
    conn: Conn, collection_id: int, sources: Sequence[str]
) -> dict[str, tuple[int, str]]:
    """source -> (document id, content hash) for the sources already stored.

    Read without a lock: callers use it to skip unchanged files early; the decision that
    counts is taken again under the lock by :func:`write_documents`.
    """
    rows = conn.execute(
        "SELECT source, id, content_hash FROM documents"
        " WHERE collection_id = %s AND source = ANY(%s)",
        (collection_id, list(sources)),
    ).fetchall()
    return {r[0]: (int(r[1]), r[2]) for r in rows}


def load_share(conn: Conn, collection_id: int, sizes: dict[str, int]) -> tuple[int, int]:
    """(bytes the collection's documents hold, bytes of ``sizes`` (source -> file size)
    that look new): a source not stored yet, or stored at another size, counts. A file
    rewritten at the same size counts as unchanged, so the figure errs low; it sizes a
    load before anything is read (``ingest.service``), not what the load will write."""
    row = conn.execute(
        "SELECT coalesce(sum(d.size_bytes), 0),"
        " coalesce(sum(d.size_bytes) FILTER (WHERE d.size_bytes = f.size), 0)"
        " FROM documents d"
        " LEFT JOIN unnest(%s::text[], %s::bigint[]) AS f(source, size) ON f.source = d.source"
        " WHERE d.collection_id = %s",
        (list(sizes), list(sizes.values()), collection_id),
    ).fetchone()
    stored, same = (int(row[0]), int(row[1])) if row else (0, 0)
    return stored, sum(sizes.values()) - same


def stored_embeddings(conn: Conn, coll: Collection, hashes: Sequence[str]) -> dict[str, np.ndarray]:
    """content hash -> vector for chunks of this collection already embedded in its space."""
    if not hashes:
        return {}
    rows = conn.execute(
        sql.SQL(
            "SELECT DISTINCT ON (c.content_hash) c.content_hash, e.embedding"
            " FROM chunks c JOIN {t} e ON e.chunk_id = c.id"
            " WHERE c.collection_id = %s AND c.content_hash = ANY(%s)"
        ).format(t=sql.Identifier(coll.table)),
        (coll.id, list(set(hashes))),
    ).fetchall()
    return {r[0]: np.asarray(r[1].to_numpy(), dtype=np.float32) for r in rows}


def chunk_ids_of(conn: Conn, doc_ids: Sequence[int]) -> dict[int, int]:
    """document id -> the id of its first chunk (one-chunk documents: imports)."""
    rows = conn.execute(
        "SELECT DISTINCT ON (document_id) document_id, id FROM chunks"
        " WHERE document_id = ANY(%s) ORDER BY document_id, ordinal",
        (list(doc_ids),),
    )
    return {int(r[0]): int(r[1]) for r in rows}


def vectors_by_source(
    conn: Conn, collection_id: int, table: str, metadata: dict[str, Any]
) -> Iterator[tuple[str, np.ndarray]]:
    """(source, vector) of the documents whose metadata contains ``metadata`` (one-chunk
    documents: an import's batch), streamed through a server-side cursor."""
    stmt = sql.SQL(
        "SELECT d.source, e.embedding FROM documents d JOIN chunks c ON c.document_id = d.id"
        " JOIN {t} e ON e.chunk_id = c.id WHERE d.collection_id = %s AND d.metadata @> %s"
    ).format(t=sql.Identifier(table))
    with conn.cursor(name="ragstore_vectors_by_source", binary=True) as cur:
        cur.itersize = 5000
        cur.execute(stmt, (collection_id, Jsonb(metadata)))
        for source, emb in cur:
            yield str(source), np.asarray(emb.to_numpy())


def sources_under(
    conn: Conn,
    collection_id: int,
    prefixes: Sequence[str],
    exact: Sequence[str] = (),
    origin: str | None = None,
) -> list[str]:
    """Sources of the collection that start with one of ``prefixes`` or equal one of
    ``exact``; with ``origin``, only those of documents of that origin (a sync: ``file``)."""
    rows = conn.execute(
        "SELECT source FROM documents WHERE collection_id = %s AND (source = ANY(%s)"
        " OR EXISTS (SELECT 1 FROM unnest(%s::text[]) p WHERE left(source, length(p)) = p))"
        " AND (%s::text IS NULL OR origin = %s::text) ORDER BY source",
        (collection_id, list(exact), list(prefixes), origin, origin),
    ).fetchall()
    return [str(r[0]) for r in rows]


def hold_live(
    conn: Conn,
    coll: Collection,
    doing: str = "while this delete was on its way; nothing was deleted: run it again",
) -> None:
    """Hold the collection row ``FOR SHARE`` (a model switch waits for the transaction)
    and refuse (ConflictError) if it is no longer the chunk set ``coll`` was read as.

    A re-cutting migration's switch makes the live row a shadow (the chunk set kept for a
    rollback) and another row live. A delete that had looked the collection up just before
    deleted from the kept set and was acknowledged, while the live collection kept the
    document and searches went on finding it. Every writer of a collection's documents
    holds the row this way, so a delete either ends before the switch (whose check then
    sees the two sets out of step and runs another pass) or is refused after it.

    The row gone, the collection may still be there: switched so and the kept set pruned
    (``ragstore models prune``) since the writer read it, the name on the row swapped in,
    which keeps the creation time. That is refused as the switch it is: it was refused as
    ``collection_not_found`` ("was deleted") of a collection still listed, and a job took
    that for the documents' own failure and was recorded ``succeeded`` without them."""
    row = conn.execute(
        "SELECT shadow_of IS NOT NULL FROM collections WHERE id = %s FOR SHARE", (coll.id,)
    ).fetchone()
    if row is None and _switched_away(conn, coll):
        raise ConflictError(f"collection {coll.name!r} {MODEL_SWITCHED} {doing}")
    if row is None:
        # deleted since the writer read it (another client's delete, or the write that
        # made it and stored nothing removing it again): the write went on to fail on a
        # foreign key or a dropped vector table, answered as a conflict or a retry
        raise CollectionNotFoundError(
            f"collection {coll.name!r} was deleted {doing}", collection=coll.name
        )
    if bool(row[0]) != coll.shadow:
        raise ConflictError(f"collection {coll.name!r} {MODEL_SWITCHED} {doing}")


def _switched_away(conn: Conn, coll: Collection) -> bool:
    """Whether the live collection of ``coll``'s name is the one ``coll`` was read from,
    now on another row (a re-cutting model switch moved the name and the creation time
    there), rather than one made under the name after a delete."""
    if coll.shadow or coll.created_at is None:
        return False
    row = conn.execute(
        "SELECT 1 FROM collections WHERE name = %s AND shadow_of IS NULL AND created_at = %s",
        (coll.name, coll.created_at),
    ).fetchone()
    return row is not None


# what every refusal of a write to a collection whose model was switched under it says
MODEL_SWITCHED = "switched to another embedding model"


def model_switched(exc: Exception) -> bool:
    """Whether ``exc`` refused a write because the collection's model was switched (a
    migration finished) after the writer read the collection: every later write of that
    writer is refused the same way, so an ingest stops at the first one
    (``ingest.service.stops_ingest``)."""
    return isinstance(exc, ConflictError) and MODEL_SWITCHED in exc.message


def delete_documents(conn: Conn, collection_id: int, sources: Sequence[str]) -> int:
    """Delete documents by source (chunks and vectors follow by cascade), under their locks.

    A caller deleting from a live collection holds its row first (:func:`hold_live`)."""
    return len(delete_sources(conn, collection_id, sources))


def delete_sources(
    conn: Conn, collection_id: int, sources: Sequence[str], *, stamp: bool = True
) -> list[str]:
    """:func:`delete_documents`, returning the sources it deleted: those still stored once
    their locks are held (another transaction may have deleted some meanwhile).
    ``stamp``: whether they get tombstones (:func:`bury`)."""
    lock_sources(conn, collection_id, sources)
    rows = conn.execute(
        "DELETE FROM documents WHERE collection_id = %s AND source = ANY(%s) RETURNING source",
        (collection_id, list(sources)),
    ).fetchall()
    deleted = [str(r[0]) for r in rows]
    bury(conn, collection_id, deleted, stamp=stamp)
    return deleted


# The twin of a document in another chunk set (a shadow collection, see
# repository.create_shadow): same source, content, title, format and metadata.
_TWIN = (
    "SELECT 1 FROM documents t WHERE t.collection_id = %(other)s AND t.source = d.source"
    " AND t.content_hash = d.content_hash AND t.format = d.format"
    " AND t.title IS NOT DISTINCT FROM d.title AND t.metadata = d.metadata"
)


def without_twin(
    conn: Conn, collection_id: int, other_id: int, after_id: int, limit: int
) -> list[tuple[int, DocumentRecord]]:
    """The next ``limit`` documents of a collection (by id, after ``after_id``) that
    ``other`` lacks or holds in another version: what a re-chunking backfill still has
    to cut and embed. (document id, its record with the stored blocks) each."""
    rows = conn.execute(
        "SELECT d.id, d.source, d.title, d.format, d.content_hash, d.size_bytes, d.metadata,"
        " d.parsed, d.origin FROM documents d"
        " WHERE d.collection_id = %(coll)s AND d.id > %(after)s"
        f" AND NOT EXISTS ({_TWIN}) ORDER BY d.id LIMIT %(n)s",
        {"coll": collection_id, "other": other_id, "after": after_id, "n": limit},
    ).fetchall()
    return [
        (int(r[0]), DocumentRecord(r[1], r[2], r[3], r[4], int(r[5]), dict(r[6]), r[7], r[8]))
        for r in rows
    ]


def sources_without_twin(conn: Conn, collection_id: int, other_id: int) -> list[str]:
    """Sources of a collection that ``other`` does not hold in the same version."""
    rows = conn.execute(
        f"SELECT d.source FROM documents d WHERE d.collection_id = %(coll)s"
        f" AND NOT EXISTS ({_TWIN}) ORDER BY d.source",
        {"coll": collection_id, "other": other_id},
    ).fetchall()
    return [str(r[0]) for r in rows]


def count_without_twin(conn: Conn, collection_id: int, other_id: int) -> int:
    """How many documents of a collection ``other`` lacks or holds in another version."""
    row = conn.execute(
        f"SELECT count(*) FROM documents d WHERE d.collection_id = %(coll)s"
        f" AND NOT EXISTS ({_TWIN})",
        {"coll": collection_id, "other": other_id},
    ).fetchone()
    return int(row[0]) if row else 0


def stored_chunks(conn: Conn, document_id: int) -> list[Chunk]:
    """A document's chunks as stored, in order (parents as ordinals)."""
    rows = conn.execute(
        "SELECT c.ordinal, c.chunk_type, c.text, c.section_path, p.ordinal, c.char_start,"
        " c.char_end, c.token_count, c.content_hash, c.page, c.metadata, c.context"
        " FROM chunks c LEFT JOIN chunks p ON p.id = c.parent_id"
        " WHERE c.document_id = %s ORDER BY c.ordinal",
        (document_id,),
    ).fetchall()
    return [
        Chunk(
            int(r[0]),
            ChunkType(r[1]),
            r[2],
            tuple(r[3]),
            r[4],
            int(r[5]),
            int(r[6]),
            int(r[7]),
            r[8],
            r[9],
            dict(r[10]),
            r[11],
        )
        for r in rows
    ]


def count_documents(conn: Conn, collection_id: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM documents WHERE collection_id = %s", (collection_id,)
    ).fetchone()
    return int(row[0]) if row else 0
