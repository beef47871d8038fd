"""With keys off, being on this machine is the only credential: the ways a server that
judged itself local could still be reached from the network (tests/api/test_routes.py has
the Host, Origin and trusted-proxy cases)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from ragstore.api import create_app
from ragstore.api.server import server_config
from ragstore.config import Settings
from tests.api.conftest import running_server, with_


@contextmanager
def unix_server(settings: Settings, path: Path) -> Iterator[httpx.Client]:
    """``create_app(settings)`` on a Unix socket at ``path``; a client that reaches it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    config = server_config(create_app(settings), settings, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    try:
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def test_auth_off_refuses_what_a_local_proxy_forwards_for_another_machine(
    settings: Settings,
) -> None:
    # A reverse proxy on this machine connects from 127.0.0.1; with no trusted proxies its
    # X-Forwarded-For is not believed, so the peer address alone let Apache's ProxyPass
    # (Host: 127.0.0.1:PORT, X-Forwarded-For: <client>) serve the network with admin rights.
    with running_server(with_(settings, auth="off")) as url:
        local = {"Host": url.removeprefix("http://")}
        forwarded = [
            {"X-Forwarded-For": "203.0.113.9"},
            {"X-Forwarded-For": "127.0.0.1, 203.0.113.9:5120"},
            {"X-Real-IP": "2001:db8::1"},
            {"Forwarded": 'for="[2001:db8::1]:4711";proto=https'},
            {"Forwarded": "for=127.0.0.1, for=unknown"},
        ]
        for header in forwarded:
            refused = httpx.get(f"{url}/v1/collections", headers={**local, **header})
            assert refused.status_code == 403, (header, refused.text)
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["code"] == "forbidden"
            assert "RAGSTORE_AUTH=on" in refused.json()["detail"], refused.text
        mine = [
            {"X-Forwarded-For": "127.0.0.1, ::1"},
            {"X-Real-IP": "[::1]:80"},
            {"Forwarded": 'for=127.0.0.1:5000;proto=http, for="[::1]"'},
            {"X-Forwarded-For": "::ffff:127.0.0.1"},  # a dual-stack proxy (Node) says so
        ]
        for header in mine:  # a client on this machine, through a proxy on it
            ok = httpx.get(f"{url}/v1/collections", headers={**local, **header})
            assert ok.status_code == 200, (header, ok.text)


def test_auth_off_claiming_a_unix_socket_still_guards_tcp(settings: Settings) -> None:
    # RAGSTORE_API_HOST=unix:... only claims a Unix socket; the guard was left out for it,
    # so the app served on TCP by hand (uvicorn --host 0.0.0.0) answered other sites'
    # pages and other machines with admin rights.
    claimed = with_(settings, auth="off", api_host="unix:/run/ragstore.sock")
    with running_server(claimed) as url:
        rebound = httpx.get(f"{url}/v1/collections", headers={"Host": "evil.example"})
        assert rebound.status_code == 403, rebound.text
        assert "evil.example" in rebound.json()["detail"]
        assert httpx.get(f"{url}/v1/collections").status_code == 200


def test_auth_off_on_a_unix_socket_ignores_host_but_not_forwarded_clients_or_origins(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A Unix socket's client (curl --unix-socket, a proxy) names the Host it likes: its
    # Host is not judged. A proxy forwarding the network, or another site's page (its
    # Origin), still is.
    path = Path(tmp_path_factory.mktemp("sock", numbered=True)) / "api.sock"
    # the socket as `ragstore serve` binds it and says so (RAGSTORE_API_BOUND)
    claimed = with_(settings, auth="off", api_host=f"unix:{path}", api_bound=f"unix:{path}")
    with unix_server(claimed, path) as client:
        ok = client.get("http://ragstore.internal/v1/collections")
        assert ok.status_code == 200, ok.text
        proxied = client.get(
            "http://ragstore.internal/v1/collections",
            headers={"X-Forwarded-For": "203.0.113.9"},
        )
        assert proxied.status_code == 403, proxied.text
        assert "203.0.113.9" in proxied.json()["detail"]
        # a page of another site behind a proxy in front of the socket (nginx sends
        # Host: localhost and no forwarding header) still names its Origin
        posted = client.post(
            "http://localhost/v1/collections/x/texts",
            headers={"Origin": "https://evil.example"},
            json={"texts": ["a"]},
        )
        assert posted.status_code == 403, posted.text
        assert "evil.example" in posted.json()["detail"]


@pytest.mark.parametrize("host", ["127.0.0.1", "unix:/run/ragstore.sock"])
def test_auth_off_refuses_a_unix_socket_ragstore_did_not_bind(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, host: str
) -> None:
    # `uvicorn ragstore.api.app:create_app --factory --uds PATH` makes its socket 0666, and
    # RAGSTORE_AUTH=auto, judged from RAGSTORE_API_HOST (127.0.0.1 by default), turned keys
    # off: every user of the machine had admin rights through it. Only the owner-only
    # socket `ragstore serve` binds (unix: in RAGSTORE_API_BOUND) is answered with keys off.
    path = Path(tmp_path_factory.mktemp("sock", numbered=True)) / "api.sock"
    with unix_server(with_(settings, auth="off", api_host=host), path) as client:
        refused = client.get("http://localhost/v1/collections")
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == "forbidden"
        detail = refused.json()["detail"]
        assert "RAGSTORE_API_HOST=unix:PATH" in detail and "RAGSTORE_AUTH=on" in detail


def test_a_server_with_keys_off_says_at_start_that_every_local_user_has_admin_rights(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # A loopback port has no permissions and TCP carries no peer credentials: with keys
    # off every user of a shared machine had admin rights, which the start-up line, "every
    # request to 127.0.0.1:8080 has admin rights", did not say.
    caplog.set_level(logging.WARNING, logger="ragstore.api")
    with running_server(with_(settings, auth="off", api_bound="127.0.0.1")):
        pass
    said = [r.getMessage() for r in caplog.records if "authentication is OFF" in r.getMessage()]
    assert len(said) == 1, said
    assert "from any user of this machine" in said[0]
    assert "on a machine shared with other users set RAGSTORE_AUTH=on" in said[0]
