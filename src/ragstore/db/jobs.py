"""SQL for ``ingest_jobs`` and ``ingest_job_files``: what a job is and how far it got."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ragstore.db.documents import prune_tombstones
from ragstore.errors import CollectionNotFoundError, JobNotFoundError

Conn = psycopg.Connection[Any]

JOB_STATUSES = ("queued", "running", "succeeded", "failed")
FINISHED = ("succeeded", "failed")  # a job in one of these is never run again


@dataclass(frozen=True)
class JobFile:
    """One document of a job: a file name (its source in the collection) and its bytes."""

    name: str
    content: bytes
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobRecord:
    id: int
    queue_job_id: int | None
    collection: str
    status: str
    attempts: int
    total_documents: int
    documents_done: int
    chunks_done: int
    errors: list[dict[str, Any]]
    summary: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def given_back(self) -> bool:
        """Whether the job waits for a run again after its last run was stopped by a schema
        change (:data:`GIVE_BACK`): that run's attempt is the next start's again."""
        return self.status == "queued" and self.attempts > 0 and self.started_at is None

    @property
    def attempts_spent(self) -> int:
        """The attempts the job used up (``RAGSTORE_WORKER_MAX_ATTEMPTS`` counts these, and
        the API shows them): every start, less a run stopped by a schema change and given
        back; an operator's ``db upgrade`` is not the job's failure."""
        return self.attempts - int(self.given_back)


_COLS = (
    "id, queue_job_id, collection, status, attempts, total_documents, documents_done,"
    " chunks_done, errors, summary, created_at, started_at, finished_at"
)


def _record(r: Sequence[Any]) -> JobRecord:
    return JobRecord(
        int(r[0]),
        r[1],
        r[2],
        r[3],
        int(r[4]),
        int(r[5]),
        int(r[6]),
        int(r[7]),
        list(r[8]),
        dict(r[9]),
        r[10],
        r[11],
        r[12],
    )


def hold_collection(conn: Conn, collection: str) -> None:
    """:class:`CollectionNotFoundError` unless ``collection`` is there, made before the
    caller's transaction began (the job about to be recorded in it is queued for that
    one); its row then held (FOR KEY SHARE) until the transaction ends.

    A request makes a missing collection, then queues its job in a transaction of its
    own. A delete of the collection landing between the two failed the collection's
    unfinished jobs (:func:`fail_for_deleted_collection`) without this one, not yet
    committed: answered 202, it kept its uploaded text in ``ingest_job_files`` until a
    worker ran it, only to fail it (with no worker, for good). Held, the delete waits for
    the job's commit and then fails it; a delete that came first is answered here."""
    row = conn.execute(
        "SELECT created_at <= now() FROM collections WHERE name = %s AND shadow_of IS NULL"
        " FOR KEY SHARE",
        (collection,),
    ).fetchone()
    if row is None or not row[0]:
        raise CollectionNotFoundError(
            f"collection {collection!r} was deleted while this upload was on its way; "
            "nothing was queued: create it and send the files again",
            collection=collection,
        )


def collection_predates(conn: Conn, job: JobRecord) -> bool | None:
    """Whether the live collection of ``job``'s name was made no later than the job
    (True), after it (False: the name's collection was deleted and made again since), or
    is not there (None). A worker checks it before it ingests the job's documents
    (``jobs.runner``): a model switch that moves the name to another row keeps the
    creation time."""
    row = conn.execute(
        "SELECT created_at <= %s FROM collections WHERE name = %s AND shadow_of IS NULL",
        (job.created_at, job.collection),
    ).fetchone()
    return None if row is None else bool(row[0])


# the advisory-lock space (first int4) of the requests queueing a job under one
# idempotency key (:func:`job_for_key`)
IDEMPOTENCY_LOCKS = 0x5249_444B  # "RIDK"


def job_for_key(conn: Conn, collection: str, key: str) -> tuple[int, str | None] | None:
    """The id and request digest of the job of ``collection`` queued under ``key`` (an
    ``Idempotency-Key`` digest, revision 0036), or None; either way, no other request
    queues one under ``key`` until the caller's transaction ends.

    A request sent again while the first is still being done (the client's read timed
    out) waits here for the first's commit and then finds its job: without the lock both
    looked, found none, and the second failed on the unique index, or, where the first
    rolled back, found nothing to answer."""
    conn.execute(
        "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
        (IDEMPOTENCY_LOCKS, f"{collection} {key}"),
    )
    row = conn.execute(
        "SELECT id, request_digest FROM ingest_jobs WHERE collection = %s AND idempotency_key = %s",
        (collection, key),
    ).fetchone()
    return None if row is None else (int(row[0]), row[1])


