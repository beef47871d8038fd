"""The clients' retries against a real server on loopback: restarted mid-sequence, rate
limited (429 Retry-After), and behind a real TCP proxy that drops the connection after the
request reached the server (its outcome unknown). Each checks what the database holds."""

from __future__ import annotations

import asyncio
import email.utils
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragstore import AsyncClient, Client
from ragstore.auth import KeyStore
from ragstore.config import Settings
from ragstore.errors import (
    ConflictError,
    DatabaseUnavailableError,
    InputError,
    OutcomeUnknownError,
    RagstoreError,
    RateLimitedError,
)
from tests.api.conftest import running_server, with_
from tests.conftest import run_cli


def _vectors(n: int) -> list[list[float]]:
    return [[1.0, float(i)] for i in range(n)]


@contextmanager
def _serve_on(settings: Settings, port: int) -> Iterator[None]:
    """A real server on 127.0.0.1:``port``, so a client keeps its URL across a restart."""
    with running_server(settings, port=port):
        yield


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_server_restarted_mid_sequence_is_waited_for(settings: Settings) -> None:
    # Every call failed at once while the server restarted ("cannot reach"): a write sent
    # then (nothing sent: refused) and the reads after it. Now each is sent again once
    # the server is back, and each is stored once.
    open_ = with_(settings, auth="off")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with Client(url, retries=8, max_retry_wait=60) as client:
        with _serve_on(open_, port):
            client.create_collection("restarted", model="their-model@1", dimension=2)
            client.add_texts("restarted", ["a"], ids=["t0"], vectors=_vectors(1))
        back, done = threading.Event(), threading.Event()

        def restart() -> None:
            time.sleep(1.5)
            with _serve_on(open_, port):
                back.set()
                done.wait(60)  # served until the test is done

        restarter = threading.Thread(target=restart, daemon=True)
        restarter.start()
        # refused until the server is back: a "write" too, since nothing reached it
        client.create_collection("after", model="their-model@1", dimension=2)
        assert back.is_set()
        out = client.add_texts("restarted", ["b", "c"], ids=["t1", "t2"], vectors=_vectors(2))
        assert out["added"] == 2
        assert [t["id"] for t in client.get_texts("restarted", ["t0", "t1", "t2"])] == [
            "t0",
            "t1",
            "t2",
        ]
        assert [c["name"] for c in client.list_collections()].count("after") == 1
        done.set()
        restarter.join(30)
    gone = Client(f"http://127.0.0.1:{_free_port()}", retries=0)
    with gone, pytest.raises(DatabaseUnavailableError, match=r"nothing was sent"):
        gone.list_collections()


def test_rate_limited_writes_wait_their_retry_after(settings: Settings, keys: KeyStore) -> None:
    # 429 is counted before the request is read (auth/ratelimit.py): even a write that
    # would do it twice is sent again after its Retry-After, and done once
    limited = with_(settings, auth="on", rate_limit_per_minute=12)
    with running_server(limited) as url:
        secret = keys.create("admin").secret
        spender = Client(url, api_key=secret, retries=0)
        with spender, pytest.raises(RateLimitedError):
            for _ in range(20):
                spender.list_models()
        with Client(url, api_key=secret, retries=3, max_retry_wait=20) as client:
            start = time.monotonic()
            client.create_collection("limited", model="their-model@1", dimension=2)
            assert time.monotonic() - start >= 2  # refused 429, waited its Retry-After (~5 s)
            assert [c["name"] for c in client.list_collections()].count("limited") == 1


