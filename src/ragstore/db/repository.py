"""SQL for ``collections``: create (atomically, with its first space), read, list.

Functions take an open connection and run inside the caller's transaction; they never
commit. Identifiers are composed with ``psycopg.sql``; values are always parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ragstore.db import changes, spaces
from ragstore.db.models import MODEL_COLS, spec_from_row, upsert_model
from ragstore.errors import (
    CollectionNotFoundError,
    ConflictError,
    InputError,
    invalid_collection_name,
)
from ragstore.models import COLLECTION_NAME, ModelSpec

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
    shadow: bool = False  # a shadow row: another chunk set of a collection (see create_shadow)
    # when the collection was made: a model switch moves it with the name to the row
    # swapped in (:func:`swap_shadow`), so a writer whose row was switched away from and
    # pruned still knows the collection by it (``documents.hold_live``)
    created_at: datetime | None = field(default=None, compare=False)


_SELECT = (
    f"SELECT c.id, c.name, c.settings, s.id, s.table_name, m.id, c.shadow_of IS NOT NULL,"
    f" c.created_at, {MODEL_COLS} FROM collections c"
    " JOIN embedding_spaces s ON s.id = c.active_space_id"
    " JOIN embedding_models m ON m.id = s.model_id"
)


def _collection(row: Any) -> Collection:
    return Collection(
        int(row[0]),
        row[1],
        dict(row[2]),
        int(row[3]),
        row[4],
        int(row[5]),
        spec_from_row(row[8:]),
        bool(row[6]),
        row[7],
    )


def get_collection(conn: Conn, name: str) -> Collection:
    """The named collection, or CollectionNotFoundError; InputError when ``name`` is not
    one a collection can have (:func:`check_name`), as the HTTP API and the Client answer
    it: the Store said "collection 'a/b' does not exist ... ingest into it to create it",
    which no ingest could. A name is checked only once no collection is found under it, so
    one stored before the check was as strict still opens."""
    if not isinstance(name, str) or "\x00" in name:  # PostgreSQL text cannot even hold it
        check_name(name)
    row = conn.execute(_SELECT + " WHERE c.name = %s AND c.shadow_of IS NULL", (name,)).fetchone()
    if row is None:
        check_name(name)
        names = [
            str(r[0])
            for r in conn.execute(
                "SELECT name FROM collections WHERE shadow_of IS NULL ORDER BY name"
            )
        ]
        raise CollectionNotFoundError.missing(name, names)
    return _collection(row)


def live_collections(conn: Conn) -> list[Collection]:
    """Every collection (shadows of a re-cut left out), by name, in one statement."""
    rows = conn.execute(_SELECT + " WHERE c.shadow_of IS NULL ORDER BY c.name").fetchall()
    return [_collection(r) for r in rows]


def collection_by_id(conn: Conn, collection_id: int) -> Collection | None:
    """A collection row by id, shadow or not."""
    row = conn.execute(_SELECT + " WHERE c.id = %s", (collection_id,)).fetchone()
    return _collection(row) if row else None


def shadows(conn: Conn, collection_id: int) -> list[Collection]:
    """The shadow rows of a collection (its other chunk sets), oldest first."""
    rows = conn.execute(
        _SELECT + " WHERE c.shadow_of = %s ORDER BY c.id", (collection_id,)
    ).fetchall()
    return [_collection(r) for r in rows]


def create_shadow(conn: Conn, coll: Collection, model_id: int, spec: ModelSpec) -> Collection:
    """A shadow of ``coll``: a hidden collection row (named ``~<id>``, found by no lookup
    by name and no listing) whose documents and chunks are cut for ``spec``, with one
    ``building`` space for it (no HNSW index yet: built once, after the backfill).

    A re-chunking model migration fills it and then swaps it in (:func:`swap_shadow`).
    """
    row = conn.execute(
        "INSERT INTO collections (name, settings, shadow_of)"
        " VALUES ('~' || (random() * 1e15)::int8, %s, %s) RETURNING id",
        (Jsonb(coll.settings), coll.id),
    ).fetchone()
    assert row is not None
    cid = int(row[0])
    conn.execute("UPDATE collections SET name = '~' || id WHERE id = %s", (cid,))
    space_id, _ = spaces.create_space(conn, cid, model_id, spec, index=False)
    conn.execute("UPDATE collections SET active_space_id = %s WHERE id = %s", (space_id, cid))
    got = collection_by_id(conn, cid)
    assert got is not None
    return got


def swap_shadow(conn: Conn, live: Collection, shadow: Collection) -> None:
    """Make ``shadow`` the collection named ``live.name`` and ``live`` its shadow, in the
    caller's transaction (which holds both rows locked): name, settings and creation time
    move over, and the other shadows of ``live`` follow to the new live row."""
    conn.execute(
        "UPDATE collections SET name = '~' || id, shadow_of = %s WHERE id = %s",
        (shadow.id, live.id),
    )
    conn.execute(
        "UPDATE collections n SET name = o.name_was, shadow_of = NULL, settings = o.settings,"
        " created_at = o.created_at FROM (SELECT %s::text AS name_was, settings, created_at"
        " FROM collections WHERE id = %s) o WHERE n.id = %s",
        (live.name, live.id, shadow.id),
    )
    conn.execute("UPDATE collections SET shadow_of = %s WHERE shadow_of = %s", (shadow.id, live.id))
    changes.collections_changed(conn)


def lock_rows(conn: Conn, collection_ids: list[int]) -> None:
    """Hold collection rows ``FOR UPDATE`` (in id order) until the transaction ends:
    document writes hold them shared, so this waits for writes in flight."""
    conn.execute(
        "SELECT id FROM collections WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (collection_ids,)
    )


NAME_RE = re.compile(rf"^{COLLECTION_NAME}$")
SETTINGS = {
    "ts_config": "text search configuration of the full-text index (a row of pg_ts_config)",
    "bm25_k1": "BM25 term-frequency saturation, a number from 0 to 10",
    "bm25_b": "BM25 length normalisation, a number from 0 to 1",
    "purpose": "free text describing the collection",
}


def validate_settings(conn: Conn, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings, checked: known keys, values of the right type and range, and a
    ``ts_config`` the server has. A bad value is refused here, at creation, instead of
    failing every later add and search in the collection."""
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        known = "; ".join(f"{k}: {v}" for k, v in SETTINGS.items())
        raise InputError(f"unknown collection setting {unknown[0]!r}; known settings are {known}")
    for key in ("bm25_k1", "bm25_b"):
        if key in settings:
            value = settings[key]
            high = 10.0 if key == "bm25_k1" else 1.0
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (0.0 <= float(value) <= high)
            ):
                raise InputError(
                    f"collection setting {key} must be a number from 0 to {high:g}, got {value!r}"
                )
    for key in ("ts_config", "purpose"):
        if key in settings and (not isinstance(settings[key], str) or "\x00" in settings[key]):
            raise InputError(f"collection setting {key} must be text, got {settings[key]!r}")
    if "ts_config" in settings:
        names = [
            str(r[0]) for r in conn.execute("SELECT cfgname FROM pg_ts_config ORDER BY cfgname")
        ]
        if settings["ts_config"] not in names:
            raise InputError(
                f"collection setting ts_config {settings['ts_config']!r} is not a text search "
                f"configuration of this PostgreSQL server; choose one of {', '.join(names)}"
            )
    return settings


