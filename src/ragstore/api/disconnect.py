"""Work that stops when its client goes away: a search whose client disconnected is
cancelled in PostgreSQL instead of running on to ``RAGSTORE_SEARCH_TIMEOUT_S``.

uvicorn tells an app that the client went away by answering ``receive()`` with
``http.disconnect``; once the request body has been read, a further ``receive()`` waits
for exactly that (the answer Starlette's streaming responses listen for). So the route
runs its work on a worker thread and listens beside it: if the client goes first, the
work's statements are cancelled (:class:`ragstore.db.cancel.Cancellation`) and the route
answers 499, nginx's "client closed request", which nobody receives but the access log
and the metrics record.

Under load a request waits for a worker thread (all of the thread pool's are busy) before
its work starts. A client that gave up meanwhile (its timeout ran out) left its work
queued, and when a thread came free that work ran all but its statements: the query's
embedding, the bulk of a search's time, computed for no one while the requests of clients
still waiting queued behind it. Work whose client has gone by the time a thread takes it
now does not start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ragstore.db.cancel import Cancellation, Cancelled, cancelling
from ragstore.errors import RagstoreError

log = logging.getLogger("ragstore.api")

T = TypeVar("T")

CLIENT_CLOSED = 499


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass  # more body: not expected once the route runs, and not ours to read


def _outcome_dropped(task: asyncio.Future[Any]) -> None:
    """Read the outcome of work whose request was cancelled: nobody awaits it."""
    if not task.cancelled():
        task.exception()


async def unless_disconnected(request: Request, work: Callable[[], T]) -> T | Response:
    """``work()`` on a worker thread; if the client disconnects first, its statements are
    cancelled and the answer is a 499 no one receives."""
    cancellation = Cancellation()

    def run() -> T:
        if cancellation.cancelled:  # its client left while it waited for a thread
            raise Cancelled("the work was not started (its client went away)")
        with cancelling(cancellation):
            return work()

    task = asyncio.ensure_future(run_in_threadpool(run))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # this request itself was cancelled (the server stops)
        gone.cancel()
        # its outcome is no one's now: read when it comes, or asyncio logs it as an error
        # ("Task exception was never retrieved") once the task is collected
        task.add_done_callback(_outcome_dropped)
        # off the event loop, as below: the cancel requests are blocking round trips (up
        # to CANCEL_TIMEOUT_S each), which stalled every other request of the server as it
        # stopped; shielded, so that a second cancellation does not leave them unsent
        await asyncio.shield(asyncio.to_thread(cancellation.cancel))
        raise
    gone.cancel()
    await asyncio.wait((gone,))
    if task.done():
        return task.result()
    # not on Starlette's thread pool: when searches stuck behind a lock fill it, their
    # cancels would wait for one of them to end
    stopped = await asyncio.to_thread(cancellation.cancel)
    log.info("the client went away: %d running statement(s) of its request cancelled", stopped)
    # its statement cancelled, the thread is done at once: with Cancelled, or with the
    # error or result the search reached first; anything else is a fault and surfaces
    with contextlib.suppress(Cancelled, RagstoreError):
        await task
    return Response(status_code=CLIENT_CLOSED)