class _Proxy:
    """A real TCP proxy in front of the server, on its own event loop: ``drop`` answers
    are read from the server (the request was done) and the client's connection is
    reset instead of being given them, after ``drop_after`` answers passed. ``hide_keys``:
    the answers do not say the server honours Idempotency-Key (an older server)."""

    def __init__(self, upstream_port: int, port: int = 0) -> None:
        self.upstream_port = upstream_port
        self.listen_port = port  # 0: a free one; given, a closed proxy's again
        self.drop = 0
        self.drop_after = 0
        self.hide_keys = False
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.listen_port)
        )
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()
        server.close()
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        self.loop.run_until_complete(asyncio.sleep(0.1))
        self.loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, back: bool) -> None:
            passing = False  # the answer being read is one of drop_after's
            try:
                while data := await src.read(65536):
                    if back and data.startswith(b"HTTP/"):  # an answer's first bytes
                        passing = self.drop > 0 and self.drop_after > 0
                        if passing:
                            self.drop_after -= 1
                        if self.hide_keys:  # the same length: Content-Length holds
                            data = re.sub(
                                rb"(?i)\r\nragstore-idempotency:",
                                b"\r\nx-unsaid-idempotency:",
                                data,
                            )
                    if back and self.drop > 0 and not passing:
                        self.drop -= 1
                        writer.transport.abort()  # the answer never reaches the client
                        up_writer.close()
                        return
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))

    def close(self) -> None:
        if not self.thread.is_alive():  # closed before (a test that replaces it)
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_a_write_whose_answer_is_lost_says_its_outcome_is_unknown(settings: Settings) -> None:
    port = _free_port()
    with _serve_on(with_(settings, auth="off"), port):
        proxy = _Proxy(port)
        try:
            url = f"http://127.0.0.1:{proxy.port}"
            with Client(url) as client, Client(f"http://127.0.0.1:{port}") as direct:
                # a write that may do it twice: not sent again, and not told "not stored"
                proxy.drop = 1
                with pytest.raises(OutcomeUnknownError) as lost:
                    client.create_collection("lost", model="their-model@1", dimension=2)
                assert lost.value.code == "outcome_unknown"
                assert "may or may not have done it" in str(lost.value)
                assert "Check before sending it again" in str(lost.value)
                assert "sent 1 times" not in str(lost.value)
                assert [c["name"] for c in direct.list_collections()].count("lost") == 1
                # an upsert (texts under ids) is sent again: stored once, answered
                proxy.drop = 1
                out = client.add_texts("lost", ["a", "b"], ids=["x", "y"], vectors=_vectors(2))
                assert out["unchanged"] == 2 and out["added"] == 0  # the resend's answer
                # which says so: the lost send may have added what it calls unchanged
                assert out["resent"] is True
                told = client.add_texts("lost", ["a2"], ids=["x2"], vectors=_vectors(1))
                assert told["added"] == 1 and "resent" not in told
                proxy.drop = 1
                doc = client.add_document("lost-docs", "d.md", "# D\n\nfirst")
                assert doc["status"] == "unchanged" and doc["resent"] is True
                assert [t["id"] for t in direct.get_texts("lost", ["x", "y"])] == ["x", "y"]
                # without retries its outcome is unknown, and it says resending is safe
                with Client(url, retries=0) as once:
                    proxy.drop = 1
                    with pytest.raises(OutcomeUnknownError, match="Sending it again is safe"):
                        once.add_texts("lost", ["c"], ids=["z"], vectors=_vectors(1))
                assert [t["id"] for t in direct.get_texts("lost", ["z"])] == ["z"]
                # a read without answer is sent again
                proxy.drop = 1
                assert client.get_collection("lost")["name"] == "lost"
        finally:
            proxy.close()


