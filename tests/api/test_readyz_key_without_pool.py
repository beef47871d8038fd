"""/readyz's key check (who may read the per-collection details) needs no pooled
connection: a load balancer's probe that carries a key must answer while every pooled
connection is held, as the probe without one does. A real server on loopback on the
session's embedded PostgreSQL."""

from __future__ import annotations

import threading

import httpx

from ragstore import Client
from ragstore.api import create_app
from ragstore.auth import KeyStore
from ragstore.config import Settings
from ragstore.db.database import Database
from tests.api.conftest import running_server, with_


def test_a_probe_with_a_key_sees_its_details_while_every_pooled_connection_is_held(
    settings: Settings,
) -> None:
    """The key was read on a pooled connection: with the pool held a keyed probe waited
    out the pool timeout (here 30 s, past any balancer's probe timeout, which takes a
    busy server out of rotation) and was then answered as anonymous. A key this server
    never saw is checked on a fresh connection now, while the pool (one connection)
    stays held, and the probe names the collections it may see."""
    assert settings.database_url is not None
    db = Database(settings.database_url.get_secret_value())
    try:
        store = KeyStore(db)  # another process's store: the server remembers no key
        admin = store.create("admin", name="setup").secret
        probe = store.create("read", name="balancer").secret
    finally:
        db.close()
    tight = with_(settings, auth="on", pool_min_size=1, pool_max_size=1, connect_timeout_s=30)
    app = create_app(tight)
    with running_server(tight, app) as url, httpx.Client(base_url=url, timeout=120) as http:
        with Client(url, api_key=admin) as c:
            c.create_collection("probed")
        state = app.state.ragstore
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            # the runtime's pool and the one the API's key checks and rate limits share
            with state.runtime.db.connection(), state.keys.db.connection():
                held.set()
                release.wait(120)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert held.wait(60)
            ready = http.get("/readyz", headers={"Authorization": f"Bearer {probe}"})
            still_held = holder.is_alive() and not release.is_set()
        finally:
            release.set()
            holder.join(60)
    assert still_held
    assert ready.status_code == 200, ready.text[:300]
    assert ready.json()["collections"] == {"probed": "ok"}
