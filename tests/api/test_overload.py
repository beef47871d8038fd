"""A server with more requests than worker threads: work whose client gave up while it
queued for a thread is not run when a thread comes free (api/disconnect.py)."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import anyio.to_thread
import httpx
from fastapi import FastAPI, Request, Response

from ragstore.api.disconnect import unless_disconnected
from ragstore.config import Settings
from tests.api.conftest import running_server

WAIT_S = 60.0  # a bound on each wait for the server, never reached when all is well


class _Noticed(logging.Handler):
    """Set once the server logged that a request's client went away (after its cancel)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("the client went away"):
            self.event.set()


def test_work_whose_client_left_while_it_queued_for_a_thread_is_not_run(
    settings: Settings,
) -> None:
    ran: list[int] = []
    holding = threading.Event()  # request 0 holds the only worker thread
    release = threading.Event()

    @asynccontextmanager
    async def one_thread(_: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 1
        yield

    app = FastAPI(lifespan=one_thread)

    @app.get("/work/{i}")
    async def work(i: int, request: Request) -> Response:
        def job() -> Response:
            ran.append(i)
            if i == 0:
                holding.set()
                release.wait(WAIT_S)
            return Response(f"done {i}")

        return await unless_disconnected(request, job)

    noticed = _Noticed()
    api_log = logging.getLogger("ragstore.api")
    level = api_log.level
    api_log.addHandler(noticed)
    api_log.setLevel(logging.INFO)
    try:
        with running_server(settings, app) as url:
            first: list[httpx.Response] = []
            holder = threading.Thread(
                target=lambda: first.append(httpx.get(f"{url}/work/0", timeout=WAIT_S))
            )
            holder.start()
            try:
                assert holding.wait(WAIT_S)
                # request 1 queues for the thread; its client gives up and closes
                where = urlsplit(url)
                with socket.create_connection((where.hostname, where.port)) as sock:
                    sock.sendall(b"GET /work/1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert noticed.event.wait(WAIT_S), "the server never saw the client go"
            finally:
                release.set()
                holder.join(WAIT_S)
            assert first[0].text == "done 0"
            # the thread, free again, serves a third request: request 1 was not run before it
            assert httpx.get(f"{url}/work/2", timeout=WAIT_S).text == "done 2"
    finally:
        api_log.removeHandler(noticed)
        api_log.setLevel(level)
    assert ran == [0, 2]