def test_the_cli_says_an_upload_sent_again_after_a_lost_answer_counts_its_files_unchanged(
    settings: Settings,
    cli_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # it said "0 added, 1 unchanged" of a file it had just added: the lost send stored it
    port = _free_port()
    with _serve_on(with_(settings, auth="off"), port):
        proxy = _Proxy(port)
        try:
            monkeypatch.setenv("RAGSTORE_URL", f"http://127.0.0.1:{proxy.port}")
            (tmp_path / "note.md").write_text("# Note\n\nGreen tea by the river.\n")
            assert run_cli("collections", "create", "cli-lost") == 0
            proxy.drop, proxy.drop_after = 1, 1  # the upload's answer, not the collection's
            assert run_cli("ingest", str(tmp_path / "note.md"), "-c", "cli-lost") == 0
            said = " ".join(capsys.readouterr().err.split())
            assert "0 added, 0 updated, 1 unchanged" in said
            assert "an upload whose answer was lost was sent again" in said
            with Client(f"http://127.0.0.1:{port}") as direct:
                assert direct.get_collection("cli-lost")["documents"] == 1
            # an ingest without a lost answer says nothing of it
            (tmp_path / "other.md").write_text("# Other\n\nStones in the sea.\n")
            assert run_cli("ingest", str(tmp_path / "other.md"), "-c", "cli-lost") == 0
            said = " ".join(capsys.readouterr().err.split())
            assert "1 added" in said and "was lost" not in said
        finally:
            proxy.close()


def test_texts_added_without_ids_whose_answer_is_lost_name_the_ids_they_were_sent_under(
    settings: Settings,
) -> None:
    # the error said "Sending it again is safe" and named no id: a caller who called
    # add_texts(texts) again had new ids drawn, and each text the first call stored was
    # stored twice
    port = _free_port()
    with _serve_on(with_(settings, auth="off"), port):
        proxy = _Proxy(port)
        try:
            url = f"http://127.0.0.1:{proxy.port}"
            with Client(url, retries=0) as once, Client(f"http://127.0.0.1:{port}") as direct:
                direct.create_collection("drawn", model="their-model@1", dimension=2)
                proxy.drop = 1
                with pytest.raises(OutcomeUnknownError) as lost:
                    once.add_texts("drawn", ["a", "b", "c"], vectors=_vectors(3))
                members = lost.value.problem_members
                sent = members["unknown_ids"]
                assert len(sent) == 3 and members["stored_ids"] == []
                assert "with ids= those ids" in str(lost.value)
                # the server stored them (the answer alone was lost), under those ids
                held = direct.get_texts("drawn", sent)
                assert [t["text"] for t in held] == ["a", "b", "c"]
                # sent again as the error says: stored once
                again = once.add_texts("drawn", ["a", "b", "c"], ids=sent, vectors=_vectors(3))
                assert again["unchanged"] == 3 and again["added"] == 0
                assert direct.get_collection("drawn")["documents"] == 3
        finally:
            proxy.close()


def test_an_upload_queued_as_a_job_whose_answer_is_lost_queues_one_job(
    settings: Settings, keys: KeyStore
) -> None:
    # An upload over RAGSTORE_BACKGROUND_INGEST_BYTES is queued as a job though the client
    # did not ask for one; its answer lost, the client sent it again (an upload "upsert"s)
    # and a second job stored the same documents. Now the resend carries the first send's
    # Idempotency-Key and is answered with the first job.
    port = _free_port()
    small = with_(settings, auth="on", background_ingest_bytes=64)
    big = b"# Big\n\n" + b"word " * 40
    with _serve_on(small, port):
        secret = keys.create("admin").secret
        proxy = _Proxy(port)
        try:
            url = f"http://127.0.0.1:{proxy.port}"
            with (
                Client(url, api_key=secret) as client,
                Client(f"http://127.0.0.1:{port}", api_key=secret) as direct,
            ):
                client.create_collection("queued", model="their-model@1", dimension=2)
                proxy.drop = 1
                job = client.upload("queued", [("big.md", big)])
                assert proxy.drop == 0  # the first answer was dropped
                jobs = direct.list_jobs(collection="queued")["data"]
                assert [j["id"] for j in jobs] == [job["id"]]
                # a text queued as a job (add_document), its answer lost: one job too
                proxy.drop = 1
                text_job = client.add_document("queued", "big.txt", big.decode())
                assert proxy.drop == 0
                jobs = direct.list_jobs(collection="queued")["data"]
                assert sorted(j["id"] for j in jobs) == sorted([job["id"], text_job["id"]])
                # not sent again (retries=0): a new call would queue a new job, and the
                # error says to look first
                with Client(url, api_key=secret, retries=0) as once:
                    proxy.drop = 1
                    with pytest.raises(OutcomeUnknownError, match="check `list_jobs` first"):
                        once.upload("queued", [("other.md", big + b" other")])
        finally:
            proxy.close()


def test_a_background_upload_whose_answer_is_lost_is_sent_again_once_keys_are_known(
    settings: Settings,
) -> None:
    # A background upload (a job asked for) was a "write": its answer lost, it was never
    # sent again, though the server answers a resend carrying its Idempotency-Key with the
    # first job. Now a client that has seen the server say RAGStore-Idempotency: 1 sends
    # it again (the same key) and gets that job; one that has not (its first request: the
    # server may be older, ignoring the key) still does not.
    port = _free_port()
    with _serve_on(with_(settings, auth="off"), port):
        proxy = _Proxy(port)
        try:
            url = f"http://127.0.0.1:{proxy.port}"
            with Client(url) as client, Client(f"http://127.0.0.1:{port}") as direct:
                client.create_collection("bg", model="their-model@1", dimension=2)
                assert client.keys_honoured  # said by create_collection's answer
                proxy.drop = 1
                job = client.upload("bg", [("a.md", b"# A\n\nalpha")], background=True)
                assert proxy.drop == 0  # the first answer was dropped
                assert [j["id"] for j in direct.list_jobs(collection="bg")["data"]] == [job["id"]]
                proxy.drop = 1
                text_job = client.add_document("bg", "b.txt", "beta", background=True)
                assert proxy.drop == 0
                jobs = direct.list_jobs(collection="bg")["data"]
                assert sorted(j["id"] for j in jobs) == sorted([job["id"], text_job["id"]])

                async def sent_async() -> dict[str, Any]:
                    async with AsyncClient(url) as ac:
                        await ac.health()
                        assert ac.keys_honoured
                        proxy.drop = 1
                        return await ac.upload("bg", [("c.md", b"gamma")], background=True)

                async_job = asyncio.run(sent_async())
                assert proxy.drop == 0
                assert len(direct.list_jobs(collection="bg")["data"]) == 3
                assert async_job["id"] in [
                    j["id"] for j in direct.list_jobs(collection="bg")["data"]
                ]
        finally:
            proxy.close()


def test_a_first_background_upload_whose_answer_is_lost_asks_whether_keys_are_honoured(
    settings: Settings,
) -> None:
    # A client whose first request was a background upload did not know yet that the
    # server honours Idempotency-Key: its answer lost, it was not sent again (outcome
    # unknown), though the server would have answered the resend with the first job. Now
    # the client asks /healthz first, once; a server that does not say it (an older one,
    # here: the proxy hides the header) still has the upload not sent again.
    port = _free_port()
    with _serve_on(with_(settings, auth="off"), port):
        proxy = _Proxy(port)
        try:
            url = f"http://127.0.0.1:{proxy.port}"
            with Client(f"http://127.0.0.1:{port}") as direct:
                direct.create_collection("first", model="their-model@1", dimension=2)

                def jobs() -> int:
                    return len(direct.list_jobs(collection="first")["data"])

                with Client(url) as fresh:
                    proxy.drop, proxy.drop_after = (
                        1,
                        1,
                    )  # /healthz's answer passes, the upload's lost
                    job = fresh.upload("first", [("a.md", b"# A\n\nalpha")], background=True)
                    assert proxy.drop == 0 and fresh.keys_honoured
                assert [j["id"] for j in direct.list_jobs(collection="first")["data"]] == [
                    job["id"]
                ]

                async def sent_async() -> dict[str, Any]:
                    async with AsyncClient(url) as ac:
                        proxy.drop, proxy.drop_after = 1, 1
                        return await ac.upload("first", [("b.md", b"beta")], background=True)

                asyncio.run(sent_async())
                assert proxy.drop == 0 and jobs() == 2
                # the server does not say it honours keys: not sent again, asked once
                proxy.hide_keys = True
                with Client(url) as older:
                    proxy.drop, proxy.drop_after = 1, 1
                    with pytest.raises(OutcomeUnknownError, match="Check before sending it"):
                        older.upload("first", [("c.md", b"gamma")], background=True)
                    assert not older.keys_honoured and jobs() == 3
                    proxy.drop, proxy.drop_after = 1, 0  # no second question: the upload's
                    with pytest.raises(OutcomeUnknownError):
                        older.upload("first", [("d.md", b"delta")], background=True)
                assert jobs() == 4
        finally:
            proxy.close()


def test_a_server_that_stops_saying_it_honours_keys_is_not_sent_a_lost_upload_again(
    settings: Settings,
) -> None:
    # A client that had once seen RAGStore-Idempotency: 1 believed it for ever: after the
    # server behind its URL was replaced by an older one (here: the proxy hides the
    # header), a background upload whose answer was lost was sent again, and an older
    # server, ignoring the key, queued a second job. Now an answer without the header
    # forgets it, and so does a request that reached no server: the next such upload
    # asks /healthz again, and is not sent again unless the server says it.
    port = _free_port()
    with _serve_on(with_(settings, auth="off"), port):
        proxy = _Proxy(port)
        try:
            url = f"http://127.0.0.1:{proxy.port}"
            with Client(f"http://127.0.0.1:{port}") as direct:
                direct.create_collection("moved", model="their-model@1", dimension=2)

                def jobs() -> int:
                    return len(direct.list_jobs(collection="moved")["data"])

                with Client(url, retries=2, max_retry_wait=5) as client:
                    client.health()
                    assert client.keys_honoured
                    proxy.hide_keys = True  # "replaced by an older server"
                    client.list_collections()
                    assert not client.keys_honoured
                    proxy.drop, proxy.drop_after = 1, 1  # asked first: /healthz's passes
                    with pytest.raises(OutcomeUnknownError, match="Check before sending it"):
                        client.upload("moved", [("a.md", b"alpha")], background=True)
                    assert jobs() == 1
                    # told again, it is believed again: the lost answer's upload sent again
                    proxy.hide_keys = False
                    client.health()
                    proxy.drop = 1
                    client.upload("moved", [("b.md", b"beta")], background=True)
                    assert client.keys_honoured and proxy.drop == 0 and jobs() == 2
                    # the server goes away (nothing reaches it) and an older one comes
                    # back on the same address: asked again, not sent again
                    proxy.close()
                    with pytest.raises(DatabaseUnavailableError, match="nothing was sent"):
                        client.health()
                    assert not client.keys_honoured
                    proxy = _Proxy(port, port=proxy.port)
                    proxy.hide_keys = True
                    proxy.drop, proxy.drop_after = 1, 1  # /healthz's answer passes
                    with pytest.raises(OutcomeUnknownError, match="Check before sending it"):
                        client.upload("moved", [("c.md", b"gamma")], background=True)
                    assert jobs() == 3
        finally:
            proxy.close()


def test_an_idempotency_key_reused_for_other_files_is_refused(
    settings: Settings, keys: KeyStore
) -> None:
    small = with_(settings, auth="on", background_ingest_bytes=64)
    big = b"# Big\n\n" + b"word " * 40
    with running_server(small) as url:
        one, other = keys.create("admin").secret, keys.create("admin").secret
        with Client(url, api_key=one) as client:
            client.create_collection("keyed", model="their-model@1", dimension=2)

        def send(secret: str, content: bytes) -> httpx.Response:
            return httpx.post(
                f"{url}/v1/collections/keyed/documents/upload",
                headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": "k-1"},
                files=[("files", ("big.md", content, "application/octet-stream"))],
            )

        first = send(one, big)
        assert first.status_code == 202
        again = send(one, big)  # the same request sent again: the same job
        assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
        assert again.headers["Location"] == first.headers["Location"]
        # another key's client choosing the same value has a job of its own
        theirs = send(other, big)
        assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]
        # the key with other files: refused, nothing queued (not told "queued")
        changed = send(one, big + b" more")
        assert changed.status_code == 409, changed.text
        assert changed.json()["code"] == ConflictError.code
        assert "Idempotency-Key" in changed.json()["detail"]
        with Client(url, api_key=one) as client:
            assert len(client.list_jobs(collection="keyed")["data"]) == 2


