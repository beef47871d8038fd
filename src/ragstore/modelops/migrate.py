"""Re-embedding a collection as a migration: build beside, backfill, validate, switch, undo.

``migrate`` creates (or resumes) a ``building`` space for the target model next to the
active one and fills it in batches, each committed on its own: the set of chunks still to
do is always "has a vector in the active space, none in the new one", so a killed run
simply continues and nothing is embedded twice. Searches keep using the active space the
whole time; ingest writes new documents to both (see :mod:`ragstore.modelops.fanout`).
When nothing is missing and a sample of queries is answered from the new space, the
collection's ``active_space_id`` is switched in one transaction that holds the collection
row exclusively, so no document can slip in between the last check and the switch.

``rollback`` switches back to the previous space (kept, ``retired``) at once; ``prune``
drops retired spaces; ``cancel`` drops an unfinished one.

A target that would cut the documents otherwise than the stored chunks were cut (another
tokenizer, budget or passage prefix: :func:`cuts_alike`) cannot embed them as they are (a
smaller budget or a tokenizer counting longer would cut them short, any other difference
leaves chunks that ingest would not make): its documents are cut again into a chunk set of
their own, a shadow collection row swapped in at the switch
(:mod:`ragstore.modelops.rechunk`).
Rollback, prune and cancel handle both kinds of space.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg

from ragstore.db import catalog, repository, spaces
from ragstore.db import session as db_session
from ragstore.db.errors import translated
from ragstore.embedding.registry import tokenizer_identity
from ragstore.errors import ConflictError, InputError, MigrationStateError, ModelError
from ragstore.modelops import rechunk
from ragstore.modelops.remove import hold_target
from ragstore.modelops.specs import find_model
from ragstore.models import VECTOR_ONLY_PROVIDER, ModelSpec
from ragstore.runtime import Runtime

Progress = Callable[[int, int], None]  # (chunks with a vector in the new space, total)

MAX_PASSES = 20
MIN_SELF_RECALL = 0.5


@dataclass
class MigrationReport:
    collection: str
    source: str
    target: str
    space_id: int
    table: str
    total: int = 0  # chunks with a vector in the source space (re-cut: documents)
    resumed_from: int = 0  # vectors already in the target space when this run started
    embedded: int = 0  # chunks embedded by this run
    rechunked: int = 0  # documents cut again for the target (a smaller token budget)
    recut: bool = False  # the target has a chunk set of its own (totals count documents)
    batches: int = 0
    seconds: float = 0.0
    encode_seconds: float = 0.0
    sample_queries: int = 0
    sample_self_recall: float = 0.0
    switched: bool = False
    remaining: int = 0  # --no-switch: chunks (re-cut: documents) the new space still lacks
    ingested: int = 0  # vectors ingest wrote to the new space while this run went on
    notes: list[str] = field(default_factory=list)

    @property
    def chunks_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0


class MigrationLock:
    """The collection's migration lock, held on a connection of its own for a whole
    command (see :func:`_migration_lock`).

    That connection sits idle through a backfill, so the server can end it under the
    command (``idle_session_timeout``, a network drop, an administrator) and the lock goes
    with it: another migrate, rollback, prune or cancel could then run alongside and the
    two act on each other's spaces. The connection is spared the idle timeout, and
    :meth:`check` refuses the command before each decisive step once the lock is gone."""

    def __init__(
        self, conn: psycopg.Connection[Any], coll: repository.Collection, command: str
    ) -> None:
        self._conn = conn
        self._coll = coll
        self._command = command

    def check(self) -> None:
        """Refuse (MigrationStateError) unless this command still holds the lock.

        Called while the caller's transaction holds the collection row (``FOR UPDATE``),
        every other command's decisive step waits for that row, so a lock held now means
        none of them ran since this command took it."""
        try:
            held = spaces.holds_migration_lock(self._conn, self._coll.id)
        except psycopg.Error:  # the connection was ended, and its lock with it
            held = False
        if held:
            return
        name, command = self._coll.name, self._command
        again = " (it resumes where it stopped)" if command == "migrate" else ""
        raise MigrationStateError(
            f"this {command} of collection {name!r} lost its migration lock: its connection "
            "to PostgreSQL was ended meanwhile (a server idle_session_timeout, a network "
            "drop or an administrator), so another migrate, rollback, prune or cancel could "
            f"have run alongside; it stopped without switching or dropping anything. See "
            f"`ragstore models status -c {name}`, then run the {command} again{again}"
        )


@contextmanager
def _migration_lock(rt: Runtime, coll: repository.Collection, command: str) -> Any:
    """One migrate/rollback/prune/cancel per collection at a time; released if the process
    dies. Yields the :class:`MigrationLock` to check before each decisive step."""
    conn = rt.db.connect(autocommit=True)
    try:
        with translated("taking the migration lock"):
            locked = spaces.try_migration_lock(conn, coll.id)
            # it sits idle while the command works: a server's idle_session_timeout must
            # not end it (and the lock with it) in the middle of a backfill
            db_session.never_idle_out(conn)
        if not locked:
            raise MigrationStateError(
                f"another model migration, rollback or prune of collection {coll.name!r} is "
                "running; wait for it to finish (a killed one releases its lock at once)"
            )
        yield MigrationLock(conn, coll, command)
    finally:
        conn.close()


def _lock_as_read(
    conn: Any, coll: repository.Collection, command: str, lock: MigrationLock
) -> None:
    """Lock the collection row for a switch (``FOR UPDATE``) and refuse, changing nothing,
    if it is no longer as ``coll`` was read: another migrate or rollback switched its model
    between that read (before the migration lock was had) and this lock.

    Acting on what was read did harm: a second rollback of a double click marked the space
    it had read as active again (two ``active`` spaces, one never written to nor
    prunable, answered "rolled back from X to X"), and a migrate to the model a rollback
    had just made active built a second space of it and re-embedded every chunk.

    The migration lock is checked too, with the row held: a command that lost it stops
    here rather than act alongside another one."""
    spaces.lock_collection(conn, coll.id)
    lock.check()
    fresh = repository.collection_by_id(conn, coll.id)
    if fresh is None or fresh.shadow or fresh.space_id != coll.space_id:
        raise MigrationStateError(
            f"collection {coll.name!r} switched model while this {command} waited for it "
            "(another migrate or rollback finished meanwhile); nothing was changed: see "
            f"`ragstore models status -c {coll.name}` and run the {command} again if it "
            "is still wanted"
        )


def _target_space(
    conn: psycopg.Connection[Any],
    coll: repository.Collection,
    model_id: int,
    spec: ModelSpec,
    lock: MigrationLock,
) -> spaces.Space:
    """The space to fill: a building one resumed, a retired one reused, or a new one."""
    _lock_as_read(conn, coll, "migrate", lock)
    hold_target(conn, model_id, spec.key, coll.name)
    rechunk.ensure_not_stale(conn, coll, model_id, spec.key)
    existing = spaces.list_spaces(conn, coll.id)
    for sp in existing:
        if sp.status == "building" and sp.model_id != model_id:
            raise MigrationStateError(
                f"collection {coll.name!r} is already being migrated to {sp.model.key}; "
                f"finish that with `ragstore models migrate -c {coll.name} --to {sp.model.key}` "
                f"or drop it with `ragstore models cancel -c {coll.name}` first (to {spec.key})"
            )
    for sp in existing:
        if sp.model_id == model_id and sp.status == "building":
            return sp
    for sp in sorted(existing, key=lambda s: s.id, reverse=True):
        if sp.model_id == model_id and sp.status == "retired":
            spaces.set_status(conn, sp.id, "building")
            got = spaces.get_space(conn, sp.id)
            assert got is not None
            return got
    # its index is built once, after the backfill (much faster than row by row)
    space_id, _ = spaces.create_space(conn, coll.id, model_id, spec, index=False)
    got = spaces.get_space(conn, space_id)
    assert got is not None
    return got


def text_budget(embedder: Any, spec: ModelSpec) -> int:
    """Tokens of a chunk's own text (its context included) a model of ``spec`` reads:
    ``max_tokens`` less what its passage prefix takes, counted with ``embedder``'s
    tokenizer (the target's: chunks are compared as it reads them; special tokens are
    taken to be alike).

    A re-cutting migration's report says it. (It decided the re-cut by comparing these
    budgets, and before that ``max_tokens`` alone, so a target of the same limit with a
    prefix (``passage: ``) reused chunks cut to the full limit; :func:`cuts_alike`
    decides now.)"""
    prefix = str(spec.options.get("passage_prefix", ""))
    if not prefix:
        return spec.max_tokens
    taken = int(embedder.count_text_tokens([prefix])[0]) - int(embedder.text_special_tokens)
    return spec.max_tokens - max(0, taken)


def cut_recipe(spec: ModelSpec) -> tuple[str, int, str] | None:
    """What decides how ingest cuts a document for a model of ``spec``: its tokenizer
    (:func:`~ragstore.embedding.registry.tokenizer_identity`: counts, spans and special
    tokens all come from it), its ``max_tokens`` (the chunker packs blocks greedily up to
    it, with no smaller target size of its own) and its passage prefix (it takes part of
    every chunk's budget). None when the tokenizer cannot be told."""
    tokenizer = tokenizer_identity(spec)
    if tokenizer is None:
        return None
    return tokenizer, spec.max_tokens, str(spec.options.get("passage_prefix", ""))


def cuts_alike(source: ModelSpec, target: ModelSpec) -> bool:
    """Whether ingest with ``target`` cuts every document exactly as it was cut for
    ``source``, so the stored chunks can be embedded as they are (issue 19: a migration
    embeds exactly what ingest would).

    Only a smaller budget used to re-cut: a target of the same budget but another
    tokenizer was handed chunks cut for the old one, and the backfill stopped at the first
    one the new tokenizer counts as longer ("Cancel ... and ingest into a new
    collection"); one that counts shorter, or a larger budget, silently kept chunks that
    ingest would pack differently. Decided from the recipe, not by trying: a tokenizer
    that cannot be told counts as another one (re-cutting embeds what ingest would; the
    cost is new document ids: a request with an old one is told the id it has now)."""
    recipe = cut_recipe(source)
    return recipe is not None and recipe == cut_recipe(target)


def migrate(
    rt: Runtime,
    collection: str,
    to_model: str,
    *,
    batch_size: int = 256,
    switch: bool = True,
    sample_queries: int = 8,
    progress: Progress | None = None,
) -> MigrationReport:
    """Re-embed ``collection`` with ``to_model`` beside the active space, then switch to it."""
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    t0 = time.perf_counter()
    coll = rt.collection(collection)
    target = find_model(rt, to_model)
    if target.id == coll.model_id:
        raise MigrationStateError(
            f"collection {coll.name!r} already uses {target.spec.key}; nothing to migrate"
        )
    if target.spec.provider == VECTOR_ONLY_PROVIDER:
        # loading it said "no provider 'imported'", although `models list` shows that
        # very provider, and nothing of what to do instead
        raise InputError(
            f"model {target.spec.key} holds vectors imported with `ragstore import`; "
            f"ragstore cannot run it, so it cannot embed the chunks of {coll.name!r} and "
            "nothing was changed: migrate to a model ragstore can load (provider "
            "sentence-transformers or openai in `ragstore models list`)"
        )
    embedder = rt.embedder(target.spec)  # refuses a model that differs from its pin
    with rt.db.connection() as conn, translated(f"reading spaces of {coll.name!r}"):
        # imported vectors came with their records' texts, each stored whole as one chunk
        # cut for no model's budget: a target of 512 tokens (an endpoint's default) was
        # given them as they were, and the backfill stopped at the first long record
        # a migration already filling a space of the target in place (begun by an older
        # ragstore, or its tokenizer files read otherwise since) resumes in place: a
        # re-cut would refuse that very space as "already being migrated", sending the
        # user to the command they ran; `_check_fits` guards what it embeds
        in_place = any(
            sp.status == "building" and sp.model_id == target.id
            for sp in spaces.list_spaces(conn, coll.id)
        )
        recut = (
            coll.model.provider == VECTOR_ONLY_PROVIDER
            or rechunk.find_shadow(conn, coll, target.id) is not None
            or (not in_place and not cuts_alike(coll.model, target.spec))
        )
    if recut:
        return _migrate_recut(
            rt, collection, target, embedder, switch, sample_queries, progress, t0
        )
    with _migration_lock(rt, coll, "migrate") as lock:
        with rt.db.connection() as conn, translated(f"preparing the space of {target.spec.key}"):
            space = _target_space(conn, coll, target.id, target.spec, lock)
            tally = _Tally(spaces.max_chunk_id(conn, coll.table))
        report = MigrationReport(coll.name, coll.model.key, target.spec.key, space.id, space.table)
        for n in range(MAX_PASSES):
            coll = rt.collection(collection)
            _backfill(rt, coll, space, embedder, batch_size, report, progress, lock, tally)
            # indexed even when not switching: the space is complete and ready to search
            with rt.db.connection() as conn, translated(f"indexing {space.table}"):
                spaces.ensure_index(conn, space.table, space.model.distance)
            if not switch:
                report.remaining = _still_missing(rt, coll, space, lock)
                if report.remaining and n + 1 < MAX_PASSES:
                    continue  # committed behind the backfill's position: another pass
                report.notes.append(_unswitched(coll, space, report.remaining))
                break
            _validate(rt, coll, space, sample_queries, report)
            if _switch(rt, coll, space, lock):
                report.switched = True
                break
        else:
            raise _outpaced(coll)
    report.seconds = time.perf_counter() - t0
    return report


def _still_missing(
    rt: Runtime, coll: repository.Collection, space: spaces.Space, lock: MigrationLock
) -> int:
    """Chunks of the active space with no vector in ``space`` yet, counted after the writes
    in progress (they hold the collection row shared) have committed.

    A backfill pass alone cannot say the space is complete: an ingest that began before the
    space existed stores its chunks without a vector for it, and chunks committed behind
    the pass's position (ids taken before it got there) are not read by it."""
    with rt.db.connection() as conn, translated(f"counting vectors of {space.table}"):
        spaces.lock_collection(conn, coll.id)
        lock.check()
        return spaces.count_missing(conn, coll.table, space.table)


def _unswitched(
    coll: repository.Collection, space: spaces.Space, remaining: int, unit: str = "chunks"
) -> str:
    """What a ``--no-switch`` migrate left, as it is: complete, or how many chunks remain."""
    again = f"`ragstore models migrate -c {coll.name} --to {space.model.key}`"
    if not remaining:
        return (
            f"backfill complete and indexed: every {unit[:-1]} stored so far is embedded with "
            f"{space.model.key}; not switched (--no-switch): {again} switches, embedding "
            "first whatever is stored meanwhile"
        )
    return (
        f"backfill not complete: {remaining} {unit} stored meanwhile still have no vector "
        f"for {space.model.key} (documents kept arriving behind it); not switched "
        f"(--no-switch): run {again} to embed them and switch (with --no-switch: to "
        "embed them only)"
    )


def _migrate_recut(
    rt: Runtime,
    collection: str,
    target: Any,
    embedder: Any,
    switch: bool,
    sample_queries: int,
    progress: Progress | None,
    t0: float,
) -> MigrationReport:
    """Migrate to a model with its own chunk set (see :mod:`ragstore.modelops.rechunk`)."""
    coll = rt.collection(collection)
    with _migration_lock(rt, coll, "migrate") as lock:
        with rt.db.connection() as conn, translated(f"preparing the chunks of {target.spec.key}"):
            _lock_as_read(conn, coll, "migrate", lock)
            for sp in spaces.building_spaces(conn, coll.id):
                raise MigrationStateError(
                    f"collection {coll.name!r} is already being migrated to {sp.model.key}; "
                    f"finish that with `ragstore models migrate -c {coll.name} --to "
                    f"{sp.model.key}` or drop it with `ragstore models cancel -c {coll.name}` "
                    f"first (to {target.spec.key})"
                )
            rechunk.ensure_not_stale(conn, coll, target.id, target.spec.key)
            shadow, space = rechunk.prepare(conn, coll, target)
        report = MigrationReport(coll.name, coll.model.key, target.spec.key, space.id, space.table)
        report.recut = True
        for n in range(MAX_PASSES):
            coll = rt.collection(collection)
            # checked before each batch: a cancel that took the lost lock may be dropping
            # this chunk set
            rechunk.backfill(rt, coll, shadow, embedder, report, progress, lock)
            with rt.db.connection() as conn, translated(f"indexing {space.table}"):
                spaces.ensure_index(conn, space.table, space.model.distance)
            if not switch:
                with rt.db.connection() as conn, translated(f"counting documents of {coll.name!r}"):
                    spaces.lock_collection(conn, coll.id)  # after the writes in progress
                    lock.check()
                    report.remaining = len(rechunk.out_of_step(conn, coll, shadow))
                if report.remaining and n + 1 < MAX_PASSES:
                    continue  # documents changed behind the backfill: another pass
                report.notes.append(_unswitched(coll, space, report.remaining, "documents"))
                break
            _validate(rt, coll, space, sample_queries, report)
            with rt.db.connection() as conn, translated(f"switching {coll.name!r}"):
                switched = rechunk.swap(conn, coll, shadow)
                if switched:
                    lock.check()  # before the commit: a refusal rolls the swap back
            if switched:
                report.switched = True
                report.notes.append(
                    f"{target.spec.key} cuts documents otherwise than {coll.model.key} "
                    f"({_cut_difference(coll.model, target.spec, embedder)}): the documents "
                    "were cut again for it, as ingest cuts them, under new document ids; the "
                    "old chunks are kept for a rollback until `ragstore models prune`"
                )
                break
        else:
            raise _outpaced(coll)
    report.seconds = time.perf_counter() - t0
    return report


def _cut_difference(source: ModelSpec, target: ModelSpec, embedder: Any) -> str:
    """How the target's cut differs from the source's, for the report."""
    if source.provider == VECTOR_ONLY_PROVIDER:
        return "the imported records were stored whole, cut for no model"
    old, new = cut_recipe(source), cut_recipe(target)
    if old is None or new is None or old[0] != new[0]:
        return "another tokenizer"
    budget, before = text_budget(embedder, target), text_budget(embedder, source)
    if budget == before:
        return "another passage prefix"
    return f"it reads at most {budget} tokens of a chunk (passage prefix aside), not {before}"


def _outpaced(coll: repository.Collection) -> MigrationStateError:
    """Writes kept the backfill from ever catching up: say so rather than loop forever."""
    return MigrationStateError(
        f"documents kept arriving in {coll.name!r} faster than the backfill caught up "
        f"after {MAX_PASSES} passes; run the migrate again when ingest is quieter"
    )


@dataclass
class _Tally:
    """What tells the vectors ingest wrote to the new space from the backfill's: chunks
    stored after the run began have ids above ``since``; ``ours`` are those of them the
    backfill embedded (chunks an ingest stored before the space existed)."""

    since: int
    ours: list[int] = field(default_factory=list)


def _backfill(
    rt: Runtime,
    coll: repository.Collection,
    space: spaces.Space,
    embedder: Any,
    batch_size: int,
    report: MigrationReport,
    progress: Progress | None,
    lock: MigrationLock,
    tally: _Tally,
) -> None:
    """Embed every chunk of the active space missing from ``space``, one commit per batch.

    Each chunk is embedded as ingest embedded it: its stored context, then its text. A
    text the target model would cut short stops the migration with the chunk named.

    The totals are counted again after the pass: counted only before it, deletes and
    ingests meanwhile left the bar at "840/888" and the report at "840 chunks embedded
    ... 888 in all" for a space that held 870 (30 written by ingest, 48 deleted).
    """
    with rt.db.connection() as conn, translated(f"counting vectors of {coll.name!r}"):
        total = spaces.count_vectors(conn, coll.table)
        done = total - spaces.count_missing(conn, coll.table, space.table)
    if report.batches == 0:
        report.resumed_from = done
    report.total = total
    if progress:
        progress(done, total)
    after = 0
    while True:
        lock.check()  # a cancel that took the lost lock may be dropping this space
        with rt.db.connection() as conn, translated(f"reading chunks of {coll.name!r}"):
            batch = spaces.missing_batch(conn, coll.table, space.table, after, batch_size)
        if not batch:
            break
        texts = [c.embed_text for c in batch]
        _check_fits(texts, batch, embedder, space, coll)
        t0 = time.perf_counter()
        vecs = embedder.embed(texts)
        report.encode_seconds += time.perf_counter() - t0
        with rt.db.connection() as conn, translated(f"storing vectors in {space.table}"):
            spaces.insert_vectors(conn, space.table, [c.id for c in batch], vecs)
        report.embedded += len(batch)
        report.batches += 1
        tally.ours += [c.id for c in batch if c.id > tally.since]
        done += len(batch)
        after = batch[-1].id
        if progress:
            progress(min(done, total), total)
    with rt.db.connection() as conn, translated(f"counting vectors of {coll.name!r}"):
        total = spaces.count_vectors(conn, coll.table)
        done = total - spaces.count_missing(conn, coll.table, space.table)
        report.ingested = spaces.count_vectors_after(conn, space.table, tally.since, tally.ours)
    report.total = total
    if progress:
        progress(done, total)


def _check_fits(
    texts: list[str],
    batch: list[spaces.PendingChunk],
    embedder: Any,
    space: spaces.Space,
    coll: repository.Collection,
) -> None:
    """Refuse texts longer than the target model reads (it would silently truncate them),
    counted as the model reads them: its passage prefix included (``count_tokens``).

    Only a target that cuts the documents exactly as the active model does gets here
    (:func:`cuts_alike`: the same tokenizer, budget and prefix; any other has them cut
    again, :mod:`ragstore.modelops.rechunk`), or a migration that began in place and
    resumes so, so no chunk should be too long: this is the
    last guard, for chunks stored otherwise (cut by an older ragstore, or with tokenizer
    files since replaced in place). The message said a migration re-cuts only for a model
    that reads fewer tokens, untrue since it re-cuts for any other cut."""
    limit = space.model.max_tokens
    for text, chunk, n in zip(texts, batch, embedder.count_tokens(texts), strict=True):
        if n > limit:
            raise MigrationStateError(
                f"chunk {chunk.id} is {n} tokens for {space.model.key}, which reads at most "
                f"{limit}, so it would cut it short: the two models cut documents alike (the "
                "same tokenizer, budget and passage prefix) or this migration began "
                "without cutting them again, and resumes so; yet this stored chunk of "
                f"{coll.model.key} is longer than a fresh ingest cuts (stored by an older "
                "ragstore, or the tokenizer's files were replaced since). Cancel with "
                f"`ragstore models cancel -c {coll.name}` and run the migration again (it "
                "then cuts the documents again where the models cut them otherwise), or "
                f"ingest the documents into a new collection created with {space.model.key} "
                f"({text[:40]!r}...)"
            )


def _validate(
    rt: Runtime, coll: repository.Collection, space: spaces.Space, n: int, report: MigrationReport
) -> None:
    """A sample of chunk texts, asked as queries of the new space, must find themselves."""
    if n <= 0:
        return
    embedder = rt.embedder(space.model)
    with rt.db.connection() as conn, translated(f"sampling queries in {space.table}"):
        count = spaces.count_vectors(conn, space.table)
        if count == 0:
            return
        queries = spaces.sample_texts(conn, space.table, n, count)
        vecs = embedder.embed(queries)
        found = 0
        for q, vec in zip(queries, vecs, strict=True):
            hits = spaces.nearest_texts(
                conn, space.table, space.model.distance, np.asarray(vec), 10
            )
            if not hits:
                raise MigrationStateError(
                    f"validation failed: the query {q[:40]!r} found nothing in {space.table}; "
                    "the new space was not switched to"
                )
            found += q in hits
    report.sample_queries = len(queries)
    report.sample_self_recall = found / len(queries) if queries else 0.0
    if queries and report.sample_self_recall < MIN_SELF_RECALL:
        raise MigrationStateError(
            f"validation failed: only {found} of {len(queries)} sample chunks were found by "
            f"their own text with {space.model.key} (at least {MIN_SELF_RECALL:.0%} expected); "
            "the new space was not switched to and the collection still uses "
            f"{coll.model.key}; check the model, then run the migrate again"
        )


def _switch(
    rt: Runtime, coll: repository.Collection, space: spaces.Space, lock: MigrationLock
) -> bool:
    """Switch atomically if nothing is missing; False when ingest added chunks meanwhile."""
    with rt.db.connection() as conn, translated(f"switching {coll.name!r}"):
        active = spaces.lock_collection(conn, coll.id)
        lock.check()
        if active != coll.space_id:
            raise MigrationStateError(
                f"collection {coll.name!r} switched model while migrating; run the migrate again"
            )
        if spaces.count_missing(conn, coll.table, space.table):
            return False
        spaces.activate(conn, coll.id, space.id, coll.space_id)
    return True


def _shadow_spaces(
    conn: Any, coll: repository.Collection
) -> list[tuple[repository.Collection, spaces.Space]]:
    """Each shadow of a collection (another chunk set) with the space it serves."""
    out = []
    for sh in repository.shadows(conn, coll.id):
        sp = spaces.get_space(conn, sh.space_id)
        if sp is not None:
            out.append((sh, sp))
    return out


def rollback(rt: Runtime, collection: str) -> tuple[str, str]:
    """Switch back to the previously active model; returns (from key, to key).

    When that model had chunks of its own (a re-chunking migration), they come back with
    it: the kept chunk set is swapped in again, exactly as it was."""
    coll = rt.collection(collection)
    with _migration_lock(rt, coll, "rollback") as lock:
        checked = _check_previous_loads(rt, coll)
        with rt.db.connection() as conn, translated(f"rolling back {coll.name!r}"):
            _lock_as_read(conn, coll, "rollback", lock)
            prev, shadow = _previous(conn, coll)
            if prev.id != checked:  # not read before (the lock is held: not expected)
                _load_previous(rt, coll, prev)
            if shadow is not None:
                if not rechunk.swap(conn, coll, shadow):
                    # both ways: a document deleted since the switch is still in the kept set
                    # (it counted only the other way, and said "0 documents" for deletions)
                    changed = len(rechunk.out_of_step(conn, coll, shadow))
                    raise MigrationStateError(
                        f"{changed} documents stored, changed or deleted since the switch are "
                        f"not in the chunks kept for {prev.model.key}; run `ragstore models "
                        f"migrate -c {coll.name} --to {prev.model.key}` (it cuts and embeds only "
                        "the documents stored or changed, drops the deleted ones, then switches "
                        "back)"
                    )
                return coll.model.key, prev.model.key
            missing = spaces.count_missing(conn, coll.table, prev.table)
            if missing:
                raise MigrationStateError(
                    f"{missing} chunks stored since the switch have no vector for "
                    f"{prev.model.key}; run `ragstore models migrate -c {coll.name} --to "
                    f"{prev.model.key}` (it embeds only those {missing}, then switches back)"
                )
            spaces.activate(conn, coll.id, prev.id, coll.space_id)
        return coll.model.key, prev.model.key


def _previous(
    conn: Any, coll: repository.Collection
) -> tuple[spaces.Space, repository.Collection | None]:
    """The space a rollback of ``coll`` switches to, with the chunk set kept for it (None
    when it shares the collection's chunks); MigrationStateError when there is none."""
    retired: list[tuple[spaces.Space, repository.Collection | None]] = [
        (s, None)
        for s in spaces.list_spaces(conn, coll.id)
        if s.status == "retired" and s.activated_at is not None
    ]
    retired += [
        (sp, sh)
        for sh, sp in _shadow_spaces(conn, coll)
        if sp.status == "retired" and sp.activated_at is not None
    ]
    if not retired:
        rebuilding = [
            s
            for s in spaces.list_spaces(conn, coll.id)
            + [sp for _, sp in _shadow_spaces(conn, coll)]
            if s.status == "building" and s.activated_at is not None
        ]
        for sp in rebuilding:
            # it said the collection had "only ever used" its model, and sent nobody
            # to the migration that holds the previous one
            raise MigrationStateError(
                f"the previous model of {coll.name!r}, {sp.model.key}, is being migrated "
                f"to again (`--no-switch`, or a migration that stopped); finish that with "
                f"`ragstore models migrate -c {coll.name} --to {sp.model.key}`, or run "
                f"`ragstore models cancel -c {coll.name}` (it keeps its vectors) and then "
                "the rollback"
            )
        raise MigrationStateError(
            f"collection {coll.name!r} has no previous model to roll back to (it has only "
            f"ever used {coll.model.key}, or older spaces were pruned)"
        )
    return max(retired, key=lambda r: (r[0].activated_at, r[0].id))


def _check_previous_loads(rt: Runtime, coll: repository.Collection) -> int | None:
    """Load the model a rollback would switch to, before anything is locked or changed;
    the id of the space checked (None when there is nothing to check: no previous space,
    or the collection switched since it was read, which the rollback then refuses).

    A rollback never loaded it: with its weights moved away (or its endpoint gone) it
    switched, answered "rolled back", and every search and ingest of the collection then
    failed with ``model_not_found``."""
    with rt.db.connection() as conn, translated(f"reading the spaces of {coll.name!r}"):
        fresh = repository.collection_by_id(conn, coll.id)
        if fresh is None or fresh.shadow or fresh.space_id != coll.space_id:
            return None
        try:
            prev, _ = _previous(conn, coll)
        except MigrationStateError:
            return None  # said again, under the lock
    _load_previous(rt, coll, prev)
    return prev.id


def _load_previous(rt: Runtime, coll: repository.Collection, prev: spaces.Space) -> None:
    """Load ``prev``'s model as migrate loads its target (weights checked against the pin,
    the probe vector); a model error says that nothing was changed, and what to do.
    Imported vectors (no model ragstore runs) are searched by vector only: nothing to load."""
    if prev.model.provider == VECTOR_ONLY_PROVIDER:
        return
    try:
        rt.embedder(prev.model)
    except ModelError as exc:
        exc.message = (
            f"{exc.message} (the model {coll.name!r} would be rolled back to: its searches "
            "and ingest would fail with it); nothing was changed and the collection still "
            f"uses {coll.model.key}: restore {prev.model.key}'s weights (or its endpoint) "
            "and roll back again, or migrate to another model with `ragstore models "
            f"migrate -c {coll.name} --to MODEL`"
        )
        raise


def prune(
    rt: Runtime,
    collection: str,
    *,
    dry_run: bool = False,
    expected: Collection[str] | None = None,
) -> list[spaces.Space]:
    """Drop the tables of the collection's retired spaces (rollback is then impossible),
    and the chunk sets kept for models switched away from (shadows not being built).

    ``expected``: the tables a person confirmed (``ragstore models prune`` lists them and
    asks); where what would go now differs, nothing is dropped and ConflictError says so.
    Run again after the confirmation, prune dropped whatever was retired by then: a
    rollback in between retired a space nobody had been shown, and it went."""
    coll = rt.collection(collection)
    with (
        _migration_lock(rt, coll, "prune") as lock,
        rt.db.connection() as conn,
        translated(f"pruning {coll.name!r}"),
    ):
        _lock_as_read(conn, coll, "prune", lock)
        retired = [s for s in spaces.list_spaces(conn, coll.id) if s.status == "retired"]
        kept = [sh for sh, sp in _shadow_spaces(conn, coll) if sp.status == "retired"]
        dropped = retired + [s for sh in kept for s in spaces.list_spaces(conn, sh.id)]
        if expected is not None and sorted(s.table for s in dropped) != sorted(expected):
            raise ConflictError(
                f"what pruning {coll.name!r} would drop changed since it was listed (a "
                "migration or rollback meanwhile); nothing was dropped: run it again to "
                "see the new list"
            )
        if not dry_run:
            for sp in retired:
                spaces.drop_space(conn, sp)
            for sh in kept:
                catalog.delete_collection(conn, sh)
    return dropped


def cancel(rt: Runtime, collection: str) -> list[tuple[spaces.Space, str]]:
    """Stop an unfinished migration; the active model is untouched.

    A space built from scratch is dropped; one that was active before (a migration back to
    a retired model) goes back to ``retired`` with its vectors, so rollback still works.
    Returns each space with what was done to it (``dropped`` or ``retired``).
    """
    coll = rt.collection(collection)
    done: list[tuple[spaces.Space, str]] = []
    with (
        _migration_lock(rt, coll, "cancel") as lock,
        rt.db.connection() as conn,
        translated(f"cancelling the migration of {coll.name!r}"),
    ):
        _lock_as_read(conn, coll, "cancel", lock)
        for sh, sp in _shadow_spaces(conn, coll):
            if sp.status != "building":
                continue
            if sp.activated_at is not None:
                spaces.ensure_index(conn, sp.table, sp.model.distance)
                spaces.set_status(conn, sp.id, "retired")
                done.append((sp, "retired"))
            else:
                catalog.delete_collection(conn, sh)
                done.append((sp, "dropped"))
        for sp in spaces.building_spaces(conn, coll.id):
            if sp.activated_at is not None:
                spaces.ensure_index(conn, sp.table, sp.model.distance)
                spaces.set_status(conn, sp.id, "retired")
                done.append((sp, "retired"))
            else:
                spaces.drop_space(conn, sp)
                done.append((sp, "dropped"))
    return done


def model_status(rt: Runtime, collection: str) -> list[dict[str, Any]]:
    """Each space of a collection: model, status, vectors, and how many are missing."""
    coll = rt.collection(collection)
    out: list[dict[str, Any]] = []
    with rt.db.connection() as conn, translated(f"reading spaces of {coll.name!r}"):
        rows: list[tuple[spaces.Space, int, str]] = []
        for sp in spaces.list_spaces(conn, coll.id):
            missing = (
                0 if sp.id == coll.space_id else spaces.count_missing(conn, coll.table, sp.table)
            )
            rows.append((sp, missing, "live"))
        for sh, sp in _shadow_spaces(conn, coll):  # documents out of step, not chunks
            rows.append((sp, len(rechunk.out_of_step(conn, coll, sh)), "own"))
        for sp, missing, chunk_set in rows:
            vectors = spaces.count_vectors(conn, sp.table)
            out.append(
                {
                    "space": sp.id,
                    "table": sp.table,
                    "model": sp.model.key,
                    "dimension": sp.model.dimension,
                    "status": sp.status,
                    "vectors": vectors,
                    "missing": missing,
                    "chunks": chunk_set,
                    "created_at": sp.created_at.isoformat(),
                    "activated_at": sp.activated_at.isoformat() if sp.activated_at else None,
                }
            )
    return out
