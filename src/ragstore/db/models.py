"""SQL for ``embedding_models``: pinning a model spec, reading pins and specs back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ragstore.errors import ConflictError
from ragstore.models import ModelSpec, shown_options

Conn = psycopg.Connection[Any]

# the columns of a spec, selected from ``embedding_models m`` (read with :func:`spec_from_row`)
MODEL_COLS = (
    "m.provider, m.name, m.revision, m.dimension, m.distance, m.normalize, "
    "m.max_tokens, m.checksum, m.options"
)


def spec_from_row(row: Sequence[Any]) -> ModelSpec:
    provider, name, revision, dimension, distance, normalize, max_tokens, checksum, options = row
    return ModelSpec(
        provider,
        name,
        revision,
        int(dimension),
        distance,
        bool(normalize),
        int(max_tokens),
        checksum,
        dict(options or {}),
    )


def upsert_model(conn: Conn, spec: ModelSpec) -> int:
    """Pin a model spec; an existing pin with the same name and revision is returned as is,
    held ``FOR KEY SHARE`` until the transaction ends (the caller creates a space naming
    it: a ``models remove`` must wait, see :func:`lock_pin`). One removed between the
    insert that found it and that lock is pinned again from ``spec``."""
    for _ in range(2):
        row = conn.execute(
            "INSERT INTO embedding_models (provider, name, revision, dimension, distance,"
            " normalize, max_tokens, checksum, options)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (name, revision) DO NOTHING RETURNING id",
            (
                spec.provider,
                spec.name,
                spec.revision,
                spec.dimension,
                spec.distance,
                spec.normalize,
                spec.max_tokens,
                spec.checksum,
                Jsonb(spec.options),
            ),
        ).fetchone()
        if row:
            return int(row[0])
        row = conn.execute(
            "SELECT id FROM embedding_models WHERE name = %s AND revision = %s FOR KEY SHARE",
            (spec.name, spec.revision),
        ).fetchone()
        if row:
            return int(row[0])
    # removed twice over, between each insert and its lock
    raise ConflictError(
        f"model {spec.key} was removed while it was being pinned (ragstore models remove "
        "ran meanwhile); nothing was created: try again"
    )


def relocate(conn: Conn, model_id: int, path: str) -> None:
    """Point a local model's pin at the folder its weights now lie in (the caller has
    checked that they hash to the pinned checksum: the vectors are the same)."""
    conn.execute(
        "UPDATE embedding_models SET options = options || jsonb_build_object('path', %s::text)"
        " WHERE id = %s",
        (path, model_id),
    )


@dataclass(frozen=True)
class PinnedModel:
    id: int
    spec: ModelSpec
    created_at: str
    collections: list[dict[str, str]]  # {"collection": name, "status": space status}

    def as_dict(self) -> dict[str, Any]:
        s = self.spec
        # a pin made before credentials in the URL were refused holds its password
        opts = {k: v for k, v in shown_options(s.options).items() if k != "probe"}
        return {
            "id": self.id,
            "key": s.key,
            "provider": s.provider,
            "name": s.name,
            "revision": s.revision,
            "dimension": s.dimension,
            "distance": s.distance,
            "normalize": s.normalize,
            "max_tokens": s.max_tokens,
            "checksum": s.checksum,
            "options": opts,
            "probe_pinned": bool(s.options.get("probe")),
            "created_at": self.created_at,
            "collections": self.collections,
        }


_SELECT = (
    "SELECT m.id, m.provider, m.name, m.revision, m.dimension, m.distance, m.normalize,"
    " m.max_tokens, m.checksum, m.options, m.created_at,"
    " coalesce((SELECT jsonb_agg(jsonb_build_object('collection', coalesce(p.name, c.name),"
    " 'status', s.status) ORDER BY coalesce(p.name, c.name), s.id) FROM embedding_spaces s"
    " JOIN collections c ON c.id = s.collection_id"
    " LEFT JOIN collections p ON p.id = c.shadow_of WHERE s.model_id = m.id),"
    " '[]'::jsonb) FROM embedding_models m"
)


def _pinned(row: Any) -> PinnedModel:
    return PinnedModel(int(row[0]), spec_from_row(row[1:10]), row[10].isoformat(), list(row[11]))


def pinned_models(
    conn: Conn, name: str | None = None, revision: str | None = None
) -> list[PinnedModel]:
    """Pinned models (all, or those named ``name``, optionally at ``revision``), by name
    then age, each with the collections whose spaces use it."""
    where = ""
    params: tuple[str, ...] = ()
    if name is not None:
        where = " WHERE m.name = %s" + (" AND m.revision = %s" if revision else "")
        params = (name, revision) if revision else (name,)
    rows = conn.execute(_SELECT + where + " ORDER BY m.name, m.id", params).fetchall()
    return [_pinned(r) for r in rows]


def dimension_of(conn: Conn, model_id: int) -> int | None:
    row = conn.execute(
        "SELECT dimension FROM embedding_models WHERE id = %s", (model_id,)
    ).fetchone()
    return int(row[0]) if row else None


@dataclass(frozen=True)
class PinUse:
    """One embedding space that uses a pin: the collection it serves (a kept chunk set
    named by its live collection), the space's status, and whether it is such a set."""

    collection: str
    status: str  # building | active | retired
    own_chunks: bool  # a chunk set of its own (a shadow row), not the live chunks


def lock_pin(conn: Conn, model_id: int) -> bool:
    """Hold the pin's row ``FOR UPDATE`` until the transaction ends; False if it is gone.

    Every new embedding space that names the pin holds the row ``FOR KEY SHARE`` (the
    foreign key's check, and :func:`hold_pin` before a migration creates one), so this
    waits for one being created to commit and then sees it, and any created after waits
    for this transaction and then finds the pin as it left it."""
    row = conn.execute(
        "SELECT id FROM embedding_models WHERE id = %s FOR UPDATE", (model_id,)
    ).fetchone()
    return row is not None


def hold_pin(conn: Conn, model_id: int) -> bool:
    """Hold the pin's row ``FOR KEY SHARE`` until the transaction ends (no removal can
    run meanwhile); False if it was removed (``ragstore models remove``)."""
    row = conn.execute(
        "SELECT id FROM embedding_models WHERE id = %s FOR KEY SHARE", (model_id,)
    ).fetchone()
    return row is not None


def pin_uses(conn: Conn, model_id: int) -> list[PinUse]:
    """Every embedding space that uses the pin, by collection then age."""
    rows = conn.execute(
        "SELECT coalesce(p.name, c.name), s.status, c.shadow_of IS NOT NULL"
        " FROM embedding_spaces s JOIN collections c ON c.id = s.collection_id"
        " LEFT JOIN collections p ON p.id = c.shadow_of"
        " WHERE s.model_id = %s ORDER BY 1, s.id",
        (model_id,),
    ).fetchall()
    return [PinUse(str(name), str(status), bool(shadow)) for name, status, shadow in rows]


def delete_pin(conn: Conn, model_id: int) -> None:
    """Delete the pin's row (the caller holds it with :func:`lock_pin` and found no use)."""
    conn.execute("DELETE FROM embedding_models WHERE id = %s", (model_id,))
