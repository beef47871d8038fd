"""Submitting an ingest job: store its files, then put it on the queue."""

from __future__ import annotations

from collections.abc import Sequence

import procrastinate

from ragstore.db import jobs as store
from ragstore.db.errors import translated
from ragstore.errors import DatabaseError
from ragstore.jobs.queue import INGEST_TASK, collection_lock
from ragstore.runtime import Runtime


def submit_ingest(
    rt: Runtime, queue: procrastinate.App, collection: str, files: Sequence[store.JobFile]
) -> store.JobRecord:
    """Record the job with its bytes (one transaction), then defer it; return the record."""
    with rt.db.connection() as conn, translated(f"recording an ingest job for {collection!r}"):
        job_id = store.create(conn, collection, files)
    try:
        queue_id = queue.configure_task(name=INGEST_TASK, lock=collection_lock(collection)).defer(
            job_id=job_id
        )
    except procrastinate.exceptions.ProcrastinateException as exc:
        with rt.db.connection() as conn, translated(f"failing job {job_id}"):
            store.finish(
                conn,
                job_id,
                "failed",
                documents=0,
                chunks=0,
                summary={},
                errors=[
                    {
                        "document": None,
                        "code": "database_error",
                        "detail": f"could not queue the job: {exc}",
                    }
                ],
            )
        raise DatabaseError(f"could not queue ingest job {job_id}: {exc}") from None
    with rt.db.connection() as conn, translated(f"recording job {job_id}"):
        store.set_queue_job(conn, job_id, queue_id)
        return store.get(conn, job_id)
