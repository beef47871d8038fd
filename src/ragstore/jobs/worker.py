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
import logging

import procrastinate

from ragstore.config import Settings
from ragstore.jobs.liveness import LiveJobManager
from ragstore.jobs.queue import QUEUE, build_queue
from ragstore.observability.logging import get_logger
from ragstore.runtime import Runtime

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
        log.warning("job %s: its worker stopped; retrying it", job.id)
        await app.job_manager.retry_job(job)
        assert job.id is not None
        ids.append(job.id)
    return ids


async def _watch_stalled(app: procrastinate.App, settings: Settings) -> None:
    # every heartbeat, or every stalled_after_s when that is shorter: a dead worker's job
    # waits at most about stalled_after_s plus one period, and a check never runs in step
    # with the beat (same period, same start), where it would see only fresh heartbeats
    every = min(settings.worker_heartbeat_s, settings.worker_stalled_after_s)
    while True:
        await asyncio.sleep(every)
        try:
            await retry_stalled(app, settings.worker_stalled_after_s)
        except procrastinate.exceptions.ProcrastinateException as exc:
            log.warning("could not check for stalled jobs: %s", exc)


async def _run(
    settings: Settings, *, concurrency: int, burst: bool, name: str | None, signals: bool
) -> None:
    with Runtime(settings) as rt:
        db = rt.db  # checks the server and the schema before taking any job
        app = build_queue(db.conninfo, runtime=rt)
        app.job_manager = LiveJobManager(
            app.connector, db.conninfo, stalled_after_s=settings.worker_stalled_after_s
        )
        async with app.open_async():
            events.info(
                "worker started",
                worker=name or "ragstore-worker",
                concurrency=concurrency,
                burst=burst,
            )
            await retry_stalled(app, settings.worker_stalled_after_s)
            watcher = asyncio.create_task(_watch_stalled(app, settings))
            try:
                await app.run_worker_async(
                    queues=[QUEUE],
                    concurrency=concurrency,
                    wait=not burst,
                    name=name or "ragstore-worker",
                    delete_jobs="successful",
                    update_heartbeat_interval=settings.worker_heartbeat_s,
                    stalled_worker_timeout=settings.worker_stalled_after_s,
                    fetch_job_polling_interval=min(5.0, settings.worker_heartbeat_s),
                    install_signal_handlers=signals,
                )
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
                events.info("worker stopped", worker=name or "ragstore-worker")


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