def create(
    conn: Conn,
    collection: str,
    files: Sequence[JobFile],
    *,
    idempotency_key: str | None = None,
    request_digest: str | None = None,
) -> int:
    row = conn.execute(
        "INSERT INTO ingest_jobs (collection, total_documents, idempotency_key, request_digest)"
        " VALUES (%s, %s, %s, %s) RETURNING id",
        (collection, len(files), idempotency_key, request_digest),
    ).fetchone()
    assert row is not None
    job_id = int(row[0])
    with conn.cursor().copy(
        "COPY ingest_job_files (job_id, ordinal, name, metadata, content) FROM STDIN"
        " (FORMAT BINARY)"
    ) as copy:
        copy.set_types(["int8", "int4", "text", "jsonb", "bytea"])
        for i, f in enumerate(files):
            copy.write_row((job_id, i, f.name, Jsonb(f.metadata), f.content))
    return job_id


def set_queue_job(conn: Conn, job_id: int, queue_job_id: int) -> None:
    conn.execute("UPDATE ingest_jobs SET queue_job_id = %s WHERE id = %s", (queue_job_id, job_id))


def stamp_accepted(conn: Conn, job_id: int) -> None:
    """Set the job's ``created_at``, its acceptance (what its writes compare with a stored
    row's or a tombstone's time: ``documents.write_documents``), to the database's clock
    now; the queueing transaction's last statement (``jobs.service.submit_ingest``).

    The column's default, ``now()``, is when that transaction began, and it can wait
    before it commits: on the collection row behind a model switch or a delete
    (:func:`hold_collection`), on another request under the same key
    (:func:`job_for_key`), and while it copies the upload in (seconds for large files). A
    direct write or delete of the same document answered in that window, before the
    job's 202, was stamped later than the job, and the worker took the job for the older
    request: ``superseded``, and the version the client sent last never landed."""
    conn.execute("UPDATE ingest_jobs SET created_at = clock_timestamp() WHERE id = %s", (job_id,))


def get(conn: Conn, job_id: int) -> JobRecord:
    row = conn.execute(f"SELECT {_COLS} FROM ingest_jobs WHERE id = %s", (job_id,)).fetchone()
    if row is None:
        raise JobNotFoundError(f"job {job_id} does not exist; `GET /v1/jobs` lists the jobs")
    return _record(row)


def page(
    conn: Conn,
    *,
    after: int | None,
    limit: int,
    status: str | None = None,
    collection: str | None = None,
) -> list[JobRecord]:
    """Jobs newest first; ``after`` is the last id of the previous page."""
    rows = conn.execute(
        f"SELECT {_COLS} FROM ingest_jobs"
        " WHERE (%(after)s::bigint IS NULL OR id < %(after)s)"
        " AND (%(status)s::text IS NULL OR status = %(status)s)"
        " AND (%(coll)s::text IS NULL OR collection = %(coll)s)"
        " ORDER BY id DESC LIMIT %(limit)s",
        {"after": after, "status": status, "coll": collection, "limit": limit},
    ).fetchall()
    return [_record(r) for r in rows]


def files(conn: Conn, job_id: int) -> list[JobFile]:
    rows = conn.execute(
        "SELECT name, content, metadata FROM ingest_job_files WHERE job_id = %s ORDER BY ordinal",
        (job_id,),
    ).fetchall()
    return [JobFile(r[0], bytes(r[1]), dict(r[2])) for r in rows]


# The server's TCP settings of a worker's session while it holds a job's lock (the job's
# row: :func:`keep_alive`; its liveness lock: ``jobs.liveness``): a machine that went
# silent (its network cut, no FIN or RST) has its session ended, and the lock freed, in
# about a minute. ``tcp_user_timeout`` (ms) ends one whose answer (a commit's, say) goes
# unacknowledged that long; the keepalives end an idle one (under Linux the user timeout
# also bounds them). A live peer's kernel acknowledges and answers the probes however
# long its process is busy. Unix-socket sessions ignore them.
SESSION_TCP: dict[str, int] = {
    "tcp_keepalives_idle": 15,
    "tcp_keepalives_interval": 5,
    "tcp_keepalives_count": 3,
    "tcp_user_timeout": 60_000,
}
KEEP_ALIVE = "SELECT " + ", ".join(
    f"set_config('{name}', %({name})s, false)" for name in SESSION_TCP
)


