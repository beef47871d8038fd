"""/readyz and /metrics answer without a key and no rate limit bounds them: a flood of
probes shares one run of their checks (http/coalesce.py), and searches still answer."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from ragstore import Client
from ragstore.api.app import create_app
from ragstore.config import Settings
from ragstore.errors import NotReadyError
from ragstore.http.coalesce import Coalesced
from tests.api.conftest import running_server, with_


def test_requests_that_come_during_a_run_share_the_next_one() -> None:
    # fresh_s=0 (/metrics): a request takes only a run started after it came, and the
    # requests that came during one run share a single next run
    release = threading.Event()
    running = 0
    most = 0
    lock = threading.Lock()

    def check() -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait(10)
        with lock:
            running -= 1
        return 7

    shared = Coalesced(check, fresh_s=0.0)

    async def flood() -> list[int]:
        first = asyncio.ensure_future(shared.get())
        await asyncio.sleep(0.05)  # the first run is under way
        rest = [asyncio.ensure_future(shared.get()) for _ in range(50)]
        await asyncio.sleep(0.05)
        release.set()
        return await asyncio.gather(first, *rest)

    assert asyncio.run(flood()) == [7] * 51
    assert shared.runs == 2 and most == 1


def test_an_answer_is_shared_within_its_window_and_an_error_too() -> None:
    calls = 0

    def check() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise NotReadyError("database unreachable")
        return calls

    shared = Coalesced(check, fresh_s=0.3)

    async def ask() -> int:
        return await shared.get()

    async def scenario() -> None:
        for _ in range(3):  # the error is the answer for the window: not asked again
            with pytest.raises(NotReadyError, match="database unreachable") as info:
                await ask()
            assert len(list(_frames(info.value.__traceback__))) < 20
        assert shared.runs == 1
        await asyncio.sleep(0.35)  # past the window: asked again
        assert await ask() == 2 and shared.runs == 2

    asyncio.run(scenario())


def _frames(tb: object) -> list[object]:
    out = []
    while tb is not None:
        out.append(tb)
        tb = getattr(tb, "tb_next", None)
    return out


def test_a_flood_of_readiness_probes_runs_few_checks_and_searches_answer(
    settings: Settings,
) -> None:
    # each /readyz ran its checks itself: two fresh connections and a pooled one per
    # collection, on as many threads as the pool had; a flood of anonymous probes (no
    # key, so no rate limit) starved searches and writes of connections
    app = create_app(with_(settings, auth="off"))
    with running_server(with_(settings, auth="off"), app) as url:
        with Client(url) as c:
            c.create_collection("probed")
            c.add_document("probed", "a.md", "# Tides\n\nThe tides of the ocean rise.\n")
        ready = httpx.get(f"{url}/readyz", timeout=60)
        assert ready.status_code == 200 and "probed" in ready.json()["collections"]
        shared = app.state.ragstore_readiness
        runs = shared.runs
        searches: list[tuple[int, float]] = []
        stop = threading.Event()

        def search() -> None:
            with httpx.Client(base_url=url, timeout=60) as http:
                while not stop.is_set():
                    t = time.monotonic()
                    r = http.post("/v1/collections/probed/search", json={"query": "tides"})
                    searches.append((r.status_code, time.monotonic() - t))

        # one client for the flood, its 32 connections kept open: a client made per probe
        # (its TLS context, a new connection) cost this process more CPU than the server's
        # answers, while the server still sees 32 probes at a time
        prober = httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=32))

        def probe(_: int) -> int:
            return prober.get("/readyz").status_code

        searcher = threading.Thread(target=search)
        searcher.start()
        start = time.monotonic()
        try:
            with prober, ThreadPoolExecutor(32) as pool:
                statuses = list(pool.map(probe, range(400)))
        finally:
            stop.set()
            searcher.join(timeout=120)
        elapsed = time.monotonic() - start
        assert statuses == [200] * 400
        # about one run a second, one at a time, however many probes (400 before)
        assert shared.runs - runs <= elapsed + 2, (shared.runs - runs, elapsed)
        assert searches and {s for s, _ in searches} == {200}, searches[:5]
        # answers at most about a second old: a collection made now shows after it
        with Client(url) as c:
            c.create_collection("later")
        time.sleep(1.1)  # READY_FRESH_S
        assert "later" in httpx.get(f"{url}/readyz", timeout=60).json()["collections"]
