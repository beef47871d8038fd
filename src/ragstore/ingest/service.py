"""The ingest pipeline: read -> parse -> chunk -> embed (only what is new) -> store.

Files are taken in rounds of about ``ingest_batch_chunks`` chunks so the model always
encodes large, length-sorted batches across documents. Unchanged files (same content
hash) are skipped before parsing; chunks whose text is already embedded in the
collection reuse the stored vector. With ``sync``, stored documents under the given
folders that are gone from disk are reported as vanished, and removed with ``prune``
(after ``on_vanished`` has been told which). Documents are written
on a writer thread while the next round is parsed and encoded: one transaction per round,
falling back to one per document when the round fails, so a document that fails leaves
nothing behind and the rest of the batch goes on.
"""

from __future__ import annotations

import copy
import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from psycopg_pool import PoolTimeout

from ragstore.db import catalog, documents, repository, spaces
from ragstore.db.errors import translated
from ragstore.embedding.base import Embedder
from ragstore.errors import (
    CollectionNotFoundError,
    DatabaseUnavailableError,
    DecodeError,
    InputError,
    ParseHelperUnavailableError,
    RagstoreError,
    ReadOnlyError,
)
from ragstore.files import (
    LINK_OUTSIDE_FOLDER,
    discover,
    gone_from_disk,
    link_outside_detail,
    not_ingestible,
    printable,
    resolved,
    sync_scopes,
    unlisted_error,
)
from ragstore.ingest import prepare, staging
from ragstore.ingest.heap import long_lived_set_aside
from ragstore.ingest.staging import StagedVectors, discard_staged
from ragstore.modelops.fanout import building_vectors
from ragstore.models import Chunk
from ragstore.observability import metrics
from ragstore.runtime import Runtime

# Staging pays where the two builds are long: at 100k chunks (some 100 MB of Markdown)
# overlapping them saved 10-14 s of 40-63; at 14k chunks (10 MB) they took 3.6-4.0 s
# overlapped against 3.6-3.8 s one after the other (docs/benchmarks.md).
log = logging.getLogger("ragstore.ingest")

STAGE_MIN_BYTES = 32 << 20

# A first load (an empty collection) is a bulk load from this size even where
# ``RAGSTORE_BULK_LOAD_BYTES`` is larger: with an instant encoder a 150 KB first load took
# 0.22-0.33 s in bulk against 0.44-0.46 s row by row, a 920 KB one 1.1 s against 3.7-4.8 s;
# at 29 KB the two were level and at 4 KB row by row was quicker (docs/benchmarks.md).
FIRST_LOAD_BULK_BYTES = 256 << 10

# Vectors an ingest keeps of what it encoded, so that a chunk text met again in a later
# round is not encoded again (``_Ingestor._keep_encoded``): 64 MiB, 43k vectors of 384
# dimensions; past it, later texts are looked up in the database only, as before.
ENCODED_KEEP_BYTES = 64 << 20

# How long the index check after an incremental ingest waits for a pooled connection: the
# index is there unless an earlier bulk load was killed, so under a full pool the check
# is better skipped (the next ingest makes it) than waited for a pool timeout.
INDEX_CHECK_POOL_WAIT_S = 0.25


class BulkLoad(enum.Enum):
    """How a bulk load (:func:`_bulk_load`) treats the collection's space."""

    FIRST = "first"  # an empty space: its index dropped now, built once at the end
    REBUILD = "rebuild"  # a space with vectors: they are staged with the load's, indexed anew


@dataclass
class FileOutcome:
    """What happened to one input. ``document`` is the stored row as this ingest's own
    transaction left it (absent for files skipped before parsing and for failures);
    ``exc`` is the error of a failed input. ``again``: written again on its own after its
    round's transaction failed, which may have committed (its answer lost): then this
    write found the round's own rows, ``unchanged`` (a job counts it as a retry does:
    ``jobs.runner.job_status``)."""

    source: str
    # added | updated | unchanged | superseded | failed | not_attempted | vanished | removed
    # | skipped
    status: str
    chunks: int = 0
    headings: int = 0  # of ``chunks``, the headings: structure, with no vector of their own
    error: str | None = None
    code: str | None = None
    document: dict[str, Any] | None = None
    exc: RagstoreError | None = None
    again: bool = False


@dataclass(frozen=True)
class Item:
    """One document to ingest: the source it is stored under and where its bytes are.

    A file on disk is its own source. An upload is stored under its logical source (the
    same on every upload of that name) while its bytes sit in a staging file private to
    the request; ``label`` (the client's name) is what error messages call it, and
    ``early_skip`` is off so that even an unchanged upload is decided under the write
    lock, from the stored row.
    """

    source: str
    path: Path | None  # None for a text given in the call (``text``)
    label: str
    metadata: dict[str, Any] = field(default_factory=dict)
    early_skip: bool = True
    accepted_at: datetime | None = None  # see documents.DocumentWrite (a queued job's)
    origin: str = "file"  # documents.DocumentRecord's: an upload's is "upload"
    # A text added by id (``add_texts``): its words, chunked as a plain passage with
    # ``metadata`` exactly as the caller's, and its stored hash (``texts._digest``), in
    # place of a file to read. A large call takes this pipeline, bulk load included.
    text: str | None = None
    content_hash: str | None = None
    # The caller's vector for ``text`` (an outside model's): the text is stored whole as
    # one chunk with it, nothing encoded (``prepare.whole_text``)
    vector: np.ndarray | None = field(default=None, compare=False)

    @property
    def size(self) -> int:
        """Its bytes: a text's, or the file's (0 where it cannot be read: it fails later)."""
        if self.text is not None:
            return len(self.text.encode("utf-8", "surrogatepass"))
        assert self.path is not None
        try:
            return self.path.stat().st_size
        except OSError:
            return 0


def _fail(source: str, exc: RagstoreError) -> FileOutcome:
    return FileOutcome(source, "failed", error=str(exc), code=exc.code, exc=exc)


# SQLSTATEs of class 53 that one document's write can cause alone (a huge document's
# memory): they fail that document, not the ingest
_ONE_DOCUMENT_53 = frozenset({"53200", "53400"})


