"""Throttle failed API-key checks per key id and per client address, before any hashing.

scrypt is slow on purpose, so unthrottled guessing both tries secrets for free and takes
the CPU from everyone else. After ``per_key`` failures of one key id, or ``per_address``
failures from one client address, within ``window_s`` seconds, further attempts are
refused with 429 ``rate_limited`` and ``Retry-After`` without touching the database or
hashing; and at most one unverified secret per key id is checked at a time (concurrent
guesses for the same key are refused rather than queued). Counts live in this process.

A check of an unverified secret is one :meth:`AuthThrottle.attempt`: admitted under the
lock (the counts, then the key id's one slot) and, when it fails, counted under the same
lock before its slot is freed. Checking first and counting after the slot was freed let a
guess that had passed the check while a failure was being hashed take the freed slot: an
eleventh hash of a key id in a window of ten (seen under load in CI).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from ragstore.errors import AuthenticationError, RateLimitedError

_MAX_TRACKED = 50_000


class AuthThrottle:
    def __init__(self, per_key: int = 10, per_address: int = 30, window_s: float = 60.0) -> None:
        self.per_key = per_key
        self.per_address = per_address
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._checking: set[str] = set()  # key ids with a check in flight
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
        with self._lock:
            self._refuse_if_over(key_id, address, time.monotonic())

    def _refuse_if_over(self, key_id: str | None, address: str, now: float) -> None:
        """:meth:`check`, with the lock held."""
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
                    failed_keys=True,
                )

    def failed(self, key_id: str | None, address: str) -> None:
        with self._lock:
            self._record(key_id, address, time.monotonic())

    def _record(self, key_id: str | None, address: str, now: float) -> None:
        """:meth:`failed`, with the lock held."""
        if len(self._failures) > _MAX_TRACKED:
            self._failures.clear()  # bounded memory under a spray of addresses
        for bucket in (f"key:{key_id}" if key_id else None, f"addr:{address}"):
            if bucket is not None:
                self._failures.setdefault(bucket, deque()).append(now)

    @contextmanager
    def attempt(self, key_id: str, address: str) -> Iterator[None]:
        """One check of an unverified secret of ``key_id`` from ``address``: refused (429)
        when the key id or the address failed too often lately, or while another check of
        the key id is in flight; an AuthenticationError raised inside counts as a failure
        before the key id's next check can be admitted."""
        with self._lock:
            self._refuse_if_over(key_id, address, time.monotonic())
            if key_id in self._checking:
                raise RateLimitedError(
                    f"another authentication of API key {key_id} is in progress; retry in 1s",
                    retry_after=1.0,
                )
            self._checking.add(key_id)
        try:
            yield
        except AuthenticationError:
            with self._lock:
                self._record(key_id, address, time.monotonic())
                self._checking.discard(key_id)
            raise
        finally:
            with self._lock:
                self._checking.discard(key_id)