class _Busy(BaseHTTPRequestHandler):
    """A proxy or load balancer in front of the server: answers ``busy`` requests 503 with
    ``Retry-After`` as an HTTP date ``ahead`` seconds on, then a health answer."""

    busy = 1
    ahead = 2.0

    def do_GET(self) -> None:  # http.server calls it by this name
        cls = type(self)
        if cls.busy > 0:
            cls.busy -= 1
            when = email.utils.formatdate(time.time() + cls.ahead, usegmt=True)
            self.send_response(503)
            self.send_header("Retry-After", when)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"busy")
            return
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_retry_after_given_as_an_http_date_is_waited() -> None:
    # RFC 9110 allows Retry-After as an HTTP date; the clients read only seconds and
    # waited their own short backoff (0.25-0.5 s) before sending again
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Busy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        _Busy.busy, _Busy.ahead = 1, 3.0
        with Client(url, retries=2, max_retry_wait=20) as client:
            start = time.monotonic()
            assert client.health()["status"] == "ok"
            assert time.monotonic() - start >= 1.5  # the date's ~2-3 s (whole seconds)
        # a date past max_retry_wait is not waited: raised at once, its retry_after set
        _Busy.busy, _Busy.ahead = 1, 3600.0
        with Client(url, retries=2, max_retry_wait=5) as client:
            start = time.monotonic()
            with pytest.raises(RagstoreError) as late:
                client.health()
            assert time.monotonic() - start < 2
            assert 3000 < getattr(late.value, "retry_after", 0) <= 3600
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"poll": -1}, r"poll must be seconds >= 0\.01, got -1"),
        ({"poll": 0}, r"poll must be seconds >= 0\.01, got 0"),
        ({"timeout": -5}, r"timeout must be seconds >= 0, got -5"),
        ({"timeout": float("nan")}, r"timeout must be seconds >= 0, got nan"),
        ({"poll": "1"}, r"poll must be seconds >= 0\.01, got '1'"),
    ],
)
def test_wait_for_job_refuses_a_bad_poll_or_timeout_before_asking(
    options: dict[str, Any], message: str
) -> None:
    """``poll=-1`` failed in time.sleep with a bare ValueError, ``poll=0`` polled in a tight
    loop and a NaN timeout never ran out; each is an InputError before any request (the
    port is closed: a request would be a DatabaseUnavailableError)."""
    url = f"http://127.0.0.1:{_free_port()}"
    with Client(url, retries=0) as client, pytest.raises(InputError, match=message):
        client.wait_for_job(1, **options)

    async def wait() -> None:
        async with AsyncClient(url, retries=0) as client:
            await client.wait_for_job(1, **options)

    with pytest.raises(InputError, match=message):
        asyncio.run(wait())
