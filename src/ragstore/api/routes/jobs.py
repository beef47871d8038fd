"""/v1/jobs: background ingest jobs with their progress and per-document errors."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from ragstore.api.deps import ReadAccess, RowId, Rt
from ragstore.api.errors_doc import responses
from ragstore.api.routing import written_lsn
from ragstore.db import jobs as job_store
from ragstore.db import lsn
from ragstore.errors import JobNotFoundError
from ragstore.jobs import JobRecord
from ragstore.jobs.reading import job_public, read_job, read_jobs
from ragstore.paging import decode_cursor, encode_cursor
from ragstore.runtime import Runtime
from ragstore.schemas import NAME_PATTERN, JobPublic, JobsPublic

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=responses(404))


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


@router.get("/{job_id}", response_model=JobPublic, summary="Get a job")
def get_job(job_id: RowId, rt: Rt, caller: ReadAccess, response: Response) -> JobPublic:
    """A job of a collection the key may not see is answered as missing: its 403 named
    that collection, so a key limited to one collection could walk the job ids and learn
    every other collection's name (its 404s for collections list only its own)."""
    job = read_job(rt, job_id)
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
    rows, more = read_jobs(
        rt, after=decode_cursor(cursor), limit=limit, status=status, collection=collection
    )
    _written_position(rt, rows, response, "GET /v1/jobs")
    data = [job_public(j) for j in rows]
    nxt = encode_cursor(rows[-1].id) if more else None
    return JobsPublic(data=data, count=len(data), next_cursor=nxt)
