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
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from ragstore.config import Settings
from ragstore.db import embedded
from ragstore.db.database import Database
from ragstore.errors import StatementCancelledError, public_detail
from tests.api.conftest import running_server

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
    # served, and without a wait (a reconnect or a back-off); the bound leaves room for a
    # loaded CI machine
    assert time.monotonic() - t0 < 3.0


def _terminate_idle(admin: psycopg.Connection[tuple[object, ...]]) -> int:
    """End every idle session of this database but the administrator's: the server's pool."""
    row = admin.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND state = 'idle' AND pid <> pg_backend_pid()"
        " AND backend_type = 'client backend'"
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def test_terminated_idle_connections_are_replaced(
    http: httpx.Client, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    assert _search(http).status_code == 200
    assert _terminate_idle(admin) >= 1
    time.sleep(0.2)  # the backends are gone
    r = _search(http)
    assert r.status_code == 200, r.text
    assert _terminate_idle(admin) >= 1
    time.sleep(0.2)
    r = http.post(
        f"/v1/collections/{COLL}/documents",
        json={"name": "ops/replaced.md", "text": "# Replaced\n\nA fresh connection.\n"},
    )
    assert r.status_code == 201, r.text


def _stored(admin: psycopg.Connection[tuple[object, ...]], source: str) -> tuple[int, ...]:
    """Documents named ``source`` (stored under the server's upload dir), their chunks and
    those of them not headings (the ones with vectors); the collection's chunks and tokens as
    the BM25 statistics should count them (headings left out) and as they do."""
    row = admin.execute(
        "SELECT (SELECT count(*) FROM documents d WHERE d.collection_id = c.id"
        "   AND d.source LIKE %(s)s),"
        " (SELECT count(*) FROM chunks k JOIN documents d ON d.id = k.document_id"
        "   WHERE d.collection_id = c.id AND d.source LIKE %(s)s),"
        " (SELECT count(*) FROM chunks k JOIN documents d ON d.id = k.document_id"
        "   WHERE d.collection_id = c.id AND d.source LIKE %(s)s AND k.chunk_type <> 'heading'),"
        " (SELECT count(*) FROM chunks k WHERE k.collection_id = c.id"
        "   AND k.chunk_type <> 'heading'),"
        " (SELECT sum(tsv_length) FROM chunks k WHERE k.collection_id = c.id"
        "   AND k.chunk_type <> 'heading'),"
        " (SELECT chunks FROM bm25_collection_stats s WHERE s.collection_id = c.id),"
        " (SELECT tokens FROM bm25_collection_stats s WHERE s.collection_id = c.id)"
        " FROM collections c WHERE c.name = %(c)s",
        {"s": f"%/{source}", "c": COLL},
    ).fetchone()
    assert row is not None
    return tuple(int(str(v)) for v in row)


def _vectors(admin: psycopg.Connection[tuple[object, ...]], table: str, source: str) -> int:
    row = admin.execute(
        f"SELECT count(*) FROM {table} e JOIN chunks k ON k.id = e.chunk_id"
        " JOIN documents d ON d.id = k.document_id WHERE d.source LIKE %s",
        (f"%/{source}",),
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def test_a_write_whose_connection_is_terminated_is_stored_whole_or_not_at_all(
    http: httpx.Client, admin: psycopg.Connection[tuple[object, ...]], settings: Settings
) -> None:
    row = admin.execute(
        "SELECT s.table_name FROM collections c JOIN embedding_spaces s ON s.id = c.active_space_id"
        " WHERE c.name = %s",
        (COLL,),
    ).fetchone()
    assert row is not None
    table = str(row[0])
    source = "ops/terminated.md"
    text = "# Terminated\n\nThe writer's connection ends.\n\n## More\n\nA second section.\n"
    # reads of the vectors pass; the write's COPY of them waits, its rows so far written
    holder = _locked(settings, f"LOCK TABLE {table} IN EXCLUSIVE MODE")
    try:
        thread, answers = _in_thread(
            lambda: http.post(
                f"/v1/collections/{COLL}/documents", json={"name": source, "text": text}
            )
        )
        pid = _waiting_backend(admin, "COPY%")
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        time.sleep(0.3)  # the write gave up its connection, or retried (waiting again)
    finally:
        holder.rollback()
        holder.close()
    thread.join(timeout=20)
    (r,) = answers
    docs, chunks, texts, *stats = _stored(admin, source)
    vectors = _vectors(admin, table, source)
    assert stats[:2] == stats[2:]  # the BM25 statistics count exactly the stored chunks
    if r.status_code == 201:
        assert (docs, r.json()["chunks"]) == (1, chunks) and vectors == texts >= 1
    else:
        assert r.headers["content-type"].startswith("application/problem+json"), r.text
        assert (docs, chunks, vectors) == (0, 0, 0), r.text
    assert _search(http).status_code == 200


def test_a_restarted_database_is_used_again_without_restarting_the_api(tmp_path: Path) -> None:
    """An embedded server of its own (the session's is shared), stopped and started under
    the API, then restarted at once: every pooled connection of the API died with it."""
    data_dir = tmp_path / "data"
    local = Settings(data_dir=data_dir, profile="test", auth="off", model="no-such-model")
    kept = {"name": "kept", "model": "all-MiniLM-L6-v2"}  # no model loaded: collections only
    with running_server(local) as url, httpx.Client(base_url=url, timeout=30) as h:
        try:
            assert h.post("/v1/collections", json=kept).status_code == 201
            assert embedded.stop(data_dir)
            down = h.get("/v1/collections")
            assert down.status_code == 503 and down.json()["code"] == "database_unavailable"
            embedded.start(data_dir)
            deadline = time.monotonic() + 10
            while (r := h.get("/v1/collections")).status_code != 200:
                assert time.monotonic() < deadline, r.text  # the breaker's back-off (1 s)
                time.sleep(0.2)
            assert embedded.stop(data_dir)
            embedded.start(data_dir)
            # the API's connections died unseen: none is handed out dead
            r = h.get("/v1/collections")
            assert r.status_code == 200, r.text
            assert [c["name"] for c in r.json()["data"]] == ["kept"]
            r = h.post("/v1/collections", json={**kept, "name": "again"})
            assert r.status_code == 201, r.text
        finally:
            embedded.start(data_dir)  # up for the API's shutdown, whatever failed


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


def test_a_cancelled_statements_public_detail_names_no_database_address(
    settings: Settings,
) -> None:
    """A statement cancelled outside a ``translated`` block (a bulk load's, a commit's:
    translated by ``Database.connection`` itself) was ``statement_cancelled`` with "using
    postgresql://user@host/db: ..." in what an API caller and a job's reader are told
    (``public_detail``): the database's address, user and name. Only
    ``database_unavailable`` hid it; the server log keeps it, the caller's text does not."""
    assert settings.database_url is not None
    url = settings.database_url.get_secret_value()
    parts = conninfo_to_dict(url)
    db = Database(url)
    try:
        with (
            pytest.raises(StatementCancelledError, match="statement timeout") as cancelled,
            db.connection() as c,
        ):
            c.execute("SET LOCAL statement_timeout = 1")
            c.execute("SELECT pg_sleep(1)")
    finally:
        db.close()
    detail = public_detail(cancelled.value)
    assert "cancelled" in detail and "retry" in detail, detail
    assert "postgresql://" not in detail, detail
    for part in ("dbname", "user", "host"):
        assert str(parts.get(part)) not in detail, (part, detail)