def keep_alive_args(tcp: dict[str, int] | None = None) -> dict[str, str]:
    """:data:`KEEP_ALIVE`'s arguments: ``tcp`` (:data:`SESSION_TCP` by default)."""
    values = SESSION_TCP if tcp is None else tcp
    return {name: str(values[name]) for name in SESSION_TCP}


def keep_alive(conn: Conn, tcp: dict[str, int] | None = None) -> None:
    """Give the session the server-side TCP settings ``tcp`` (:data:`SESSION_TCP` by
    default), for as long as it lives (undone only by a rollback of the caller's
    transaction: a session that held the job's row in it holds it no more).

    A worker holds the job's row in the transaction writing a round of its documents
    (:func:`hold_current`) and at its start (:func:`start`). With the system's defaults
    the server noticed a worker machine that vanished meanwhile only after hours (no
    keepalives for two hours, retransmissions for about fifteen minutes): its session
    lived on with the lock, and every statement wanting the row (the job's start by
    another worker, its outcome) was refused or skipped it all that while."""
    conn.execute(KEEP_ALIVE, keep_alive_args(tcp))


# how long a worker's start of a job waits for the job's row, held by a transaction of an
# earlier attempt of it (:func:`hold_current`), before it gives the job back to the queue
START_LOCK_TIMEOUT = "5s"


def bound_lock_waits(conn: Conn, timeout: str) -> None:
    """Wait at most ``timeout`` for a row lock in the caller's transaction (55P03 past it).

    The job's row is held (FOR SHARE) by each transaction writing its documents until
    that commits (:func:`hold_current`). Where the worker's machine vanished in between,
    the session lives on, its lock held, until the server notices the dead connection
    (TCP keepalives: minutes, hours by the system's default), and a start of the job by
    another worker waited on it all that while, its worker slot taken."""
    conn.execute("SELECT set_config('lock_timeout', %s, true)", (timeout,))


# A run stopped by a schema change gives its attempt back (``LiveJobManager.retry_job``):
# in the statement putting its queue entry back, while that entry is still its worker's and
# the run still the job's latest, the job is shown ``queued`` with no ``started_at``. Its
# next start (:func:`start`) takes that run's attempt number again instead of a new one:
# the stopped run writes nothing more (its task returned), so no run shares the number.
# Only columns every revision has (0003): a worker of the old code says it on the new schema.
# Counted, a job with RAGSTORE_WORKER_MAX_ATTEMPTS=1 (or on its last attempt) was failed
# ``worker_lost`` by the matching version's worker though it never failed on its own.
GIVE_BACK = (
    "UPDATE ingest_jobs SET status = 'queued', started_at = NULL, updated_at = now()"
    " WHERE id = %(ingest_job)s AND attempts = %(attempt)s AND status = 'running'"
)
# what :func:`start` adds to ``attempts``: nothing after a run given back (JobRecord.given_back)
_NEXT_ATTEMPT = (
    "CASE WHEN status = 'queued' AND started_at IS NULL AND attempts > 0 THEN 0 ELSE 1 END"
)


def start(conn: Conn, job_id: int, queue_job_id: int | None = None) -> int | None:
    """A worker took the job (again): progress restarts, the attempt is counted (after a
    run given back, :data:`GIVE_BACK`, that run's attempt is taken again); the queue's
    entry is recorded where the submitting request could not record it. The attempt's
    number, which fences this run's later writes (:func:`progress`, :func:`finish`); None
    where the job is finished already and so not started.

    A job is taken again while its earlier run may still be going (that worker judged
    dead while cut off from the database): unconditional, a start landing just after
    that run recorded its outcome turned the finished job ``running`` again, its files
    dropped, and the new run reported zero documents as the job's outcome."""
    row = conn.execute(
        f"UPDATE ingest_jobs SET status = 'running', attempts = attempts + {_NEXT_ATTEMPT},"
        " documents_done = 0, chunks_done = 0, errors = '[]'::jsonb,"
        " queue_job_id = coalesce(queue_job_id, %s),"
        " started_at = now(), updated_at = now()"
        " WHERE id = %s AND status <> ALL(%s::text[]) RETURNING attempts",
        (queue_job_id, job_id, list(FINISHED)),
    ).fetchone()
    return None if row is None else int(row[0])


