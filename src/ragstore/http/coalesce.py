"""One run of a blocking check shared by every request that asks for it at the same time.

``/readyz`` and ``/metrics`` answer without an API key (a load balancer, a scraper), so no
per-key rate limit bounds them, and each answer queried the database: /readyz opened two
fresh connections (the ping and the schema revision) and took a pooled one per
collection, /metrics read the job queue (and, with several workers, every process's
sample files). A flood of probes (many hosts, a load balancer probing every few
milliseconds) so held as many connections as the thread pool had threads, beyond the
pool's own bound for the fresh ones, and starved searches and writes of connections
and threads.

:class:`Coalesced` runs its function on one thread at a time: a request arriving while a
run is under way waits for it without holding a thread, and takes its answer when that
run may answer it. How old an answer may be is the caller's choice (``fresh_s``):
``0`` takes only a run started after the request arrived (what the request would have
seen running the check itself, /metrics), ``1.0`` also one started up to a second
before (/readyz: a database that goes down is seen within that second).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from starlette.concurrency import run_in_threadpool

T = TypeVar("T")


@dataclass(eq=False)
class _Run(Generic[T]):
    seq: int  # the how-manyth run this is
    started: float  # time.monotonic() at its start
    task: asyncio.Task[T] = field(init=False)

    def answers(self, arrived: float, seen: int, fresh_s: float) -> bool:
        """Whether this run may answer a request that arrived at ``arrived``, when ``seen``
        runs had started: it started after the request came, or within ``fresh_s`` before."""
        return self.seq > seen or self.started >= arrived - fresh_s

    def outcome(self) -> T:
        """The run's value, or its exception raised again (its traceback dropped first:
        re-raised for each of many requests, the same exception's traceback grew with
        every raise)."""
        exc = self.task.exception()
        if exc is not None:
            raise exc.with_traceback(None)
        return self.task.result()


class Coalesced(Generic[T]):
    """``fn`` run in a worker thread, at most one run at a time, its answer shared by every
    request the run may answer (see the module doc). An exception is an answer too: a
    database that is down is not asked again by each of the requests waiting on it."""

    def __init__(
        self,
        fn: Callable[[], T],
        *,
        fresh_s: float = 0.0,
        run: Callable[[Callable[[], T]], Awaitable[T]] = run_in_threadpool,
    ) -> None:
        """``run`` runs ``fn`` on a thread: Starlette's pool unless told otherwise (the
        readiness checks and ``/metrics`` have threads of their own,
        :mod:`ragstore.http.probes`)."""
        self._fn = fn
        self._run = run
        self.fresh_s = fresh_s
        self.runs = 0  # runs started (tests count them)
        self._last: _Run[T] | None = None  # the latest finished run
        self._running: _Run[T] | None = None

    async def get(self) -> T:
        loop = asyncio.get_running_loop()
        arrived = time.monotonic()
        seen = self.runs
        while True:
            last = self._last
            if last is not None and last.answers(arrived, seen, self.fresh_s):
                return last.outcome()
            run = self._running
            if run is None or run.task.get_loop() is not loop:
                run = self._start(loop)
            # asyncio.wait, not await: a request that goes away (its task cancelled) must
            # not cancel the run the others wait on
            await asyncio.wait({run.task})
            if run.answers(arrived, seen, self.fresh_s):
                return run.outcome()
            # the run had started too long before this request: wait for (or start) the next

    def _start(self, loop: asyncio.AbstractEventLoop) -> _Run[T]:
        self.runs += 1
        run: _Run[T] = _Run(self.runs, time.monotonic())
        # a context of its own: not the first requester's (its request id, a routed read)
        run.task = loop.create_task(self._execute(run), context=contextvars.Context())
        self._running = run
        return run

    async def _execute(self, run: _Run[T]) -> T:
        try:
            return await self._run(self._fn)
        finally:
            if self._running is run:
                self._running = None
            if self._last is None or self._last.seq < run.seq:
                self._last = run
