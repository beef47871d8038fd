"""Submitting an ingest job: store its files and put it on the queue, in one transaction."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import procrastinate
import psycopg

from ragstore.db import jobs as store
from ragstore.db.errors import translated
from ragstore.errors import ConflictError, DatabaseError
from ragstore.jobs.queue import INGEST_TASK, collection_lock
from ragstore.runtime import Runtime


def request_digest(files: Sequence[store.JobFile]) -> str:
    """A digest of what a job stores: each file's name, metadata and bytes, in order."""
    digest = hashlib.sha256()
    for f in files:
        meta = json.dumps(f.metadata, sort_keys=True, separators=(",", ":"))
        for part in (f.name.encode("utf-8"), meta.encode("utf-8"), f.content):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()


def submit_ingest(
    rt: Runtime,
    queue: procrastinate.App,
    collection: str,
    files: Sequence[store.JobFile],
    *,
    idempotency_key: str | None = None,
) -> store.JobRecord:
    """Record the job with its bytes and its queue entry; return the record.

    With ``idempotency_key`` (the request's ``Idempotency-Key`` scoped to its caller:
    ``api/routes/documents.py``), the job already queued under it for ``collection``
    (kept until the job is pruned, RAGSTORE_JOB_RETENTION_DAYS) is returned instead of a
    new one: a client sending the request again after its answer was lost queued a second
    job storing the same documents. The same key with other files is refused
    (:class:`ConflictError`): answered with the first job, those files would be told
    queued and never stored.

    One transaction: the job is queued exactly when the answer says so. The row was
    committed, then deferred, then its queue entry recorded, each on its own: a failure
    after the defer (the entry's id not recorded, the record not read back) answered an
    error for a job the worker then ran, and a re-send was told ``unchanged``; a defer
    that failed on a lost commit answered an error for a job that could run too. The
    entry's insert runs on this transaction's connection (procrastinate's ``connection``),
    and the worker sees it only once the row is there with it.

    The job's acceptance (``created_at``, which its writes compare with a stored row's
    time) is stamped by the transaction's last statement (:func:`store.stamp_accepted`),
    not at its start: a direct write or delete answered while this one waited or copied
    the files was taken for a later request than the job, and the job lost to it. A
    small gap is left: a direct write stamped (under its document's lock) just before
    this stamp but committed, and answered, just after this commit counts as the older
    one, and the job replaces it. Closing it would need the documents' write locks here,
    which would hold a 202 behind a bulk load holding them for minutes.
    """
    with rt.db.connection() as conn, translated(f"queueing an ingest job for {collection!r}"):
        store.hold_collection(conn, collection)  # a delete meanwhile also fails this job
        digest = request_digest(files) if idempotency_key is not None else None
        if idempotency_key is not None:
            earlier = store.job_for_key(conn, collection, idempotency_key)
            if earlier is not None:
                if earlier[1] != digest:
                    raise ConflictError(
                        f"this Idempotency-Key was sent before to collection {collection!r} "
                        f"with other files or metadata (job {earlier[0]}); nothing was "
                        "queued: send each upload under a fresh key, the same one only for "
                        "the same request sent again"
                    )
                return store.get(conn, earlier[0])
        job_id = store.create(
            conn, collection, files, idempotency_key=idempotency_key, request_digest=digest
        )
        deferrer = queue.configure_task(
            name=INGEST_TASK, lock=collection_lock(collection), connection=conn
        )
        try:
            queue_id = deferrer.defer(job_id=job_id)
        except procrastinate.exceptions.ProcrastinateException as exc:
            if isinstance(exc.__cause__, psycopg.Error):
                raise exc.__cause__ from None  # translated: unavailable, refused, ...
            raise DatabaseError(f"could not queue the ingest job: {exc}") from None
        store.set_queue_job(conn, job_id, queue_id)
        store.stamp_accepted(conn, job_id)  # last: the acceptance is the commit, not the start
        return store.get(conn, job_id)
