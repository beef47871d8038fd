"""A scrape of /metrics whose database went silent on the network (connections accepted,
never answered) reports ``ragstore_db_up 0`` within the probes' connect bound, not after
``RAGSTORE_CONNECT_TIMEOUT_S``. A real server on loopback, reaching the session's embedded
PostgreSQL through a relay on a loopback TCP port that the test silences."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from ragstore.api import create_app
from ragstore.config import Settings
from tests.api.conftest import running_server, with_


class _Relay:
    """A loopback TCP port relayed to the embedded server's Unix socket; once
    :attr:`silent` is set, new connections are accepted and never answered (a database
    behind a network that drops its packets), while those relayed before go on."""

    def __init__(self, database_url: str) -> None:
        params = conninfo_to_dict(database_url)
        self._path = f"{params['host']}/.s.PGSQL.{params.get('port', 5432)}"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        self.silent = threading.Event()
        self.swallowed = threading.Event()  # a connection came while silent
        self._opened: list[socket.socket] = []
        params.update(host="127.0.0.1", port=str(self._listener.getsockname()[1]))
        self.url = make_conninfo("", **params)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _serve(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._opened.append(client)
            if self.silent.is_set():
                self.swallowed.set()  # held open, never read nor answered
                continue
            upstream = socket.socket(socket.AF_UNIX)
            self._opened.append(upstream)
            upstream.connect(self._path)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for s in self._opened:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@pytest.fixture()
def relay(database_url: str) -> Iterator[_Relay]:
    r = _Relay(database_url)
    try:
        yield r
    finally:
        r.close()


def _up(response: httpx.Response) -> float:
    assert response.status_code == 200, response.text[:300]
    return next(
        s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
        if s.name == "ragstore_db_up"
    )


def test_a_scrape_of_a_silent_database_reports_it_down_without_waiting_the_connect_timeout(
    settings: Settings, relay: _Relay
) -> None:
    """The scrape's database figures were read on a fresh connection given the whole
    ``RAGSTORE_CONNECT_TIMEOUT_S`` (here 300 s, its largest) to connect: with the database
    silent the scrape outlived Prometheus' scrape timeout (10 s by default), so the
    target read as down (``up == 0``) and ``ragstore_db_up 0``, whose alert names the
    database's runbook, was never scraped. The connect is bounded as the probes' key
    check's is now, and the scrape answers ``ragstore_db_up 0``."""
    silent_db = with_(
        settings,
        auth="off",
        database_url=SecretStr(relay.url),
        connect_timeout_s=300,
    )
    app = create_app(silent_db)
    with running_server(silent_db, app) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert _up(http.get("/metrics")) == 1  # the database opened through the relay
        relay.silent.set()
        scraped = http.get("/metrics")
        assert relay.swallowed.is_set()  # the scrape did reach for the silent database
        assert _up(scraped) == 0
