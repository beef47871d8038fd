"""Submitting an ingest job: store its files and put it on the queue, in one transaction."""

from __future__ import annotations

from collections.abc import Sequence

import procrastinate
import psycopg

from ragstore.db import jobs as store
from ragstore.db.errors import translated
from ragstore.errors import DatabaseError
from ragstore.jobs.queue import INGEST_TASK, collection_lock
from ragstore.runtime import Runtime


def submit_ingest(
    rt: Runtime, queue: procrastinate.App, collection: str, files: Sequence[store.JobFile]
) -> store.JobRecord:
    """Record the job with its bytes and its queue entry; return the record.

    One transaction: the job is queued exactly when the answer says so. The row was
    committed, then deferred, then its queue entry recorded, each on its own: a failure
    after the defer (the entry's id not recorded, the record not read back) answered an
    error for a job the worker then ran, and a re-send was told ``unchanged``; a defer
    that failed on a lost commit answered an error for a job that could run too. The
    entry's insert runs on this transaction's connection (procrastinate's ``connection``),
    and the worker sees it only once the row is there with it.
    """
    with rt.db.connection() as conn, translated(f"queueing an ingest job for {collection!r}"):
        store.hold_collection(conn, collection)  # a delete meanwhile also fails this job
        job_id = store.create(conn, collection, files)
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
        return store.get(conn, job_id)
