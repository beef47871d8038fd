"""The connection pool and the server checks made before any work.

``Database`` is handed a conninfo (from the embedded server or ``RAGSTORE_DATABASE_URL``);
it checks the server version and pgvector, then serves pooled connections with the
pgvector types registered.

One connection's fault is one request's: a pooled connection an administrator ended
(``pg_terminate_backend``) or a restart closed is replaced before a request gets it
(:meth:`Database._check_idle`), and a connection lost in use fails its request alone
while the server still takes new ones; only a server that does not answer opens the
:class:`Breaker`. A cancelled statement is no connection fault at all
(``statement_cancelled``, see ``db/errors.py``).
"""

from __future__ import annotations

import json
import logging
import select
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import psycopg
from pgvector.psycopg import register_vector
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from ragstore import forks
from ragstore.config import Settings, conninfo_problem
from ragstore.db import changes, embedded, server_words
from ragstore.db.errors import disk_full, ends_session, refused_write, translate, translated
from ragstore.errors import DatabaseUnavailableError, ExtensionMissingError, known_address
from ragstore.observability import metrics
from ragstore.validation import INT64_MAX, INT64_MIN

log = logging.getLogger("ragstore.db")

MIN_SERVER_VERSION = 140000
MIN_PGVECTOR = (0, 7, 0)

# How often a backend running a statement for ragstore looks whether its client is still
# there (PostgreSQL 14's client_connection_check_interval; Linux). Without it a client
# that dies mid-statement (kill -9 of an import, a crashed worker) leaves its backend
# running that statement, holding the load's locks, until it next writes to the socket:
# a killed import's BM25 build kept every writer of its collection waiting for minutes.
CLIENT_CHECK_INTERVAL = "5s"
# How often a pooled connection handed out checks that the schema is still the code's
# (Database.guard_schema): a server keeps working at most this long after an upgrade
SCHEMA_RECHECK_S = 5.0
# What psycopg raises for a connection that failed in use: its own errors of the socket,
# and the server's of a session it ended (25P03, idle_in_transaction_session_timeout, is
# an InternalError: it passed out of a block untranslated)
_LOST = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg.errors.IdleInTransactionSessionTimeout,
)
# Sessions the server ended for a setting of its own, whose reason names the setting
NAMES_ITS_END = frozenset({"57P05", "25P03"})
# A connection refused for a connection limit (the server's, a role's, a database's):
# SQLSTATE 53300, which a failed connection does not carry (server_words.py says why): it
# is told by the server's words, in any language PostgreSQL speaks (refused_for_limit)
TOO_MANY_CONNECTIONS = "53300"


def refused_for_limit(exc: psycopg.Error) -> bool:
    """Whether a connection attempt failed on a connection limit: the server is up."""
    if exc.sqlstate is not None:
        return exc.sqlstate == TOO_MANY_CONNECTIONS
    return server_words.says(str(exc), server_words.TOO_MANY_CONNECTIONS)


def is_full(exc: BaseException) -> bool:
    """Whether ``exc`` (a ragstore error translated from a failed connection, or psycopg's
    own) is a refusal for a connection limit: the server answered, and is full."""
    cause = exc if isinstance(exc, psycopg.Error) else exc.__cause__
    return isinstance(cause, psycopg.Error) and refused_for_limit(cause)


# How long a check of the server (readiness, a scrape) waits for one of the process's
# pooled connections when the server refuses a fresh one for its connection limit: well
# within a balancer's probe timeout or a scrape's, and a free connection is lent at once
CHECK_POOL_WAIT_S = 0.5


@dataclass(frozen=True)
class CheckConnection:
    """A connection to check the server on (:meth:`Database.checking`); ``full`` says the
    server refused a fresh one for its connection limit, so this is a pooled one."""

    conn: psycopg.Connection[tuple[object, ...]]
    full: bool

    def ping(self, where: str) -> None:
        """One round trip on the connection: a pooled one may have died since it was
        lent (its errors translated as every use of ``where``'s are)."""
        with translated(f"pinging {where}"):
            self.conn.execute("SELECT 1")


