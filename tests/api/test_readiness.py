"""/readyz and the errors of a server whose database is missing its schema or unreachable,
and `ragstore serve` itself saying at start that auth is off."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from pydantic import SecretStr

from ragstore import Client
from ragstore.config import Settings
from ragstore.errors import DatabaseUnavailableError, NotReadyError, SchemaMismatchError
from tests.api.conftest import running_server, with_


def test_database_without_schema_is_not_ready(settings: Settings, empty_database_url: str) -> None:
    bare = with_(settings, database_url=SecretStr(empty_database_url), auth="off")
    with running_server(bare) as url, Client(url) as c:
        assert c.health()["status"] == "ok"
        with pytest.raises(NotReadyError, match="schema is at none"):
            c.ready()
        with pytest.raises(SchemaMismatchError, match="ragstore db upgrade"):
            c.list_collections()


def test_unreachable_database_is_not_ready(settings: Settings) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = with_(
        settings,
        database_url=SecretStr(f"postgresql://nobody@127.0.0.1:{port}/none"),
        auth="off",
        connect_timeout_s=1.0,
    )
    with running_server(down) as url, Client(url) as c:
        r = httpx.get(f"{url}/readyz")
        assert r.status_code == 503 and r.json()["code"] == "not_ready"
        assert "database unreachable" in r.json()["detail"]
        with pytest.raises(DatabaseUnavailableError):
            c.list_collections()


def test_serve_command_says_auth_is_off_and_serves(cli_env: dict[str, str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, **cli_env, "RAGSTORE_AUTH": "off"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from ragstore.cli import main; main()",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Uvicorn running" in line or "Application startup complete" in line:
                break
        text = "".join(lines)
        assert "authentication is OFF" in text, text
        with Client(f"http://127.0.0.1:{port}") as c:
            assert c.health()["status"] == "ok"
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        if proc.stdout is not None:
            proc.stdout.close()
