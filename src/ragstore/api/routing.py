"""Which server answers a request: reads to replicas, writes to the primary, none on a standby.

:class:`ReadRoutingMiddleware` sorts each request:

- **reads** (GET/HEAD under ``/v1`` except jobs, ``POST .../search``, ``.../texts/get`` and
  ``.../texts/query``) run in a :class:`~ragstore.db.routing.Route`, so ``Runtime.db`` is
  the replica the router picked. A replica that fails under the request is marked down and
  the request is run once more on the primary before anything reached the client: a
  standby going away costs latency, never an error. The answer says where it ran
  (``RAGStore-Read-From``).
- **writes** (any other method under ``/v1``) reach the primary; a 2xx answer carries the
  primary's WAL position after the commit in ``RAGStore-LSN``. A read that sends it back is
  served by a replica only once that replica has replayed it (read-your-writes). Where the
  position cannot be read, the header says ``primary``, and a read sending that back is
  served by the primary (refused on a read-only server, which cannot tell).
- on a **read-only server** (``RAGSTORE_DATABASE_URL`` names a hot standby) writes are refused
  with ``read_only`` (403) before they run, and a read carrying an LSN this standby has not
  replayed within ``RAGSTORE_REPLICA_WAIT_S`` is refused with ``replica_behind`` (503);
  job reads, the primary's elsewhere, are reads there too.
"""

from __future__ import annotations

import logging
import re
import time

from psycopg_pool import PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragstore.api import shed
from ragstore.api.deps import route_path
from ragstore.api.shed import before_work
from ragstore.db import lsn, routing
from ragstore.db.errors import translated
from ragstore.errors import OverloadedError, RagstoreError, ReadOnlyError, ReplicaBehindError
from ragstore.http.problems import send_problem
from ragstore.runtime import Runtime
from ragstore.wire import READ_FROM_HEADER

log = logging.getLogger("ragstore.api")

LSN_READ_ATTEMPTS = 3  # a write's position is read up to this many times ...
LSN_READ_RETRY_S = 0.1  # ... this long apart (doubled each time)
# the wait for a pooled connection to read it on, not the pool timeout: under a full pool
# a committed write's answer waited three pool timeouts (15 s by default) for its
# position, and an error answer (a 503 for that full pool) one more; a committed write
# whose position is not read within it answers ``primary``, an error answers none
LSN_POOL_WAIT_S = 0.25
LSN_ERROR_POOL_WAIT_S = 0.05
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# a write's error answers from before its route ran (no key, no right, throttled)
_RAN_NOT = frozenset({401, 403, 429})


# the POST routes that only read: a collection's search, texts/get and texts/query, matched
# after the collection's name (a name is one path segment)
_POST_READS = re.compile(r"^/v1/collections/[^/]+/(?:search|texts/get|texts/query)$")


def classify(method: str, path: str) -> str:
    """``read``, ``write`` or ``other`` (health, metrics, docs, jobs' reads: the primary).

    A POST is a read only as a collection's ``search``, ``texts/get`` or ``texts/query``
    (``texts/delete-where`` writes): matched anywhere in the path, every write to a
    collection named ``search`` (its documents, uploads, texts, model migration) was a
    read, run on a replica (and failing there) or let through on a read-only server, and
    answered without its ``RAGStore-LSN``."""
    if not path.startswith("/v1/"):
        return "other"
    if method == "POST" and _POST_READS.match(path):
        return "read"
    if method in _WRITES:
        return "write"
    if method in ("GET", "HEAD") and not path.startswith("/v1/jobs"):
        return "read"
    return "other"


