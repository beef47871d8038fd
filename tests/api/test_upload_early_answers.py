"""An upload refused before its body is read (no key, a bad key: 401) is answered so that
every client reads the answer, async httpx included, rather than a reset connection."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from ragstore import AsyncClient
from ragstore.config import Settings
from ragstore.errors import AuthenticationError, RagstoreError
from tests.api.conftest import running_server, with_


@pytest.fixture(scope="module")
def keyed_url(settings: Settings) -> Iterator[str]:
    with running_server(with_(settings, auth="on")) as url:
        yield url


def test_the_async_client_reads_the_401_of_an_upload(keyed_url: str) -> None:
    big = ("big.md", b"# Big\n\n" + b"words " * (2 * 1024 * 1024))  # 12 MiB

    async def run() -> list[str]:
        seen = []
        for key in (None, "rsk_wrong", None, "rsk_wrong", None, "rsk_wrong"):
            async with AsyncClient(keyed_url, api_key=key) as ac:
                try:
                    await ac.upload("team", big)
                except AuthenticationError:
                    seen.append("401")
                except RagstoreError as exc:  # the reset read as "cannot reach"
                    seen.append(f"{type(exc).__name__}: {exc}")
        return seen

    seen = asyncio.run(run())
    assert seen == ["401"] * 6, seen


def test_a_body_declared_over_the_limit_is_not_read_for_a_caller_without_a_key(
    keyed_url: str, settings: Settings
) -> None:
    # the 401 is drained only up to what a keyed caller could send: a body declared larger
    # is not waited for, the connection closed as soon as the answer is written
    host, port = keyed_url.removeprefix("http://").split(":")
    declared = settings.max_upload_bytes + 1
    head = (
        f"POST /v1/collections/team/documents/upload HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode())
        received = b""
        while chunk := sock.recv(65536):  # ends: the server closed without the body
            received += chunk
    assert received.startswith(b"HTTP/1.1 401"), received[:100]


def test_a_caller_throttled_for_failed_keys_is_not_read_from(keyed_url: str) -> None:
    # last in this module: it trips the failure throttle of 127.0.0.1 on this server.
    # Drained, a body refused 401 costs the server no more than a keyed caller's could;
    # one guessing keys, once throttled (429), has its body not read at all
    url = f"{keyed_url}/v1/collections/team/texts"
    with httpx.Client() as http:
        statuses = {
            http.post(
                url, json={"texts": ["x"]}, headers={"Authorization": "Bearer no"}
            ).status_code
            for _ in range(40)
        }
    assert 429 in statuses
    host, port = keyed_url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/collections/team/documents/upload HTTP/1.1\r\nHost: {host}\r\n"
        "Authorization: Bearer rsk_wrong\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(head.encode())
        started = time.monotonic()
        received = b""
        while chunk := sock.recv(65536):  # ends: closed without waiting for the body
            received += chunk
        waited = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 429"), received[:100]
    # drained, the server waited for the body until its slow-body guard (10 s) gave up
    assert waited < 5, waited
