"""Reads to replicas, everything else to the primary.

A :class:`ReadRouter` holds the primary and one pool per read replica
(``RAGSTORE_READ_DATABASE_URLS``). The API marks a request as a read (searches, listings,
document reads) by entering :func:`routed`; inside it, ``Runtime.db`` answers with the
database :meth:`ReadRouter.choose` picked for that request, so the search and catalog code
is the same whichever server it runs on. Writes, jobs, migrations and keys never enter a
route and always reach the primary.

A replica is skipped while it does not answer, lags more than ``max_lag_s`` (or its lag
cannot be told: the primary does not answer, and nothing dates a gap) or is not in
recovery (promoted: it no longer follows the primary), is another database than the primary's
(or cannot be shown to be the primary's: the primary has not answered since the start)
or has not replayed the schema revision the code expects; the primary is the last resort. It
is probed at most every ``probe_interval_s``, inline, by the request that finds its status
stale; one whose probe failed slowly (it does not answer: blackholed) is probed again off the
request path, after a back-off that doubles up to :data:`PROBE_BACKOFF_MAX_S`. A replica
that fails under a request (it does not answer, its connection failed, it crashed or shuts
down: :func:`replica_unusable`) is marked down at once and the request is told
(:attr:`Route.lost`) so the API can run it again on the primary. A read that failed for
itself on a replica that serves on (a configured limit, its session ended, a cancel) leaves
the replica in use; where it is a ``database_unavailable`` it too is run on the primary. A read
the standby cancelled to replay the primary's changes (a recovery conflict) is told so too,
the replica left in use: it is fine, and the caller raced nothing (not a 409 ``conflict``);
only a replica that keeps cancelling reads is left out of them for a short back-off.
So is a read that found every connection of the replica's pool in use (busy, not down).
A read the replica's server failed of itself (SQLSTATE class 58 or XX: a file it cannot
open, an I/O error, corrupted data) is run on the primary too, and the replica left out
of reads for a longer back-off. A backed-off replica's status (``/readyz``, the up gauge)
says it is skipped, and why. The probe also runs the native BM25 kernel where the
catalog has one: a standby copied before the primary's library file was put in place
has the functions (replayed) and not the file, and failed every hybrid search.
A read that holds a replica's connection past ``read_timeout_s`` (the search timeout and a
grace) is cut off there, as a replica that failed: one that is up but does not move.

Read-your-writes: a read that carries the caller's last write position (``min_lsn``) is
served by a replica that has replayed that far, waiting up to ``wait_s``, else by the primary.
The position is checked again on the connection the read runs on (a multi-host replica URL
can reach another host than the probe's); one behind there runs the read on the primary.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, NoReturn, Self

import psycopg
from psycopg.abc import PQGenConn
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout

from ragstore import forks
from ragstore.db import lsn, migrations, native
from ragstore.db.database import Database, with_tcp
from ragstore.errors import (
    DatabaseUnavailableError,
    RagstoreError,
    ReplicaBehindError,
    StatementCancelledError,
)
from ragstore.observability import metrics

# A replica that does not accept a probe's connection this fast counts as down: the probe's
# connect_timeout, and what a probe of a host that never answers waits, per attempt. It was
# 1 and waited 2 s all the same: psycopg (Connection.connect, conninfo.timeout_from_conninfo)
# takes a connect_timeout under 2 s as 2 s, as libpq does, and truncates it to whole seconds
# (0.5 is 0: its 130 s default). It applies it to each attempt in turn, one per host of a
# multi-host URL and per address a host name resolves to: a URL of two hosts that never
# answer costs a probe 4 s. No public API lowers it, and a deadline of our own around the
# whole connect (a thread abandoned after 1 s) would cut the later hosts' attempts short:
# a replica ``host=down,up`` that libpq reaches through ``up`` was never reached.
PROBE_TIMEOUT_S = 2
PROBE_QUERY_TIMEOUT_S = 3  # ... nor one whose probe queries do not answer this fast
# A probe that failed after this long (a host that does not answer: a connection or query
# timeout, not a refusal) puts its replica in a back-off: it is probed again after the probe
# interval, then twice as long each time up to PROBE_BACKOFF_MAX_S, and those probes run off
# the request path (a thread of their own), so a blackholed replica costs requests one
# probe timeout in all instead of one a second
PROBE_SLOW_S = PROBE_TIMEOUT_S / 2
PROBE_BACKOFF_MAX_S = 30.0
# How long close() waits for the probes under way to end. They give up at once (see _Stop):
# this bounds what cannot be cut, a host name's resolution (getaddrinfo blocks in libpq)
CLOSE_WAIT_S = PROBE_TIMEOUT_S
_HISTORY = 600  # primary positions remembered for the lag estimate
log = logging.getLogger("ragstore.db")

# How long a routed read waits for a free connection of a replica's pool before the API
# runs it on the primary instead (at most the pool timeout)
BUSY_REPLICA_WAIT_S = 0.5
# How much longer than RAGSTORE_SEARCH_TIMEOUT_S a routed read may hold a replica
# connection before it is cut (replica_read_timeout_s): a healthy server has ended a
# search by then with search_timeout, so only a replica that does not move is cut
REPLICA_READ_GRACE_S = 10.0


def replica_read_timeout_s(search_timeout_s: float) -> float:
    """The router's ``read_timeout_s`` for ``RAGSTORE_SEARCH_TIMEOUT_S``: that plus
    :data:`REPLICA_READ_GRACE_S`; none (0) where searches are not limited either."""
    return search_timeout_s + REPLICA_READ_GRACE_S if search_timeout_s > 0 else 0.0


# A replica whose standby cancelled this many routed reads (recovery conflicts) within
# CONFLICT_WINDOW_S is left out of reads for CONFLICT_BACKOFF_S: each such read ran twice
# (on the replica, then on the primary), so a standby that kept cancelling them doubled
# the read load and latency for as long as the primary's writes went on
CONFLICT_BACKOFF_COUNT = 3
CONFLICT_WINDOW_S = 10.0
CONFLICT_BACKOFF_S = 5.0
# A replica whose server failed a routed read of itself (SQLSTATE class 58, a system error:
# a file it cannot open, an I/O error; class XX, an internal error, corrupted data) is left
# out of reads this long, the read run on the primary. Such a read was answered 500
# ``database_error`` with the primary free, and the replica kept in use: each read routed
# there failed the same way (a standby missing the native BM25 library: every search).
SERVER_FAULT_BACKOFF_S = 30.0


@dataclass
class ReplicaStatus:
    """What the last probe found; ``lag_s`` is None while the replica does not answer."""

    name: str
    up: bool = False
    lag_s: float | None = None
    replay_lsn: int | None = None
    error: str | None = "not probed yet"
    checked_at: float = float("-inf")

    def public(self) -> dict[str, Any]:
        return {
            "replica": self.name,
            "up": self.up,
            "lag_s": None if self.lag_s is None else round(self.lag_s, 3),
            "replay_lsn": None if self.replay_lsn is None else lsn.format_lsn(self.replay_lsn),
            "error": self.error,
        }


# libpq's TCP settings of a replica's connections, where its URL sets none of its own: a
# path that goes silent (a host gone, packets dropped) ends the connection in about 10 s
# (keepalives: 5 s idle, then 3 probes 2 s apart; tcp_user_timeout: data unacknowledged
# for 10 s). Unix-socket connections ignore them. A healthy connection is never cut: the
# peer's kernel answers the probes however long a query runs.
REPLICA_TCP: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}


class ReplicaDatabase(Database):
    """A replica's pool; a failure under a request marks it down and flags the route."""

    router: ReadRouter
    tcp = REPLICA_TCP  # its connections' TCP defaults: see with_keepalives
    pool_label = "replica"  # one series for every replica: the label set stays bounded

    def __init__(self, conninfo: str, **kwargs: Any) -> None:
        super().__init__(conninfo, **kwargs)
        # requests, probes and mark_down open and close this pool from many threads: one
        # at a time, or a pool made by one is dropped unclosed by another
        self._pool_lock = threading.Lock()

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        self._pool_lock = threading.Lock()

    @property
    def pool(self) -> ConnectionPool[psycopg.Connection[tuple[object, ...]]]:
        with self._pool_lock:
            return super().pool

    def close(self) -> None:
        with self._pool_lock:
            super().close()

    @contextmanager
    def connection(
        self, *, wait_s: float | None = None
    ) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        route = _route.get()
        # a routed read has the primary to go to: it waits for a busy replica's pool
        # briefly, not the pool timeout (which it waited in full, then ran on the primary)
        busy_wait = None if wait_s is not None or route is None else self._busy_wait_s()
        bound = self.router.read_timeout_s if route is not None else 0.0
        try:
            with (
                super().connection(wait_s=busy_wait if busy_wait is not None else wait_s) as conn,
                _deadline(conn, bound) if bound > 0 else nullcontext(),
            ):
                if route is not None and route.min_lsn is not None:
                    self._check_replayed(conn, route, route.min_lsn)
                yield conn
        except (RagstoreError, psycopg.Error) as exc:
            if busy_wait is not None and isinstance(exc, PoolTimeout):
                assert route is not None
                route.lost = True
                raise DatabaseUnavailableError(
                    f"no free connection to read replica {self.where} within {busy_wait:g}s: "
                    f"all {self._max_size} are busy",
                    public="the server is overloaded (no free database connection)",
                    retry_after=1.0,
                    busy=True,
                ) from None
            if wait_s is not None and isinstance(exc, PoolTimeout):
                raise  # a short wait ran out (see Database.connection): busy, not down
            if isinstance(exc, DatabaseUnavailableError) and exc.busy:
                # every pooled connection in use, the replica answering: load, not a
                # failure. Marked down, its pool was closed and every read sent to the
                # primary until the next probe reopened it (pools churned under load);
                # only this read is run again on the primary, the replica stays in use
                route = _route.get()
                if route is not None:
                    route.lost = True
                raise
            conflict = recovery_conflict(exc)
            fault = server_fault(exc) if conflict is None else None
            if fault is not None:
                # the replica's server failed of itself: not this read's doing, and the
                # primary may serve it; the replica is left out of reads for a while
                if route is not None:
                    route.lost = True
                self.router.note_fault(self, fault)
                raise
            if conflict is None:
                down = replica_unusable(exc)
                if down is None:  # 57P01: a fast shutdown, or one session terminated
                    down = not self.answers()
                if down:
                    self._failed(exc)
                if isinstance(exc, DatabaseUnavailableError) and route is not None:
                    # the read's own (a configured limit, its session ended, a write
                    # refused by the standby): the replica serves on, the primary may
                    # serve this read
                    route.lost = True
                raise
            # the standby's replay needed what the read held (a lock, rows): the replica
            # is fine and the caller raced nothing; the read is run again on the primary
            route = _route.get()
            if route is not None:
                route.lost = True
            self.router.note_conflict(self)
            # (the message is the caller's to read: no replica address in it)
            reason = (str(conflict).strip() or type(conflict).__name__).splitlines()[0]
            raise StatementCancelledError(
                "a read replica cancelled the read to replay the primary's changes "
                f"({reason}); only this request failed, retry it",
                retry_after=1.0,
            ) from exc

    def _check_replayed(
        self, conn: psycopg.Connection[tuple[object, ...]], route: Route, min_lsn: int
    ) -> None:
        """Refuse a read-your-writes read on a connection whose server has not replayed
        the caller's write (:class:`ReplicaBehindError`; the route is flagged, so the API
        runs the read again on the primary). The replica stays in use.

        The router asks its probe connection how far the replica has replayed, and the read
        runs on a pooled connection: with a multi-host URL (``host=h1,h2``,
        ``load_balance_hosts=random``, a host that failed over) the two can reach different
        servers, and a read carrying the caller's position was served by a host without
        that write. Asked on the read's own connection, it is the server that answers."""
        idle = conn.info.transaction_status == TransactionStatus.IDLE
        reached = lsn.replayed(conn)
        if idle and not conn.autocommit:
            # the read finds its connection as the pool gave it (no transaction open, so
            # free to set autocommit), and its snapshot is taken after this check
            conn.rollback()
        if reached is not None and reached >= min_lsn:
            return
        route.lost = True
        raise ReplicaBehindError(
            # (the caller's to read: no replica address in it)
            "the read replica reached has not replayed your last write "
            f"({lsn.HEADER} {lsn.format_lsn(min_lsn)}); retry, or read from the primary",
            retry_after=1.0,
        )

    def _busy_wait_s(self) -> float:
        """A routed read's wait for this pool: :data:`BUSY_REPLICA_WAIT_S`, or the pool
        timeout where that is shorter."""
        return min(BUSY_REPLICA_WAIT_S, self._timeout)

    def _failed(self, exc: BaseException) -> NoReturn:
        self.router.mark_down(self, str(exc))
        route = _route.get()
        if route is not None:
            route.lost = True
        raise DatabaseUnavailableError(f"read replica {self.where} failed: {exc}") from None


