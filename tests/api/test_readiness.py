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
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr

from ragstore import Client
from ragstore.config import Settings
from ragstore.db.database import describe
from ragstore.errors import (
    ConflictError,
    DatabaseUnavailableError,
    NotReadyError,
    SchemaMismatchError,
    public_detail,
)
from tests.api.conftest import running_server, with_


def test_database_without_schema_is_not_ready(settings: Settings, empty_database_url: str) -> None:
    bare = with_(settings, database_url=SecretStr(empty_database_url), auth="off")
    # retries=0: the not_ready answer is what is asserted, not the client's retries of it
    # (tests/api/test_client_retries.py); three retries waited out ~15 s of Retry-After
    with running_server(bare) as url, Client(url, retries=0) as c:
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
    with running_server(down) as url, Client(url, retries=0) as c:
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


def test_a_schema_mismatchs_answer_names_no_database_address(
    settings: Settings, empty_database_url: str
) -> None:
    """A server whose database lacks its schema answered every request with "the database
    schema on postgresql://user@host:port/db is at revision none ...": the database's
    address, user and name told to any API caller. The CLI's message keeps it (an
    operator's); the API's problem detail names no address now."""
    parts = conninfo_to_dict(empty_database_url)
    bare = with_(settings, database_url=SecretStr(empty_database_url), auth="off")
    with running_server(bare) as url:
        r = httpx.get(f"{url}/v1/collections")
    assert r.status_code >= 500 and r.json()["code"] == "schema_mismatch", r.text
    detail = r.json()["detail"]
    assert "ragstore db upgrade" in detail, detail
    assert "postgresql://" not in detail, detail
    for part in ("dbname", "host"):
        assert str(parts.get(part)) not in detail, (part, detail)


def test_public_detail_hides_every_described_address() -> None:
    """Any error's public text hides a database address ``describe`` wrote into it, even
    one with a space in its socket directory (a regular expression alone would keep the
    rest of it); the message itself (the CLI's, the log's) keeps it."""
    where = describe("host='/srv/my data/pg' port=5433 user=alice dbname=kb")
    err = SchemaMismatchError(f"the database schema on {where} is at revision none")
    assert where in err.message
    detail = public_detail(err)
    assert "alice" not in detail and "my data" not in detail and "5433" not in detail, detail
    assert detail == "the database schema on the database is at revision none", detail
    other = ConflictError("using postgresql://bob@db.example:5432/x: it already exists")
    assert "bob" not in public_detail(other) and "example" not in public_detail(other)
    hint = ConflictError("give a .jsonl file or a postgresql:// URL")  # no address in it
    assert public_detail(hint) == hint.message