# libpq's TCP settings of every connection ragstore opens, where the URL sets none of its
# own (an operator's values stand). Without them a connection whose path to the server
# went silent (no FIN, no RST: a failover that moved the server's address, a NAT or
# firewall that forgot the flow, a pulled cable) waited on the system's defaults: no
# keepalives for two hours on an idle or waiting connection, about fifteen minutes of
# retransmissions for one with a query unacknowledged, holding a pool connection and a
# request's thread all that while (``statement_timeout`` is the server's, which is what
# cannot be heard). With them it fails in about a minute: keepalives after 30 s idle,
# then 3 probes 10 s apart; ``tcp_user_timeout`` (ms) for data unacknowledged 60 s.
# A healthy connection is never cut, however long its query runs: the server's kernel
# answers the probes. A minute rather than the replicas' seconds (db.routing.REPLICA_TCP):
# the primary has nowhere else to send the work, so a short blip is waited out. libpq
# ignores them on a Unix socket (the embedded server's).
CLIENT_TCP: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 60_000,
}


def missing_tcp(conninfo: str, tcp: Mapping[str, int] = CLIENT_TCP) -> dict[str, int]:
    """The libpq settings of ``tcp`` (:data:`CLIENT_TCP` by default) that ``conninfo``
    does not set itself (any it sets, even to 0, stand); none for a conninfo that does not
    parse (the connection attempt says what is wrong with it). For a client that takes
    them apart from its URL (SQLAlchemy's ``connect_args``)."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return {}
    return {k: v for k, v in tcp.items() if k not in params}


def with_tcp(conninfo: str, tcp: Mapping[str, int] = CLIENT_TCP) -> str:
    """``conninfo`` with the libpq settings ``tcp`` (:data:`CLIENT_TCP` by default) where
    it does not set them itself: any the URL sets, even to 0, stand. A conninfo that does
    not parse is returned as it is (the connection attempt says what is wrong with it)."""
    missing = missing_tcp(conninfo, tcp)
    return make_conninfo(conninfo, **missing) if missing else conninfo


def describe(conninfo: str) -> str:
    """A conninfo fit to print: user, host and database, never the password."""
    try:
        parts = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "(unparseable database URL)"
    host = parts.get("host") or "localhost"
    port = f":{parts['port']}" if parts.get("port") else ""
    # noted: an API caller's text hides it (errors.public_detail), the log and CLI keep it
    return known_address(
        f"postgresql://{parts.get('user', '')}@{host}{port}/{parts.get('dbname', '')}"
    )


def unparseable(exc: psycopg.ProgrammingError) -> DatabaseUnavailableError:
    """The error for a conninfo libpq cannot parse (``exc``, its words), without what
    libpq quotes of it: the piece it stopped at may be a password's."""
    return DatabaseUnavailableError(
        f"RAGSTORE_DATABASE_URL is not a valid PostgreSQL URL: {conninfo_problem(exc)}; "
        "expected postgresql://user:password@host:port/dbname"
    )


def _connection_gone(exc: psycopg.Error, gone: bool | None) -> bool:
    """Whether the connection ``exc`` was raised on is gone (:meth:`Database._lost`)."""
    if gone or ends_session(exc):
        return True
    return gone is None and exc.sqlstate is None