# SQLSTATEs of a hot standby's "canceling statement due to conflict with recovery" (and
# its FATAL "terminating connection ..."): 40001 for a lock, snapshot, buffer pin or
# tablespace replay needed, 40P01 for a deadlock with the startup process
RECOVERY_CONFLICT = frozenset({"40001", "40P01"})


# SQLSTATEs of a session ended because its server cannot serve now: a crash (57P02), a
# server starting up, recovering or shutting down (57P03), its database dropped (57P04, the
# primary's DROP DATABASE replayed); with class 08, a connection that failed
SERVER_GONE = frozenset({"57P02", "57P03", "57P04"})
# ... and the one a fast shutdown sends each session, and pg_terminate_backend one of them
# while the server runs on: whether the server still takes a connection tells them apart
SESSION_TERMINATED = "57P01"


def replica_unusable(exc: BaseException) -> bool | None:
    """Whether a routed read's failure ``exc`` says its replica cannot serve reads now
    (True: mark it down), or is the read's own (False: the replica stays in use); None
    for :data:`SESSION_TERMINATED`, which the server's answer to a fresh connection decides.

    Every ``DatabaseUnavailableError`` and raw ``OperationalError`` marked the replica down,
    its pool closed and every read sent to the primary until the next probe: among them a
    statement a healthy standby refused for that read alone (``temp_file_limit``, 53400;
    out of memory, 53200), a session an administrator or ``idle_session_timeout`` ended
    (57P01, 57P05) and a write refused by the read-only standby (25006). Only no answer
    from the server (no SQLSTATE: a connection refused, lost or cut by ``read_timeout_s``;
    a pool that lent nothing; the replica's breaker open), class 08 and
    :data:`SERVER_GONE` are the server's. A recovery conflict (40001, 40P01) is told apart
    before (:func:`recovery_conflict`); a cancel (57014) and the rest are the read's."""
    if isinstance(exc, DatabaseUnavailableError) and exc.busy:
        return False
    cause = exc if isinstance(exc, psycopg.Error) else exc.__cause__
    if not isinstance(cause, psycopg.Error):
        # ours with no database error behind it: the server did not answer (a pool that
        # lent nothing, the breaker open); any other error of ours is the read's
        return isinstance(exc, DatabaseUnavailableError)
    state = cause.sqlstate
    if not state:
        return isinstance(cause, (psycopg.OperationalError, psycopg.InterfaceError))
    if state[:2] == "08" or state in SERVER_GONE:
        return True
    if state == SESSION_TERMINATED:
        return None
    return False


