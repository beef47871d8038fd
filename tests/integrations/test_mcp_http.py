"""``ragstore mcp --transport http`` as clients misuse it: a client that disconnects mid-call,
one that opens sessions without end, bodies the SDK cannot read. Against a real server on
loopback and the real store, the wire spoken by hand."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ragstore import Store
from ragstore.integrations.mcp import build_server, http_app
from tests.integrations.test_mcp import GUIDE, _serving
from tests.mcp_wire import HELLO
from tests.search_helpers import waiting_searches

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
VERSION = str(HELLO["params"]["protocolVersion"])


@pytest.fixture(scope="module")
def handbook(store: Store) -> Store:
    store.add_document("handbook", "ops/guide.md", GUIDE, metadata={"team": "ops"})
    return store


def _events(answer: httpx.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of an SSE answer."""
    return [
        json.loads(line.removeprefix("data:"))
        for line in answer.text.splitlines()
        if line.startswith("data:") and line.strip() != "data:"
    ]


def _open_session(client: httpx.Client, url: str) -> dict[str, str]:
    """Initialize a session by hand; the headers each of its requests carries."""
    opened = client.post(url, json=HELLO, headers=ACCEPT)
    assert opened.status_code == 200, opened.text
    headers = {
        **ACCEPT,
        "mcp-session-id": opened.headers["mcp-session-id"],
        "mcp-protocol-version": VERSION,
    }
    ready = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert client.post(url, json=ready, headers=headers).status_code == 202
    return headers


def _until(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture
def locked_chunks(handbook: Store) -> Iterator[str]:
    """``chunks`` locked from another connection, as behind an index build: a search
    waits on it in PostgreSQL. Yields the database's conninfo."""
    url = handbook.runtime.settings.database_url
    assert url is not None
    lock = handbook.runtime.db.connect()
    lock.execute("LOCK TABLE chunks IN ACCESS EXCLUSIVE MODE")
    try:
        yield url.get_secret_value()
    finally:
        lock.rollback()
        lock.close()


def test_a_search_whose_client_disconnects_is_cancelled_in_postgres(
    handbook: Store, locked_chunks: str
) -> None:
    """Over streamable HTTP a call runs in the session, which outlives the POST that
    carried it: a client that closed its connection mid-search left the search waiting
    in PostgreSQL, holding a pooled connection, to RAGSTORE_SEARCH_TIMEOUT_S. It is now
    cancelled when the connection closes, as the HTTP API cancels its searches, and the
    session goes on."""
    app = http_app(build_server(handbook), handbook, None)
    with _serving(app) as url, httpx.Client(timeout=30) as client:
        headers = _open_session(client, url)
        call = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "search", "arguments": {"collection": "handbook", "query": "x"}},
        }
        body = json.dumps(call).encode()
        port = int(url.split(":")[2].split("/")[0])
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        raw = socket.create_connection(("127.0.0.1", port))
        try:
            raw.sendall(
                f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{head}"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            _until(
                lambda: waiting_searches(locked_chunks) >= 2,
                20,
                "the search's two lists never started",
            )
        finally:
            raw.close()  # the client goes away mid-call
        _until(
            lambda: waiting_searches(locked_chunks) == 0,
            10,
            "the search ran on in PostgreSQL after its client disconnected",
        )
        ping = client.post(url, json={"jsonrpc": "2.0", "id": 8, "method": "ping"}, headers=headers)
        assert _events(ping)[-1] == {"jsonrpc": "2.0", "id": 8, "result": {}}


def test_sessions_past_the_cap_are_refused_in_problem_json(handbook: Store) -> None:
    """The SDK's limits were used unchanged: 10,000 sessions, each kept 30 minutes idle,
    so one local client could hold ~400 MB and then lock every other out for half an hour
    with a bare JSON-RPC 503. Sessions are held to RAGSTORE_MCP_MAX_SESSIONS; one more is
    refused 503 not_ready (problem+json, Retry-After) naming the setting, and a session
    its client ends makes room at once. A session is closed after
    RAGSTORE_MCP_SESSION_IDLE_S idle."""
    original = handbook.runtime.settings  # http_app reads its limits once, when built
    handbook.runtime.settings = original.model_copy(
        update={"mcp_max_sessions": 2, "mcp_session_idle_s": 42.0}
    )
    server = build_server(handbook)
    try:
        app = http_app(server, handbook, None)
    finally:
        handbook.runtime.settings = original
    assert server.session_manager.session_idle_timeout == 42.0  # not the SDK's 30 minutes
    with _serving(app) as url, httpx.Client(timeout=30) as client:
        first = _open_session(client, url)
        _open_session(client, url)
        refused = client.post(url, json=HELLO, headers=ACCEPT)
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["retry-after"].isdigit()
        problem = refused.json()
        assert problem["code"] == "not_ready"
        assert "RAGSTORE_MCP_MAX_SESSIONS" in problem["detail"]
        assert "2 sessions" in problem["detail"]
        assert client.delete(url, headers=first).status_code == 200
        _open_session(client, url)


