"""One connection's fault under a running server is that request's failure only.

An administrator cancels a statement (``pg_cancel_backend``) or ends a connection
(``pg_terminate_backend``): the request it served gets one clear answer, the breaker stays
closed and the next request is served at once, on a fresh connection where the pool held
a dead one; a write that loses its connection is stored whole or not at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx
import psycopg
import pytest

from ragstore.config import Settings
from ragstore.db.database import Database
from ragstore.errors import StatementCancelledError

COLL = "faults"


@pytest.fixture(scope="module")
def http(open_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=open_url, timeout=30) as h:
        r = h.post(
            f"/v1/collections/{COLL}/documents",
            json={"name": "ops/rollback.md", "text": "# Rollback\n\nRun the downgrade.\n"},
        )
        assert r.status_code == 201, r.text
        yield h


@pytest.fixture()
def admin(settings: Settings) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """The administrator's session on the module's database (autocommit: pg_stat_activity
    is read afresh by every statement)."""
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url.get_secret_value(), autocommit=True) as conn:
        yield conn


def _locked(settings: Settings, lock: str) -> psycopg.Connection[tuple[object, ...]]:
    assert settings.database_url is not None
    conn = psycopg.connect(settings.database_url.get_secret_value())
    conn.execute(lock)
    return conn


def _waiting_backend(admin: psycopg.Connection[tuple[object, ...]], like: str) -> int:
    """The backend of this database waiting on a lock in a statement ``LIKE like``."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        row = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE %s AND pid <> pg_backend_pid()",
            (like,),
        ).fetchone()
        if row:
            return int(str(row[0]))
        time.sleep(0.02)
    raise AssertionError(f"no backend waits on a lock in {like!r}")


def _in_thread(call: Callable[[], httpx.Response]) -> tuple[threading.Thread, list[httpx.Response]]:
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(call()), daemon=True)
    thread.start()
    return thread, answers


def _search(h: httpx.Client) -> httpx.Response:
    return h.post(f"/v1/collections/{COLL}/search", json={"query": "rollback", "mode": "fulltext"})


def test_an_administrators_cancel_fails_only_that_search(
    http: httpx.Client, admin: psycopg.Connection[tuple[object, ...]], settings: Settings
) -> None:
    assert _search(http).status_code == 200  # the collection cached: only the search waits
    holder = _locked(settings, "LOCK TABLE chunks IN ACCESS EXCLUSIVE MODE")
    try:
        thread, answers = _in_thread(lambda: _search(http))
        pid = _waiting_backend(admin, "%chunks%")
        admin.execute("SELECT pg_cancel_backend(%s)", (pid,))
        thread.join(timeout=10)
    finally:
        holder.rollback()
        holder.close()
    (r,) = answers
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["code"] == "statement_cancelled"
    assert "cancel" in body["detail"] and "retry" in body["detail"]
    assert int(r.headers["Retry-After"]) >= 1
    # one cancelled statement did not open the breaker: the next search is served at once
    t0 = time.monotonic()
    again = _search(http)
    assert again.status_code == 200, again.text
    assert time.monotonic() - t0 < 1.0


def test_a_cancel_outside_a_search_leaves_the_breaker_closed(settings: Settings) -> None:
    # an ingest's statements are translated outside its pooled connection's block
    assert settings.database_url is not None
    db = Database(settings.database_url.get_secret_value())
    try:
        with (
            pytest.raises(StatementCancelledError, match="statement timeout"),
            db.connection() as c,
        ):
            c.execute("SET LOCAL statement_timeout = 1")  # as a role's own limit would
            c.execute("SELECT pg_sleep(1)")
        assert db.breaker.failures == 0
        with db.connection() as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
    finally:
        db.close()