# SQLSTATE classes of a failure the server reports of itself: 58, a system error (a file it
# cannot open, an I/O error), and XX, an internal error (corrupted data or index)
SERVER_FAULT = frozenset({"58", "XX"})


def server_fault(exc: BaseException) -> BaseException | None:
    """The database error in ``exc`` (itself, or behind our error) when the server failed of
    itself (:data:`SERVER_FAULT`): the replica's fault, not the read's."""
    cause = exc if isinstance(exc, psycopg.Error) else exc.__cause__
    state = getattr(cause, "sqlstate", None)
    if cause is not None and state and state[:2] in SERVER_FAULT:
        return cause
    return None


def recovery_conflict(exc: BaseException) -> BaseException | None:
    """The database error in ``exc`` (itself, or behind our error) when it is a read a
    standby cancelled because replaying the primary's WAL needed what the read held.

    ``db/errors.py`` maps class 40 to 409 ``conflict`` ("collided with a concurrent
    change; retry"): right for a write on the primary, wrong for a replica's read, which
    raced nothing of the caller's; the primary can answer it at once. (It tells a recovery
    conflict by the server source file that raised it, ``errors.recovery_conflict``; a
    replica's is told here by SQLSTATE alone: a standby runs no serializable transactions.)"""
    seen: BaseException | None = exc
    for _ in range(5):  # our error, then psycopg's behind it
        if seen is None:
            return None
        if getattr(seen, "sqlstate", None) in RECOVERY_CONFLICT:
            return seen
        seen = seen.__cause__
    return None


