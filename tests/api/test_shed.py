"""A server whose every worker thread is busy: a request that waits past
``RAGSTORE_QUEUE_WAIT_S`` for one is answered 503 ``overloaded`` and never runs, while
/healthz and /readyz answer at once (api/shed.py); connections cut off for a slow body
are logged in one line, not one each (api/server.py)."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import anyio.to_thread
import httpx
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from ragstore.api import shed
from ragstore.api.app import create_app
from ragstore.config import Settings
from tests.api.conftest import running_server, with_

WAIT_S = 30.0  # a bound on each wait for the server, never reached when all is well


@contextmanager
def one_busy_thread(settings: Settings, ran: list[str]) -> Iterator[tuple[str, threading.Event]]:
    """The real app, its thread pool cut to one thread, held by a request till the end
    (or till the event yielded is set)."""
    app = create_app(with_(settings, auth="off", queue_wait_s=0.2))
    holding = threading.Event()
    release = threading.Event()

    @app.get("/hold")
    async def hold() -> str:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 1

        def block() -> str:
            holding.set()
            release.wait(WAIT_S)
            return "held"

        return await run_in_threadpool(block)

    @app.get("/work")
    def work() -> str:  # a plain def: FastAPI runs it on a worker thread
        ran.append("work")
        return "done"

    with running_server(settings, app) as url:
        holder = threading.Thread(target=lambda: httpx.get(f"{url}/hold", timeout=WAIT_S))
        holder.start()
        try:
            assert holding.wait(WAIT_S)
            yield url, release
        finally:
            release.set()
            holder.join(WAIT_S)


def test_a_request_that_waits_too_long_for_a_thread_is_answered_503_and_never_runs(
    settings: Settings,
) -> None:
    ran: list[str] = []
    with one_busy_thread(settings, ran) as (url, release):
        shed_answer = httpx.get(f"{url}/work", timeout=WAIT_S)
        assert shed_answer.status_code == 503
        assert shed_answer.headers["content-type"].startswith("application/problem+json")
        assert shed_answer.json()["code"] == "overloaded"
        assert "RAGSTORE_QUEUE_WAIT_S" in shed_answer.json()["detail"]
        assert shed_answer.headers["retry-after"] == "1"
        release.set()  # the thread free again: the next request runs, the shed one did not
        assert httpx.get(f"{url}/work", timeout=WAIT_S).text == '"done"'
        metrics = httpx.get(f"{url}/metrics", timeout=WAIT_S).text
    assert 'ragstore_errors_total{code="overloaded"}' in metrics
    assert ran == ["work"]


def test_the_probes_answer_while_every_worker_thread_is_held(settings: Settings) -> None:
    with one_busy_thread(settings, []) as (url, _):
        health = httpx.get(f"{url}/healthz", timeout=WAIT_S)
        assert health.status_code == 200
        ready = httpx.get(f"{url}/readyz", timeout=WAIT_S)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["database"] == "ok"


def test_the_shedding_limiter_is_installed_on_the_servers_loop(settings: Settings) -> None:
    """anyio's default thread limiter is replaced through its private run variable: an
    anyio that moved it would leave every wait unbounded, and must fail here first."""
    seen: list[bool] = []

    async def check() -> None:
        seen.append(shed.install())
        limiter = anyio.to_thread.current_default_thread_limiter()
        seen.append(isinstance(limiter, shed.SheddingLimiter))

    anyio.run(check)
    assert seen == [True, True]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_connections_cut_off_for_slow_bodies_are_logged_in_one_line(settings: Settings) -> None:
    app = FastAPI()

    @app.post("/body")
    async def body(request: Request) -> int:
        return len(await request.body())

    lines = _Lines()
    api_log = logging.getLogger("ragstore.api")
    api_log.addHandler(lines)
    try:
        with running_server(with_(settings, header_timeout_s=1.0), app) as url:
            where = urlsplit(url)
            socks = [socket.create_connection((where.hostname, where.port)) for _ in range(3)]
            try:
                for sock in socks:  # a head promising a body that never comes
                    sock.sendall(
                        b"POST /body HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n"
                    )
                for sock in socks:
                    sock.settimeout(WAIT_S)
                    assert sock.recv(1024) == b"", "the server did not close the connection"
            finally:
                for sock in socks:
                    sock.close()
    finally:
        api_log.removeHandler(lines)
    slow = [line for line in lines.lines if "request body arrived slower" in line]
    assert len(slow) <= 1, slow  # 3 connections closed: at most one line (one per 10 s)
