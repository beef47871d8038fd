"""``ragstore mcp --transport http --host unix:PATH``: MCP on its own owner-only Unix socket,
made by ``ragstore serve``'s code (ragstore.http.listen), reached by the SDK's client."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from ragstore import Store
from ragstore.errors import ConfigError
from tests.api.test_serve_unix import _accepts
from tests.conftest import run_cli
from tests.mcp_wire import HELLO

NOTE = "# Runbook\n\nTo rotate the signing key run the rotation job on the primary first.\n"


@pytest.fixture(scope="module")
def runbook(store: Store) -> Store:
    store.add_document("runbook", "ops/rotate.md", NOTE)
    return store


async def _initialize_and_search(path: Path) -> dict[str, Any]:
    """An MCP session of the SDK's client over the Unix socket: initialize, then a search
    (fulltext: no model to load); the search's structured answer.

    The SDK's client waits for an answer to a refused request for as long as its read
    timeout allows: an ``initialize`` sent by hand first says at once what the server
    answered, and the session is bounded."""
    transport = httpx2.AsyncHTTPTransport(uds=str(path))
    accept = {"Accept": "application/json, text/event-stream"}
    async with httpx2.AsyncClient(transport=transport, timeout=120) as http:
        hello = await http.post("http://localhost/mcp", json=HELLO, headers=accept)
        assert hello.status_code == 200, hello.text
    transport = httpx2.AsyncHTTPTransport(uds=str(path))
    with anyio.fail_after(240):
        return await _session_search(transport)


async def _session_search(transport: httpx2.AsyncHTTPTransport) -> dict[str, Any]:
    async with (
        httpx2.AsyncClient(transport=transport, timeout=120) as http,
        streamable_http_client("http://localhost/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        hello = await session.initialize()
        assert hello.server_info.name == "ragstore"
        result = await session.call_tool(
            "search",
            {"collection": "runbook", "query": "rotate signing key", "mode": "fulltext"},
        )
        assert not result.is_error, result.content
        if result.structured_content is not None:
            return dict(result.structured_content)
        return dict(json.loads(result.content[0].text))


async def test_keyless_mcp_on_its_own_unix_socket_serves_its_owner_and_cleans_up(
    runbook: Store, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """``ragstore mcp`` could not serve a Unix socket (``--host unix:PATH`` was refused),
    so keyless MCP on one machine listened on loopback TCP, reachable by every local user.
    It binds one owner-only (0600) now, answers an MCP session on it without a key, and
    removes it when SIGTERM stops it (exit 0)."""
    path = tmp_path / "mcp.sock"
    env = {**os.environ, **cli_env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("RAGSTORE_API_KEY", None)
    log = tmp_path / "mcp.log"
    command = [sys.executable, "-c", "from ragstore.cli import main; main()", "mcp"]
    with log.open("wb") as out:
        served = subprocess.Popen(
            [*command, "--transport", "http", "--host", f"unix:{path}"],
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        deadline = time.monotonic() + 120
        while not _accepts(path):  # bound before the store opens: the session waits
            assert served.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == 0o600, oct(mode)
        assert path.lstat().st_uid == os.geteuid()
        found = await _initialize_and_search(path)
        assert found["collection"] == "runbook"
        assert "rotation job" in found["hits"][0]["text"]
    finally:
        served.send_signal(signal.SIGTERM)
        status = served.wait(timeout=60)
    assert status == 0, log.read_text()
    assert not path.exists()  # removed at exit


def test_a_path_that_is_not_our_socket_is_refused_and_left(
    cli_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file at the path, or another user's socket there, is refused with one line
    (``error[config_invalid]``, exit 78) and left as it was: the file is not removed, the
    socket neither replaced nor served on."""
    path = tmp_path / "mcp.sock"
    path.write_text("someone's notes")
    args = ("mcp", "--transport", "http", "--host", f"unix:{path}")
    assert run_cli(*args) == ConfigError.exit_code
    err = capsys.readouterr().err
    assert f"cannot listen on unix:{path}: the path exists and is not a socket" in err
    assert len(err.strip().splitlines()) == 1, err
    assert path.read_text() == "someone's notes"

    path.unlink()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # nothing listens: this user's own would be replaced
    owner, inode = path.lstat().st_uid, path.lstat().st_ino
    # this process taken for another user, the socket's owner staying who made it: a
    # test that runs as any user (chown needs root)
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    assert run_cli(*args) == ConfigError.exit_code
    err = capsys.readouterr().err
    assert f"a socket of another user (uid {owner}) is there" in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert stat.S_ISSOCK(path.lstat().st_mode)
    assert path.lstat().st_ino == inode  # still there, not replaced


def test_an_empty_unix_path_is_refused_naming_the_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_cli("mcp", "--transport", "http", "--host", "unix:") == ConfigError.exit_code
    assert "--host='unix:' names no socket: give unix:/PATH" in capsys.readouterr().err