# a run's writes apply only while its attempt is the job's latest and the job unfinished
_CURRENT = "id = %(job_id)s AND attempts = %(attempt)s AND status <> ALL(%(finished)s::text[])"


def progress(conn: Conn, job_id: int, documents: int, chunks: int, *, attempt: int) -> bool:
    """Record how far attempt ``attempt`` got; False (nothing written) where the run is
    superseded: another attempt started, or the job is finished."""
    row = conn.execute(
        "UPDATE ingest_jobs SET documents_done = %(docs)s, chunks_done = %(chunks)s,"
        f" updated_at = now() WHERE {_CURRENT} RETURNING id",
        {
            "docs": documents,
            "chunks": chunks,
            "job_id": job_id,
            "attempt": attempt,
            "finished": list(FINISHED),
        },
    ).fetchone()
    return row is not None


def current(conn: Conn, job_id: int, *, attempt: int) -> bool:
    """Whether attempt ``attempt`` is still the job's run that counts."""
    row = conn.execute(
        f"SELECT 1 FROM ingest_jobs WHERE {_CURRENT}",
        {"job_id": job_id, "attempt": attempt, "finished": list(FINISHED)},
    ).fetchone()
    return row is not None


def hold_current(conn: Conn, job_id: int, *, attempt: int) -> bool:
    """Whether attempt ``attempt`` is still the job's run that counts, and, where it is,
    the job's row locked (FOR SHARE) until the caller's transaction ends: a start of
    another attempt (or any outcome recorded) waits for that transaction, so the
    documents it writes are either committed before the run is superseded or not at all.

    Checked only at progress writes, a run superseded meanwhile (its worker judged dead
    while cut off from the database) still stored the round it was writing, after the
    other attempt's outcome: a document the client deleted after reading it came back."""
    row = conn.execute(
        f"SELECT 1 FROM ingest_jobs WHERE {_CURRENT} FOR SHARE",
        {"job_id": job_id, "attempt": attempt, "finished": list(FINISHED)},
    ).fetchone()
    return row is not None


def finish(
    conn: Conn,
    job_id: int,
    status: str,
    *,
    attempt: int,
    documents: int,
    chunks: int,
    errors: list[dict[str, Any]],
    summary: dict[str, Any],
) -> bool:
    """Record attempt ``attempt``'s outcome and drop the job's uploaded bytes, in the
    caller's transaction; False (nothing written) where that run is superseded.

    A finished job is never run again, so its files have no reader left. Kept, they grew
    the database by every background upload for good, and held the text of documents
    and collections deleted since (in every backup too).

    Fenced by the attempt: a worker judged dead while cut off from the database ran on
    beside the attempt that took its job, and its outcome, written last, replaced the
    outcome of the run that counts (or a finished job's)."""
    row = conn.execute(
        "UPDATE ingest_jobs SET status = %(status)s, documents_done = %(docs)s,"
        " chunks_done = %(chunks)s, errors = %(errors)s, summary = %(summary)s,"
        f" finished_at = now(), updated_at = now() WHERE {_CURRENT} RETURNING collection",
        {
            "status": status,
            "docs": documents,
            "chunks": chunks,
            "errors": Jsonb(errors),
            "summary": Jsonb(summary),
            "job_id": job_id,
            "attempt": attempt,
            "finished": list(FINISHED),
        },
    ).fetchone()
    if row is None:
        return False
    conn.execute("DELETE FROM ingest_job_files WHERE job_id = %s", (job_id,))
    # the tombstones this job kept (pruned at deletes only, those of a collection with no
    # delete after its last job stayed for good)
    coll = conn.execute("SELECT id FROM collections WHERE name = %s", (row[0],)).fetchone()
    if coll is not None:
        prune_tombstones(conn, int(coll[0]))
    return True


OUTCOME_LOST = "outcome_not_recorded"  # the error code of a job failed by reconcile_lost

