"""The clients' retries against a real server on loopback: restarted mid-sequence, rate
limited (429 Retry-After), and behind a real TCP proxy that drops the connection after the
request reached the server (its outcome unknown). Each checks what the database holds."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ragstore import Client
from ragstore.auth import KeyStore
from ragstore.config import Settings
from ragstore.errors import DatabaseUnavailableError, OutcomeUnknownError, RateLimitedError
from tests.api.conftest import running_server, with_


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
    reset instead of being given them."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.drop = 0
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
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
            try:
                while data := await src.read(65536):
                    if back and self.drop > 0:
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
