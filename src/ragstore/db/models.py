"""SQL for ``embedding_models``: pinning a model spec and reading specs back from rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ragstore.models import ModelSpec

Conn = psycopg.Connection[Any]

# the columns of a spec, selected from ``embedding_models m`` (read with :func:`spec_from_row`)
MODEL_COLS = ("m.provider, m.name, m.revision, m.dimension, m.distance, m.normalize, "
              "m.max_tokens, m.checksum, m.options")


def spec_from_row(row: Sequence[Any]) -> ModelSpec:
    provider, name, revision, dimension, distance, normalize, max_tokens, checksum, options = row
    return ModelSpec(provider, name, revision, int(dimension), distance, bool(normalize),
                     int(max_tokens), checksum, dict(options or {}))


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
