"""A server whose every worker thread is busy: a request that waits past
``RAGSTORE_QUEUE_WAIT_S`` for one is answered 503 ``overloaded`` and never runs, while
/healthz and /readyz answer at once (api/shed.py); connections cut off for a slow body
are logged in one line, not one each (api/server.py)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
import httpx
import pytest
from anyio import CapacityLimiter
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

from ragstore import Client
from ragstore.api import shed
from ragstore.api.app import create_app
from ragstore.api.deps import ReadAccess
from ragstore.auth import KeyStore
from ragstore.config import Settings
from ragstore.http import probes
from tests.api.conftest import running_server, with_

WAIT_S = 30.0  # a bound on each wait for the server, never reached when all is well


UPLOAD = b"x" * (2 * 1024 * 1024)  # over 1 MB: Starlette's form parser spools it to disk


class Server:
    """The real app, its thread pool cut to one thread by ``hold`` (a request holding it
    till ``free``), with routes of the tests' own: ``ran`` lists the work they did."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ran: list[str] = []
        self.holding = threading.Event()
        self.release = threading.Event()
        self.parsed = threading.Event()  # /form?gated: its form parsed
        self.gate = threading.Event()  # /form?gated: its work may start
        self.form_ended = threading.Event()  # /form: its request is over, however it went
        self._holder: threading.Thread | None = None

    def hold(self) -> None:
        self._holder = threading.Thread(
            target=lambda: httpx.get(f"{self.url}/hold", timeout=4 * WAIT_S)
        )
        self._holder.start()
        assert self.holding.wait(WAIT_S)

    def free(self) -> None:
        """The thread given back, and the holder answered: the thread is free again."""
        self.release.set()
        if self._holder is not None:
            self._holder.join(4 * WAIT_S)
            assert not self._holder.is_alive()

    def waiting(self) -> int:
        """How many waits for the app's worker threads the server has now."""
        answer = httpx.get(f"{self.url}/waiting", timeout=WAIT_S)
        assert answer.status_code == 200, answer.text
        return int(answer.json())


@contextmanager
def serving(settings: Settings, **update: Any) -> Iterator[Server]:
    app = create_app(
        with_(
            settings,
            **{"auth": "off", "queue_wait_s": 0.2, "max_request_bytes": 4 * len(UPLOAD), **update},
        )
    )
    server = Server("")

    @app.get("/hold")
    async def hold() -> str:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 1

        def block() -> str:
            server.holding.set()
            server.release.wait(3 * WAIT_S)  # past any wait of a test: it fails first
            return "held"

        return await run_in_threadpool(block)

    @app.get("/work")
    def work() -> str:  # a plain def: FastAPI runs it on a worker thread
        server.ran.append("work")
        return "done"

    @app.get("/keyed")
    async def keyed(caller: ReadAccess) -> str:
        # its key checked (and counted against the key's rate limit); then, gated, its
        # work waits for a thread (on threads of no limiter the app's requests wait for)
        server.parsed.set()
        await anyio.to_thread.run_sync(server.gate.wait, WAIT_S, limiter=CapacityLimiter(1))

        def work() -> str:
            server.ran.append("keyed")
            return "done"

        return await run_in_threadpool(work)

    @app.post("/early")
    async def early(request: Request) -> str:
        # a check before its body is read (as the read routing's first open of the
        # database): shed there, its body is never read by the app
        await shed.before_work(lambda: None)
        return str(len(await request.body()))

    @app.get("/waiting")
    async def waiting() -> int:
        limiter = anyio.to_thread.current_default_thread_limiter()
        return limiter.statistics().tasks_waiting

    @app.post("/form")
    async def form(request: Request, gated: bool = False) -> str:
        # its file written to disk on worker threads as it comes (closed after the work,
        # as FastAPI closes an upload's)
        try:
            async with request.form():
                server.parsed.set()
                if gated:  # on threads of no limiter the app's requests wait for
                    await anyio.to_thread.run_sync(
                        server.gate.wait, WAIT_S, limiter=CapacityLimiter(1)
                    )

                def ingest() -> str:
                    server.ran.append("form")
                    return "stored"

                return await run_in_threadpool(ingest)
        finally:
            server.form_ended.set()

    with running_server(settings, app) as url:
        server.url = url
        try:
            yield server
        finally:
            server.release.set()
            server.gate.set()
            if server._holder is not None:
                server._holder.join(4 * WAIT_S)