def test_a_body_the_sdk_cannot_read_is_answered_in_one_line_as_over_stdio(
    handbook: Store,
) -> None:
    """Over HTTP the SDK answered a body that is no JSON-RPC message (``{"foo": 1}``, a
    batch) -32602 with pydantic's report, several lines and pydantic.dev URLs, and one
    nested past its parser's depth (a made-up ``where``) -32700 "recursion limit
    exceeded" under no id. Each is now answered as stdio answers such a line: one line,
    -32700 / -32600 as JSON-RPC 2.0 says, under the request's id where it can be read;
    and the session goes on."""
    deep = '{"a":' * 300 + "1" + "}" * 300
    bodies = {
        '{"foo": 1}': (None, -32600, "not a valid JSON-RPC message"),
        '[{"jsonrpc": "2.0", "id": 3, "method": "ping"}]': (None, -32600, "message object"),
        "{not json": (None, -32700, "is not JSON"),
        '{"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "search", '
        f'"arguments": {{"collection": "handbook", "query": "x", "where": {deep}}}}}}}': (
            5,
            -32600,
            "nests deeper",
        ),
        "[" * 3000 + "]" * 3000: (None, -32700, "nests deeper"),
    }
    app = http_app(build_server(handbook), handbook, None)
    with _serving(app) as url, httpx.Client(timeout=30) as client:
        headers = _open_session(client, url)
        for body, (rid, code, said) in bodies.items():
            answer = client.post(url, content=body.encode(), headers=headers)
            assert answer.status_code == 400, (body[:40], answer.text)
            reply = answer.json()
            assert (reply["id"], reply["error"]["code"]) == (rid, code), (body[:40], reply)
            message = reply["error"]["message"]
            assert said in message and "\n" not in message and "pydantic" not in message
            assert "line" not in message, message  # stdio's words, said of a body
        ping = client.post(url, json={"jsonrpc": "2.0", "id": 9, "method": "ping"}, headers=headers)
        assert _events(ping)[-1] == {"jsonrpc": "2.0", "id": 9, "result": {}}


def test_a_request_reusing_the_id_of_one_still_running_is_refused(
    handbook: Store, locked_chunks: str
) -> None:
    """The SDK keys a session's running requests, their answers and their cancellation
    by the JSON-RPC id alone: a second request reusing the id of one still running took
    the first's place, so the first's client disconnecting cancelled the second (and the
    first's search ran on in PostgreSQL). A request reusing a running request's id is
    refused at once with a JSON-RPC error naming it; the first is cancelled by its own
    disconnect, and the id serves again once it is free."""
    app = http_app(build_server(handbook), handbook, None)
    with _serving(app) as url, httpx.Client(timeout=30) as client:
        headers = _open_session(client, url)
        call = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "search", "arguments": {"collection": "handbook", "query": "x"}},
        }
        body = json.dumps(call).encode()
        port = int(url.split(":")[2].split("/")[0])
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        raw = socket.create_connection(("127.0.0.1", port))
        try:
            raw.sendall(
                f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{head}"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            _until(
                lambda: waiting_searches(locked_chunks) >= 2,
                20,
                "the search's two lists never started",
            )
            again = {**call, "id": "7"}  # the SDK's one id: "7" and 7 correlate alike
            reused = client.post(url, json=again, headers=headers)
            assert reused.status_code == 400, reused.text
            error = reused.json()
            assert error["id"] == "7"
            assert error["error"]["code"] == -32600
            assert "already running" in error["error"]["message"]
            assert waiting_searches(locked_chunks) == 2  # the second never started
        finally:
            raw.close()  # the first's client goes away mid-call
        _until(
            lambda: waiting_searches(locked_chunks) == 0,
            10,
            "the first search ran on in PostgreSQL after its client disconnected",
        )
        ping = client.post(url, json={"jsonrpc": "2.0", "id": 7, "method": "ping"}, headers=headers)
        assert _events(ping)[-1] == {"jsonrpc": "2.0", "id": 7, "result": {}}
