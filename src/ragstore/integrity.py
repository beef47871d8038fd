"""``ragstore db check``: does every collection hold what it acknowledged, and nothing else?

What each collection's rows must agree on, read in one snapshot per collection:
- its active space has a vector for every chunk that gets one (every chunk but headings),
  and an HNSW index;
- no space table holds a vector whose chunk is gone, is a heading or is another
  collection's (space tables have no foreign key since revision 0026: the writers and a
  trigger keep this, and this check proves it);
- its BM25 statistics (chunk count, total length, each lexeme's document frequency) equal a
  recount from its chunks;
and, for the database, no table left by a bulk load that was killed, and no indexed
metadata field with an index missing, invalid or unlabelled (db/field_indexes.py).

Nothing of this should ever be found: each is written in one transaction with what it
describes. A finding means a bug, a hand-made change or a partial restore, and ``repair``
fixes each from the data itself: missing vectors are embedded with the space's model from
the stored chunk text (what ingest embedded), stray vectors deleted, a missing index
built, the statistics recounted, leftovers dropped, a field's indexes built again (an
active space whose pinned model's weights are missing or differ here is found, and left to
the user: nothing in the database fixes it). Each
repair is one transaction (an index build, one concurrent build). A repair that waits
past ``RAGSTORE_BULK_LOAD_WAIT_S`` for another write of its collection (a stuck bulk load)
rolls back and is reported busy with the rest of that collection's; the run goes on. A
repair that needs the collection's model (missing vectors) where the model cannot load
(its weights missing or not the pinned ones) or fails is reported not possible, saying
why; the collection's other repairs and the other collections go on, and the run fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import psycopg

from ragstore.db import documents, field_indexes, integrity, repository, spaces
from ragstore.db import session as db_session
from ragstore.db.errors import translated
from ragstore.errors import DatabaseUnavailableError, ModelError
from ragstore.ingest import staging
from ragstore.ingest.service import ensure_space_index

if TYPE_CHECKING:
    from ragstore.db.models import PinnedModel
    from ragstore.runtime import Runtime

REPAIR_BATCH = 256  # chunks embedded per transaction when missing vectors are restored


@dataclass
class Finding:
    where: str  # the collection (and space table) or "database"
    problem: str
    fix: str  # what --repair does about it, or what to do
    repaired: bool = False
    # why --repair did not: another write of the collection held what the repair writes
    # past RAGSTORE_BULK_LOAD_WAIT_S (this step, or one before it that stopped the rest)
    busy: str | None = None
    # why --repair cannot do it on this machine, and what to do: the model that embeds
    # missing vectors does not load (its weights missing or not the pinned ones) or fails
    impossible: str | None = None


@dataclass
class SpaceState:
    table: str
    status: str  # active | building | retired
    model: str
    vectors: int
    missing: int | None  # chunks without a vector (the active space only)
    stray: int
    index: bool


@dataclass
class CollectionState:
    name: str
    shadow: bool
    chunks: int  # every chunk, headings included
    # the chunks that are headings: structure, not search targets, so they have no vector
    # by design (models.Chunk.embeddable): a whole space holds chunks - headings vectors
    headings: int = 0
    spaces: list[SpaceState] = field(default_factory=list)
    bm25: dict[str, Any] = field(default_factory=dict)


@dataclass
class CheckReport:
    collections: list[CollectionState] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    # collections a bulk load holds: not checked (with repair, each is a busy finding too)
    busy: list[str] = field(default_factory=list)
    # what is wrong but not with the rows, and nothing here may rewrite: a pin holding a
    # password (:func:`_check_pins`); reported, never failing the check (``ok``)
    warnings: list[Finding] = field(default_factory=list)
    # what is worth knowing and may be as the user wants it: a collection that holds
    # nothing and never did (:func:`_note_never_used`); never failing the check
    notes: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing found, or everything found repaired (a collection a bulk load held
        counts as found and not repaired when repairs were asked for)."""
        return all(f.repaired for f in self.findings)

    @property
    def retry(self) -> bool:
        """Some repair waited too long for another write of its collection: run it again
        once that write ends (the CLI exits 69, as for the busy error itself)."""
        return any(f.busy for f in self.findings)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "collections": [asdict(c) for c in self.collections],
            "leftovers": self.leftovers,
            "findings": [asdict(f) for f in self.findings],
            "busy": self.busy,
            "retry": self.retry,
            "warnings": [asdict(w) for w in self.warnings],
            "notes": [asdict(n) for n in self.notes],
        }


