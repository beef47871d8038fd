"""A bounded wait for a worker thread (``RAGSTORE_QUEUE_WAIT_S``).

The app's blocking work (sync routes, the key check, a search's embedding and statements)
runs on anyio's worker threads, at most 40 at once (its default limiter); a request finding
every one busy waited for one without limit. Under 800 concurrent searches every request
was answered 200, the median after 17 s and the slowest after 25 s: clients with timeouts
had given up long before, and the work done for them was for no one while the requests of
clients still waiting queued behind it. Only the connection caps bounded the queue.

Now each such wait of a request is bounded: a request whose work has not got a thread
within ``RAGSTORE_QUEUE_WAIT_S`` is answered 503 ``overloaded`` with ``Retry-After`` and
never runs (it counts in ``ragstore_errors_total{code="overloaded"}``). Only the waits for
a thread count, never a request body arriving: not even an upload's, whose files over 1 MB
Starlette's form parser writes to disk on worker threads as their bytes come
(:class:`_Arrival`); those writes wait as long as it takes, unless the client leaves
meanwhile (the request is then dropped, its spooled files removed), and the upload's work
(its ingest) is still to come, its wait bounded. Once the request's work has started
on a thread, its later waits (the answer's validation, a write's position for
read-your-writes) are not bounded: the work is done, and a 503 would say it was not. The
waits before it (the key check, a routed read's checks: :func:`before_work`) are bounded
and leave it to come. A request shed by any of them is answered 503 ``overloaded`` here
(:class:`QueueWaitMiddleware`), whichever middleware or route waited. A shed request costs
its caller nothing: the key check's rate-limit token, taken before the work's wait, is
given back before the 503 goes out (:func:`if_shed`); counted, a shed call and the
client's automatic retry of it spent two of the key's requests on no work. A request shed
before its body was read still gets its 503, not a reset connection: uvicorn reads and
drops the rest of a body once the answer is complete (tests/api/test_shed.py). ``/healthz`` and
``/readyz`` are never shed, and /readyz's and /metrics' checks run on threads of their own
(:func:`ragstore.http.probes.on_probe_thread`; their key checks on others again,
:func:`ragstore.http.probes.on_key_check_thread`), so a busy server still answers its load
balancer and its scraper at once instead of behind the searches, and a burst of bad keys
at /metrics holds up no /readyz.

anyio offers no public way to bound the wait for its default limiter (sync routes and
dependencies are run by FastAPI and Starlette with it): :func:`install` wraps the running
loop's default limiter in a :class:`SheddingLimiter` through anyio's run variable for it.
Should a later anyio move that, the server logs a warning and waits as before
(tests/api/test_shed.py fails first).
"""

from __future__ import annotations

import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from anyio import CapacityLimiter, CapacityLimiterStatistics
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragstore.errors import OverloadedError
from ragstore.http.problems import send_problem

log = logging.getLogger("ragstore.api")

T = TypeVar("T")

PROBES = frozenset({"/healthz", "/readyz"})
"""Paths never shed: a load balancer must tell a busy server from a dead one."""
_MULTIPART = b"multipart/form-data"


@dataclass
class _Admission:
    """One request's standing: ``wait_s`` bounds each wait for a thread until ``started``."""

    wait_s: float
    started: bool = False  # its work got a thread: later waits are not bounded
    shed: bool = False  # a wait ran out: answered 503 overloaded, nothing of it run
    # an upload's body chunk is being written to disk (the form parser's spool): its waits
    # are the body arriving, neither bounded nor the work's start
    arriving: bool = False
    arrival: _Arrival | None = None  # an upload's body, read through it
    # what a shed request gives back before its 503 goes out (its rate-limit token)
    undo: list[Callable[[], None]] = field(default_factory=list)


_ADMISSION: contextvars.ContextVar[_Admission | None] = contextvars.ContextVar(
    "ragstore_admission", default=None
)
_BEFORE_WORK: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "ragstore_before_work", default=False
)
# threads a shed request took past the limit, in this task (see SheddingLimiter.__aenter__)
_PAST_LIMIT: contextvars.ContextVar[int] = contextvars.ContextVar("ragstore_past_limit", default=0)
_warned = False


