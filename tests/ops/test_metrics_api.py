"""/metrics and request logs of a real server, driven over HTTP on loopback."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ragstore.api import create_app
from ragstore.auth import KeyStore
from ragstore.config import Settings
from ragstore.db.database import Database
from ragstore.observability.logging import configure_logging
from tests.api.conftest import running_server

SEARCH_ROUTE = "/v1/collections/{name}/search"
DOCS_ROUTE = "/v1/collections/{name}/documents"


def scrape(http: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics as (name, labels) -> value."""
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def server(settings: Settings) -> Iterator[str]:
    with running_server(settings.model_copy(update={"auth": "off"})) as url:
        yield url


@pytest.fixture()
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=60) as client:
        yield client


def test_metrics_count_an_ingest_and_a_search_through_the_api(
    http: httpx.Client, settings: Settings
) -> None:
    before = scrape(http)
    assert http.post("/v1/collections", json={"name": "opsmetrics"}).status_code == 201
    text = (
        "# Rollback\n\nTo roll back a schema migration run ragstore db downgrade.\n\n"
        "## Backups\n\nTake a backup with pg_dump before every upgrade.\n"
    )
    added = http.post("/v1/collections/opsmetrics/documents", json={"name": "ops.md", "text": text})
    assert added.status_code == 201, added.text
    found = http.post(
        "/v1/collections/opsmetrics/search",
        json={"query": "how to roll back", "k": 3, "mode": "vector"},
    )
    assert found.status_code == 200, found.text
    missing = http.post("/v1/collections/no-such-coll/search", json={"query": "x"})
    assert missing.status_code == 404
    assert http.get("/no/such/path/42").status_code == 404
    after = scrape(http)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert (
        grew("ragstore_http_requests_total", method="POST", route=SEARCH_ROUTE, status="200") == 1
    )
    assert (
        grew("ragstore_http_requests_total", method="POST", route=SEARCH_ROUTE, status="404") == 1
    )
    assert grew("ragstore_http_requests_total", method="POST", route=DOCS_ROUTE, status="201") == 1
    assert grew("ragstore_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert (
        grew("ragstore_http_request_duration_seconds_count", method="POST", route=SEARCH_ROUTE) == 2
    )
    assert grew("ragstore_errors_total", code="collection_not_found") == 1
    assert grew("ragstore_search_requests_total", mode="vector", outcome="ok") == 1
    assert grew("ragstore_search_duration_seconds_count", mode="vector") == 1
    # the search of a collection that does not exist (hybrid, the default) ran nothing: an
    # error, not a 0-second search in the latency histogram
    assert grew("ragstore_search_requests_total", mode="hybrid", outcome="error") == 1
    assert grew("ragstore_search_duration_seconds_count", mode="hybrid") == 0
    assert grew("ragstore_ingest_documents_total", outcome="added") == 1
    assert grew("ragstore_ingest_duration_seconds_count") == 1
    assert grew("ragstore_ingest_documents_total", outcome="failed") == 0

    assert settings.database_url is not None
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM chunks c JOIN collections k ON k.id = c.collection_id"
            " WHERE k.name = 'opsmetrics' AND c.chunk_type <> 'heading'"
        ).fetchone()
        table = conn.execute(
            "SELECT s.table_name FROM collections c JOIN embedding_spaces s"
            " ON s.id = c.active_space_id WHERE c.name = 'opsmetrics'"
        ).fetchone()
        assert row is not None and table is not None
        embedded = conn.execute(f'SELECT count(*) FROM "{table[0]}"').fetchone()
        assert embedded is not None
    assert embedded[0] >= 1
    assert grew("ragstore_ingest_chunks_total", outcome="embedded") == embedded[0]
    assert grew("ragstore_embedding_batch_size_sum") >= embedded[0] + 1  # chunks + the query
    assert value(after, "ragstore_collection_chunks", collection="opsmetrics") == embedded[0]
    assert value(after, "ragstore_collection_index_bytes", collection="opsmetrics") > 0
    assert value(after, "ragstore_db_up") == 1
    assert value(after, "ragstore_db_pool_max_connections") == settings.pool_max_size
    assert value(after, "ragstore_data_dir_size_bytes") > 0
    assert value(after, "ragstore_build_info", version=_version(), profile="test") == 1