def check(rt: Runtime, collection: str | None = None, *, repair: bool = False) -> CheckReport:
    """Check one collection (with its shadows: other chunk sets kept for a rollback) or
    all of them, and the database's leftovers; with ``repair`` fix what is found."""
    report = CheckReport()
    for coll in _collections(rt, collection):
        _check_collection(rt, coll, report, repair)
    _check_leftovers(rt, report, repair)
    _check_field_indexes(rt, report, repair)
    _check_pins(rt, report)
    return report


def _collections(rt: Runtime, name: str | None) -> list[repository.Collection]:
    with rt.db.connection() as conn, translated("listing collections"):
        if name is not None:
            live = repository.get_collection(conn, name)
            return [live, *repository.shadows(conn, live.id)]
        found = [repository.collection_by_id(conn, i) for i in integrity.collection_ids(conn)]
    return [c for c in found if c is not None]


def _label(coll: repository.Collection) -> str:
    return f"collection {coll.name!r}" + (" (a shadow chunk set)" if coll.shadow else "")


def _check_collection(
    rt: Runtime, coll: repository.Collection, report: CheckReport, repair: bool
) -> None:
    label = _label(coll)
    with rt.db.connection() as conn, translated(f"checking {label}"):
        try:
            state, space_list, drift = _read_collection(conn, coll)
        except psycopg.errors.LockNotAvailable:
            conn.rollback()
            report.busy.append(coll.name)
            if repair:
                # Asked to repair, the run answered ok (exit 0) for a collection it never
                # read. A plain check during a load still passes (listed busy, exit 0): a
                # load is normal, and a scheduled check would fail for each one.
                report.findings.append(
                    Finding(
                        label,
                        "not checked: a bulk load holds its tables, so nothing of it was "
                        "read or repaired",
                        "run ragstore db check --repair again once the load has ended",
                        busy=f"reading {label} waited for a bulk load of it that holds its "
                        "tables; nothing was changed: retry once the load ends",
                    )
                )
            return
    report.collections.append(state)
    if not state.chunks and not coll.shadow:
        _note_never_used(rt, coll, report)
    by_table = {s.table: s for s in space_list}
    # Each repair step takes the locks of what it writes, in a transaction of its own.
    # Behind a stuck write of the collection (a bulk load into a space with rows holds its
    # table, which the check reads past) each waited for good, and the first that gave up
    # ended the whole run: now each waits at most RAGSTORE_BULK_LOAD_WAIT_S and rolls back,
    # the collection's later steps are not tried, and the run goes on with the others.
    busy: list[str] = []  # why the collection's repairs stopped, once one was busy

    def repairing(found: Finding, step: Callable[[], None]) -> None:
        if repair and busy:
            found.busy = f"not tried after an earlier repair of the collection: {busy[0]}"
        elif repair:
            try:
                step()
            except DatabaseUnavailableError as exc:
                if not exc.busy:
                    raise
                busy.append(str(exc))
                found.busy = str(exc)
            except ModelError as exc:
                # the collection's model could not embed: this repair is not possible here,
                # the collection's other repairs (which need no model) and the other
                # collections go on; it ended the whole run with model_mismatch
                found.impossible = (
                    f"{exc}; nothing more of this was repaired: run ragstore db check "
                    "--repair again once the model loads"
                )
            else:
                found.repaired = True
        report.findings.append(found)

    for s in state.spaces:
        where = f"{label}, {s.table}"
        if s.stray:
            repairing(
                Finding(
                    where,
                    f"{s.stray:,} vectors whose chunk is gone or is not one of the collection's",
                    "--repair deletes them",
                ),
                partial(_delete_stray, rt, coll, s.table),
            )
        if s.missing:
            repairing(
                Finding(
                    where,
                    f"{s.missing:,} chunks have no vector: vector and hybrid search cannot "
                    "find them",
                    f"--repair embeds them with {s.model}, from the stored chunk text",
                ),
                partial(_embed_missing, rt, coll, by_table[s.table]),
            )
        # a shadow being built (a re-cutting model migration under way, or one that was
        # stopped) has its index built once, after its backfill, as a plain migration's
        # space does: its absence was reported as damage, the check exited 1 and --repair
        # built the index under the backfill (every batch resumed after it paid for it)
        if s.missing is not None and not s.index and s.vectors and s.status != "building":
            repairing(
                Finding(
                    where,
                    "no HNSW index: vector searches read every vector",
                    "--repair builds it (the next ingest of the collection would too)",
                ),
                partial(_build_index, rt, coll, s.table),
            )
    _check_weights(coll, space_list, report)
    if drift.drifted:
        repairing(
            Finding(
                label,
                f"full-text statistics differ from a recount: stored {drift.stored[0]:,} "
                f"chunks and {drift.stored[1]:,} tokens against {drift.counted[0]:,} and "
                f"{drift.counted[1]:,}; {drift.terms_differing:,} of {drift.terms:,} terms' "
                "document frequencies differ, so BM25 scores are off",
                "--repair recounts them and rewrites the postings",
            ),
            partial(_recount, rt, coll),
        )