class SheddingLimiter(CapacityLimiter):
    """anyio's default thread limiter (``inner``) with the request's wait bounded."""

    __slots__ = ("_inner",)

    def __new__(cls, inner: CapacityLimiter) -> SheddingLimiter:
        return object.__new__(cls)

    def __init__(self, inner: CapacityLimiter) -> None:
        self._inner = inner

    async def __aenter__(self) -> None:
        admission = _ADMISSION.get()
        if admission is not None and admission.shed:
            # answered 503 already: what it still runs is its cleanup (an upload's files
            # spooled to disk closed), at once and past the limit, or it waited for the
            # load it was shed for, the 503 with it, or failed and left the files open
            _PAST_LIMIT.set(_PAST_LIMIT.get() + 1)
            return
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        past = _PAST_LIMIT.get()
        if past:  # anyio enters and leaves a limiter in the same task, one at a time
            _PAST_LIMIT.set(past - 1)
            return
        self.release()

    async def acquire(self) -> None:
        await self._bounded(self._inner.acquire, self._inner.acquire_nowait)

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        await self._bounded(
            lambda: self._inner.acquire_on_behalf_of(borrower),
            lambda: self._inner.acquire_on_behalf_of_nowait(borrower),
        )

    async def _bounded(
        self, acquire: Callable[[], Awaitable[None]], acquire_nowait: Callable[[], None]
    ) -> None:
        admission = _ADMISSION.get()
        if admission is not None and admission.arriving and admission.arrival is not None:
            try:
                acquire_nowait()
            except anyio.WouldBlock:
                await admission.arrival.unless_gone(acquire)
            return
        if admission is None or admission.started or admission.arriving:
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
        admission = _Admission(self.wait_s)
        token = _ADMISSION.set(admission)
        answered = False

        async def watching_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and admission.shed:
                await _undo(admission)  # before the 503: the retry finds it given back
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        # the first Content-Type, as Starlette's form parser and FormBytesMiddleware read it
        # (a dict of the headers kept the last: a second one hid an upload from the wrapper)
        content_type = Headers(scope=scope).get("content-type", "").encode("latin-1")
        if content_type.lower().startswith(_MULTIPART):
            receive = self._arriving(admission, receive)
        try:
            await self.app(scope, receive, watching_send)
        except OverloadedError as exc:
            # shed where no one answers it: a middleware's wait (a routed read's router,
            # say) was answered 500 internal_error, which no client retries
            if answered:
                raise
            await _undo(admission)
            await send_problem(scope, send, exc)
        finally:
            _ADMISSION.reset(token)

    @staticmethod
    def _arriving(admission: _Admission, receive: Receive) -> Receive:
        """``receive``, read through an :class:`_Arrival` (the upload's waits for a thread
        between a body chunk and the next ask for one marked as the body's arrival)."""
        admission.arrival = _Arrival(admission, receive)
        return admission.arrival.receive


READ_AHEAD_BYTES = 1 << 20
"""How much of an upload's body is read ahead, held in memory, while a write of it waits
for a worker thread, to see whether its client has gone (:meth:`_Arrival.unless_gone`):
as much as Starlette's form parser holds of a file before it spools it to disk."""


class _Arrival:
    """An upload's body as its reader (Starlette's form parser) asks for it: the request's
    waits for a thread between a body chunk and the next ask for one are marked as the
    body's arrival (:attr:`_Admission.arriving`), and end if its client goes meanwhile.

    Starlette's form parser writes an upload's file over 1 MB to disk on a worker thread
    as each chunk comes. Those waits were bounded: a large upload was shed while its body
    arrived, and one that was not had its work marked started by the first write, so its
    ingest waited for a thread without limit. The last chunk is handed on as if more were
    to come, then an empty last one: its writes are made before the body is seen to end.
    (A reader that stops asking before the end leaves its later waits unbounded, as they
    were before waits were bounded at all.)

    Those waits are not bounded, but a client that left during one had it last until a
    thread came free, and then the server read on: a body already in its buffers was
    parsed to its end and the upload stored for no one. While a write waits, the body is
    read ahead (up to :data:`READ_AHEAD_BYTES`, handed on in order afterwards): the
    server's ``http.disconnect`` ends the wait with Starlette's ``ClientDisconnect``, as a
    read of the body would have; the files the form parser spooled are unnamed
    temporary files, freed once closed or collected. Past the read-ahead, the wait goes
    on (the client's sending held back by TCP), as before."""

    def __init__(self, admission: _Admission, receive: Receive) -> None:
        self._admission = admission
        self._receive = receive
        self._ahead: deque[Message] = deque()
        self._ahead_bytes = 0

    async def receive(self) -> Message:
        self._admission.arriving = False
        if self._ahead:
            message = self._ahead.popleft()
            self._ahead_bytes -= len(message.get("body", b""))
        else:
            message = await self._receive()
        if message["type"] != "http.request":
            return message
        if not message.get("more_body", False):
            if not message.get("body"):
                return message  # the end: the waits after it are the work's
            self._ahead.appendleft({"type": "http.request", "body": b"", "more_body": False})
            message = {**message, "more_body": True}
        self._admission.arriving = True
        return message

    async def unless_gone(self, acquire: Callable[[], Awaitable[None]]) -> None:
        """``acquire()`` (a body chunk's write waiting for a thread), the body read ahead
        meanwhile; ``ClientDisconnect`` (nothing acquired) if its client goes first."""
        gone = acquired = False
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                nonlocal gone
                while self._ahead_bytes < READ_AHEAD_BYTES:
                    # after the body's end, the server's next message is its disconnect
                    message = await self._receive()
                    self._ahead.append(message)
                    self._ahead_bytes += len(message.get("body", b""))
                    if message["type"] == "http.disconnect":
                        gone = True
                        group.cancel_scope.cancel()
                        return

            group.start_soon(watch)
            await acquire()
            acquired = True
            group.cancel_scope.cancel()
        if gone and not acquired:  # acquired as it went: the write runs, the next read ends
            raise ClientDisconnect()


async def _undo(admission: _Admission) -> None:
    """Run what the shed request asked to give back (:func:`if_shed`), each once, on a worker
    thread past the limit (it was shed: :meth:`SheddingLimiter.__aenter__`). Each step
    handles its own failures (a rate-limit give-back logs a database it cannot reach and
    leaves the token spent: :meth:`RateLimiter.give_back`)."""
    while admission.undo:
        fn = admission.undo.pop(0)
        await run_in_threadpool(fn)


def if_shed(fn: Callable[[], None]) -> None:
    """Have ``fn()`` run if this request is shed (answered 503 ``overloaded``, its work never
    run), before the 503 goes out: the key check's rate-limit token is given back so.
    Callable from the request's worker threads (they share its admission)."""
    admission = _ADMISSION.get()
    if admission is not None and not admission.started:
        admission.undo.append(fn)


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