def with_keepalives(conninfo: str) -> str:
    """``conninfo`` with :data:`REPLICA_TCP` where it does not set them itself.

    A read sent to a replica whose network path then went silent waited for its answer
    until the system's TCP gave up (no keepalives by default: 15 minutes or more of
    retransmissions, forever for a connection only waiting): ``statement_timeout`` is
    enforced by the server, which is what cannot be heard. With them the connection
    fails within seconds, the replica is marked down and the read is run on the primary."""
    return with_tcp(conninfo, REPLICA_TCP)


class _Replica:
    def __init__(self, db: ReplicaDatabase) -> None:
        self.db = db
        self.status = ReplicaStatus(db.where)
        self.probe_conn: psycopg.Connection[Any] | None = None
        self.conflicts: deque[float] = deque(maxlen=CONFLICT_BACKOFF_COUNT)  # their times
        # left out of reads until then (repeated recovery conflicts, a server fault), and
        # why: its status says so (down, with this error) for as long
        self.avoid_until = float("-inf")
        self.avoid_reason = ""
        self.healthy = False  # the last probe found it usable, a back-off aside
        # probes that failed slowly in a row (see PROBE_SLOW_S), and when the next is due
        self.slow_failures = 0
        self.probe_at = float("-inf")
        self.probing = False  # a background probe of it is under way


