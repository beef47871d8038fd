"""Per-key token buckets: ``per_minute`` requests a minute, bursts up to the same number.

With a database the buckets live in PostgreSQL (``db/ratelimits.py``), so the limit holds
across every uvicorn worker and every server on that database. Without one, or when the
database is read-only (a standby) or down, each process keeps its own buckets in memory:
then N processes allow up to N times the limit, which still bounds a key.

A request counted and then never run (shed 503 ``overloaded`` while it waited for a worker
thread, api/shed.py) is given its token back (:meth:`RateLimiter.give_back`), where it was
taken: the token is taken before the wait, so a caller over its limit is refused at once
rather than after queueing behind the load, and returned when that wait runs out. Counted,
a shed call and the client's automatic retry of it cost two tokens for no work, and a
client near its limit was pushed into 429 by the server's own overload.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from psycopg_pool import PoolTimeout

from ragstore.db import ratelimits
from ragstore.db.database import Database
from ragstore.db.errors import translated
from ragstore.errors import DatabaseError, RateLimitedError

# How long a shed request's give-back of its rate-limit token waits for a pooled connection
GIVE_BACK_WAIT_S = 0.1

log = logging.getLogger("ragstore.auth")


@dataclass(frozen=True)
class Taken:
    """One token taken for ``key``: from PostgreSQL's bucket (``shared``) or this process's."""

    key: str
    shared: bool


class RateLimiter:
    def __init__(self, per_minute: int, db: Database | None = None) -> None:
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._lock = threading.Lock()
        self.db = db
        self.shared = db is not None

    def hit(self, key: str) -> Taken | None:
        """Spend one request of ``key``'s budget or raise RateLimitedError; the token taken
        (None: no limit), for :meth:`give_back`."""
        if self.per_minute <= 0:
            return None
        avail = self._take_shared(key) if self.shared else None
        shared = avail is not None
        if avail is None:
            avail = self._take_local(key)
        if avail < 1.0:
            wait = (1.0 - avail) / self._rate
            raise RateLimitedError(
                f"API key {key} is over its limit of {self.per_minute} requests a minute; "
                f"retry in {wait:.1f}s",
                retry_after=wait,
            )
        return Taken(key, shared)

    def give_back(self, taken: Taken) -> None:
        """Return ``taken`` to its bucket (a request that never ran): never past the limit,
        so a bucket that refilled meanwhile is full, not over. A database that fails here,
        or a pool that lends no connection within :data:`GIVE_BACK_WAIT_S`, leaves the token
        spent (logged): the caller loses one request of its minute.

        It runs before a shed request's 503 goes out, when every worker thread is busy and
        the pool most likely lent out too: waited for as other work waits (the pool's
        timeout, 5 s), it held the 503 that long, on a thread of its own for each shed
        request, and then opened a fresh connection to probe the server."""
        if taken.shared:
            assert self.db is not None
            try:
                with (
                    self.db.connection(wait_s=GIVE_BACK_WAIT_S) as conn,
                    translated("giving back a request's count"),
                ):
                    ratelimits.give_back(
                        conn, f"key:{taken.key}", float(self.per_minute), self._rate
                    )
            except DatabaseError as exc:
                log.warning("a shed request's rate-limit count was not given back: %s", exc.code)
            except PoolTimeout:
                log.warning(
                    "a shed request's rate-limit count was not given back: no free connection"
                )
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(taken.key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * self._rate + 1.0)
            self._buckets[taken.key] = (tokens, now)

    def _take_shared(self, key: str) -> float | None:
        assert self.db is not None
        try:
            with self.db.connection() as conn, translated("counting a request"):
                avail = ratelimits.take(conn, f"key:{key}", float(self.per_minute), self._rate)
        except DatabaseError as exc:
            log.warning("rate limit counted in this process only: %s", exc.code)
            return None
        if avail is None:
            log.warning("the database is read-only: rate limits are counted per process")
            self.shared = False
        return avail

    def _take_local(self, key: str) -> float:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * self._rate)
            self._buckets[key] = (tokens - 1.0 if tokens >= 1.0 else tokens, now)
            return tokens
