"""A per-key token bucket: ``per_minute`` requests a minute, bursts up to the same number.

Kept in process memory: with several uvicorn workers each enforces the limit on its own
share of the traffic, which bounds a key without a round trip to the database per request.
"""

from __future__ import annotations

import threading
import time

from ragstore.errors import RateLimitedError


class RateLimiter:
    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._lock = threading.Lock()

    def hit(self, key: str) -> None:
        """Spend one request of ``key``'s budget or raise RateLimitedError."""
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * self._rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self._rate
                raise RateLimitedError(
                    f"API key {key} is over its limit of {self.per_minute} requests a minute; "
                    f"retry in {wait:.1f}s", retry_after=wait)
            self._buckets[key] = (tokens - 1.0, now)
