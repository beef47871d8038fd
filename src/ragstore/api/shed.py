"""A bounded wait for a worker thread (``RAGSTORE_QUEUE_WAIT_S``), and threads of their own
for the readiness probe.

The app's blocking work (sync routes, the key check, a search's embedding and statements)
runs on anyio's worker threads, at most 40 at once (its default limiter); a request finding
every one busy waited for one without limit. Under 800 concurrent searches every request
was answered 200, the median after 17 s and the slowest after 25 s: clients with timeouts
had given up long before, and the work done for them was for no one while the requests of
clients still waiting queued behind it. Only the connection caps bounded the queue.

Now each such wait of a request is bounded: a request whose work has not got a thread
within ``RAGSTORE_QUEUE_WAIT_S`` is answered 503 ``overloaded`` with ``Retry-After`` and
never runs (it counts in ``ragstore_errors_total{code="overloaded"}``). Only the waits for
a thread count, never a slow upload's body arriving. Once the request's work has started
on a thread, its later waits (the answer's validation, a write's position for
read-your-writes) are not bounded: the work is done, and a 503 would say it was not. The
waits before it (the key check, a routed read's checks: :func:`before_work`) are bounded
and leave it to come. ``/healthz`` and ``/readyz`` are never shed, and /readyz's checks run
on threads of their own (:func:`on_probe_thread`), so a busy server still answers its load
balancer at once instead of behind the searches.

anyio offers no public way to bound the wait for its default limiter (sync routes and
dependencies are run by FastAPI and Starlette with it): :func:`install` wraps the running
loop's default limiter in a :class:`SheddingLimiter` through anyio's run variable for it.
Should a later anyio move that, the server logs a warning and waits as before
(tests/api/test_shed.py fails first).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from anyio import CapacityLimiter, CapacityLimiterStatistics
from anyio.lowlevel import RunVar
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from ragstore.errors import OverloadedError

log = logging.getLogger("ragstore.api")

T = TypeVar("T")

PROBES = frozenset({"/healthz", "/readyz"})
"""Paths never shed: a load balancer must tell a busy server from a dead one."""
PROBE_THREADS = 4
"""Worker threads of the readiness probe's own (its checks are shared: one at a time)."""


@dataclass
class _Admission:
    """One request's standing: ``wait_s`` bounds each wait for a thread until ``started``."""

    wait_s: float
    started: bool = False  # its work got a thread: later waits are not bounded
    shed: bool = False  # a wait ran out: answered 503 overloaded, nothing of it run


_ADMISSION: contextvars.ContextVar[_Admission | None] = contextvars.ContextVar(
    "ragstore_admission", default=None
)
_BEFORE_WORK: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "ragstore_before_work", default=False
)
_probe_limiter: RunVar[CapacityLimiter] = RunVar("ragstore_probe_limiter")
_warned = False


