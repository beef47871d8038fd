"""The procrastinate app: one task, ``ragstore.ingest``, on queue ``ingest``.

The API defers with a synchronous connector; ``ragstore worker`` runs an asynchronous
one. Jobs on one collection share a procrastinate lock, so they run one at a time even
with many workers (two workers never write the same document at once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import procrastinate

from ragstore.errors import SchemaMismatchError
from ragstore.jobs.liveness import QUEUE as QUEUE  # defined there, a leaf the readers import
from ragstore.jobs.liveness import LiveJobManager
from ragstore.jobs.runner import JobBusy, SchemaChanged, run_job
from ragstore.runtime import Runtime

INGEST_TASK = "ragstore.ingest"

BUSY_RETRY_S = 5  # a job whose row an earlier attempt's transaction holds: again this late

# only a busy start is retried by the queue: the job was not started (:class:`JobBusy`), and
# its entry goes back to wait, for any worker, rather than fail (a failed entry fails the
# job as outcome_not_recorded) or hold this worker until the other transaction ends
BUSY_RETRY = procrastinate.RetryStrategy(wait=BUSY_RETRY_S, retry_exceptions=[JobBusy])


def collection_lock(collection: str) -> str:
    return f"ragstore-collection:{collection}"


def build_queue(
    conninfo: str,
    *,
    runtime: Runtime | None = None,
    sync: bool = False,
    on_schema_changed: Callable[[SchemaMismatchError], None] | None = None,
) -> procrastinate.App:
    """A procrastinate app on ``conninfo``; with ``runtime`` it can also run the task.

    ``on_schema_changed`` is told (from the task's thread) when a job went back to the
    queue because the schema changed under this code (:class:`SchemaChanged`): a worker
    stops taking jobs then, where it took each back in turn every few seconds for good."""
    connector: procrastinate.BaseConnector
    if sync:
        connector = procrastinate.SyncPsycopgConnector(conninfo=conninfo, min_size=0, max_size=4)
    else:
        connector = procrastinate.PsycopgConnector(conninfo=conninfo, min_size=1, max_size=4)
    app = procrastinate.App(connector=connector)

    @app.task(name=INGEST_TASK, queue=QUEUE, pass_context=True, retry=BUSY_RETRY)
    def ingest(context: procrastinate.JobContext, job_id: int) -> None:
        if runtime is None:
            raise RuntimeError("this queue app was built to defer jobs, not to run them")
        try:
            run_job(runtime, job_id, queue_job_id=context.job.id)
        except SchemaChanged as exc:
            manager = app.job_manager
            entry = context.job.id
            if (
                exc.attempt is not None
                and entry is not None
                and isinstance(manager, LiveJobManager)
            ):
                # its entry's retry, next, gives the run's attempt back
                manager.give_back(entry, job_id, exc.attempt)
            if on_schema_changed is not None:
                on_schema_changed(exc.error)
            raise

    return app


def queue_pool(app: procrastinate.App | None) -> Any:
    """The connection pool of ``app``'s connector while the app is open, else None: what
    its public ``pool`` gives (a psycopg pool), for its figures alone. Both connectors:
    a worker's asynchronous one and the API's synchronous one (it defers jobs on it)."""
    connector = None if app is None else app.connector
    if not isinstance(
        connector, procrastinate.PsycopgConnector | procrastinate.SyncPsycopgConnector
    ):
        return None
    try:
        return connector.pool
    except procrastinate.exceptions.AppNotOpen:  # not opened yet, or closed
        return None
