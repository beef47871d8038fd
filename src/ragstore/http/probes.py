"""Worker threads of the probes' own: ``/readyz``'s checks and ``/metrics``' rendering run
on them, never behind the requests holding the app's; the key checks of both on a few
threads of their own again (:func:`on_key_check_thread`).

Every other blocking step of a request waits for one of anyio's default worker threads
(40 per process), which a load of searches can hold for seconds each; the API bounds that
wait (``RAGSTORE_QUEUE_WAIT_S``, ``api/shed.py``). A load balancer or a scraper asking a
busy server must still be answered at once: a probe answered late reads as a dead server,
and a scrape that waits behind the load shows nothing of it. Shared by the API and
observability, which may not import it (``tests/test_layers.py``).

A key check hashes the secret it is given (scrypt, slow on purpose), and one that fails is
no quicker: on the probes' threads, a burst of scrapes with bad keys (or of /readyz calls
presenting one) held every one of them, and a load balancer's /readyz waited behind the
hashes. The key checks now have threads of their own, so the checks and renderings always
find theirs: a bad key delays only the requests presenting a key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar

T = TypeVar("T")

PROBE_THREADS = 4
"""The probes' own worker threads, per event loop (their checks and renderings are shared,
:class:`ragstore.http.coalesce.Coalesced`: one of each at a time)."""

KEY_CHECK_THREADS = 2
"""The threads the probes' key checks run on (per event loop), apart from the probes'."""

_probe_limiter: RunVar[CapacityLimiter] = RunVar("ragstore_probe_limiter")
_key_check_limiter: RunVar[CapacityLimiter] = RunVar("ragstore_probe_key_check_limiter")


def _limiter(var: RunVar[CapacityLimiter], size: int) -> CapacityLimiter:
    """``var``'s limiter of this event loop, made with ``size`` threads on first use."""
    try:
        return var.get()
    except LookupError:
        limiter = CapacityLimiter(size)
        var.set(limiter)
        return limiter


def probe_limiter() -> CapacityLimiter:
    """The probes' own worker threads (per event loop)."""
    return _limiter(_probe_limiter, PROBE_THREADS)


def key_check_limiter() -> CapacityLimiter:
    """The threads of the probes' key checks (per event loop)."""
    return _limiter(_key_check_limiter, KEY_CHECK_THREADS)


async def on_probe_thread(fn: Callable[[], T]) -> T:
    """``fn()`` on one of the probes' threads: never behind the requests holding the app's."""
    return await anyio.to_thread.run_sync(fn, limiter=probe_limiter())


async def on_key_check_thread(fn: Callable[[], T]) -> T:
    """``fn()``, a probe's key check, on the threads of those: never behind the requests
    holding the app's, and never holding the probes' own (see the module doc)."""
    return await anyio.to_thread.run_sync(fn, limiter=key_check_limiter())