def test_query_cache_hits_and_misses_reach_the_metrics(http: httpx.Client) -> None:
    from ragstore.embedding.cache import query_cache

    cache = query_cache()
    before = scrape(http)
    assert cache.get("ops-model@1", "never cached text") is None
    cache.put("ops-model@1", "cached text", np.ones(4, dtype=np.float32))
    assert cache.get("ops-model@1", "cached text") is not None
    assert cache.get("ops-model@1", "cached text") is not None
    after = scrape(http)

    def grew(result: str) -> float:
        return value(after, "ragstore_query_cache_requests_total", result=result) - value(
            before, "ragstore_query_cache_requests_total", result=result
        )

    assert grew("hit") == 2
    assert grew("miss") == 1


def test_a_queued_job_shows_in_the_queue_depth_and_age(http: httpx.Client) -> None:
    http.post("/v1/collections", json={"name": "opsjobs"})
    before = scrape(http)
    queued = http.post(
        "/v1/collections/opsjobs/documents",
        json={"name": "j.md", "text": "Queued for a worker.\n", "background": True},
    )
    assert queued.status_code == 202, queued.text
    time.sleep(1.1)
    after = scrape(http)
    assert value(after, "ragstore_jobs", status="todo") == (
        value(before, "ragstore_jobs", status="todo") + 1
    )
    assert value(after, "ragstore_jobs_oldest_todo_age_seconds") >= 1.0


def test_request_log_line_is_json_with_the_request_id_and_no_secret(http: httpx.Client) -> None:
    buffer = io.StringIO()
    configure_logging("info", log_format="json", stream=buffer)
    try:
        response = http.post(
            "/v1/collections/opsmetrics/search",
            json={"query": "supersecretquerytext", "k": 2},
            headers={
                "X-Request-ID": "ops-req-0001",
                "Authorization": "Bearer rsk_topsecretkeyvalue",
            },
        )
        assert response.status_code == 200
        assert response.headers["x-request-id"] == "ops-req-0001"
    finally:
        configure_logging("warning", log_format="json")
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    mine = [rec for rec in lines if rec.get("request_id") == "ops-req-0001"]
    access = [rec for rec in mine if rec["event"] == "request"]
    assert len(access) == 1
    rec = access[0]
    assert rec["route"] == SEARCH_ROUTE and rec["status"] == 200
    assert rec["collection"] == "opsmetrics"
    assert rec["level"] == "info" and rec["timestamp"].endswith("Z")
    assert isinstance(rec["duration_ms"], float)
    raw = buffer.getvalue()
    assert "supersecretquerytext" not in raw
    assert "rsk_topsecretkeyvalue" not in raw


def _version() -> str:
    from ragstore import __version__

    return __version__


def test_metrics_need_a_key_with_keys_on_beyond_loopback_in_every_profile(
    settings: Settings,
) -> None:
    """They name every collection (and each replica's host and user), which /readyz and the
    API keep from anonymous callers: on every interface (``ragstore serve --host 0.0.0.0``,
    keys on) a dev server showed them to anyone on the network. On loopback a dev scraper
    still needs no key. (The test server listens on loopback; ``api_host`` is what the app
    judges from, as from the addresses ``ragstore serve`` bound.)"""
    assert settings.database_url is not None
    db = Database(settings.database_url.get_secret_value())
    try:
        key = KeyStore(db).create("metrics", name="scraper").secret
    finally:
        db.close()
    exposed = settings.model_copy(update={"auth": "on", "profile": "dev", "api_host": "0.0.0.0"})
    with running_server(exposed) as url:
        anonymous = httpx.get(f"{url}/metrics")
        assert anonymous.status_code == 401, anonymous.text[:200]
        assert "ragstore_collection" not in anonymous.text
        keyed = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"})
        assert keyed.status_code == 200 and "ragstore_build_info" in keyed.text
    local = settings.model_copy(update={"auth": "on", "profile": "dev"})
    with running_server(local) as url:
        assert httpx.get(f"{url}/metrics").status_code == 200