def _note_never_used(rt: Runtime, coll: repository.Collection, report: CheckReport) -> None:
    """A note for a collection that holds nothing and never did (no document, job or model
    migration): most likely one an ingest created and was killed outright (SIGKILL, the
    out-of-memory killer) before it stored anything, which nothing else said (the check
    read "0 chunks ... ok"). It may be one made on purpose (``collections create``), so
    it is a note, not a finding: the check still passes, and ``--repair`` leaves it."""
    with rt.db.connection() as conn, translated(f"checking {_label(coll)}"):
        unused = integrity.never_used(conn, coll.id, coll.name)
    if unused:
        report.notes.append(
            Finding(
                _label(coll),
                "holds no document and never did (no job or model migration either): an "
                "ingest that created it may have been killed before it stored anything",
                f"run that ingest again, or delete the collection if it is unwanted: "
                f"ragstore collections delete {coll.name}",
            )
        )


def _check_weights(
    coll: repository.Collection, space_list: list[spaces.Space], report: CheckReport
) -> None:
    """A finding for the active space whose pinned local model this machine cannot load
    (weights missing, or not the pinned ones): every search and ingest of the collection
    fails ``model_mismatch``. A restore of an archive whose weights were elsewhere left
    such a store, and the check said "ok: nothing to repair". Nothing in the database
    can fix it, so ``--repair`` leaves it (found, not repaired)."""
    from ragstore.embedding.registry import weights_problem

    for space in space_list:
        if space.id != coll.space_id:
            continue
        problem = weights_problem(space.model)
        if problem is not None:
            report.findings.append(
                Finding(
                    f"{_label(coll)}, {space.table}",
                    f"searches and ingests fail model_mismatch: {problem}",
                    "--repair cannot fix this: install the pinned weights where the pin "
                    "names them, or pin the weights there are as a new revision and "
                    "re-embed with `ragstore models migrate`",
                )
            )


def _delete_stray(rt: Runtime, coll: repository.Collection, table: str) -> None:
    """Delete ``table``'s vectors that are not of the collection's chunks, in one
    transaction; the table's lock waited for at most ``RAGSTORE_BULK_LOAD_WAIT_S``."""
    with (
        rt.db.connection() as conn,
        translated(f"repairing {_label(coll)}, {table}"),
        staging.waiting_for_locks(
            rt, conn, coll.name, "deleting stray vectors of", "nothing was changed"
        ),
    ):
        integrity.delete_stray_vectors(conn, table, coll.id)


def _build_index(rt: Runtime, coll: repository.Collection, table: str) -> None:
    """Build the active space's missing HNSW index, as ingest does; the table's lock
    (SHARE: a bulk load into the space holds a stronger one) waited for at most
    ``RAGSTORE_BULK_LOAD_WAIT_S``."""
    with (
        rt.db.connection() as conn,
        translated(f"indexing {table}"),
        staging.waiting_for_locks(
            rt, conn, coll.name, "building the HNSW index of", "nothing was built"
        ),
    ):
        ensure_space_index(rt, coll, conn)


def _recount(rt: Runtime, coll: repository.Collection) -> None:
    """Recount the collection's BM25 statistics and postings under its write locks."""
    with rt.db.connection() as conn, translated(f"recounting {_label(coll)}"):
        with staging.waiting_for_locks(
            rt, conn, coll.name, "the BM25 recount of", "nothing was changed"
        ):
            documents.begin_bulk(conn, coll.id)
        documents.finish_bulk(conn, coll.id, rt.settings.index_build_memory)