def check_name(name: str) -> None:
    """InputError unless ``name`` is one a new collection may have (``NAME_RE``)."""
    # not a string (None, 7): the InputError too, not fullmatch's TypeError
    if not isinstance(name, str) or not NAME_RE.fullmatch(
        name
    ):  # match() let a final newline through
        raise invalid_collection_name(name)  # cut, as a caller's name may be megabytes


def create_collection(
    conn: Conn, name: str, spec: ModelSpec, settings: dict[str, Any] | None = None
) -> Collection:
    """A collection bound to ``spec`` through a new, active embedding space.

    Everything (the row, the model pin, the space, its table and index, the active space)
    is created in one transaction (a savepoint when the caller already holds one), so a
    failure at any step leaves no half-made collection behind.
    """
    check_name(name)
    try:
        with conn.transaction():
            checked = validate_settings(conn, dict(settings or {}))
            row = conn.execute(
                "INSERT INTO collections (name, settings) VALUES (%s, %s) RETURNING id",
                (name, Jsonb(checked)),
            ).fetchone()
            assert row is not None
            cid = int(row[0])
            model_id = upsert_model(conn, spec)
            space_id, _ = spaces.create_space(conn, cid, model_id, spec)
            conn.execute(
                "UPDATE embedding_spaces SET status = 'active', activated_at = now() WHERE id = %s",
                (space_id,),
            )
            conn.execute(
                "UPDATE collections SET active_space_id = %s WHERE id = %s", (space_id, cid)
            )
    except psycopg.errors.UniqueViolation:
        raise ConflictError(f"collection {name!r} already exists") from None
    except psycopg.errors.ProgramLimitExceeded as exc:
        raise InputError(
            f"cannot create collection {name!r} with model {spec.key}: "
            f"{str(exc).splitlines()[0]}; choose a model with fewer dimensions"
        ) from None
    changes.collections_changed(conn)
    return get_collection(conn, name)


def lock_name(conn: Conn, key: str) -> None:
    """A transaction-level advisory lock on ``key`` (e.g. one import per collection name,
    also for a collection that does not exist yet)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))


def list_collections(conn: Conn) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT c.name, m.name, m.revision, s.table_name,"
        " (SELECT count(*) FROM documents d WHERE d.collection_id = c.id),"
        " (SELECT count(*) FROM chunks k WHERE k.collection_id = c.id), c.created_at"
        " FROM collections c LEFT JOIN embedding_spaces s ON s.id = c.active_space_id"
        " LEFT JOIN embedding_models m ON m.id = s.model_id WHERE c.shadow_of IS NULL"
        " ORDER BY c.name"
    ).fetchall()
    return [
        {
            "name": r[0],
            "model": f"{r[1]}@{r[2]}",
            "table": r[3],
            "documents": r[4],
            "chunks": r[5],
            "created_at": r[6].isoformat(),
        }
        for r in rows
    ]
