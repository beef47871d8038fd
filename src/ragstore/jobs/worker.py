"""``ragstore worker``: run ingest jobs from the queue until stopped.

Besides procrastinate's own worker loop, each worker looks for jobs whose worker stopped
(killed, crashed, its machine gone) and puts them back on the queue, so a dead worker's
job is retried by another and never lost. A worker counts as stopped when its heartbeat
is stale and the advisory lock it holds while alive is free (``jobs.liveness``): a slow
live worker keeps its job.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import nullcontext
from typing import Any

import procrastinate
import procrastinate.signals
import psycopg_pool

from ragstore.config import Settings
from ragstore.db import queue as queue_sql
from ragstore.db.database import Database
from ragstore.db.jobs import (
    PRUNE_FINISHED,
    RECONCILE_ARGS,
    RECONCILE_LOST,
    RETENTION_BATCH,
    prune_args,
)
from ragstore.errors import (
    DatabaseUnavailableError,
    ReadOnlyError,
    SchemaMismatchError,
)
from ragstore.jobs.liveness import LiveJobManager
from ragstore.jobs.queue import QUEUE, build_queue, queue_pool
from ragstore.observability.logging import get_logger
from ragstore.runtime import Runtime
from ragstore.uploads import staging

log = logging.getLogger("ragstore.jobs")
events = get_logger("ragstore.jobs")  # structured fields; rendered as the API's lines are


async def retry_stalled(app: procrastinate.App, stalled_after_s: float) -> list[int]:
    """Put jobs of dead workers (silent for ``stalled_after_s``, their lock free) back on
    the queue; their ids."""
    await app.job_manager.prune_stalled_workers(stalled_after_s)
    stalled = await app.job_manager.get_stalled_jobs(
        queue=QUEUE, seconds_since_heartbeat=stalled_after_s
    )
    ids = []
    for job in stalled:
        assert job.id is not None
        if isinstance(app.job_manager, LiveJobManager):
            retried = await app.job_manager.retry_stalled_job(job)
            if retried is None:
                log.warning(
                    "job %s: its worker stopped; its job's row is still held by a "
                    "transaction of that worker's (not yet seen gone by the database): "
                    "put back at a later check",
                    job.id,
                )
                continue
            if not retried:
                log.info("job %s: its worker stopped; already put back by another", job.id)
                continue
        else:
            await app.job_manager.retry_job(job)
        log.warning("job %s: its worker stopped; retrying it", job.id)
        ids.append(job.id)
    await fail_lost(app)
    return ids


async def fail_lost(app: procrastinate.App) -> list[int]:
    """Fail the jobs whose outcome was never recorded and that no worker runs again
    (``db.jobs.reconcile_lost``); their ids. Without it such a job stayed ``running``
    for good and a client polling it waited forever."""
    rows = await app.connector.execute_query_all_async(query=RECONCILE_LOST, **RECONCILE_ARGS)
    ids = [int(row["job_id"]) for row in rows]
    for job_id in ids:
        log.error(
            "job %s: its outcome was never recorded and the queue does not run it again; "
            "recorded it failed (%s)",
            job_id,
            RECONCILE_ARGS["code"],
        )
    return ids


RETENTION_EVERY_S = 3600.0  # finished jobs are swept at a worker's start, then this often
RETENTION_RETRY_S = 300.0  # ... or this soon after a sweep that could not reach the database
RETENTION_BATCHES = 20  # batches a sweep deletes at most; more left: swept again next round


class Retention:
    """When a worker next deletes the finished jobs past ``RAGSTORE_JOB_RETENTION_DAYS``
    (:func:`prune_finished`): at its start, then at most every :data:`RETENTION_EVERY_S`.
    Every worker sweeps; two sweeping at once skip each other's rows.

    A sweep deletes at most :data:`RETENTION_BATCHES` batches, and one that stopped there
    is due again at the watcher's next round: the first sweep after an upgrade (every job
    ever finished) held up neither the worker's start nor its stalled-job checks."""

    def __init__(self, retention_days: float) -> None:
        self.retention_days = retention_days
        self.next_at = time.monotonic()  # due at once

    def due(self) -> bool:
        return self.retention_days > 0 and time.monotonic() >= self.next_at

    async def sweep(self, app: procrastinate.App, stop: asyncio.Event | None = None) -> int:
        """Sweep where due (see :meth:`due`); how many jobs were deleted. A database that
        cannot be reached is logged and tried again sooner, never raised: the sweep is
        housekeeping, and the worker's jobs go first."""
        if not self.due():
            return 0
        self.next_at = time.monotonic() + RETENTION_EVERY_S
        try:
            deleted = await prune_finished(
                app, self.retention_days, stop, max_batches=RETENTION_BATCHES
            )
        except procrastinate.exceptions.ProcrastinateException as exc:
            self.next_at = time.monotonic() + RETENTION_RETRY_S
            log.warning(
                "could not delete the finished jobs older than %g days: %s; trying again in %.0f s",
                self.retention_days,
                exc.__cause__ or exc,
                RETENTION_RETRY_S,
            )
            return 0
        if deleted >= RETENTION_BATCH * RETENTION_BATCHES:
            self.next_at = time.monotonic()  # perhaps more: the next round goes on
        return deleted


