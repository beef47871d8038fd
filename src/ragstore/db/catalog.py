"""Read-side SQL: collection details, document pages, models, spaces, sizes and the queue.

Functions take an open connection and run inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ragstore.db import changes, documents, repository
from ragstore.db import jobs as ingest_jobs
from ragstore.db.spaces import drop_tables
from ragstore.errors import CollectionNotFoundError, ConflictError, DocumentNotFoundError

Conn = psycopg.Connection[Any]


def collection_detail(conn: Conn, coll: repository.Collection) -> dict[str, Any]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM documents WHERE collection_id = %(id)s),"
        " (SELECT count(*) FROM chunks WHERE collection_id = %(id)s),"
        " (SELECT created_at FROM collections WHERE id = %(id)s)",
        {"id": coll.id},
    ).fetchone()
    if row is None or row[2] is None:  # deleted since the caller looked it up
        raise CollectionNotFoundError(
            f"collection {coll.name!r} was deleted while this request read it"
        )
    return {
        "name": coll.name,
        "model": coll.model.key,
        "dimension": coll.model.dimension,
        "distance": coll.model.distance,
        "settings": coll.settings,
        "documents": int(row[0]),
        "chunks": int(row[1]),
        "created_at": row[2],
    }


def collection_names(
    conn: Conn, *, after: str | None = None, limit: int | None = None, only: str | None = None
) -> list[str]:
    """The collections' names in order; with ``after`` / ``limit``, one page of them (keyset
    on the unique name: a page is not shifted by a collection created or deleted before
    it); with ``only``, that name alone where it exists (a key limited to it)."""
    return [
        str(r[0])
        for r in conn.execute(
            "SELECT name FROM collections WHERE shadow_of IS NULL"
            " AND (%(after)s::text IS NULL OR name > %(after)s::text)"
            " AND (%(only)s::text IS NULL OR name = %(only)s::text)"
            " ORDER BY name LIMIT %(limit)s",
            {"after": after, "only": only, "limit": limit},
        )
    ]


def delete_collection(conn: Conn, coll: repository.Collection) -> None:
    """The collection, its documents, chunks, spaces and every ``emb_*`` table of it,
    and of its shadows (other chunk sets, kept for a rollback; their rows go by cascade);
    its unfinished ingest jobs failed, their uploaded files dropped.

    Waits for the collection's writes in flight, as deleting its row always did; raises
    ConflictError, and deletes nothing, when its tables cannot then be dropped within
    ``spaces.DROP_TABLES_LOCK_TIMEOUT`` (a model migration's batch or a long search of
    the collection holds them)."""
    # the rows' locks first, as the DELETE below would take them: waiting for the writes
    # in flight (they hold them FOR SHARE) before the tables' locks, which those writes
    # take later, cannot deadlock with them
    rows = conn.execute(
        "SELECT id, shadow_of IS NOT NULL FROM collections WHERE id = %(c)s OR shadow_of = %(c)s"
        " FOR UPDATE",
        {"c": coll.id},
    ).fetchall()
    ids = [int(r[0]) for r in rows]
    if any(int(r[0]) == coll.id and bool(r[1]) != coll.shadow for r in rows):
        # a re-cutting model switch since ``coll`` was read: its row is now the chunk set
        # kept for a rollback, and the collection of that name another row. Deleting the
        # row read deleted that kept set alone and answered "deleted" while the collection
        # stayed, listed and searched
        raise ConflictError(
            f"collection {coll.name!r} switched to another embedding model while this "
            "delete was on its way; nothing was deleted: run it again"
        )
    tables = [
        str(r[0])
        for r in conn.execute(
            "SELECT table_name FROM embedding_spaces WHERE collection_id = %(c)s"
            " OR collection_id IN (SELECT id FROM collections WHERE shadow_of = %(c)s)",
            {"c": coll.id},
        )
    ]
    # then the tables: their rows need no deleting, one by one, with the chunks
    drop_tables(conn, tables, f"collection {coll.name!r} was not deleted")
    if not coll.shadow:  # a shadow goes alone (a migration's prune or cancel): jobs stay
        # its unfinished jobs, with the uploaded text they hold, go with it: kept, that
        # text stayed in the database (and every backup) until a worker ran them
        ingest_jobs.fail_for_deleted_collection(conn, coll.name)
    # and the BM25 postings and terms in one statement each, not chunk by chunk
    with documents.bm25_dropped(conn, ids):
        conn.execute("DELETE FROM collections WHERE id = %s", (coll.id,))
    changes.collections_changed(conn)


def delete_if_left_empty(conn: Conn, coll: repository.Collection) -> bool:
    """Delete ``coll``, made by a write that then stored nothing, if it is still as that
    write made it; whether it was deleted.

    Its row is locked first (``FOR UPDATE``): a concurrent writer's transaction holds it
    shared (``documents.hold_live``), an upload queueing a job holds it too, and an import
    into it locks it for its whole transaction, so each of those commits before this looks.
    Kept when anything uses it by then: a document, an unfinished ingest job, a model
    migration (another space or a shadow), or a re-creation under the name (another id)."""
    row = conn.execute(
        "SELECT active_space_id, shadow_of IS NOT NULL FROM collections WHERE id = %s FOR UPDATE",
        (coll.id,),
    ).fetchone()
    if row is None or row[0] != coll.space_id or bool(row[1]) or coll.shadow:
        return False
    used = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM documents WHERE collection_id = %(c)s)"
        " OR EXISTS (SELECT 1 FROM collections WHERE shadow_of = %(c)s)"
        " OR EXISTS (SELECT 1 FROM embedding_spaces WHERE collection_id = %(c)s"
        "            AND id <> %(s)s)"
        " OR EXISTS (SELECT 1 FROM ingest_jobs WHERE collection = %(n)s"
        "            AND status IN ('queued', 'running'))",
        {"c": coll.id, "s": coll.space_id, "n": coll.name},
    ).fetchone()
    if used is None or used[0]:
        return False
    delete_collection(conn, coll)
    return True


_DOC_COLS = (
    "d.id, d.source, d.title, d.format, d.content_hash, d.size_bytes, d.metadata,"
    " d.created_at, d.updated_at,"
    " (SELECT count(*) FROM chunks k WHERE k.document_id = d.id)"
)


def _doc(r: Sequence[Any]) -> dict[str, Any]:
    return documents.document_row(r, int(r[9]))


def documents_page(
    conn: Conn,
    collection_id: int,
    *,
    after: int | None,
    limit: int,
    fmt: str | None = None,
    source_prefix: str | None = None,
    metadata: dict[str, Any] | None = None,
    source: str | None = None,
) -> list[dict[str, Any]]:
    """Documents in id order after ``after``; filters by format, source prefix, exact
    source and metadata."""
    rows = conn.execute(
        f"SELECT {_DOC_COLS} FROM documents d WHERE d.collection_id = %(c)s"
        " AND (%(after)s::bigint IS NULL OR d.id > %(after)s)"
        " AND (%(fmt)s::text IS NULL OR d.format = %(fmt)s)"
        " AND (%(prefix)s::text IS NULL OR starts_with(d.source, %(prefix)s))"
        " AND (%(source)s::text IS NULL OR d.source = %(source)s)"
        " AND (%(meta)s::jsonb IS NULL OR d.metadata @> %(meta)s)"
        " ORDER BY d.id LIMIT %(limit)s",
        {
            "c": collection_id,
            "after": after,
            "fmt": fmt,
            "prefix": source_prefix,
            "source": source,
            "meta": Jsonb(metadata) if metadata is not None else None,
            "limit": limit,
        },
    ).fetchall()
    return [_doc(r) for r in rows]


def document(conn: Conn, coll: repository.Collection, doc_id: int) -> dict[str, Any]:
    row = conn.execute(
        f"SELECT {_DOC_COLS} FROM documents d WHERE d.collection_id = %s AND d.id = %s",
        (coll.id, doc_id),
    ).fetchone()
    if row is None:
        raise document_not_found(doc_id, coll, conn)
    return _doc(row)


def document_by_source(conn: Conn, coll: repository.Collection, source: str) -> dict[str, Any]:
    row = conn.execute(
        f"SELECT {_DOC_COLS} FROM documents d WHERE d.collection_id = %s AND d.source = %s",
        (coll.id, source),
    ).fetchone()
    if row is None:
        raise document_not_found(source, coll)
    return _doc(row)


def delete_document(conn: Conn, coll: repository.Collection, doc_id: int) -> str:
    """Delete it (chunks and vectors follow by cascade); its source is returned.

    Under its source's write lock (``documents.lock_sources``), as every other writer of a
    document: deleted by id without it, the row went from under a re-ingest of the same
    file that had read it, whose replacing write then found nothing to update and crashed
    (a KeyError out of the whole ingest). A write in flight now ends first, and the delete
    removes what it stored; a write that comes later finds no row and adds the document.
    The collection row is held as writes hold it (``documents.hold_live``): a re-cutting
    model switch since ``coll`` was read is refused, not deleted from the kept chunk set."""
    documents.hold_live(conn, coll)
    row = conn.execute(
        "SELECT source FROM documents WHERE collection_id = %s AND id = %s", (coll.id, doc_id)
    ).fetchone()
    if row is None:
        raise document_not_found(doc_id, coll, conn)
    documents.lock_sources(conn, coll.id, [str(row[0])])
    row = conn.execute(
        "DELETE FROM documents WHERE collection_id = %s AND id = %s RETURNING source",
        (coll.id, doc_id),
    ).fetchone()
    if row is None:  # deleted by another request while this one waited for the lock
        raise document_not_found(doc_id, coll)
    documents.bury(conn, coll.id, [str(row[0])])  # a queued job does not store it again
    return str(row[0])


def document_not_found(
    document: int | str, coll: repository.Collection, conn: Conn | None = None
) -> DocumentNotFoundError:
    """The one error for a document id or source a collection does not hold: names both,
    and how to see what it holds.

    Given ``conn``, an id that a re-cutting model migration (or its rollback) renumbered
    is named with the id its document has now (:func:`_renumbered`): a client holding the
    id it was answered at ingest was told the document "is not in collection", although
    it was, under another id."""
    moved = _renumbered(conn, coll, document) if conn is not None else None
    if moved is not None:
        source, now = moved
        return DocumentNotFoundError(
            f"document {document!r} is no longer in collection {coll.name!r} under that id: "
            "a model migration cut its documents again (`ragstore models migrate`), which "
            f"gives them new ids; {source!r} is now document {now}"
        )
    return DocumentNotFoundError.missing(document, coll.name)


def _renumbered(
    conn: Conn, coll: repository.Collection, doc_id: int | str
) -> tuple[str, int] | None:
    """(source, id now) of the document that had id ``doc_id`` in a chunk set of ``coll``
    kept for a rollback (a shadow), when ``coll`` holds that source now; else None."""
    if not isinstance(doc_id, int) or isinstance(doc_id, bool):
        return None
    row = conn.execute(
        "SELECT d.source, l.id FROM documents d"
        " JOIN collections s ON s.id = d.collection_id AND s.shadow_of = %s"
        " JOIN documents l ON l.collection_id = %s AND l.source = d.source"
        " WHERE d.id = %s",
        (coll.id, coll.id, doc_id),
    ).fetchone()
    return (str(row[0]), int(row[1])) if row else None


def models(conn: Conn) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT m.provider, m.name, m.revision, m.dimension, m.distance, m.normalize,"
        " m.max_tokens, m.checksum,"
        " coalesce(array_agg(c.name ORDER BY c.name) FILTER (WHERE c.name IS NOT NULL), '{}')"
        " FROM embedding_models m"
        " LEFT JOIN embedding_spaces s ON s.model_id = m.id"
        " LEFT JOIN collections c ON c.active_space_id = s.id AND c.shadow_of IS NULL"
        " GROUP BY m.id ORDER BY m.name, m.revision"
    ).fetchall()
    return [
        {
            "provider": r[0],
            "name": r[1],
            "revision": r[2],
            "dimension": int(r[3]),
            "distance": r[4],
            "normalize": bool(r[5]),
            "max_tokens": int(r[6]),
            "checksum": r[7],
            "collections": list(r[8]),
        }
        for r in rows
    ]


def spaces(conn: Conn, collection_id: int) -> list[dict[str, Any]]:
    """Every space of a collection, with those of its shadows (chunk sets kept for a
    rollback, or being built, by a migration that cut the documents again)."""
    rows = conn.execute(
        "SELECT s.id, m.name || '@' || m.revision, s.status, s.table_name, s.created_at,"
        " s.activated_at FROM embedding_spaces s JOIN embedding_models m ON m.id = s.model_id"
        " WHERE s.collection_id = %(c)s"
        " OR s.collection_id IN (SELECT id FROM collections WHERE shadow_of = %(c)s)"
        " ORDER BY s.id",
        {"c": collection_id},
    ).fetchall()
    out = []
    for r in rows:
        count = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(str(r[3])))
        ).fetchone()
        out.append(
            {
                "id": int(r[0]),
                "model": r[1],
                "status": r[2],
                "table": r[3],
                "embedded": int(count[0]) if count else 0,
                "created_at": r[4],
                "activated_at": r[5],
            }
        )
    return out


def space_sizes(conn: Conn, *, exact_below_bytes: int) -> list[tuple[str, float, float]]:
    """(collection, embedded chunks, index bytes) of every active space: counted exactly
    for tables up to ``exact_below_bytes``, estimated from the planner's statistics above."""
    exists = conn.execute("SELECT to_regclass('collections') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return []
    rows: list[tuple[str, float, float]] = []
    for name, table, size, reltuples, index_bytes in conn.execute(
        "SELECT c.name, s.table_name, pg_relation_size(t.oid), t.reltuples,"
        " pg_indexes_size(t.oid) FROM collections c"
        " JOIN embedding_spaces s ON s.id = c.active_space_id"
        " JOIN pg_class t ON t.oid = to_regclass(quote_ident(s.table_name))"
        " WHERE c.shadow_of IS NULL"
    ).fetchall():
        if size <= exact_below_bytes or reltuples < 0:
            got = conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            ).fetchone()
            count = float(got[0]) if got else 0.0
        else:
            count = float(reltuples)
        rows.append((str(name), count, float(index_bytes)))
    return rows


