"""Which workers are alive: a session advisory lock each, not the heartbeat alone.

procrastinate judges a worker by its heartbeat: one silent for ``stalled_after_s`` is
pruned and its jobs are put back on the queue. Silence is not death, though. A heartbeat
arrives late when the worker's event loop is held up (a C extension keeping the GIL
while the embedding model loads, a swapping machine, a busy database), and it is always
older than ``stalled_after_s`` when that is set below ``RAGSTORE_WORKER_HEARTBEAT_S``.
Then the live worker's job ran a second time, beside the first, and the pruned worker
failed on its next job (its row, which the job points at, was gone).

So every worker holds, from its registration until it unregisters, a session-level
advisory lock keyed by its worker id, on a connection of its own. PostgreSQL releases it
exactly when that session ends: the worker stopped, was killed, or its machine went
away (the session's TCP keepalives, set below from ``stalled_after_s``, end the session
of a machine that vanished). A worker whose heartbeat is stale is treated as dead only
when its lock can be taken too; a slow worker that still holds its lock keeps its row
and its jobs. A worker that lost its lock's session but lives on is covered by its
heartbeat still (either proof of life keeps its jobs), and its next heartbeat takes the
lock again.

The heartbeat is ours too (:meth:`LiveJobManager._beat`), from registration until the
worker unregisters, and a beat that cannot reach the database is tried again at the next
one. procrastinate's own beat is a side task of its loop that nothing watches (with no
periodic task its monitor returns at once): one beat that failed in an outage ended it
for the rest of the loop, and a loop that lost the database cancelled it while the jobs
in hand ran on. Either way the live worker fell silent with its lock free, and its job
was taken and run a second time beside it, an attempt counted toward ``worker_lost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import math
from collections.abc import Iterable
from typing import Any

import procrastinate
import psycopg
from procrastinate.jobs import Job
from procrastinate.jobs import Status as JobStatus
from procrastinate.manager import JobManager

from ragstore.db import queue as queue_sql
from ragstore.db.database import with_tcp

log = logging.getLogger("ragstore.jobs")

QUEUE = "ingest"  # the procrastinate queue of ragstore's jobs (re-exported by jobs.queue)

# a worker's lock key is the int4 pair (WORKER_LOCKS, its id); the statements that read
# and take it are db/queue.py's
WORKER_LOCKS = queue_sql.WORKER_LOCKS
# libpq's TCP settings of the lock's connection, where the URL sets none of its own: this
# end also notices a path gone silent, in about a minute (ignored on a Unix socket)
LOCK_TCP: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 15,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,
}
# what taking the lock's session can fail with (the server refuses or goes away, the
# worker is stopped meanwhile): the registration is undone, the error goes on
_SESSION_FAILED = (psycopg.Error, OSError, asyncio.CancelledError)


def with_lock_tcp(conninfo: str) -> str:
    """``conninfo`` with :data:`LOCK_TCP` where it does not set them itself (an
    operator's own values stand); libpq ignores them on a Unix socket."""
    return with_tcp(conninfo, LOCK_TCP)


class LiveJobManager(JobManager):
    """procrastinate's job manager, with a worker's liveness proven by its lock."""

    def __init__(
        self,
        connector: procrastinate.BaseConnector,
        conninfo: str,
        *,
        stalled_after_s: float,
        heartbeat_s: float | None = None,
    ) -> None:
        super().__init__(connector)
        self.conninfo = conninfo
        self.stalled_after_s = stalled_after_s
        self.heartbeat_s = heartbeat_s  # None: only procrastinate's loop beats
        self._held: dict[int, psycopg.AsyncConnection[Any]] = {}
        self._beats: dict[int, asyncio.Task[None]] = {}
        self._given_back: dict[int, tuple[int, int]] = {}  # queue entry: (job, attempt)

    def give_back(self, queue_job_id: int, job_id: int, attempt: int) -> None:
        """Attempt ``attempt`` of job ``job_id`` (run by queue entry ``queue_job_id``) was
        stopped by a schema change: its entry's retry, next (:meth:`retry_job`), gives the
        attempt back. Told from the task's thread before its exception reaches the loop."""
        self._given_back[queue_job_id] = (job_id, attempt)

    async def register_worker(self) -> int:
        worker_id = await super().register_worker()
        try:
            self._held[worker_id] = await self._hold(worker_id)
        except _SESSION_FAILED:
            await super().unregister_worker(worker_id)
            raise
        if self.heartbeat_s is not None:
            self._beats[worker_id] = asyncio.create_task(
                self._beat(worker_id, self.heartbeat_s), name=f"ragstore heartbeat {worker_id}"
            )
        return worker_id

    async def _beat(self, worker_id: int, every_s: float) -> None:
        """Beat every ``every_s`` until the worker unregisters, through outages too: a
        worker finishing its jobs after its loop lost the database is alive all the same."""
        while True:
            await asyncio.sleep(every_s)
            await self.update_heartbeat(worker_id)

    def session_tcp(self) -> dict[str, int]:
        """The server's TCP settings of the lock's session (``db.jobs.SESSION_TCP``'s
        names): a session of a vanished machine ends within ~2 x ``stalled_after_s``."""
        idle = max(1, math.ceil(self.stalled_after_s))
        return {
            "tcp_keepalives_idle": idle,
            "tcp_keepalives_interval": max(1, math.ceil(self.stalled_after_s / 3)),
            "tcp_keepalives_count": 3,
            # data unacknowledged this long (the lock's answer, a heartbeat's check): the
            # keepalives' bound too, under Linux (ms)
            "tcp_user_timeout": 2 * idle * 1000,
        }

    async def _hold(self, worker_id: int) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(with_lock_tcp(self.conninfo), autocommit=True)
        try:
            # both ends' TCP settings (ignored, and not needed, on a Unix socket), no
            # idle limit, then the lock
            await queue_sql.hold_worker_lock(conn, worker_id, self.session_tcp())
        except _SESSION_FAILED:
            await conn.close()
            raise
        return conn

    async def update_heartbeat(self, worker_id: int) -> None:
        """The heartbeat, and the worker's lock taken again if its session ended.

        A beat that cannot reach the database is logged, not raised: raised, it ended
        procrastinate's beat for the rest of its loop (see the module's text)."""
        try:
            await super().update_heartbeat(worker_id)
        except procrastinate.exceptions.ConnectorException as exc:
            log.warning(
                "worker %s: its heartbeat could not be written (%s); trying again",
                worker_id,
                exc.__cause__ or exc,
            )
        await self._keep_held(worker_id)

    async def _keep_held(self, worker_id: int) -> None:
        """Take the lock again when its session ended under the live worker.

        A database restart, or an administrator ending idle sessions, ends the lock's
        session while the worker lives on; never taken again, the lock stayed free for
        good, and the worker counted as dead whenever its heartbeat was late: its row
        pruned, its job run a second time beside it. One round trip a heartbeat finds out.
        """
        conn = self._held.get(worker_id)
        if conn is None:
            return
        try:
            await queue_sql.ping(conn)
            return
        except (psycopg.Error, OSError):
            await conn.close()
        try:
            fresh = await self._hold(worker_id)
        except (psycopg.Error, OSError) as exc:
            log.warning("worker %s: could not take its liveness lock again: %s", worker_id, exc)
            return
        if self._held.get(worker_id) is conn:
            self._held[worker_id] = fresh
            log.warning("worker %s: its liveness lock's session ended; lock taken again", worker_id)
        else:  # unregistered meanwhile: its lock goes with this session
            await fresh.close()

    async def unregister_worker(self, worker_id: int) -> None:
        beat = self._beats.pop(worker_id, None)
        if beat is not None:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        try:
            await super().unregister_worker(worker_id)
        finally:
            conn = self._held.pop(worker_id, None)
            if conn is not None:
                await conn.close()  # the session ends: its lock goes with it

    async def finish_job(self, job: Job, status: JobStatus, delete_job: bool) -> None:
        """Mark the queue entry finished only while this worker still runs it.

        A worker judged dead while it was cut off from the database (its entry put back
        and taken by another) finished its run all the same, and marking the entry then
        ended the other worker's run of it in the queue: ``failed`` had the job failed as
        ``outcome_not_recorded`` while it still ran, ``succeeded`` deleted the entry (the
        other's finish then raised). The entry is the other worker's to finish."""
        if job.worker_id is None:
            await super().finish_job(job, status, delete_job)
            return
        finished = await queue_sql.finish_own_entry(
            self.connector, job.id, job.worker_id, status.value, delete_job
        )
        if not finished:
            log.warning(
                "queue job %s: taken by another worker while worker %s ran it (judged dead "
                "while cut off from the database); its entry left to that worker",
                job.id,
                job.worker_id,
            )

    async def retry_job(
        self,
        job: Job,
        retry_at: datetime.datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        lock: str | None = None,
    ) -> None:
        """Put the entry back for a later run, as procrastinate does; after a run stopped
        by a schema change (:meth:`give_back`) its attempt is given back in the same
        statement (``db.jobs.GIVE_BACK``).

        Counted, the run the operator's ``db upgrade`` interrupted used up one of the job's
        ``RAGSTORE_WORKER_MAX_ATTEMPTS``: a job on its last attempt (every job, with 1) was
        failed ``worker_lost`` by the matching version's worker, never having failed.
        The old worker cannot write through its schema-checked connections any more; the
        queue's statement (the entry's retry, which it must write) says it, with columns
        every revision has."""
        given = self._given_back.pop(job.id, None) if job.id is not None else None
        if given is None:
            await super().retry_job(job, retry_at, priority, queue, lock)
            return
        job_id, attempt = given
        retried, given_back = await queue_sql.retry_given_back(
            self.connector,
            job_id=job.id,
            worker_id=job.worker_id,
            retry_at=retry_at or datetime.datetime.now(datetime.UTC),
            priority=priority,
            queue=queue,
            lock=lock,
            ingest_job=job_id,
            attempt=attempt,
        )
        if not retried:
            log.warning(
                "queue job %s: taken by another worker while worker %s ran it (judged dead "
                "while cut off from the database); its entry left to that worker",
                job.id,
                job.worker_id,
            )
        elif given_back:
            log.info("job %s: attempt %d given back (stopped by a schema change)", job_id, attempt)

    async def retry_stalled_job(self, job: Job) -> bool | None:
        """Put a dead worker's entry back on the queue; False where another party did
        first, None where the job's row is held by another transaction (nothing done
        either way: the next round tries again).

        The dead worker's transaction writing the job's documents holds the job's row
        until it ends (``db.jobs.hold_current``), and a worker whose machine vanished
        mid-commit left it open until the server noticed (TCP keepalives: minutes, or
        hours). The statement showing the job ``queued`` waited on it all that while,
        and the watcher with it: no other dead worker's job was put back meanwhile. It
        is left for a later round now (that transaction may yet commit, or end).

        Between listing a dead worker's entries and putting them back, another worker or
        a job read (``requeue_abandoned``) may put one back: procrastinate's retry then
        raised "invalid status", which the worker took for the database gone away (its
        loop restarted, the round's other entries left). Worse, where a worker had taken
        the entry again meanwhile, the retry put back a live worker's entry, for a third
        run of the job beside it.

        The job is shown ``queued`` again, as :func:`requeue_abandoned` shows it: left
        ``running``, it said a worker ran it while it waited for one (for good, with no
        worker left to take it)."""
        try:
            return await queue_sql.retry_stalled_entry(self.connector, job.id, job.worker_id)
        except procrastinate.exceptions.ConnectorException as exc:
            if isinstance(exc.__cause__, psycopg.errors.LockNotAvailable):
                return None
            raise

    async def prune_stalled_workers(self, seconds_since_heartbeat: float) -> list[int]:
        """Delete the workers whose heartbeat is stale and whose lock is free (dead ones)."""
        return await queue_sql.prune_dead_workers(self.connector, seconds_since_heartbeat)

    async def get_stalled_jobs(
        self,
        nb_seconds: int | None = None,
        queue: str | None = None,
        task_name: str | None = None,
        seconds_since_heartbeat: float = 30,
    ) -> Iterable[Job]:
        """Running jobs of workers that are silent and whose lock is free: dead ones."""
        jobs = list(
            await super().get_stalled_jobs(
                nb_seconds,
                queue=queue,
                task_name=task_name,
                seconds_since_heartbeat=seconds_since_heartbeat,
            )
        )
        ids = sorted({j.worker_id for j in jobs if j.worker_id is not None})
        if not ids:
            return jobs
        alive = await queue_sql.alive_workers(self.connector, ids, seconds_since_heartbeat)
        for j in jobs:
            if j.worker_id in alive:
                log.info(
                    "job %s: its worker %s is silent but alive (it holds its lock, "
                    "or the database started again too recently to tell); "
                    "not retrying it",
                    j.id,
                    j.worker_id,
                )
        return [j for j in jobs if j.worker_id not in alive]


def requeue_abandoned(
    conn: psycopg.Connection[Any], queue: str, stalled_after_s: float
) -> list[int]:
    """Put back on the queue the jobs of dead workers, as a worker's stalled check does;
    the queue ids put back, their jobs shown ``queued`` again.

    Only workers ran that check, so with none running (all killed, or stopped for good) a
    job whose worker died stayed ``running`` for good in ``GET /v1/jobs/{id}`` and
    ``ragstore jobs list``, for a client polling it to wait on. The API runs this when it
    reads an unfinished job: the job says ``queued``, waiting for a worker, which is true,
    and the next worker runs it (its start counts the attempt, as after any dead worker).
    The same judgement as the workers' (a silent worker whose lock is free): a live one
    keeps its job."""
    # a job whose row a dead worker's open transaction holds is left for a later read or
    # check (see LiveJobManager.retry_stalled_job): waited on, the read answered nothing
    # until the server noticed that worker's connection gone
    ids = queue_sql.requeue_abandoned(conn, queue, stalled_after_s)
    for queue_id in ids:
        log.warning("queue job %s: its worker stopped; put back on the queue", queue_id)
    return ids
