"""SQL for collections, models, embedding spaces, documents and chunks.

Functions take an open connection and run inside the caller's transaction; they never
commit. Identifiers are composed with ``psycopg.sql``; values are always parameters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ragstore.errors import CollectionNotFoundError, ConflictError
from ragstore.models import Chunk, ModelSpec

Conn = psycopg.Connection[Any]

DISTANCE_OPS = {"cosine": "vector_cosine_ops", "l2": "vector_l2_ops", "ip": "vector_ip_ops"}

_changes = 0  # bumped whenever this process changes what a collection name resolves to


def collections_changed() -> None:
    """Note that a collection was created, deleted or switched to another space.

    Caches of :func:`get_collection` (the search path's) compare :func:`changes` to drop
    what they hold; other processes' caches expire on their own short timer.
    """
    global _changes
    _changes += 1


def changes() -> int:
    """How many collection changes this process has made (see :func:`collections_changed`)."""
    return _changes


@dataclass(frozen=True)
class Collection:
    id: int
    name: str
    settings: dict[str, Any]
    space_id: int
    table: str
    model_id: int
    model: ModelSpec


def _spec_from_row(row: Sequence[Any]) -> ModelSpec:
    provider, name, revision, dimension, distance, normalize, max_tokens, checksum, options = row
    return ModelSpec(provider, name, revision, int(dimension), distance, bool(normalize),
                     int(max_tokens), checksum, dict(options or {}))


_MODEL_COLS = ("m.provider, m.name, m.revision, m.dimension, m.distance, m.normalize, "
               "m.max_tokens, m.checksum, m.options")


def upsert_model(conn: Conn, spec: ModelSpec) -> int:
    """Pin a model spec; an existing pin with the same name and revision is returned as is."""
    row = conn.execute(
        "INSERT INTO embedding_models (provider, name, revision, dimension, distance, normalize,"
        " max_tokens, checksum, options) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (name, revision) DO NOTHING RETURNING id",
        (spec.provider, spec.name, spec.revision, spec.dimension, spec.distance, spec.normalize,
         spec.max_tokens, spec.checksum, Jsonb(spec.options)),
    ).fetchone()
    if row:
        return int(row[0])
    row = conn.execute("SELECT id FROM embedding_models WHERE name = %s AND revision = %s",
                       (spec.name, spec.revision)).fetchone()
    assert row is not None
    return int(row[0])


def create_space(conn: Conn, collection_id: int, model_id: int, spec: ModelSpec) -> tuple[int, str]:
    """A new embedding space: its row and its ``emb_<id>`` table with an HNSW index."""
    row = conn.execute(
        "INSERT INTO embedding_spaces (collection_id, model_id, table_name)"
        " VALUES (%s, %s, 'emb_pending_' || gen_random_uuid()) RETURNING id",
        (collection_id, model_id),
    ).fetchone()
    assert row is not None
    space_id = int(row[0])
    table = f"emb_{space_id}"
    conn.execute("UPDATE embedding_spaces SET table_name = %s WHERE id = %s", (table, space_id))
    conn.execute(sql.SQL(
        "CREATE TABLE {t} (chunk_id bigint PRIMARY KEY REFERENCES chunks(id) ON DELETE CASCADE,"
        " embedding vector({dim}) NOT NULL)"
    ).format(t=sql.Identifier(table), dim=sql.Literal(spec.dimension)))
    conn.execute(sql.SQL("CREATE INDEX {i} ON {t} USING hnsw (embedding {ops})").format(
        i=sql.Identifier(f"{table}_hnsw"), t=sql.Identifier(table),
        ops=sql.SQL(DISTANCE_OPS[spec.distance])))
    return space_id, table


def get_collection(conn: Conn, name: str) -> Collection:
    row = conn.execute(
        f"SELECT c.id, c.name, c.settings, s.id, s.table_name, m.id, {_MODEL_COLS}"
        " FROM collections c JOIN embedding_spaces s ON s.id = c.active_space_id"
        " JOIN embedding_models m ON m.id = s.model_id WHERE c.name = %s",
        (name,),
    ).fetchone()
    if row is None:
        names = [r[0] for r in conn.execute("SELECT name FROM collections ORDER BY name")]
        known = ", ".join(str(n) for n in names) or "none yet"
        raise CollectionNotFoundError(
            f"collection {name!r} does not exist (collections: {known}); "
            "ingest into it to create it"
        )
    return Collection(int(row[0]), row[1], dict(row[2]), int(row[3]), row[4], int(row[5]),
                      _spec_from_row(row[6:]))


def create_collection(conn: Conn, name: str, spec: ModelSpec,
                      settings: dict[str, Any] | None = None) -> Collection:
    """A collection bound to ``spec`` through a new, active embedding space."""
    try:
        with conn.transaction():
            row = conn.execute(
                "INSERT INTO collections (name, settings) VALUES (%s, %s) RETURNING id",
                (name, Jsonb(settings or {})),
            ).fetchone()
    except psycopg.errors.UniqueViolation:
        raise ConflictError(f"collection {name!r} already exists") from None
    except psycopg.errors.CheckViolation:
        raise ConflictError(
            f"invalid collection name {name!r}: use 1-63 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        ) from None
    assert row is not None
    cid = int(row[0])
    model_id = upsert_model(conn, spec)
    space_id, _ = create_space(conn, cid, model_id, spec)
    conn.execute("UPDATE embedding_spaces SET status = 'active', activated_at = now()"
                 " WHERE id = %s", (space_id,))
    conn.execute("UPDATE collections SET active_space_id = %s WHERE id = %s", (space_id, cid))
    collections_changed()
    return get_collection(conn, name)


def list_collections(conn: Conn) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT c.name, m.name, m.revision, s.table_name,"
        " (SELECT count(*) FROM documents d WHERE d.collection_id = c.id),"
        " (SELECT count(*) FROM chunks k WHERE k.collection_id = c.id), c.created_at"
        " FROM collections c LEFT JOIN embedding_spaces s ON s.id = c.active_space_id"
        " LEFT JOIN embedding_models m ON m.id = s.model_id ORDER BY c.name"
    ).fetchall()
    return [{"name": r[0], "model": f"{r[1]}@{r[2]}", "table": r[3], "documents": r[4],
             "chunks": r[5], "created_at": r[6].isoformat()} for r in rows]


def document_hashes(conn: Conn, collection_id: int,
                    sources: Sequence[str]) -> dict[str, tuple[int, str]]:
    """source -> (document id, content hash) for the sources already stored."""
    rows = conn.execute(
        "SELECT source, id, content_hash FROM documents"
        " WHERE collection_id = %s AND source = ANY(%s)",
        (collection_id, list(sources)),
    ).fetchall()
    return {r[0]: (int(r[1]), r[2]) for r in rows}


def stored_embeddings(conn: Conn, coll: Collection,
                      hashes: Sequence[str]) -> dict[str, np.ndarray]:
    """content hash -> vector for chunks of this collection already embedded in its space."""
    if not hashes:
        return {}
    rows = conn.execute(sql.SQL(
        "SELECT DISTINCT ON (c.content_hash) c.content_hash, e.embedding"
        " FROM chunks c JOIN {t} e ON e.chunk_id = c.id"
        " WHERE c.collection_id = %s AND c.content_hash = ANY(%s)"
    ).format(t=sql.Identifier(coll.table)), (coll.id, list(set(hashes)))).fetchall()
    return {r[0]: np.asarray(r[1].to_numpy(), dtype=np.float32) for r in rows}


@dataclass
class DocumentRecord:
    source: str
    title: str | None
    format: str
    content_hash: str
    size_bytes: int
    metadata: dict[str, Any]


@dataclass
class DocumentWrite:
    """One document to store: its record, chunks and vectors (one row per embeddable chunk,
    in chunk order; headings have none). ``replace_id`` names the stored document it
    replaces; ``extra_vectors`` (table -> vectors, same rows) fills spaces being built by a
    model migration, so they keep up with ingest."""

    record: DocumentRecord
    chunks: Sequence[Chunk]
    vectors: np.ndarray
    replace_id: int | None = None
    extra_vectors: Mapping[str, np.ndarray] | None = None


def write_document(conn: Conn, coll: Collection, doc: DocumentRecord, chunks: Sequence[Chunk],
                   vectors: np.ndarray, replace_id: int | None = None,
                   extra_vectors: Mapping[str, np.ndarray] | None = None) -> int:
    """Store one document with its chunks and their vectors (caller holds the transaction)."""
    return write_documents(conn, coll, [DocumentWrite(doc, chunks, vectors, replace_id,
                                                      extra_vectors)])[0]


def write_documents(conn: Conn, coll: Collection, docs: Sequence[DocumentWrite]) -> list[int]:
    """Store documents with their chunks and vectors in a fixed number of statements.

    The caller holds the transaction, so the documents land together or not at all. Ingest
    writes a whole encode round this way: one row lock, one INSERT of the documents, one
    COPY of all chunks and one per space, so the statement triggers (BM25 statistics) run
    once per round instead of once per document, and there is one commit. Replaced documents
    lose their old chunks and embeddings first. Chunk ids are drawn beforehand so parents
    and vectors can name them. The collection row is held ``FOR SHARE`` so a model switch
    waits for this write; if the active space changed since ``coll`` was read and no vectors
    for it were given, the write is refused rather than leave the searched space without
    these documents. Returns the document ids, in order.
    """
    if not docs:
        return []
    provided = set.intersection(*({coll.table, *(d.extra_vectors or {})} for d in docs))
    live = _live_tables(conn, coll, provided)
    doc_ids: list[int | None] = [d.replace_id for d in docs]
    replaced = [d for d in docs if d.replace_id is not None]
    if replaced:
        conn.execute("DELETE FROM chunks WHERE document_id = ANY(%s)",
                     ([d.replace_id for d in replaced],))
        conn.cursor().executemany(
            "UPDATE documents SET title = %s, format = %s, content_hash = %s, size_bytes = %s,"
            " metadata = %s, updated_at = now() WHERE id = %s",
            [(d.record.title, d.record.format, d.record.content_hash, d.record.size_bytes,
              Jsonb(d.record.metadata), d.replace_id) for d in replaced],
        )
    added = [i for i, d in enumerate(docs) if d.replace_id is None]
    if added:
        recs = [docs[i].record for i in added]
        rows = conn.execute(
            "INSERT INTO documents (collection_id, source, title, format, content_hash,"
            " size_bytes, metadata)"
            " SELECT %s, s, t, f, h, b, m::jsonb FROM unnest("
            "%s::text[], %s::text[], %s::text[], %s::text[], %s::int8[], %s::text[])"
            " AS u(s, t, f, h, b, m) RETURNING source, id",
            (coll.id, [r.source for r in recs], [r.title for r in recs],
             [r.format for r in recs], [r.content_hash for r in recs],
             [r.size_bytes for r in recs], [json.dumps(r.metadata) for r in recs]),
        ).fetchall()
        by_source = {str(source): int(did) for source, did in rows}
        for i, r in zip(added, recs, strict=True):
            doc_ids[i] = by_source[r.source]
    stored = [int(i) for i in doc_ids if i is not None]  # every document has its id now
    ids = allocate_chunk_ids(conn, sum(len(d.chunks) for d in docs))
    _copy_chunks(conn, coll, docs, stored, ids)
    embedded_ids: list[int] = []
    offset = 0
    for d in docs:
        embedded_ids += [cid for cid, ch in zip(ids[offset:offset + len(d.chunks)], d.chunks,
                                                strict=True) if ch.embeddable]
        offset += len(d.chunks)
    for table in sorted(provided & live):  # not a space retired or pruned meanwhile
        vecs = [d.vectors if table == coll.table else (d.extra_vectors or {})[table]
                for d in docs]
        stacked = np.concatenate(vecs) if len(vecs) > 1 else vecs[0]
        copy_vectors(conn, table, embedded_ids, stacked)
    return stored


def _copy_chunks(conn: Conn, coll: Collection, docs: Sequence[DocumentWrite],
                 doc_ids: Sequence[int], ids: Sequence[int]) -> None:
    """One binary COPY of every document's chunks, parents resolved to the drawn ids."""
    if not ids:
        return
    with conn.cursor().copy(
        "COPY chunks (id, document_id, collection_id, ordinal, chunk_type, text, section_path,"
        " parent_id, char_start, char_end, page, token_count, metadata, content_hash)"
        " FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["int8", "int8", "int4", "int4", "text", "text", "text[]", "int8",
                        "int4", "int4", "int4", "int4", "jsonb", "text"])
        offset = 0
        for doc_id, d in zip(doc_ids, docs, strict=True):
            mine = ids[offset:offset + len(d.chunks)]
            offset += len(d.chunks)
            for cid, ch in zip(mine, d.chunks, strict=True):
                parent = mine[ch.parent_ordinal] if ch.parent_ordinal is not None else None
                copy.write_row((cid, doc_id, coll.id, ch.ordinal, ch.chunk_type.value, ch.text,
                                list(ch.section_path), parent, ch.char_start, ch.char_end,
                                ch.page, ch.token_count, Jsonb(ch.metadata), ch.content_hash))


