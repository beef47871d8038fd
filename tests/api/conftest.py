"""A real ragstore server on a free loopback port, in a thread of the test process (so it
shares the loaded model), against the test module's database."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import uvicorn

from ragstore import Client
from ragstore.api import create_app
from ragstore.api.server import server_config
from ragstore.auth import KeyStore
from ragstore.config import Settings
from ragstore.db.database import Database


@contextmanager
def running_server(
    settings: Settings, app: Any = None, *, port: int = 0, **options: Any
) -> Iterator[str]:
    """Serve ``app`` (default ``create_app(settings)``) on 127.0.0.1 at ``port`` (default a
    free one; a given one serves again where a stopped server was); yield its base URL.
    ``options`` go to uvicorn (``root_path``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    config = server_config(
        app if app is not None else create_app(settings),
        settings,
        log_level="warning",
        access_log=False,
        lifespan="on",
        **options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def with_(settings: Settings, **update: Any) -> Settings:
    return settings.model_copy(update=update)


@pytest.fixture(scope="module")
def open_url(settings: Settings) -> Iterator[str]:
    """A server with auth off."""
    with running_server(with_(settings, auth="off")) as url:
        yield url


@pytest.fixture()
def client(open_url: str) -> Iterator[Client]:
    with Client(open_url) as c:
        yield c


@pytest.fixture(scope="module")
def keys(settings: Settings) -> Iterator[KeyStore]:
    assert settings.database_url is not None
    db = Database(settings.database_url.get_secret_value())
    yield KeyStore(db)
    db.close()
