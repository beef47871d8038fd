"""Throttle failed API-key checks per key id and per client address, before any hashing.

scrypt is slow on purpose, so unthrottled guessing both tries secrets for free and takes
the CPU from everyone else. After ``per_key`` failures of one key id, or ``per_address``
failures from one client address, within ``window_s`` seconds, further attempts are
refused with 429 ``rate_limited`` and ``Retry-After`` without touching the database or
hashing; and at most one unverified secret per key id is hashed at a time (concurrent
guesses for the same key are refused rather than queued). Counts live in this process.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from ragstore.errors import RateLimitedError

_MAX_TRACKED = 50_000


class AuthThrottle:
    def __init__(self, per_key: int = 10, per_address: int = 30, window_s: float = 60.0) -> None:
        self.per_key = per_key
        self.per_address = per_address
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._hashing: set[str] = set()
        self._lock = threading.Lock()

    def _recent(self, bucket: str, now: float) -> deque[float]:
        times = self._failures.get(bucket)
        if times is None:
            return deque()
        while times and now - times[0] > self.window_s:
            times.popleft()
        if not times:
            del self._failures[bucket]
        return times

    def check(self, key_id: str | None, address: str) -> None:
        """Raise RateLimitedError when this key id or address failed too often lately."""
        now = time.monotonic()
        with self._lock:
            for bucket, limit, what in (
                (f"key:{key_id}", self.per_key, f"API key {key_id}"),
                (f"addr:{address}", self.per_address, f"client {address}"),
            ):
                if bucket == "key:None":
                    continue
                times = self._recent(bucket, now)
                if len(times) >= limit:
                    wait = max(1.0, self.window_s - (now - times[0]))
                    raise RateLimitedError(
                        f"too many failed authentications for {what}; retry in {wait:.0f}s",
                        retry_after=wait,
                    )

    def failed(self, key_id: str | None, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > _MAX_TRACKED:
                self._failures.clear()  # bounded memory under a spray of addresses
            for bucket in (f"key:{key_id}" if key_id else None, f"addr:{address}"):
                if bucket is not None:
                    self._failures.setdefault(bucket, deque()).append(now)

    @contextmanager
    def hashing(self, key_id: str) -> Iterator[None]:
        """One secret check in flight per key id; a concurrent one is refused (429)."""
        with self._lock:
            if key_id in self._hashing:
                raise RateLimitedError(
                    f"another authentication of API key {key_id} is in progress; retry in 1s",
                    retry_after=1.0,
                )
            self._hashing.add(key_id)
        try:
            yield
        finally:
            with self._lock:
                self._hashing.discard(key_id)
