"""Per-key token buckets: ``per_minute`` requests a minute, bursts up to the same number.

With a database the buckets live in PostgreSQL (``db/ratelimits.py``), so the limit holds
across every uvicorn worker and every server on that database. Without one, or when the
database is read-only (a standby) or down, each process keeps its own buckets in memory:
then N processes allow up to N times the limit, which still bounds a key.
"""

from __future__ import annotations

import logging
import threading
import time

from ragstore.db import ratelimits
from ragstore.db.database import Database
from ragstore.db.errors import translated
from ragstore.errors import DatabaseError, RateLimitedError

log = logging.getLogger("ragstore.auth")


class RateLimiter:
    def __init__(self, per_minute: int, db: Database | None = None) -> None:
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._lock = threading.Lock()
        self.db = db
        self.shared = db is not None

    def hit(self, key: str) -> None:
        """Spend one request of ``key``'s budget or raise RateLimitedError."""
        if self.per_minute <= 0:
            return
        avail = self._take_shared(key) if self.shared else None
        if avail is None:
            avail = self._take_local(key)
        if avail < 1.0:
            wait = (1.0 - avail) / self._rate
            raise RateLimitedError(
                f"API key {key} is over its limit of {self.per_minute} requests a minute; "
                f"retry in {wait:.1f}s",
                retry_after=wait,
            )

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