def stops_ingest(exc: RagstoreError) -> bool:
    """Whether ``exc`` fails every later write of an ingest too: the database's disk full
    (SQLSTATE 53100), the database gone or its breaker open, a read-only server (a hot
    standby: SQLSTATE 25006). Such an error used to fail each remaining file in turn, each
    one parsed and embedded first (the expensive part) and reported on a line of its own;
    the ingest now stops at it (:meth:`_Ingestor.stop`). An error of one file (a parse
    error, a file too large, a chunk too long, a statement cancelled) does not.

    So does a migration's switch of the collection's model while the ingest runs
    (:func:`documents.model_switched`): the ingest cut and embedded for the old model, so
    each remaining file was read and embedded only to be refused with the same 409, one
    line each; it stops at the first, the rest ``not_attempted``, and running it again
    stores them with the new model. And so does the collection's deletion by another
    client while the ingest runs (``collection_not_found``, from
    :func:`documents.hold_live`): no later file can be stored in it.

    And so does a parse helper that could not start for a cause that does not pass by
    itself (:func:`stops_reading`): every later file parsed in a helper failed the same
    way, each after a fresh start attempt of its own."""
    state = getattr(exc.__cause__, "sqlstate", None)
    if isinstance(exc, DatabaseUnavailableError):
        return state not in _ONE_DOCUMENT_53
    return (
        isinstance(exc, (ReadOnlyError, CollectionNotFoundError))
        or state == "25006"
        or documents.model_switched(exc)
        or stops_reading(exc)
    )


def stops_reading(exc: RagstoreError) -> bool:
    """Whether ``exc``, a file's, fails every later file's parse but no write: a parse
    helper that could not start for a cause that will not pass by itself (its Python
    cannot be run, or it exits with a status as it starts: ``retry_after`` None). The
    ingest reads no file after it; what it read before is still written (a bulk load's
    transaction, healthy, commits). A cause that passes (no descriptor or memory left, a
    helper killed by a signal or slow to start) fails its file alone, as before."""
    return isinstance(exc, ParseHelperUnavailableError) and exc.retry_after is None


def _not_attempted(item: Item, stop: RagstoreError) -> FileOutcome:
    """The outcome of an input an ingest stopped by ``stop`` did not store (never written,
    or written in a transaction that rolled back): its error is ``stop``'s kind (an HTTP
    client is answered its status, a job retries a database that was away), worded for it."""
    exc = copy.copy(stop)
    exc.problem_members = {}
    fails = "every later file" if stops_reading(stop) else "every write"
    exc.message = (
        f"{printable(item.label)}: not stored: the ingest stopped at an error that fails "
        f"{fails} ({stop.message}); run the ingest again once it is fixed"
    )
    exc.args = (exc.message,)
    return FileOutcome(item.source, "not_attempted", error=exc.message, code=exc.code, exc=exc)


