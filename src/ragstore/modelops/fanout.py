"""Ingest's hook into a running migration: vectors for every space being built.

While ``ragstore models migrate`` backfills a new space, new documents must land in it too,
or the switch would lose them. Ingest calls :func:`building_vectors` once per encode round;
it finds the collection's ``building`` spaces and embeds the round's embeddable chunks with
each one's model: the same text the active model read (``Chunk.embed_text``, stored as
``chunks.context`` + text), exactly what the backfill embeds. With no migration running it
costs one small query.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ragstore.db import repository, spaces
from ragstore.db.errors import translated
from ragstore.errors import ModelError
from ragstore.models import Chunk
from ragstore.runtime import Runtime

log = logging.getLogger(__name__)


def building_vectors(
    rt: Runtime, coll: repository.Collection, documents: Sequence[Sequence[Chunk]]
) -> list[dict[str, np.ndarray]]:
    """For each document: building space table -> one vector per embeddable chunk.

    A document with a chunk longer than a space's model reads gets no vectors for that
    space (the model would cut the chunk short, and the switch would take it as it is):
    its chunks stay missing there, so the migration's backfill reaches them and stops
    with the chunk named, as it does for every stored chunk (``migrate._check_fits``).
    The document itself is stored as usual for the active model."""
    out: list[dict[str, np.ndarray]] = [{} for _ in documents]
    with rt.db.connection() as conn, translated(f"listing spaces of {coll.name!r}"):
        building = spaces.building_spaces(conn, coll.id)
    if not building:
        return out
    texts = [[c.embed_text for c in chunks if c.embeddable] for chunks in documents]
    for space in building:
        try:
            _fill(rt, coll, space, texts, out)
        except ModelError as exc:
            # the target's endpoint down or answering nonsense (or its model no longer
            # loading) made every ingest of the collection fail, although the active
            # model, the one searched, worked; the backfill embeds these documents, or
            # stops on the same error, before any switch
            for vectors in out:
                vectors.pop(space.table, None)
            log.warning(
                "the model %s that %r is being migrated to failed (%s): this round's "
                "documents are stored for the active model and left to the migration's "
                "backfill",
                space.model.key,
                coll.name,
                exc,
            )
    return out


def _fill(
    rt: Runtime,
    coll: repository.Collection,
    space: spaces.Space,
    texts: list[list[str]],
    out: list[dict[str, np.ndarray]],
) -> None:
    """Vectors of ``space``'s model for each document of ``texts`` whose chunks it reads
    whole, into ``out`` (see :func:`building_vectors`)."""
    embedder = rt.embedder(space.model)
    unique = list(dict.fromkeys(t for doc in texts for t in doc))
    limit = space.model.max_tokens
    too_long = {t for t, n in zip(unique, embedder.count_tokens(unique), strict=True) if n > limit}
    fits = [i for i, doc in enumerate(texts) if not too_long.intersection(doc)]
    if len(fits) < len(texts):
        log.warning(
            "%d document(s) of %r have a chunk longer than %s reads (%d tokens): left "
            "for the migration's backfill, which stops on it",
            len(texts) - len(fits),
            coll.name,
            space.model.key,
            limit,
        )
    wanted = list(dict.fromkeys(t for i in fits for t in texts[i]))
    vecs = dict(zip(wanted, embedder.embed(wanted), strict=True))
    for i in fits:
        doc = texts[i]
        out[i][space.table] = (
            np.stack([vecs[t] for t in doc])
            if doc
            else np.zeros((0, space.model.dimension), dtype=np.float32)
        )