def allocate_chunk_ids(conn: Conn, n: int) -> list[int]:
    """Draw ``n`` chunk ids up front, so parents and vectors can name them in one COPY."""
    return [int(r[0]) for r in conn.execute(
        "SELECT nextval(pg_get_serial_sequence('chunks', 'id')) FROM generate_series(1, %s)",
        (n,))]


def copy_vectors(conn: Conn, table: str, ids: Sequence[int], vectors: np.ndarray) -> None:
    """Binary COPY of vectors for chunks written in this same transaction."""
    with conn.cursor().copy(sql.SQL(
        "COPY {t} (chunk_id, embedding) FROM STDIN (FORMAT BINARY)"
    ).format(t=sql.Identifier(table))) as copy:
        copy.set_types(["int8", "vector"])
        for cid, vec in zip(ids, vectors, strict=True):
            copy.write_row((cid, vec))


def _live_tables(conn: Conn, coll: Collection, provided: set[str]) -> set[str]:
    """Lock the collection against a model switch; the tables a write must fill."""
    conn.execute("SELECT 1 FROM collections WHERE id = %s FOR SHARE", (coll.id,))
    rows = conn.execute(
        "SELECT s.table_name, s.status, s.id = c.active_space_id FROM embedding_spaces s"
        " JOIN collections c ON c.id = s.collection_id"
        " WHERE s.collection_id = %s AND s.status IN ('active', 'building')", (coll.id,)
    ).fetchall()
    active = next((r[0] for r in rows if r[2]), coll.table)
    if active not in provided:
        raise ConflictError(
            f"collection {coll.name!r} switched to another embedding model while this "
            "document was being embedded; run the ingest again to store it"
        )
    return {r[0] for r in rows}


def sources_under(conn: Conn, collection_id: int, prefixes: Sequence[str],
                  exact: Sequence[str] = ()) -> list[str]:
    """Sources of the collection that start with one of ``prefixes`` or equal one of ``exact``."""
    rows = conn.execute(
        "SELECT source FROM documents WHERE collection_id = %s AND (source = ANY(%s)"
        " OR EXISTS (SELECT 1 FROM unnest(%s::text[]) p WHERE left(source, length(p)) = p))"
        " ORDER BY source",
        (collection_id, list(exact), list(prefixes)),
    ).fetchall()
    return [str(r[0]) for r in rows]


def delete_documents(conn: Conn, collection_id: int, sources: Sequence[str]) -> int:
    cur = conn.execute("DELETE FROM documents WHERE collection_id = %s AND source = ANY(%s)",
                       (collection_id, list(sources)))
    return cur.rowcount
