"""SQL for collections, models, embedding spaces, documents and chunks.

Functions take an open connection and run inside the caller's transaction; they never
commit. Identifiers are composed with ``psycopg.sql``; values are always parameters.
"""

from __future__ import annotations

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


def write_document(conn: Conn, coll: Collection, doc: DocumentRecord, chunks: Sequence[Chunk],
                   vectors: np.ndarray, replace_id: int | None = None,
                   extra_vectors: Mapping[str, np.ndarray] | None = None) -> int:
    """Store one document with its chunks and their vectors (caller holds the transaction).

    ``vectors`` has one row per embeddable chunk, in chunk order (headings have none).
    ``extra_vectors`` (table -> vectors, same rows) fills the collection's spaces being
    built by a model migration, so they keep up with ingest.

    A changed document (``replace_id``) loses its old chunks and embeddings first. Chunks
    and vectors go in by binary COPY, with chunk ids drawn beforehand so parents resolve.
    The collection row is held ``FOR SHARE`` so a model switch waits for this write; if
    the active space changed since ``coll`` was read and no vectors for it were given,
    the write is refused rather than leave the searched space without this document.
    """
    spaces = {coll.table: vectors, **(extra_vectors or {})}
    live = _live_tables(conn, coll, set(spaces))
    if replace_id is not None:
        conn.execute("DELETE FROM chunks WHERE document_id = %s", (replace_id,))
        conn.execute(
            "UPDATE documents SET title = %s, format = %s, content_hash = %s, size_bytes = %s,"
            " metadata = %s, updated_at = now() WHERE id = %s",
            (doc.title, doc.format, doc.content_hash, doc.size_bytes, Jsonb(doc.metadata),
             replace_id),
        )
        doc_id = replace_id
    else:
        row = conn.execute(
            "INSERT INTO documents (collection_id, source, title, format, content_hash,"
            " size_bytes, metadata) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (coll.id, doc.source, doc.title, doc.format, doc.content_hash, doc.size_bytes,
             Jsonb(doc.metadata)),
        ).fetchone()
        assert row is not None
        doc_id = int(row[0])
    if not chunks:
        return doc_id
    ids = allocate_chunk_ids(conn, len(chunks))
    with conn.cursor().copy(
        "COPY chunks (id, document_id, collection_id, ordinal, chunk_type, text, section_path,"
        " parent_id, char_start, char_end, page, token_count, metadata, content_hash)"
        " FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["int8", "int8", "int4", "int4", "text", "text", "text[]", "int8",
                        "int4", "int4", "int4", "int4", "jsonb", "text"])
        for cid, ch in zip(ids, chunks, strict=True):
            parent = ids[ch.parent_ordinal] if ch.parent_ordinal is not None else None
            copy.write_row((cid, doc_id, coll.id, ch.ordinal, ch.chunk_type.value, ch.text,
                            list(ch.section_path), parent, ch.char_start, ch.char_end, ch.page,
                            ch.token_count, Jsonb(ch.metadata), ch.content_hash))
    embedded_ids = [cid for cid, ch in zip(ids, chunks, strict=True) if ch.embeddable]
    for table, vecs in spaces.items():
        if table not in live:
            continue  # retired (or pruned) while this document was being embedded
        copy_vectors(conn, table, embedded_ids, vecs)
    return doc_id


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