def _read_collection(
    conn: Any, coll: repository.Collection
) -> tuple[CollectionState, list[spaces.Space], integrity.Bm25Drift]:
    """What the collection's rows say, in one snapshot."""
    integrity.snapshot(conn)
    integrity.lock_space(conn, coll.table)  # before the snapshot: one table across a swap
    chunks, headings = integrity.chunk_count(conn, coll.id)
    state = CollectionState(coll.name, coll.shadow, chunks, headings)
    space_list = spaces.list_spaces(conn, coll.id)
    for space in space_list:
        active = space.id == coll.space_id
        state.spaces.append(
            SpaceState(
                space.table,
                space.status,
                space.model.key,
                spaces.count_vectors(conn, space.table),
                integrity.missing_vectors(conn, space.table, coll.id) if active else None,
                integrity.stray_vectors(conn, space.table, coll.id),
                spaces.has_index(conn, space.table),
            )
        )
    drift = integrity.bm25_drift(conn, coll.id)
    state.bm25 = {
        "stored": list(drift.stored),
        "counted": list(drift.counted),
        "terms": drift.terms,
        "terms_differing": drift.terms_differing,
    }
    return state, space_list, drift


def _embed_missing(rt: Runtime, coll: repository.Collection, space: spaces.Space) -> None:
    """Embed the collection's chunks that have no vector in ``space``, batch by batch, as
    ingest embedded them (section path, then text), one commit per batch."""
    embedder = rt.embedder(space.model)
    after = 0
    while True:
        with rt.db.connection() as conn, translated(f"reading chunks of {coll.name!r}"):
            batch = integrity.chunks_without_vectors(
                conn, space.table, coll.id, after, REPAIR_BATCH
            )
        if not batch:
            return
        vectors = embedder.embed([c.embed_text for c in batch])
        with (
            rt.db.connection() as conn,
            translated(f"storing vectors in {space.table}"),
            staging.waiting_for_locks(
                rt,
                conn,
                coll.name,
                "storing restored vectors of",
                "this batch was not stored (those before it were)",
            ),
        ):
            spaces.insert_vectors(conn, space.table, [c.id for c in batch], vectors)
        after = batch[-1].id


def _check_pins(rt: Runtime, report: CheckReport) -> None:
    """A warning for each HTTP pin whose endpoint URL holds ``user:password@`` (made before
    ``models add`` refused one): the password sits in the database and in every backup.

    The pin is not rewritten, here or by ``--repair``: its options are what every process
    using it sends, and a pin never changes under its users. The fix is a new pin of the
    same endpoint with the pair in an environment variable (``--auth basic``), a migration
    of each collection whose active model the old one is, a prune of each collection
    keeping it for a rollback, then ``models remove`` of the old pin, which no collection
    uses by then: the warning goes with it. Not a finding: the user decides when to give
    up the rollback, and the check would fail until then."""
    from ragstore.modelops.specs import pins_holding_credentials, repin_command, repin_variable

    for pinned in pins_holding_credentials(rt):
        spec = pinned.spec
        users = sorted({c["collection"] for c in pinned.collections})
        used = f"used by collection(s) {', '.join(users)}" if users else "used by no collection"
        report.warnings.append(
            Finding(
                f"model {spec.key} ({used})",
                "its endpoint URL holds a password (user:password@, from a version that "
                "took one), stored in the database and in its backups; it is masked "
                "wherever shown, and the pin is left as it is",
                _pin_fix(pinned, repin_variable(spec), repin_command(spec)),
            )
        )