@dataclass
class IngestReport:
    collection: str
    outcomes: list[FileOutcome] = field(default_factory=list)
    embedded: int = 0  # chunk texts sent to the model
    reused: int = 0  # chunks whose vector was already stored
    seconds: float = 0.0
    encode_seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)  # seconds of the write stages
    # CPU seconds of the ingesting process's thread in each stage (the database server's
    # and worker processes' are not in it): with ``stages``, what waited and what worked
    stage_cpu: dict[str, float] = field(default_factory=dict)
    # the error that stopped the ingest part way (:func:`stops_ingest`): the inputs after
    # it are ``not_attempted``; running the same ingest again resumes (stored files are
    # skipped as unchanged)
    stopped_by: RagstoreError | None = None

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def failed(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def chunks(self) -> int:
        return sum(o.chunks for o in self.outcomes if o.status in ("added", "updated"))

    @property
    def headings(self) -> int:
        """Of :attr:`chunks`, the headings, which are neither embedded nor reused: the
        summary's "12 chunks stored, 5 embedded, 0 reused" left 7 unexplained."""
        return sum(o.headings for o in self.outcomes if o.status in ("added", "updated"))


class IngestInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, where the caller turns it into an interrupt) stopped an ingest.

    It is raised from the interrupt (its ``__cause__``) once the round being written has
    committed, so ``report`` holds exactly what is stored: every document in it whole, a
    bulk load's documents left out (its one transaction rolled back). ``total`` is the
    number of inputs the ingest was given."""

    def __init__(self, report: IngestReport, total: int) -> None:
        super().__init__(f"ingest of {report.collection!r} interrupted")
        self.report = report
        self.total = total


Progress = Callable[[str, int, int], None]  # (event "file"|"chunks", files done, chunks done)

# Called with the connection of each transaction that writes documents, after its writes and
# before its commit; what it raises rolls the transaction back and ends the ingest. A job's
# run passes one that stores nothing once its attempt no longer counts (jobs.runner); an
# ordinary ingest none, and runs no statement for it.
WriteGuard = Callable[[Any], None]


@dataclass
class _Pending:
    item: Item
    record: documents.DocumentRecord
    chunks: list[Chunk]
    vectors: np.ndarray | None = None
    extra_vectors: dict[str, np.ndarray] = field(default_factory=dict)  # building spaces


class _Ingestor:
    def __init__(
        self,
        rt: Runtime,
        coll: repository.Collection,
        embedder: Embedder | None,
        report: IngestReport,
        user_meta: dict[str, Any],
        progress: Progress | None,
        bulk: BulkLoad | None = None,
        guard: WriteGuard | None = None,
    ) -> None:
        self.rt = rt
        self.bulk = bulk
        self.guard = guard
        self._conn: Any = None  # the bulk load's one connection (its transaction)
        self._staged: StagedVectors | None = None  # where a bulk load's vectors go
        self._staging_committed = False  # its table outlives a failure of the load after this
        self._mark = (0, 0)  # a rebuilding load's: the chunk ids below its own, and count
        self._bulk_outcomes: list[FileOutcome] = []
        self.coll = coll
        self.embedder = embedder
        self.report = report
        self.user_meta = user_meta
        self.progress = progress or (lambda *_: None)
        self.files_done = 0
        self.chunks_done = 0
        self._lock = threading.Lock()  # outcomes arrive from the main and the writer thread
        self._encoded: dict[str, np.ndarray] = {}  # content hash -> vector (_keep_encoded)
        self._encoded_bytes = 0
        self._preparer: prepare.Preparer | None = None

    def _done(self, outcome: FileOutcome) -> None:
        with self._lock:
            self.report.outcomes.append(outcome)
            self.files_done += 1
            self.chunks_done += outcome.chunks
            self.progress("file", self.files_done, self.chunks_done)

    def stop(self, exc: RagstoreError) -> None:
        """Stop the ingest at ``exc``, an error that fails every later write too
        (:func:`stops_ingest`): no round is read, encoded or written after it, and the
        inputs without an outcome are reported ``not_attempted`` (:meth:`_unattempted`).
        One that fails only later reads (:func:`stops_reading`) stops the reading: the
        rounds read before it are still encoded and written."""
        with self._lock:
            if self.report.stopped_by is None:
                self.report.stopped_by = exc

    @property
    def stopped(self) -> bool:
        """Nothing more is encoded or written (an error that fails every write met)."""
        stop = self.report.stopped_by
        return stop is not None and not stops_reading(stop)

    @property
    def reading_stopped(self) -> bool:
        """No more files are read: the ingest stopped, for writes or for reads."""
        return self.report.stopped_by is not None

    def _unattempted(self, files: Sequence[Item]) -> None:
        """Once the pipeline is over: each input of a stopped ingest with no outcome yet."""
        stop = self.report.stopped_by
        if stop is None:
            return
        with self._lock:
            seen = {o.source for o in self.report.outcomes}
            self.report.outcomes.extend(
                _not_attempted(i, stop) for i in files if i.source not in seen
            )

    def _embed(self, pending: list[_Pending]) -> None:
        """Vectors for every embeddable chunk: stored ones reused, the rest encoded once.
        Not in a stopped ingest (the round is not written): its ``vectors`` stay None."""
        if self.stopped:
            return
        for p in pending:
            if p.item.vector is not None:  # the caller's: nothing looked up or encoded
                p.vectors = p.item.vector[None, :]
        # (a model migration's new space gets no vector of a caller's, as batch by batch)
        pending = [p for p in pending if p.item.vector is None]
        if not pending:
            return
        assert self.embedder is not None  # None only where every text brings its vector
        hashes = [c.content_hash for p in pending for c in p.chunks if c.embeddable]
        with self._lock:  # encoded by an earlier round of this ingest, maybe not committed
            stored = {h: self._encoded[h] for h in hashes if h in self._encoded}
        with self.rt.db.connection() as conn, translated("looking up stored embeddings"):
            stored.update(
                documents.stored_embeddings(conn, self.coll, [h for h in hashes if h not in stored])
            )
        todo: dict[str, str] = {}
        for p in pending:
            for c in p.chunks:
                if c.embeddable and c.content_hash not in stored:
                    todo.setdefault(c.content_hash, c.embed_text)
        t0 = time.perf_counter()
        vecs = self.embedder.embed(list(todo.values()))
        fresh = dict(zip(todo, vecs, strict=True))
        with self._lock:  # two rounds may be encoded at once (see _pipeline)
            self.report.encode_seconds += time.perf_counter() - t0
            self.report.embedded += len(todo)
            self.report.reused += len(hashes) - len(todo)
            self._keep_encoded(fresh)
        dim = self.coll.model.dimension
        for p in pending:
            rows = [
                fresh[c.content_hash] if c.content_hash in fresh else stored[c.content_hash]
                for c in p.chunks
                if c.embeddable
            ]
            p.vectors = np.stack(rows) if rows else np.zeros((0, dim), dtype=np.float32)
        # a model migration in progress: its new space gets these documents too
        for p, extra in zip(
            pending, building_vectors(self.rt, self.coll, [p.chunks for p in pending]), strict=True
        ):
            p.extra_vectors = extra

    def _keep_encoded(self, fresh: dict[str, np.ndarray]) -> None:
        """Remember vectors this ingest encoded (up to :data:`ENCODED_KEEP_BYTES`), under
        ``_lock``: a chunk text met again in a later round is not sent to the model again.
        The stored-vector lookup cannot see them where their round is not committed yet (a
        bulk load commits once, at its end; a round may still be written): the same
        paragraph in two files of one load was encoded twice, billed twice by a paid API."""
        for h, v in fresh.items():
            if self._encoded_bytes + v.nbytes > ENCODED_KEEP_BYTES:
                return
            self._encoded[h] = v
            self._encoded_bytes += v.nbytes

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """One round's transaction: its own, or a savepoint of the bulk load's. Its own is
        checked by ``guard`` before it commits (a bulk load's once, before its build)."""
        if self._conn is None:
            with self.rt.db.connection() as conn:
                yield conn
                if self.guard is not None:
                    self.guard(conn)
        else:
            with self._conn.transaction():
                yield self._conn

    def _write(self, pending: list[_Pending]) -> None:
        """Store a round in one transaction (a savepoint in a bulk load); if that fails,
        store it document by document so the one bad document is reported and the rest
        still land."""
        with self._stage("write"):
            self._write_round(pending)

    def _write_round(self, pending: list[_Pending]) -> None:
        if self.stopped:  # an earlier round, or this one's encoding, stopped the ingest
            return
        staged = self._held()
        where = "storing a round of documents"
        try:
            with translated(where), self._transaction() as conn, translated(where):
                written = documents.write_documents(
                    conn, self.coll, [self._as_write(p) for p in pending], staged=staged
                )
        except RagstoreError:
            # a round of its own transaction may have committed, its answer lost: what it
            # stored is then found unchanged below (a bulk load's savepoint did not)
            again = self._conn is None
            for p in pending:
                if self.stopped:  # the rest of the round: not attempted
                    break
                self._write_one(p, again=again)
            return
        self._stage_vectors(staged)
        for p, w in zip(pending, written, strict=True):
            self._stored(w, p)

    def _write_one(self, p: _Pending, *, again: bool = False) -> None:
        staged = self._held()
        # translated inside the transaction too: a failed statement's OperationalError (a
        # full disk, SQLSTATE 53100) was translated by the pool's connection() first, as
        # "using <database>", and the failed line did not say which file it was; the outer
        # one still names a failed commit
        where = f"storing {p.item.label}"
        try:
            with translated(where), self._transaction() as conn, translated(where):
                written = documents.write_documents(
                    conn, self.coll, [self._as_write(p)], staged=staged
                )
        except RagstoreError as exc:
            if stops_ingest(exc):  # before it is reported: no later round is started
                self.stop(exc)
            self._done(_fail(p.record.source, exc))
            return
        self._stage_vectors(staged)
        self._stored(written[0], p, again=again)

    def _held(self) -> documents.StagedRows | None:
        """Where a bulk load's write keeps the active space's vectors back."""
        return [] if self._staged is not None else None

    def _stage_vectors(self, rows: documents.StagedRows | None) -> None:
        """A bulk load's vectors of chunks its transaction has stored, to its staging
        table; a failure there fails the whole load (it raises past the fallbacks)."""
        if rows:
            assert self._staged is not None
            self._staged.copy(rows)

    @staticmethod
    def _as_write(p: _Pending) -> documents.DocumentWrite:
        assert p.vectors is not None
        return documents.DocumentWrite(
            p.record, p.chunks, p.vectors, p.extra_vectors, accepted_at=p.item.accepted_at
        )

    def _stored(self, w: documents.Written, p: _Pending, *, again: bool = False) -> None:
        stored = w.status in ("added", "updated") and w.document is not None
        chunks = int(w.document["chunks"]) if stored and w.document else 0
        headings = sum(1 for c in p.chunks if not c.embeddable) if chunks else 0
        outcome = FileOutcome(
            w.source, w.status, chunks=chunks, headings=headings, document=w.document, again=again
        )
        if self._conn is not None:
            self._bulk_outcomes.append(outcome)
        self._done(outcome)

    @contextmanager
    def _stage(self, stage: str) -> Iterator[None]:
        """Add the wall and CPU seconds (of this thread) of the block to ``stage``."""
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
            with self._lock:
                stages, cpus = self.report.stages, self.report.stage_cpu
                stages[stage] = stages.get(stage, 0.0) + wall
                cpus[stage] = cpus.get(stage, 0.0) + cpu

    def _prepare_group(self, group: Sequence[Item]) -> list[_Pending]:
        """Read, parse and chunk one round of files; failures are recorded, not raised."""
        with self._stage("parse_chunk"):
            return self._prepare_all(group)

    def _prepare_all(self, group: Sequence[Item]) -> list[_Pending]:
        if self.reading_stopped:
            return []
        try:
            with self.rt.db.connection() as conn, translated("reading stored documents"):
                known = documents.document_hashes(conn, self.coll.id, [i.source for i in group])
        except RagstoreError as exc:
            if not stops_ingest(exc):
                raise
            self.stop(exc)
            return []
        assert self._preparer is not None
        hashes = [known[i.source][1] if i.source in known else None for i in group]
        pending: list[_Pending] = []
        prepared = self._preparer.run(group, hashes)
        try:
            for item, got in zip(group, prepared, strict=False):
                if got.error is not None and stops_ingest(got.error):
                    # the rest of the round is not read (a fresh helper would fail each),
                    # and no later round: they are reported not attempted
                    self.stop(got.error)
                    self._done(_fail(item.source, got.error))
                    break
                self._take(item, got, pending)
        finally:
            prepared.close()
        return pending

    def _take(self, item: Item, got: prepare.Prepared, pending: list[_Pending]) -> None:
        """A prepared file: its outcome if it is known already, else to ``pending``."""
        if got.error is not None:
            self._done(_fail(item.source, got.error))
        elif got.unchanged:
            self._done(FileOutcome(item.source, "unchanged"))
        else:
            assert got.record is not None
            pending.append(_Pending(item, got.record, got.chunks))

    def run(self, files: Sequence[Item], total_bytes: int) -> None:
        """Write ``files``: round by round, or, for a bulk load, every round in one
        transaction that ends with the BM25 statistics, postings and the HNSW index built
        once over all of them (see :func:`_bulk_load`). ``total_bytes`` is the files'
        size, which sizes the parse pool and decides whether a bulk load stages."""
        job = prepare.Job(
            self.embedder,
            self.coll.model.max_tokens,
            self.rt.settings.max_file_bytes,
            self.user_meta,
            self.rt.settings.parse_timeout_s,
            str(self.coll.model.options.get("passage_prefix", "")),
        )
        workers = (
            0  # texts with their vectors: nothing to chunk
            if self.embedder is None
            else prepare.pool_size(
                self.rt.settings.ingest_workers,
                total_bytes,
                model_on_cpu=self.embedder.encodes_on_cpu,
            )
        )
        with prepare.preparer(job, workers) as self._preparer:
            self._run(files, total_bytes)

    def _run(self, files: Sequence[Item], total_bytes: int) -> None:
        if not self.bulk:
            self._pipeline(files)
            return
        held = 2 if _stages(self.rt, self.bulk, total_bytes) else 1  # staged: a second
        try:
            with (
                staging.load_connections(self.rt, held),  # waits while the pool is lent out
                translated(f"bulk loading {self.coll.name!r}"),
                self.rt.db.connection() as conn,
                # its exit ends the load's transaction: committed, then the staged table's
                # lock released (a staging load's)
                staging.StagedLock(self.rt, conn) as lock,
            ):
                # the collection's write locks first: a second load of it waits here, not
                # on the first one's staging table, whose name it would take
                staging.lock_collection(self.rt, conn, self.coll)
                if self.bulk is BulkLoad.REBUILD:
                    self._mark = documents.chunk_mark(conn, self.coll.id)
                with self._staging(total_bytes, lock) as staged:
                    self._conn, self._staged = conn, staged
                    try:
                        self._pipeline(files)
                    finally:
                        self._conn = self._staged = None
                    stop = self.report.stopped_by
                    # rolls the load back; one that stopped the reading only
                    # (stops_reading) left its transaction sound: what it read commits
                    if stop is not None and not stops_reading(stop):
                        raise stop
                    if self.guard is not None:  # before the staged vectors are committed
                        self.guard(conn)
                    self._build(conn, staged)
        except KeyboardInterrupt:
            # the transaction rolled back: the load's documents are not stored; nor is
            # the staged table they were to be searched through, where its transaction had
            # committed (an interrupt in the attach, or in the index build after a refused
            # swap): left, it was a leftover ``db check`` reported until the next load
            if self._staging_committed:
                discard_staged(self.rt, self.coll)
            rolled_back = {id(o) for o in self._bulk_outcomes}
            with self._lock:
                outcomes = self.report.outcomes
                outcomes[:] = [o for o in outcomes if id(o) not in rolled_back]
            raise
        except RagstoreError as exc:
            # the transaction rolled back: nothing of this load was stored
            if self._staging_committed:
                discard_staged(self.rt, self.coll)
            # the load's documents were written and rolled back: failed, with the error
            for o in self._bulk_outcomes:
                o.status, o.chunks, o.document = "failed", 0, None
                o.error, o.code, o.exc = str(exc), exc.code, exc
            if stops_ingest(exc):  # the inputs it had not reached yet: not attempted
                self.stop(exc)
                self._unattempted(files)
            else:
                self._failed_with_load(files, exc)

    def _failed_with_load(self, files: Sequence[Item], exc: RagstoreError) -> None:
        """The inputs a failed bulk load had not written yet (an embedding endpoint that
        refused a round stops the pipeline there): failed with the load's error, as those
        it had written are. They had no outcome: the error was dropped with the rolled-back
        transaction, and a load failing in its first round was reported as nothing to
        ingest (exit status 0) while an upload's answer crashed looking its files up."""
        with self._lock:
            seen = {o.source for o in self.report.outcomes}
        for item in files:
            if item.source not in seen:
                self._done(_fail(item.source, exc))

    def _staging(
        self, total_bytes: int, lock: staging.StagedLock
    ) -> AbstractContextManager[StagedVectors | None]:
        """A bulk load's staging connection, where :func:`_stages`."""
        assert self.bulk is not None
        if not _stages(self.rt, self.bulk, total_bytes):
            assert self.bulk is not BulkLoad.REBUILD  # decided by the same rule
            return nullcontext()
        return StagedVectors(self.rt, self.coll, lock)

    def _build(self, conn: Any, staged: StagedVectors | None) -> None:
        """A bulk load's end: BM25 in the load's transaction while the staged vectors'
        HNSW index is built on their own connection, then the staged table swapped in
        (without staging, the two builds one after the other in the load's transaction).
        A load into a collection that holds vectors already first copies them, less those
        of the chunks it replaced, into the staged table, whose index then covers both."""
        if staged is None:
            self._build_bm25(conn)
            with self._stage("index_build"):
                ensure_space_index(self.rt, self.coll, conn)
            return
        replacing = self.bulk is BulkLoad.REBUILD
        carried = spaces.chunk_ids(conn, self.coll.table) if replacing else []
        staged.build_alongside(
            lambda: self._build_staged(staged, carried), lambda: self._build_bm25(conn)
        )
        staged.commit()
        self._staging_committed = True
        with self._stage("attach"), translated(f"attaching the vectors of {self.coll.name!r}"):
            swapped = spaces.attach_load_table(conn, self.coll.table, replacing=replacing)
        if not swapped:
            with self._stage("index_build"):
                ensure_space_index(self.rt, self.coll, conn)

    def _build_bm25(self, conn: Any) -> None:
        """A first load's BM25 built from scratch; a rebuilding load's added to what the
        collection had (its old postings stay; those of the documents it replaced go)."""
        memory = self.rt.settings.index_build_memory
        with self._stage("bm25_build"):
            if self.bulk is BulkLoad.REBUILD:
                documents.finish_bulk_add(conn, self.coll.id, self._mark, memory)
            else:
                documents.finish_bulk(conn, self.coll.id, memory)

    def _build_staged(self, staged: StagedVectors, carried: Sequence[int]) -> None:
        with self._stage("index_build"):
            staged.build(carried)

    def _pipeline(self, files: Sequence[Item]) -> None:
        """Three stages overlap: round N+1 is parsed on a reader thread and round N-1 is
        written on a writer thread while round N is encoded (torch releases the GIL).

        With a remote endpoint (``Embedder.overlaps_rounds``) round N+1 is encoded while
        round N's requests are still out, on two encoder threads: one round's batches
        leave the endpoint's slots idle while its last requests come back, and the write
        path then waited on the wire (docs/benchmarks.md). Rounds are still written one
        by one, in order."""
        groups = self._groups(files, self.rt.settings.ingest_batch_chunks)
        ahead = 2 if self.embedder is not None and self.embedder.overlaps_rounds else 1
        writing: Future[None] | None = None
        # rounds not yet written, with their encoding (None: encoded on this thread)
        encoding: deque[tuple[list[_Pending], Future[None] | None]] = deque()
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragstore-reader") as reader,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragstore-writer") as writer,
            ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="ragstore-encoder") as encoder,
        ):

            def write_next() -> None:
                """The oldest round, once encoded, to the writer after the round before it."""
                nonlocal writing
                done, encoded = encoding.popleft()
                if encoded is not None:
                    encoded.result()
                if writing is not None:
                    writing.result()
                writing = writer.submit(self._write, done)

            reading = reader.submit(self._prepare_group, groups[0]) if groups else None
            try:
                for i in range(len(groups)):
                    assert reading is not None
                    pending = reading.result()
                    if self.stopped:  # the rounds after it are neither read nor encoded
                        break
                    more = i + 1 < len(groups) and not self.reading_stopped
                    if more:
                        reading = reader.submit(self._prepare_group, groups[i + 1])
                    if pending:
                        if ahead == 1:  # the model computes here: on this thread, as it did
                            self._embed_round(pending)
                            encoding.append((pending, None))
                        else:
                            encoding.append((pending, encoder.submit(self._embed_round, pending)))
                        if len(encoding) >= ahead:
                            write_next()
                    if not more:  # the reading stopped (stops_reading): this round is its last
                        break
                while encoding and not self.stopped:
                    write_next()
                if writing is not None:
                    writing.result()
            except KeyboardInterrupt:
                if self._preparer is not None:  # the reader must not finish a slow parse first
                    self._preparer.interrupt()
                raise
            finally:  # a failure left rounds behind: those not started are not sent
                for _, encoded in encoding:
                    if encoded is not None:
                        encoded.cancel()
        self._unattempted(files)

    def _embed_round(self, pending: list[_Pending]) -> None:
        """Encode a round; its lookups in the database (stored vectors, a migration's
        spaces) meeting an error that fails every write stop the ingest, the round unwritten."""
        with self._stage("embed"):
            try:
                self._embed(pending)
            except RagstoreError as exc:
                if not stops_ingest(exc):
                    raise
                self.stop(exc)

    @staticmethod
    def _groups(files: Sequence[Item], batch_chunks: int) -> list[list[Item]]:
        """Rounds of files, sized by bytes (~1 KB per chunk), small at both ends.

        The first round is small so the model starts encoding early; the last rounds shrink
        (never below an eighth of a full round) because the final round's write cannot
        overlap any encoding, so a small one leaves little time exposed at the end.
        """
        sizes = [item.size for item in files]
        full = batch_chunks * 1024
        floor = max(1024, full // 8)
        remaining = sum(sizes)
        groups: list[list[Item]] = []
        i = 0
        while i < len(files):
            budget = floor if not groups else max(floor, min(full, remaining // 2))
            group = [files[i]]
            used = sizes[i]
            i += 1
            while i < len(files) and used + sizes[i] <= budget:
                used += sizes[i]
                group.append(files[i])
                i += 1
            remaining -= used
            groups.append(group)
        return groups


def _vanished(rt: Runtime, name: str, paths: Sequence[Path], files: Sequence[Path]) -> list[str]:
    """Stored sources the sync of ``paths`` covers that are no longer on disk: of documents
    ingested from files only (origin ``file``). An upload's source lies under the server's
    ``<data dir>/uploads/``, where no file is ever written, so it always looks gone; it
    was left out by that folder's path, which held only where the syncing process had the
    server's data dir: a sync with another one (the CLI beside a containerised server)
    pruned every uploaded document under the folder. A text's id that reads as a path
    was looked for on disk the same way."""
    prefixes, exact = sync_scopes(paths)
    try:
        coll = rt.collection(name)
    except CollectionNotFoundError:
        return []  # nothing stored yet
    with rt.db.connection() as conn, translated(f"listing documents of {name!r}"):
        stored = documents.sources_under(conn, coll.id, prefixes, exact, origin="file")
    present = {str(f) for f in files}
    return sorted(s for s in stored if s not in present and gone_from_disk(s))


def _hold_empty_folders(
    paths: Sequence[Path], files: Sequence[Path], gone: Sequence[str], report: IngestReport
) -> tuple[list[str], list[str]]:
    """Split the vanished documents ``--prune`` would remove into those it may (the
    first list) and those it keeps (the second): every one under a folder given that
    now holds no file to ingest. Such a folder is far more often a network share or disk
    that is not mounted (its mount point left empty), or a checkout half made, than a
    folder emptied on purpose, and a prune of it removed every document ever stored
    from it. The kept ones are reported ``vanished``, and the folder failed with how to
    remove them when that was meant."""
    keep: set[str] = set()
    present = [str(f) for f in files]
    for path in paths:
        folder, _ = sync_scopes([path])  # as _vanished scopes it
        if not folder:
            continue  # a file named
        prefix = folder[0]
        if any(f.startswith(prefix) for f in present):
            continue
        under = [s for s in gone if s.startswith(prefix)]
        if not under:
            continue
        keep.update(under)
        shown = printable(str(path))
        err = InputError(
            f"{shown}: the folder holds no file to ingest, and --prune would remove all "
            f"{len(under)} document(s) stored from it; they were kept (a share or disk "
            "not mounted leaves an empty folder). Mount or fill the folder and sync "
            "again; if it was emptied on purpose, delete those documents "
            "(`ragstore documents delete`) or the collection"
        )
        report.outcomes.append(FileOutcome(shown, "failed", error=str(err), code=err.code))
    report.outcomes.extend(FileOutcome(s, "vanished") for s in gone if s in keep)
    return [s for s in gone if s not in keep], [s for s in gone if s in keep]


def _prune(rt: Runtime, name: str, sources: Sequence[str]) -> list[str]:
    """Remove the vanished documents still gone from disk; the ones removed are returned.

    They were listed before the ingest ran, and a file can come back meanwhile (an editor
    that deletes and recreates it, a build that regenerates it) and be stored again by
    another ingest, told it was added or updated. Each is looked at again under its write
    lock, so such a document stays, and a writer that comes later waits for the delete.
    Only the documents this transaction deleted are returned: two syncs pruning at once
    both reported the same documents removed."""
    coll = rt.collection(name)
    with rt.db.connection() as conn, translated(f"removing vanished documents of {name!r}"):
        documents.hold_live(conn, coll)  # not the chunk set a model switch just retired
        documents.lock_sources(conn, coll.id, sources)
        # still documents of files: one replaced meanwhile by a text of that id is not
        still = set(documents.sources_under(conn, coll.id, [], sources, origin="file"))
        gone = [s for s in sources if s in still and gone_from_disk(s)]
        deleted = set(documents.delete_sources(conn, coll.id, gone))
    return [s for s in gone if s in deleted]


def ingest_paths(
    rt: Runtime,
    paths: Sequence[Path],
    collection: str | None = None,
    *,
    metadata: dict[str, Any] | None = None,
    progress: Progress | None = None,
    sync: bool = False,
    prune: bool = False,
    on_vanished: Callable[[list[str]], None] | None = None,
) -> IngestReport:
    """Ingest files and folders into a collection (created with the default model if new).

    ``sync`` also looks for stored documents under ``paths`` that are gone from disk:
    they are reported as ``vanished`` and, with ``prune``, removed once the rest of the
    batch is stored (``on_vanished`` is called with them first, before anything changes).
    """
    name = rt.settings.collection if collection is None else collection
    if not name:
        raise InputError("the collection name is empty; name one, or pass None for the default")
    with long_lived_set_aside():  # the listing's items set off a full collection otherwise
        return _ingest_paths(rt, paths, name, metadata, progress, sync, prune, on_vanished)


def _ingest_paths(
    rt: Runtime,
    paths: Sequence[Path],
    name: str,
    metadata: dict[str, Any] | None,
    progress: Progress | None,
    sync: bool,
    prune: bool,
    on_vanished: Callable[[list[str]], None] | None,
) -> IngestReport:
    files, missing, outside, unlisted, passed = discover(paths)
    report = IngestReport(collection=name)
    for folder, exc in unlisted:
        why = unlisted_error(folder, exc)
        report.outcomes.append(
            FileOutcome(printable(str(folder)), "failed", error=str(why), code=why.code)
        )
    for link, target in outside:
        shown = printable(str(link))
        report.outcomes.append(
            FileOutcome(
                shown,
                "skipped",
                error=link_outside_detail(shown, printable(str(target))),
                code=LINK_OUTSIDE_FOLDER,
            )
        )
    gone = _vanished(rt, name, paths, files) if sync or prune else []
    held: list[str] = []
    if prune:
        gone, held = _hold_empty_folders(paths, files, gone, report)
    if gone and on_vanished is not None:
        on_vanished(gone)
    gone_set = set(gone) | set(held)
    for path in missing:
        if str(resolved(path)) in gone_set:
            continue  # a synced file that was deleted: reported as vanished below
        shown = printable(str(path))
        err = not_ingestible(path, shown)
        report.outcomes.append(FileOutcome(shown, "failed", error=str(err), code=err.code))
    for entry in passed:  # a pipe, device or broken link in a folder: not read, said
        if str(entry) in gone_set:
            continue  # a synced file replaced by one: reported as vanished below
        shown = printable(str(entry))
        err = not_ingestible(entry, shown)
        report.outcomes.append(FileOutcome(shown, "skipped", error=str(err), code=err.code))
    if not files:
        _finish_sync(rt, name, report, gone, prune)
        metrics.observe_ingest(report)
        return report
    t0 = time.perf_counter()
    try:
        try:
            ingest_items(
                rt,
                name,
                [Item(str(f), f, str(f)) for f in files],
                report,
                metadata=metadata,
                progress=progress,
            )
        except KeyboardInterrupt as exc:  # nothing vanished is removed after an interrupt
            report.seconds = time.perf_counter() - t0
            raise IngestInterrupted(report, len(files) + len(missing)) from exc
        _finish_sync(rt, name, report, gone, prune)
        report.seconds = time.perf_counter() - t0
    finally:
        # also when an error stopped it after earlier rounds committed: what they stored
        # is counted (the error raised used to skip the metrics, showing nothing ingested)
        metrics.observe_ingest(report)
    return report


def ingest_items(
    rt: Runtime,
    name: str,
    items: Sequence[Item],
    report: IngestReport,
    *,
    metadata: dict[str, Any] | None = None,
    progress: Progress | None = None,
    create: bool = True,
    guard: WriteGuard | None = None,
) -> None:
    """Ingest ``items`` into collection ``name``, appending one outcome per item to
    ``report``: the pipeline shared by files (:func:`ingest_paths`) and uploads. ``guard``
    checks every write transaction before its commit (:data:`WriteGuard`)."""
    items = _storable_names(items, report)
    if not items:
        return
    if not create:
        _ingest_into(rt, rt.collection(name), items, report, metadata, progress, guard)
        return
    coll, created = rt.open_or_create(name)
    with created_for_this_write(rt, coll, created):
        _ingest_into(rt, coll, items, report, metadata, progress, guard)


@contextmanager
def created_for_this_write(
    rt: Runtime, coll: repository.Collection, created: bool
) -> Iterator[repository.Collection]:
    """Around the write that made ``coll`` (``created``): when it ends, raising or not,
    with nothing stored, the collection is deleted again, unless a concurrent writer,
    job or migration uses it by then (``catalog.delete_if_left_empty``).

    An ingest that made its collection and then failed before writing anything (a text
    too large for the full-text index, an empty or unreadable file, a model that cannot
    load) left an empty collection behind, pinned to the model: the user's next try with
    another model was refused as a collection of another model, and listings showed a
    collection nothing was ever stored in. The error the write raised is raised as it
    was; removing the collection, failing, is logged and leaves it."""
    try:
        yield coll
    finally:
        if created:
            _remove_if_left_empty(rt, coll)


def _remove_if_left_empty(rt: Runtime, coll: repository.Collection) -> None:
    try:
        with rt.db.connection() as conn, translated(f"removing collection {coll.name!r}"):
            removed = catalog.delete_if_left_empty(conn, coll)
    except RagstoreError as exc:
        log.warning(
            "collection %r was created by a write that stored nothing, and removing it "
            "failed (delete it with `ragstore collections delete` if it is unwanted): %s",
            coll.name,
            exc,
        )
        return
    if removed:
        log.info("collection %r removed: the write that created it stored nothing", coll.name)


def _ingest_into(
    rt: Runtime,
    coll: repository.Collection,
    items: Sequence[Item],
    report: IngestReport,
    metadata: dict[str, Any] | None,
    progress: Progress | None,
    guard: WriteGuard | None,
) -> None:
    # texts that all bring their vectors load no model: one ragstore cannot run (vectors
    # of an outside model) has none, and the batches never loaded one for them
    embedder = None if all(i.vector is not None for i in items) else rt.embedder_for(coll)
    sizes = _sizes(items)  # every file's size, read once
    total = sum(sizes.values())
    bulk = _bulk_load(rt, coll, sizes, total)
    try:
        with long_lived_set_aside():
            _Ingestor(rt, coll, embedder, report, metadata or {}, progress, bulk, guard).run(
                items, total
            )
    except RagstoreError as exc:
        _say_what_was_stored(exc, report, items)
        raise
    finally:
        try:
            _build_index(rt, coll, bulk)
        except RagstoreError as exc:
            # the error that stopped the ingest, met again: raised, it replaced the report
            # of what was stored; an index left unbuilt is built by the next ingest
            if report.stopped_by is not None and stops_ingest(exc):
                pass
            elif _stored_any(report):
                _index_check_failed(coll, exc)
            else:
                raise


def _say_what_was_stored(exc: RagstoreError, report: IngestReport, items: Sequence[Item]) -> None:
    """An error raised out of the pipeline (one that is not an input's own: the embedding
    endpoint refusing a round, say) after earlier rounds committed, a transaction each:
    the error says which inputs were stored, each whole, and which were not, as
    ``add_texts`` does. It used to be the error alone, which read as if nothing had
    changed (an upload of several files was answered a bare 502) while the files of the
    rounds before it had been added or replaced. Named as their error messages name them
    (an upload by the client's name)."""
    texts = all(i.text is not None for i in items)  # a large add_texts call: its ids
    # a text stored unchanged is stored; a file's "stored before it" is what changed
    kept = ("added", "updated", "unchanged") if texts else ("added", "updated")
    done = {o.source for o in report.outcomes if o.status in kept}
    if not done:
        return
    if texts:
        stored = [i.source for i in items if i.source in done]
        not_stored = [i.source for i in items if i.source not in done]
        what, again = "texts", "add the same texts again to resume"
    else:
        stored = [i.label for i in items if i.source in done]
        not_stored = [i.label for i in items if i.source not in done]
        what, again = "files", "run the same ingest again to resume"
    key = "ids" if what == "texts" else "files"
    exc.problem_members = {
        **exc.problem_members,
        f"stored_{key}": stored,
        f"not_stored_{key}": not_stored,
    }
    exc.message += (
        f" ({len(stored)} of the {len(items)} {what} were stored before it, each whole: "
        f"see 'stored_{key}'; the rest were not changed: 'not_stored_{key}'; {again})"
    )
    exc.args = (exc.message,)


# outcomes whose document is stored as the ingest left it
_STORED = frozenset({"added", "updated", "unchanged"})


def _stored_any(report: IngestReport) -> bool:
    """Whether any input of ``report`` is stored."""
    return any(o.status in _STORED for o in report.outcomes)


def _index_check_failed(coll: repository.Collection, exc: RagstoreError) -> None:
    """The index check after an ingest that stored documents failed (no free pooled
    connection under load, the database gone since the commit): logged, not raised.

    Its documents are committed, so an error here told the client (a 503 on the HTTP
    API) that they were not stored, and a retry then found them ``unchanged``; searches
    find them without the index (only slower), and the next ingest builds it."""
    log.warning(
        "the documents are stored, but checking %s's vector index after the ingest failed "
        "(the next ingest builds it if missing): %s",
        coll.table,
        exc,
    )


def _storable_names(items: Sequence[Item], report: IngestReport) -> list[Item]:
    """The items whose source the database can store; the others fail alone.

    A file name of bytes that are not UTF-8 (a Latin-1 name on a Linux disk) arrives as a
    str with surrogate escapes that no text column takes; stored under an escaped form it
    would no longer name the file, so ``--sync`` would call it vanished. The outcome names
    it with its bad bytes escaped (``caf\\xe9.md``) so the report can be printed.
    """
    ok: list[Item] = []
    for item in items:
        try:
            item.source.encode("utf-8")
        except UnicodeEncodeError:
            shown = printable(item.label)
            err = DecodeError(
                f"{shown}: the file name is not valid UTF-8, which ragstore cannot store; "
                "rename the file (e.g. convmv -f latin1 -t utf-8 --notest FILE)"
            )
            report.outcomes.append(_fail(printable(item.source), err))
            continue
        ok.append(item)
    return ok


def _bulk_load(
    rt: Runtime, coll: repository.Collection, sizes: dict[str, int], total_bytes: int
) -> BulkLoad | None:
    """Whether this is a bulk load, and which kind; None for an incremental one.

    A bulk load is larger than ``RAGSTORE_BULK_LOAD_BYTES`` and written in one transaction
    with the BM25 triggers off (:func:`documents.begin_bulk`): rows go in by COPY alone,
    and the statistics, postings and HNSW index are built once at the end, before the
    commit, several times faster than growing them round by round. Readers see the load
    all at once, complete, or not at all. A first load (an empty space) drops the space's
    index now. A load into a collection that holds chunks is a bulk load only when it
    brings at least ``staging.REBUILD_SHARE`` of the bytes stored (sources new or of another
    size: :func:`documents.load_share`) and can stage its vectors: the live index serves
    searches until the staged one, built over the old vectors and the new, takes its
    place. Small loads stay incremental; a first load is a bulk load from
    :data:`FIRST_LOAD_BULK_BYTES` already, where that is less (:func:`may_load_in_bulk`)."""
    limit = rt.settings.bulk_load_bytes
    if not may_load_in_bulk(rt, total_bytes):
        return None
    with rt.db.connection() as conn, translated(f"preparing a bulk load of {coll.name!r}"):
        if total_bytes <= limit and not spaces.is_empty(conn, coll.table):
            # too small to rebuild a collection that has rows: incremental, decided
            # without the lock that waits for the collection's writers
            return None
        # bounded as the load's own write locks are: behind another bulk load of the
        # collection it waited for the whole of that load, past RAGSTORE_BULK_LOAD_WAIT_S
        with staging.waiting_for_locks(
            rt, conn, coll.name, "a load into", "nothing of this load was stored"
        ):
            spaces.lock_for_load(conn, coll.table)
        if spaces.is_empty(conn, coll.table):
            spaces.drop_index(conn, coll.table)
            return BulkLoad.FIRST
    if total_bytes <= limit or not _stages(rt, BulkLoad.REBUILD, total_bytes):
        return None
    with rt.db.connection() as conn, translated(f"sizing a load of {coll.name!r}"):
        stored, new = documents.load_share(conn, coll.id, sizes)
    if new <= limit or new < staging.REBUILD_SHARE * stored:
        return None
    return BulkLoad.REBUILD


def may_load_in_bulk(rt: Runtime, total_bytes: int) -> bool:
    """Whether a load of ``total_bytes`` is large enough to be a bulk load, into an empty
    collection at least: more than ``RAGSTORE_BULK_LOAD_BYTES`` or than
    :data:`FIRST_LOAD_BULK_BYTES`, whichever is less (0 turns bulk loads off)."""
    limit = rt.settings.bulk_load_bytes
    return limit > 0 and total_bytes > min(limit, FIRST_LOAD_BULK_BYTES)


def _stages(rt: Runtime, bulk: BulkLoad, total_bytes: int) -> bool:
    """Whether a bulk load stages its vectors on a second connection: never where the pool
    is too small to lend one for the whole load besides the load's own and those its
    threads borrow meanwhile; always for a rebuilding load (the space's own table serves
    searches until the staged one takes its place); for a first load, where its two
    builds are long enough to gain from overlapping."""
    if not staging.can_stage(rt):
        return False
    return bulk is BulkLoad.REBUILD or total_bytes >= STAGE_MIN_BYTES


def _sizes(items: Sequence[Item]) -> dict[str, int]:
    """Each item's file size by source (an unreadable one counts 0; it fails later)."""
    sizes: dict[str, int] = {}
    for item in items:
        sizes[item.source] = sizes.get(item.source, 0) + item.size
    return sizes


def _build_index(rt: Runtime, coll: repository.Collection, bulk: BulkLoad | None) -> None:
    """The active space's HNSW index, built now if a bulk load (this one, or one that was
    killed) deferred it; a no-op when it exists.

    After an incremental ingest the index is missing only if an earlier bulk load was
    killed, so the check waits :data:`INDEX_CHECK_POOL_WAIT_S` for a pooled connection and
    is skipped when none frees: a stored upload's 201 waited a whole pool timeout for it
    under the load that filled the pool. A bulk load's own check waits as any write does."""
    wait_s = None if bulk is not None else INDEX_CHECK_POOL_WAIT_S
    try:
        with rt.db.connection(wait_s=wait_s) as conn, translated(f"indexing {coll.table}"):
            if spaces.table_gone(conn, coll.table):
                # the collection was deleted (or its model rolled back) while this ingest
                # ran: no table is left to index, and what the ingest wrote went with it.
                # Checked, it raised "embedding table 'emb_1' does not exist" (an input
                # error, 422) in place of the ingest's own report or error.
                return
            ensure_space_index(rt, coll, conn)
    except PoolTimeout:
        log.info(
            "checking %s's vector index after the ingest was skipped: no pooled connection "
            "freed within %.2f s (the next ingest builds it if missing)",
            coll.table,
            INDEX_CHECK_POOL_WAIT_S,
        )


def ensure_space_index(rt: Runtime, coll: repository.Collection, conn: Any) -> None:
    """Build the active space's HNSW index in ``conn``'s transaction unless it exists,
    with the memory and workers a bulk build gets (``ragstore db check --repair`` too)."""
    if spaces.has_index(conn, coll.table):
        return
    spaces.ensure_index(
        conn,
        coll.table,
        coll.model.distance,
        memory=rt.settings.index_build_memory,
        workers=spaces.build_workers(),
    )


def _finish_sync(
    rt: Runtime, name: str, report: IngestReport, gone: Sequence[str], prune: bool
) -> None:
    """Record the vanished documents; with ``prune``, remove those still gone in one
    transaction (one back on disk by now is left stored, and out of the report)."""
    if not gone:
        return
    if prune and report.stopped_by is None:  # a stopped ingest removes nothing
        report.outcomes.extend(FileOutcome(s, "removed") for s in _prune(rt, name, gone))
    else:
        report.outcomes.extend(FileOutcome(s, "vanished") for s in gone)
