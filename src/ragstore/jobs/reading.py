"""Reading background jobs, one or a page, as ``GET /v1/jobs`` and ``ragstore jobs`` show them.

One place for both: the API route answers with these and the CLI, without a server,
prints them, so a job reads the same either way (its dead worker's run settled first,
its figures the API's).
"""

from __future__ import annotations

import logging

import psycopg

from ragstore.db import jobs as job_store
from ragstore.db.errors import translated
from ragstore.jobs.liveness import QUEUE, requeue_abandoned
from ragstore.runtime import Runtime
from ragstore.schemas import JobError, JobPublic

log = logging.getLogger("ragstore.api")


def job_public(job: job_store.JobRecord) -> JobPublic:
    """The job as the API answers it."""
    return JobPublic(
        id=job.id,
        collection=job.collection,
        status=job.status,  # type: ignore[arg-type]
        attempts=job.attempts_spent,  # a run stopped by a schema change gave its attempt back
        total_documents=job.total_documents,
        documents_done=job.documents_done,
        chunks_done=job.chunks_done,
        errors=[
            JobError(document=e.get("document"), code=e.get("code"), detail=e.get("detail"))
            for e in job.errors
        ],
        summary=job.summary,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def settle_unfinished(rt: Runtime, conn: job_store.Conn) -> bool:
    """Settle the jobs no worker will finish as it stands, without a worker running: a
    dead worker's job put back on the queue (``queued``), one whose queue entry ended
    unrecorded failed (``outcome_not_recorded``). Workers did it alone, so with none
    running such a job showed ``running`` for good. Whether any changed."""
    if rt.read_only:  # the standby's rows: the primary's workers and readers settle them
        return False
    try:
        requeued = requeue_abandoned(conn, QUEUE, rt.settings.worker_stalled_after_s)
        with conn.transaction():
            failed = job_store.reconcile_lost(conn)
    except psycopg.errors.Error as exc:  # a worker settling the same job: the read goes on
        if conn.broken:
            raise
        log.warning("could not settle unfinished jobs: %s", exc)
        return False
    return bool(requeued or failed)


def read_job(rt: Runtime, job_id: int) -> job_store.JobRecord:
    """The job, settled first when unfinished; ``JobNotFoundError`` when there is none."""
    with rt.db.connection() as conn, translated(f"reading job {job_id}"):
        job = job_store.get(conn, job_id)
        if job.status not in job_store.FINISHED and settle_unfinished(rt, conn):
            job = job_store.get(conn, job_id)
    return job


def read_jobs(
    rt: Runtime,
    *,
    after: int | None,
    limit: int,
    status: str | None = None,
    collection: str | None = None,
) -> tuple[list[job_store.JobRecord], bool]:
    """A page of jobs, newest first, after the job ``after``; whether more follow."""
    from ragstore.paging import split_page

    with rt.db.connection() as conn, translated("listing jobs"):
        settle_unfinished(rt, conn)  # before the page: a job put back has changed status
        return split_page(
            job_store.page(
                conn, after=after, limit=limit + 1, status=status, collection=collection
            ),
            limit,
        )
