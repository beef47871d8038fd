"""The CLI's per-user file of write positions (ragstore.cli.positions): a command through
``RAGSTORE_URL`` starts from the position the last one kept. The end-to-end case, with a
standby behind, is tests/replica/test_cli_positions.py."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ragstore.cli import positions
from ragstore.cli.remote import remote_client
from ragstore.config import Settings


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "ragstore" / "client"


def _kept(cache: Path) -> dict[str, str]:
    servers = json.loads((cache / "positions.json").read_text())["servers"]
    return {key: entry["lsn"] for key, entry in servers.items()}


def test_the_file_is_private_and_written_whole(cache: Path) -> None:
    positions.save("http://127.0.0.1:8080", "0/3000060")
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE((cache / "positions.json").stat().st_mode) == 0o600
    assert sorted(p.name for p in cache.iterdir()) == ["positions.json", "positions.lock"]
    cache.chmod(0o755)  # opened up by someone: closed again at the next write
    positions.save("http://127.0.0.1:8080", "0/3000070")
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert positions.load("http://127.0.0.1:8080/") == "0/3000070"


def test_no_credentials_are_stored(cache: Path) -> None:
    url = "HTTP://alice:s3cret-pw@Search.Example:80/base/?token=t0ken#frag"
    positions.save(url, "0/16B374D8")
    text = (cache / "positions.json").read_text()
    for secret in ("alice", "s3cret-pw", "t0ken", "frag"):
        assert secret not in text
    assert _kept(cache) == {"http://search.example/base": "0/16B374D8"}
    assert positions.load("http://search.example/base") == "0/16B374D8"
    assert positions.server_key("https://[::1]:8443") == "https://[::1]:8443"


def test_a_position_only_moves_forward(cache: Path) -> None:
    url = "http://127.0.0.1:8080"
    positions.save(url, "9/FFFFFFFF")
    positions.save(url, "10/0")  # further on, though "10/0" < "9/..." as text
    assert positions.load(url) == "10/0"
    positions.save(url, "9/FFFFFFFF")  # a command that ended after a later one
    positions.save(url, "A/0")
    assert positions.load(url) == "10/0"
    # a write of unknown position sends reads to the primary, whatever was held
    positions.save(url, "primary", loaded="10/0")
    assert positions.load(url) == "primary"
    # a position replaces ``primary`` only from a command that started from it
    positions.save(url, "10/10", loaded=None)
    assert positions.load(url) == "primary"
    positions.save(url, "10/10", loaded="primary")
    assert positions.load(url) == "10/10"


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[]",
        '{"servers": 3}',
        '{"servers": {"http://127.0.0.1:8080": {"lsn": "zz", "at": 1e12}}}',
        '{"servers": {"http://127.0.0.1:8080": {"lsn": "0/1", "at": "now"}}}',
        "\udcff",
    ],
)
def test_an_unreadable_file_is_passed_over(
    cache: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache.mkdir(parents=True, mode=0o700)
    (cache / "positions.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with caplog.at_level(logging.DEBUG, logger="ragstore.cli.positions"):
        assert positions.load("http://127.0.0.1:8080") is None
        positions.save("http://127.0.0.1:8080", "0/5")
    assert positions.load("http://127.0.0.1:8080") == "0/5"  # written over


def test_a_corrupt_file_says_why_in_a_debug_log(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache.mkdir(parents=True, mode=0o700)
    (cache / "positions.json").write_text("{not json")
    with caplog.at_level(logging.DEBUG, logger="ragstore.cli.positions"):
        assert positions.load("http://127.0.0.1:8080") is None
    assert "positions.json passed over" in caplog.text


def test_a_folder_that_cannot_be_written_fails_no_command(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache.parent.mkdir(parents=True)
    cache.write_text("a file where the folder goes")
    with caplog.at_level(logging.DEBUG, logger="ragstore.cli.positions"):
        positions.save("http://127.0.0.1:8080", "0/5")  # no exception
        assert positions.load("http://127.0.0.1:8080") is None
    assert "not kept" in caplog.text


def test_the_oldest_servers_are_dropped_and_old_positions_forgotten(cache: Path) -> None:
    for port in range(positions.MAX_SERVERS + 5):
        positions.save(f"http://127.0.0.1:{9000 + port}", "0/5")
    kept = _kept(cache)
    assert len(kept) == positions.MAX_SERVERS
    assert "http://127.0.0.1:9000" not in kept  # the first written
    assert f"http://127.0.0.1:{9000 + positions.MAX_SERVERS + 4}" in kept
    data = json.loads((cache / "positions.json").read_text())
    data["servers"]["http://127.0.0.1:9010"]["at"] = time.time() - positions.KEEP_S - 1
    (cache / "positions.json").write_text(json.dumps(data))
    assert positions.load("http://127.0.0.1:9010") is None
    assert positions.load("http://127.0.0.1:9011") == "0/5"


class _Server:
    """A loopback HTTP server that answers every request ``{}``, a POST with
    ``RAGStore-LSN: answer``, and records the ``RAGStore-LSN`` each request carried."""

    def __init__(self) -> None:
        self.answer = "0/0"
        self.carried: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                outer.carried.append(self.headers.get("RAGStore-LSN"))
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                if self.command == "POST":
                    self.send_header("RAGStore-LSN", outer.answer)
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = _reply

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    thread = threading.Thread(target=s.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield s
    finally:
        s.httpd.shutdown()
        s.httpd.server_close()


def _command(server: _Server, method: str) -> None:
    """One CLI command's client (as ``RAGSTORE_URL`` makes it): one request, closed."""
    settings = Settings(url=server.url, api_key="rsk_secret_key_value")  # type: ignore[call-arg]
    client = remote_client(settings)
    assert client is not None
    with client:
        client.request(method, "/v1/anything")


def test_the_next_command_sends_the_last_ones_position(cache: Path, server: _Server) -> None:
    server.answer = "1/A0"
    _command(server, "POST")  # ``ragstore ingest``
    _command(server, "GET")  # ``ragstore search``, another process
    assert server.carried == [None, "1/A0"]
    assert "rsk_secret_key_value" not in (cache / "positions.json").read_text()
    # a read-only command keeps what it started from; a later write moves it on
    server.answer = "1/B0"
    _command(server, "POST")
    _command(server, "GET")
    assert server.carried[2:] == ["1/A0", "1/B0"]


def test_a_server_on_another_cluster_replaces_the_position(cache: Path, server: _Server) -> None:
    server.answer = "5/0"
    _command(server, "POST")
    # the server's database made anew: its positions start low again; a write answered
    # below where the command started is no earlier write, and is kept
    server.answer = "0/300"
    _command(server, "POST")
    _command(server, "GET")
    assert server.carried == [None, "5/0", "0/300"]


def test_without_a_home_cache_the_command_still_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: _Server
) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("")  # XDG_CACHE_HOME is a file: nothing can be made under it
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    server.answer = "0/10"
    _command(server, "POST")
    _command(server, "GET")
    assert server.carried == [None, None]
    assert os.path.getsize(blocked) == 0
