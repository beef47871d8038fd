"""How often the CLI sends a request to ``RAGSTORE_URL`` again: ``RAGSTORE_CLIENT_RETRIES``
against a real server on loopback that answers every request 503 ``not_ready``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from tests.conftest import run_cli


class _NotReady(BaseHTTPRequestHandler):
    """Every request answered as a ragstore server that is not ready answers it."""

    seen: ClassVar[list[str]] = []

    def _answer(self) -> None:
        self.seen.append(f"{self.command} {self.path.partition('?')[0]}")
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = json.dumps(
            {"type": "about:blank", "title": "Not ready", "status": 503, "code": "not_ready"}
        ).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        """Keep stderr to the command's own lines."""


@pytest.fixture()
def not_ready(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """RAGSTORE_URL set to a server answering 503 not_ready; yields the requests it got."""
    _NotReady.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotReady)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("RAGSTORE_URL", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield _NotReady.seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_no_retries_sends_one_request_and_fails_at_once(
    not_ready: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the CLI always used the client's defaults: 3 more sends over a few seconds
    monkeypatch.setenv("RAGSTORE_CLIENT_RETRIES", "0")
    started = time.monotonic()
    assert run_cli("collections", "list", "--json") != 0
    assert time.monotonic() - started < 2
    assert not_ready == ["GET /v1/collections"]
    err = capsys.readouterr().err
    assert err.startswith("error[not_ready]") and len(err.splitlines()) == 1


def test_more_retries_send_it_again_within_the_wait(
    not_ready: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAGSTORE_CLIENT_RETRIES", "5")
    monkeypatch.setenv("RAGSTORE_CLIENT_MAX_RETRY_WAIT_S", "0")  # no time to wait: none
    assert run_cli("collections", "list", "--json") != 0
    assert not_ready == ["GET /v1/collections"]
    monkeypatch.setenv("RAGSTORE_CLIENT_RETRIES", "2")
    monkeypatch.setenv("RAGSTORE_CLIENT_MAX_RETRY_WAIT_S", "10")
    not_ready.clear()
    assert run_cli("collections", "list", "--json") != 0
    assert not_ready == ["GET /v1/collections"] * 3
    assert "(sent 3 times)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("RAGSTORE_CLIENT_RETRIES", "-1", "greater than or equal to 0"),
        ("RAGSTORE_CLIENT_RETRIES", "two", "valid integer"),
        ("RAGSTORE_CLIENT_MAX_RETRY_WAIT_S", "-5", "greater than or equal to 0"),
        ("RAGSTORE_CLIENT_MAX_RETRY_WAIT_S", "nan", ""),
    ],
)
def test_a_bad_retry_setting_is_one_config_error(
    not_ready: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    said: str,
) -> None:
    monkeypatch.setenv(name, value)
    assert run_cli("collections", "list", "--json") == 78
    err = capsys.readouterr().err
    assert err.startswith("error[config_invalid]") and len(err.splitlines()) == 1
    assert f"{name}={value!r} is invalid" in err and said in err
    assert not_ready == []  # nothing sent