class SheddingLimiter(CapacityLimiter):
    """anyio's default thread limiter (``inner``) with the request's wait bounded."""

    __slots__ = ("_inner",)

    def __new__(cls, inner: CapacityLimiter) -> SheddingLimiter:
        return object.__new__(cls)

    def __init__(self, inner: CapacityLimiter) -> None:
        self._inner = inner

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.release()

    async def acquire(self) -> None:
        await self._bounded(self._inner.acquire)

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        await self._bounded(lambda: self._inner.acquire_on_behalf_of(borrower))

    async def _bounded(self, acquire: Callable[[], Awaitable[None]]) -> None:
        admission = _ADMISSION.get()
        if admission is None or admission.started:
            await acquire()
            return
        with anyio.move_on_after(admission.wait_s) as waited:
            await acquire()
        if waited.cancelled_caught:
            admission.shed = True
            raise OverloadedError(
                f"every worker thread of this server stayed busy for {admission.wait_s:g}s "
                "(RAGSTORE_QUEUE_WAIT_S): the request was not run; retry after the "
                "Retry-After seconds, or spread the load over more servers or workers "
                "(RAGSTORE_API_WORKERS)",
                retry_after=1.0,
            )
        if not _BEFORE_WORK.get():
            admission.started = True

    # the rest as the wrapped limiter has it
    @property
    def total_tokens(self) -> float:
        return self._inner.total_tokens

    @total_tokens.setter
    def total_tokens(self, value: float) -> None:
        self._inner.total_tokens = value

    @property
    def borrowed_tokens(self) -> int:
        return self._inner.borrowed_tokens

    @property
    def available_tokens(self) -> float:
        return self._inner.available_tokens

    def acquire_nowait(self) -> None:
        self._inner.acquire_nowait()

    def acquire_on_behalf_of_nowait(self, borrower: object) -> None:
        self._inner.acquire_on_behalf_of_nowait(borrower)

    def release(self) -> None:
        self._inner.release()

    def release_on_behalf_of(self, borrower: object) -> None:
        self._inner.release_on_behalf_of(borrower)

    def statistics(self) -> CapacityLimiterStatistics:
        return self._inner.statistics()


def install() -> bool:
    """Make the running loop's default thread limiter a :class:`SheddingLimiter` (once per
    loop); False where this anyio does not let it be (logged once: waits stay unbounded)."""
    global _warned
    current = anyio.to_thread.current_default_thread_limiter()
    if isinstance(current, SheddingLimiter):
        return True
    try:
        from anyio._backends import _asyncio

        # typed as the backend's own class: this one wraps it, and offers what it does
        _asyncio._default_thread_limiter.set(SheddingLimiter(current))  # type: ignore[arg-type]
    except (ImportError, AttributeError) as exc:
        if not _warned:
            _warned = True
            log.warning(
                "RAGSTORE_QUEUE_WAIT_S has no effect with this anyio (%s): a request "
                "waits for a worker thread without limit",
                exc,
            )
        return False
    return True


class QueueWaitMiddleware:
    """Bounds each request's wait for a worker thread to ``wait_s`` seconds (0: unbounded);
    ``/healthz`` and ``/readyz`` are never shed (see the module doc)."""

    def __init__(self, app: ASGIApp, wait_s: float) -> None:
        self.app = app
        self.wait_s = wait_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from ragstore.api.deps import route_path  # deps' checks run through before_work

        if scope["type"] != "http" or not self.wait_s or route_path(scope) in PROBES:
            await self.app(scope, receive, send)
            return
        install()
        token = _ADMISSION.set(_Admission(self.wait_s))
        try:
            await self.app(scope, receive, send)
        finally:
            _ADMISSION.reset(token)


async def before_work(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a worker thread, for a check made before a request's work (its key,
    a routed read's position): its wait is bounded, and the work's own is still to come."""
    token = _BEFORE_WORK.set(True)
    try:
        return await run_in_threadpool(fn, *args)
    finally:
        _BEFORE_WORK.reset(token)


def work_done() -> None:
    """The request's later waits for a thread are not bounded: its work ran (a write's
    position is read for its answer), and a 503 ``overloaded`` would say it did not."""
    admission = _ADMISSION.get()
    if admission is not None:
        admission.started = True


def was_shed() -> bool:
    """Whether the request was answered 503 ``overloaded`` (none of its work ran)."""
    admission = _ADMISSION.get()
    return admission is not None and admission.shed


def probe_limiter() -> CapacityLimiter:
    """The readiness probe's own worker threads (per event loop)."""
    try:
        return _probe_limiter.get()
    except LookupError:
        limiter = CapacityLimiter(PROBE_THREADS)
        _probe_limiter.set(limiter)
        return limiter


async def on_probe_thread(fn: Callable[[], T]) -> T:
    """``fn()`` on one of the probe's threads: never behind the requests holding the app's."""
    return await anyio.to_thread.run_sync(fn, limiter=probe_limiter())
