"""A worker run as a task of other code (``run_worker(signals=False)``'s coroutine, a
worker embedded in an application) stops when that task is cancelled: as a SIGTERM stops
it (the job in progress finishes), and then the cancellation goes on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from ragstore import Client
from ragstore.config import Settings
from ragstore.jobs import queue as queue_module
from ragstore.jobs import worker as worker_module
from tests.api.conftest import with_

WAIT_S = 60.0  # a bound on each wait below, not a pace


@pytest.fixture(scope="module")
def api(open_url: str) -> Iterator[Client]:
    with Client(open_url) as c:
        yield c


class _Seen(logging.Handler):
    """Sets ``event`` on the first record whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__(logging.INFO)
        self.prefix = prefix
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(self.prefix):
            self.event.set()


def test_a_cancelled_worker_task_finishes_its_job_stops_its_loop_and_stays_cancelled(
    api: Client,
    settings: Settings,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The cancellation of the task running the worker was taken for the end of
    procrastinate's loop after the worker's own stop: it was swallowed (the task ended
    normally, not cancelled), and the worker closed its database pool while the loop,
    never stopped, still ran the job it had taken and went on taking others."""
    jobs_settings = with_(settings, worker_heartbeat_s=0.5, worker_stalled_after_s=2.0)
    api.create_collection("cancelled")
    job = api.upload("cancelled", [("c.md", b"# C\n\ncancelled worker text")], background=True)

    taken = threading.Event()
    # procrastinate's stop began: it waits for the job in progress (released only then,
    # so the job is the one running when the cancellation comes)
    stop_began = _Seen("Waiting for job to finish")
    caplog.set_level(logging.INFO, logger="procrastinate.worker")
    logging.getLogger("procrastinate.worker").addHandler(stop_began)
    real_run_job = queue_module.run_job

    def held_run_job(*args: Any, **kwargs: Any) -> Any:
        taken.set()
        stop_began.event.wait(WAIT_S)
        return real_run_job(*args, **kwargs)

    monkeypatch.setattr(queue_module, "run_job", held_run_job)

    async def scenario() -> tuple[bool, list[asyncio.Task[Any]]]:
        task = asyncio.create_task(
            worker_module._run(
                jobs_settings, concurrency=1, burst=False, name="cancelled", signals=False
            )
        )
        assert await asyncio.to_thread(taken.wait, WAIT_S), "the worker took no job"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), timeout=WAIT_S)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        return task.cancelled(), left

    try:
        cancelled, left = asyncio.run(scenario())
    finally:
        logging.getLogger("procrastinate.worker").removeHandler(stop_began)
    assert stop_began.event.is_set(), "procrastinate's loop was never stopped"
    assert cancelled, "the cancellation of the worker's task was swallowed"
    assert left == [], f"tasks still running after the worker ended: {left}"
    done = api.get_job(job["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
    with psycopg.connect(database_url) as conn:
        doing = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'"
        ).fetchone()
        workers = conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()
    assert doing == (0,) and workers == (0,), (doing, workers)
