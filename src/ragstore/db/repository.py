"""SQL for ``collections``: create (atomically, with its first space), read, list.

Functions take an open connection and run inside the caller's transaction; they never
commit. Identifiers are composed with ``psycopg.sql``; values are always parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ragstore.db import spaces
from ragstore.db.models import MODEL_COLS, spec_from_row, upsert_model
from ragstore.errors import CollectionNotFoundError, ConflictError
from ragstore.models import ModelSpec

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class Collection:
    id: int
    name: str
    settings: dict[str, Any]
    space_id: int
    table: str
    model_id: int
    model: ModelSpec


def get_collection(conn: Conn, name: str) -> Collection:
    row = conn.execute(
        f"SELECT c.id, c.name, c.settings, s.id, s.table_name, m.id, {MODEL_COLS}"
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
                      spec_from_row(row[6:]))


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
    space_id, _ = spaces.create_space(conn, cid, model_id, spec)
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


