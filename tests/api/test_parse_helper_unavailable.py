"""An upload whose parse helper could not start is answered with the helper's own problem
(503 ``parse_helper_unavailable``), with ``Retry-After`` where waiting helps: it was a
500 ``internal_error``, which TROUBLESHOOTING.md calls a bug of ragstore.

The helpers are real processes that end as their interpreter starts (a ``sitecustomize``
on their path), as one that cannot import ragstore, or that the out-of-memory killer
ends, does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ragstore.config import Settings
from ragstore.parsing import sandbox
from tests.api.conftest import running_server, with_
from tests.reliability.test_parse_helper_start import MARKDOWN, ends_at_start


@pytest.fixture(scope="module")
def url(settings: Settings) -> Iterator[str]:
    """A server ingesting uploads during the request (their helpers in this process)."""
    with running_server(with_(settings, auth="off", background_ingest_bytes=1 << 20)) as url:
        yield url


@pytest.mark.parametrize(
    ("ending", "retry_after"),
    [("os._exit(3)", None), ("os.kill(os.getpid(), 9)", "5")],
)
def test_an_upload_whose_parse_helper_cannot_start_is_a_503_of_its_own(
    url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    ending: str,
    retry_after: str | None,
) -> None:
    helpers = sandbox._Helpers()
    monkeypatch.setattr(sandbox, "_helpers", helpers)
    ends_at_start(tmp_path, monkeypatch, ending)
    try:
        r = httpx.post(
            f"{url}/v1/collections/helperless/documents/upload",
            files={"files": ("big.md", MARKDOWN)},
            timeout=120,
        )
    finally:
        helpers.stop()
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "parse_helper_unavailable", body
    assert body["title"] == "Parse helper unavailable"
    assert body["detail"].startswith("big.md: not parsed, so not stored: the parse helper ("), body
    assert "ended before it was ready" in body["detail"], body
    # retryable where it passes with time (a helper killed, memory short), not otherwise
    assert r.headers.get("Retry-After") == retry_after


def test_an_upload_stops_at_a_parse_helper_that_will_not_start(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A helper that exits as it starts will do so for every file: the upload's ingest
    stops at the first (each later file was given a start of its own, and failed alike),
    the rest listed ``not_attempted``, and no ``Retry-After`` (waiting does not help)."""
    helpers = sandbox._Helpers()
    monkeypatch.setattr(sandbox, "_helpers", helpers)
    ends_at_start(tmp_path, monkeypatch, "os._exit(3)")
    try:
        r = httpx.post(
            f"{url}/v1/collections/helperless-stop/documents/upload",
            files=[("files", ("big.md", MARKDOWN)), ("files", ("later.md", MARKDOWN + b"more"))],
            timeout=120,
        )
    finally:
        helpers.stop()
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["code"] == "parse_helper_unavailable", body
    assert body["detail"].startswith("big.md: not parsed, so not stored: "), body
    assert body["not_attempted"] == ["later.md"], body
    assert "Retry-After" not in r.headers