def _pin_fix(pinned: PinnedModel, variable: str, repin: str) -> str:
    """The commands that leave no pin holding the password of ``pinned``: pin the endpoint
    again and move each collection to it (each that uses the old pin), then remove it."""
    spec = pinned.spec
    key = f"{spec.name}@{spec.revision}-basic"
    by_status: dict[str, set[str]] = {}
    for c in pinned.collections:
        by_status.setdefault(c["status"], set()).add(c["collection"])
    steps = []
    if pinned.collections:
        steps.append(f"export {variable}='USER:PASSWORD'")
        steps.append(repin)
    # only where it is the active model: a migration switches the collection to it
    steps += [
        f"ragstore models migrate -c {n} --to {key}" for n in sorted(by_status.get("active", ()))
    ]
    # a migration to the old pin in progress: dropped (the new pin takes its place)
    steps += [f"ragstore models cancel -c {n}" for n in sorted(by_status.get("building", ()))]
    # kept for a rollback (a migrated collection keeps it too) until pruned
    kept = by_status.get("active", set()) | by_status.get("retired", set())
    steps += [f"ragstore models prune -c {n}" for n in sorted(kept)]
    steps.append(f"ragstore models remove {spec.key}")
    again = (
        ""
        if pinned.collections
        else f" (to use the endpoint again: export {variable}='USER:PASSWORD', then {repin})"
    )
    return (
        ", then ".join(steps)
        + again
        + "; change the password at the endpoint afterwards, as backups made before keep it"
    )


def _check_leftovers(rt: Runtime, report: CheckReport, repair: bool) -> None:
    with rt.db.connection() as conn, translated("looking for tables bulk loads left"):
        leftovers = integrity.leftover_tables(conn)
    report.leftovers = [left.table for left in leftovers if not left.in_use]
    if not report.leftovers:
        return
    found = Finding(
        "database",
        f"tables left by bulk loads that were stopped: {', '.join(report.leftovers)}",
        "--repair drops them (the next bulk load of each collection would too)",
    )
    if repair:
        with rt.db.connection() as conn, translated("dropping tables bulk loads left"):
            dropped = integrity.drop_leftovers(conn, leftovers)
        kept = [t for t in report.leftovers if t not in dropped]
        if kept:  # a bulk load took one over since it was listed: its own table now
            found.busy = f"a bulk load holds {', '.join(kept)} now: run the check again"
        else:
            found.repaired = True
    report.findings.append(found)


def _check_field_indexes(rt: Runtime, report: CheckReport, repair: bool) -> None:
    """Indexed fields that search does not use (an index missing or invalid: a build that
    failed or was stopped), and indexes of ours that name no field; repaired by building
    the field's indexes again, and by dropping the unnamed ones.

    A concurrent build or drop waits for every transaction that holds a lock on its table
    (a bulk load's, from its start to its commit): behind a stuck one each repair waited
    for good. Each now waits at most ``RAGSTORE_BULK_LOAD_WAIT_S`` (``lock_timeout``) and
    is reported busy, as the collections' repairs are."""
    limit = rt.settings.bulk_load_wait_s

    def repairing(found: Finding, doing: str, step: Callable[[], object]) -> None:
        if repair:
            try:
                step()
            except psycopg.errors.LockNotAvailable:
                found.busy = (
                    f"{doing} waited {limit:g}s for transactions holding its table (a "
                    "concurrent index build or drop waits for every one: a stuck bulk "
                    "load's); what it did not finish is left invalid, unused by search and "
                    "done again by the next repair: retry once they end, or raise "
                    "RAGSTORE_BULK_LOAD_WAIT_S"
                )
            else:
                found.repaired = True
        report.findings.append(found)

    with (
        rt.db.connect(autocommit=True) as conn,
        translated("checking the indexed metadata fields"),
    ):
        incomplete, unlabelled = field_indexes.broken(conn)
        if repair:  # the session's: each build or drop is transactions of its own
            db_session.set_lock_timeout(conn, f"{max(1, round(limit * 1000))}ms", local=False)
        # the unlabelled first: a field's index left unlabelled under its own name (a
        # build killed between its CREATE and its label) was dropped after the field's
        # rebuild had made it again under that name, and the repair said repaired
        if unlabelled:
            found = Finding(
                "database",
                f"indexes of indexed fields that name no field: {', '.join(unlabelled)}",
                "--repair drops them; declare the field again with ragstore db index-field",
            )
            repairing(
                found,
                "dropping indexes that name no field",
                partial(field_indexes.drop_named, conn, unlabelled),
            )
        for index in incomplete:
            found = Finding(
                "database",
                f"indexed field {index.field!r} ({index.kind}): an index is missing or "
                "invalid (a build that failed or was stopped), so range filters on it do "
                "not use them",
                "--repair builds them again (as ragstore db index-field does)",
            )
            repairing(
                found,
                f"rebuilding the indexes of field {index.field!r}",
                partial(field_indexes.add, conn, index),
            )
