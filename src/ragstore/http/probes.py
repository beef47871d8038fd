"""Worker threads of the probes' own: ``/readyz``'s checks and ``/metrics``' rendering (and
the key checks of both) run on them, never behind the requests holding the app's.

Every other blocking step of a request waits for one of anyio's default worker threads
(40 per process), which a load of searches can hold for seconds each; the API bounds that
wait (``RAGSTORE_QUEUE_WAIT_S``, ``api/shed.py``). A load balancer or a scraper asking a
busy server must still be answered at once: a probe answered late reads as a dead server,
and a scrape that waits behind the load shows nothing of it. Shared by the API and
observability, which may not import it (``tests/test_layers.py``).
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
:class:`ragstore.http.coalesce.Coalesced`: one of each at a time, the rest key checks)."""

_probe_limiter: RunVar[CapacityLimiter] = RunVar("ragstore_probe_limiter")


def probe_limiter() -> CapacityLimiter:
    """The probes' own worker threads (per event loop)."""
    try:
        return _probe_limiter.get()
    except LookupError:
        limiter = CapacityLimiter(PROBE_THREADS)
        _probe_limiter.set(limiter)
        return limiter


async def on_probe_thread(fn: Callable[[], T]) -> T:
    """``fn()`` on one of the probes' threads: never behind the requests holding the app's."""
    return await anyio.to_thread.run_sync(fn, limiter=probe_limiter())