async def prune_finished(
    app: procrastinate.App,
    retention_days: float,
    stop: asyncio.Event | None = None,
    *,
    batch: int = RETENTION_BATCH,
    max_batches: int | None = None,
) -> int:
    """Delete the jobs finished over ``retention_days`` ago (``db.jobs.prune_finished``),
    a ``batch`` (:data:`RETENTION_BATCH`) a statement until one deletes fewer (or ``stop``
    is set, or ``max_batches`` ran); how many. Each statement is its own transaction: no
    lock is held for long, and a sweep stopped midway leaves the rest for the next."""
    total = 0
    for done in itertools.count(1):
        row = await app.connector.execute_query_one_async(
            query=PRUNE_FINISHED, **prune_args(retention_days, batch)
        )
        deleted = int(row["deleted"])
        total += deleted
        if deleted < batch or (stop is not None and stop.is_set()):
            break
        if max_batches is not None and done >= max_batches:
            break
    if total:
        events.info("finished jobs deleted", deleted=total, retention_days=retention_days)
    return total


async def _watch_stalled(
    app: procrastinate.App,
    settings: Settings,
    stop: asyncio.Event,
    retention: Retention | None = None,
    schema: Callable[[], None] | None = None,
) -> None:
    """Retry dead workers' jobs every period until ``stop`` is set.

    The watcher ends by being asked, not by being cancelled: on Python 3.11 a cancellation
    that lands just as a pool connection is handed over is swallowed inside psycopg_pool
    (``asyncio.wait_for``'s race, fixed in 3.12), and a watcher that lost its
    cancellation polled forever and held a burst worker open after its queue was empty.
    A round in progress runs to its end (two short statements), then the loop sees ``stop``.
    With ``schema``, each round also looks at the schema revision (in a thread: the
    check is synchronous), so an idle worker sees a ``db upgrade`` too (:func:`_run`).
    """
    # every heartbeat, or every stalled_after_s when that is shorter: a dead worker's job
    # waits at most about stalled_after_s plus one period, and a check never runs in step
    # with the beat (same period, same start), where it would see only fresh heartbeats
    every = min(settings.worker_heartbeat_s, settings.worker_stalled_after_s)
    # the finished jobs are swept on the same rounds, where due (:class:`Retention`)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while True:
            await asyncio.wait({stopped}, timeout=every)
            if stop.is_set():
                return
            try:
                await retry_stalled(app, settings.worker_stalled_after_s)
            except procrastinate.exceptions.ProcrastinateException as exc:
                log.warning("could not check for stalled jobs: %s", exc)
            if retention is not None:
                await retention.sweep(app, stop)
            if schema is not None:
                await asyncio.to_thread(schema)
    finally:
        stopped.cancel()


@contextlib.asynccontextmanager
async def watching_stalled(
    app: procrastinate.App,
    settings: Settings,
    retention: Retention | None = None,
    schema: Callable[[], None] | None = None,
) -> AsyncIterator[None]:
    """Retry dead workers' jobs in the background for as long as the block runs (and,
    with ``retention``, delete the finished jobs past their age where due; with
    ``schema``, call it each round: it looks at the schema revision).

    On leaving, the watcher is asked to stop and awaited: it ends within one round.
    """
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_stalled(app, settings, stop, retention, schema))
    try:
        yield
    finally:
        stop.set()
        await watcher