def _readable(fd: int) -> bool:
    """Whether a socket has something to read (or its peer closed it), without waiting."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


class Breaker:
    """Fail fast while the database is down instead of making every request wait.

    After a connection failure the breaker opens for a back-off (1 s, doubling to
    ``max_open_s``); meanwhile :meth:`check` raises at once with the seconds left as
    ``retry_after``. When it runs out one caller probes (the others still fail fast);
    success closes it, failure opens it again for longer.
    """

    def __init__(self, max_open_s: float = 5.0) -> None:
        self.max_open_s = max_open_s
        self.failures = 0
        self.open_until = 0.0
        # the failure that opened it: its reason is repeated while it fails fast, since
        # "the database is down" alone hid a full disk (the server up, its disk full)
        self.last: DatabaseUnavailableError | None = None
        self._lock = threading.Lock()

    def failing(self, message: str, retry_after: float) -> DatabaseUnavailableError:
        """The error a caller the breaker turns away gets: ``message`` and the reason of
        the failure that opened it (its public part, never the database's address)."""
        last, generic = self.last, "the database is unavailable"
        if last is None:
            return DatabaseUnavailableError(message, public=generic, retry_after=retry_after)
        return DatabaseUnavailableError(
            f"{message}; the last failure: {last.message}",
            public=generic if last.public == generic else f"{generic}: {last.public}",
            retry_after=retry_after,
        )

    def note(self, cause: DatabaseUnavailableError) -> None:
        """Why the last probe failed (an embedded server that would not start: its disk
        full, say), repeated by the calls turned away until the next probe."""
        with self._lock:
            self.last = cause

    def check(self) -> bool:
        """Raise while open; True when the caller should probe before using the pool."""
        with self._lock:
            if self.failures == 0:
                return False
            now = time.monotonic()
            if now < self.open_until:
                raise self.failing(
                    "the database is down (failing fast until it answers again)",
                    self.open_until - now,
                )
            self.open_until = now + 1.0  # this caller probes; the others wait for it
            return True

    def trip(self, cause: DatabaseUnavailableError | None = None) -> float:
        """Record a failure (``cause``, when known); the seconds the breaker stays open."""
        with self._lock:
            if cause is not None:
                self.last = cause
            self.failures += 1
            wait = min(self.max_open_s, 2.0 ** (self.failures - 1))
            self.open_until = time.monotonic() + wait
            return wait

    def reset(self) -> None:
        with self._lock:
            self.failures = 0
            self.open_until = 0.0
            self.last = None


@dataclass(frozen=True)
class ServerInfo:
    server_version: int
    pgvector_installed: str | None
    pgvector_available: str | None


def _stored_int(text: str) -> int | float:
    """An integer of stored JSON; one outside the 64-bit range as the float it was.

    PostgreSQL keeps a ``jsonb`` number as ``numeric`` and writes it back without an
    exponent: metadata ``{"x": 1e20}`` was read as the integer 100000000000000000000 (and
    ``1.5e300`` as an integer of 301 digits, not even equal to it), which every write
    refuses as beyond 64 bits, so metadata read from ragstore could not be written back.
    Writes take no integer beyond 64 bits (:mod:`ragstore.validation`): such a number
    stored was a float."""
    if len(text) < 19:  # no more than 18 digits, sign included: within 64 bits
        return int(text)
    if len(text) > 20:  # 20 characters hold any 64-bit integer, its sign included
        return float(text)  # (and int() refuses more than 4,300 digits)
    value = int(text)
    return value if INT64_MIN <= value <= INT64_MAX else float(text)


# Every digit a 0, every other byte a space: a run of 19 digits is the shortest that can be an
# integer beyond 64 bits (a fraction's or a string's digits match too, and only cost the
# slower read). A translation and a search run in C, several times faster than a regex.
_DIGITS_ONLY = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))  # "0" or " "
_LONG_RUN = b"0" * 19


