"""Running one ingest job inside a worker: stage its files, ingest them, report progress.

A job may run more than once (its worker died, the queue retried it). That is safe
because every document is written under its source's lock and one whose stored content
hash matches is left unchanged: a re-run finishes the documents the dead worker did not
reach and adds no chunk twice. Its summary and its ``chunks_done`` still count what the
earlier attempts stored as this job's work (:func:`job_status`, :func:`job_chunks`).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from ragstore.db import jobs as store
from ragstore.db.documents import model_switched
from ragstore.db.errors import collided, lock_wait_gave_up, translated, vector_table_gone
from ragstore.errors import (
    CollectionNotFoundError,
    ConflictError,
    DatabaseUnavailableError,
    ParseHelperUnavailableError,
    RagstoreError,
    ResourcesExhaustedError,
    SchemaMismatchError,
    StatementCancelledError,
    public_reason,
)
from ragstore.ingest.documents import DocumentOutcome, NewDocument, add_documents
from ragstore.ingest.service import IngestReport, stops_ingest, stops_reading
from ragstore.observability import metrics
from ragstore.runtime import Runtime
from ragstore.uploads import staging

log = logging.getLogger("ragstore.jobs")

PROGRESS_EVERY_S = 0.2


class Superseded(Exception):
    """This run of a job no longer counts: another attempt took the job (this worker was
    judged dead while cut off from the database), or the job is finished. Raised from
    the run's next write of progress, which wrote nothing, or from the transaction
    writing its next round of documents, rolled back (:func:`_fence`), to stop the run
    there."""


class JobBusy(Exception):
    """The job's row is held by a transaction of an earlier attempt of it (its worker's
    machine gone, perhaps, with the transaction open until the server notices): not
    started now; the queue hands the job out again a little later (``jobs.queue``), to
    any worker. Waited on, the start took the worker's slot until the dead session was
    noticed (minutes, or hours by the system's default TCP keepalives)."""


class SchemaChanged(JobBusy):
    """The schema is no longer this code's (a ``db upgrade`` or ``downgrade`` ran while
    this worker kept running): the job is not started, or its run stops where it met the
    change, and its entry goes back to wait, as a busy start's does, for a worker of the
    matching version; :attr:`error` says what the schema is and what this code expects
    (the worker stops on it: ``jobs.worker``). Raised as it was (SchemaMismatchError),
    the entry failed and the job with it (``outcome_not_recorded``, never started, or
    its documents stored so far not counted): an upload accepted before the upgrade was
    lost. :attr:`attempt` is the stopped run's (None: not started), which the entry's
    put-back gives back (``LiveJobManager.retry_job``): the change is no failure of the
    job's."""

    def __init__(
        self, message: str, error: SchemaMismatchError, attempt: int | None = None
    ) -> None:
        super().__init__(message)
        self.error = error
        self.attempt = attempt


class CollectionReplaced(Exception):
    """The job's collection was deleted (and perhaps made again) after the job was queued:
    raised from the transaction about to write a round of its documents, rolled back
    (:func:`_into_its_collection`). Not a :class:`RagstoreError`, so the ingest does not
    take it for one document's failure and go on with the next: the job fails as a whole,
    with :attr:`error` recorded."""

    def __init__(self, error: CollectionNotFoundError) -> None:
        super().__init__(str(error))
        self.error = error


def _gone(job: store.JobRecord, *, replaced: bool) -> CollectionNotFoundError:
    """The error a job records whose collection was deleted after it was queued."""
    name = job.collection
    if replaced:
        return CollectionNotFoundError(
            f"collection {name!r} was deleted after this job was queued, and a new collection "
            "was made under its name since; the job's documents were not stored in the new "
            "one: send them again to store them there",
            collection=name,
        )
    return CollectionNotFoundError(
        f"collection {name!r} was deleted after this job was queued; the job's documents "
        "were not stored (the collection was not made again): create it and send them "
        "again to store them",
        collection=name,
    )


def _check_collection(conn: store.Conn, job: store.JobRecord) -> None:
    """:class:`CollectionNotFoundError` unless the collection the job was queued for is
    still there: the one of its name, made no later than the job (a request creates a
    missing collection before queueing its job, and a model switch that moves the name to
    another row keeps the creation time).

    Unchecked, a job queued before its collection was deleted and a new one made under
    the name (another model, other documents) wrote its documents into the new one, and
    one whose collection was simply deleted failed saying "ingest into it to create it",
    naming every other collection to any reader of the job."""
    predates = store.collection_predates(conn, job)
    if not predates:
        raise _gone(job, replaced=predates is not None)


def _check_collection_at_start(rt: Runtime, job: store.JobRecord) -> None:
    """:func:`_check_collection` on a connection of its own, before the job ingests."""
    with rt.db.connection() as conn, translated(f"checking job {job.id}'s collection"):
        _check_collection(conn, job)


class _Progress:
    """Writes documents/chunks done to the job row, at most every PROGRESS_EVERY_S, while
    this run's attempt is current (:class:`Superseded` where it is not).

    The chunks are the job's as :func:`job_chunks` counts them: on a retry, those of the
    documents an earlier attempt stored (found ``unchanged`` now) too, and so those of
    documents written again after their round failed (``again``), read from the run's
    :class:`IngestReport` (:meth:`follow`) as each document's outcome lands."""

    def __init__(self, rt: Runtime, job: store.JobRecord, attempt: int, *, retry: bool) -> None:
        self.rt = rt
        self.job = job
        self.attempt = attempt
        self.retry = retry
        self.docs = 0
        self.chunks = 0
        self._report: IngestReport | None = None
        self._seen = 0  # the report's outcomes counted into _earlier so far
        self._earlier = 0  # chunks of documents an earlier attempt of the job stored
        self._last = 0.0

    def follow(self, report: IngestReport) -> None:
        """Count the chunks of the documents an earlier attempt stored from ``report``'s
        outcomes (the ingest calls this tracker as each is added)."""
        self._report = report

    def __call__(self, event: str, files_done: int, chunks_done: int) -> None:
        if self._report is not None:
            landed = self._report.outcomes[self._seen :]
            self._seen += len(landed)
            for o in landed:
                if o.status == "unchanged" and (self.retry or o.again):
                    self._earlier += job_chunks(o.status, o.document, 0, self.job, retry=True)
        self.docs = files_done
        self.chunks = chunks_done + self._earlier
        now = time.monotonic()
        if now - self._last >= PROGRESS_EVERY_S:
            self._last = now
            with self.rt.db.connection() as conn, translated("recording job progress"):
                written = store.progress(
                    conn, self.job.id, self.docs, self.chunks, attempt=self.attempt
                )
            if not written:
                raise Superseded(f"job {self.job.id}: attempt {self.attempt} superseded")


def job_status(outcome: DocumentOutcome, job: store.JobRecord, *, retry: bool) -> str:
    """What the job as a whole did to one document, for its summary.

    A retry (the worker of an earlier attempt stopped) finds the documents that attempt
    stored already there, and its write calls them ``unchanged``. The client asked this
    job to store them, so the summary counts them as the earlier attempt did: a document
    whose row was created after the job was recorded was ``added`` by it, one only
    rewritten since was ``updated``. Attempts leave no per-document record of their own;
    the rows' timestamps (``now()`` of the writing transaction, on the server's clock as
    the job's ``created_at`` is) are what a killed attempt cannot fail to leave. Only
    retries read them: on a first attempt ``unchanged`` is what was stored before, and
    it also stays ``unchanged`` on a retry when it was stored before the job was sent.
    (An identical upload of the same name by another request while the job waited would
    count for the job as well: same bytes, same result.)

    A document written again on its own after its round's transaction failed
    (``outcome.again``) is counted as a retry's: that commit may have landed with its
    answer lost, and the write again found the round's own rows. Taken as found, a job's
    first run counted documents it had added ``unchanged``, their chunks left out of its
    ``chunks_done``.
    """
    return _job_status(outcome.status, outcome.document, job, retry=retry or outcome.again)


def _job_status(
    status: str, doc: dict[str, Any] | None, job: store.JobRecord, *, retry: bool
) -> str:
    """:func:`job_status` of a document whose write said ``status`` and left row ``doc``."""
    if not retry or status != "unchanged" or doc is None:
        return status
    if doc["created_at"] >= job.created_at:
        return "added"
    if doc["updated_at"] >= job.created_at:
        return "updated"
    return "unchanged"


def job_chunks(
    status: str, doc: dict[str, Any] | None, chunks: int, job: store.JobRecord, *, retry: bool
) -> int:
    """The chunks one document adds to the job's ``chunks_done``: its stored chunks where
    the job's summary counts it ``added`` or ``updated`` (:func:`job_status`), none
    otherwise. ``chunks`` is what this run's write stored of it.

    Counted from this run's writes only, a retry's ``chunks_done`` left out the chunks of
    the documents an earlier attempt stored, which its summary counts as the job's: a job
    of 4 documents and 8 chunks, one document stored before a worker died, read
    ``added: 4`` and ``chunks_done: 6``."""
    counted = _job_status(status, doc, job, retry=retry)
    if counted not in ("added", "updated"):
        return 0
    if status in ("added", "updated"):
        return chunks
    return int(doc["chunks"]) if doc is not None else 0  # stored by an earlier attempt


WORKER_LOST = "worker_lost"  # the error code of a job given up after its workers died


def _abandon(conn: store.Conn, job: store.JobRecord) -> store.JobRecord:
    """Fail a job whose workers all stopped in the middle of it. A job that kills its
    worker (a document that exhausts memory) would otherwise be retried by the stalled-job
    check forever, taking down every worker in turn. What earlier attempts stored stays:
    each document was written whole."""
    log.error(
        "job %s: its worker stopped %d times before finishing it; not retrying it again",
        job.id,
        job.attempts_spent,
    )
    store.finish(
        conn,
        job.id,
        "failed",
        attempt=job.attempts,  # a run of that attempt recording first wins
        documents=job.documents_done,
        chunks=job.chunks_done,
        errors=[
            *job.errors,
            {
                "document": None,
                "code": WORKER_LOST,
                "detail": f"the job was started {job.attempts_spent} times and each time its "
                "worker stopped before finishing it (killed, out of memory, its machine gone); "
                "it is not retried again (RAGSTORE_WORKER_MAX_ATTEMPTS): check the workers' "
                "logs and memory, then send the files again (documents already stored stay "
                "unchanged)",
            },
        ],
        summary=job.summary,
    )
    return store.get(conn, job.id)


def _start(
    rt: Runtime, job_id: int, queue_job_id: int | None
) -> tuple[store.JobRecord, list[store.JobFile] | None, int]:
    """The job's record and files, the job marked started (``queue_job_id`` recorded where
    the submitting request could not), and this run's attempt; no files where it is not
    to run (finished already, or given up: the record says how)."""
    try:
        with rt.db.connection() as conn, translated(f"starting job {job_id}"):
            store.keep_alive(conn)  # its start holds the job's row until it commits
            store.bound_lock_waits(conn, store.START_LOCK_TIMEOUT)
            try:
                return _start_in(rt, conn, job_id, queue_job_id)
            except psycopg.errors.LockNotAvailable:
                conn.rollback()
    except SchemaMismatchError as exc:
        log.error(
            "job %s: not started: %s; stop this worker and start one of the matching "
            "version (the job waits for it)",
            job_id,
            exc.message,
        )
        raise SchemaChanged(f"job {job_id}: the schema changed under this worker", exc) from exc
    log.warning(
        "job %s: its row is held by a transaction of an earlier attempt (its worker stopped "
        "or cut off mid-commit); not started now, the queue hands it out again later",
        job_id,
    )
    raise JobBusy(f"job {job_id}: its row is locked by an earlier attempt's transaction")


def _start_in(
    rt: Runtime, conn: store.Conn, job_id: int, queue_job_id: int | None
) -> tuple[store.JobRecord, list[store.JobFile] | None, int]:
    """:func:`_start`'s work, on its connection (whose lock waits are bounded)."""
    job = store.get(conn, job_id)
    if job.status in store.FINISHED:
        # its worker recorded the outcome and stopped before the queue marked the job
        # done, so the stalled-job check handed it out again: a re-run would put back
        # documents the client deleted after reading the outcome (or, past the last
        # attempt, call a finished job lost). The recorded outcome stands.
        log.warning("job %s: already %s; not running it again", job_id, job.status)
        return job, None, job.attempts
    if job.attempts_spent >= rt.settings.worker_max_attempts:
        return _abandon(conn, job), None, job.attempts
    attempt = store.start(conn, job_id, queue_job_id)
    if attempt is None:  # its earlier run recorded the outcome just now
        job = store.get(conn, job_id)
        log.warning("job %s: already %s; not running it again", job_id, job.status)
        return job, None, job.attempts
    return job, store.files(conn, job_id), attempt


def run_job(rt: Runtime, job_id: int, *, queue_job_id: int | None = None) -> store.JobRecord:
    """Run (or re-run) job ``job_id`` to the end and return its final record.

    Each step that reaches the database is run again where it could not (see
    :func:`_while_unreachable`): a job the queue handed out is never left ``queued`` or
    ``running``, nor failed, because the database was away for a moment. ``queue_job_id``
    (the queue's entry running it) is recorded at the start where the submitting request
    could not record it, so a job whose outcome is lost is still found and failed
    (``db.jobs.reconcile_lost``)."""
    job, files, attempt = _while_unreachable(
        job_id, "starting it", lambda: _start(rt, job_id, queue_job_id)
    )
    if files is None:
        return job
    try:
        return _run(rt, job, files, attempt)
    except SchemaMismatchError as exc:
        # the schema changed under the run (a `db upgrade` or `downgrade` while this worker
        # kept running): every later write is refused, its outcome too. Failed, the job
        # said its documents were not stored where some were, or (its outcome refused as
        # well) was failed later as outcome_not_recorded. It goes back to the queue as it
        # stands (the documents it stored kept: each is written whole), its attempt given
        # back, and the matching version's worker runs it again, counting them as this
        # job's.
        log.error(
            "job %s: attempt %d stopped: %s; the job goes back to the queue for a worker of "
            "the matching version (the documents it stored stay, counted as the job's)",
            job_id,
            attempt,
            exc.message,
        )
        raise SchemaChanged(
            f"job {job_id}: the schema changed under this run", exc, attempt
        ) from exc
    except Superseded:
        # the run that counts is the other attempt's (or the job is finished): this one
        # writes nothing more of the job, and its queue entry is not its own any more
        # (LiveJobManager.finish_job leaves it). Documents it stored are the job's own,
        # written whole, and the other run finds them unchanged.
        log.warning(
            "job %s: attempt %d stopped: the job was taken by another worker while this "
            "one was cut off from the database (judged dead), or is finished (its collection "
            "deleted, say); that run's outcome stands",
            job_id,
            attempt,
        )
        return _while_unreachable(job_id, "reading it", lambda: _read(rt, job_id))


def _read(rt: Runtime, job_id: int) -> store.JobRecord:
    with rt.db.connection() as conn, translated(f"reading job {job_id}"):
        return store.get(conn, job_id)


def _check_current(rt: Runtime, job_id: int, attempt: int) -> None:
    """:class:`Superseded` where attempt ``attempt`` is no longer the job's run."""
    with rt.db.connection() as conn, translated(f"checking job {job_id}"):
        if not store.current(conn, job_id, attempt=attempt):
            raise Superseded(f"job {job_id}: attempt {attempt} superseded")


def _fence(job_id: int, attempt: int) -> Callable[[store.Conn], None]:
    """The ingest's write guard for attempt ``attempt``: each transaction writing the
    job's documents commits only while the attempt counts (:func:`store.hold_current`),
    and is rolled back with :class:`Superseded` where it does not."""

    def guard(conn: store.Conn) -> None:
        # the row is held until the commit: a session of a machine that vanished
        # meanwhile is ended by the server in about a minute, not hours
        store.keep_alive(conn)
        if not store.hold_current(conn, job_id, attempt=attempt):
            raise Superseded(f"job {job_id}: attempt {attempt} superseded")

    return guard


def _into_its_collection(
    job: store.JobRecord, fence: Callable[[store.Conn], None]
) -> Callable[[store.Conn], None]:
    """``fence``, and then each transaction writing the job's documents commits only into
    the collection the job was queued for (:func:`_check_collection`, run where the
    transaction holds the written collection's row: a delete and re-creation of it after
    the job's start check found it); rolled back with :class:`CollectionReplaced` where
    it is not."""

    def guard(conn: store.Conn) -> None:
        fence(conn)
        try:
            _check_collection(conn, job)
        except CollectionNotFoundError as exc:
            raise CollectionReplaced(exc) from None

    return guard


def _run(
    rt: Runtime, job: store.JobRecord, files: list[store.JobFile], attempt: int
) -> store.JobRecord:
    """Attempt ``attempt`` of the job, from its ingest to its recorded outcome; every
    write of it fenced by the attempt (:class:`Superseded` once it no longer counts)."""
    job_id = job.id
    log.info("job %s: ingesting %d documents into %r", job_id, len(files), job.collection)
    tracker = _Progress(rt, job, attempt, retry=job.attempts > 0)
    errors: list[dict[str, Any]] = []
    outcomes: dict[str, int] = defaultdict(int)
    runs = 0
    switched_only = False  # the last run's documents not stored were all a model switch's
    reports: list[IngestReport] = []  # each run's, in order: the metrics count the last

    def ingest() -> tuple[list[DocumentOutcome], IngestReport, list[tuple[str, str]]]:
        nonlocal runs, tracker, switched_only
        runs += 1
        switched_only = False  # a run lost to the database itself waits as before
        if runs > 1:  # a run again after a lost one: its progress counted afresh
            # the database was away: long enough, perhaps, for this worker to be judged
            # dead and the job taken by another; a run again then only repeats its work
            _check_current(rt, job_id, attempt)
            tracker = _Progress(rt, job, attempt, retry=True)
        reports.append(IngestReport(collection=job.collection))
        try:
            results, report = _ingest(rt, job, files, tracker, attempt, reports[-1])
        except ConflictError as exc:
            # a vector table dropped under the run (its lookup of stored vectors), the
            # collection still there (``_ingest`` checked): the model the run read was
            # switched away from and pruned. The job failed ("retry the request") with its
            # documents not stored; the run again reads the present model, at once
            if not vector_table_gone(exc) or runs >= ATTEMPTS:
                raise
            switched_only = True
            raise DatabaseUnavailableError(f"the ingest stopped: {exc}") from exc
        # each document's passing cause, told once a run: the documents not stored for one
        lost = [(r, c) for r in results if (c := passing_cause(r.error)) is not None]
        if lost and runs < ATTEMPTS:
            # documents not stored for a passing cause are not the client's to send again:
            # the run again stores them (and leaves the ones stored unchanged); after a
            # model switch at once (it reads the collection's new model)
            switched_only = {c for _, c in lost} <= {"switched", "vectors_gone"}
            raise DatabaseUnavailableError(f"{len(lost)} documents not stored: {lost[0][0].error}")
        return results, report, [(r.name, c) for r, c in lost]

    try:
        try:
            results, report, lost = _while_unreachable(
                job_id, "ingesting its documents", ingest, at_once=lambda: switched_only
            )
        finally:
            # the last run's report alone, once: each run counted, a run again after a
            # lost database counted the first run's lost documents ``failed`` and then
            # every document ``added`` or ``unchanged`` a second time. A last run that
            # stopped before any document (its start check failed) leaves the one before
            if reports:
                metrics.observe_ingest(
                    next((r for r in reversed(reports) if r.outcomes), reports[-1])
                )
        # a run after a lost one finds what that one stored: it counts as this job's work
        retry = job.attempts > 0 or runs > 1
        tracker.docs = len(results)
        # the chunks of every document the summary counts as this job's (stored by this
        # run or an earlier one): the finished job's figures add up
        tracker.chunks = sum(
            job_chunks(r.status, r.document, r.chunks, job, retry=retry or r.again) for r in results
        )
        changed = [r.error for r in results if isinstance(r.error, SchemaMismatchError)]
        if changed:
            raise changed[0]  # a document refused by the changed schema: the job goes back
        for r in results:
            outcomes[job_status(r, job, retry=retry)] += 1
            if r.error is not None:
                errors.append(_error_entry(job_id, r.name, r.error))
        if lost:
            raise _not_stored(lost, len(results))
    except (Superseded, SchemaMismatchError):
        raise  # not this job's failure: nothing recorded (run_job puts it back)
    except Exception as exc:  # the job itself broke: record it, let the queue see it too
        recorded = exc.error if isinstance(exc, CollectionReplaced) else exc
        _finish(
            rt,
            job_id,
            "failed",
            attempt,
            documents=tracker.docs,
            chunks=tracker.chunks,
            errors=[
                *errors,
                _error_entry(job_id, None, recorded),
            ],
            summary=dict(outcomes),
        )
        raise
    summary: dict[str, Any] = {**outcomes, "embedded": report.embedded, "reused": report.reused}
    return _finish(
        rt,
        job_id,
        "succeeded",
        attempt,
        documents=tracker.docs,
        chunks=tracker.chunks,
        errors=errors,
        summary=summary,
    )


# What a job failed by documents not stored for a passing cause (:func:`passing_cause`)
# says of each cause, and the error it records for it
_CAUSES: dict[str, tuple[type[RagstoreError], str]] = {
    "unavailable": (
        DatabaseUnavailableError,
        "the database could not be reached, lent no connection or refused writes",
    ),
    "cancelled": (
        StatementCancelledError,
        "the database gave up waiting for their writes' locks (a lock_timeout set in the "
        "database while another write of the same names held them)",
    ),
    "switched": (
        ConflictError,
        "the collection was switched to another embedding model while the job ran "
        "(ragstore models migrate)",
    ),
    "vectors_gone": (
        ConflictError,
        "the collection's vector table was dropped while the job ran (its model switched "
        "or rolled back, and the vectors of the one the job read pruned)",
    ),
    "collided": (
        ConflictError,
        "their writes collided with concurrent changes (a deadlock or a serialization failure)",
    ),
    "resources": (
        ResourcesExhaustedError,
        "the worker ran out of file descriptors or memory reading them (Too many open files, "
        "Cannot allocate memory: raise its open-files limit, ulimit -n or LimitNOFILE, or "
        "free memory)",
    ),
    "parse_helper": (
        ParseHelperUnavailableError,
        "the worker could not start a parse helper for them (no descriptor, memory or "
        "process slot left, or the helper killed or slow to start: raise the worker's "
        "limits or free memory, or set RAGSTORE_PARSE_TIMEOUT_S=0)",
    ),
}


def passing_cause(err: RagstoreError | None) -> str | None:
    """The passing cause (a key of :data:`_CAUSES`) of a document's error, or None where
    the error is the document's own (a file that does not parse, a chunk too long): sent
    again, such a document fails the same way, while one of a passing cause is stored by
    a run again. The ``not_attempted`` documents of an ingest stopped by a passing cause
    carry a copy of its error, and so its cause.

    Only an unreachable database counted as passing: a document whose write a lock
    timeout cancelled (another upload of its name holding the lock), that collided with
    a concurrent write (class 40), or was refused because a migration switched the
    collection's model meanwhile (and the rest of its ingest ``not_attempted``) was
    taken for its own failure, and its job recorded ``succeeded`` with the documents
    never stored. And an out-of-memory or configuration-limit error of one document's
    write (SQLSTATE 53200 / 53400, a :class:`DatabaseUnavailableError` the ingest goes on
    past: :func:`stops_ingest`) ran the job again five times and failed it saying the
    database could not be reached, where it is that document's own failure.

    A read-only database's refusal (SQLSTATE 25006: a hot standby after a failover,
    ``default_transaction_read_only``) is a :class:`DatabaseUnavailableError` that stops
    the ingest: ``unavailable``, run again with the waits, the job failed with it if the
    database is still read-only after the last run. A vector table dropped under a write
    (``vectors_gone``: the collection deleted, or a model it no longer serves pruned) is
    passing where the collection is still there; where it was deleted, the run again
    fails the job as ``collection_not_found`` (:func:`_check_collection_at_start`).

    The worker out of file descriptors or memory reading a document (``resources``:
    :class:`ResourcesExhaustedError`), or a parse helper that could not start for a cause
    that passes (``parse_helper``: out of descriptors or memory, killed as it started,
    slow to start: a ``retry_after`` set) is the machine's state at that moment, not the
    document's: the job recorded it as the document's own failure, ``succeeded`` with
    the document never stored. A helper that will not start whatever the wait (no
    Python to run, one that exits as it starts: :func:`stops_reading`) is not run again
    for: it stops the ingest, and the same run again would fail the same way."""
    if err is None:
        return None
    if isinstance(err, ResourcesExhaustedError):
        return "resources"
    if isinstance(err, ParseHelperUnavailableError):
        return None if stops_reading(err) else "parse_helper"
    if isinstance(err, DatabaseUnavailableError):
        return "unavailable" if stops_ingest(err) else None
    if lock_wait_gave_up(err):
        # a statement_timeout (57014) is the document's own: its write takes too long
        # again, and a job run five times over it then told to send it again
        return "cancelled"
    if model_switched(err):
        return "switched"
    if collided(err):
        return "collided"
    if vector_table_gone(err):
        return "vectors_gone"
    return None


def _not_stored(lost: list[tuple[str, str]], total: int) -> RagstoreError:
    """The job's failure where documents (name, :func:`passing_cause`) were still not
    stored after its last run for a passing cause, not the documents' own; recorded as
    the error of the first one's cause, the message naming each cause.

    Recorded ``succeeded`` with the errors listed, such a job told a client waiting on it
    that its upload was done, and nothing sent it again: its documents were never stored.
    ``failed`` is what makes a client resend; the documents that were stored stay. A job
    whose errors are the documents' own (a file that does not parse) still succeeds:
    sending that file again would fail the same way."""
    names = [n for n, _ in lost]
    shown = ", ".join(repr(n) for n in names[:5]) + (", ..." if len(names) > 5 else "")
    causes = list(dict.fromkeys(c for _, c in lost))
    why = "; or ".join(_CAUSES[c][1] for c in causes)
    message = (
        f"{len(lost)} of the job's {total} documents were not stored ({shown}): {why}, in "
        f"{ATTEMPTS} runs of the job; send them again (the documents that were stored stay "
        "stored)"
    )
    cls = _CAUSES[causes[0]][0]
    if cls is DatabaseUnavailableError:  # it says what became of them: told as it is
        return DatabaseUnavailableError(message, public=message, says_outcome=True)
    return cls(message)


def _ingest(
    rt: Runtime,
    job: store.JobRecord,
    files: list[store.JobFile],
    tracker: _Progress,
    attempt: int,
    report: IngestReport,
) -> tuple[list[DocumentOutcome], IngestReport]:
    """Ingest the job's files once into ``report`` (which the metrics do not count: the
    caller counts its last run's); each outcome, and the report of the whole.

    Run again where the database went away meanwhile (a restart, a failover, a crash of
    the embedded server): the job was accepted with 202, and failing it there left the
    client to notice and send its files again. A run again is safe for the reason the
    module's text gives (documents written whole, unchanged ones left)."""
    _check_collection_at_start(rt, job)
    tracker.follow(report)
    with staging.staging_area(rt.settings) as area:
        # a document written (or deleted: its tombstone) by a request answered after
        # this job was accepted is newer than the job's: the job leaves it (superseded),
        # whatever runs first
        docs = [
            NewDocument(f.name, area.write(f.content), f.metadata, job.created_at) for f in files
        ]
        # every write of a document fenced by the attempt, in its own transaction
        try:
            results = add_documents(
                rt,
                job.collection,
                docs,
                progress=tracker,
                report=report,
                guard=_into_its_collection(job, _fence(job.id, attempt)),
                record=False,  # the job counts its last run's report (_run)
            )
        except SchemaMismatchError:
            raise  # the schema changed under the run: every statement is refused now
        except RagstoreError:
            # the collection deleted after the check above (before the ingest looked it up:
            # "does not exist (collections: <every other name>); ingest into it to create
            # it"; or between two rounds: "conflict ... retry the request"): the job's
            # account of it instead
            _check_collection_at_start(rt, job)
            raise
    if any(isinstance(r.error, CollectionNotFoundError) for r in results):
        # a round's write found the collection deleted (``hold_live``, before the guard):
        # the ingest stopped there, the rest ``not_attempted``. A delete that skipped the
        # job's row (held by its progress write) left the job running, and it was then
        # recorded ``succeeded`` with those documents never stored: the job's account of
        # it instead (a delete that did fail the job: the outcome's record is Superseded)
        _check_collection_at_start(rt, job)
    return results, report


ATTEMPTS = 5  # a step of a job that could not reach the database is run up to this often ...
RETRY_S = 2.0  # ... this long apart (doubled each time: about half a minute in all)

T = TypeVar("T")


def _while_unreachable(
    job_id: int, what: str, step: Callable[[], T], at_once: Callable[[], bool] = lambda: False
) -> T:
    """``step()``, run again on a fresh connection where the database could not be reached
    (a restart, a failover, a crash of the embedded server, an administrator ending the
    session); at once, not after a wait, where ``at_once()`` says so (the documents a run
    left out were a model switch's: the next run reads the collection's new model, and
    waiting changes nothing).

    Run once, a lost connection failed the job for good where it was a moment's outage:
    the client, told 202, had to notice and send its files again. Before the ingest it
    left the job ``queued`` and, as its outcome was written, ``running`` for good: the
    queue took the error as the job's failure and never ran it again, and a client polling
    it waited until its own timeout."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return step()
        except DatabaseUnavailableError as exc:
            if attempt == ATTEMPTS:
                raise
            wait = 0.0 if at_once() else RETRY_S * 2 ** (attempt - 1)
            log.warning("job %s: %s failed (%s); again in %.0f s", job_id, what, exc, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def _error_entry(job_id: int, document: str | None, exc: BaseException) -> dict[str, Any]:
    """One of the errors a job records, as every reader of the job sees them: told with
    no database address (:func:`ragstore.errors.public_reason`); ``str(exc)`` of an
    unreachable database named the database (its host, user and name) to any holder of
    a read key, so the full message goes to the worker's log instead. An error that is
    not ragstore's own is ``internal_error`` with no detail beyond it (the worker's log
    has the traceback), as the API answers one.

    An unreachable database's entry says what became of the job's documents and what to
    do (:func:`_unavailable_detail`), not the API's "retry in 5s (the server log has the
    details)": that told the reader of a finished job to repeat, within seconds, a
    request it never made, and pointed at the server's log where the worker's (another
    process, perhaps) has the message."""
    if not isinstance(exc, RagstoreError):
        return {
            "document": document,
            "code": "internal_error",
            "detail": f"the job failed unexpectedly ({type(exc).__name__}); the worker's log "
            "has the details",
        }
    if isinstance(exc, DatabaseUnavailableError):
        detail = _unavailable_detail(document, exc)
    elif exc.advice:  # the request's "retry it": what became of the work instead
        detail = _send_again(document, public_reason(exc))
    else:
        detail = public_reason(exc)
    if detail != exc.message:
        # the reader is told less than the message says: the worker's log says it all
        log.warning("job %s: %s: %s: %s", job_id, document or "the job", exc.code, exc.message)
    return {"document": document, "code": exc.code, "detail": detail}


def _unavailable_detail(document: str | None, exc: DatabaseUnavailableError) -> str:
    """A job's record of an unreachable (or read-only, or full) database: its reason, and
    what became of the work: a document not stored, to send again; the job failed after
    its runs, its documents to send again (those stored stay). A reason that says so
    already (``says_outcome``: :func:`_not_stored`'s) is told as it is. The job is
    finished when its errors are read: nothing of it runs again."""
    reason = public_reason(exc)
    if exc.says_outcome:
        return reason
    return _send_again(document, reason, runs=ATTEMPTS)


def _send_again(document: str | None, reason: str, runs: int = 1) -> str:
    """A job's record of work not done for a passing ``reason``: the document not stored,
    or the job failed (after ``runs`` runs of it), to be sent again. Said too of an error
    whose ``advice`` is a request's ("only this request failed, retry it": a statement
    cancelled, a collision): a job's records told their reader to retry a request that
    nobody had made."""
    if document is not None:
        return f"not stored: {reason}; send it again (the worker's log has the details)"
    runs_of_it = f", in {runs} runs of it" if runs > 1 else ""
    return (
        f"the job failed: {reason}{runs_of_it}; send its documents again: those stored stay "
        "stored (the worker's log has the details)"
    )


def _finish(rt: Runtime, job_id: int, status: str, attempt: int, **outcome: Any) -> store.JobRecord:
    """Record attempt ``attempt``'s outcome (again on a fresh connection where it was
    lost); :class:`Superseded` where that run no longer counts (nothing recorded).

    A try whose commit landed but whose answer was lost leaves the job finished by this
    very attempt: the next try, fenced out, finds that and returns it, not Superseded."""
    tries = 0

    def record() -> store.JobRecord:
        nonlocal tries
        tries += 1
        with rt.db.connection() as conn, translated(f"finishing job {job_id}"):
            if store.finish(conn, job_id, status, attempt=attempt, **outcome):
                return store.get(conn, job_id)
            job = store.get(conn, job_id)
        if tries > 1 and job.attempts == attempt and job.status == status:
            return job
        raise Superseded(f"job {job_id}: attempt {attempt} superseded")

    return _while_unreachable(job_id, f"recording it {status}", record)
