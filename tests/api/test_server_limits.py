"""What a real server on loopback does with hostile or runaway traffic: an oversized request
head is refused early (431) without stalling other clients, a head sent a byte at a time is
cut off, a forged X-Forwarded-For changes nothing unless its sender is a trusted proxy, and
a search that runs too long ends with ``search_timeout`` while ingests wait as long as they
need."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from ragstore import Client
from ragstore.auth import KeyStore
from ragstore.config import Settings
from ragstore.console.security import BASE_HEADERS
from ragstore.errors import RequestTooLargeError, SearchTimeoutError
from ragstore.http import limits
from ragstore.runtime import Runtime
from ragstore.search import search
from ragstore.wire import IDEMPOTENCY_SUPPORT_HEADER
from tests.api.conftest import running_server, with_
from tests.conftest import run_cli
from tests.search_helpers import waiting_searches

TIMEOUT_S = 0.5  # the server's search timeout here
HEAD_TIMEOUT_S = 1.0  # and its header timeout


@pytest.fixture(scope="module")
def secured(settings: Settings) -> Iterator[str]:
    guarded = with_(
        settings, auth="on", search_timeout_s=TIMEOUT_S, header_timeout_s=HEAD_TIMEOUT_S
    )
    with running_server(guarded) as url:
        yield url


@pytest.fixture(scope="module")
def admin_key(keys: KeyStore) -> str:
    return keys.create("admin").secret


@pytest.fixture(scope="module")
def admin(secured: str, admin_key: str) -> Iterator[Client]:
    with Client(secured, api_key=admin_key) as c:
        c.add_document("notes", "ops/rollback.md", "# Rollback\n\nRoll back with downgrade.\n")
        yield c


def _connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=10)
    return sock


def _read_all(sock: socket.socket, wait_s: float) -> bytes:
    """What the server sends until it closes the connection (or ``wait_s`` passes)."""
    sock.settimeout(wait_s)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return got


def _has_security_headers(head: bytes) -> None:
    """The headers every answer of the server carries, on one the protocol wrote itself
    (these answers never reach the app's middleware)."""
    lines = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:])
    }
    for name, value in BASE_HEADERS.items():
        assert lines.get(name.lower().encode()) == value.encode(), (name, head)
    # without it a client forgot that this server honours Idempotency-Key (client.py
    # _KeyedWrites) and asked /healthz again before its next background upload
    assert lines.get(IDEMPOTENCY_SUPPORT_HEADER.lower().encode()) == b"1", head


def test_an_oversized_request_head_is_refused_with_431(secured: str) -> None:
    with _connect(secured) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 100_000)
        answer = _read_all(sock, 5.0)  # the head is not finished: only the limit answers
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/problem+json" in head
    _has_security_headers(head)
    problem = json.loads(body)
    assert problem["code"] == "headers_too_large"
    assert "RAGSTORE_MAX_HEADER_BYTES" in problem["detail"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v1/collections/\xff\xfe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bad: a\x00b\r\n\r\n",
        b"POST /v1/collections/a/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n{}",
        b"POST /v1/collections/a/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_an_unparseable_request_is_a_malformed_request_problem(
    secured: str, request_bytes: bytes
) -> None:
    # uvicorn answered these with a text/plain line, the one error that was not problem+json
    with _connect(secured) as sock:
        sock.sendall(request_bytes)
        answer = _read_all(sock, 5.0)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"application/problem+json" in head and b"connection: close" in head
    _has_security_headers(head)
    problem = json.loads(body)
    assert problem["code"] == "malformed_request" and problem["status"] == 400
    assert "percent-encode" in problem["detail"]