def stored_json(data: str | bytes | memoryview) -> Any:
    """JSON (``json``, ``jsonb``) as ragstore's connections read it: :func:`_stored_int`'s
    numbers. Text without a run of 19 digits is read by the plain reader (a Python
    ``parse_int`` call per integer doubled the read of integer-heavy metadata)."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if not _has_long_digits(raw):
        return json.loads(raw)
    return json.loads(raw, parse_int=_stored_int)


def _has_long_digits(raw: bytes) -> bool:
    return _LONG_RUN in raw.translate(_DIGITS_ONLY)


class Database:
    """A pool of connections to one PostgreSQL database, pgvector types registered."""

    # libpq's TCP defaults of this database's connections (see :data:`CLIENT_TCP`)
    tcp: ClassVar[Mapping[str, int]] = CLIENT_TCP
    # the ``pool`` label of its connection waits (ragstore_db_pool_acquire_duration_seconds)
    pool_label: ClassVar[str] = "primary"

    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout_s: float = 5.0,
        embedded: bool = False,
    ) -> None:
        self.conninfo = conninfo
        self.embedded = embedded
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = connect_timeout_s
        self._pool: ConnectionPool[psycopg.Connection[tuple[object, ...]]] | None = None
        # the first requests of a server reach for the pool together: one opens it (a
        # second pool, built and overwritten, would never be closed; the garbage collector
        # then stops it on one of its own threads: "cannot join current thread")
        self._pool_open_lock = threading.Lock()
        # pooled connections lent to blocks now: the pool's own pool_size also counts the
        # ones it is still trying to make (:meth:`checking` tells a pool that holds a
        # live connection from one retrying against a full server)
        self._lent = 0
        self._lent_lock = threading.Lock()
        self.breaker = Breaker()
        self.data_dir: Path | None = None  # the embedded server's, to restart it
        # the schema check a Runtime gives its primary (:meth:`guard_schema`)
        self._schema_check: Callable[[psycopg.Connection[tuple[object, ...]]], None] | None = None
        self._schema_checked = 0.0
        forks.register(self)

    def _after_fork_in_child(self) -> None:
        """In a forked child: forget the parent's pool, so the next call opens this
        process's own (see :mod:`ragstore.forks`). The pool is not closed, which would
        end the parent's sessions (psycopg leaves a connection made in another process
        open when it is collected), and it is marked closed so that collecting it does not
        signal and wait for worker threads that only the parent has. Its locks may have
        been held by a parent thread at the fork: new ones."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool._closed = True
        self._pool_open_lock = threading.Lock()
        self._lent = 0
        self._lent_lock = threading.Lock()
        self.breaker = Breaker()

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        """Start the embedded server when no URL is set; otherwise use the URL."""
        if settings.database_url is None:
            conninfo = embedded.start(settings.data_dir)
            is_embedded = True
        else:
            conninfo = settings.database_url.get_secret_value()
            is_embedded = False
        db = cls(
            conninfo,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            connect_timeout_s=settings.connect_timeout_s,
            embedded=is_embedded,
        )
        if is_embedded:
            db.data_dir = settings.data_dir
        return db

    @property
    def where(self) -> str:
        return describe(self.conninfo)

    @property
    def tcp_conninfo(self) -> str:
        """:attr:`conninfo` with :attr:`tcp`'s defaults: what this class's own connections
        use. ``conninfo`` itself stays the operator's, for the callers that add TCP
        settings of their own (a job's lock session: ``jobs.liveness.LOCK_TCP``)."""
        return with_tcp(self.conninfo, self.tcp)

    def connect(
        self, *, autocommit: bool = False, timeout_s: float | None = None
    ) -> psycopg.Connection[tuple[object, ...]]:
        """A new connection outside the pool (for migrations and admin work), given up
        after ``timeout_s`` (default ``RAGSTORE_CONNECT_TIMEOUT_S``; whole seconds, at
        least one: libpq's unit)."""
        wait = self._timeout if timeout_s is None else min(timeout_s, self._timeout)
        with translated(f"connecting to {self.where}"):
            try:
                params = make_conninfo(self.tcp_conninfo, connect_timeout=max(1, int(wait)))
            except psycopg.ProgrammingError as exc:
                raise unparseable(exc) from None
            conn = psycopg.connect(params, autocommit=autocommit)
            try:
                self._configure_session(conn)
            except psycopg.Error:
                conn.close()
                raise
            return conn

    @contextmanager
    def checking(
        self, *, wait_s: float = CHECK_POOL_WAIT_S, connect_s: float | None = None
    ) -> Iterator[CheckConnection]:
        """A connection to check the server on (``/readyz``, the scrape's
        ``ragstore_db_up``): a fresh one, so a pool that every request holds is not read
        as a database down, and, when the server refuses that for its connection limit
        (SQLSTATE 53300: ``max_connections``, a role's or the database's ``CONNECTION
        LIMIT``), one of this process's pooled connections, lent within ``wait_s``.

        A server at its limit answers every pooled connection: taken for down, it had
        every API server drained by its balancer and paged ``RagstoreDatabaseDown``.
        When the server is full and no pooled connection is free in time this raises
        ``DatabaseUnavailableError`` with ``busy`` set (full and busy: load, not a
        fault); when the process's pool holds no connection it raises it without (this
        process cannot reach the database at all), and :func:`is_full` tells both from a
        server down. Neither asks the pool for a connection it does not have idle.
        ``connect_s`` bounds the fresh connection's connect (see :meth:`connect`)."""
        try:
            conn = self.connect(autocommit=True, timeout_s=connect_s)
        except DatabaseUnavailableError as exc:
            if not is_full(exc):
                raise
            refusal = exc
        else:
            with conn:
                yield CheckConnection(conn, full=False)
            return
        # The pool's own figures decide before it is asked: a request that timed out
        # would count in ragstore_db_pool_timeouts_total (whose alert pages at once) and
        # in the acquire histogram, so a check every second would page by itself; and a
        # pool holding no connection (its connections lost with a restart, the slots
        # taken by other clients since: none lent, none idle, whatever pool_size says of
        # the ones it is still trying to make) cannot lend one: this process is not ready.
        stats = metrics.pool_stats(self._pool)
        if not stats.get("pool_available") and not self._lent:
            raise DatabaseUnavailableError(
                f"{refusal}; this process holds no connection to it: free connections on "
                "the server or raise its max_connections (or the role's or database's "
                "CONNECTION LIMIT)",
                public="the database refuses new connections (connection limit reached)",
            ) from refusal.__cause__
        busy = DatabaseUnavailableError(
            f"{refusal}; every pooled connection of this process is in use",
            public="the database refuses new connections (connection limit reached) "
            "and every pooled connection is in use",
            retry_after=1.0,
            busy=True,
        )
        if not stats.get("pool_available"):
            raise busy from refusal.__cause__
        try:
            with self.connection(wait_s=wait_s) as pooled:
                yield CheckConnection(pooled, full=True)
        except PoolTimeout:  # another request took the idle one first
            raise busy from refusal.__cause__

    def server_info(self) -> ServerInfo:
        with self.connect(autocommit=True) as conn, translated(f"inspecting {self.where}"):
            shown = conn.execute("SHOW server_version_num").fetchone()
            version = int(str(shown[0])) if shown else 0
            row = conn.execute(
                "SELECT default_version, installed_version FROM pg_available_extensions "
                "WHERE name = 'vector'"
            ).fetchone()
        available = str(row[0]) if row else None
        installed = str(row[1]) if row and row[1] else None
        return ServerInfo(version, installed, available)

    def check_server(self) -> ServerInfo:
        """Refuse servers that cannot run ragstore, saying exactly what is missing."""
        info = self.server_info()
        if info.server_version < MIN_SERVER_VERSION:
            raise ExtensionMissingError(
                f"{self.where} runs PostgreSQL {info.server_version // 10000}; ragstore needs "
                f"PostgreSQL 14 or newer"
            )
        if info.pgvector_available is None:
            raise ExtensionMissingError(
                f"pgvector is not installed on {self.where}: install pgvector 0.7 or newer on the "
                "server (e.g. the postgresql-NN-pgvector package), then run `ragstore db upgrade`"
            )
        newest = info.pgvector_installed or info.pgvector_available
        if _version_tuple(newest) < MIN_PGVECTOR:
            raise ExtensionMissingError(
                f"pgvector {newest} on {self.where} is too old: ragstore needs 0.7 or newer "
                "(upgrade the package, then run ALTER EXTENSION vector UPDATE)"
            )
        return info

    @staticmethod
    def _configure_session(conn: psycopg.Connection[tuple[object, ...]]) -> None:
        """Session settings of every ragstore connection, committed at once (a ``SET``
        inside a transaction the caller later rolls back would be undone with it). A
        server on a platform without the check (Windows) refuses any value but 0, and one
        older than PostgreSQL 14 has no such setting: their connections go on without it
        (an old server is then refused by :meth:`check_server`, which this runs before).
        Its JSON is read by :func:`stored_json`."""
        set_json_loads(stored_json, conn)
        try:
            conn.execute(
                "SELECT set_config('client_connection_check_interval', %s, false)",
                (CLIENT_CHECK_INTERVAL,),
            )
        except (psycopg.errors.InvalidParameterValue, psycopg.errors.UndefinedObject):
            conn.rollback()
            return
        conn.commit()

    @classmethod
    def _configure(cls, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        register_vector(conn)
        cls._configure_session(conn)

    @property
    def opened_pool(self) -> ConnectionPool[psycopg.Connection[tuple[object, ...]]] | None:
        """The pool if it is open, else None (never opens it): for its figures
        (``get_stats()``), which a readiness check or a scrape reads without creating it."""
        return self._pool

    @property
    def pool(self) -> ConnectionPool[psycopg.Connection[tuple[object, ...]]]:
        pool = self._pool
        if pool is not None:
            return pool
        with self._pool_open_lock:
            return self._open_pool()

    def _open_pool(self) -> ConnectionPool[psycopg.Connection[tuple[object, ...]]]:
        if self._pool is None:
            with translated(f"connecting to {self.where}"):
                self._pool = ConnectionPool(
                    self.tcp_conninfo,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    configure=self._configure,
                    check=self._check_idle,
                    open=True,
                    timeout=self._timeout,
                    kwargs={"connect_timeout": max(1, int(self._timeout))},
                    name="ragstore",
                )
                try:
                    self._pool.wait(timeout=self._timeout)
                except PoolTimeout:
                    self._pool.close()
                    self._pool = None
                    raise DatabaseUnavailableError(
                        f"could not connect to {self.where} within {self._timeout:g}s; check "
                        "that the server runs and RAGSTORE_DATABASE_URL is right",
                        public="the database cannot be reached",
                    ) from None
        return self._pool

    def ping(self) -> None:
        """One round trip on a fresh connection (readiness): raises when the server does not
        answer now."""
        with self.connect(autocommit=True) as conn, translated(f"pinging {self.where}"):
            conn.execute("SELECT 1")

    def probe(self) -> bool:
        """Whether a fresh connection can be opened now (quickly: at most 2 s).

        An embedded server that died is started again first, so a crashed postmaster
        comes back with the next request or command.
        """
        if self.embedded and self.data_dir is not None:
            try:
                embedded.start(self.data_dir)
            except DatabaseUnavailableError as exc:
                self.breaker.note(exc)
                return False
        return self.answers()

    def answers(self) -> bool:
        """Whether the server takes a fresh connection now (at most 2 s); an embedded
        server that died is not started here (that is the breaker's probe).

        A refusal for the connection limit (``too many clients``, or the role's or the
        database's ``CONNECTION LIMIT``: SQLSTATE 53300) is an answer: the server is up
        and full. Taken for a server down, a pool timeout at that limit opened the breaker
        and every request for seconds was told the database was unavailable."""
        try:
            with psycopg.connect(
                self.tcp_conninfo, connect_timeout=min(2, max(1, int(self._timeout)))
            ):
                return True
        except psycopg.Error as exc:
            return refused_for_limit(exc)

    def _check_idle(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        """The pool's check of each connection it hands out; no round trip when healthy.

        An idle connection's socket has nothing to read unless the server wrote to it
        unasked: nearly always the connection's end (``pg_terminate_backend``, a restart,
        ``idle_session_timeout``). Only then is it checked with a round trip. A dead one
        raises when the server takes fresh connections: the pool drops it and hands out
        another, after checking its other idle connections at once (a restart ended them
        all). When the server does not answer it is handed out as it is: its request
        fails at once and opens the breaker, as without the check.
        """
        if not _readable(conn.fileno()):
            return
        try:
            ConnectionPool.check_connection(conn)
        except psycopg.Error as exc:
            if not self.answers():
                return
            log.warning("replacing a pooled connection the database closed: %s", exc)
            pool = self._pool
            if pool is not None:
                pool.check()
            raise

    def _lost(self, exc: DatabaseUnavailableError, gone: bool | None = None) -> None:
        """A connection failed in use (``exc``): open the breaker unless the server still
        takes fresh connections, in which case only this connection was lost (ended by
        an administrator, say) and only its request fails. A full disk (SQLSTATE 53100, an
        ``OperationalError`` too) lost no connection: its own reason, which says to free
        space, is kept rather than told as a closed connection to retry at once.

        A write the server answered and refused (its disk full, a read-only database:
        :func:`refused_write`) lost nothing either, and is not even looked into: it opened
        the breaker whenever a fresh connection could not be had at that moment (a new
        backend on a full disk cannot always start), and every read, which the pooled
        connections still served, failed fast for seconds with "the database is down".

        A pool that lent no connection in time (``busy``, or a ``PoolTimeout`` translated by
        a caller that used the pool itself) lost nothing either: a block that asked for a
        second connection while it held one (a bulk load's staging connection, a lookup of
        its reader threads) found every one in use, and that error, passing out through the
        first's block, opened the breaker: every request then failed fast for seconds with
        "the database is down", even those a connection freed a moment later would serve.

        Nor did a statement the server answered and refused on a session it kept (out of
        memory, 53200; a configuration limit such as ``temp_file_limit``, 53400): psycopg
        raises an ``OperationalError`` for it as for a connection lost, and it was told
        "the database closed the connection in use" whenever the server answered. Only
        a connection that is gone counts: ``gone`` is its state when the error left the
        block (``closed``: libpq saw the socket end), None where no connection was lent
        or the error came after (a commit); or an error that says its session ended
        (:func:`ends_session`: class 08, 57P0x, 25P03); or, the connection's state not
        known, one without a SQLSTATE (no word from the server)."""
        cause = exc.__cause__
        if exc.busy or isinstance(cause, PoolTimeout) or refused_write(cause):
            return
        if isinstance(cause, psycopg.Error) and not _connection_gone(cause, gone):
            return  # the server answered; this request's failure, the connection kept
        if isinstance(cause, _LOST) and self.answers():
            if not disk_full(cause):
                exc.retry_after = 1.0
                # said of no surface: the API adds "retry in 1s" (``public_detail``), a
                # job's record what became of its documents; "; retry the request" here
                # was said twice to an API caller and to the reader of a finished job. A
                # session the server ended for a timeout (57P05, 25P03) keeps its reason,
                # which names the setting: it was told as any connection closed
                if cause.sqlstate not in NAMES_ITS_END:
                    exc.public = (
                        "the database closed the connection in use (the server still answers)"
                    )
            return
        exc.retry_after = self.breaker.trip(exc)

    def guard_schema(self, check: Callable[[psycopg.Connection[tuple[object, ...]]], None]) -> None:
        """Run ``check`` on a pooled connection as it is handed out, at most every
        :data:`SCHEMA_RECHECK_S`: it raises (SchemaMismatchError) once the schema is no
        longer the code's.

        The schema was checked when the database was first opened only: a server or Store
        went on reading and writing, for as long as it ran, a schema that ``ragstore db
        upgrade`` (or a downgrade) had changed under it, where its requests were to fail
        with ``schema_mismatch`` until it was restarted on the matching version."""
        self._schema_check = check
        self._schema_checked = time.monotonic()

    def _recheck_schema(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        """:meth:`guard_schema`'s check, when it is due; the connection is left idle."""
        check = self._schema_check
        if check is None or time.monotonic() - self._schema_checked < SCHEMA_RECHECK_S:
            return
        check(conn)
        if not conn.autocommit:
            conn.rollback()  # idle again: a caller may switch it to autocommit
        self._schema_checked = time.monotonic()

    @contextmanager
    def connection(
        self, *, wait_s: float | None = None
    ) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        """A pooled connection; the block is one transaction, committed on success.

        While the database is down this fails at once (see :class:`Breaker`) rather than
        waiting out the connect timeout on every call.

        ``wait_s`` waits that long for a free connection instead of the pool timeout, and
        a pool that lends none within it raises ``PoolTimeout`` as it is: for work that
        is better skipped than waited for under load (a write's WAL position, read after
        its commit, held its answer for up to three pool timeouts). A short wait running
        out says nothing of the server: no probe, no breaker.
        """
        if self.breaker.check():
            if not self.probe():
                wait = self.breaker.trip()
                raise self.breaker.failing(f"{self.where} does not answer", wait)
            if self._pool is not None:
                self._pool.check()  # drop the connections that died with the server
        # the wait for a connection, measured apart: a search's duration includes it, and
        # under pool exhaustion only this says the time went to the pool (opening the pool,
        # for the first request, counts too: that request waited for it)
        started = time.perf_counter()
        # a collection changed on it moves the change counter again once the pool's
        # block has committed or rolled back (db/changes.py)
        with changes.connection_block() as block:
            yield from self._borrowed(block, wait_s, started)

    def _borrowed(
        self, block: changes.ConnectionBlock, wait_s: float | None, started: float
    ) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        """:meth:`connection`'s body: the pooled connection, its errors translated."""
        lent = False
        gone: bool | None = None  # the lent connection's state as an error left the block
        pool: ConnectionPool[psycopg.Connection[tuple[object, ...]]] | None = None
        try:
            pool = self.pool  # (opening it may fail: translated below, as a connection's)
            with pool.connection(timeout=wait_s) as conn:
                block.conn = conn
                lent = True
                with self._lent_lock:
                    self._lent += 1
                try:
                    metrics.observe_pool_acquire(self.pool_label, time.perf_counter() - started)
                    self._recheck_schema(conn)
                    yield conn
                except BaseException:
                    # read before the pool takes it back and closes it, lost or not
                    gone = conn.closed
                    raise
                finally:
                    with self._lent_lock:
                        self._lent -= 1
        except PoolTimeout:
            if not lent:  # (not a PoolTimeout of a nested block's own request)
                metrics.observe_pool_acquire(self.pool_label, time.perf_counter() - started)
            if pool is not None and pool.closed and not lent:
                raise _closed_under_wait() from None
            if wait_s is not None:
                raise
            if self.probe():  # the server answers: every pooled connection is busy
                raise DatabaseUnavailableError(
                    f"no free connection to {self.where} within {self._timeout:g}s: all "
                    f"{self._max_size} are busy; raise RAGSTORE_POOL_MAX_SIZE or lower the load",
                    public="the server is overloaded (no free database connection)",
                    retry_after=1.0,
                    busy=True,
                ) from None
            wait = self.breaker.trip()
            raise DatabaseUnavailableError(
                f"{self.where} does not answer",
                public="the database is unavailable",
                retry_after=wait,
            ) from None
        except PoolClosed:  # closed before the wait ended, by this thread's signal handler
            raise _closed_under_wait() from None
        except DatabaseUnavailableError as exc:
            self._lost(exc, gone)
            raise
        except psycopg.errors.ReadOnlySqlTransaction as exc:
            # a write a read-only server refused (25006: a primary turned standby, a
            # database with default_transaction_read_only on) in a block that did not
            # translate its errors: psycopg's InternalError, none of _LOST, escaped as it
            # was (a 500, a traceback). It is what translated() makes of it, without the
            # database's address (the message is what a caller is told); the server
            # answered and the connection is kept: no breaker (refused_write)
            raise translate(exc, "using the database") from exc
        except _LOST as exc:
            err = translate(exc, f"using {self.where}")  # a cancel: statement_cancelled
            if isinstance(err, DatabaseUnavailableError):
                err.__cause__ = exc
                self._lost(err, gone)
            else:
                # its message is what an API caller and a job's reader are told
                # (public_detail): only database_unavailable has a public text apart, so
                # a cancel's "using postgresql://user@host:port/db" told them the
                # database's address; the log keeps it, the message does not
                log.warning("%s", err)
                err = translate(exc, "using the database")
            raise err from exc
        if self.breaker.failures:
            self.breaker.reset()

    def close(self) -> None:
        with self._pool_open_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


def _closed_under_wait() -> DatabaseUnavailableError:
    """The error of a wait for a connection that the pool's close ended: a ``close()``
    run by a signal handler that interrupted this very wait (a Store closed from a
    SIGALRM or SIGTERM handler) fails the waiter, or, when it takes longer than the wait
    had left (a loaded machine), makes the wait read as run out. It was told "cannot be
    reached", or "all 10 connections are busy": the database was never asked. No breaker;
    ``pool_closed`` on it lets a Store say it was closed (RuntimeError, as any use after
    ``close()``)."""
    err = DatabaseUnavailableError(
        "the database pool was closed while this call waited for a connection (close() "
        "ran during the call): the statement that waited was not run"
    )
    err.pool_closed = True  # type: ignore[attr-defined]
    return err