@contextlib.contextmanager
def serving_metrics(
    settings: Settings,
    runtime: Runtime | None = None,
    queue: Callable[[], procrastinate.App | None] | None = None,
) -> Iterator[int | None]:
    """Serve this worker's Prometheus metrics on ``RAGSTORE_WORKER_METRICS_PORT`` (none
    when unset) for as long as the block runs; the port bound (a given 0 picks a free one).
    Each scrape first copies ``runtime``'s pool figures into the pool metrics, as the
    API's /metrics does for its own: nothing else in a worker updates them, and gauges
    left at zero read as an idle pool while the worker's jobs queued for a connection.
    ``queue`` gives the job queue's app (None before it is built): its own pool's figures
    are served too (``ragstore_job_queue_pool_*``, while the app is open).

    A worker counts the ingest and model calls of the jobs it runs in its own process:
    without a port of its own they reached a scrape only through a multiprocess folder
    shared with the server on one host, and a worker of its own container (the compose
    file's) was invisible to the ingest dashboards. The port is bound before anything
    else, so one in use stops the worker (a ``ConfigError``) before it takes a job; it
    closes when the worker stops (SIGTERM drains the jobs first, then the block ends)."""
    port = settings.worker_metrics_port
    if port is None:
        yield None
        return
    from ragstore.observability.metrics import (
        JobQueuePoolMetrics,
        bound_on_loopback,
        serve_process_metrics,
        sync_runtime,
    )

    host = settings.worker_metrics_host
    sync = None if runtime is None else functools.partial(sync_runtime, runtime)
    extra = () if queue is None else (JobQueuePoolMetrics(lambda: queue_pool(queue())),)
    server, thread = serve_process_metrics(host, port, sync=sync, extra=extra)
    bound = int(server.server_address[1])
    if not bound_on_loopback(server):
        # no API key guards it (it reads no database, so it has none to check): the same
        # figures the API's /metrics gives only to a key of scope metrics
        log.warning(
            "worker metrics on %s:%d are served without authentication to every host that "
            "reaches that address: keep it on a private network (a compose network, a "
            "firewall), or bind 127.0.0.1 (the default)",
            host,
            bound,
        )
    from ragstore.observability.metrics import MULTIPROC_ENV, multiprocess_dir

    if multiprocess_dir():
        # the port serves every process of the folder, as the server's /metrics does: a
        # folder shared with the server is in both scrapes, and a sum over them doubles
        log.warning(
            "worker metrics on port %d merge every process of %s=%s: if the API server "
            "shares that folder, its /metrics already counts this worker; scrape one of the "
            "two (or give the worker a folder of its own), or sums over both count its "
            "jobs twice",
            bound,
            MULTIPROC_ENV,
            multiprocess_dir(),
        )
    events.info("worker metrics served", host=host, port=bound)
    try:
        yield bound
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def _run(
    settings: Settings, *, concurrency: int, burst: bool, name: str | None, signals: bool
) -> None:
    # before any job is taken: a worker that cannot stage a job's files failed each job
    staging.check_writable(settings)
    # the runtime opens nothing before rt.db: the port is still bound before anything else
    built: list[procrastinate.App] = []  # the queue's app, once built (its pool's figures)
    with (
        Runtime(settings) as rt,
        serving_metrics(settings, rt, lambda: next(iter(built), None)),
        contextlib.ExitStack() as stops,
    ):
        db = rt.db  # checks the server and the schema before taking any job
        if rt.read_only:
            # a worker writes (its registration, every job): on a standby procrastinate's
            # first statement failed with a ConnectorException and a traceback
            raise ReadOnlyError(
                f"{db.where} is a hot standby (read-only); a worker stores documents: point "
                "RAGSTORE_DATABASE_URL at the primary"
            )
        # files a killed worker or server left: at once, then every minute until the worker
        # stops (as the API server does). Swept at the start only, a machine running only
        # workers kept a killed worker's staged files, the uploaded text, until a restart
        sweeper = staging.Sweeper(settings)
        sweeper.start()
        stops.callback(sweeper.stop)
        stopping = asyncio.Event()
        changed: list[SchemaMismatchError] = []
        running_loop = asyncio.get_running_loop()

        def schema_changed(error: SchemaMismatchError) -> None:
            """The schema is no longer this code's: stop taking jobs (those running finish
            or go back to the queue), then exit with ``schema_mismatch`` (below). Told
            from a job's thread, or the watcher's."""
            changed.append(error)
            running_loop.call_soon_threadsafe(stopping.set)

        def mismatch() -> SchemaMismatchError | None:
            """The schema's revision, looked at where due (``Database.guard_schema``):
            what it is and what this code needs where they differ. A database away is the
            worker loop's to notice, not this."""
            try:
                with db.connection(wait_s=1.0):
                    return None
            except SchemaMismatchError as exc:
                return exc
            except (DatabaseUnavailableError, psycopg_pool.PoolTimeout):
                return None  # down or busy: the loop's to notice; anything else surfaces

        def look_at_schema() -> None:
            """An idle worker left running through ``db upgrade`` stops too, not at its
            next job (the watcher's rounds)."""
            error = mismatch()
            if error is not None:
                schema_changed(error)

        app = build_queue(db.tcp_conninfo, runtime=rt, on_schema_changed=schema_changed)
        built.append(app)
        app.job_manager = LiveJobManager(
            app.connector,
            db.conninfo,
            stalled_after_s=settings.worker_stalled_after_s,
            heartbeat_s=settings.worker_heartbeat_s,
        )
        worker = name or "ragstore-worker"
        on_stop = procrastinate.signals.on_stop(stopping.set) if signals else nullcontext()
        async with app.open_async():
            events.info("worker started", worker=worker, concurrency=concurrency, burst=burst)
            try:
                with on_stop:
                    restarts = Restarts()
                    retention = Retention(settings.job_retention_days)
                    while not stopping.is_set():
                        loop = functools.partial(
                            app.run_worker_async,
                            queues=[QUEUE],
                            concurrency=concurrency,
                            wait=not burst,
                            name=worker,
                            delete_jobs="successful",
                            update_heartbeat_interval=settings.worker_heartbeat_s,
                            stalled_worker_timeout=settings.worker_stalled_after_s,
                            fetch_job_polling_interval=min(5.0, settings.worker_heartbeat_s),
                            install_signal_handlers=False,  # ours: they outlive one loop
                        )
                        if await _work_until_lost(
                            app,
                            settings,
                            loop,
                            stopping,
                            burst=burst,
                            restarts=restarts,
                            retention=retention,
                            schema=look_at_schema,
                        ):
                            if not burst or not await _runnable_left(app, stopping):
                                break
                            continue
                        await _until_database_answers(db, stopping)
                # a job whose outcome could not be recorded ended just now, perhaps
                # the last one of a burst: failed here, not at the next worker's start
                try:
                    await fail_lost(app)
                except procrastinate.exceptions.ProcrastinateException as exc:
                    log.warning("could not check for jobs left unfinished: %s", exc)
            finally:
                events.info("worker stopped", worker=worker)
        if changed:
            # taking each job and handing it back every few seconds for good, with an
            # error line each time, helped nobody: this worker's code cannot work on this
            # schema. Its exit (69, schema_mismatch) tells a supervisor and an operator so;
            # started again on the version that matches, a worker runs the jobs waiting.
            # Worded afresh: a job's error also says how far its ingest got
            error = await asyncio.to_thread(mismatch) or changed[0]
            raise SchemaMismatchError(
                f"{error.message}; this worker stopped taking jobs (the queued ones wait, "
                "and a job it was running went back to the queue): start the worker of the "
                "ragstore version that matches the database's schema"
            ) from error


