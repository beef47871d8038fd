"""Statements that another thread can cancel: the searches of a client that went away.

A request's work runs on a worker thread, its statements on pooled connections. The API
gives the work a :class:`Cancellation` (:func:`cancelling`; a context variable, so the
threads a search fans out to inherit it); each statement that may run long registers its
connection for as long as it runs (:func:`cancellable`). When the client disconnects the
API calls :meth:`Cancellation.cancel`: PostgreSQL is asked to cancel what those
connections are running, and no further statement of the work starts.

A cancel request reaches the server on a connection of its own and only names the
backend, not the statement, so a late one could stop whatever that connection runs next,
for somebody else. It cannot here: the lock of the cancellation is held while the cancel
requests are sent (each returns once the server has signalled the backend) and while a
statement's connection is unregistered, which happens before the connection goes back to
the pool. A signal that finds the backend idle, between statements, is ignored by
PostgreSQL.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

log = logging.getLogger("ragstore.db")

CANCEL_TIMEOUT_S = 5.0  # a cancel request that gets no answer in this long is given up


class Cancelled(Exception):
    """The work was cancelled: a statement was stopped, or was not started. Only work
    whose requester has gone raises it, so it never reaches a user (nor is it taken for a
    database failure: it is no psycopg error)."""


class Cancellation:
    """The statements in flight of one piece of work, and whether it was cancelled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[psycopg.Connection[Any]] = set()
        self.cancelled = False

    def cancel(self) -> int:
        """Cancel the statements in flight and refuse new ones; how many were in flight.
        Blocking (a round trip per statement): call it off the event loop."""
        with self._lock:
            self.cancelled = True
            for conn in self._running:
                try:
                    conn.cancel_safe(timeout=CANCEL_TIMEOUT_S)
                except (psycopg.Error, TimeoutError) as exc:  # the statement runs on to its end
                    log.warning("could not cancel a statement: %s", exc)
            return len(self._running)

    @contextmanager
    def running(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        """Run a statement on ``conn``; registered until the block ends (see module doc)."""
        with self._lock:
            if self.cancelled:
                raise Cancelled("the work was cancelled (its client went away)")
            self._running.add(conn)
        try:
            yield
        except psycopg.errors.QueryCanceled as exc:
            if not self.cancelled:
                raise  # a statement timeout, an administrator's cancel
            # not a database failure: translated, it would read as one (and open the
            # database's breaker for every other request)
            raise Cancelled("the statement was cancelled (its client went away)") from exc
        finally:
            with self._lock:
                self._running.discard(conn)


_current: contextvars.ContextVar[Cancellation | None] = contextvars.ContextVar(
    "ragstore_cancellation", default=None
)


@contextmanager
def cancelling(cancellation: Cancellation) -> Iterator[None]:
    """Statements run inside the block (and threads it fans out to) obey ``cancellation``."""
    token = _current.set(cancellation)
    try:
        yield
    finally:
        _current.reset(token)


@contextmanager
def cancellable(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Run a statement on ``conn`` that the current cancellation, if any, may cancel."""
    cancellation = _current.get()
    if cancellation is None:
        yield
        return
    with cancellation.running(conn):
        yield
