"""``ragstore serve`` on a Unix socket (``RAGSTORE_API_HOST=unix:PATH``)."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ragstore.errors import ConfigError
from ragstore.http.listen import bind_sockets, bound_addresses, release_sockets
from tests.api.test_serve_environment import serve_in_process


def _accepts(path: Path) -> bool:
    """Whether a server listens on the Unix socket ``path`` (its backlog takes the
    connection once it is bound: /healthz waits for the start-up)."""
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def test_serve_binds_an_owner_only_unix_socket_and_answers_on_it(
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """serve could not listen on a Unix socket at all (``unix:PATH`` "does not resolve"),
    and the socket uvicorn's ``--uds`` makes is 0666: with keys off every user of the
    machine had admin rights. serve binds it owner-only now, answers on it, and removes
    it when it stops."""
    path = tmp_path / "api.sock"
    monkeypatch.setenv("RAGSTORE_AUTH", "off")
    seen: dict[str, int] = {}

    def while_up() -> None:
        seen["mode"] = stat.S_IMODE(path.stat().st_mode)
        transport = httpx.HTTPTransport(uds=str(path))
        with httpx.Client(transport=transport, timeout=120) as client:
            seen["health"] = client.get("http://localhost/healthz").status_code
            seen["list"] = client.get("http://ragstore.internal/v1/collections").status_code

    code = serve_in_process(["serve", "--host", f"unix:{path}"], lambda: _accepts(path), while_up)
    assert code == 0
    assert seen["mode"] == 0o600, oct(seen["mode"])
    assert seen["health"] == 200
    assert seen["list"] == 200  # its own socket: answered with keys off
    assert not path.exists()  # removed when it stopped
    said = [r.getMessage() for r in caplog.records if "authentication is OFF" in r.getMessage()]
    assert said and f"over unix:{path} (owner-only)" in said[0], said


def test_a_stale_unix_socket_is_replaced_and_a_live_one_or_a_file_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "api.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # the file stays: a server that died
    sockets = bind_sockets(f"unix:{path}", 0)
    try:
        assert bound_addresses(sockets) == [f"unix:{path}"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with pytest.raises(ConfigError, match="a server already listens there"):
            bind_sockets(f"unix:{path}", 0)
    finally:
        release_sockets(sockets, [f"unix:{path}"])
    assert not path.exists()
    path.write_text("not a socket")
    with pytest.raises(ConfigError, match="not a socket"):
        bind_sockets(f"unix:{path}", 0)
    assert path.read_text() == "not a socket"


def test_a_serve_that_fails_to_start_after_binding_removes_its_unix_socket(
    cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The sockets were released only for a refused setting or once serving ended: a
    start that failed in between (the server's configuration, the metrics folder) left
    the socket open and its file behind, until the next start cleared it as stale."""
    from ragstore.api import server
    from tests.conftest import run_cli

    path = tmp_path / "api.sock"
    monkeypatch.setenv("RAGSTORE_AUTH", "off")

    def refused(*args: object, **kwargs: object) -> None:
        raise OSError("the server's configuration could not be made")

    monkeypatch.setattr(server, "server_config", refused)
    with pytest.raises(OSError, match="could not be made"):
        run_cli("serve", "--host", f"unix:{path}")
    assert not path.exists()


def _env(cli_env: dict[str, str], **extra: str) -> dict[str, str]:
    """A child process's environment: this one's less ragstore's variables, with the test
    database's (``cli_env``) and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTORE_")}
    env.update(cli_env, RAGSTORE_AUTH="off", RAGSTORE_MODEL="no-such-model", **extra)
    return env


@pytest.mark.parametrize("where", ["environment", ".env"])
def test_ragstore_api_bound_from_the_user_is_refused(
    cli_env: dict[str, str], tmp_path: Path, where: str
) -> None:
    """RAGSTORE_API_BOUND was a setting like any other, meant for ``ragstore serve``'s
    workers: set beside ``uvicorn --uds PATH`` (a socket every local user can open), with
    keys off, ``unix:PATH`` in it made the loopback guard take uvicorn's socket for the
    owner-only one serve binds, and every user of the machine had admin rights. It is
    refused now wherever the user sets it, before anything listens."""
    path = tmp_path / "api.sock"
    claim = f"unix:{path}"
    env = _env(cli_env)
    if where == ".env":
        (tmp_path / ".env").write_text(f"RAGSTORE_API_BOUND={claim}\n")
    else:
        env["RAGSTORE_API_BOUND"] = claim
    uvicorn = [sys.executable, "-m", "uvicorn", "ragstore.api.app:create_app", "--factory"]
    proc = subprocess.Popen(
        [*uvicorn, "--uds", str(path)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    answered = None
    try:
        deadline = time.monotonic() + 150
        while proc.poll() is None and time.monotonic() < deadline:
            if _accepts(path):  # it serves: what does it answer another user?
                with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
                    answered = client.get("http://localhost/v1/collections", timeout=120)
                break
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert answered is None, f"served on uvicorn's socket: {answered.status_code}"
    assert proc.returncode == ConfigError.exit_code, err
    assert "error[config_invalid]: RAGSTORE_API_BOUND is set" in err
    assert not path.exists()


def test_serve_with_workers_answers_on_its_own_unix_socket_with_keys_off(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """The addresses serve bound reach each of its worker processes (spawned by uvicorn)
    with the app's factory, no longer through the environment: the socket is still known
    for serve's own and answered with keys off."""
    path = tmp_path / "api.sock"
    serve = [sys.executable, "-c", "from ragstore.cli import main; main()", "serve"]
    proc = subprocess.Popen(
        [*serve, "--host", f"unix:{path}", "--workers", "2"],
        env=_env(cli_env, TMPDIR=str(tmp_path)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 150
        while not _accepts(path):  # bound: its workers' start is waited for by /healthz
            assert proc.poll() is None and time.monotonic() < deadline, "serve exited"
            time.sleep(0.2)
        transport = httpx.HTTPTransport(uds=str(path))
        with httpx.Client(transport=transport, timeout=120) as client:
            health = client.get("http://localhost/healthz")
            assert health.status_code == 200, health.text
            listed = client.get("http://ragstore.internal/v1/collections")
            assert listed.status_code == 200, listed.text
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
