"""A model migration that cuts the documents again: for a target that cuts them otherwise.

Chunks cut for a model's budget and tokenizer would be cut short by a model that reads
less or counts longer, and are not what ingest makes for one of a larger budget or another
tokenizer (``migrate.cuts_alike`` decides), so the target gets its own chunk set: a
*shadow* collection row (``repository.create_shadow``) holding a copy of every document
with chunks cut for the target (:func:`ragstore.chunking.recipe.rechunk`, i.e. what a
fresh ingest under the target makes), its BM25 statistics and the target's space. Searches
and ingest keep using the live row; the backfill is "every live document without an
identical twin in the shadow", so a killed run resumes and documents ingested, changed or
deleted meanwhile are caught up pass by pass. The switch swaps the two rows' names in one
transaction that holds both rows exclusively (writes hold them shared), once nothing is
out of step; the old row becomes the shadow, with its chunks and vectors untouched, so
``rollback`` swaps back and ``prune`` drops it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ragstore.chunking import recipe
from ragstore.db import documents, repository, spaces
from ragstore.db.errors import translated
from ragstore.db.models import PinnedModel
from ragstore.errors import MigrationStateError
from ragstore.modelops.remove import hold_target
from ragstore.models import Chunk

BATCH_DOCUMENTS = 64  # documents cut, embedded and written per transaction


def find_shadow(
    conn: Any, coll: repository.Collection, model_id: int
) -> repository.Collection | None:
    """The newest shadow of ``coll`` whose chunk set was cut for model ``model_id``."""
    found = [s for s in repository.shadows(conn, coll.id) if s.model_id == model_id]
    return found[-1] if found else None


def building_shadow(conn: Any, coll: repository.Collection) -> repository.Collection | None:
    """The shadow a re-chunking migration is filling, if one is under way."""
    for sh in repository.shadows(conn, coll.id):
        space = spaces.get_space(conn, sh.space_id)
        if space is not None and space.status == "building":
            return sh
    return None


def prepare(
    conn: Any, coll: repository.Collection, target: PinnedModel
) -> tuple[repository.Collection, spaces.Space]:
    """The shadow to fill for ``target``: one being built resumed, a retired one (the
    chunk set of a model switched away from) reused, or a new one."""
    spaces.lock_collection(conn, coll.id)
    hold_target(conn, target.id, target.spec.key, coll.name)
    sh = find_shadow(conn, coll, target.id)
    if sh is None:
        sh = repository.create_shadow(conn, coll, target.id, target.spec)
    space = spaces.get_space(conn, sh.space_id)
    assert space is not None
    if space.status != "building":
        spaces.set_status(conn, space.id, "building")
        space = spaces.get_space(conn, sh.space_id)
        assert space is not None
    return sh, space


def cut(
    conn: Any, doc_id: int, record: documents.DocumentRecord, embedder: Any, max_tokens: int
) -> list[Chunk]:
    """The chunks of a stored document for a model of ``max_tokens`` (and its tokenizer)."""
    if record.parsed is not None:
        return recipe.rechunk(record.parsed, embedder, max_tokens)
    from ragstore.chunking import chunk_document

    stored = documents.stored_chunks(conn, doc_id)
    doc = recipe.blocks_from_chunks(record.format, record.title, stored)
    return chunk_document(doc, embedder, max_tokens)


def backfill(
    rt: Any,
    coll: repository.Collection,
    shadow: repository.Collection,
    embedder: Any,
    report: Any,
    progress: Any,
    lock: Any,
) -> None:
    """Bring the shadow in step with the live collection: cut, embed and write every live
    document it lacks (one transaction per batch, through the one write path), then
    delete the documents the live collection no longer has.

    ``lock`` (the command's ``MigrationLock``) is checked before each batch, as the plain
    backfill does: checked once per pass, a run whose lock was lost (to a ``models
    cancel`` dropping this chunk set, say) cut and embedded every document before it
    stopped."""
    spec = shadow.model
    with rt.db.connection() as conn, translated(f"counting documents of {coll.name!r}"):
        total = documents.count_documents(conn, coll.id)
        todo = documents.count_without_twin(conn, coll.id, shadow.id)
    if report.batches == 0:
        report.resumed_from = total - todo
    report.total = total
    done = total - todo
    if progress:
        progress(done, total)
    after = 0
    while True:
        lock.check()
        with rt.db.connection() as conn, translated(f"reading documents of {coll.name!r}"):
            batch = documents.without_twin(conn, coll.id, shadow.id, after, BATCH_DOCUMENTS)
            cuts = [cut(conn, i, rec, embedder, spec.max_tokens) for i, rec in batch]
            hashes = [c.content_hash for chunks in cuts for c in chunks if c.embeddable]
            stored = documents.stored_embeddings(conn, shadow, hashes)
        if not batch:
            break
        todo_texts: dict[str, str] = {}
        for chunks in cuts:
            for c in chunks:
                if c.embeddable and c.content_hash not in stored:
                    todo_texts.setdefault(c.content_hash, c.embed_text)
        t0 = time.perf_counter()
        fresh = dict(zip(todo_texts, embedder.embed(list(todo_texts.values())), strict=True))
        report.encode_seconds += time.perf_counter() - t0
        writes = []
        for (_, rec), chunks in zip(batch, cuts, strict=True):
            rows = [
                fresh[c.content_hash] if c.content_hash in fresh else stored[c.content_hash]
                for c in chunks
                if c.embeddable
            ]
            vecs = np.stack(rows) if rows else np.zeros((0, spec.dimension), dtype=np.float32)
            writes.append(documents.DocumentWrite(rec, chunks, vecs))
        with rt.db.connection() as conn, translated(f"storing re-cut chunks of {coll.name!r}"):
            documents.write_documents(conn, shadow, writes, force=True)
        report.embedded += len(todo_texts)
        report.rechunked += len(batch)
        report.batches += 1
        done += len(batch)
        after = batch[-1][0]
        if progress:
            progress(min(done, total), total)
    with rt.db.connection() as conn, translated(f"removing deleted documents of {coll.name!r}"):
        gone = documents.sources_without_twin(conn, shadow.id, coll.id)
        if gone:
            # no tombstones of its own: the live row's, stamped when the user's delete was
            # acknowledged, move over at the switch (``documents.move_tombstones``)
            documents.delete_sources(conn, shadow.id, gone, stamp=False)
    # counted again: documents stored or deleted during the pass changed the total
    with rt.db.connection() as conn, translated(f"counting documents of {coll.name!r}"):
        total = documents.count_documents(conn, coll.id)
        todo = documents.count_without_twin(conn, coll.id, shadow.id)
    report.total = total
    if progress:
        progress(total - todo, total)


def out_of_step(conn: Any, a: repository.Collection, b: repository.Collection) -> list[str]:
    """Sources two chunk sets do not hold in the same version (either way)."""
    return sorted(
        set(documents.sources_without_twin(conn, a.id, b.id))
        | set(documents.sources_without_twin(conn, b.id, a.id))
    )


def in_step(conn: Any, a: repository.Collection, b: repository.Collection) -> bool:
    """Whether two chunk sets hold the same documents in the same versions."""
    return (
        documents.count_without_twin(conn, a.id, b.id) == 0
        and documents.count_without_twin(conn, b.id, a.id) == 0
    )


def swap(conn: Any, live: repository.Collection, shadow: repository.Collection) -> bool:
    """Switch ``live``'s name over to ``shadow`` if the two are in step; False when
    documents arrived meanwhile (the caller runs another pass). The caller commits."""
    repository.lock_rows(conn, [live.id, shadow.id])
    fresh = repository.collection_by_id(conn, live.id)
    if fresh is None or fresh.shadow or fresh.space_id != live.space_id:
        raise MigrationStateError(
            f"collection {live.name!r} switched model while migrating; run the migrate again"
        )
    if not in_step(conn, live, shadow):
        return False
    spaces.activate(conn, shadow.id, shadow.space_id, live.space_id)
    repository.swap_shadow(conn, live, shadow)
    # the queued jobs of the name write into the shadow from now on
    documents.move_tombstones(conn, live.id, shadow.id)
    return True


def ensure_not_stale(
    conn: Any, coll: repository.Collection, target_id: int, target_key: str
) -> None:
    """Refuse a migration to another model while a re-chunking one is under way."""
    sh = building_shadow(conn, coll)
    if sh is not None and sh.model_id != target_id:
        raise MigrationStateError(
            f"collection {coll.name!r} is already being migrated to {sh.model.key} (re-cut "
            f"chunks); finish that with `ragstore models migrate -c {coll.name} --to "
            f"{sh.model.key}` or drop it with `ragstore models cancel -c {coll.name}` first "
            f"(to {target_key})"
        )