def test_a_websocket_upgrade_is_answered_as_plain_http(secured: str) -> None:
    # no route takes a websocket, yet uvicorn handed the upgrade to the websockets
    # library, outside the app's middleware and these guards: a text/plain 403 with
    # none of the server's headers. Now it is a plain request (401 without a key here).
    with _connect(secured) as sock:
        sock.sendall(
            b"GET /v1/collections HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        answer = _read_all(sock, 3.0)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    head, _, body = answer.partition(b"\r\n\r\n")
    _has_security_headers(head)
    assert json.loads(body)["code"] == "unauthorized"


def test_a_header_flood_is_cut_off_while_others_are_served(secured: str) -> None:
    sent = 0
    cut_off: list[OSError] = []

    def flood() -> None:
        nonlocal sent
        with _connect(secured) as sock:
            try:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                line = b"X-" + b"a" * 1000 + b": " + b"b" * 3000 + b"\r\n"
                for _ in range(16_000):  # 64 MB of headers, never finished
                    sock.sendall(line)
                    sent += len(line)
            except OSError as exc:
                cut_off.append(exc)

    flooder = threading.Thread(target=flood)
    flooder.start()
    slowest = 0.0
    with httpx.Client(base_url=secured, timeout=30) as h:
        while flooder.is_alive():
            t0 = time.monotonic()
            assert h.get("/healthz").status_code == 200
            slowest = max(slowest, time.monotonic() - t0)
    flooder.join()
    assert cut_off, f"the server read all {sent} bytes of an unfinished head"
    assert sent < 16 * 1024 * 1024
    assert slowest < 1.0


def test_a_large_head_under_the_limit_and_a_large_body_pass(secured: str) -> None:
    r = httpx.get(f"{secured}/healthz", headers={"X-Big": "a" * 40_000})
    assert r.status_code == 200
    body = json.dumps({"query": "x" * 600_000}).encode()  # head and body arrive together
    r = httpx.post(f"{secured}/v1/collections/notes/search", content=body)
    assert r.status_code == 401  # read and answered by the app, not refused as a head


def test_a_head_sent_a_byte_at_a_time_is_cut_off(secured: str) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
    with _connect(secured) as sock:
        t0 = time.monotonic()
        closed = False
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            sock.settimeout(0.2)
            try:
                if sock.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except ConnectionResetError:
                closed = True
                break
        elapsed = time.monotonic() - t0
    assert closed, "a head trickled in over 20 s was still being read"
    assert HEAD_TIMEOUT_S * 0.9 <= elapsed < HEAD_TIMEOUT_S + 2.0


def test_an_idle_connection_is_closed_after_the_header_timeout(secured: str) -> None:
    with _connect(secured) as sock:
        t0 = time.monotonic()
        assert _read_all(sock, HEAD_TIMEOUT_S + 3.0) == b""
        elapsed = time.monotonic() - t0
    assert elapsed < HEAD_TIMEOUT_S + 2.0


def _post_slowly(url: str, key: str, pieces: list[bytes], gap_s: float) -> bytes:
    """POST a body to a search in ``pieces`` sent ``gap_s`` apart; what the server answers
    (``b""``: it closed the connection first)."""
    size = sum(len(p) for p in pieces)
    with _connect(url) as sock:
        sock.sendall(
            b"POST /v1/collections/notes/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (key.encode(), size)
        )
        for piece in pieces:
            time.sleep(gap_s)
            try:
                sock.sendall(piece)
            except OSError:
                return b""
        return _read_all(sock, 10.0)


def test_a_body_sent_a_byte_at_a_time_is_cut_off(
    secured: str, admin: Client, admin_key: str
) -> None:
    t0 = time.monotonic()
    assert _post_slowly(secured, admin_key, [b" "] * 40, 0.1) == b""
    assert time.monotonic() - t0 < HEAD_TIMEOUT_S + 2.0


def test_a_slow_body_at_a_fair_rate_is_read(secured: str, admin: Client, admin_key: str) -> None:
    body = b'{"query": "rollback"' + b" " * 6000 + b"}"
    pieces = [body[i : i + 2048] for i in range(0, len(body), 2048)]  # over 1 s in all
    answer = _post_slowly(secured, admin_key, pieces, 0.35)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]


@pytest.mark.parametrize(
    ("path", "ctype"),
    [
        ("/v1/collections/notes/documents/upload", "multipart/form-data; boundary=b"),
        ("/v1/collections/notes/search", "application/json"),
    ],
)
def test_a_request_without_a_valid_key_is_refused_before_its_body(
    secured: str, path: str, ctype: str
) -> None:
    with _connect(secured) as sock:  # a 40 MB body announced, none of it sent
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {40 * 1024 * 1024}\r\n\r\n".encode()
        )
        answer = _read_all(sock, 3.0)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:100]
    assert b"connection: close" in answer.lower()