class ReadRouter:
    """Picks the server for each read; see the module docstring for the rules."""

    def __init__(
        self,
        primary: Database,
        replica_urls: Sequence[str],
        *,
        max_lag_s: float,
        wait_s: float,
        pool_min_size: int = 1,
        pool_max_size: int = 10,
        connect_timeout_s: float = 5.0,
        probe_interval_s: float = 1.0,
        read_timeout_s: float = 0.0,
    ) -> None:
        self.primary = primary
        # A routed read's bound on a replica connection, 0 = none: past it the connection
        # is cut (client side, see _deadline), the replica marked down and the read run on
        # the primary. A replica whose server is up but does not move (a frozen host, a
        # query waiting on a lock its paused replay holds) is not caught by keepalives,
        # which its kernel answers, nor by statement_timeout, which it may not enforce:
        # the read waited for good with the primary free.
        self.read_timeout_s = read_timeout_s
        self.max_lag_s = max_lag_s
        self.wait_s = wait_s
        self.probe_interval_s = probe_interval_s
        self._replicas: list[_Replica] = []
        for url in replica_urls:
            db = ReplicaDatabase(
                url,
                min_size=pool_min_size,
                max_size=pool_max_size,
                connect_timeout_s=connect_timeout_s,
            )
            db.router = self
            self._replicas.append(_Replica(db))
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._next = 0
        self._primary_conn: psycopg.Connection[Any] | None = None
        self._primary_identity: tuple[int, int] | None = None  # see _identity
        self._history: deque[tuple[float, int]] = deque(maxlen=_HISTORY)
        self._stop = _Stop()  # set by close(): see there
        self._threads: set[threading.Thread] = set()  # background probes (under _lock)
        forks.register(self)

    def _after_fork_in_child(self) -> None:
        """In a forked child: forget the parent's probe connections (its sockets; never
        closed here, which would end the parent's sessions) and locks a parent thread may
        have held at the fork; the replicas' pools forget theirs themselves."""
        self._primary_conn = None
        for r in self._replicas:
            r.probe_conn = None
            r.probing = False  # the parent's probe thread is not the child's
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._threads = set()
        self._stop.after_fork()

    @property
    def _closed(self) -> bool:
        return self._stop.is_set()

    @property
    def has_replicas(self) -> bool:
        return bool(self._replicas)

    def opened_pools(
        self,
    ) -> list[tuple[str, ConnectionPool[psycopg.Connection[tuple[object, ...]]] | None]]:
        """Each replica's name (its ``describe``d URL: user, host and database, never the
        password; the ``replica`` label of its metrics) and its pool while open, else None
        (never opened here): for the pool figures a scrape reads."""
        return [(r.status.name, r.db.opened_pool) for r in self._replicas]

    # --- choosing ---------------------------------------------------------------------

    def choose(self, min_lsn: int | None = None) -> Database:
        """A usable replica (round robin) that has replayed ``min_lsn``, else the primary."""
        self._refresh()
        now = time.monotonic()
        with self._lock:
            usable = [r for r in self._replicas if r.status.up and now >= r.avoid_until]
            if usable:
                start = self._next % len(usable)
                self._next += 1
                usable = usable[start:] + usable[:start]
        if not usable:
            return self.primary
        if min_lsn is None:
            return usable[0].db
        deadline = time.monotonic() + self.wait_s
        while True:
            for r in usable:
                replayed = self._replayed(r, deadline - time.monotonic())
                if replayed is not None and replayed >= min_lsn:
                    return r.db
            if time.monotonic() >= deadline:
                return self.primary
            time.sleep(0.005)

    def note_conflict(self, db: Database) -> None:
        """A routed read on ``db`` was cancelled by its standby's replay (a recovery
        conflict). After :data:`CONFLICT_BACKOFF_COUNT` of them within
        :data:`CONFLICT_WINDOW_S`, reads skip it for :data:`CONFLICT_BACKOFF_S`.

        Each conflict is one read run twice, on the replica and again on the primary;
        a standby that kept cancelling reads (the primary's writes taking locks its
        queries held, a short ``max_standby_streaming_delay``) doubled the read load for
        as long as that went on. It is not marked down: it answers, its status and pool
        stay as they are, and it is tried again once the back-off is over. Its status
        and ``ragstore_db_replica_up`` say it is skipped meanwhile, and why."""
        now = time.monotonic()
        for r in self._replicas:
            if r.db is db:
                with self._lock:
                    r.conflicts.append(now)
                    if not (
                        len(r.conflicts) >= CONFLICT_BACKOFF_COUNT
                        and now - r.conflicts[0] <= CONFLICT_WINDOW_S
                    ):
                        continue
                    r.conflicts.clear()
                self._back_off(
                    r,
                    CONFLICT_BACKOFF_S,
                    f"it cancelled {CONFLICT_BACKOFF_COUNT} reads within "
                    f"{CONFLICT_WINDOW_S:g}s to replay the primary's changes (recovery "
                    "conflicts)",
                )

    def note_fault(self, db: Database, fault: BaseException) -> None:
        """A routed read on ``db`` failed with ``fault``, a failure its server reported of
        itself (:func:`server_fault`): reads skip it for :data:`SERVER_FAULT_BACKOFF_S`.

        Not marked down (it answers; its pool stays), but not read from either: every read
        routed there failed the same way, each answered 500 with the primary free."""
        reason = (str(fault).strip() or type(fault).__name__).splitlines()[0]
        state = getattr(fault, "sqlstate", None) or "?"
        for r in self._replicas:
            if r.db is db:
                self._back_off(
                    r,
                    SERVER_FAULT_BACKOFF_S,
                    f"its server failed a read of itself (SQLSTATE {state}: {reason}); see its log",
                )

    def _back_off(self, r: _Replica, seconds: float, why: str) -> None:
        """Leave ``r`` out of reads for ``seconds``, its status down with ``why`` meanwhile."""
        with self._lock:
            r.avoid_until = time.monotonic() + seconds
            r.avoid_reason = f"{why}: reads go to the primary for {seconds:g}s"
            r.status.up = False
            r.status.error = r.avoid_reason
            lag = r.status.lag_s
        log.warning("read replica %s: %s", r.status.name, r.avoid_reason)
        metrics.observe_replica(r.status.name, False, lag)

    def mark_down(self, db: Database, error: str) -> None:
        """Skip ``db`` until a probe finds it answering again; its pool starts afresh then."""
        for r in self._replicas:
            if r.db is db:
                with self._lock:
                    r.status.up = r.healthy = False
                    r.status.error = error.splitlines()[0] if error else "failed"
                    r.status.checked_at = time.monotonic()
                metrics.observe_replica(r.status.name, False, r.status.lag_s)
                db.close()  # connections in use are closed as they come back

    # --- probing ----------------------------------------------------------------------

    def statuses(self) -> list[ReplicaStatus]:
        """Every replica's current status (probing those not checked lately)."""
        self._refresh()
        with self._lock:
            return [ReplicaStatus(**vars(r.status)) for r in self._replicas]

    def _refresh(self) -> None:
        now = time.monotonic()
        stale: list[_Replica] = []
        with self._lock:
            for r in self._replicas:
                if r.slow_failures:
                    # it did not answer last time: probed off the request path, when due
                    if now >= r.probe_at and not r.probing and not self._closed:
                        r.probing = True
                        thread = threading.Thread(
                            target=self._probe_in_background,
                            args=(r,),
                            name="ragstore-replica-probe",
                            daemon=True,
                        )
                        self._threads.add(thread)  # close() joins it
                        thread.start()
                elif now - r.status.checked_at >= self.probe_interval_s or (
                    r.healthy and not r.status.up and now >= r.avoid_until
                ):
                    # (a back-off over: its status says it is skipped until probed)
                    stale.append(r)
        if not stale or not self._probe_lock.acquire(blocking=False):
            return  # fresh, or another request is probing: use what we know
        try:
            if self._closed:
                return  # nothing is opened after close()
            primary_lsn = self._primary_lsn()
            for r in stale:
                if self._closed:
                    break  # close() cut the probe under way: the rest are not begun
                self._probe(r, primary_lsn)
        finally:
            self._release_probe_lock()

    def _primary_lsn(self) -> int | None:
        try:
            if self._primary_conn is None or self._primary_conn.closed:
                self._primary_conn = _connect(self.primary.tcp_conninfo, self._stop)
                with _deadline(self._primary_conn, stop=self._stop):
                    self._primary_identity = _identity(self._primary_conn)
            with _deadline(self._primary_conn, stop=self._stop):
                value = lsn.current(self._primary_conn)
        except psycopg.Error:
            _drop(self._primary_conn)
            self._primary_conn = None
            return None
        self._history.append((time.monotonic(), value))
        return value

    def _probe_in_background(self, r: _Replica) -> None:
        """Probe a replica whose last probe failed slowly, in a thread of its own.

        Probed inline, a blackholed replica (a host that accepts nothing, or accepts and
        never speaks) cost the request that found its status stale the full probe timeout,
        one request a second. Its connection is made here without the probe lock, which
        read-your-writes reads wait for; only the probe's queries on an answering server
        take it. :meth:`close` joins it: the connect gives up once the router is closed."""
        started = time.monotonic()
        try:
            try:
                conn = _connect(r.db.tcp_conninfo, self._stop)
            except psycopg.Error as exc:
                if not self._closed:
                    self._set_down(r, exc, started)
                return
            self._probe_lock.acquire()
            try:
                _drop(r.probe_conn)
                r.probe_conn = conn  # dropped at the release where the router is closed
                if not self._closed:
                    self._probe(r, self._primary_lsn())
            finally:
                self._release_probe_lock()
        finally:
            with self._lock:
                r.probing = False
                self._threads.discard(threading.current_thread())

    def _probe(self, r: _Replica, primary_lsn: int | None) -> None:
        started = time.monotonic()
        try:
            if r.probe_conn is None or r.probe_conn.closed:
                r.probe_conn = _connect(r.db.tcp_conninfo, self._stop)
            with _deadline(r.probe_conn, stop=self._stop):
                state = lsn.replay_state(r.probe_conn)
                identity = _identity(r.probe_conn)
                revision = migrations.current_revision(r.probe_conn)
                unloadable = native.unloadable(r.probe_conn)
        except psycopg.Error as exc:
            _drop(r.probe_conn)
            r.probe_conn = None
            if not self._closed:  # (cut by close(): not the replica's failure)
                self._set_down(r, exc, started)
            return
        if self._closed:
            return  # nothing recorded, no pool closed, once close() is under way
        if self._primary_identity is None:
            # the primary has not answered since the router started: nothing to compare
            # with. Taken as a match, a standby of another cluster (or a URL naming another
            # database) was read from until the primary came back, every read without a
            # position answered 200 from someone else's data
            self._set(
                r,
                up=False,
                lag=None,
                replayed=None,
                error="not checked: the primary does not answer, so this server cannot be "
                "told a standby of the primary's database; it is read from once the primary "
                "answers and it is",
            )
            return
        if identity != self._primary_identity:
            # another cluster's standby, or another database on the primary's standby: its
            # positions say nothing about the primary's, and what it serves is not ours
            self._set(
                r,
                up=False,
                lag=None,
                replayed=None,
                error="another database than the primary's ("
                + (
                    "a standby of another cluster"
                    if identity[0] != self._primary_identity[0]
                    else "the URL names another database on the standby"
                )
                + "): fix its URL in RAGSTORE_READ_DATABASE_URLS",
            )
            return
        if not state.in_recovery:
            # promoted (a failover, a split brain) or a primary of its own: it no longer
            # replays the primary's writes, so whatever it serves falls further behind with
            # each of them, and no lag says so. Skipped, with why; reads go elsewhere.
            self._set(
                r,
                up=False,
                lag=None,
                replayed=None,
                error="not a hot standby (promoted, or a primary): it does not replay the "
                "primary's writes; remove it from RAGSTORE_READ_DATABASE_URLS or make it a "
                "standby of the primary again",
            )
            return
        head = migrations.head_revision()
        if revision != head:
            # not replayed the primary's `db upgrade` yet (or never upgraded): the code's
            # queries would name columns and tables it does not have, or read the old layout
            self._set(
                r,
                up=False,
                lag=None,
                replayed=state.replay_lsn,
                error=f"its schema is at {revision or 'none'}, the code needs {head}: "
                "reads go to the primary until it has replayed `ragstore db upgrade`",
            )
            return
        if unloadable is not None:
            # the functions replayed, the library file not copied: every hybrid and
            # full-text search there fails
            self._set(r, up=False, lag=None, replayed=state.replay_lsn, error=unloadable)
            return
        lag = self._lag(state, primary_lsn)
        if lag is None:
            # at most the time since the newest sample, which it has replayed
            bound = (
                f"at most {time.monotonic() - self._history[-1][0]:.1f}s: " if self._history else ""
            )
            self._set(
                r,
                up=False,
                lag=None,
                replayed=state.replay_lsn,
                error="the primary does not answer, so this replica's lag is unknown ("
                f"{bound}it has replayed all the primary was seen to write); reads go to "
                "the primary until it answers",
            )
            return
        ok = lag <= self.max_lag_s
        self._set(
            r,
            up=ok,
            lag=lag,
            replayed=state.replay_lsn,
            error=None
            if ok
            else f"{lag:.1f}s behind, over RAGSTORE_MAX_REPLICA_LAG_S={self.max_lag_s:g}",
        )

    def _lag(self, state: lsn.ReplayState, primary_lsn: int | None) -> float | None:
        """Seconds since the primary first showed WAL the replica has not replayed.

        A standby streaming from the primary that has replayed all it received is not
        behind: what it lacks is in transit. (One whose stream broke has replayed all it
        received too, and is behind: it is dated like any other.) Otherwise the primary's
        position, sampled at every probe, dates the lag: when an earlier sample was already
        replayed, the first sample past the replica's position dates the oldest unreplayed
        WAL (to within a probe interval). When every sample is past it (the WAL is older
        than what we watched), the age of the last replayed commit is the honest, if
        pessimistic, answer.

        None (unknown) when the primary did not answer this probe and the replica has
        replayed every position sampled: it lags at most the time since the newest sample,
        maybe not at all. The oldest sample or the last replayed commit dated it: a caught-up
        replica was said "48.3s behind" a second after the primary stopped.
        """
        replayed = state.replay_lsn
        if replayed is None or (primary_lsn is not None and replayed >= primary_lsn):
            return 0.0
        now = time.monotonic()
        samples = list(self._history)
        seen_replayed = any(pos <= replayed for _, pos in samples)
        first = next((t for t, pos in samples if pos > replayed), None)
        if seen_replayed and first is not None:
            # the primary had WAL past the replica's position at ``first``: it lacks WAL
            # that old, however it arrives. Streaming and replaying all it received was
            # taken for "in transit, not behind" even so: a standby on a slow or stalled
            # link (its receiver still connected) served reads minutes old at lag 0.
            return max(0.0, now - first)
        if state.replayed_all_received:
            return 0.0  # streaming, replaying as it arrives, and no sample dates a gap
        if first is None and primary_lsn is None:
            return None  # every position seen replayed, none to compare with now
        oldest = samples[0][0] if samples else now
        return max(now - oldest, state.replay_age_s or 0.0)

    def _replayed(self, r: _Replica, wait_s: float) -> int | None:
        """The replica's replay position now (one round trip on its probe connection);
        None when it cannot be read, or the probe lock not had, within about ``wait_s``."""
        if not self._probe_lock.acquire(timeout=max(0.0, wait_s)):
            return None  # a probe holds it (until its deadline at most): not known in time
        try:
            if self._closed:
                return None
            if r.probe_conn is None or r.probe_conn.closed:
                r.probe_conn = _connect(r.db.tcp_conninfo, self._stop)
            with _deadline(r.probe_conn, stop=self._stop):
                state = lsn.replay_state(r.probe_conn)
        except psycopg.Error:
            _drop(r.probe_conn)
            r.probe_conn = None
            return None
        finally:
            self._release_probe_lock()
        return state.replay_lsn if state.in_recovery else None

    def _set_down(self, r: _Replica, exc: psycopg.Error, started: float) -> None:
        """Record a probe that failed with ``exc``, begun at ``started`` (monotonic): one
        that failed slowly puts the replica in its back-off (see :data:`PROBE_SLOW_S`)."""
        self._set(
            r,
            up=False,
            lag=None,
            replayed=None,
            error=str(exc).strip() or "down",
            slow=time.monotonic() - started >= PROBE_SLOW_S,
        )

    def _set(
        self,
        r: _Replica,
        *,
        up: bool,
        lag: float | None,
        replayed: int | None,
        error: str | None,
        slow: bool = False,
    ) -> None:
        """Record a probe's finding; ``slow``: it failed slowly (see :data:`PROBE_SLOW_S`),
        so the replica's next probe waits for its back-off and runs in the background."""
        with self._lock:
            was_up = r.healthy
            r.healthy = up
            now = time.monotonic()
            avoided = up and now < r.avoid_until  # backed off: skipped, and shown so
            r.status.up = up and not avoided
            r.status.lag_s = lag
            r.status.replay_lsn = replayed
            r.status.error = r.avoid_reason if avoided else error.splitlines()[0] if error else None
            r.status.checked_at = now
            shown_up = r.status.up
            if slow:
                backoff = self.probe_interval_s * 2 ** min(r.slow_failures, 16)
                r.slow_failures += 1
                r.probe_at = now + min(max(backoff, self.probe_interval_s), PROBE_BACKOFF_MAX_S)
            else:
                r.slow_failures = 0
        if up and not was_up:
            r.db.close()  # drop connections a past outage may have broken
        metrics.observe_replica(r.status.name, shown_up, lag)

    def _release_probe_lock(self) -> None:
        """Release the probe lock, first closing the probe connections where the router
        was closed meanwhile: see :meth:`close`."""
        try:
            if self._closed:
                self._drop_probe_conns()
        finally:
            self._probe_lock.release()

    def _drop_probe_conns(self) -> None:
        """Close the primary's and every replica's probe connection (the probe lock held)."""
        for r in self._replicas:
            _drop(r.probe_conn)
            r.probe_conn = None
        _drop(self._primary_conn)
        self._primary_conn = None

    def close(self) -> None:
        """Close every pool and probe connection, once every probe under way has ended.

        A probe (a request's, holding the probe lock, or a background one) connects and
        queries for a probe timeout per host of a multi-host URL, per replica in turn: this
        waited up to 10 s for it (a shutdown of ``serve``, the worker or the client hung that
        long) and then returned beside it, the probe closing its replica's pool and opening
        connections after the close. Closing cuts it now (see :class:`_Stop`): its connect
        gives up within a tenth of a second, its query's socket is shut down, it begins
        nothing more and records nothing; it is waited for, up to :data:`CLOSE_WAIT_S`.
        Where that ran out all the same, whoever holds the probe lock closes the probe
        connections as it releases it."""
        self._stop.set()
        deadline = time.monotonic() + CLOSE_WAIT_S
        with self._lock:
            threads = list(self._threads)  # none start once the stop is set
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        held = self._probe_lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
        if not held or any(t.is_alive() for t in threads):
            log.warning(
                "read replica probes still under way %gs after the router was closed",
                CLOSE_WAIT_S,
            )
        try:
            for r in self._replicas:
                r.db.close()
            if held:
                self._drop_probe_conns()
        finally:
            if held:
                self._probe_lock.release()