def test_a_key_limited_to_a_collection_reads_no_metrics(settings: Settings) -> None:
    """The metrics name every collection: a key of one collection learnt the others'
    names from them, which the API keeps from it (its listings and 404s name none)."""
    assert settings.database_url is not None
    db = Database(settings.database_url.get_secret_value())
    try:
        store = KeyStore(db)
        scoped = store.create("read", "opsmine").secret
        admin = store.create("admin").secret
    finally:
        db.close()
    exposed = settings.model_copy(update={"auth": "on", "profile": "dev", "api_host": "0.0.0.0"})
    with running_server(exposed) as url:
        for name in ("opsmine", "opssecret"):
            made = httpx.post(
                f"{url}/v1/collections",
                json={"name": name},
                headers={"Authorization": f"Bearer {admin}"},
            )
            assert made.status_code in (201, 409)
        r = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {scoped}"})
        assert r.status_code == 403, r.text[:200]
        assert r.json()["code"] == "forbidden" and "opssecret" not in r.text
        whole = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {admin}"})
        assert whole.status_code == 200 and 'collection="opssecret"' in whole.text


def test_a_server_on_loopback_shows_its_metrics_keyless_only_to_this_machine(
    settings: Settings,
) -> None:
    """With keys on, a server on loopback gave its metrics without a key to any request,
    judged from the bound address alone: one a proxy on this machine forwarded from the
    network (``X-Forwarded-For``, ``Host: rag.example.com``) read every collection's name,
    and a key of one collection, refused by the API, read them too, so keys on was weaker
    than keys off (whose guard refuses all three). Only a keyless request of this machine
    goes without a key now; a key presented is checked."""
    assert settings.database_url is not None
    db = Database(settings.database_url.get_secret_value())
    try:
        store = KeyStore(db)
        scoped = store.create("read", "opsalpha").secret
        admin = store.create("admin").secret
    finally:
        db.close()
    local = settings.model_copy(update={"auth": "on", "profile": "dev"})
    with running_server(local) as url:
        for name in ("opsalpha", "opssecretproject"):
            made = httpx.post(
                f"{url}/v1/collections",
                json={"name": name},
                headers={"Authorization": f"Bearer {admin}"},
            )
            assert made.status_code in (201, 409)
        for headers in (
            {"X-Forwarded-For": "203.0.113.9"},
            {"Host": "rag.example.com"},
            {"Origin": "https://evil.example"},
        ):
            r = httpx.get(f"{url}/metrics", headers=headers)
            assert r.status_code == 401, (headers, r.text[:200])
            assert "opssecretproject" not in r.text
        keyed = {"Authorization": f"Bearer {scoped}"}
        assert httpx.get(f"{url}/v1/collections/opssecretproject", headers=keyed).status_code == 403
        r = httpx.get(f"{url}/metrics", headers=keyed)
        assert r.status_code == 403, r.text[:200]
        assert "opssecretproject" not in r.text
        wrong = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer rsk_nosuchkey"})
        assert wrong.status_code == 401
        mine = httpx.get(f"{url}/metrics")
        assert mine.status_code == 200 and 'collection="opssecretproject"' in mine.text


def test_hostile_requests_keep_every_label_in_a_bounded_set(http: httpx.Client) -> None:
    """Random methods, paths, collection names and headers must not mint new label values:
    each would be a new time series kept for the life of the process (and in /metrics)."""
    import secrets

    junks = []
    for _ in range(3):
        junk = secrets.token_hex(6)
        junks.append(junk)
        http.request("PROPFIND", f"/v1/collections/c{junk}")
        http.get(f"/nowhere/{junk}", headers={"User-Agent": junk})
        http.get(f"/v1/collections/c{junk}")
        http.post(f"/v1/collections/c{junk}/search", json={"query": "x"})
        http.get(f"/v1/jobs/{junk}")
        http.get(f"/v1/collections/c{junk}/documents/{junk}")
        http.get(f"/v1/collections/c{junk}/documents/{junk}/", follow_redirects=False)
        http.get(f"/static/{junk}")
        http.get(f"/console/{junk}")
        http.get(f"/ui/{junk}")
    bad = []
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for s in family.samples:
            for label_value in s.labels.values():
                if any(j in label_value for j in junks):
                    bad.append((s.name, s.labels))
    assert not bad, bad


