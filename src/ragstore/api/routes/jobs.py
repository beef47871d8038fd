"""/v1/jobs: background ingest jobs with their progress and per-document errors."""

from __future__ import annotations

import logging
from typing import Annotated

import psycopg
from fastapi import APIRouter, Query, Response

from ragstore.api.deps import ReadAccess, RowId, Rt
from ragstore.api.errors_doc import responses
from ragstore.api.routing import written_lsn
from ragstore.db import jobs as job_store
from ragstore.db import lsn
from ragstore.db.errors import translated
from ragstore.errors import JobNotFoundError
from ragstore.jobs import QUEUE, JobRecord
from ragstore.jobs.liveness import requeue_abandoned
from ragstore.paging import decode_cursor, encode_cursor, split_page
from ragstore.runtime import Runtime
from ragstore.schemas import NAME_PATTERN, JobError, JobPublic, JobsPublic

log = logging.getLogger("ragstore.api")

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=responses(404))


def job_public(job: JobRecord) -> JobPublic:
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


def _written_position(rt: Runtime, jobs: list[JobRecord], response: Response, path: str) -> None:
    """A finished job's answer carries the primary's WAL position (``RAGStore-LSN``), past
    the job's writes, as a write's answer does. The 202 that accepted the job carried one
    from before the worker wrote anything, so a client that waited for the job and then
    read was served by a replica that had not replayed the job's documents: read-your-
    writes broke for background writes. (On a read-only server the jobs are the standby's
    own rows, replayed already with everything the job wrote.)

    Read (after the job was) as a write's is: tried again on a fresh connection, else
    ``primary``. Read once on the job's connection, a failure answered the whole read 503
    for a job that was read, and the client polling for its end never saw it end."""
    if any(j.status in job_store.FINISHED for j in jobs) and not rt.read_only:
        response.headers[lsn.HEADER] = written_lsn(rt, path)


def _reconciled(rt: Runtime, conn: job_store.Conn) -> bool:
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


@router.get("/{job_id}", response_model=JobPublic, summary="Get a job")
def get_job(job_id: RowId, rt: Rt, caller: ReadAccess, response: Response) -> JobPublic:
    """A job of a collection the key may not see is answered as missing: its 403 named
    that collection, so a key limited to one collection could walk the job ids and learn
    every other collection's name (its 404s for collections list only its own)."""
    with rt.db.connection() as conn, translated(f"reading job {job_id}"):
        job = job_store.get(conn, job_id)
        if job.status not in job_store.FINISHED and _reconciled(rt, conn):
            job = job_store.get(conn, job_id)
    if not caller.sees(job.collection):
        raise JobNotFoundError(f"job {job_id} does not exist; `GET /v1/jobs` lists the jobs")
    _written_position(rt, [job], response, f"GET /v1/jobs/{job_id}")
    return job_public(job)


@router.get("", response_model=JobsPublic, summary="List jobs, newest first")
def list_jobs(
    rt: Rt,
    caller: ReadAccess,
    response: Response,
    cursor: Annotated[str | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    status: Annotated[str | None, Query(pattern="^(queued|running|succeeded|failed)$")] = None,
    collection: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
) -> JobsPublic:
    if caller.key is not None and caller.key.collection is not None:
        caller.require("read", collection)
    after = decode_cursor(cursor)
    with rt.db.connection() as conn, translated("listing jobs"):
        _reconciled(rt, conn)  # before the page: a job put back has changed status
        rows, more = split_page(
            job_store.page(
                conn, after=after, limit=limit + 1, status=status, collection=collection
            ),
            limit,
        )
    _written_position(rt, rows, response, "GET /v1/jobs")
    data = [job_public(j) for j in rows]
    nxt = encode_cursor(rows[-1].id) if more else None
    return JobsPublic(data=data, count=len(data), next_cursor=nxt)
