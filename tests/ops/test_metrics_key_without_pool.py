"""A scraper's key on /metrics is checked without the database's pool, and without the
database at all for a key the server verified already: the scrape is what reports the
database (``ragstore_db_up``) and the pool, so it must answer while either fails. Real
servers on loopback, a real embedded PostgreSQL stopped under one."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ragstore.api import create_app
from ragstore.auth import KeyStore
from ragstore.config import Settings
from ragstore.db import embedded, migrations
from ragstore.db.database import Database
from tests.api.conftest import running_server


def _samples(response: httpx.Response) -> dict[str, float]:
    """The unlabelled samples of a scrape's answer, by name."""
    assert response.status_code == 200, response.text[:300]
    return {
        s.name: s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
        if not s.labels
    }


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class _Clock:
    """A key store's clock that moves only when told (its recheck window, not the wall)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def own_database(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """An embedded server of this test's own (the session's is shared), migrated, given to
    the app by its URL: an app that joined it by its data directory would start it again
    on its next request, and this test stops it."""
    data = tmp_path / "own"
    try:
        uri = embedded.start(data)
        db = Database(uri)
        try:
            migrations.upgrade(db)
        finally:
            db.close()
        yield data, uri
    finally:
        embedded.release(data)
        embedded.stop(data)


def test_a_verified_key_scrapes_with_the_database_stopped_and_a_new_one_is_refused(
    own_database: tuple[Path, str], tmp_path: Path
) -> None:
    """With the database down every keyed scrape was refused 503 (the key was read on a
    pooled connection): ``up == 0``, every metric blank, and ``ragstore_db_up 0`` never
    scraped, so RagstoreDatabaseDown could not fire. A key this server verified answers
    200 with ``ragstore_db_up 0`` now, within its recheck window and past it; a key it
    never verified is refused 503 with a detail saying why."""
    data, uri = own_database
    db = Database(uri)
    try:
        store = KeyStore(db)
        seen = store.create("metrics", name="prometheus").secret
        unseen = store.create("metrics", name="other").secret
    finally:
        db.close()
    local = Settings(
        data_dir=tmp_path / "data",
        database_url=uri,
        profile="test",
        auth="on",
        model="no-such-model",  # no model needed: the metrics only
    )
    app = create_app(local)
    with running_server(local, app) as url, httpx.Client(base_url=url, timeout=60) as http:
        clock = _Clock()
        app.state.ragstore.keys.clock = clock
        assert _samples(http.get("/metrics", headers=_bearer(seen)))["ragstore_db_up"] == 1
        try:
            assert embedded.stop(data)
            within = _samples(http.get("/metrics", headers=_bearer(seen)))
            assert within["ragstore_db_up"] == 0
            clock.now += 3600  # past the window: the check reaches for the database
            past = http.get("/metrics", headers=_bearer(seen))
            assert _samples(past)["ragstore_db_up"] == 0
            assert "ragstore_build_info{" in past.text  # the process's metrics, as ever
            refused = http.get("/metrics", headers=_bearer(unseen))
            assert refused.status_code == 503, refused.text[:300]
            assert refused.headers["content-type"].startswith("application/problem+json")
            problem = refused.json()
            assert problem["code"] == "database_unavailable"
            assert "API key could not be checked" in problem["detail"]
            assert "ragstore_db_up" not in refused.text
        finally:
            embedded.start(data)  # up for the app's shutdown, whatever failed


def test_a_scrape_with_a_key_answers_while_every_pooled_connection_is_held(
    settings: Settings,
) -> None:
    """With the pool held the key was read on a pooled connection, waiting out the pool
    timeout (here 30 s) and then refused 503: the scrape that shows the pool exhausted
    failed. A key never seen by this server is checked on a fresh connection now, while
    every pooled connection (one a pool) stays held."""
    assert settings.database_url is not None
    db = Database(settings.database_url.get_secret_value())
    try:
        key = KeyStore(db).create("metrics", name="prometheus").secret
    finally:
        db.close()
    tight = settings.model_copy(
        update={"auth": "on", "pool_min_size": 1, "pool_max_size": 1, "connect_timeout_s": 30}
    )
    app = create_app(tight)
    with running_server(tight, app) as url, httpx.Client(base_url=url, timeout=120) as http:
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
            scraped = http.get("/metrics", headers=_bearer(key))
            still_held = holder.is_alive() and not release.is_set()
        finally:
            release.set()
            holder.join(60)
    samples = _samples(scraped)
    assert still_held
    assert samples["ragstore_db_up"] == 1


def test_a_key_revoked_elsewhere_is_refused_once_its_recheck_window_passes(
    settings: Settings,
) -> None:
    """A scraper's key verified by this server is taken without SQL for
    ``PROBE_RECHECK_S``; revoked by another process (``ragstore keys revoke``), it is
    refused at the first scrape past that window, and not taken again unread."""
    assert settings.database_url is not None
    db = Database(settings.database_url.get_secret_value())
    try:
        store = KeyStore(db)  # another process's store: the server's remembers nothing
        key = store.create("metrics", name="prometheus").secret
        keyed = settings.model_copy(update={"auth": "on"})
        app = create_app(keyed)
        with running_server(keyed, app) as url, httpx.Client(base_url=url, timeout=60) as h:
            served = app.state.ragstore.keys
            clock = _Clock()
            served.clock = clock
            assert h.get("/metrics", headers=_bearer(key)).status_code == 200
            store.revoke(key)
            assert h.get("/metrics", headers=_bearer(key)).status_code == 200  # within it
            clock.now += served.probe_recheck_s
            refused = h.get("/metrics", headers=_bearer(key))
            assert refused.status_code == 401, refused.text[:300]
            assert refused.json()["code"] == "unauthorized"
            assert "revoked" in refused.json()["detail"]
            clock.now -= served.probe_recheck_s  # as if the window had not passed
            assert h.get("/metrics", headers=_bearer(key)).status_code == 401
    finally:
        db.close()