def test_only_the_upload_route_takes_upload_sized_bodies(
    secured: str, admin: Client, admin_key: str
) -> None:
    # a JSON route called "multipart" got the 50 MB upload limit and read it all into memory
    body = b"--b\r\n" + b"x" * (2 * 1024 * 1024)
    r = httpx.post(
        f"{secured}/v1/collections/notes/search",
        content=body,
        headers={
            "Content-Type": "multipart/form-data; boundary=b",
            "Authorization": f"Bearer {admin_key}",
        },
    )
    assert r.status_code == 413
    assert r.json()["code"] == "request_too_large"
    assert "RAGSTORE_MAX_REQUEST_BYTES" in r.json()["detail"]


def _refused_post(url: str, key: str, declared: int | None) -> socket.socket:
    """A socket that sent the head of a JSON search over the 1 MiB limit: ``declared``
    bytes long, or chunked when None."""
    sock = _connect(url)
    length = b"Transfer-Encoding: chunked" if declared is None else b"Content-Length: %d" % declared
    sock.sendall(
        b"POST /v1/collections/notes/search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer %s\r\nContent-Type: application/json\r\n%s\r\n\r\n"
        % (key.encode(), length)
    )
    return sock


def test_a_refused_body_is_read_so_the_client_gets_the_413(
    secured: str, admin: Client, admin_key: str
) -> None:
    # answered 413 and closed with the body unread, the connection was reset while the
    # client still sent, and the reset threw the answer away (async httpx: ReadError)
    size = 24 * 1024 * 1024  # more than the socket buffers hold
    with _refused_post(secured, admin_key, size) as sock:
        sock.sendall(b" " * size)  # all of it taken: the server reads what it refuses
        answer = _read_all(sock, 10.0)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
    assert b"connection: close" in answer.lower()
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["code"] == "request_too_large"


def test_a_document_over_the_request_limit_is_told_the_upload_route_takes_it(
    admin: Client,
) -> None:
    # the 413 named the size and the setting only, not the route that takes the text
    text = "# Big\n\n" + "word " * 250_000  # over 1 MiB as a JSON body
    with pytest.raises(RequestTooLargeError) as refused:
        admin.add_document("big-json", "big.md", text)
    said = str(refused.value)
    assert "POST /v1/collections/big-json/documents/upload" in said
    assert "nothing was stored" in said
    assert "big-json" not in [c["name"] for c in admin.list_collections()]
    # as said: a file upload of the same text is taken
    stored = admin.upload("big-json", ("big.md", text.encode()), background=True)
    assert stored["status"] == "queued"
    # a list of texts over it is told to send fewer at once
    with pytest.raises(RequestTooLargeError, match="send fewer texts or ids per request"):
        admin.request("POST", "/v1/collections/big-json/texts", json={"texts": ["w " * 600_000]})


def test_a_refused_body_that_stalls_is_cut_off(secured: str, admin: Client, admin_key: str) -> None:
    with _refused_post(secured, admin_key, 2 * 1024 * 1024) as sock:
        t0 = time.monotonic()
        answer = _read_all(sock, HEAD_TIMEOUT_S + 5.0)  # the answer at once, then the close
        elapsed = time.monotonic() - t0
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
    assert elapsed < HEAD_TIMEOUT_S + 2.0


def test_a_refused_body_past_the_drain_bound_is_not_read(
    secured: str, admin: Client, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "DRAIN_MAX_BYTES", 2 * 1024 * 1024)
    with _refused_post(secured, admin_key, 1 << 40) as sock:  # declared past it: no drain
        t0 = time.monotonic()
        answer = _read_all(sock, 5.0)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
        assert time.monotonic() - t0 < 1.0
    sent = 0
    with _refused_post(secured, admin_key, None) as sock:  # an endless chunked body
        chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
        with pytest.raises(OSError):
            while sent < 64 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
    assert sent < 16 * 1024 * 1024