def _is_job_read(method: str, path: str) -> bool:
    return method in ("GET", "HEAD") and (path == "/v1/jobs" or path.startswith("/v1/jobs/"))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class ReadRoutingMiddleware:
    """See the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # without the root path: under one (``--root-path``) every request was "other", so
        # writes went without their RAGStore-LSN (read-your-writes lost) and a read-only
        # server let them through to fail on its standby
        path = route_path(scope)
        kind = classify(scope["method"], path)
        state = getattr(scope["app"].state, "ragstore", None) if "app" in scope else None
        job_read = kind == "other" and _is_job_read(scope["method"], path)
        if (kind == "other" and not job_read) or state is None:
            await self.app(scope, receive, send)
            return
        rt: Runtime = state.runtime
        try:
            read_only = rt.opened_read_only
            if read_only is None:  # the database not open yet: opened on a thread
                read_only = await before_work(lambda: rt.read_only)
            if job_read and read_only:
                # a read-only server shows its standby's job rows: a job accepted by the
                # primary (its 202's position sent back) is not there until replayed, and
                # was answered 404 job_not_found, as if lost; it waits as any read does
                kind = "read"
            on_primary = kind == "read" and self._on_primary(scope)
            min_lsn = self._min_lsn(scope) if kind == "read" and not on_primary else None
        except RagstoreError as exc:  # database down, bad header: the route answers it
            # (not a request shed for want of a thread: it would only wait again there)
            if (
                isinstance(exc, ReadOnlyError | OverloadedError)
                or kind == "write"
                or exc.http_status < 500
            ):
                await send_problem(scope, send, exc)
                return
            await self.app(scope, receive, send)
            return
        # a read carrying the caller's last write sees it on every path (a replica, the
        # primary, a read-only server's standby): no collection row cached before it
        # (Runtime.cached_collection), which another process's switch may have outdated
        with routing.reading_own_writes(min_lsn is not None or on_primary):
            if kind == "other":  # a job's read on a primary: the primary's, as classify says
                await self.app(scope, receive, send)
            elif read_only and on_primary:
                await send_problem(scope, send, _unknown_position(rt))
            elif read_only:
                await self._read_only(rt, kind, min_lsn, scope, receive, send)
            elif kind == "write":
                await self._write(rt, scope, receive, send)
            else:
                await self._read(rt, min_lsn, scope, receive, send, on_primary=on_primary)

    @staticmethod
    def _on_primary(scope: Scope) -> bool:
        text = _header(scope, lsn.HEADER.lower().encode())
        return text is not None and lsn.on_primary(text)

    @staticmethod
    def _min_lsn(scope: Scope) -> int | None:
        text = _header(scope, lsn.HEADER.lower().encode())
        return lsn.parse(text) if text else None

    async def _read_only(
        self,
        rt: Runtime,
        kind: str,
        min_lsn: int | None,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        if kind == "write":
            await send_problem(
                scope,
                send,
                ReadOnlyError(
                    "this server reads a hot standby and refuses "
                    f"{scope['method']} {scope['path']}; send writes to a server on the primary"
                ),
            )
            return
        if min_lsn is not None:
            wait = rt.settings.replica_wait_s
            try:
                caught_up = await before_work(_replayed, rt, min_lsn, wait)
            except RagstoreError as exc:
                await send_problem(scope, send, exc)
                return
            if not caught_up:
                await send_problem(
                    scope,
                    send,
                    ReplicaBehindError(
                        f"this read-only server's standby has not replayed your last write "
                        f"({lsn.HEADER} {lsn.format_lsn(min_lsn)}) within {wait:g}s "
                        "(RAGSTORE_REPLICA_WAIT_S); retry, or read from the primary",
                        retry_after=max(1.0, wait),
                    ),
                )
                return
        await self.app(scope, receive, send)

    async def _write(self, rt: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_lsn(message: Message) -> None:
            position: str | None = None
            if message["type"] == "http.response.start":
                if shed.was_shed():  # not run: no position, and the 503 not held up
                    await send(message)
                    return
                shed.work_done()  # it ran: its position is read, however busy the threads
            if message["type"] == "http.response.start" and 200 <= message["status"] < 300:
                position = await run_in_threadpool(written_lsn, rt, scope["path"])
            elif message["type"] == "http.response.start" and message["status"] not in _RAN_NOT:
                # an error can follow writes that committed (an upload's other files,
                # listed as ``stored``): their position, where it can be read at once;
                # ``primary`` where they did and it cannot (the pool full, say): without
                # a position the client's next read could go to a replica without them
                position = await run_in_threadpool(_error_lsn, rt)
                if position is None and scope.get("state", {}).get("writes_committed"):
                    position = lsn.ON_PRIMARY
            if position is not None:
                headers = list(message.get("headers", []))
                headers.append((lsn.HEADER.lower().encode(), position.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_lsn)

    async def _read(
        self,
        rt: Runtime,
        min_lsn: int | None,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        on_primary: bool = False,
    ) -> None:
        router = rt.opened_router
        if router is None:  # made on the first read (it opens the replicas' pools)
            try:
                router = await before_work(lambda: rt.router)
            except RagstoreError as exc:  # shed (overloaded), or the pools not opened
                await send_problem(scope, send, exc)
                return
        if not router.has_replicas:
            await self.app(scope, receive, send)
            return
        if on_primary:  # the caller's last write has no known position: only the primary
            route = routing.Route(router, None, primary_only=True)
            await self._attempt(route, [], scope, receive, send, last=True)
            return
        body = await _read_body(receive)
        route = routing.Route(router, min_lsn)
        if await self._attempt(route, body, scope, receive, send, last=False):
            return
        await self._attempt(
            routing.Route(router, min_lsn, primary_only=True), body, scope, receive, send, last=True
        )

    async def _attempt(
        self,
        route: routing.Route,
        body: list[Message],
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        last: bool,
    ) -> bool:
        """Run the request on ``route``; False when a replica failed under it and nothing
        was sent (the caller runs it again on the primary)."""
        pending = list(body)
        dropped = False

        async def replay() -> Message:
            if pending:
                return pending.pop(0)
            return await receive()  # the body is spent: this waits for the disconnect

        async def send_routed(message: Message) -> None:
            nonlocal dropped
            if message["type"] == "http.response.start":
                if not last and route.lost and message["status"] >= 500:
                    dropped = True
                    return
                if route.target is not None:
                    where = "replica" if route.on_replica else "primary"
                    message["headers"] = [
                        *message.get("headers", []),
                        (READ_FROM_HEADER.lower().encode(), where.encode()),
                    ]
            if dropped:
                return
            await send(message)

        with routing.routed(route):
            await self.app(scope, replay, send_routed)
        if not dropped:
            route.settled()  # counted where it ran, once
        return not dropped


async def _read_body(receive: Receive) -> list[Message]:
    """The request's body messages, kept so the request can be run a second time."""
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