def test_texts_added_through_the_api_are_counted_as_ingested(http: httpx.Client) -> None:
    """POST .../texts (what LangChain, LlamaIndex and the MCP tools use) stores documents
    like an upload does; they were missing from the ingest counters, so a dashboard of
    ingest showed nothing for a store filled that way."""
    assert http.post("/v1/collections", json={"name": "opstexts"}).status_code in (201, 409)
    before = scrape(http)
    body = {"texts": ["Rollback is safe.", "Backups run nightly."], "ids": ["t1", "t2"]}
    assert http.post("/v1/collections/opstexts/texts", json=body).status_code == 201
    assert http.post("/v1/collections/opstexts/texts", json=body).status_code == 201
    after = scrape(http)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("ragstore_ingest_documents_total", outcome="added") == 2
    assert grew("ragstore_ingest_documents_total", outcome="unchanged") == 2
    assert grew("ragstore_ingest_chunks_total", outcome="embedded") == 2
    assert grew("ragstore_ingest_duration_seconds_count") == 2


def _leave_mid_body(server: str, path: str, content_type: str, head: bytes) -> None:
    """Send a request that declares a longer body than it sends, then hang up."""
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(server)
    assert where.hostname is not None and where.port is not None
    with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {where.netloc}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: 100000\r\nX-Request-ID: ops-gone-1\r\n\r\n".encode()
            + head
        )
        time.sleep(0.3)


def test_a_client_that_leaves_mid_body_is_counted_499_not_as_bad_input(
    http: httpx.Client, server: str
) -> None:
    """A client that hung up while sending its body was counted (and logged) as a 422
    ``invalid_input``: dashboards showed bad requests nobody sent. It is nginx's 499
    "client closed request" now, with no error code counted."""
    assert http.post("/v1/collections", json={"name": "opsgone"}).status_code in (201, 409)
    buffer = io.StringIO()
    configure_logging("info", log_format="json", stream=buffer)
    try:
        before = scrape(http)
        _leave_mid_body(server, "/v1/collections/opsgone/search", "application/json", b'{"qu')
        boundary = "b0undary"
        upload = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="a.md"\r\nContent-Type: text/markdown\r\n\r\n# Part'
        ).encode()
        _leave_mid_body(
            server,
            "/v1/collections/opsgone/documents/upload",
            f"multipart/form-data; boundary={boundary}",
            upload,
        )
        deadline = time.monotonic() + 10
        while True:
            after = scrape(http)
            gone = [
                v - value(before, n, **dict(labels))
                for (n, labels), v in after.items()
                if n == "ragstore_http_requests_total" and ("status", "499") in labels
            ]
            if sum(gone) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        configure_logging("warning", log_format="json")

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    upload_route = "/v1/collections/{name}/documents/upload"
    assert grew("ragstore_http_requests_total", method="POST", route=SEARCH_ROUTE, status="499")
    assert grew("ragstore_http_requests_total", method="POST", route=upload_route, status="499")
    for status in ("400", "422", "500"):
        assert not grew(
            "ragstore_http_requests_total", method="POST", route=SEARCH_ROUTE, status=status
        )
        assert not grew(
            "ragstore_http_requests_total", method="POST", route=upload_route, status=status
        )
    assert not grew("ragstore_errors_total", code="invalid_input")
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    access = [r for r in lines if r.get("request_id") == "ops-gone-1" and r["event"] == "request"]
    assert len(access) == 2 and {r["status"] for r in access} == {499}, access
    assert not any(r.get("code") for r in access), access


def _send_raw(server: str, data: bytes) -> bytes:
    """Send ``data`` on a fresh connection; what the server answers before it closes."""
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(server)
    assert where.hostname is not None and where.port is not None
    with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
        sock.sendall(data)
        got = b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return got