def job_queue(conn: Conn) -> tuple[dict[str, int], float] | None:
    """({status: jobs} for todo and doing, age in seconds of the oldest waiting job), or
    None when the job queue's schema is not there."""
    exists = conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return None
    counts = {
        str(k): int(v)
        for k, v in conn.execute(
            "SELECT status::text, count(*) FROM procrastinate_jobs"
            " WHERE status IN ('todo', 'doing') GROUP BY status"
        ).fetchall()
    }
    oldest = conn.execute(
        "SELECT EXTRACT(EPOCH FROM now() - min(COALESCE(scheduled_at, e.at)))"
        " FROM procrastinate_jobs j"
        " LEFT JOIN LATERAL (SELECT min(at) AS at FROM procrastinate_events"
        "   WHERE job_id = j.id AND type = 'deferred') e ON true"
        " WHERE j.status = 'todo' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())"
    ).fetchone()
    return counts, float(oldest[0] or 0.0) if oldest else 0.0


def row_counts(conn: Conn) -> dict[str, int]:
    """Rows of collections, documents and chunks (what a backup records to check a restore)."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM collections),"
        " (SELECT count(*) FROM documents), (SELECT count(*) FROM chunks)"
    ).fetchone()
    assert row is not None
    return {"collections": int(row[0]), "documents": int(row[1]), "chunks": int(row[2])}