def _cancelled_from_outside() -> bool:
    """Whether this task is being cancelled (by the code running the worker), not only
    the loop it awaits.

    ``_work_until_lost`` took every ``CancelledError`` for the end of procrastinate's loop
    after its own cancel: a cancellation of the task running the worker (a worker
    embedded in code that stops it, ``run_worker(signals=False)`` off the main thread)
    was swallowed, and the worker went on to close its database pool while the loop, never
    cancelled, still ran jobs."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _stop_loop(running: asyncio.Task[None]) -> None:
    """Stop procrastinate's loop as a stop does (one cancel: the jobs in progress finish,
    its worker row goes) and wait until it ended. A further cancellation of this task
    while it waits is passed on to the loop (procrastinate then stops at once)."""
    if running.done():
        return
    if not running.cancelling():
        running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


BURST_AGAIN_S = 0.1  # a burst worker's pause before its loop runs again for jobs left


async def _runnable_left(app: procrastinate.App, stopping: asyncio.Event) -> bool:
    """Whether a burst worker's loop, just ended, left entries it can run now (then after
    a short pause, unless a stop was asked meanwhile): the loop is to run again.

    procrastinate's burst loop stops at the first fetch that finds nothing, while the
    worker's other slots still run their jobs: a job queued behind one of its collection
    (their shared lock) was not fetchable then, and ``ragstore worker --burst
    --concurrency 2`` exited with it still queued, waiting for a next worker that a cron
    job's burst or a CI run never starts. An empty queue costs one statement, no pause.
    An entry handed back for later (a busy start, ``jobs.queue``) is not waited for: its
    row may be held for minutes, and the burst ends as it did; a database that cannot be
    read ends it too."""
    try:
        left = await queue_sql.runnable_entries(app.connector, QUEUE)
    except procrastinate.exceptions.ProcrastinateException as exc:
        log.warning("could not check the queue for jobs left: %s", exc.__cause__ or exc)
        return False
    if not left:
        return False
    log.info("worker: %d queued jobs became runnable during the burst; running them", left)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=BURST_AGAIN_S)
    return not stopping.is_set()


async def _work_until_lost(
    app: procrastinate.App,
    settings: Settings,
    loop: Callable[[], Coroutine[Any, Any, None]],
    stopping: asyncio.Event,
    *,
    burst: bool = False,
    restarts: Restarts | None = None,
    retention: Retention | None = None,
    schema: Callable[[], None] | None = None,
) -> bool:
    """Run procrastinate's worker ``loop`` until it ends (True: stopped, or a burst's queue
    is empty) or the database goes away under it (False: start it again once it answers).

    procrastinate's loop raises on the first statement that fails to reach the database,
    and ``ragstore worker`` exited with it: a restart or failover of the database stopped
    every worker for good, and queued jobs, accepted with 202, waited for an operator.
    A stop (SIGINT/SIGTERM) cancels the loop, which procrastinate takes as a graceful stop:
    the jobs in progress finish first. A cancellation of the task running this stops the
    loop the same way, waits for it, and then goes on (``CancelledError``).

    procrastinate's loop also ends, normally, when it stops itself: its side-task monitor
    stops the worker when one of its side tasks (the job listener, a beat) raises. Taken
    for a stop, that ended ``ragstore worker`` with exit status 0 for good, and queued
    jobs waited for an operator; such an end, unasked and not a burst's, starts the loop
    again after a pause (False), longer each time it ends so in a row (``restarts``)."""
    restarts = restarts or Restarts()
    restarts.begin()
    try:
        await retry_stalled(app, settings.worker_stalled_after_s)
        if retention is not None:
            # at the start (a burst worker may end before the watcher's first round), then
            # on the watcher's rounds
            await retention.sweep(app, stopping)
        async with watching_stalled(app, settings, retention, schema):
            running = asyncio.create_task(loop())
            stopped = asyncio.ensure_future(stopping.wait())
            try:
                await asyncio.wait({running, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not running.done():
                    running.cancel()
                # shielded: a cancellation of this task while the loop finishes its jobs
                # is not a second one of the loop, which would end its stop midway
                await asyncio.shield(running)
            except asyncio.CancelledError:
                if _cancelled_from_outside():
                    await _stop_loop(running)
                    raise
                return True  # the loop's own end after our cancel: a stop
            finally:
                stopped.cancel()
    except procrastinate.exceptions.ConnectorException as exc:
        if stopping.is_set():
            return True  # lost while stopping: nothing is left to finish
        log.warning(
            "worker: the database went away (%s); working again once it answers",
            exc.__cause__ or exc,
        )
        return False
    if stopping.is_set() or burst:
        return True
    pause = restarts.pause()
    log.error(
        "worker: procrastinate's worker loop ended though no stop was asked (a side task "
        "failed: see the lines above); starting it again in %.0f s",
        pause,
    )
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=pause)
    return stopping.is_set()


RESTART_EVERY_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)  # pauses before each start again, then the last
RESTART_RESET_S = 300.0  # a loop that ran this long before it ended starts the pauses over


class Restarts:
    """The pauses before starting procrastinate's loop again after it ended unasked.

    The pause was always one second: a side task that fails every time (a listener the
    database refuses, say) started the loop again about once a second for good, with an
    error line (and its traceback above) each time. It now grows with each end in a row,
    up to a minute, and starts over after a loop that ran a while."""

    def __init__(self) -> None:
        self.count = 0
        self.started = time.monotonic()

    def begin(self) -> None:
        """The loop starts (again) now."""
        self.started = time.monotonic()

    def pause(self) -> float:
        """How long to wait after the loop that began last ended unasked."""
        if time.monotonic() - self.started >= RESTART_RESET_S:
            self.count = 0
        wait = RESTART_EVERY_S[min(self.count, len(RESTART_EVERY_S) - 1)]
        self.count += 1
        return wait


RECONNECT_EVERY_S = (1.0, 2.0, 5.0)  # waits between probes of a lost database, then the last


async def _until_database_answers(db: Database, stopping: asyncio.Event) -> None:
    """Wait until a fresh connection opens (an embedded server is started again), or a stop."""
    for attempt in itertools.count():
        if stopping.is_set() or await asyncio.to_thread(db.probe):
            return
        wait = RECONNECT_EVERY_S[min(attempt, len(RECONNECT_EVERY_S) - 1)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=wait)


def run_worker(
    settings: Settings,
    *,
    concurrency: int = 1,
    burst: bool = False,
    name: str | None = None,
    signals: bool = True,
) -> None:
    """Work until SIGINT/SIGTERM (or, with ``burst``, until the queue is empty).

    ``signals=False`` leaves signal handling alone (for a worker run off the main thread).
    """
    asyncio.run(_run(settings, concurrency=concurrency, burst=burst, name=name, signals=signals))