# Fails the unfinished jobs whose queue entry is finished or gone (no worker runs them
# again) and drops their files, in one statement; the worker runs it through the queue's
# connector, with RECONCILE_ARGS.
# Their rows are taken SKIP LOCKED: a row held by a transaction of a run whose machine
# vanished mid-commit (``hold_current``, open until the server notices the dead session:
# minutes, hours by the system's default keepalives) is left for a later round. Waited
# on, every job read of an unfinished job and every listing (which run this for all
# jobs) answered nothing all that while, and a worker's stalled check (and its stop) hung.
RECONCILE_LOST = (
    "WITH candidates AS (SELECT j.id FROM ingest_jobs j"
    " WHERE j.status IN ('queued', 'running') AND j.queue_job_id IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs p WHERE p.id = j.queue_job_id"
    "  AND p.status::text <> ALL(%(done)s::text[]))"
    " FOR NO KEY UPDATE OF j SKIP LOCKED),"
    " lost AS ("
    " UPDATE ingest_jobs j SET status = 'failed', finished_at = now(), updated_at = now(),"
    " errors = j.errors || jsonb_build_array(jsonb_build_object("
    "  'document', NULL, 'code', %(code)s::text, 'detail', %(detail)s::text))"
    " FROM candidates c WHERE j.id = c.id AND j.status IN ('queued', 'running')"
    " RETURNING j.id),"
    " dropped AS (DELETE FROM ingest_job_files f USING lost WHERE f.job_id = lost.id)"
    " SELECT id AS job_id FROM lost ORDER BY id"
)
RECONCILE_ARGS: dict[str, Any] = {
    "code": OUTCOME_LOST,
    # the queue's states in which no worker runs the job again
    "done": ["succeeded", "failed", "cancelled", "aborted"],
    "detail": "the job's outcome was never recorded and the queue does not run it again "
    "(its worker could not record it: see the worker's log; or its queue entry was cancelled "
    "or removed); documents it stored stay: send the files again to store the rest (those "
    "stored are answered unchanged)",
}


def reconcile_lost(conn: Conn) -> list[int]:
    """Fail the unfinished jobs that no worker will run again; their ids.

    A worker records a job's outcome, then the queue marks its entry. Where the outcome
    could not be written (the database refused it, or was away past every retry), the
    task's error made the queue mark the entry ``failed`` and never hand it out again,
    while the job stayed ``running`` (or ``queued``, when even its start failed): for
    good, and a client polling it waited forever. A job counts as unfinished while its
    entry waits or runs (a dead worker's entry is put back by the stalled-job check).
    Its progress and earlier errors stay; what it stored stays. A job whose row another
    transaction holds is skipped, not waited on, and failed by a later call."""
    rows = conn.execute(RECONCILE_LOST, RECONCILE_ARGS).fetchall()
    return [int(r[0]) for r in rows]