def test_a_refused_body_trickled_at_a_fair_rate_is_cut_off_in_time(
    secured: str, admin: Client, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "DRAIN_MAX_S", 1.0)
    t0 = time.monotonic()
    with _refused_post(secured, admin_key, 2 * 1024 * 1024) as sock, pytest.raises(OSError):
        while time.monotonic() - t0 < 10.0:  # 2 KiB each 0.2 s: fast enough otherwise
            sock.sendall(b" " * 2048)
            time.sleep(0.2)
    assert time.monotonic() - t0 < 5.0


def _failed_auths(url: str, forged: bool) -> list[int]:
    """40 malformed keys from this loopback client, each naming another address."""
    with httpx.Client(base_url=url, timeout=30) as h:
        return [
            h.get(
                "/v1/collections",
                headers={
                    "Authorization": "Bearer not-a-key",
                    **({"X-Forwarded-For": f"198.51.100.{i}"} if forged else {}),
                },
            ).status_code
            for i in range(40)
        ]


def test_a_forged_forwarded_for_is_throttled_as_the_client_itself(
    secured: str, admin: Client
) -> None:
    # (admin's key verified before: a verified key skips the throttle this test fills)
    statuses = _failed_auths(secured, forged=True)
    assert statuses.count(401) <= 30, statuses  # 30 failures a minute from 127.0.0.1
    assert statuses[-10:] == [429] * 10, statuses


def test_a_trusted_proxy_passes_the_client_address(settings: Settings) -> None:
    proxied = with_(settings, auth="on", trusted_proxies="127.0.0.1")
    with running_server(proxied) as url:
        statuses = _failed_auths(url, forged=True)
    assert statuses == [401] * 40  # each forwarded address failed once


def test_a_trusted_proxy_given_ipv4_mapped_passes_the_client_address(settings: Settings) -> None:
    # listed as ::ffff:127.0.0.1 (as a dual-stack listener shows an IPv4 peer), the proxy
    # seen as plain 127.0.0.1 was not trusted: its forwarded clients were all taken for
    # it, and throttled together
    proxied = with_(settings, auth="on", trusted_proxies="::ffff:127.0.0.1")
    with running_server(proxied) as url:
        statuses = _failed_auths(url, forged=True)
    assert statuses == [401] * 40  # each forwarded address failed once


@pytest.mark.parametrize(
    ("trusted", "peer"),
    [
        ("::ffff:10.0.0.5", "10.0.0.5"),
        ("10.0.0.5", "::ffff:10.0.0.5"),  # a dual-stack listener's view of it
        ("::ffff:10.0.0.0/120", "10.0.0.9"),
        ("10.0.0.0/24", "::ffff:10.0.0.9"),
        ("10.0.0.1/24", "10.0.0.9"),  # host bits set: uvicorn took it for a name
        ("2001:db8::1", "2001:db8::1"),
    ],
)
def test_a_trusted_proxy_is_believed_in_either_form_of_its_address(
    settings: Settings, trusted: str, peer: str
) -> None:
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    from ragstore.api.server import address_key, server_config

    config = server_config(None, with_(settings, trusted_proxies=trusted))
    assert config.proxy_headers and config.forwarded_allow_ips
    seen: list[object] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["client"])

    scope = {
        "type": "http",
        "client": (peer, 4321),
        "headers": [(b"x-forwarded-for", b"198.51.100.7")],
    }
    asyncio.run(ProxyHeadersMiddleware(app, config.forwarded_allow_ips)(scope, None, None))
    assert seen == [("198.51.100.7", 0)]  # the forwarded client, not the proxy
    assert address_key(peer, config.trusted_networks) is None  # not capped per address
    assert address_key("10.0.1.9", config.trusted_networks) == "10.0.1.9"  # others are


def _hold_lock(settings: Settings) -> psycopg.Connection[tuple[object, ...]]:
    """A connection holding an exclusive lock on ``chunks``: every search waits on it."""
    assert settings.database_url is not None
    conn = psycopg.connect(settings.database_url.get_secret_value())
    conn.execute("LOCK TABLE chunks IN ACCESS EXCLUSIVE MODE")
    return conn


