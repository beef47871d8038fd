"""SQL for the job queue's own tables (``procrastinate_workers``, ``procrastinate_jobs``)
beside procrastinate's: which workers are alive, an entry finished or put back only while
it is still its worker's, the entries a burst worker can still run.

procrastinate writes these tables through its own statements; the ones here are what
ragstore's worker (``jobs.liveness``, ``jobs.worker``) and a job read (``jobs.reading``)
add to them, kept with the rest of the SQL. The why of each is told where it is called
(``jobs.liveness``: a worker's liveness is its advisory lock, not its heartbeat alone).
Statements run through procrastinate's connector (its pool) where a worker's job manager
runs them, and on a connection of the caller's otherwise.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from ragstore.db.jobs import GIVE_BACK, KEEP_ALIVE, keep_alive_args

if TYPE_CHECKING:
    from procrastinate import BaseConnector

Conn = psycopg.Connection[Any]
AsyncConn = psycopg.AsyncConnection[Any]

# a worker's lock key is the int4 pair (WORKER_LOCKS, its id): apart from int8 keys
WORKER_LOCKS = 0x5257_4B52  # "RWKR"

# a heartbeat counts from the database server's start at the earliest: after a restart
# every worker lost its lock's session and could beat no more while the server was down,
# and the first one back judged the others dead before they could beat again
_SILENT = (
    "greatest({beat}, pg_postmaster_start_time())"
    " < now() - make_interval(secs => %(seconds_since_heartbeat)s)"
)
_PRUNE = (
    "DELETE FROM procrastinate_workers"
    f" WHERE {_SILENT.format(beat='last_heartbeat')}"
    " AND pg_try_advisory_xact_lock(%(space)s, (id %% 2147483648)::int4)"
    " RETURNING id AS worker_id"
)
# of the workers named, those alive: holding their lock, or registered and not silent
_ALIVE = (
    "SELECT w.id AS worker_id FROM unnest(%(ids)s::bigint[]) AS w(id)"
    " LEFT JOIN procrastinate_workers p ON p.id = w.id"
    f" WHERE (p.id IS NOT NULL AND NOT {_SILENT.format(beat='p.last_heartbeat')})"
    " OR NOT pg_try_advisory_xact_lock(%(space)s, (w.id %% 2147483648)::int4)"
)
# finishes the entry only while this worker runs it (the function's checks are its own)
_FINISH_OWN = (
    "WITH own AS (SELECT id FROM procrastinate_jobs WHERE id = %(job_id)s"
    " AND worker_id = %(worker_id)s AND status = 'doing' FOR UPDATE),"
    " done AS (SELECT procrastinate_finish_job_v1("
    "id, %(status)s::procrastinate_job_status, %(delete_job)s) FROM own)"
    " SELECT (SELECT count(*) FROM done) > 0 AS finished"
)
# puts the entry back only while it is still the dead worker's (or no worker's) running
# entry: another party (a worker, a job read) may have put it back, and a worker taken it;
# the job it runs is shown ``queued`` again, in the same statement, as a job read shows it.
# The job's row is taken NOWAIT (read by the final SELECT, so always taken): held by a
# transaction of the dead worker's still open (``LiveJobManager.retry_stalled_job``),
# the statement fails at once (55P03) and does nothing
_RETRY_STALLED = (
    "WITH own AS (SELECT id FROM procrastinate_jobs WHERE id = %(job_id)s"
    " AND status = 'doing' AND (worker_id IS NULL OR worker_id = %(worker_id)s) FOR UPDATE),"
    " job AS (SELECT id FROM ingest_jobs WHERE queue_job_id IN (SELECT id FROM own)"
    "  FOR NO KEY UPDATE NOWAIT),"
    " done AS (SELECT procrastinate_retry_job_v2(id, now(), NULL, NULL, NULL) FROM own),"
    " shown AS (UPDATE ingest_jobs SET status = 'queued', updated_at = now()"
    "  WHERE status = 'running' AND id IN (SELECT id FROM job))"
    " SELECT (SELECT count(*) FROM done) > 0 AS retried, (SELECT count(*) FROM job) AS jobs"
)
# puts this worker's entry back after its run was stopped by a schema change and gives the
# run's attempt back (``db.jobs.GIVE_BACK``), in one statement, only while the entry is still
# this worker's (or no worker's: judged dead meanwhile, not yet taken): where another took
# it, the job is that one's run and nothing is given back
_RETRY_GIVEN_BACK = (
    "WITH own AS (SELECT id FROM procrastinate_jobs WHERE id = %(job_id)s"
    " AND status = 'doing' AND (worker_id IS NULL OR worker_id = %(worker_id)s) FOR UPDATE),"
    f" given AS ({GIVE_BACK} AND EXISTS (SELECT 1 FROM own) RETURNING id),"
    " done AS (SELECT procrastinate_retry_job_v2("
    "id, %(retry_at)s, %(new_priority)s, %(new_queue_name)s, %(new_lock)s) FROM own)"
    " SELECT (SELECT count(*) FROM done) > 0 AS retried, (SELECT count(*) FROM given) AS given"
)
_HOLD = "SELECT pg_advisory_lock(%s, (%s::bigint %% 2147483648)::int4)"
# the queue's entries a fetch would take now: waiting, due, the first of their lock (jobs
# of one collection share one) and held back by no running entry of it
_RUNNABLE = (
    "SELECT count(*) AS runnable FROM procrastinate_jobs j"
    " WHERE j.queue_name = %(queue)s AND j.status = 'todo'"
    " AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())"
    " AND (j.lock IS NULL OR NOT EXISTS (SELECT 1 FROM procrastinate_jobs d"
    "  WHERE d.lock = j.lock AND (d.status = 'doing' OR (d.status = 'todo' AND d.id < j.id))))"
)
_ABANDONED = (
    "SELECT id FROM procrastinate_jobs"
    " WHERE status = 'doing' AND queue_name = %s AND worker_id IS NULL"
    " FOR UPDATE SKIP LOCKED"
)
_RETRY = "SELECT procrastinate_retry_job_v2(%s, NULL, NULL, NULL, NULL)"
# of the entries named, those whose job's row another transaction holds (the rest locked)
_BUSY = (
    "WITH held AS (SELECT id FROM ingest_jobs WHERE queue_job_id = ANY(%(ids)s)"
    " FOR NO KEY UPDATE SKIP LOCKED)"
    " SELECT queue_job_id FROM ingest_jobs"
    " WHERE queue_job_id = ANY(%(ids)s) AND id NOT IN (SELECT id FROM held)"
)
_SHOW_QUEUED = (
    "UPDATE ingest_jobs SET status = 'queued', updated_at = now()"
    " WHERE status = 'running' AND queue_job_id = ANY(%s)"
)


async def hold_worker_lock(conn: AsyncConn, worker_id: int, tcp: dict[str, int]) -> None:
    """Take worker ``worker_id``'s liveness lock in ``conn``'s session (an autocommit
    connection of its own), held until that session ends.

    The session gets the server-side TCP settings ``tcp`` first (``db.jobs.SESSION_TCP``'s
    names), so one of a vanished machine ends and frees the lock; and no idle limit, as
    it is always idle: a server-wide ``idle_session_timeout`` would end it under a live
    worker (a statement or transaction limit has nothing to end)."""
    await conn.execute(KEEP_ALIVE, keep_alive_args(tcp))
    await conn.execute("SELECT set_config('idle_session_timeout', '0', false)")
    await conn.execute(_HOLD, (WORKER_LOCKS, worker_id))


async def ping(conn: AsyncConn) -> None:
    """One round trip on ``conn``: raises (``psycopg.Error``, ``OSError``) where the lock's
    session ended, so the caller takes the lock again."""
    await conn.execute("SELECT 1")


async def prune_dead_workers(connector: BaseConnector, seconds_since_heartbeat: float) -> list[int]:
    """Delete the workers silent for ``seconds_since_heartbeat`` whose lock is free (dead
    ones); their ids."""
    rows = await connector.execute_query_all_async(
        query=_PRUNE, seconds_since_heartbeat=seconds_since_heartbeat, space=WORKER_LOCKS
    )
    return [int(row["worker_id"]) for row in rows]


async def alive_workers(
    connector: BaseConnector, ids: list[int], seconds_since_heartbeat: float
) -> set[int]:
    """Of the workers ``ids``, those alive: holding their lock, or registered and not
    silent for ``seconds_since_heartbeat`` (counted from the server's start at the
    earliest)."""
    rows = await connector.execute_query_all_async(
        query=_ALIVE, ids=ids, space=WORKER_LOCKS, seconds_since_heartbeat=seconds_since_heartbeat
    )
    return {int(row["worker_id"]) for row in rows}


async def finish_own_entry(
    connector: BaseConnector, job_id: int | None, worker_id: int, status: str, delete_job: bool
) -> bool:
    """Finish queue entry ``job_id`` with ``status`` (deleted with ``delete_job``) only
    while worker ``worker_id`` runs it; whether it did."""
    row = await connector.execute_query_one_async(
        query=_FINISH_OWN,
        job_id=job_id,
        worker_id=worker_id,
        status=status,
        delete_job=delete_job,
    )
    return bool(row["finished"])


async def retry_stalled_entry(
    connector: BaseConnector, job_id: int | None, worker_id: int | None
) -> bool:
    """Put dead worker ``worker_id``'s entry ``job_id`` back and show its job ``queued``,
    only while the entry is still that worker's (or no worker's) running one; whether it
    did. Raises procrastinate's ``ConnectorException`` caused by
    ``psycopg.errors.LockNotAvailable`` where another transaction holds the job's row
    (nothing done)."""
    row = await connector.execute_query_one_async(
        query=_RETRY_STALLED, job_id=job_id, worker_id=worker_id
    )
    return bool(row["retried"])


async def retry_given_back(
    connector: BaseConnector,
    *,
    job_id: int | None,
    worker_id: int | None,
    retry_at: datetime.datetime,
    priority: int | None,
    queue: str | None,
    lock: str | None,
    ingest_job: int,
    attempt: int,
) -> tuple[bool, bool]:
    """Put this worker's entry ``job_id`` back for ``retry_at`` and give attempt
    ``attempt`` of job ``ingest_job`` back (``db.jobs.GIVE_BACK``), in one statement, only
    while the entry is still worker ``worker_id``'s (or no worker's): (put back, given
    back)."""
    row = await connector.execute_query_one_async(
        query=_RETRY_GIVEN_BACK,
        job_id=job_id,
        worker_id=worker_id,
        retry_at=retry_at,
        new_priority=priority,
        new_queue_name=queue,
        new_lock=lock,
        ingest_job=ingest_job,
        attempt=attempt,
    )
    return bool(row["retried"]), bool(row["given"])


async def runnable_entries(connector: BaseConnector, queue: str) -> int:
    """How many of ``queue``'s entries a fetch would take now: waiting, due, the first of
    their lock and held back by no running entry of it."""
    row = await connector.execute_query_one_async(query=_RUNNABLE, queue=queue)
    return int(row["runnable"])


def requeue_abandoned(conn: Conn, queue: str, stalled_after_s: float) -> list[int]:
    """In one transaction: prune the dead workers (as :func:`prune_dead_workers`), then
    put back ``queue``'s running entries left without a worker and show their jobs
    ``queued``; the entries put back.

    An entry whose job's row another transaction holds (a dead worker's still open) is
    left for a later call: waited on, the caller waited until the server noticed that
    worker's connection gone."""
    with conn.transaction():
        conn.execute(_PRUNE, {"seconds_since_heartbeat": stalled_after_s, "space": WORKER_LOCKS})
        ids = [int(row[0]) for row in conn.execute(_ABANDONED, (queue,)).fetchall()]
        if ids:
            busy = {int(row[0]) for row in conn.execute(_BUSY, {"ids": ids}).fetchall()}
            ids = [i for i in ids if i not in busy]
        for queue_id in ids:
            conn.execute(_RETRY, (queue_id,))
        if ids:
            conn.execute(_SHOW_QUEUED, (ids,))
    return ids