def fail_for_deleted_collection(conn: Conn, collection: str) -> list[int]:
    """Fail the unfinished jobs queued for ``collection`` and drop their uploaded bytes,
    in the caller's transaction (the collection's delete, which holds its row by then);
    their ids.

    Left, a queued job's files (the text of the deleted collection's documents-to-be)
    stayed in ``ingest_job_files``, and in every backup, until a worker ran it, which then
    only failed it: with no worker running, for good. A job running at that moment stops
    at its next write (each is fenced by its attempt, which a finished job no longer
    counts: ``hold_current``) and records nothing more; what it stored went with the
    collection. Every unfinished job of the name is failed: one queued for an earlier
    collection of that name (deleted before) could never run either.

    A job whose row another transaction holds is skipped, not waited on: only a worker
    running it holds it (its start, a progress write, a round's commit: ``hold_current``),
    and that run fails the job itself as ``collection_not_found``: its next write finds the
    collection gone (``documents.hold_live``), and the runner then checks the collection
    again (``jobs.runner._ingest``); or, its worker dead, the run that takes it over fails
    it at its start check. Waited on, a row held by a vanished worker's transaction (open
    until the server notices the dead session: minutes, hours by the system's default
    keepalives) hung the delete all that while.

    A failed job's queue entry that still waits goes too: kept, it held the job out of
    the finished-job sweep (``PRUNE_FINISHED`` keeps a job whose entry waits) until a
    worker took the entry only to find the job finished; with no worker running, for
    good. An entry a worker is taking at that moment (its row locked) is skipped: that
    worker finds the job finished and marks the entry done, and the sweep takes both."""
    rows = conn.execute(
        "WITH candidates AS (SELECT id FROM ingest_jobs"
        " WHERE collection = %(coll)s AND status <> ALL(%(finished)s::text[])"
        " FOR NO KEY UPDATE SKIP LOCKED),"
        " gone AS ("
        " UPDATE ingest_jobs j SET status = 'failed', finished_at = now(), updated_at = now(),"
        " errors = j.errors || jsonb_build_array(jsonb_build_object("
        "  'document', NULL, 'code', 'collection_not_found', 'detail', %(detail)s::text))"
        " FROM candidates c WHERE j.id = c.id AND j.status <> ALL(%(finished)s::text[])"
        " RETURNING j.id, j.queue_job_id),"
        " dropped AS (DELETE FROM ingest_job_files f USING gone WHERE f.job_id = gone.id),"
        " waiting AS (SELECT p.id FROM procrastinate_jobs p JOIN gone ON p.id = gone.queue_job_id"
        "  WHERE p.status = 'todo' FOR UPDATE OF p SKIP LOCKED),"
        " unqueued AS (DELETE FROM procrastinate_jobs p USING waiting w WHERE p.id = w.id)"
        " SELECT id FROM gone ORDER BY id",
        {
            "coll": collection,
            "finished": list(FINISHED),
            "detail": f"collection {collection!r} was deleted after this job was queued; the "
            "job was stopped and its files dropped, and what it had stored went with the "
            "collection: create it and send them again to store them",
        },
    ).fetchall()
    return [int(r[0]) for r in rows]


RETENTION_BATCH = 500  # finished jobs deleted by one statement (its own short transaction)

# Deletes up to %(batch)s finished jobs that finished more than %(secs)s seconds ago, oldest
# first, with their queue entries (finished ones only: a worker deletes a succeeded entry
# itself, a failed, cancelled or aborted one stayed for good); the count deleted. A job
# whose entry still waits or runs is kept: the queue hands it out again (the stalled-job
# check, a busy start retried) and its run reads the row. Rows another transaction holds
# are skipped, not waited on (a later sweep takes them). Its files went at its finish
# (``finish`` and the statements that fail a job drop them), and the foreign key of
# ``ingest_job_files`` cascades all the same.
PRUNE_FINISHED = (
    "WITH old AS (SELECT j.id, j.queue_job_id FROM ingest_jobs j"
    " WHERE j.status = ANY(%(finished)s::text[])"
    " AND coalesce(j.finished_at, j.updated_at) < now() - make_interval(secs => %(secs)s)"
    " AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs p WHERE p.id = j.queue_job_id"
    "  AND p.status::text <> ALL(%(done)s::text[]))"
    " ORDER BY j.id LIMIT %(batch)s FOR UPDATE OF j SKIP LOCKED),"
    " entries AS (DELETE FROM procrastinate_jobs p USING old"
    "  WHERE p.id = old.queue_job_id AND p.status::text = ANY(%(done)s::text[])),"
    " gone AS (DELETE FROM ingest_jobs j USING old WHERE j.id = old.id RETURNING j.id)"
    " SELECT count(*) AS deleted FROM gone"
)


def prune_args(retention_days: float, batch: int = RETENTION_BATCH) -> dict[str, Any]:
    """:data:`PRUNE_FINISHED`'s arguments for jobs finished over ``retention_days`` ago."""
    return {
        "finished": list(FINISHED),
        "done": RECONCILE_ARGS["done"],
        "secs": retention_days * 86400.0,
        "batch": batch,
    }


def prune_finished(conn: Conn, retention_days: float, *, batch: int = RETENTION_BATCH) -> int:
    """Delete one batch of the jobs finished over ``retention_days`` ago (never an
    unfinished one, nor one whose queue entry still waits or runs); how many.

    Finished jobs were never removed: ``ingest_jobs``, its listing (``GET /v1/jobs``,
    ``ragstore jobs list``) and every backup grew by every background upload for good.
    One batch a call, in the caller's transaction: a sweep calls it until it deletes
    fewer than ``batch``, each call committed on its own, so no lock is held for long."""
    row = conn.execute(PRUNE_FINISHED, prune_args(retention_days, batch)).fetchone()
    return 0 if row is None else int(row[0])