def _replayed(rt: Runtime, min_lsn: int, wait_s: float) -> bool:
    with translated(f"waiting for the standby to replay {lsn.format_lsn(min_lsn)}"):
        return routing.wait_for_replay(rt.primary, min_lsn, wait_s)


def _primary_lsn(rt: Runtime, wait_s: float) -> int:
    """The primary's position, on a pooled connection waited for at most ``wait_s``
    (``PoolTimeout`` when none is free by then)."""
    with rt.primary.connection(wait_s=wait_s) as conn, translated("reading the WAL position"):
        return lsn.current(conn)


def written_lsn(rt: Runtime, path: str) -> str:
    """The ``RAGStore-LSN`` of a committed write: the primary's position, read again on a
    fresh connection where that fails, else :data:`lsn.ON_PRIMARY`.

    The answer went without the header where one read failed (its pooled connection
    lost, say): the client kept its earlier position, and its next read could be served
    by a replica without this write, read-your-writes broken with no sign of it.
    ``primary``, sent back, has the next read served by the primary; the write still
    answers its success (it committed).

    Each read waits :data:`LSN_POOL_WAIT_S` for a pooled connection, and a full pool
    ends the tries at once: the pool timeout, three times, delayed a committed write's
    answer by about 15 s under the very load that filled the pool."""
    for attempt in range(1, LSN_READ_ATTEMPTS + 1):
        try:
            return lsn.format_lsn(_primary_lsn(rt, LSN_POOL_WAIT_S))
        except (RagstoreError, PoolTimeout) as exc:
            if isinstance(exc, PoolTimeout) or attempt == LSN_READ_ATTEMPTS:
                log.warning(
                    "the WAL position after %s could not be read (%s); answered %s: %s",
                    path,
                    exc,
                    lsn.HEADER,
                    lsn.ON_PRIMARY,
                )
                return lsn.ON_PRIMARY
            time.sleep(LSN_READ_RETRY_S * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _error_lsn(rt: Runtime) -> str | None:
    """The primary's position for a write's error answer, or None where it cannot be read.

    A multi-file upload whose one file fails is answered that file's error, with the
    others stored (its ``stored`` list); without a position the client's next read could
    be served by a replica without them. One try, and no ``primary`` in its place: an
    error answered while the primary is down must not send the client's reads to it.
    Nor a wait for a pooled connection past :data:`LSN_ERROR_POOL_WAIT_S`: a 503 for a
    full pool waited a second pool timeout here before it was sent."""
    try:
        return lsn.format_lsn(_primary_lsn(rt, LSN_ERROR_POOL_WAIT_S))
    except (RagstoreError, PoolTimeout):
        return None


def _unknown_position(rt: Runtime) -> ReplicaBehindError:
    """A read-only server's answer to a read whose last write has no known position."""
    return ReplicaBehindError(
        "this read-only server cannot tell whether its standby has your "
        f"last write: the server that took it could not read its WAL position ({lsn.HEADER}: "
        f"{lsn.ON_PRIMARY}); read from a server on the primary (or write again there, for "
        "a position this server can wait for)",
        retry_after=1.0,
    )