def test_requests_the_protocol_refuses_are_counted_by_their_error_code(
    http: httpx.Client, server: str
) -> None:
    """A head too large (431) or not readable HTTP (400) is answered by the protocol, never
    by the app's middleware: a scanner sending junk all day left ``ragstore_errors_total``
    flat, so no dashboard or alert saw it. Each is counted by its code now."""
    before = scrape(http)
    too_large = _send_raw(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000)
    assert too_large.startswith(b"HTTP/1.1 431 "), too_large[:100]
    malformed = _send_raw(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n")
    assert malformed.startswith(b"HTTP/1.1 400 "), malformed[:100]
    after = scrape(http)

    def grew(code: str) -> float:
        return value(after, "ragstore_errors_total", code=code) - value(
            before, "ragstore_errors_total", code=code
        )

    assert grew("headers_too_large") == 1
    assert grew("malformed_request") == 1


def test_a_search_waiting_for_a_pooled_connection_shows_in_the_pool_wait_histogram(
    settings: Settings,
) -> None:
    """A search's duration includes its wait for a pooled connection: with every
    connection held (a pool of one, held by another thread for a second), the search
    histogram alone read as slow SQL or a slow model. The pool's own histogram says where
    the second went."""
    tight = settings.model_copy(
        update={"auth": "off", "pool_min_size": 1, "pool_max_size": 1, "connect_timeout_s": 30}
    )
    app = create_app(tight)
    search = {"query": "how to take a backup", "k": 2, "mode": "vector"}
    with running_server(tight, app) as url, httpx.Client(base_url=url, timeout=60) as http:
        assert http.post("/v1/collections", json={"name": "opspoolwait"}).status_code == 201
        text = "# Backups\n\nTake a backup with pg_dump before every upgrade.\n"
        added = http.post(
            "/v1/collections/opspoolwait/documents", json={"name": "b.md", "text": text}
        )
        assert added.status_code == 201, added.text
        # once first: the model is loaded and cached, so the timed one waits for the pool only
        assert http.post("/v1/collections/opspoolwait/search", json=search).status_code == 200
        before = scrape(http)
        rt = app.state.ragstore.runtime
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with rt.db.connection():
                held.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(30)
        timer = threading.Timer(1.0, release.set)
        timer.start()
        try:
            found = http.post("/v1/collections/opspoolwait/search", json=search)
        finally:
            release.set()
            timer.cancel()
            holder.join(30)
        assert found.status_code == 200, found.text
        after = scrape(http)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    wait = "ragstore_db_pool_acquire_duration_seconds"
    assert grew(f"{wait}_count", pool="primary") >= 2  # the holder's and the search's
    assert grew(f"{wait}_sum", pool="primary") >= 0.9
    # one of them (the search's) waited past half a second
    assert grew(f"{wait}_bucket", pool="primary", le="0.5") < grew(f"{wait}_count", pool="primary")
    # and the search's own duration still includes that wait (its meaning is unchanged)
    assert grew("ragstore_search_duration_seconds_sum", mode="vector") >= 0.9


def test_an_upload_is_timed_in_the_ingest_duration(http: httpx.Client) -> None:
    """Uploads, JSON adds, jobs and ``Store.add_document`` go through ``add_documents``,
    which never set the report's time: ``ragstore_ingest_duration_seconds`` recorded none
    of them (only a CLI run or an add of texts). One observation per upload now."""
    assert http.post("/v1/collections", json={"name": "opsupload"}).status_code in (201, 409)
    before = scrape(http)
    for i in range(2):
        files = [
            ("files", (f"u{i}a.md", f"# Upload {i}\n\nRoses in winter, {i}.\n".encode())),
            ("files", (f"u{i}b.md", f"# Upload {i}\n\nViolins at dusk, {i}.\n".encode())),
        ]
        sent = http.post("/v1/collections/opsupload/documents/upload", files=files)
        assert sent.status_code == 201, sent.text
    after = scrape(http)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("ragstore_ingest_documents_total", outcome="added") == 4
    assert grew("ragstore_ingest_duration_seconds_count") == 2
    assert grew("ragstore_ingest_duration_seconds_sum") > 0


def test_a_model_that_differs_from_its_pin_is_counted_once_per_refusal(
    http: httpx.Client, settings: Settings
) -> None:
    """Counted where the load refuses the model (so a worker's jobs count too), and no
    longer also where the API answers the error: one refused search, one count."""
    from dataclasses import replace

    from ragstore.db import repository
    from ragstore.embedding.registry import DEFAULT_MODEL, resolve_spec

    spec = replace(resolve_spec(DEFAULT_MODEL), name="minilm-api-tampered", checksum="sha256:0")
    assert settings.database_url is not None
    db = Database(settings.database_url.get_secret_value())
    try:
        with db.connection() as conn:
            repository.create_collection(conn, "opstampered", spec)
    finally:
        db.close()
    before = scrape(http)
    found = http.post("/v1/collections/opstampered/search", json={"query": "roses"})
    assert found.status_code == 409 and found.json()["code"] == "model_mismatch", found.text
    after = scrape(http)
    failures = "ragstore_model_validation_failures_total"
    assert value(after, failures) - value(before, failures) == 1
    assert (
        value(after, "ragstore_errors_total", code="model_mismatch")
        - value(before, "ragstore_errors_total", code="model_mismatch")
        == 1
    )
