"""An upload refused before its body is read (no key, a bad key: 401) is answered so that
every client reads the answer, async httpx included, rather than a reset connection."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

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
