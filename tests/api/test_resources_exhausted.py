"""An upload whose file could not be read because the server's process ran out of file
descriptors (EMFILE) is answered 503 ``resources_exhausted`` with ``Retry-After``: it was
a 500 ``internal_error``, which TROUBLESHOOTING.md calls a bug of ragstore to report,
for a state of the machine that passes as other work ends.

The read of the staged file is made to fail as the kernel fails it (no descriptor left);
lowering the real limit would starve the server's own sockets and database connections
in this process first."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import httpx
import pytest

from ragstore.config import Settings
from ragstore.ingest import prepare
from tests.api.conftest import running_server, with_


@pytest.fixture(scope="module")
def url(settings: Settings) -> Iterator[str]:
    """A server ingesting uploads during the request (their reads in this process)."""
    with running_server(with_(settings, auth="off", background_ingest_bytes=1 << 20)) as url:
        yield url


def test_an_upload_read_without_a_descriptor_left_is_a_503_to_retry(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_descriptor(path: Path, *args: object) -> NoReturn:
        raise OSError(errno.EMFILE, "Too many open files", str(path))

    monkeypatch.setattr(prepare, "read_with_stat", no_descriptor)
    r = httpx.post(
        f"{url}/v1/collections/exhausted/documents/upload",
        files={"files": ("notes.md", b"# Notes\n\nA healthy file.\n")},
        timeout=120,
    )
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "resources_exhausted", body
    assert body["title"] == "Out of descriptors or memory", body
    assert body["detail"].startswith(
        "notes.md: reading it failed in this process, not because of the file (OSError: "
        "[Errno 24] Too many open files"
    ), body
    # the client uploaded it: what to do again is to upload it (it said "ingest it again")
    assert body["detail"].endswith(
        "it was not stored: upload it again; raise the open-files limit (ulimit -n) or "
        "upload fewer files at once"
    ), body
    assert "staging" not in body["detail"], body  # the server's own path is not told
    assert r.headers.get("Retry-After") == "5"
