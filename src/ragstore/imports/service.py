"""Importing a legacy vector store: plan (read + validate), then write, index and verify.

:func:`plan_import` reads the whole source and judges every record; nothing is written, so
``--dry-run`` is just the plan. :func:`run_import` takes a backup, then does everything in
ONE transaction: create (or lock) the collection, COPY documents, chunks and vectors, build
the BM25 statistics and postings (into an empty space: once, after the load, with the
triggers off, :func:`ragstore.db.documents.begin_bulk`) and the HNSW index after the load
(faster than growing it row by row), and verify. An import of at least
``staging.REBUILD_SHARE`` as many records as the collection's space holds vectors is a bulk
write too: its vectors are staged on a second connection with the space's, indexed there
while the load's postings are added (:func:`ragstore.db.documents.finish_bulk_add`), and
the staged table takes the space's place before the verification (``ingest.staging``);
the space's own table and index serve searches until the import commits. Smaller imports
into a collection that has rows write through its triggers and live index. Any failure,
including a verification that falls short or the process being killed, rolls the whole
transaction back: the collection is exactly what it was before, or does not exist.

Each source record becomes one document (``source`` = the record's id) holding one
``paragraph`` chunk with the record's text and metadata and the record's own vector.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from ragstore import backup as backups
from ragstore.db import documents, models, repository, spaces
from ragstore.db.errors import translated
from ragstore.db.models import upsert_model
from ragstore.errors import (
    CollectionNotFoundError,
    ConflictError,
    DatabaseError,
    DatabaseUnavailableError,
    ImportSourceError,
    ImportValidationError,
    ImportVerificationError,
    InputError,
    ModelError,
    ModelMismatchError,
    ModelNotFoundError,
)
from ragstore.imports.records import Record, Source
from ragstore.imports.validate import ValidationReport, validate
from ragstore.imports.verify import (
    Matrix,
    Verification,
    combine,
    differing_ids,
    digests_of,
    exact_top_k,
    recall_at_k,
    record_digest,
)
from ragstore.ingest import staging
from ragstore.ingest.staging import StagedVectors, discard_staged
from ragstore.models import VECTOR_ONLY_PROVIDER, Chunk, ChunkType, ModelSpec
from ragstore.runtime import Runtime
from ragstore.validation import problem_in

DISTANCES = ("cosine", "l2", "ip")

# (stage, done, total); the stages: read, backup, documents, index, checksum, parity and
# committed (the import's transaction has committed: nothing of it rolls back any more)
Progress = Callable[[str, int, int], None]
WRITE_SLICE = 10_000  # records per write_documents call at most (progress is reported per slice)
SLICES = 4  # a bulk import is written in about this many slices (see _slices)
MIN_SLICE = 250  # ... of at least this many records


def _slices(total: int) -> list[tuple[int, int]]:
    """(start, end) of each write_documents call: slices of a quarter of the import,
    between MIN_SLICE and WRITE_SLICE records, after two smaller ones (a quarter and a half
    of that), so that the writer waits little for the first slices' tsvectors while the
    second connection gets ahead of it (:class:`_Lexer`)."""
    step = max(1, min(WRITE_SLICE, max(MIN_SLICE, -(-total // SLICES))))
    size = max(1, step // SLICES)
    bounds = [0]
    while bounds[-1] < total:
        bounds.append(min(total, bounds[-1] + size))
        size = min(step, 2 * size)
    return list(pairwise(bounds))


class _Lexer:
    """The tsvectors of the slices of chunks after the one being written, computed on a
    second connection.

    One worker thread holds its own autocommit connection (outside the pool, so an import
    never waits for a pooled one) and computes the slices in the order they were
    submitted (:func:`ragstore.db.documents.text_search_vectors`, which reads no table:
    nothing of the writer's transaction is shared or exposed). The writer keeps it
    ``AHEAD`` slices ahead, so it never waits for the writer, and takes each slice's
    result when it writes that slice.
    """

    AHEAD = 2  # slices submitted beyond the one being written (bounds the memory held)

    def __init__(self, conn: psycopg.Connection[Any], config: str) -> None:
        self.config = config
        self.conn = conn
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragstore-lexer")
        self.queue: deque[Future[documents.Lexemes]] = deque()

    @classmethod
    def start(cls, rt: Runtime, config: str) -> _Lexer | None:
        """A lexer with its own connection; None when no second connection can be opened
        now (the server at max_connections): the chunk trigger then computes every
        tsvector, as it does outside bulk writes."""
        try:
            return cls(rt.db.connect(autocommit=True), config)
        except DatabaseUnavailableError:
            return None

    def submit(self, texts: list[str]) -> None:
        """Queue the next slice's texts (slices are taken back in the order given)."""
        self.queue.append(
            self.pool.submit(documents.text_search_vectors, self.conn, self.config, texts)
        )

    def attach(self, writes: list[documents.DocumentWrite]) -> list[documents.DocumentWrite]:
        """``writes`` with their lexemes: the result of the oldest slice submitted."""
        with translated("computing the tsvectors of an import"):
            lex = self.queue.popleft().result()
        parts = lex.split([len(w.chunks) for w in writes])
        return [replace(w, lexemes=x) for w, x in zip(writes, parts, strict=True)]

    def close(self) -> None:
        for pending in self.queue:
            pending.cancel()
        self.pool.shutdown(wait=True)
        self.conn.close()


@dataclass
class ImportOptions:
    collection: str
    model: str
    dimension: int | None = None
    distance: str | None = None
    policies: dict[str, str] = field(default_factory=dict)
    backup: bool = True
    backup_path: Path | None = None
    verify_queries: int = 100
    min_recall: float = 0.95
    ef_search: int | None = None
    seed: int = 0
    maintenance_work_mem: str | None = None  # None: RAGSTORE_INDEX_BUILD_MEMORY
    trust_vectors: bool = False  # skip the model check (:func:`check_declared_model`)


@dataclass
class ImportPlan:
    """What an import would do: the source read, the model declared, every record judged."""

    source: str
    collection: str
    exists: bool
    spec: ModelSpec
    records: list[Record]
    validation: ValidationReport
    read_seconds: float
    model_check: str = ""  # what :func:`check_declared_model` found, for the report

    @property
    def to_write(self) -> int:
        return len(self.validation.kept)


@dataclass
class ImportReport:
    source: str
    collection: str
    created: bool
    model: str
    provider: str
    dimension: int
    distance: str
    read: int
    written: int
    skipped: int
    validation: ValidationReport
    backup: backups.BackupInfo | None
    verification: Verification
    seconds: dict[str, float]
    model_check: str = ""
    # the id every document of this import carries as its metadata ``import.batch``: how
    # its documents are found again (a filter ``{"import.batch": ...}``, or SQL)
    batch: str = ""


# records whose texts are embedded again at most (one small encode), spread evenly from
# the first record with a text to the last
MODEL_CHECK_SAMPLE = 16
# The least cosine between a record's vector and its text embedded again by the declared
# model. The same model agrees far above it (all-MiniLM-L6-v2: 1.000 between batches,
# after a float16 round trip and against its 256-dimension truncation); another model of
# the same dimension, or these vectors shifted by one record, gives about -0.1 to 0.15.
MODEL_CHECK_MIN_COSINE = 0.98


def check_declared_model(
    rt: Runtime, spec: ModelSpec, records: list[Record], kept: list[int], trust: bool
) -> str:
    """What the model check found, or ModelMismatchError where the vectors are not the
    declared model's, before anything is written.

    A model ragstore can load was trusted unchecked: vectors of another model of the
    same dimension were stored as that model's, and every later text search (which
    embeds the query with the real model) silently returned garbage. Up to
    ``MODEL_CHECK_SAMPLE`` kept records with a text, spread evenly from the source's first
    to its last (8 at ``n * len / 8`` never sampled the last eighth, where a half-migrated
    store keeps its new model's vectors), are embedded again in one call and each must
    agree with its own vector to ``MODEL_CHECK_MIN_COSINE``. Records without a text
    cannot be checked, and an ``imported`` model cannot be loaded: both are said in the
    result."""
    if spec.provider == VECTOR_ONLY_PROVIDER:
        return "not checked: ragstore cannot load this model"
    if trust:
        return "not checked: --trust-vectors"
    if not kept:
        return "not checked: no record to import"
    with_text = [
        i for i in kept if (records[i].embedded_text or records[i].text or "").strip() != ""
    ]
    if not with_text:
        return "not checked: no record has a text to embed again"
    spread = np.linspace(0, len(with_text) - 1, min(MODEL_CHECK_SAMPLE, len(with_text)))
    sample = [with_text[int(p)] for p in np.unique(np.rint(spread))]
    texts = [str(records[i].embedded_text or records[i].text) for i in sample]
    try:
        fresh = np.asarray(rt.embedder(spec).embed(texts), dtype=np.float64)
    except ModelError as exc:  # an HTTP model unreachable, weights that fail their pin
        exc.message = (
            f"{exc.message} (while embedding {len(texts)} records' texts with {spec.key} to "
            "check that the vectors are its; nothing was written; --trust-vectors imports "
            "them without this check)"
        )
        raise
    given = np.vstack([np.asarray(records[i].vector, dtype=np.float64) for i in sample])
    norms = np.linalg.norm(fresh, axis=1) * np.linalg.norm(given, axis=1)
    cosines = np.divide(
        (fresh * given).sum(axis=1), norms, out=np.zeros(len(sample)), where=norms > 0
    )
    low = [(records[i].id, float(c)) for i, c in zip(sample, cosines, strict=True)]
    low = [(rid, c) for rid, c in low if not c >= MODEL_CHECK_MIN_COSINE]
    if low:
        named = ", ".join(f"{rid} (cosine {c:.3f})" for rid, c in low[:MODEL_CHECK_SAMPLE])
        raise ModelMismatchError(
            f"the vectors do not look like {spec.key}'s: {len(low)} of {len(sample)} records "
            f"checked disagree with their texts embedded again by it (need cosine >= "
            f"{MODEL_CHECK_MIN_COSINE}): {named}; text searches would return wrong results. "
            "Nothing was written. Declare the model that made them (--model NAME, with "
            "--dimension N for one ragstore cannot load), or, where the vectors were made "
            "from other text than the records hold, --trust-vectors to import them unchecked"
        )
    untexted = len(kept) - len(with_text)
    return (
        f"ok, {len(sample)} records' texts embedded again by {spec.key} agree "
        f"(least cosine {float(cosines.min()):.3f})"
        + (f"; {untexted} records without a text cannot be checked" if untexted else "")
    )


def declared_spec(
    rt: Runtime,
    model: str,
    dimension: int | None,
    distance: str | None,
    *,
    flags: bool = True,
) -> ModelSpec:
    """The model the vectors came from: a pinned/built-in one, or a new imported pin.

    A model ragstore can load (built-in or pinned with ``ragstore models add``) makes the
    collection searchable by text; any other name is pinned with provider ``imported``:
    its collection answers vector queries and keeps the model's identity on record.

    ``flags``: the errors name ``--model``, ``--dimension`` and ``--distance``, the import
    command's options; ``False`` (``Store.create_collection``, the HTTP API through it)
    names the arguments ``model``, ``dimension`` and ``distance`` the caller gave, where
    "--dimension must be between 1 and 16000" named an option no such caller has.
    """
    from ragstore.modelops.specs import model_spec

    named = "--{}".format if flags else "{}".format
    if distance is not None and distance not in DISTANCES:
        raise InputError(f"{named('distance')} {distance!r} is not one of {', '.join(DISTANCES)}")
    try:
        # writing nothing: a built-in is pinned by the import's write, in its transaction
        # (find_model pinned it here, so a dry run, or an import refused by validation,
        # wrote a model row while saying nothing was written)
        spec: ModelSpec | None = model_spec(rt, model)
    except ModelNotFoundError:
        spec = None
    if spec is not None:
        if dimension is not None and dimension != spec.dimension:
            raise ModelMismatchError(
                f"model {spec.key} has {spec.dimension} dimensions but {named('dimension')} says "
                f"{dimension}; the vectors cannot come from this model"
            )
        if distance is not None and distance != spec.distance:
            raise ModelMismatchError(
                f"model {spec.key} is pinned with distance {spec.distance}, not {distance}"
            )
        return spec
    name, _, revision = model.partition("@")
    if not name.strip():
        example = "text-embedding-3-small@2024-01"
        raise InputError(
            f"--model needs a name, e.g. --model {example}"
            if flags
            else f"model {model!r} needs a name before its '@', e.g. {example!r}"
        )
    if dimension is None:
        raise InputError(
            f"model {model!r} is neither built in nor pinned, so ragstore cannot know its "
            f"dimension: declare it with {named('dimension')} N (it is checked against "
            "every vector)"
        )
    if not 1 <= dimension <= 16000:
        raise InputError(f"{named('dimension')} must be between 1 and 16000, got {dimension}")
    return ModelSpec(
        VECTOR_ONLY_PROVIDER,
        name.strip(),
        revision.strip() or "imported",
        dimension,
        distance or "cosine",
        False,
        512,
        "",
        {"imported": True, "note": "vectors imported; ragstore cannot load it"},
    )


def _existing_ids(conn: psycopg.Connection[Any], collection_id: int, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(ids), 50_000):
        found.update(documents.document_hashes(conn, collection_id, ids[start : start + 50_000]))
    return found


def unindexable_texts(
    conn: psycopg.Connection[Any], config: str, records: list[Record]
) -> set[int]:
    """The indices of the records whose text is too large for the full-text index under
    ``config`` (``to_tsvector`` over PostgreSQL's 1 MB): each record is one chunk, and such
    a text failed the whole import at its write, naming no record and past every policy.
    Only texts of ``documents.TSVECTOR_CHECK_BYTES`` or more are sent, one statement each,
    in a savepoint; one the database could not take anyway (a NUL) is left to validation."""
    found: set[int] = set()
    for index, rec in enumerate(records):
        text = rec.text
        if text is None or len(text) * 4 < documents.TSVECTOR_CHECK_BYTES:
            continue
        if len(text.encode("utf-8", "surrogatepass")) < documents.TSVECTOR_CHECK_BYTES:
            continue
        if problem_in(text) is not None:
            continue
        try:
            with conn.transaction():
                documents.check_tsvector(conn, config, text)
        except psycopg.errors.ProgramLimitExceeded:
            found.add(index)
    return found


def _check_target(coll: repository.Collection, spec: ModelSpec) -> None:
    m = coll.model
    if (m.name, m.revision, m.dimension) != (spec.name, spec.revision, spec.dimension):
        raise ModelMismatchError(
            f"collection {coll.name!r} is pinned to {m.key} ({m.dimension} dims) but the "
            f"source was declared as {spec.key} ({spec.dimension} dims); import into a new "
            "collection, or declare the collection's model"
        )


def plan_import(
    rt: Runtime, source: Source, opts: ImportOptions, progress: Progress | None = None
) -> ImportPlan:
    """Read and validate everything; write nothing."""
    spec = declared_spec(rt, opts.model, opts.dimension, opts.distance)
    _check_verification_options(opts)
    _refuse_a_name_it_cannot_create(rt, opts.collection)
    t0 = time.perf_counter()
    records: list[Record] = []
    for rec in source.records():
        records.append(rec)
        if progress and len(records) % 10_000 == 0:
            progress("read", len(records), 0)
    read_seconds = time.perf_counter() - t0
    if not records:
        raise ImportSourceError(f"{source.description} holds no records; nothing to import")
    spec = _with_the_sources_distance(rt, spec, source, opts)
    existing: set[str] = set()
    exists = False
    config = documents.NEW_COLLECTION_TS_CONFIG
    with rt.db.connection() as conn, translated(f"looking up collection {opts.collection!r}"):
        try:
            coll = repository.get_collection(conn, opts.collection)
        except CollectionNotFoundError:
            pass
        else:
            exists = True
            _check_target(coll, spec)
            existing = _existing_ids(conn, coll.id, [r.id for r in records if r.id])
            config = documents.ts_config_name(conn, coll.id)
        unindexable = unindexable_texts(conn, config, records)
    report = validate(
        records,
        spec.dimension,
        opts.policies,
        existing,
        unindexable,
        cosine=spec.distance == "cosine",
    )
    checked = (
        check_declared_model(rt, spec, records, report.kept, opts.trust_vectors)
        if report.ok
        else "not checked: the records are refused"
    )
    return ImportPlan(
        source.description, opts.collection, exists, spec, records, report, read_seconds, checked
    )


def _with_the_sources_distance(
    rt: Runtime, spec: ModelSpec, source: Source, opts: ImportOptions
) -> ModelSpec:
    """``spec`` with the distance the source store searched by (a Chroma collection's
    ``hnsw:space``), where the model is new to ragstore and ``--distance`` was not given.

    Chroma's space was read and then dropped: a collection that Chroma searched by l2 (its
    default) or inner product was imported as cosine, so the same vectors ranked otherwise
    than in the store moved from, unsaid. A built-in or pinned model keeps its distance,
    and ``--distance`` still says what the user wants."""
    from ragstore.modelops.specs import model_spec

    space = getattr(source, "space", None)
    if opts.distance is not None or space not in DISTANCES or space == spec.distance:
        return spec
    try:
        model_spec(rt, opts.model)
    except ModelNotFoundError:
        return replace(spec, distance=str(space))
    return spec


def _check_verification_options(opts: ImportOptions) -> None:
    """InputError for a --min-recall or --ef-search out of range: checked by the plan too,
    where only the write checked them, so a dry run passed what the import refused after
    reading the whole source."""
    if not 0.0 <= opts.min_recall <= 1.0:
        raise InputError(f"--min-recall must be between 0 and 1, got {opts.min_recall}")
    if opts.ef_search is not None and not 1 <= opts.ef_search <= 1000:
        raise InputError(f"--ef-search must be between 1 and 1000, got {opts.ef_search}")


def _refuse_a_name_it_cannot_create(rt: Runtime, name: str) -> None:
    """InputError for a new collection's name that ``create_collection`` refuses, before
    the source is read: a dry run said ``would import N records into 'a b'`` and the
    import itself read the whole source and took a backup before the write refused the
    name. (A collection that exists under an older, looser name is imported into.)"""
    if repository.NAME_RE.fullmatch(name):
        return
    with rt.db.connection() as conn, translated(f"looking up collection {name!r}"):
        try:
            repository.get_collection(conn, name)
        except CollectionNotFoundError:
            repository.check_name(name)


def refuse_if_invalid(plan: ImportPlan) -> None:
    """ImportValidationError where a policy says abort, or where the policies leave out
    every record and the collection does not exist yet.

    The second: the import made the collection anyway, pinned to the declared model and
    holding nothing, and said ``imported 0 records ... (new collection)`` with exit 0.
    Into an existing collection nothing to write is a no-op (running an import again
    with ``--policy existing_id=skip``), and it is still reported as such."""
    if plan.validation.ok:
        if plan.to_write or plan.exists:
            return
        parts = [
            f"{i.count} {i.kind} (first: {', '.join(i.first)})" for i in plan.validation.issues
        ]
        raise ImportValidationError(
            f"{plan.source}: all {plan.validation.read} records are left out by the policies "
            f"({'; '.join(parts)}); nothing was written and collection {plan.collection!r} "
            "was not created. Fix the source or the policies"
        )
    parts = [f"{i.count} {i.kind} (first: {', '.join(i.first)})" for i in plan.validation.aborting]
    raise ImportValidationError(
        f"{plan.source}: {'; '.join(parts)}; nothing was written. Fix the source, or choose "
        "--policy KIND=skip (or --on-invalid skip) to leave such records out"
    )


def _matrix(records: list[Record], kept: list[int], dim: int) -> Matrix:
    out = np.empty((len(kept), dim), dtype=np.float32)
    for row, i in enumerate(kept):
        out[row] = records[i].vector
    return out


class _Writer:
    """The one-transaction write of a validated plan."""

    def __init__(
        self, rt: Runtime, plan: ImportPlan, opts: ImportOptions, progress: Progress | None
    ) -> None:
        self.rt = rt
        self.plan = plan
        self.opts = opts
        self.progress = progress or (lambda *_: None)
        self.batch = hashlib.sha256(
            f"{plan.source}|{datetime.now(UTC).isoformat()}".encode()
        ).hexdigest()[:16]
        self.kept = [plan.records[i] for i in plan.validation.kept]
        self.ids = [str(r.id) for r in self.kept]
        self.vectors = _matrix(plan.records, plan.validation.kept, plan.spec.dimension)
        self.seconds: dict[str, float] = {}
        self.chunk_ids: list[int] = []
        self.old_vectors = 0  # the space's vectors before the import (all carried over)
        self.rebuild = False  # a bulk write into a space that holds vectors (module docstring)
        self._staging_committed = False  # the staged table outlives a failure after this

    @property
    def had_rows(self) -> bool:
        """Whether the space held vectors before the import."""
        return self.old_vectors > 0

    def _collection(self, conn: psycopg.Connection[Any]) -> tuple[repository.Collection, bool]:
        name = self.plan.collection
        repository.lock_name(conn, f"ragstore-import:{name}")
        try:
            coll = repository.get_collection(conn, name)
        except CollectionNotFoundError:
            spec = self.plan.spec
            pinned = models.dimension_of(conn, upsert_model(conn, spec))
            if pinned != spec.dimension:
                raise ModelMismatchError(
                    f"model {spec.key} is already pinned with {pinned} "
                    f"dimensions, not {spec.dimension}; declare another revision "
                    "(--model NAME@REVISION)"
                ) from None
            return repository.create_collection(conn, name, spec), True
        _check_target(coll, self.plan.spec)
        spaces.lock_collection(conn, coll.id)
        if spaces.building_spaces(conn, coll.id):
            raise ConflictError(
                f"collection {name!r} is being migrated to another model; finish or cancel "
                "that migration (`ragstore models`) before importing into it"
            )
        return coll, False

    def _write_rows(
        self,
        conn: psycopg.Connection[Any],
        coll: repository.Collection,
        staged: StagedVectors | None,
    ) -> None:
        """Every kept record as a one-chunk document with its own vector, through the shared
        write path (:func:`ragstore.db.documents.write_documents`) in slices inside this one
        transaction.

        Into an empty space (a bulk write) the chunks' tsvectors are computed on a second
        connection, up to two slices ahead of the one this connection writes
        (:class:`_Lexer`); the first slices are small, so the writer starts soon.
        ``to_tsvector`` is most of the server's work per chunk, and this way it runs on
        another core instead of in the writing backend (revision 0015). Without a second
        connection the chunk trigger computes them, as for any other write. With
        ``staged`` the vectors go to its table once their chunks are written.
        """
        total = len(self.kept)
        bounds = _slices(total)
        written_ids: list[int] = []
        queued = -1  # the last slice handed to the lexer
        lexer = None
        if self.bulk:  # the chunk trigger keeps what it is sent
            lexer = _Lexer.start(self.rt, documents.ts_config_name(conn, coll.id))
        try:
            for n, (start, end) in enumerate(bounds):
                if lexer is not None:  # this slice and the next AHEAD, before this one waits
                    for ahead in range(queued + 1, min(len(bounds), n + 1 + lexer.AHEAD)):
                        lexer.submit(self.texts(*bounds[ahead]))
                        queued = ahead
                writes = [
                    self._document(rid, rec, self.vectors[i])
                    for i, (rid, rec) in enumerate(
                        zip(self.ids[start:end], self.kept[start:end], strict=True), start
                    )
                ]
                if lexer is not None:
                    writes = lexer.attach(writes)
                held: documents.StagedRows | None = [] if staged is not None else None
                written = documents.write_documents(conn, coll, writes, force=True, staged=held)
                if staged is not None and held:
                    staged.copy(held)
                written_ids += [w.id for w in written]
                self.progress("documents", end, total)
        finally:
            if lexer is not None:
                lexer.close()
        ids_by_doc = documents.chunk_ids_of(conn, written_ids)
        self.chunk_ids = [ids_by_doc[d] for d in written_ids]

    def texts(self, start: int, end: int) -> list[str]:
        """The chunk texts of the records ``start`` to ``end`` (one each)."""
        return [rec.text or "" for rec in self.kept[start:end]]

    def _document(self, rid: str, rec: Record, vector: np.ndarray) -> documents.DocumentWrite:
        text = rec.text or ""
        title = rec.metadata.get("title")
        digest = hashlib.sha256(text.encode()).hexdigest()
        record = documents.DocumentRecord(
            rid,
            title if isinstance(title, str) else None,
            "imported",
            digest,
            len(text.encode()),
            {"import": {"batch": self.batch, "id": rid, "from": self.plan.source}},
            origin="import",
        )
        chunk = Chunk(
            0,
            ChunkType.PARAGRAPH,
            text,
            (),
            None,
            0,
            len(text),
            len(text.split()),
            digest,
            metadata=dict(rec.metadata),
        )
        return documents.DocumentWrite(record, [chunk], vector[np.newaxis, :])

    def _stored_digests(
        self, conn: psycopg.Connection[Any], coll: repository.Collection, table: str
    ) -> tuple[int, dict[str, bytes]]:
        """The rows stored under this import's batch (each chunk with a vector in the
        space) and their digests by record id, in one read."""
        rows = 0
        digests: dict[str, bytes] = {}
        for rid, vec in documents.vectors_by_source(
            conn, coll.id, table, {"import": {"batch": self.batch}}
        ):
            rows += 1
            digests[rid] = record_digest(rid, vec)
        return rows, digests

    def _exact_top_k(
        self, conn: psycopg.Connection[Any], table: str, queries: Matrix, k: int
    ) -> tuple[npt.NDArray[np.int64], Matrix]:
        """Chunk ids and distances of the exact ``k`` nearest of each query among the
        import's vectors and those that were in ``table`` before it (they take part in
        search), the latter streamed in blocks of ``spaces.VECTOR_BLOCK`` rows.

        It read every vector of the space into memory at once, as Python objects: a
        10-record import into a collection of 60,000 384-dimension vectors (92 MB) peaked
        at 530 MB (120 MB into an empty one) and spent 7.9 s verifying, so one into a
        collection of millions was killed for memory. The best ``k`` are now kept across
        blocks: 220 MB and 1.4 s."""
        metric = self.plan.spec.distance
        idx, best = exact_top_k(queries, self.vectors, metric, k)
        best_ids = np.asarray(self.chunk_ids, dtype=np.int64)[idx]
        if not self.had_rows or not len(queries):
            return best_ids, best
        for block_ids, block in spaces.vector_blocks_except(conn, table, self.chunk_ids):
            bidx, bdist = exact_top_k(queries, block, metric, k)
            ids = np.concatenate([best_ids, block_ids[bidx]], axis=1)
            dist = np.concatenate([best, bdist], axis=1)
            order = np.argsort(dist, axis=1, kind="stable")[:, :k]
            best_ids = np.take_along_axis(ids, order, axis=1)
            best = np.take_along_axis(dist, order, axis=1)
        return best_ids, best

    def _verify(
        self, conn: psycopg.Connection[Any], coll: repository.Collection, table: str
    ) -> Verification:
        """Rows, checksums and the recall of ``table``'s HNSW index (the space's table, or
        a rebuild's staged one before it takes the space's place)."""
        opts, spec = self.opts, self.plan.spec
        self.progress("checksum", 0, len(self.ids))
        source_d = digests_of(self.ids, self.vectors)
        stored_rows, stored_d = self._stored_digests(conn, coll, table)
        n_q = min(opts.verify_queries, len(self.ids))
        rng = np.random.default_rng(opts.seed)
        qidx = np.sort(rng.choice(len(self.ids), size=n_q, replace=False))
        queries = self.vectors[qidx]
        ex_idx, ex_dist = self._exact_top_k(conn, table, queries, 10)
        ef = opts.ef_search or max(self.rt.settings.hnsw_ef_search, 10)
        found = []
        for n, q in enumerate(queries, 1):
            # the HNSW index itself, even where the planner would scan a small table
            found.append(spaces.index_knn(conn, table, spec.distance, q, int(ex_idx.shape[1]), ef))
            if n % 20 == 0:
                self.progress("parity", n, n_q)
        truth = [[int(j) for j in row_] for row_ in ex_idx]
        recall = recall_at_k(truth, ex_dist, found)
        return Verification(
            source_rows=len(self.ids),
            stored_rows=stored_rows,
            source_checksum=combine(source_d),
            stored_checksum=combine(stored_d),
            recall_at_10=recall,
            queries=n_q,
            ef_search=ef,
            min_recall=opts.min_recall,
            differing_ids=differing_ids(source_d, stored_d),
        )

    @property
    def bulk(self) -> bool:
        """Whether BM25 is built at the end (an empty space, or a rebuild) instead of by
        the triggers, row by row."""
        return self.rebuild or not self.had_rows

    def run(self) -> tuple[repository.Collection, bool, Verification]:
        """Write, index and verify in one transaction (the module docstring); a database
        failure on the way says what became of the import (:func:`_what_became_of_it`)."""
        coll: repository.Collection | None = None
        done = False
        committing = False
        try:
            with (
                self.rt.db.connection() as conn,
                translated(f"importing into collection {self.plan.collection!r}"),
                # released once the transaction below has ended (a rebuild's: _rebuild)
                staging.StagedLock(self.rt, conn) as lock,
            ):
                with conn.transaction():
                    coll, created = self._locked(conn)
                    if not created:
                        self._refuse_ids_stored_since_the_plan(conn, coll)
                    memory = self.opts.maintenance_work_mem or self.rt.settings.index_build_memory
                    if self.rebuild:
                        verification = self._rebuild(conn, coll, memory, lock)
                    else:
                        t0 = time.perf_counter()
                        self._write_rows(conn, coll, None)
                        self.seconds["write"] = time.perf_counter() - t0
                        if self.bulk:
                            t0 = time.perf_counter()
                            documents.finish_bulk(conn, coll.id, memory)
                            self.seconds["bm25"] = time.perf_counter() - t0
                        self._index(conn, coll, memory)
                        verification = self._verified(conn, coll, coll.table)
                    committing = True  # leaving the block commits
                # said before this connection goes back to the pool: an interrupt from here
                # on finds the import committed, and its command must not say rolled back
                self.progress("committed", len(self.ids), len(self.ids))
            done = True
        except DatabaseError as exc:
            said = isinstance(exc, DatabaseUnavailableError) and exc.says_outcome
            if not done and not said:
                exc.message = f"{exc.message}; {_what_became_of_it(committing)}"
            raise
        finally:
            # the import's transaction has rolled back by now, so its staged table is free
            if not done and self._staging_committed and coll is not None:
                discard_staged(self.rt, coll)
        return coll, created, verification

    def _locked(self, conn: psycopg.Connection[Any]) -> tuple[repository.Collection, bool]:
        """The collection (created if new) with everything the import writes locked: its
        row, its space's table, its write locks (all of them for a bulk write, else the
        records' own), each waited for at most ``RAGSTORE_BULK_LOAD_WAIT_S``.

        Behind a stuck bulk load or import of the collection the import waited for good,
        saying nothing; it now fails busy ``database_unavailable`` (retryable), its
        transaction rolled back (:func:`staging.waiting_for_locks`)."""
        with staging.waiting_for_locks(
            self.rt,
            conn,
            self.plan.collection,
            "an import into",
            "the import was rolled back, nothing was written",
        ):
            coll, created = self._collection(conn)
            spaces.lock_for_load(conn, coll.table)
            self.old_vectors = spaces.count_vectors(conn, coll.table)
            self.rebuild = (
                self.had_rows
                and len(self.ids) >= staging.REBUILD_SHARE * self.old_vectors
                and staging.can_stage(self.rt)
            )
            if not self.had_rows:  # the index is built once, at the end
                spaces.drop_index(conn, coll.table)
            if self.bulk:
                documents.begin_bulk(conn, coll.id)
            else:
                documents.lock_sources(conn, coll.id, self.ids)
        return coll, created

    def _refuse_ids_stored_since_the_plan(
        self, conn: psycopg.Connection[Any], coll: repository.Collection
    ) -> None:
        """The plan judged ``existing_id`` before anything was locked; a record whose id
        another writer stored since then would be written over (every write of an import
        replaces), and that writer's acknowledged document lost, whatever the policy said.
        Looked at again under the import's source locks, so none can arrive after."""
        found = _existing_ids(conn, coll.id, self.ids)
        if not found:
            return
        first = [i for i in self.ids if i in found][:5]
        raise ImportValidationError(
            f"{self.plan.source}: {len(found)} existing_id (first: {', '.join(first)}): "
            f"stored in {coll.name!r} by another writer after the import was read and "
            "checked; nothing was written. Run the import again: such ids are then "
            "refused or skipped as --policy existing_id says"
        )

    def _rebuild(
        self,
        conn: psycopg.Connection[Any],
        coll: repository.Collection,
        memory: str,
        lock: staging.StagedLock,
    ) -> Verification:
        """Write, build and verify on the side (module docstring): the records' vectors
        staged, indexed there with the space's while this connection adds the postings,
        verified where they were built, before the swap locks out the searches, then
        swapped in."""
        mark = documents.chunk_mark(conn, coll.id)
        t0 = time.perf_counter()
        with StagedVectors(self.rt, coll, lock) as staged:
            self._write_rows(conn, coll, staged)
            self.seconds["write"] = time.perf_counter() - t0
            self._build_staged(conn, coll, staged, mark, memory)
            staged.commit()
            self._staging_committed = True
        verification = self._verified(conn, coll, staged.table)
        if not spaces.attach_load_table(conn, coll.table, replacing=True):
            self._index(conn, coll, memory)
            verification = self._verified(conn, coll, coll.table)
        return verification

    def _verified(
        self, conn: psycopg.Connection[Any], coll: repository.Collection, table: str
    ) -> Verification:
        """:meth:`_verify` of ``table``, timed; ImportVerificationError where it falls short
        (the transaction then rolls back)."""
        t0 = time.perf_counter()
        verification = self._verify(conn, coll, table)
        self.seconds["verify"] = self.seconds.get("verify", 0.0) + time.perf_counter() - t0
        if not verification.ok:
            raise ImportVerificationError(_failure(verification, self.plan.collection))
        return verification

    def _build_staged(
        self,
        conn: psycopg.Connection[Any],
        coll: repository.Collection,
        staged: StagedVectors,
        mark: tuple[int, int],
        memory: str,
    ) -> None:
        """A rebuild's two builds at once: the staged vectors (with the space's, copied in
        first) indexed on the staging connection while this one adds the import's
        postings to the collection's."""
        # an import replaces no chunk: every vector of the space is carried over, and the
        # staging connection sees exactly this transaction's (the import holds every
        # source lock of the collection; its own rows went to the staged table)
        self.progress("index", 0, len(self.ids) + self.old_vectors)
        t0 = time.perf_counter()
        staged.build_alongside(
            lambda: staged.build(spaces.EVERY_VECTOR, memory),
            lambda: documents.finish_bulk_add(conn, coll.id, mark, memory),
        )
        self.seconds["index"] = time.perf_counter() - t0  # the BM25 build beside it

    def _index(
        self, conn: psycopg.Connection[Any], coll: repository.Collection, memory: str
    ) -> None:
        """The space's HNSW index, built now where the import dropped it (or it was not
        swapped in); an index that exists is kept, and grew with the rows."""
        t0 = time.perf_counter()
        self.progress("index", 0, len(self.ids))
        spaces.ensure_index(
            conn, coll.table, coll.model.distance, memory=memory, workers=spaces.build_workers()
        )
        self.seconds["index"] = time.perf_counter() - t0


def _what_became_of_it(committing: bool) -> str:
    """What a database failure during the import's transaction left, for its message.

    The database going away mid-import (a restart, a terminated backend, a full disk) was
    told as ``importing into collection 'x': the database cannot be reached (...)`` and
    nothing more, so the user of a migration sold as all or nothing could not tell whether
    half of it was stored; an interrupt said "rolled back". Before the commit nothing of
    it is stored; a connection lost during the commit may have committed it or not."""
    if not committing:
        return (
            "the import was rolled back, nothing was written (it is one transaction); run "
            "the same command again once the database is back"
        )
    return (
        "the connection was lost while the import committed, so it may or may not be "
        "stored: look at the collection (ragstore documents list) before running it again"
    )


def _failure(v: Verification, collection: str) -> str:
    parts = []
    if not v.rows_ok:
        parts.append(f"{v.stored_rows} rows stored for {v.source_rows} source records")
    if not v.checksum_ok:
        parts.append(
            f"checksum differs (source {v.source_checksum[:16]}, pgvector "
            f"{v.stored_checksum[:16]}; first differing ids: "
            f"{', '.join(v.differing_ids) or '?'})"
        )
    if not v.recall_ok:
        parts.append(
            f"recall@10 {v.recall_at_10:.3f} is below {v.min_recall:.2f} over "
            f"{v.queries} queries at ef_search {v.ef_search} (raise --ef-search)"
        )
    return (
        f"verification of the import into {collection!r} failed: {'; '.join(parts)}; "
        "the import was rolled back and the collection is as it was"
    )


def run_import(
    rt: Runtime, plan: ImportPlan, opts: ImportOptions, progress: Progress | None = None
) -> ImportReport:
    """Back up, write, index and verify in one transaction (see the module docstring)."""
    refuse_if_invalid(plan)
    _check_verification_options(opts)
    seconds = {"read": plan.read_seconds}
    info = None
    if opts.backup:
        t0 = time.perf_counter()
        if progress:
            progress("backup", 0, 0)
        info = backups.create_backup(rt.db, rt.settings, opts.backup_path, reason="import")
        seconds["backup"] = time.perf_counter() - t0
    writer = _Writer(rt, plan, opts, progress)
    coll, created, verification = writer.run()
    seconds.update(writer.seconds)
    spec = coll.model
    return ImportReport(
        source=plan.source,
        collection=coll.name,
        created=created,
        model=spec.key,
        provider=spec.provider,
        dimension=spec.dimension,
        distance=spec.distance,
        read=plan.validation.read,
        written=len(writer.ids),
        skipped=plan.validation.skipped,
        validation=plan.validation,
        backup=info,
        verification=verification,
        seconds=seconds,
        model_check=plan.model_check,
        batch=writer.batch,
    )
