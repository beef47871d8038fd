"""Settings that name a program, a library or where documents and keys go are read from the
environment only: a ``.env`` (read from the working directory, which ``cd cloned-repo &&
ragstore ingest .`` makes someone else's folder) holding one is refused."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from ragstore.config import ENV_ONLY
from ragstore.errors import ConfigError
from ragstore.profiles import get_settings
from tests.conftest import run_cli

CLI = [sys.executable, "-c", "import sys; from ragstore.cli import main; main(sys.argv[1:])"]
CONFIG_INVALID = 78

# a value each environment-only setting accepts
VALUES = {
    "native_bm25_cc": "/usr/bin/cc",
    "native_bm25_prebuilt": "/opt/native",
    "data_dir": "/srv/ragstore",
    "database_url": "postgresql://u:Xq7-long-unique@db.internal:5432/rag",
    "read_database_urls": "postgresql://u:Xq7-long-unique@replica.internal:5432/rag",
    "url": "http://127.0.0.1:8080",
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("RAGSTORE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_every_environment_only_setting_has_a_value_here() -> None:
    assert set(VALUES) == set(ENV_ONLY)


@pytest.mark.parametrize("name", sorted(ENV_ONLY))
def test_an_environment_only_setting_in_dot_env_is_refused(name: str, tmp_path: Path) -> None:
    variable = f"RAGSTORE_{name.upper()}"
    (tmp_path / ".env").write_text(f"RAGSTORE_COLLECTION=notes\n{variable}={VALUES[name]}\n")
    with pytest.raises(ConfigError) as exc:
        get_settings()
    message = str(exc.value)
    assert message.startswith(f"{variable} is set in {tmp_path / '.env'}, "), message
    assert f"Set it in the environment instead (export {variable}=...)" in message
    assert "Xq7" not in message  # a URL's password is not repeated


@pytest.mark.parametrize("name", sorted(ENV_ONLY))
def test_an_environment_only_setting_is_taken_from_the_environment(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the environment it is a setting like any other; a ``.env`` line for it too is
    then not used, so not refused."""
    variable = f"RAGSTORE_{name.upper()}"
    monkeypatch.setenv(variable, VALUES[name])
    assert _value(name) == VALUES[name]
    (tmp_path / ".env").write_text(f"{variable}=/somewhere/else\n")
    assert _value(name) == VALUES[name]


def _value(name: str) -> str:
    value = getattr(get_settings(), name)
    return str(value.get_secret_value() if hasattr(value, "get_secret_value") else value)


def test_several_are_named_in_one_line_and_other_settings_stay_allowed(tmp_path: Path) -> None:
    """The key itself may come from a ``.env``: a folder's key goes to the server the
    environment names, as the folder's own."""
    (tmp_path / ".env").write_text(
        "RAGSTORE_API_KEY=rsk_from_the_folder\nRAGSTORE_SEARCH_K=7\n"
        "RAGSTORE_URL=http://127.0.0.1:9\nRAGSTORE_NATIVE_BM25_CC=./x.sh\n"
    )
    with pytest.raises(ConfigError) as exc:
        get_settings()
    assert str(exc.value).startswith(
        f"RAGSTORE_NATIVE_BM25_CC, RAGSTORE_URL are set in {tmp_path / '.env'}, "
    )
    (tmp_path / ".env").write_text("RAGSTORE_API_KEY=rsk_from_the_folder\nRAGSTORE_SEARCH_K=7\n")
    settings = get_settings()
    assert settings.search_k == 7
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "rsk_from_the_folder"


def test_a_cloned_repositorys_dot_env_runs_no_program(tmp_path: Path) -> None:
    """The review's reproduction: a repository whose ``.env`` names its own script as the
    compiler; ``ragstore collections list`` in it ran the script as the user (on the
    embedded server's first start), with only a compile warning shown. Now the command
    stops at the settings: exit 78, the file and the variable named, the script never run."""
    marker = tmp_path / "ran"
    script = tmp_path / "evil.sh"
    script.write_text(f"#!/bin/sh\necho ran > {marker}\nexit 1\n")
    script.chmod(0o755)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / ".env").write_text(f"RAGSTORE_NATIVE_BM25_CC={script}\n")
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGSTORE_", "XDG_"))}
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / "data"),
        XDG_CACHE_HOME=str(home / "cache"),  # no kernel built yet: it would be compiled
        XDG_CONFIG_HOME=str(home / "config"),
    )
    try:
        done = subprocess.run(
            [*CLI, "collections", "list"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        _stop_embedded(home / "data" / "ragstore")
    assert not marker.exists(), "the .env's compiler ran"
    assert done.returncode == CONFIG_INVALID, done.stderr
    assert done.stderr.startswith(
        f"error[config_invalid]: RAGSTORE_NATIVE_BM25_CC is set in {repo / '.env'}, "
    ), done.stderr


def _stop_embedded(data_dir: Path) -> None:
    """Stop an embedded server a run without the refusal would have left running."""
    if (data_dir / "pg" / "postmaster.pid").exists():
        from ragstore.db import embedded

        embedded.stop(data_dir)


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        body = b'{"type":"about:blank","title":"nope","status":404,"code":"not_found"}'
        self.send_response(404)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture()
def recorder() -> Iterator[tuple[str, list[str | None]]]:
    """A server on loopback that notes the Authorization header of each request."""
    seen: ClassVar[list[str | None]] = []
    handler = type("Recorder", (_Recorder,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_server_named_in_dot_env_is_sent_no_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    recorder: tuple[str, list[str | None]],
) -> None:
    """A ``.env`` naming the server took the user's own ``RAGSTORE_API_KEY`` (from the
    environment) to it with the CLI's first request."""
    url, seen = recorder
    (tmp_path / ".env").write_text(f"RAGSTORE_URL={url}\n")
    monkeypatch.setenv("RAGSTORE_API_KEY", "rsk_the_users_own")
    monkeypatch.setenv("RAGSTORE_CLIENT_RETRIES", "0")
    assert run_cli("collections", "list") == CONFIG_INVALID
    err = capsys.readouterr().err
    assert err.startswith(f"error[config_invalid]: RAGSTORE_URL is set in {tmp_path / '.env'}, ")
    assert "RAGSTORE_API_KEY" in err and "Set it in the environment instead" in err
    assert seen == []