@contextmanager
def one_busy_thread(settings: Settings) -> Iterator[Server]:
    """:func:`serving`, its one worker thread held till the end (or ``free``)."""
    with serving(settings) as server:
        server.hold()
        yield server


def test_a_request_that_waits_too_long_for_a_thread_is_answered_503_and_never_runs(
    settings: Settings,
) -> None:
    with one_busy_thread(settings) as server:
        shed_answer = httpx.get(f"{server.url}/work", timeout=WAIT_S)
        assert shed_answer.status_code == 503
        assert shed_answer.headers["content-type"].startswith("application/problem+json")
        assert shed_answer.json()["code"] == "overloaded"
        assert "RAGSTORE_QUEUE_WAIT_S" in shed_answer.json()["detail"]
        assert shed_answer.headers["retry-after"] == "1"
        server.free()  # the thread free again: the next request runs, the shed one did not
        assert httpx.get(f"{server.url}/work", timeout=WAIT_S).text == '"done"'
        metrics = httpx.get(f"{server.url}/metrics", timeout=WAIT_S).text
    assert 'ragstore_errors_total{code="overloaded"}' in metrics
    assert server.ran == ["work"]


def test_the_probes_and_the_metrics_answer_while_every_worker_thread_is_held(
    settings: Settings,
) -> None:
    with one_busy_thread(settings) as server:
        health = httpx.get(f"{server.url}/healthz", timeout=WAIT_S)
        assert health.status_code == 200
        ready = httpx.get(f"{server.url}/readyz", timeout=WAIT_S)
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["database"] == "ok"
        # /metrics waited behind the held thread without limit
        scraped = httpx.get(f"{server.url}/metrics", timeout=WAIT_S)
        assert scraped.status_code == 200
        assert "ragstore_http_requests_total" in scraped.text


def test_a_read_shed_before_its_route_is_answered_503_overloaded(settings: Settings) -> None:
    # the first read makes the read router on a thread (ReadRoutingMiddleware): shed there,
    # it escaped to the crash handler, answered 500 internal_error, which no client retries
    with one_busy_thread(settings) as server:
        answer = httpx.get(f"{server.url}/v1/collections", timeout=WAIT_S)
    assert answer.status_code == 503, answer.text
    assert answer.json()["code"] == "overloaded"
    assert answer.headers["retry-after"] == "1"


def _upload(url: str, second_type: bool) -> httpx.Response:
    """A multipart upload of ``UPLOAD``; ``second_type``: a second ``Content-Type`` after the
    multipart one (the first is the one Starlette's form parser reads)."""
    with httpx.Client(timeout=WAIT_S) as client:
        request = client.build_request("POST", url, files={"f": ("a.md", UPLOAD)})
        if second_type:
            extra = [(b"content-type", b"text/plain")]
            request.headers = httpx.Headers(list(request.headers.raw) + extra)
        return client.send(request)


@pytest.mark.parametrize("second_type", [False, True])
def test_an_upload_arriving_is_never_shed(settings: Settings, second_type: bool) -> None:
    # its file over 1 MB is written to disk on the app's threads as it comes: those waits
    # were bounded, and an upload was answered 503 while its body arrived (with a second
    # Content-Type too: the shedding read the last header, the form parser the first)
    with one_busy_thread(settings) as server:
        answers: list[httpx.Response] = []
        sender = threading.Thread(
            target=lambda: answers.append(_upload(f"{server.url}/form", second_type))
        )
        sender.start()
        while not answers and server.waiting() == 0:  # its body's write waits for the thread
            time.sleep(0.05)
        # a request that came later waited its RAGSTORE_QUEUE_WAIT_S and was shed: the
        # upload's wait, bounded, would have run out first
        assert httpx.get(f"{server.url}/work", timeout=WAIT_S).status_code == 503
        server.free()
        sender.join(WAIT_S)
    assert [a.status_code for a in answers] == [200], answers[0].text
    assert server.ran == ["form"]


