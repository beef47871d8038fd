"""``ragstore serve`` on a Unix socket (``RAGSTORE_API_HOST=unix:PATH``)."""

from __future__ import annotations

import socket
import stat
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
