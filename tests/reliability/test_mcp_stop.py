"""``ragstore mcp`` (over http, and over stdio as agents spawn it) stopped as a service
manager, a terminal or its host stops it: in its own process, on its own embedded server,
as ``serve`` is in ``test_serve.py``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from ragstore.db import embedded
from tests.mcp_wire import HELLO


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir of these tests' own: the embedded server the command starts has no other
    user, so it must stop when the command does (the session's server never would)."""
    return tmp_path_factory.mktemp("mcp-stop") / "data"


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTORE_")}
    env.update(
        {
            "RAGSTORE_DATA_DIR": str(data_dir),
            "RAGSTORE_PROFILE": "test",
            "RAGSTORE_MODEL": "no-such-model",  # no tool called here needs the model
        }
    )
    return env


MCP = [sys.executable, "-c", "from ragstore.cli import main; main()", "mcp"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _list_collections(url: str) -> list[object]:
    """A tool call over streamable HTTP: it opens the Store's pool, starting the embedded
    server."""
    async with streamable_http_client(url) as (read, write), ClientSession(read, write) as s:
        await s.initialize()
        result = await s.call_tool("list_collections", {})
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return list(result.structured_content["collections"])


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_http_mcp_stopped_by_a_signal_exits_0_and_stops_its_embedded_server(
    data_dir: Path, tmp_path: Path, stop: signal.Signals
) -> None:
    """uvicorn raised the stopping signal again after its graceful shutdown: SIGTERM killed
    the command (status -15, 143 in a shell: "Error" to Kubernetes) before its exit
    handlers ran, so the embedded PostgreSQL it had started kept running, and Ctrl-C
    exited 130. Both now stop it gracefully: exit 0, the port and the server released."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    env = _env(data_dir)
    log = tmp_path / "mcp.err"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [*MCP, "--transport", "http", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 150
        while True:
            try:
                httpx.get(url, timeout=5)  # any answer: it is listening
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
        assert isinstance(asyncio.run(_list_collections(url)), list)
        postmaster = psutil.Process(
            int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
        )
        proc.send_signal(stop)
        status = proc.wait(timeout=60)
        assert status == 0, (status, log.read_text(errors="replace")[-2000:])
        _gone, alive = psutil.wait_procs([postmaster], timeout=60)
        assert alive == []  # the embedded server stopped with its last user
        with pytest.raises(httpx.TransportError):
            httpx.get(url, timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if (data_dir / "pg" / "postmaster.pid").exists():
            embedded.stop(data_dir)


def _ask(proc: subprocess.Popen[bytes], message: dict[str, object]) -> dict[str, object]:
    """Send one JSON-RPC message on the server's stdin; a request's answer, read from its
    stdout (a notification gets none: ``{}``)."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps({"jsonrpc": "2.0", **message}).encode() + b"\n")
    proc.stdin.flush()
    if "id" not in message:
        return {}
    answer = json.loads(proc.stdout.readline())
    assert answer.get("id") == message["id"], answer
    return dict(answer)


@pytest.mark.parametrize(
    "stop", [signal.SIGTERM, signal.SIGINT, None], ids=["SIGTERM", "SIGINT", "stdin-closed"]
)
def test_stdio_mcp_stopped_by_a_signal_or_eof_exits_0_and_stops_its_embedded_server(
    data_dir: Path, tmp_path: Path, stop: signal.Signals | None
) -> None:
    """Over stdio (the default, what agents spawn) nothing handled a signal: SIGTERM, which
    many hosts send instead of closing stdin, killed the command (status -15) before its
    exit handlers ran, so the embedded PostgreSQL it had started kept running; Ctrl-C
    (SIGINT) did not stop it at all, its read of stdin never ended. Both now stop it as
    the host closing stdin (``None`` here) does: exit 0, the embedded server stopped.

    The client is this test, speaking the wire as the SDK's stdio client does: that
    client keeps the process (and its exit status) to itself and, on leaving, closes
    stdin first, which would end the server whatever the signal did."""
    log = tmp_path / "mcp.err"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            MCP,
            env=_env(data_dir),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    assert proc.stdin is not None
    try:
        hello = _ask(proc, HELLO)
        assert "result" in hello, (hello, log.read_text(errors="replace")[-2000:])
        _ask(proc, {"method": "notifications/initialized"})
        # a tool call: it opens the Store's pool, starting the embedded server
        listed = _ask(
            proc,
            {"id": 2, "method": "tools/call", "params": {"name": "list_collections"}},
        )
        result = listed["result"]
        assert isinstance(result, dict) and not result["isError"], listed
        assert isinstance(result["structuredContent"]["collections"], list)
        postmaster = psutil.Process(
            int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
        )
        if stop is None:
            proc.stdin.close()
        else:
            proc.send_signal(stop)  # stdin stays open, as a host that signals keeps it
        try:
            status = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            how = stop.name if stop is not None else "stdin closed"
            raise AssertionError(f"still running 60 s after {how}: {log.read_text()}") from None
        assert status == 0, (status, log.read_text(errors="replace")[-2000:])
        _gone, alive = psutil.wait_procs([postmaster], timeout=60)
        assert alive == []  # the embedded server stopped with its last user
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        if (data_dir / "pg" / "postmaster.pid").exists():
            embedded.stop(data_dir)