def test_a_large_body_shed_before_it_was_read_gets_its_503(settings: Settings) -> None:
    # feared: the body shed unread is left in the connection as the server closes it, and
    # the client, still sending, sees the connection reset instead of the 503. Not so:
    # uvicorn (httptools, as h11) reads and drops the rest of a body once the answer is
    # complete; this holds it to that
    with serving(settings, max_request_bytes=200 << 20) as server:
        server.hold()
        for _ in range(2):  # each on a connection of its own
            answer = httpx.post(f"{server.url}/early", content=b"x" * (60 << 20), timeout=WAIT_S)
            assert answer.status_code == 503, answer.text
            assert answer.json()["code"] == "overloaded"


def _spooled() -> set[str]:
    """The files of the temporary folder this process holds open, removed: Starlette's
    spooled upload files (unnamed temporary files)."""
    held = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith(tempfile.gettempdir()) and target.endswith("(deleted)"):
                held.add(target)
    return held


def test_an_upload_whose_client_left_while_its_file_waited_for_a_thread_is_dropped(
    settings: Settings,
) -> None:
    # body arrival is never shed, so its spool write waited for a thread without limit
    # after its client had gone, and when one came free the server read the body it had
    # in its buffers to the end and did the upload's work for no one
    upload = httpx.Request("POST", "http://x/form", files={"f": ("a.md", b"x" * (3 << 19))})
    body = upload.read()  # 1.5 MB: past the 1 MB Starlette spools to disk on threads
    before = _spooled()
    with one_busy_thread(settings) as server:
        where = urlsplit(server.url)
        with socket.create_connection((where.hostname, where.port)) as sock:
            head = (
                f"POST /form HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: {upload.headers['content-type']}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            sock.sendall(head.encode() + body)
            while server.waiting() == 0:  # its file's write waits for the held thread
                time.sleep(0.05)
        # its client gone, its wait ended: the request is over while the thread is held
        assert server.form_ended.wait(WAIT_S), "the upload still waits for a thread"
        assert _spooled() == before  # its spooled file closed (removed)
        server.free()
        assert httpx.get(f"{server.url}/work", timeout=WAIT_S).text == '"done"'
    assert server.ran == ["work"]  # the upload's work was never done


def test_an_uploads_work_is_shed_after_its_body_arrived(settings: Settings) -> None:
    # the first write of its file to disk marked its work as started: its ingest then
    # waited for a thread without limit
    with serving(settings) as server:
        answers: list[httpx.Response] = []
        sender = threading.Thread(
            target=lambda: answers.append(
                httpx.post(
                    f"{server.url}/form?gated=true", files={"f": ("a.md", UPLOAD)}, timeout=WAIT_S
                )
            )
        )
        sender.start()
        assert server.parsed.wait(WAIT_S)  # its body arrived, written on the free threads
        server.hold()
        server.gate.set()  # its work now waits for the held thread
        sender.join(WAIT_S)
    assert [a.status_code for a in answers] == [503]
    assert answers[0].json()["code"] == "overloaded"
    assert server.ran == []


def test_a_shed_request_costs_no_rate_limit_hit(settings: Settings, keys: KeyStore) -> None:
    # the key check counted the request before its work waited for a thread: shed, it had
    # spent one of the key's requests for nothing, and the client's retry spent another
    auth = {"Authorization": f"Bearer {keys.create('read').secret}"}
    with serving(settings, auth="on", rate_limit_per_minute=1) as server:
        answers: list[httpx.Response] = []
        sender = threading.Thread(
            target=lambda: answers.append(
                httpx.get(f"{server.url}/keyed", headers=auth, timeout=WAIT_S)
            )
        )
        sender.start()
        assert server.parsed.wait(WAIT_S)  # its key checked and counted
        server.hold()
        server.gate.set()  # its work now waits for the held thread
        sender.join(WAIT_S)
        assert [a.status_code for a in answers] == [503], answers[0].text
        server.free()
        # the key's one request a minute is still there
        again = httpx.get(f"{server.url}/keyed", headers=auth, timeout=WAIT_S)
        assert again.status_code == 200, again.text
        # and counted: the next is refused
        assert httpx.get(f"{server.url}/keyed", headers=auth, timeout=WAIT_S).status_code == 429
    assert server.ran == ["keyed"]


def test_readyz_answers_while_bad_metrics_keys_are_being_checked(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the metrics' key checks (scrypt, slow on purpose, bad keys too) ran on the probes'
    # own threads: a burst of scrapes with bad keys held them all, and /readyz waited
    app = create_app(with_(settings, auth="on", profile="prod", allow_embedded_in_prod=True))
    checking: list[str] = []
    release = threading.Event()

    @app.get("/probe-waiting")
    async def probe_waiting() -> int:
        return sum(
            limiter.statistics().tasks_waiting
            for limiter in (probes.probe_limiter(), probes.key_check_limiter())
        )

    burst = probes.PROBE_THREADS
    with running_server(settings, app) as url:
        store = app.state.ragstore.keys
        real = store.authenticate_probe  # /metrics' own key check (no pool)

        def held(presented: str | None, address: str = "") -> Any:
            checking.append("key")  # a slow hash, till the test lets it end
            release.wait(3 * WAIT_S)  # past the wait for /readyz: it fails first
            return real(presented, address)

        monkeypatch.setattr(store, "authenticate_probe", held)
        bad = {"Authorization": "Bearer rsk_0123456789ab_wrongwrongwrongwrong"}
        scrapes: list[httpx.Response] = []
        scrapers = [
            threading.Thread(
                target=lambda: scrapes.append(
                    httpx.get(f"{url}/metrics", headers=bad, timeout=4 * WAIT_S)
                )
            )
            for _ in range(burst)
        ]
        ready: list[httpx.Response] = []
        answered = threading.Event()
        prober = threading.Thread(
            target=lambda: (
                ready.append(httpx.get(f"{url}/readyz", timeout=4 * WAIT_S)),
                answered.set(),
            )
        )
        try:
            for scraper in scrapers:
                scraper.start()
            # every scrape is in its key check or waiting for a thread to make it on (a
            # deadline: a check the patch does not reach left this loop waiting for good)
            deadline = time.monotonic() + 4 * WAIT_S
            while len(checking) + int(httpx.get(f"{url}/probe-waiting").text) < burst:
                assert time.monotonic() < deadline, f"{len(checking)} key checks held"
                time.sleep(0.05)
            prober.start()
            assert answered.wait(WAIT_S), "/readyz waited behind the metrics' key checks"
            assert ready[0].status_code == 200, ready[0].text
            assert len(scrapes) == 0  # the key checks were all still in flight
        finally:
            release.set()
            for thread in [*scrapers, prober]:
                if thread.is_alive():
                    thread.join(WAIT_S)
    assert [s.status_code for s in scrapes] == [401] * burst


class _Watching(httpx.HTTPTransport):
    """httpx's own transport, noting each answer's status; the first 503 frees the
    server's held thread (``free``), so the request sent again can run."""

    def __init__(self, free: Callable[[], None]) -> None:
        super().__init__()
        self.free = free
        self.statuses: list[int] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.statuses.append(response.status_code)
        if response.status_code == 503:
            self.free()
        return response


def test_the_client_sends_any_call_shed_again(settings: Settings) -> None:
    # a shed request never ran: a write too is safe to send again (it was raised at once)
    with one_busy_thread(settings) as server:
        watching = _Watching(server.free)
        with Client(server.url, transport=watching, retries=3, max_retry_wait=20) as client:
            client.create_collection("shed", model="their-model@1", dimension=2)
            names = [c["name"] for c in client.list_collections()]
    assert watching.statuses[:2] == [503, 201]
    assert names.count("shed") == 1


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