def _identity(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """The cluster's system identifier and the database's OID: the same on a primary and
    on each of its physical standbys, for the same database (both readable by any role).

    The probe took any server in recovery for a replica of the primary: a standby of
    another cluster, or a URL naming another database on the right standby, was read
    from, every read without a position answered from someone else's data."""
    row = conn.execute(
        "SELECT (SELECT system_identifier FROM pg_control_system()),"
        " (SELECT oid FROM pg_database WHERE datname = current_database())::int8"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


@contextmanager
def _deadline(
    conn: psycopg.Connection[Any],
    seconds: float = PROBE_QUERY_TIMEOUT_S,
    *,
    stop: _Stop | None = None,
) -> Iterator[None]:
    """Cut ``conn``'s socket if the block has not finished within ``seconds``, or as soon
    as ``stop`` is set (the router closed).

    A server that stops answering on an open connection (packets dropped on the way, a
    stopped or wedged backend) left the probe's query waiting for good: ``/readyz`` hung
    in it, and every read-your-writes read behind it on the probe lock. A server-side
    ``statement_timeout`` cannot help (the server is what does not answer); shutting the
    socket down wakes the waiting query, which fails as a lost connection does."""

    lock = threading.Lock()
    finished = False  # under lock: the block is over, its descriptor may be closed and reused

    def cut() -> None:
        with lock, suppress(OSError, ValueError, psycopg.Error):
            if finished:
                return
            # a duplicate of the connection's descriptor: shut down, it ends the connection
            # for both; closed, it leaves the connection's own descriptor to psycopg
            sock = socket.socket(fileno=os.dup(conn.fileno()))
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.close()

    timer = threading.Timer(seconds, cut)
    timer.daemon = True
    timer.start()
    try:
        with stop.cutting(cut) if stop is not None else nullcontext():
            yield
    finally:
        timer.cancel()
        with lock:
            finished = True


def _drop(conn: psycopg.Connection[Any] | None) -> None:
    """Close a probe connection that failed (its socket may be shut down, not closed)."""
    if conn is not None:
        with suppress(psycopg.Error, OSError):  # its socket may be shut down already
            conn.close()


class _Stop:
    """A router's close, as its probes see it: :meth:`set` by ``close()``, checked by a
    probe between its steps (each replica), and it cuts the step under way: a connect gives
    up at its next poll (see :class:`_ProbeConnection`), a query has its socket shut down
    (see :func:`_deadline`)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._cuts: set[Callable[[], None]] = set()

    def after_fork(self) -> None:
        """In a forked child: a parent thread may have held the lock; its cuts are its own."""
        self._lock = threading.Lock()
        self._cuts = set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        with self._lock:
            self._event.set()
            cuts = list(self._cuts)
        for cut in cuts:
            cut()

    @contextmanager
    def cutting(self, cut: Callable[[], None]) -> Iterator[None]:
        """Run a block that ``cut`` ends when the stop is set (at once, where it is)."""
        with self._lock:
            self._cuts.add(cut)
            stopped = self._event.is_set()
        try:
            if stopped:
                cut()
            yield
        finally:
            with self._lock:
                self._cuts.discard(cut)


# The stop of the router whose probe is connecting in this thread (see _connect)
_connect_stop: ContextVar[_Stop | None] = ContextVar("ragstore_probe_stop", default=None)


class _ProbeConnection(psycopg.Connection[Any]):
    """A probe's connection, whose connect gives up once its router is closed.

    psycopg connects host by host (a multi-host URL, each address a name resolves to), a
    ``connect_timeout`` each, and none of it could be cut short: closing the router waited
    for it or left it running. psycopg drives the connect as a generator, resumed at least
    every tenth of a second while the socket is silent; this one fails there once the
    router's stop is set, and every attempt after it before it begins. (``_connect_gen`` is
    psycopg's, pinned in pyproject; the test of a prompt close fails if it is renamed.)"""

    @classmethod
    def _connect_gen(cls, conninfo: str = "") -> PQGenConn[Self]:
        stop = _connect_stop.get()
        gen = super()._connect_gen(conninfo)
        try:
            if stop is not None and stop.is_set():
                raise psycopg.OperationalError("the read router was closed")
            step = next(gen)
            while True:
                ready = yield step
                if stop is not None and stop.is_set():
                    raise psycopg.OperationalError("the read router was closed")
                step = gen.send(ready)
        except StopIteration as done:
            conn: Self = done.value
            return conn
        finally:
            gen.close()  # an attempt given up: its libpq connection (and socket) is finished


def _connect(conninfo: str, stop: _Stop | None = None) -> psycopg.Connection[Any]:
    """A probe's connection; its connect gives up once ``stop`` is set."""
    token = _connect_stop.set(stop)
    try:
        return _ProbeConnection.connect(
            make_conninfo(conninfo, connect_timeout=PROBE_TIMEOUT_S), autocommit=True
        )
    finally:
        _connect_stop.reset(token)


def wait_for_replay(db: Database, min_lsn: int, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for the standby behind ``db`` to replay ``min_lsn``.

    For a server that reads a replica alone: True once it has. A server no longer in
    recovery (promoted) has the position once its own WAL has reached it: "not a standby"
    was taken for "has every write", and a standby promoted while the primary took writes
    on (a failover half done, a split brain) answered reads at once without the caller's
    write, which it never receives.
    """
    deadline = time.monotonic() + timeout_s
    with db.connection() as conn:
        while True:  # the replay position is read live, not from the transaction's snapshot
            state = lsn.replay_state(conn)
            reached = lsn.current(conn) if not state.in_recovery else (state.replay_lsn or 0)
            if reached >= min_lsn:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)


# --- the per-request route ------------------------------------------------------------------


@dataclass
class Route:
    """One read request's routing: where it runs, chosen on its first database use."""

    router: ReadRouter
    min_lsn: int | None = None
    primary_only: bool = False
    lost: bool = False  # a replica failed under this request: run it again on the primary
    target: Database | None = field(default=None)

    def database(self) -> Database:
        if self.target is None:
            self.target = (
                self.router.primary if self.primary_only else self.router.choose(self.min_lsn)
            )
        return self.target

    @property
    def on_replica(self) -> bool:
        return self.target is not None and self.target is not self.router.primary

    def settled(self) -> None:
        """Count the read where it ran (``ragstore_db_reads_total``), by the attempt whose
        answer was sent: counted where first routed, a read run again on the primary after
        its replica failed counted as the replica's, and one sent to the primary alone
        (``RAGStore-LSN: primary``) not at all."""
        if self.target is not None:
            metrics.record_read("replica" if self.on_replica else "primary")


_route: ContextVar[Route | None] = ContextVar("ragstore_read_route", default=None)


def current_route() -> Route | None:
    """The read route of the running request, or None (then everything is the primary's)."""
    return _route.get()


_own_writes: ContextVar[bool] = ContextVar("ragstore_reads_own_writes", default=False)


def reads_own_writes() -> bool:
    """The running read carries its caller's last write (``RAGStore-LSN``: a position, or
    ``primary``): it must see that write, so it uses no cached collection row (another
    process, another ``serve`` worker, may have made the write that changed the row)."""
    return _own_writes.get()


@contextmanager
def reading_own_writes(active: bool = True) -> Iterator[None]:
    """Run a block (and the threads it hands work to) as a read that must see its caller's
    last write (:func:`reads_own_writes`), when ``active``."""
    if not active:
        yield
        return
    token = _own_writes.set(True)
    try:
        yield
    finally:
        _own_writes.reset(token)


@contextmanager
def routed(route: Route) -> Iterator[Route]:
    """Run a block (and the threads it hands work to) as a routed read."""
    token = _route.set(route)
    try:
        yield route
    finally:
        _route.reset(token)
