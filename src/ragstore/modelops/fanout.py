"""Ingest's hook into a running migration: vectors for every space being built.

While ``ragstore models migrate`` backfills a new space, new documents must land in it too,
or the switch would lose them. Ingest calls :func:`building_vectors` once per encode round;
it finds the collection's ``building`` spaces and embeds the round's embeddable chunks with
each one's model: the same text the active model read (``Chunk.embed_text``, stored as
``chunks.context`` + text), exactly what the backfill embeds. With no migration running it
costs one small query.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ragstore.db import repository, spaces
from ragstore.db.errors import translated
from ragstore.models import Chunk
from ragstore.runtime import Runtime


def building_vectors(
    rt: Runtime, coll: repository.Collection, documents: Sequence[Sequence[Chunk]]
) -> list[dict[str, np.ndarray]]:
    """For each document: building space table -> one vector per embeddable chunk."""
    out: list[dict[str, np.ndarray]] = [{} for _ in documents]
    with rt.db.connection() as conn, translated(f"listing spaces of {coll.name!r}"):
        building = spaces.building_spaces(conn, coll.id)
    for space in building:
        embedder = rt.embedder(space.model)
        texts = [[c.embed_text for c in chunks if c.embeddable] for chunks in documents]
        unique = list(dict.fromkeys(t for doc in texts for t in doc))
        vecs = dict(zip(unique, embedder.embed(unique), strict=True))
        for i, doc in enumerate(texts):
            out[i][space.table] = (
                np.stack([vecs[t] for t in doc])
                if doc
                else np.zeros((0, space.model.dimension), dtype=np.float32)
            )
    return out
