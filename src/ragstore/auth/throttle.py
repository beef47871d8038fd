"""Throttle failed API-key checks per key id and per client address, before any hashing.

scrypt is slow on purpose, so unthrottled guessing both tries secrets for free and takes
the CPU from everyone else. After ``per_key`` failures of one key id from one client
address, ``per_key`` × :data:`KEY_SPREAD` failures of one key id from all addresses, or
``per_address`` failures from one client address, within ``window_s`` seconds, further
attempts are refused with 429 ``rate_limited`` and ``Retry-After`` without touching the
database or hashing; and at most one unverified secret per key id is checked at a time
(concurrent guesses for the same key are refused rather than queued). Counts live in this
process.

A key id's own limit counts per address first: counted over all addresses alone, anyone
who knew a key id (it is printed in logs and error messages) locked its owner out with
ten wrong secrets a minute from anywhere. Now one address cannot reach the key id's
overall limit at all (its own limit is lower), and the overall limit still bounds how
many secrets of one key id are hashed a minute when guesses come from many addresses.

A check of an unverified secret is one :meth:`AuthThrottle.attempt`: admitted under the
lock (the counts, then the key id's one slot) and, when it fails, counted under the same
lock before its slot is freed. Checking first and counting after the slot was freed let a
guess that had passed the check while a failure was being hashed take the freed slot: an
eleventh hash of a key id in a window of ten (seen under load in CI).

A check of the very secret already being checked for the key id waits for that check
(at most :data:`SAME_SECRET_WAIT_S`) instead of being refused: a client whose first
requests to a server process came in parallel (the console loading a page, a batch
with several workers, a server just restarted) had all but one of them refused 429
"another authentication ... in progress" with its valid key. Once the first check is
done the secret is known good (or counted as failed), so the waiter is answered from
that; a different secret for the same key id is still refused at once.
"""

from __future__ import annotations

import hmac
import ipaddress
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from ragstore.errors import AuthenticationError, RateLimitedError

_MAX_TRACKED = 50_000
# how long a check waits for one of the same secret in flight before it is refused (a
# scrypt takes a fraction of a second; a key id's checks are bounded by ``per_key``)
SAME_SECRET_WAIT_S = 10.0
# a key id's failures from all addresses may reach this many times ``per_key``
KEY_SPREAD = 5


def _address_key(address: str) -> str:
    """The form ``address`` is counted under: an IPv4-mapped IPv6 address
    (``::ffff:1.2.3.4``) is its IPv4 address. A forwarded client is written either way
    (a dual-stack proxy or listener), and counted as both it had twice the budget of
    failures per address; anything not an IP address is counted as it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return address


class AuthThrottle:
    def __init__(self, per_key: int = 10, per_address: int = 30, window_s: float = 60.0) -> None:
        self.per_key = per_key
        self.per_address = per_address
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        # key id -> a digest of the secret whose check is in flight
        self._checking: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)  # notified when a check ends

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
        address = _address_key(address)
        for bucket, limit, what in (
            (f"key:{key_id}@{address}", self.per_key, f"API key {key_id} from {address}"),
            (f"key:{key_id}", self.per_key * KEY_SPREAD, f"API key {key_id}"),
            (f"addr:{address}", self.per_address, f"client {address}"),
        ):
            if key_id is None and bucket.startswith("key:"):
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
        address = _address_key(address)
        if len(self._failures) > _MAX_TRACKED:
            self._prune(now)
        buckets = [f"addr:{address}"]
        if key_id:
            buckets += [f"key:{key_id}@{address}", f"key:{key_id}"]
        for bucket in buckets:
            self._failures.setdefault(bucket, deque()).append(now)

    def _prune(self, now: float) -> None:
        """Bound the memory of the counts (lock held): drop the buckets with no failure
        in the window, and only if that is not enough, every bucket.

        A bucket is trimmed only when its key id or address is seen again, so those of
        every scanner that ever failed stayed; once they were :data:`_MAX_TRACKED` the
        whole table was cleared, the live counts with them, and a key id or address
        over its limit could be tried again at once. (Unless the stale ones are at least
        half, all are still dropped.)"""
        stale = [
            b for b, times in self._failures.items() if not times or now - times[-1] > self.window_s
        ]
        for bucket in stale:
            del self._failures[bucket]
        if len(self._failures) > _MAX_TRACKED // 2:
            # a spray within one window: memory stays bounded, and the scan above runs
            # at most once per _MAX_TRACKED / 2 failures
            self._failures.clear()

    @contextmanager
    def attempt(self, key_id: str, address: str, digest: bytes = b"") -> Iterator[None]:
        """One check of an unverified secret of ``key_id`` from ``address``: refused (429)
        when the key id or the address failed too often lately, or while a check of
        another secret of the key id is in flight (one of the same ``digest`` is waited
        for, up to :data:`SAME_SECRET_WAIT_S`; the caller then finds its outcome); an
        AuthenticationError raised inside counts as a failure before the key id's next
        check can be admitted."""
        with self._lock:
            deadline = time.monotonic() + SAME_SECRET_WAIT_S
            while self._same_in_flight(key_id, digest):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._freed.wait(left)
            self._refuse_if_over(key_id, address, time.monotonic())
            if key_id in self._checking:
                raise RateLimitedError(
                    f"another authentication of API key {key_id} is in progress; retry in 1s",
                    retry_after=1.0,
                )
            self._checking[key_id] = digest
        try:
            yield
        except AuthenticationError:
            with self._lock:
                self._record(key_id, address, time.monotonic())
                self._release(key_id)
            raise
        finally:
            with self._lock:
                self._release(key_id)

    def _same_in_flight(self, key_id: str, digest: bytes) -> bool:
        """Whether the secret of ``digest`` is being checked for ``key_id`` (lock held)."""
        flying = self._checking.get(key_id)
        return bool(digest) and flying is not None and hmac.compare_digest(flying, digest)

    def _release(self, key_id: str) -> None:
        """Free ``key_id``'s slot and wake the checks waiting for it (lock held)."""
        if self._checking.pop(key_id, None) is not None:
            self._freed.notify_all()