def test_a_search_over_the_timeout_is_search_timeout(admin: Client, settings: Settings) -> None:
    admin.search("notes", "rollback")  # the collection is cached: only the search waits
    conn = _hold_lock(settings)
    try:
        t0 = time.monotonic()
        with pytest.raises(SearchTimeoutError) as info:
            admin.search("notes", "rollback")
        elapsed = time.monotonic() - t0
    finally:
        conn.rollback()
        conn.close()
    assert "RAGSTORE_SEARCH_TIMEOUT_S" in str(info.value)
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 3.0
    r = admin.request("POST", "/v1/collections/notes/search", json={"query": "rollback"})
    assert r.status_code == 200  # the lock gone, the same search answers


def test_the_search_timeout_answers_504_problem_json(
    secured: str, admin: Client, admin_key: str, settings: Settings
) -> None:
    conn = _hold_lock(settings)
    try:
        r = httpx.post(
            f"{secured}/v1/collections/notes/search",
            json={"query": "rollback"},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
    finally:
        conn.rollback()
        conn.close()
    assert r.status_code == 504
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "search_timeout"


def test_the_cli_reports_a_search_timeout(
    admin: Client,
    settings: Settings,
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RAGSTORE_SEARCH_TIMEOUT_S", str(TIMEOUT_S))
    assert run_cli("search", "rollback", "-c", "notes", "--mode", "fulltext") == 0
    conn = _hold_lock(settings)
    try:
        code = run_cli("search", "rollback", "-c", "notes", "--mode", "fulltext")
    finally:
        conn.rollback()
        conn.close()
    err = capsys.readouterr().err
    assert code == 75, err
    assert "error[search_timeout]" in err and "RAGSTORE_SEARCH_TIMEOUT_S" in err


def test_an_ingest_waits_past_the_search_timeout(admin: Client, settings: Settings) -> None:
    conn = _hold_lock(settings)
    release = threading.Timer(3 * TIMEOUT_S, lambda: (conn.rollback(), conn.close()))
    release.start()
    try:
        added = admin.add_document("notes", "ops/wait.md", "# Waiting\n\nIngests wait.\n")
    finally:
        release.join()
    assert added["chunks"] >= 1


def test_an_exact_search_is_not_cut_off(admin: Client, settings: Settings) -> None:
    # exact lists are eval's and the benchmarks' reference: seconds at 1M, by design
    with Runtime(with_(settings, search_timeout_s=TIMEOUT_S)) as rt:
        search(rt, "rollback", collection="notes")  # collection cached, model loaded
        conn = _hold_lock(settings)
        release = threading.Timer(3 * TIMEOUT_S, lambda: (conn.rollback(), conn.close()))
        release.start()
        try:
            hits = search(rt, "rollback", collection="notes", exact=True)
        finally:
            release.join()
    assert hits and hits[0].source.endswith("rollback.md")


def _waiting_searches(settings: Settings) -> int:
    assert settings.database_url is not None
    return waiting_searches(settings.database_url.get_secret_value())


def test_a_search_whose_client_disconnects_is_cancelled_in_postgres(
    open_url: str, settings: Settings
) -> None:
    """A client that gives up on a slow search (here one held up by a lock, as behind an
    index build) takes its statements with it: both lists of the hybrid search leave
    PostgreSQL at once, not after RAGSTORE_SEARCH_TIMEOUT_S (30 s here)."""
    with Client(open_url) as api:
        api.add_document("gone", "a.md", "# Alpha\n\nalpha bravo charlie\n")
        api.search("gone", "alpha")  # the collection cached, the model loaded
    body = json.dumps({"query": "alpha", "mode": "hybrid"}).encode()
    host = urlsplit(open_url).netloc
    lock = _hold_lock(settings)
    try:
        sock = _connect(open_url)
        try:
            sock.sendall(
                f"POST /v1/collections/gone/search HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            deadline = time.monotonic() + 10
            while _waiting_searches(settings) < 2:
                assert time.monotonic() < deadline, "the search's two lists never started"
                time.sleep(0.02)
        finally:
            sock.close()
        deadline = time.monotonic() + 3
        while (waiting := _waiting_searches(settings)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert waiting == 0, "the search ran on after its client went away"
    finally:
        lock.rollback()
        lock.close()
    with Client(open_url) as api:  # the pooled connections it used serve the next search
        hits = api.search("gone", "alpha", mode="hybrid")["data"]
    assert {h["source"].rsplit("/", 1)[-1] for h in hits} == {"a.md"}


CAP = 4  # the connections the capped server below holds at once
CAP_HEAD_TIMEOUT_S = 5.0  # and its header timeout: the idle connections outlive each test


@pytest.fixture(scope="module")
def capped(settings: Settings) -> Iterator[str]:
    limited = with_(
        settings,
        auth="off",
        max_connections=CAP,
        max_connections_per_address=0,  # every connection comes from 127.0.0.1 here
        header_timeout_s=CAP_HEAD_TIMEOUT_S,
    )
    with running_server(limited) as url:
        yield url


def _refused(answer: bytes) -> dict[str, object]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 "), answer[:200]
    assert b"application/problem+json" in head and b"connection: close" in head
    assert b"retry-after: 1" in head.lower()
    _has_security_headers(head)
    problem: dict[str, object] = json.loads(body)
    return problem


def _refusals(url: str, reason: str) -> float:
    """``ragstore_http_connections_refused_total{reason=...}`` as the server's /metrics
    shows it (0 before its first refusal)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(f'ragstore_http_connections_refused_total{{reason="{reason}"}} '):
            return float(line.split()[-1])
    return 0.0


def test_connections_past_the_cap_are_refused_with_503_at_once(capped: str) -> None:
    # without a cap a flood of idle connections held descriptors till the header timeout
    # and was opened again: descriptors ran out for the pool, uploads and good clients
    before = _refusals(capped, "server_cap")
    idle = [_connect(capped) for _ in range(CAP)]
    extra: list[socket.socket] = []
    try:
        extra = [_connect(capped) for _ in range(3)]
        for sock in extra:  # answered before sending anything, and closed
            t0 = time.monotonic()
            problem = _refused(_read_all(sock, 5.0))
            assert time.monotonic() - t0 < 1.0
            assert problem["code"] == "not_ready" and problem["status"] == 503
            assert "(4: RAGSTORE_MAX_CONNECTIONS" in str(problem["detail"])
        # a client that sends its request at once still reads the refusal, not a reset
        r = httpx.post(f"{capped}/v1/collections/cap/search", json={"query": "x"}, timeout=10)
        assert r.status_code == 503 and r.json()["code"] == "not_ready"
        assert r.headers["retry-after"] == "1"
        for sock in idle[:2]:  # some connections end: a good client is served again
            sock.close()
        deadline = time.monotonic() + 5
        while (status := httpx.get(f"{capped}/healthz", timeout=10).status_code) != 200:
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        # the refusals reach no route: only their own counter shows them to an operator
        assert _refusals(capped, "server_cap") - before >= 4
    finally:
        for sock in idle + extra:
            sock.close()


def test_an_upload_whose_body_stalls_is_cut_off_and_nothing_stored(capped: str) -> None:
    boundary = "b0undary"
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
        'filename="stalled.md"\r\nContent-Type: text/markdown\r\n\r\n'
        "# Stalled\n\nThis upload never finishes.\n"
    ).encode()
    with _connect(capped) as sock:
        sock.sendall(
            b"POST /v1/collections/stall/documents/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=%s\r\nContent-Length: %d\r\n\r\n"
            % (boundary.encode(), len(part) + 1000)
        )
        sock.sendall(part)  # then nothing more
        t0 = time.monotonic()
        answer = _read_all(sock, 10.0)
        elapsed = time.monotonic() - t0
    assert not answer.startswith((b"HTTP/1.1 2", b"HTTP/1.1 1")), answer[:200]
    assert elapsed < CAP_HEAD_TIMEOUT_S + 2.0
    r = httpx.get(f"{capped}/v1/collections/stall/documents", timeout=10)
    assert r.status_code == 404 or r.json()["data"] == [], r.text


def test_the_connection_cap_stays_under_half_the_open_file_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a cap above what the process may open protected nothing: descriptors ran out first
    from ragstore.api import server

    monkeypatch.setattr(server.resource, "getrlimit", lambda _: (256, 4096))
    assert server.connection_cap(1024) == 128
    assert server.connection_cap(100) == 100


def test_a_client_that_never_reads_its_answer_does_not_hold_its_connection(
    capped: str,
) -> None:
    # an answer the client never read stayed in the server's write buffer for good (a close
    # waits for it to drain), its connection open and counted: CAP such clients, each
    # asking for a few MB, held the server full (503 to everyone) and the MBs in memory
    ids = [f"big-{i}" for i in range(7)]
    with httpx.Client(base_url=capped, timeout=60) as h:
        for i in ids:
            r = h.post(
                "/v1/collections/big/texts",
                json={"texts": ["word " * 180_000], "ids": [i], "vectors": [[0.1] * 384]},
            )
            assert r.status_code == 201, r.text
    body = json.dumps({"ids": ids}).encode()
    parts = urlsplit(capped)
    readers: list[socket.socket] = []
    try:
        for _ in range(CAP):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
            sock.sendall(
                b"POST /v1/collections/big/texts/get HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            readers.append(sock)  # and never read from
        time.sleep(1.0)
        assert httpx.get(f"{capped}/healthz", timeout=10).status_code == 503  # all taken
        deadline = time.monotonic() + 20
        while (status := httpx.get(f"{capped}/healthz", timeout=10).status_code) != 200:
            assert time.monotonic() < deadline, f"still {status}: the stalled readers held on"
            time.sleep(0.2)
    finally:
        for sock in readers:
            sock.close()


def test_a_client_reading_a_large_answer_slowly_gets_all_of_it(capped: str) -> None:
    ids = [f"big-{i}" for i in range(7)]  # stored by the test above
    body = json.dumps({"ids": ids}).encode()
    with _connect(capped) as sock:
        sock.sendall(
            b"POST /v1/collections/big/texts/get HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        time.sleep(2.0)  # nothing read for a while, under the header timeout
        got = b""
        t0 = time.monotonic()
        while time.monotonic() - t0 < 7.0:  # then past two checks at about 200 KiB/s
            got += sock.recv(4096)
            time.sleep(0.02)
        head, _, rest = got.partition(b"\r\n\r\n")
        size = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        assert len(rest) < size  # still reading when the checks ran
        sock.settimeout(10)
        while len(rest) < size and (chunk := sock.recv(1 << 20)):
            rest += chunk
    assert head.startswith(b"HTTP/1.1 200 ") and len(rest) == size
    assert json.loads(rest)["count"] == 7


SHARED_CAP = 8  # the connections the server below holds at once: a quarter from one address
PER_ADDRESS = SHARED_CAP // 4  # RAGSTORE_MAX_CONNECTIONS_PER_ADDRESS left unset
PROXY = "127.0.0.3"  # in its RAGSTORE_TRUSTED_PROXIES


@pytest.fixture(scope="module")
def shared(settings: Settings) -> Iterator[str]:
    limited = with_(
        settings,
        auth="off",
        max_connections=SHARED_CAP,
        trusted_proxies=PROXY,
        header_timeout_s=CAP_HEAD_TIMEOUT_S,
    )
    with running_server(limited) as url:
        yield url


def _connect_from(url: str, source: str, reset: bool = False) -> socket.socket:
    """A connection to ``url`` from the loopback address ``source`` (all of 127/8 is
    loopback on Linux); ``reset``: its close sends an RST, not a FIN."""
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.settimeout(10)
    sock.bind((source, 0))
    sock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
    return sock


def _healthz_from(url: str, source: str) -> int:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=url, transport=transport, timeout=10) as h:
        return h.get("/healthz").status_code


def _served(sock: socket.socket) -> bool:
    """Whether ``sock`` gets a 200 for a health check (not the 503 of a refused one)."""
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got and (chunk := sock.recv(65536)):
        got += chunk
    return got.startswith(b"HTTP/1.1 200 ")


def test_one_address_at_its_cap_is_refused_while_another_is_served(shared: str) -> None:
    # without a per-address cap one host opening idle connections took every slot of the
    # cap, and every other client got the 503 (a denial of service from one address)
    before = _refusals(shared, "address_cap")
    idle = [_connect_from(shared, "127.0.0.1") for _ in range(PER_ADDRESS)]
    extra: list[socket.socket] = []
    try:
        extra = [_connect_from(shared, "127.0.0.1") for _ in range(2)]
        for sock in extra:  # answered before sending anything, and closed
            problem = _refused(_read_all(sock, 5.0))
            assert problem["code"] == "not_ready" and problem["status"] == 503
            assert f"({PER_ADDRESS}: RAGSTORE_MAX_CONNECTIONS_PER_ADDRESS" in str(problem["detail"])
        assert _healthz_from(shared, "127.0.0.1") == 503
        assert _healthz_from(shared, "127.0.0.2") == 200  # another address is served
        idle[0].close()  # one ends: the address is served again
        deadline = time.monotonic() + 5
        while (status := _healthz_from(shared, "127.0.0.1")) != 200:
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        assert _refusals(shared, "address_cap") - before >= 3  # counted, as the cap's are
    finally:
        for sock in idle + extra:
            sock.close()


def _served_once_closes_are_seen(url: str, source: str, n: int) -> list[socket.socket]:
    """``n`` connections from ``source``, each answered 200, held open. The server sees a
    close a moment after it happens, so connections just closed may still count: tried
    again for up to 10 s (a count that kept them for good fails here)."""
    deadline = time.monotonic() + 10
    while True:
        socks = [_connect_from(url, source) for _ in range(n)]
        try:
            if all(_served(sock) for sock in socks):
                return socks
        except OSError:
            pass
        for sock in socks:
            sock.close()
        assert time.monotonic() < deadline, f"{source}'s count kept closed connections"
        time.sleep(0.1)


def test_the_per_address_count_is_freed_by_every_kind_of_close(shared: str) -> None:
    # a count that missed a close (a reset, a refused connection, an answered request)
    # would lock its address out for good once it reached the cap
    for i in range(40):
        if i % 4 == 1:  # one request answered on a kept-alive connection, then closed
            for sock in _served_once_closes_are_seen(shared, "127.0.0.1", 1):
                sock.close()
        socks = [_connect_from(shared, "127.0.0.1", reset=i % 2 == 0) for _ in range(3)]
        for sock in socks:  # the third (or more, before earlier closes are seen) refused
            sock.close()
    for sock in _served_once_closes_are_seen(shared, "127.0.0.1", PER_ADDRESS):
        sock.close()
    held = [_connect_from(shared, "127.0.0.1") for _ in range(PER_ADDRESS + 1)]
    try:  # and exactly the cap again, no more
        assert all(_served(sock) for sock in held[:PER_ADDRESS])
        _refused(_read_all(held[PER_ADDRESS], 5.0))
    finally:
        for sock in held:
            sock.close()


def test_a_trusted_proxy_is_held_to_the_cap_only(shared: str) -> None:
    # a proxy carries many clients from one address: capping it per address refused them
    # all once a quarter of the cap was open through it
    held = _served_once_closes_are_seen(shared, PROXY, SHARED_CAP)  # the whole cap: served
    extra: socket.socket | None = None
    try:
        extra = _connect_from(shared, PROXY)  # past the cap itself: refused
        problem = _refused(_read_all(extra, 5.0))
        assert f"({SHARED_CAP}: RAGSTORE_MAX_CONNECTIONS" in str(problem["detail"])
    finally:
        for sock in held + ([extra] if extra else []):
            sock.close()


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # a dual-stack listener's IPv4 client
        ("2001:db8::1", "2001:db8::/64"),
        ("2001:db8::ffff:2", "2001:db8::/64"),  # the same host's other address
        ("2001:db8:0:1::1", "2001:db8:0:1::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        (None, None),  # a Unix socket
        ("", None),
        ("10.0.0.5", None),  # a trusted proxy
        ("::ffff:10.0.0.9", None),  # the same, through a dual-stack listener
    ],
)
def test_what_a_connection_is_counted_under_per_address(host: str | None, key: str | None) -> None:
    from ragstore.api.server import address_key, trusted_networks

    assert address_key(host, trusted_networks("10.0.0.0/24, 2001:db8:ffff::1")) == key


def test_the_per_address_cap_defaults_to_a_quarter_of_the_cap() -> None:
    from ragstore.api.server import per_address_cap

    assert per_address_cap(None, 1024) == 256
    assert per_address_cap(None, 3) == 1  # never none at all
    assert per_address_cap(0, 1024) == 0  # 0: no per-address cap
    assert per_address_cap(10, 1024) == 10
