"""A server stopped while a request's statement runs (its graceful timeout passed): the
request is cancelled, its statement is cancelled off the event loop, and the outcome of
its work is read, not logged as never retrieved (api/disconnect.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import psycopg
import pytest
from fastapi import FastAPI, Request, Response

from ragstore.api.disconnect import unless_disconnected
from ragstore.config import Settings
from ragstore.db import cancel as cancel_module
from ragstore.db.cancel import Cancelled, cancellable
from tests.api.conftest import running_server

WAIT_S = 60.0  # a bound on each wait, never reached when all is well
SLEEP = "SELECT pg_sleep(600) -- stopped mid-request"


def _sleeping(database_url: str) -> bool:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = %s AND state = 'active'",
            (SLEEP,),
        ).fetchone()
    return bool(row and row[0])


def test_a_request_cancelled_as_the_server_stops_cancels_its_statement_off_the_loop(
    settings: Settings,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcome: list[str] = []
    ended = threading.Event()

    @asynccontextmanager
    async def closing(_: FastAPI) -> AsyncIterator[None]:
        yield
        # a server's shutdown takes a while (ragstore's closes its pools): here until the
        # request's work has ended, so its outcome is there before the loop closes
        await asyncio.to_thread(ended.wait, WAIT_S)

    app = FastAPI(lifespan=closing)

    @app.get("/slow")
    async def slow(request: Request) -> Response:
        def job() -> Response:
            try:
                with psycopg.connect(database_url) as conn, cancellable(conn):
                    conn.execute(SLEEP)
                outcome.append("ran to its end")
            except Cancelled:
                outcome.append("cancelled")
                raise
            finally:
                ended.set()
            return Response("done")

        return await unless_disconnected(request, job)

    on_loop: list[bool] = []
    real_cancel = cancel_module.Cancellation.cancel

    def cancel(self: cancel_module.Cancellation) -> int:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return real_cancel(self)

    monkeypatch.setattr(cancel_module.Cancellation, "cancel", cancel)
    caplog.set_level(logging.ERROR, logger="asyncio")

    def call(url: str) -> None:
        # the server answers a 500 or closes the connection as it stops: either will do
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"{url}/slow", timeout=WAIT_S)

    with running_server(settings, app, timeout_graceful_shutdown=1) as url:
        client = threading.Thread(target=call, args=(url,))
        client.start()
        deadline = time.monotonic() + WAIT_S
        while not _sleeping(database_url):
            assert time.monotonic() < deadline, "the request's statement never ran"
            time.sleep(0.05)
    # the server has stopped: its request was cancelled after the graceful timeout
    client.join(WAIT_S)
    assert ended.wait(WAIT_S), "the request's statement was not cancelled"
    assert outcome == ["cancelled"]
    assert on_loop == [False], "the cancel requests were sent on the event loop"
    gc.collect()
    assert "never retrieved" not in caplog.text, caplog.text
