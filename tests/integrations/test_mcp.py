"""``ragstore mcp``: the official SDK's client session against the real store, over stdio
(``ragstore mcp`` spawned as agents do) and streamable HTTP (in this process, so the
loaded model is shared)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import stat
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from ragstore import Store
from ragstore.auth.keys import KeyStore
from ragstore.config import Settings
from ragstore.integrations.mcp import build_server, http_app, key_for
from tests.mcp_wire import HELLO
from tests.search_helpers import waiting_searches

GUIDE = (
    "# Guide\n\nThe operations guide.\n\n## Rollback\n\nTo roll back a schema migration "
    "run ragstore db downgrade with the target revision.\n\n## Backups\n\nBackups run "
    "nightly and are kept for thirty days.\n"
)
READ_TOOLS = {"search", "list_collections", "list_fields", "get_document", "get_section"}


@pytest.fixture(scope="module")
def handbook(store: Store) -> Store:
    store.add_document("handbook", "ops/guide.md", GUIDE, metadata={"team": "ops"})
    store.add_texts("other", ["a note kept elsewhere"], ids=["note"])
    return store


def _data(result: Any) -> Any:
    assert not result.is_error, result.content
    return (
        result.structured_content
        if result.structured_content is not None
        else json.loads(result.content[0].text)
    )


def _error(result: Any) -> str:
    assert result.is_error
    return str(result.content[0].text)


async def test_stdio_session_searches_and_reads_without_write_tools(
    handbook: Store, settings: Settings
) -> None:
    assert settings.database_url is not None
    env = {
        "RAGSTORE_DATABASE_URL": settings.database_url.get_secret_value(),
        "RAGSTORE_DATA_DIR": str(settings.data_dir),
        "RAGSTORE_PROFILE": "test",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    params = StdioServerParameters(
        command=sys.executable, args=["-c", "from ragstore.cli import main; main()", "mcp"], env=env
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert set(tools) == READ_TOOLS
        # an agent is told how to filter on a metadata key named like a built-in
        for name in ("search", "list_fields"):
            assert "document.KEY" in str(tools[name].description), name
        found = _data(
            await session.call_tool(
                "search",
                {  # fulltext: no model to load
                    "collection": "handbook",
                    "query": "downgrade target revision",
                    "k": 1,
                    "mode": "fulltext",
                    "context": "section",
                    "where": {"team": "ops"},
                },
            )
        )
        hit = found["hits"][0]
        assert hit["section"].startswith("Guide")
        assert "ragstore db downgrade" in hit["context"]
        section = _data(
            await session.call_tool(
                "get_section",
                {
                    "collection": "handbook",
                    "document_id": hit["document_id"],
                    "section": hit["section"],
                },
            )
        )
        assert section["section"] == hit["section"] and "target revision" in section["text"]
        assert "has no section 'Nope'" in _error(
            await session.call_tool(
                "get_section",
                {"collection": "handbook", "document_id": hit["document_id"], "section": "Nope"},
            )
        )
        doc = _data(
            await session.call_tool(
                "get_document", {"collection": "handbook", "document_id": hit["document_id"]}
            )
        )
        assert (doc["name"], doc["truncated"]) == ("ops/guide.md", False)
        assert "thirty days" in doc["text"]
        fields = _data(await session.call_tool("list_fields", {"collection": "handbook"}))
        team = next(m for m in fields["metadata"] if m["field"] == "team")
        assert team["examples"] == ["ops"] and "created_at" in str(fields["builtins"])
        listed = _data(await session.call_tool("list_collections", {}))
        assert {c["name"] for c in listed["collections"]} == {"handbook", "other"}
        assert "'missing' does not exist" in _error(
            await session.call_tool("search", {"collection": "missing", "query": "x"})
        )


@contextmanager
def _serving(app: Any) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@asynccontextmanager
async def _session(url: str, key: str | None = None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {key}"} if key else None
    async with (
        create_mcp_http_client(headers=headers) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def _served(store: Store, secret: str) -> Any:
    """The app ``ragstore mcp --transport http --api-key SECRET`` serves."""
    key = key_for(store, secret)
    return http_app(build_server(store, key), store, key)


async def test_http_session_adds_documents_only_with_a_write_key(handbook: Store) -> None:
    keys = KeyStore(handbook.runtime.db)
    writer = keys.create("write", name="agent").secret
    reader = keys.create("read", collection="handbook", name="reader").secret
    with _serving(_served(handbook, writer)) as url:
        async with _session(url, writer) as session:
            assert {t.name for t in (await session.list_tools()).tools} == READ_TOOLS | {
                "add_document"
            }
            added = _data(
                await session.call_tool(
                    "add_document",
                    {
                        "collection": "agent-notes",
                        "name": "tea.md",
                        "text": "# Tea\n\nGreen tea steeps for two minutes.",
                        "metadata": {"by": "ai"},
                    },
                )
            )
            assert added["status"] == "added"
            found = _data(
                await session.call_tool(
                    "search",
                    {
                        "collection": "agent-notes",
                        "query": "green tea",
                        "mode": "fulltext",
                        "where": {"by": "ai"},
                    },
                )
            )
            assert [h["section"] for h in found["hits"]] == ["Tea"]
    with _serving(_served(handbook, reader)) as url:
        async with _session(url, reader) as session:
            assert {t.name for t in (await session.list_tools()).tools} == READ_TOOLS
            listed = _data(await session.call_tool("list_collections", {}))
            assert [c["name"] for c in listed["collections"]] == ["handbook"]
            assert "limited to collection 'handbook'" in _error(
                await session.call_tool("search", {"collection": "other", "query": "note"})
            )


async def test_a_key_for_a_missing_collection_learns_no_other_names(handbook: Store) -> None:
    from mcp import Client as McpClient

    ghost = KeyStore(handbook.runtime.db).create("read", collection="ghost").secret
    async with McpClient(build_server(handbook, key_for(handbook, ghost))) as session:
        text = _error(await session.call_tool("search", {"collection": "ghost", "query": "x"}))
    assert "collection 'ghost' does not exist" in text
    assert "handbook" not in text and "other" not in text


def test_a_metrics_key_serves_no_tools(handbook: Store) -> None:
    # a scraper's key reads /metrics only: over MCP its list_collections named every
    # collection with its model and counts (the API refuses that key 403)
    from ragstore.errors import PermissionDeniedError

    scraper = KeyStore(handbook.runtime.db).create("metrics").secret
    with pytest.raises(PermissionDeniedError, match="needs 'read'"):
        key_for(handbook, scraper)


def test_over_http_the_server_key_is_asked_of_every_request(handbook: Store) -> None:
    """A server started with a key used to serve it to whoever reached the port: with
    ``--host 0.0.0.0 --api-key`` anyone on the network read (or, with a write key, wrote)
    as that key. Now a request must present the key itself: none, another valid key or a
    revoked one is ``unauthorized``."""
    import httpx

    keys = KeyStore(handbook.runtime.db)
    writer = keys.create("write", name="mcp-server")
    other = keys.create("admin", name="someone-else").secret
    accept = {"Accept": "application/json, text/event-stream"}
    with _serving(_served(handbook, writer.secret)) as url:
        for auth in (None, f"Bearer {other}", "Bearer rsk_x_y", f"Basic {writer.secret}"):
            headers = {**accept, **({"Authorization": auth} if auth else {})}
            answer = httpx.post(url, json=HELLO, headers=headers, timeout=30)
            assert answer.status_code == 401, (auth, answer.text)
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert answer.json()["code"] == "unauthorized"
        good = {**accept, "Authorization": f"Bearer {writer.secret}"}
        assert httpx.post(url, json=HELLO, headers=good, timeout=30).status_code == 200
        keys.revoke(writer.key.key_id)
        revoked = httpx.post(url, json=HELLO, headers=good, timeout=30)
        assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]


def test_over_http_without_a_key_a_proxied_client_of_another_machine_is_refused(
    handbook: Store,
) -> None:
    """Without a key the server binds loopback only and the SDK checks the Host; but a
    reverse proxy on this machine (Apache's ProxyPass: Host 127.0.0.1, X-Forwarded-For)
    served every collection to the network. A request forwarded for a client that is not
    this machine is now ``forbidden``; one for this machine is served."""
    import httpx

    accept = {"Accept": "application/json, text/event-stream"}
    with _serving(http_app(build_server(handbook), handbook, None)) as url:
        host = {"Host": url.split("/")[2]}
        for forwarded in (
            {"X-Forwarded-For": "203.0.113.9"},
            {"X-Real-IP": "2001:db8::1"},
            {"Forwarded": "for=198.51.100.7;proto=https"},
        ):
            headers = {**accept, **host, **forwarded}
            answer = httpx.post(url, json=HELLO, headers=headers, timeout=30)
            assert answer.status_code == 403, (forwarded, answer.text)
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert answer.json()["code"] == "forbidden"
            assert "RAGSTORE_API_KEY (or --api-key)" in answer.json()["detail"]
        local = {**accept, **host, "X-Forwarded-For": "127.0.0.1"}
        assert httpx.post(url, json=HELLO, headers=local, timeout=30).status_code == 200


@contextmanager
def _serving_uds(app: Any, path: str) -> Iterator[Any]:
    """``app`` served as ``uvicorn --uds PATH`` serves it (the socket 0666); an httpx
    client through that socket."""
    import httpx

    server = uvicorn.Server(uvicorn.Config(app, uds=path, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_over_http_without_a_key_a_unix_socket_is_refused(handbook: Store, tmp_path: Path) -> None:
    """The app served by uvicorn on a Unix socket (``--uds``: mode 0666, open to every
    user of the machine) answered every local user, with no key, every collection's
    text, as the API refuses with keys off. Without a key every request over a Unix
    socket it did not bind owner-only itself is ``forbidden`` now (``ragstore mcp --host
    unix:PATH`` binds its own: test_mcp_unix.py); with a key, the key being the
    credential, a request presenting it is served."""
    path = str(tmp_path / "mcp.sock")
    url = "http://127.0.0.1:8765/mcp"  # a Host the SDK's DNS-rebinding check lets by
    accept = {"Accept": "application/json, text/event-stream"}
    with _serving_uds(http_app(build_server(handbook), handbook, None), path) as client:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666  # every local user connects
        answer = client.post(url, json=HELLO, headers=accept)
        assert answer.status_code == 403, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        problem = answer.json()
        assert problem["code"] == "forbidden"
        assert "Unix socket" in problem["detail"]
        assert "RAGSTORE_API_KEY (or --api-key)" in problem["detail"]
    secret = KeyStore(handbook.runtime.db).create("read", name="mcp-uds").secret
    with _serving_uds(_served(handbook, secret), path) as client:
        assert client.post(url, json=HELLO, headers=accept).status_code == 401
        keyed = {**accept, "Authorization": f"Bearer {secret}"}
        assert client.post(url, json=HELLO, headers=keyed).status_code == 200


def test_over_http_a_body_over_the_request_limit_is_refused_unread(handbook: Store) -> None:
    """The SDK reads a request body whole into memory: without a limit one client could
    make the server hold gigabytes. Bodies are held to RAGSTORE_MAX_REQUEST_BYTES, declared
    or streamed, as at the HTTP API."""
    import httpx

    limit = handbook.runtime.settings.max_request_bytes
    secret = KeyStore(handbook.runtime.db).create("read", name="mcp-limit").secret
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {secret}",
    }
    big = b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "pad": "' + b"x" * limit + b'"}'

    def streamed() -> Iterator[bytes]:  # no Content-Length: cut off while it arrives
        for at in range(0, len(big), 65536):
            yield big[at : at + 65536]

    with _serving(_served(handbook, secret)) as url:
        for body in (big, streamed()):
            answer = httpx.post(url, content=body, headers=headers, timeout=30)
            assert answer.status_code == 413, answer.text
            assert answer.json()["code"] == "request_too_large"
            assert "RAGSTORE_MAX_REQUEST_BYTES" in answer.json()["detail"]


def test_http_off_loopback_needs_a_key(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import run_cli

    # the sockets are bound before they are judged: a port of its own (8765 may be taken)
    assert run_cli("mcp", "--transport", "http", "--host", "0.0.0.0", "--port", "0") == 65
    assert "serving MCP on 0.0.0.0 without an API key" in capsys.readouterr().err
    assert run_cli("mcp", "--transport", "carrier-pigeon") == 65
    capsys.readouterr()


def test_without_a_key_loopback_is_judged_from_the_address_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The no-key check compared ``--host`` with ``127.0.0.1``, ``::1`` and ``localhost``
    as typed: ``127.1``, ``127.0.0.2`` and ``[::1]`` (loopback all) were refused, and
    ``localhost`` let by whatever it resolved to. It is judged from the sockets bound now,
    the ones uvicorn serves on, as ``ragstore serve`` judges its own."""
    import ipaddress

    from ragstore.cli.mcp_cmd import listening
    from ragstore.errors import InputError

    for host in ("127.1", "127.0.0.2", "[::1]", "localhost"):
        sockets = listening(host, 0, keyed=False)
        try:
            assert sockets, host
            for sock in sockets:
                assert ipaddress.ip_address(sock.getsockname()[0]).is_loopback, host
        finally:
            for sock in sockets:
                sock.close()
    for host in ("0.0.0.0", ""):
        with pytest.raises(InputError, match="without an API key") as refused:
            listening(host, 0, keyed=False)
        assert "not on loopback alone" in refused.value.message, host
    # a localhost that resolves to every interface (an odd hosts file) binds them: refused
    real = socket.getaddrinfo

    def odd(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real("0.0.0.0" if host == "localhost" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", odd)
    with pytest.raises(InputError, match=r"listens on 0\.0\.0\.0,? "):
        listening("localhost", 0, keyed=False)


def test_ragstore_mcp_on_loopback_spelled_otherwise_serves_only_this_machines_pages(
    handbook: Store, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """``ragstore mcp --transport http --host 127.1`` (no key) starts now, and, the SDK's
    DNS-rebinding check covering only ``127.0.0.1``, ``localhost`` and ``::1`` as typed,
    ragstore's own refuses another site's ``Host`` or ``Origin`` with 403 ``forbidden``
    while a client of this machine is served."""
    import subprocess

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    env = {**os.environ, **cli_env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log = tmp_path / "mcp.log"
    command = [sys.executable, "-c", "from ragstore.cli import main; main()", "mcp"]
    args = ["--transport", "http", "--host", "127.1", "--port", str(port)]
    with log.open("wb") as out:
        served = subprocess.Popen([*command, *args], env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 120
        while served.poll() is None and time.monotonic() < deadline:
            with socket.socket() as client:
                if client.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        assert served.poll() is None, log.read_text()
        url = f"http://127.0.0.1:{port}/mcp"
        accept = {"Accept": "application/json, text/event-stream"}
        for foreign in ({"Host": "evil.example"}, {"Origin": "https://evil.example"}):
            answer = httpx.post(url, json=HELLO, headers={**accept, **foreign}, timeout=30)
            assert answer.status_code == 403, (foreign, answer.text)
            assert answer.json()["code"] == "forbidden"
            assert "evil.example" in answer.json()["detail"]
            assert "RAGSTORE_API_KEY (or --api-key)" in answer.json()["detail"]
        assert httpx.post(url, json=HELLO, headers=accept, timeout=30).status_code == 200
    finally:
        served.terminate()
        served.wait(timeout=60)


def _waiting_searches(store: Store) -> int:
    url = store.runtime.settings.database_url
    assert url is not None
    return waiting_searches(url.get_secret_value())


async def test_a_search_the_agent_abandons_is_cancelled_in_postgres(handbook: Store) -> None:
    """An agent that stops waiting for a slow search (here one held up by a lock, as behind
    an index build) takes its statements with it: both lists of the hybrid search leave
    PostgreSQL at once, not after RAGSTORE_SEARCH_TIMEOUT_S, and the next search answers."""
    import anyio
    from mcp import Client as McpClient

    async with McpClient(build_server(handbook)) as session:
        _data(await session.call_tool("search", {"collection": "handbook", "query": "backups"}))
        lock = handbook.runtime.db.connect()
        lock.execute("LOCK TABLE chunks IN ACCESS EXCLUSIVE MODE")
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(session.call_tool, "search", {"collection": "handbook", "query": "x"})
                deadline = time.monotonic() + 10
                while _waiting_searches(handbook) < 2:
                    assert time.monotonic() < deadline, "the search's two lists never started"
                    await anyio.sleep(0.02)
                gave_up = time.monotonic()
                tg.cancel_scope.cancel()  # the agent gives up on the call
            deadline = time.monotonic() + 3
            while (waiting := _waiting_searches(handbook)) and time.monotonic() < deadline:
                await anyio.sleep(0.05)
            assert waiting == 0, "the search ran on after the agent abandoned it"
            # not held to the search timeout (30 s here), as a tool run on a thread would be
            assert time.monotonic() - gave_up < 5
        finally:
            lock.rollback()
            lock.close()
        found = _data(
            await session.call_tool("search", {"collection": "handbook", "query": "backups"})
        )
        assert "thirty days" in found["hits"][0]["text"]


async def test_tool_arguments_are_not_coerced(handbook: Store) -> None:
    """Pydantic's lax mode turned JSON ``true`` into the id 1 (``get_document`` opened
    document 1), ``"3"`` into k=3 and ``context: true`` into one neighbouring chunk; an
    empty collection searched the default collection. Each is now a tool error that names
    the argument, and nothing is read."""
    from mcp import Client as McpClient

    bad: list[tuple[str, dict[str, Any], str]] = [
        ("get_document", {"collection": "handbook", "document_id": True}, "document_id"),
        ("get_document", {"collection": "handbook", "document_id": "1"}, "document_id"),
        (
            "get_section",
            {"collection": "handbook", "document_id": True, "section": "Guide"},
            "document_id",
        ),
        ("search", {"collection": "handbook", "query": "backups", "k": True}, "k"),
        ("search", {"collection": "handbook", "query": "backups", "k": "3"}, "k"),
        ("search", {"collection": "handbook", "query": "backups", "context": True}, "context"),
        ("search", {"collection": "", "query": "backups"}, "collection"),
        ("list_fields", {"collection": ""}, "collection"),
    ]
    async with McpClient(build_server(handbook)) as session:
        for tool, args, field in bad:
            text = _error(await session.call_tool(tool, args))
            assert "error[invalid_input]: the arguments are invalid" in text, (tool, args, text)
            assert f"{field}: " in text, (tool, args, text)
        found = _data(
            await session.call_tool(
                "search", {"collection": "handbook", "query": "backups", "k": 2, "context": 1}
            )
        )
        assert found["hits"]
        long = _error(
            await session.call_tool(
                "get_section",
                {
                    "collection": "handbook",
                    "document_id": found["hits"][0]["document_id"],
                    "section": "x" * 100_000,
                },
            )
        )
        assert len(long) < 500 and "has no section 'xxx" in long


async def test_a_key_revoked_while_serving_stops_every_tool(handbook: Store) -> None:
    """Over stdio no request carries the key: it was checked once at start, so a write
    key revoked with `ragstore keys revoke` went on adding documents (and reading) until
    the agent restarted the server. Now every tool call checks it is still live."""
    from mcp import Client as McpClient

    keys = KeyStore(handbook.runtime.db)
    writer = keys.create("write", name="revoked-agent")
    async with McpClient(build_server(handbook, key_for(handbook, writer.secret))) as session:
        _data(await session.call_tool("list_collections", {}))
        keys.revoke(writer.key.key_id)
        add = {"collection": "late", "name": "late.md", "text": "# Late\n\nToo late."}
        for tool, args in [
            ("add_document", add),
            ("list_collections", {}),
            ("search", {"collection": "handbook", "query": "backups", "mode": "fulltext"}),
        ]:
            text = _error(await session.call_tool(tool, args))
            assert "error[unauthorized]" in text and "was revoked" in text, (tool, text)
    assert "late" not in {c["name"] for c in handbook.list_collections()}


async def test_search_picks_diverse_hits_by_mmr_and_refuses_bad_options(handbook: Store) -> None:
    """The search tool had no maximal marginal relevance (search/mmr.py): an agent got
    near-copies of one passage filling its hits. ``mmr`` now picks among the ranking's best
    ``fetch_k``; bad options are the tool's error, with the search's own message."""
    from mcp import Client as McpClient

    copy = "To roll back a schema migration, run ragstore db downgrade to the previous revision."
    handbook.add_texts(
        "mcp-mmr",
        [
            copy,
            copy,
            copy,
            "A failed database migration can be undone by restoring last night's backup.",
            "Schema changes are reverted with the migration tool's downgrade command.",
            "Kittens sleep most of the day in a sunny spot.",
        ],
        ids=["dup-1", "dup-2", "dup-3", "restore", "revert", "cats"],
    )
    ask: dict[str, Any] = {
        "collection": "mcp-mmr",
        "query": "how do I roll back a database schema migration?",
        "k": 3,
        "mode": "vector",
    }
    async with McpClient(build_server(handbook)) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert {"mmr", "fetch_k", "lambda_mult"} <= set(tools["search"].input_schema["properties"])
        assert "lambda_mult" in str(tools["search"].description)
        plain = _data(await session.call_tool("search", ask))
        assert [h["source"] for h in plain["hits"]] == ["revert", "dup-1", "dup-2"]
        diverse = _data(await session.call_tool("search", {**ask, "mmr": True, "fetch_k": 6}))
        assert [h["source"] for h in diverse["hits"]] == ["revert", "restore", "dup-1"]
        relevant = {**ask, "mmr": True, "lambda_mult": 1}  # an integer is a number
        assert _data(await session.call_tool("search", relevant)) == plain
        bad: list[tuple[dict[str, Any], str]] = [
            ({"mmr": True, "lambda_mult": 1.5}, "error[invalid_input]: lambda_mult must be"),
            ({"mmr": True, "fetch_k": 2}, "fetch_k (2) is smaller than k (3)"),
            (
                {"fetch_k": 10},
                "fetch_k only applies to a maximal-marginal-relevance search; set mmr too",
            ),
            (
                {"context": "lots"},
                "error[invalid_input]: context 'lots' is invalid",
            ),  # not --context
            (
                {"mmr": True, "lambda_mult": "0.5"},
                "lambda_mult: Input should be a valid number, got the string '0.5'",
            ),
            ({"mmr": "yes"}, "mmr: Input should be a valid boolean, got the string 'yes'"),
        ]
        for args, message in bad:
            assert message in _error(await session.call_tool("search", {**ask, **args})), args


async def test_an_argument_a_tool_does_not_take_is_refused(handbook: Store) -> None:
    """The SDK dropped arguments a tool does not take: an agent that guessed ``filter``
    for ``where`` got the collection's best hits unfiltered, as if filtered (here the
    note of another team). Now the call is a tool error naming the argument and the ones
    the tool takes, and the schema says so (``additionalProperties: false``)."""
    from mcp import Client as McpClient

    handbook.add_document("mcp-extra", "sales.md", "# Sales\n\nThe backups of sales.")
    handbook.add_document(
        "mcp-extra", "ops.md", "# Ops\n\nThe backups of ops.", metadata={"team": "ops"}
    )
    ask = {"collection": "mcp-extra", "query": "backups", "mode": "fulltext"}
    async with McpClient(build_server(handbook)) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert all(t.input_schema.get("additionalProperties") is False for t in tools.values())
        text = _error(await session.call_tool("search", {**ask, "filter": {"team": "ops"}}))
        assert "unknown argument 'filter' for search: it takes collection, query" in text
        assert "where" in text
        text = _error(await session.call_tool("list_collections", {"verbose": True}))
        assert "unknown argument 'verbose' for list_collections: it takes no arguments" in text
        found = _data(await session.call_tool("search", {**ask, "where": {"team": "ops"}}))
        assert [h["title"] for h in found["hits"]] == ["Ops"]


async def test_refused_arguments_are_told_in_one_line_at_each_argument(handbook: Store) -> None:
    """Arguments a tool's schema refused were answered with pydantic's own report: lines
    per argument, ``[type=int_type, input_value='3', input_type=str]``, the pydantic
    docs' URL, and for ``context`` (an integer or "section") one block per type. Each is
    now one line, ``error[invalid_input]`` as the HTTP API's problem, naming each argument,
    what it should be and what was given; a bad write stores nothing."""
    from mcp import Client as McpClient

    writer = KeyStore(handbook.runtime.db).create("write", name="bad-arguments").secret
    prefix = "error[invalid_input]: the arguments are invalid: "
    ask = {"collection": "handbook", "query": "backups"}
    calls: list[tuple[str, dict[str, Any], str]] = [
        ("search", {}, "collection: Field required; query: Field required"),
        ("search", {**ask, "query": None}, "query: Input should be a valid string, got null"),
        ("search", {**ask, "k": "3"}, "k: Input should be a valid integer, got the string '3'"),
        ("search", {**ask, "k": 1.5}, "k: Input should be a valid integer, got the number 1.5"),
        ("search", {**ask, "mode": 3}, "mode: Input should be a valid string, got the number 3"),
        (
            "search",
            {**ask, "context": 1.5},
            "context: Input should be a valid integer or a valid string, got the number 1.5",
        ),
        (
            "search",
            {**ask, "lambda_mult": True},
            "lambda_mult: Input should be a valid number, got true",
        ),
        (
            "list_fields",
            {"collection": {}},
            "collection: Input should be a valid string, got an object",
        ),
        ("get_document", {"collection": "handbook"}, "document_id: Field required"),
        ("get_section", {"collection": "handbook", "document_id": 1}, "section: Field required"),
        (
            "add_document",
            {
                "collection": "mcp-bad-args",
                "name": "a.md",
                "text": "x" * 1000 + "\n",
                "metadata": "x",
            },
            "metadata: Input should be a valid dictionary, got the string 'x'",
        ),
        (
            "add_document",
            {"collection": "mcp-bad-args", "name": "a.md", "text": 5},
            "text: Input should be a valid string, got the number 5",
        ),
    ]
    async with McpClient(build_server(handbook, key_for(handbook, writer))) as session:
        for tool, args, told in calls:
            text = _error(await session.call_tool(tool, args))
            assert text.startswith(f"Error executing tool {tool}: {prefix}{told}"), (tool, text)
            assert text.endswith(
                "(the tool's inputSchema in tools/list gives each argument's type)"
            )
            for noise in ("\n", "pydantic", "validation error", "Arguments", "input_type"):
                assert noise not in text, (noise, text)
        long = _error(await session.call_tool("search", {**ask, "query": ["q" * 10_000]}))
        assert "query: Input should be a valid string, got an array" in long and len(long) < 300
        long = _error(await session.call_tool("search", {**ask, "mode": None, "k": "q" * 10_000}))
        assert f"k: Input should be a valid integer, got the string '{'q' * 40}...'" in long
        assert "; mode: Input should be a valid string, got null" in long and len(long) < 400
    assert "mcp-bad-args" not in {c["name"] for c in handbook.list_collections()}


async def test_a_tool_the_server_does_not_offer_names_those_it_does(handbook: Store) -> None:
    """A call of a tool not offered was answered ``Unknown tool: add_documents``, and
    ``add_document`` on a server started without a write key looked like a typo. Now the
    answer names the tools, or says add_document needs a write-scoped key."""
    from mcp import Client as McpClient

    async with McpClient(build_server(handbook)) as session:
        text = _error(await session.call_tool("serach", {"collection": "handbook"}))
        assert text == (
            "error[not_found]: no tool 'serach'; the tools are search, list_collections, "
            "list_fields, get_document, get_section"
        )
        text = _error(await session.call_tool("n" * 10_000, {}))
        assert len(text) < 300 and "no tool 'nnn" in text
        text = _error(
            await session.call_tool(
                "add_document", {"collection": "mcp-no-key", "name": "a.md", "text": "hi"}
            )
        )
        assert text.startswith("error[forbidden]: add_document is offered only when the MCP")
        assert "write-scoped API key (RAGSTORE_API_KEY, or ragstore mcp --api-key)" in text
    assert "mcp-no-key" not in {c["name"] for c in handbook.list_collections()}


async def test_a_tool_error_stores_nothing_and_leaves_the_document_as_it_was(
    handbook: Store,
) -> None:
    """A write the store refuses (an empty or NUL-holding text, a bad name or metadata,
    a text that is no PDF) creates no collection and leaves the document it would have
    replaced as it was, and each is one line under its code."""
    from mcp import Client as McpClient

    writer = KeyStore(handbook.runtime.db).create("write", name="half-written").secret
    page = handbook.list_documents("handbook")["data"]
    guide = next(d for d in page if d["name"] == "ops/guide.md")
    before = handbook.get_document("handbook", guide["id"])
    calls: list[tuple[str, dict[str, Any], str]] = [
        ("a.md", {"text": ""}, "error[empty_document]: a.md: the file is empty"),
        ("a.md", {"text": "hi\u0000"}, "error[invalid_input]: a.md: the text holds a NUL"),
        ("/a.md", {"text": "hi"}, "error[invalid_input]: invalid document name '/a.md'"),
        ("a.pdf", {"text": "hello"}, "error[corrupt_document]: a.pdf: not a PDF"),
        (
            "a.md",
            {"text": "# A\n\nhi", "metadata": {"a": "\ud800"}},
            "error[invalid_input]: metadata holds a lone surrogate",
        ),
        ("ops/guide.md", {"text": ""}, "error[empty_document]: ops/guide.md: the file is empty"),
        (
            "ops/guide.md",
            {"text": "# New\n\nhi", "metadata": {"a": "\ud800"}},
            "error[invalid_input]: metadata holds a lone surrogate",
        ),
    ]
    async with McpClient(build_server(handbook, key_for(handbook, writer))) as session:
        for name, args, told in calls:
            collection = "handbook" if name == "ops/guide.md" else "mcp-half"
            text = _error(
                await session.call_tool(
                    "add_document", {"collection": collection, "name": name, **args}
                )
            )
            assert text.startswith(f"Error executing tool add_document: {told}"), text
            assert "\n" not in text, text
    assert "mcp-half" not in {c["name"] for c in handbook.list_collections()}
    assert handbook.get_document("handbook", guide["id"]) == before


@contextmanager
def _relayed(listener: socket.socket, path: str) -> Iterator[None]:
    """``listener`` (bound, so far refusing connections) now relays each to ``path``,
    the embedded server's Unix socket: the database "comes back" on that TCP port."""
    listener.listen()
    opened: list[socket.socket] = []

    def pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                upstream = socket.socket(socket.AF_UNIX)
                upstream.connect(path)
                opened.extend((client, upstream))
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield
    finally:
        listener.close()
        for s in opened:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


async def test_a_database_down_is_told_without_its_address_and_the_session_recovers(
    handbook: Store, settings: Settings, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A tool call while the database is down answered the agent with the database's
    address ("connecting to postgresql://user@host:port/db") and no word of when to try
    again, where the HTTP API tells its callers neither address nor more than "retry in
    Ns". Now the call is that error result (the address in the server's log only), and
    the same session is served once the database is back."""
    import anyio
    from mcp import Client as McpClient
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    assert settings.database_url is not None
    params = conninfo_to_dict(settings.database_url.get_secret_value())
    path = f"{params['host']}/.s.PGSQL.{params.get('port', 5432)}"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    port = listener.getsockname()[1]
    params.update(host="127.0.0.1", port=str(port), password="s3cret-pw")
    down = Settings(
        database_url=make_conninfo("", **params),
        data_dir=tmp_path,
        profile="test",
        connect_timeout_s=2,
    )
    with Store(settings=down) as store:
        async with McpClient(build_server(store)) as session:
            for tool, args in [
                ("list_collections", {}),
                ("search", {"collection": "handbook", "query": "backups", "mode": "fulltext"}),
            ]:
                text = _error(await session.call_tool(tool, args))
                assert "error[database_unavailable]" in text and "retry in" in text, text
                for secret in ("127.0.0.1", str(port), "postgresql://", "s3cret-pw"):
                    assert secret not in text, (secret, text)
            assert f"127.0.0.1:{port}" in caplog.text  # the operator's log has it
            with _relayed(listener, path):
                deadline = time.monotonic() + 15  # the breaker's back-off: 1 s, then 2 s
                while (result := await session.call_tool("list_collections", {})).is_error:
                    assert time.monotonic() < deadline, result.content
                    await anyio.sleep(0.2)
                assert "handbook" in {c["name"] for c in _data(result)["collections"]}


async def test_add_document_takes_a_name_in_any_script(handbook: Store) -> None:
    """``café.md`` was refused as an invalid document name (not ASCII); a name that hides
    what it reads (a right-to-left override) still is, naming the character."""
    from mcp import Client as McpClient

    writer = KeyStore(handbook.runtime.db).create("write", name="unicode-names").secret
    async with McpClient(build_server(handbook, key_for(handbook, writer))) as session:
        for name in ("café.md", "日本語/メモ.md"):
            added = _data(
                await session.call_tool(
                    "add_document", {"collection": "mcp-unicode", "name": name, "text": "# Hi"}
                )
            )
            assert added["status"] == "added" and added["name"] == name, added
        text = _error(
            await session.call_tool(
                "add_document",
                {"collection": "mcp-unicode", "name": "a\u202eb.md", "text": "# Hi"},
            )
        )
        assert "(U+202E, an invisible formatting character) at position 1" in text, text


async def test_a_made_up_name_of_10_kb_is_not_echoed_whole(handbook: Store) -> None:
    """An invalid collection or document name was quoted whole in the error: an agent's
    10 KB name came back as a 10 KB answer, filling its context. It is quoted cut."""
    from mcp import Client as McpClient

    writer = KeyStore(handbook.runtime.db).create("write", name="long-names").secret
    long = "n" * 10_000
    calls: list[tuple[str, dict[str, Any], str]] = [
        ("search", {"collection": long, "query": "x"}, "invalid collection name 'nnn"),
        ("list_fields", {"collection": long}, "invalid collection name 'nnn"),
        ("get_document", {"collection": long, "document_id": 1}, "invalid collection name"),
        ("add_document", {"collection": "notes", "name": long, "text": "x"}, "document name 'nn"),
        (
            "add_document",
            {"collection": "notes", "name": f"{long}/", "text": "x"},
            "it ends with a slash",
        ),
    ]
    async with McpClient(build_server(handbook, key_for(handbook, writer))) as session:
        for tool, args, message in calls:
            text = _error(await session.call_tool(tool, args))
            assert message in text and len(text) < 700, (tool, len(text), text[:300])


async def _over_stdio(server: Any, sent: list[str], *, answers: int) -> list[Any]:
    """The first ``answers`` messages ``server`` writes, served over stdio
    (:func:`serve_stdio`), to the lines ``sent``."""
    import anyio

    from ragstore.integrations.mcp import serve_stdio

    lines_in, stdin = anyio.create_memory_object_stream[str](20)
    stdout_send, lines_out = anyio.create_memory_object_stream[str](20)

    class Stdin:  # what stdio_server reads: an async iterator of lines
        def __aiter__(self) -> Any:
            return stdin

    class Stdout:
        async def write(self, text: str) -> None:
            await stdout_send.send(text)

        async def flush(self) -> None:
            pass

    async with lines_in, stdin, stdout_send, lines_out, anyio.create_task_group() as tg:
        tg.start_soon(serve_stdio, server, Stdin(), Stdout())
        for line in sent:
            await lines_in.send(line + "\n")
        with anyio.fail_after(20):
            got = [json.loads(await lines_out.receive()) for _ in range(answers)]
        tg.cancel_scope.cancel()
    return got


async def test_over_stdio_a_line_the_server_cannot_read_is_answered(handbook: Store) -> None:
    """The SDK dropped a line it could not read without a word: a request nested past
    its JSON parser's depth (a made-up ``where`` ~200 levels deep) was never answered, and
    the agent waited to its own timeout. Each such line is now answered as JSON-RPC 2.0
    says (-32700 / -32600, under the request's id where it can be read; a notification
    not at all), and the session goes on."""
    deep = '{"a":' * 300 + "1" + "}" * 300
    sent = [
        json.dumps(HELLO),
        '{"jsonrpc": "2.0", "method": "notifications/initialized"}',
        "{not json",
        "[]",
        '{"jsonrpc": "2.0", "method": 5}',  # a notification, however wrong: no answer
        '{"jsonrpc": "2.0", "id": "q", "method": 5}',
        '{"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "search", '
        f'"arguments": {{"collection": "handbook", "query": "x", "where": {deep}}}}}}}',
        "[" * 3000 + "]" * 3000,  # too deep to read even its id
        '{"jsonrpc": "2.0", "id": 9, "method": "ping"}',
    ]
    got = await _over_stdio(build_server(handbook), sent, answers=7)
    assert [(m["id"], m.get("error", {}).get("code")) for m in got[1:]] == [
        (None, -32700),
        (None, -32600),
        ("q", -32600),
        (8, -32600),
        (None, -32700),
        (9, None),
    ]
    assert "nests deeper" in got[4]["error"]["message"] and got[6]["result"] == {}
    assert "nests deeper" in got[5]["error"]["message"]


async def test_over_stdio_add_document_is_held_to_the_request_limit(handbook: Store) -> None:
    """Over HTTP an MCP call is held to RAGSTORE_MAX_REQUEST_BYTES; over stdio nothing
    held add_document's text: an agent's 10 MB was chunked and embedded for minutes into
    thousands of chunks. A text over the limit is now refused as over HTTP, nothing stored."""
    from mcp import Client as McpClient

    writer = KeyStore(handbook.runtime.db).create("write", name="big-text").secret
    limit = handbook.runtime.settings.max_request_bytes
    big = "# Big\n\n" + "é" * (limit // 2)  # under the limit in characters, over in bytes
    async with McpClient(build_server(handbook, key_for(handbook, writer))) as session:
        text = _error(
            await session.call_tool(
                "add_document", {"collection": "mcp-big", "name": "big.md", "text": big}
            )
        )
    assert "error[request_too_large]" in text and "RAGSTORE_MAX_REQUEST_BYTES" in text, text
    assert "ragstore ingest PATH -c mcp-big" in text
    assert "mcp-big" not in {c["name"] for c in handbook.list_collections()}


async def test_get_section_refuses_an_id_no_document_can_have_as_get_document_does(
    handbook: Store,
) -> None:
    """``get_section`` read an id of -1 or 0 as a document not found, and one past 64 bits
    failed in the database; ``get_document`` says the id is invalid and how to give one.
    Both now answer alike, naming the id."""
    from mcp import Client as McpClient

    async with McpClient(build_server(handbook)) as session:
        for bad in (-1, 0, 2**63):
            answers = [
                _error(
                    await session.call_tool(
                        tool, {"collection": "handbook", "document_id": bad, **extra}
                    )
                )
                for tool, extra in (("get_document", {}), ("get_section", {"section": "Guide"}))
            ]
            for tool, answer in zip(("get_document", "get_section"), answers, strict=True):
                assert answer == (
                    f"Error executing tool {tool}: error[invalid_input]: invalid document id "
                    f"{bad}: give a positive integer"
                )


def test_an_sdk_without_the_low_level_server_stops_ragstore_mcp_as_it_starts() -> None:
    """The SDK has no public way to the low-level Server that ``serve_stdio`` runs (to answer
    an unreadable line): an SDK that moved it is refused before stdio is opened, naming
    the versions ragstore serves with, not with an AttributeError's traceback."""
    import anyio
    from mcp.server.lowlevel import Server
    from mcp.server.mcpserver import MCPServer

    from ragstore.errors import ConfigError
    from ragstore.integrations.mcp import MCP_VERSIONS, lowlevel_server, serve_stdio

    server = MCPServer(name="probe")
    assert isinstance(lowlevel_server(server), Server)  # the SDK ragstore pins has it
    del server._lowlevel_server  # as an SDK that renamed it would build it
    with pytest.raises(ConfigError) as caught:
        anyio.run(serve_stdio, server)
    assert MCP_VERSIONS in caught.value.message
    assert "pip install 'ragstore[mcp]'" in caught.value.message


async def test_search_hits_carry_an_uploads_name(handbook: Store) -> None:
    """A hit of an uploaded document showed only its source, the server's own
    ``<data dir>/uploads/...`` path; it now carries the name it was uploaded under, as
    documents list does, and a hit of a text none."""
    from mcp import Client as McpClient

    async with McpClient(build_server(handbook)) as session:
        for extra in ({}, {"context": "section"}):
            args = {"collection": "handbook", "query": "backups", **extra}
            found = _data(await session.call_tool("search", args))
            assert {h["name"] for h in found["hits"]} == {"ops/guide.md"}
            # its source too, not the server's <data dir>/uploads/... path (nowhere in
            # the answer)
            assert {h["source"] for h in found["hits"]} == {"ops/guide.md"}
            assert "/uploads/" not in json.dumps(found)
        other = _data(await session.call_tool("search", {"collection": "other", "query": "note"}))
        assert [(h["source"], h["name"]) for h in other["hits"]] == [("note", None)]


async def test_a_search_with_a_key_leaves_the_event_loop_free(handbook: Store) -> None:
    """With a key, the search tool checked it (a pooled read) on the event loop: waiting
    for a connection there stopped every coroutine, here the one whose word frees that
    connection, so the search failed with a pool timeout instead of waiting its turn."""
    import anyio
    from mcp import Client as McpClient

    base = handbook.runtime.settings
    one = base.model_copy(update={"pool_min_size": 1, "pool_max_size": 1, "connect_timeout_s": 3})
    reader = KeyStore(handbook.runtime.db).create("read", name="one-connection").secret
    go, held = threading.Event(), threading.Event()
    with Store(settings=one) as store:
        key = key_for(store, reader)

        def hold() -> None:
            with store.runtime.db.connection():  # the pool's only connection
                held.set()
                go.wait(60)

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            assert held.wait(30)

            async def free_it_once_the_search_waits() -> None:
                # a coroutine on the loop: it runs only while the loop is free
                while not store.runtime.db.pool.get_stats().get("requests_waiting"):
                    await anyio.sleep(0.01)
                go.set()

            async with (
                McpClient(build_server(store, key)) as session,
                anyio.create_task_group() as tg,
            ):
                tg.start_soon(free_it_once_the_search_waits)
                result = await session.call_tool(
                    "search", {"collection": "handbook", "query": "backups", "mode": "fulltext"}
                )
                tg.cancel_scope.cancel()
        finally:
            go.set()
            holder.join(30)
    assert "thirty days" in _data(result)["hits"][0]["text"]


async def test_over_stdio_add_document_metadata_is_held_to_the_request_limit(
    handbook: Store,
) -> None:
    """The request limit held add_document's text alone: a short text with megabytes of
    metadata was stored over stdio (on the document and each of its chunks), where the
    same call over HTTP is refused. The whole call, text and metadata as JSON, is held."""
    from mcp import Client as McpClient

    writer = KeyStore(handbook.runtime.db).create("write", name="big-meta").secret
    limit = handbook.runtime.settings.max_request_bytes
    cases = {
        "mcp-big-meta": ("# Small\n\nA short text.", {"blob": "x" * limit}),
        # each part under the limit, the call over it
        "mcp-big-both": ("# Half\n\n" + "y" * (limit // 2), {"blob": "z" * (limit // 2)}),
    }
    async with McpClient(build_server(handbook, key_for(handbook, writer))) as session:
        for collection, (text, metadata) in cases.items():
            told = _error(
                await session.call_tool(
                    "add_document",
                    {"collection": collection, "name": "a.md", "text": text, "metadata": metadata},
                )
            )
            assert "error[request_too_large]" in told, told
            assert "text and metadata as JSON" in told and "RAGSTORE_MAX_REQUEST_BYTES" in told
            assert f"ragstore ingest PATH -c {collection}" in told
        # a call under the limit is stored as before
        added = _data(
            await session.call_tool(
                "add_document",
                {
                    "collection": "mcp-meta-ok",
                    "name": "a.md",
                    "text": "# Ok\n\nStored.",
                    "metadata": {"blob": "x" * 1000},
                },
            )
        )
        assert added["status"] == "added"
    names = {c["name"] for c in handbook.list_collections()}
    assert "mcp-meta-ok" in names and not names & set(cases)


# a Markdown document of many sections, each a heading and a paragraph of a few chunks
MANY_SECTIONS = "# Atlas\n\nThe atlas.\n\n" + "".join(
    f"## Region {i}\n\nRegion {i} lies at latitude {i} north. "
    + " ".join(f"r{i}w{j}" for j in range(120))
    + "\n\n"
    for i in range(12)
)


async def test_get_section_finds_a_section_past_the_chunk_limit(
    handbook: Store, settings: Settings
) -> None:
    """``get_section`` looked for the section among the document's first 10,000 chunks
    only, and answered a section past them with "has no section": a false answer. The
    section is now read by its heading path, bounded by RAGSTORE_MAX_ANSWER_CHUNKS (shrunk
    here to 5 rather than writing 10,000 chunks): a section past the first 5 chunks is
    found, one of more chunks than that is refused with its size, and get_document says
    that its text is cut."""
    from mcp import Client as McpClient

    from ragstore.profiles import settings_with

    handbook.add_document("mcp-atlas", "atlas.md", MANY_SECTIONS)
    with Store(settings=settings_with(settings, max_answer_chunks=5)) as small:
        doc_id = small.list_documents("mcp-atlas")["data"][0]["id"]
        assert small.get_collection("mcp-atlas")["chunks"] > 30  # far past 5 chunks
        async with McpClient(build_server(small)) as session:

            async def section(path: str) -> Any:
                return await session.call_tool(
                    "get_section",
                    {"collection": "mcp-atlas", "document_id": doc_id, "section": path},
                )

            last = _data(await section("Atlas > Region 11"))
            assert last["section"] == "Atlas > Region 11" and not last["truncated"]
            assert last["text"].startswith("Region 11 lies at latitude 11 north.")
            assert last["text"].endswith("r11w119") and "r10w" not in last["text"]
            whole = _error(await section("Atlas"))
            assert whole.startswith("Error executing tool get_section: error[answer_too_large]")
            assert "section 'Atlas' of document" in whole and "chunks, at most 5" in whole
            assert "RAGSTORE_MAX_ANSWER_CHUNKS" in whole
            assert "has no section 'Atlas > Region 12'" in _error(
                await section("Atlas > Region 12")
            )
            doc = _data(
                await session.call_tool(
                    "get_document", {"collection": "mcp-atlas", "document_id": doc_id}
                )
            )
            assert doc["truncated"] and "Region 11" not in doc["text"]


LONG = " ".join(f"Sentence {i} explains one more detail of the topic at hand." for i in range(18))
TINY_SECTIONS = (  # each tiny section joins the chunk before it (chunker.py, _packs)
    f"# Doc\n\n## Long one\n\n{LONG}\n\n## Tiny\n\nThe quokka note sits here.\n\n"
    f"## Long two\n\n{LONG}\n\n### Subtiny\n\nThe wombat note sits here.\n\n"
    f"## Long three\n\n{LONG}\n\n## Small\n\nSmall note.\n\n### Small kid\n\nKid note.\n\n"
    f"### Big kid\n\n{LONG}\n"
)


async def test_get_section_reads_a_tiny_section_merged_into_the_chunk_before_it(
    handbook: Store,
) -> None:
    """A tiny section shares the chunk before it, which keeps the section path it starts
    in and names the tiny one in ``metadata["headings"]``: ``get_section`` read chunks by
    section path only, so it answered "has no section" for the tiny section (its heading
    chunk is labelled with its parent's path), and a section followed by a tiny one ended
    with the tiny one's text. The section's chunks now include the one holding its
    heading, each cut to the section's part."""
    from mcp import Client as McpClient

    doc_id = handbook.add_document("mcp-tiny", "doc.md", TINY_SECTIONS)["id"]
    async with McpClient(build_server(handbook)) as session:

        async def section(path: str) -> str:
            got = _data(
                await session.call_tool(
                    "get_section",
                    {"collection": "mcp-tiny", "document_id": doc_id, "section": path},
                )
            )
            assert got["section"] == path and not got["truncated"]
            return str(got["text"])

        assert await section("Doc > Tiny") == "The quokka note sits here."
        assert await section("Doc > Long two > Subtiny") == "The wombat note sits here."
        assert await section("Doc > Long one") == LONG
        assert (
            await section("Doc > Long two")
            == f"{LONG}\n\n### Subtiny\n\nThe wombat note sits here."
        )
        assert await section("Doc > Long three") == LONG
        # a tiny section with a tiny subsection merged too and one of its own chunk
        assert await section("Doc > Small") == (
            f"Small note.\n\n### Small kid\n\nKid note.\n\nBig kid\n\n{LONG}"
        )
        assert await section("Doc > Small > Small kid") == "Kid note."
        assert await section("Doc > Small > Big kid") == LONG
        # the whole document: each held heading once, as its line in the text that holds it
        assert await section("Doc") == "\n\n".join(
            [
                "Long one",
                LONG,
                "## Tiny",
                "The quokka note sits here.",
                "Long two",
                LONG,
                "### Subtiny",
                "The wombat note sits here.",
                "Long three",
                LONG,
                "## Small",
                "Small note.",
                "### Small kid",
                "Kid note.",
                "Big kid",
                LONG,
            ]
        )
        # the way an agent is told to read more: a hit's section, which holds the text
        found = _data(
            await session.call_tool(
                "search",
                {
                    "collection": "mcp-tiny",
                    "query": "quokka note",
                    "k": 1,
                    "mode": "fulltext",
                    "context": "section",
                },
            )
        )
        hit = found["hits"][0]
        assert hit["section"] == "Doc > Long one" and "quokka note" in hit["context"]


@pytest.mark.parametrize(
    ("tool", "reader", "extra"),
    [
        ("get_document", "document_chunks", {}),
        ("get_section", "section_chunks", {"section": "Guide"}),
        ("list_collections", "is_live", None),  # a key's check before each call
    ],
)
async def test_close_waits_for_a_tool_reading_chunks(
    handbook: Store,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tool: str,
    reader: str,
    extra: dict[str, Any] | None,
) -> None:
    """``get_document`` and ``get_section`` read the chunks, and a server with a key
    checks it is live, through ``store.runtime``, outside the Store's calls:
    ``Store.close()`` did not wait for them, and closed the pool under their read. They
    are now calls of the Store: a close while one is held waits for it (told here by
    close(timeout=0), which says a call is running), and the held read then ends as it
    would have without the close."""
    import anyio
    import anyio.to_thread
    from mcp import Client as McpClient

    from ragstore.integrations import mcp as mcp_module

    entered, release = threading.Event(), threading.Event()
    real = getattr(mcp_module, reader)

    def held(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert release.wait(60)
        return real(*args, **kwargs)

    monkeypatch.setattr(mcp_module, reader, held)
    doc_id = handbook.find_document("handbook", "ops/guide.md")["id"]
    answers: list[Any] = []
    own = Store(settings=settings)
    key = None
    if extra is None:  # a tool of no document, on a server with a key
        key = key_for(own, KeyStore(own.runtime.db).create("read", name="held").secret)
    try:
        async with McpClient(build_server(own, key)) as session:

            async def call() -> None:
                args = {} if extra is None else {"collection": "handbook", "document_id": doc_id}
                answers.append(await session.call_tool(tool, {**args, **(extra or {})}))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                assert await anyio.to_thread.run_sync(entered.wait, 60)
                with pytest.raises(TimeoutError, match=r"1 call\(s\) of other threads"):
                    own.close(timeout=0)
                release.set()
    finally:
        release.set()
        own.close()
    if extra is None:
        # the key checked, the listing is a new call of the Store, refused once its
        # close has begun (as every call is)
        assert _error(answers[0]) == "Error executing tool list_collections"
    else:
        assert "thirty days" in _data(answers[0])["text"]


def _answers(port: int) -> bool:
    """The server answers HTTP on ``port``: its socket accepting is not enough, since
    ``ragstore mcp`` binds it before it opens its Store and starts serving."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/")
    except OSError:
        return False


def test_an_http_server_in_this_process_stopped_by_sigterm(cli_env: dict[str, str]) -> None:
    """``ragstore mcp --transport http`` run here and stopped as a service manager stops
    it. sse-starlette then holds the process as stopping (``AppStatus.should_exit``); the
    next test shows that no later session pays for it (``tests/conftest.py`` clears it)."""
    from tests.conftest import run_cli
    from tests.sigterm import sigterm_when

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with sigterm_when(lambda: _answers(port)) as sent:
        status = run_cli("mcp", "--transport", "http", "--port", str(port))
    assert sent == [True] and status == 0
    assert sys.modules["sse_starlette.sse"].AppStatus.should_exit


async def test_an_http_session_after_a_server_stopped_by_sigterm_is_answered(
    handbook: Store,
) -> None:
    """Run after the test above (pytest-xdist gives a file to one worker, in order): the
    SIGTERM that stopped that server ended every SSE stream of this one at once, and
    ``initialize`` failed with "SSE stream ended without a response"."""
    with _serving(http_app(build_server(handbook), handbook, None)) as url:
        async with _session(url) as session:
            assert {t.name for t in (await session.list_tools()).tools} == READ_TOOLS
            listed = _data(await session.call_tool("list_collections", {}))
            assert {c["name"] for c in listed["collections"]} >= {"handbook", "other"}


ARROWS = (  # headings holding ">", one of them a tiny section merged into the chunk before it
    f"# Doc\n\n## Use a -> b\n\n{LONG}\n\n## Map<T>\n\nThe quokka map note.\n\n"
    f"## Event: `<inspector-protocol-method>`\n\nThe wombat event fires. {LONG}\n\n"
    f"## After\n\n{LONG}\n"
)


async def test_get_section_opens_a_section_whose_heading_holds_a_greater_than_sign(
    handbook: Store,
) -> None:
    """``get_section`` split the section it was given at each ">", so a heading holding
    one (``Use a -> b``, ``Map<T>``; the Node.js docs' ``Event: `<inspector-protocol-
    method>` ``) was cut into headings no section has: the section of a search hit, passed
    back, was "document N has no section". A hit now gives ``section_path`` (the
    headings) too, and get_section takes it, or the section string, matched whole."""
    from mcp import Client as McpClient

    doc_id = handbook.add_document("mcp-arrows", "doc.md", ARROWS)["id"]
    async with McpClient(build_server(handbook)) as session:

        async def hit(query: str) -> Any:
            found = _data(
                await session.call_tool(
                    "search",
                    {"collection": "mcp-arrows", "query": query, "k": 1, "mode": "fulltext"},
                )
            )
            return found["hits"][0]

        async def section(given: Any) -> Any:
            return await session.call_tool(
                "get_section",
                {"collection": "mcp-arrows", "document_id": doc_id, "section": given},
            )

        # a section whose heading holds ">", and the tiny one merged into its chunk
        arrow = await hit("quokka map note")
        assert arrow["section_path"] == ["Doc", "Use a -> b"]
        assert arrow["section"] == "Doc > Use a -> b"
        for given in (arrow["section"], arrow["section_path"]):
            got = _data(await section(given))
            assert (got["section"], got["section_path"]) == (
                arrow["section"],
                ["Doc", "Use a -> b"],
            )
            assert got["text"] == LONG
        for given in ("Doc > Map<T>", ["Doc", "Map<T>"], "  Doc > Map<T> "):
            got = _data(await section(given))
            assert (got["section_path"], got["text"]) == (["Doc", "Map<T>"], "The quokka map note.")
        # the Node.js docs' heading, a hit's section passed back as it came
        event = await hit("wombat event")
        assert event["section_path"] == ["Doc", "Event: `<inspector-protocol-method>`"]
        for given in (event["section"], event["section_path"]):
            got = _data(await section(given))
            assert got["section_path"] == event["section_path"]
            assert got["text"] == f"The wombat event fires. {LONG}"
        # matched whole: a part of a heading, or a heading split at its ">", is no section
        for given in ("Doc > Use a -", "Doc > Use a - > b", ["Doc", "Use a -", "b"]):
            assert "has no section" in _error(await section(given)), given
        assert "section is an empty list" in _error(await section([]))

    # two paths that read alike: a heading "A > B", and a heading B under A
    twin = handbook.add_document(
        "mcp-arrows", "twin.md", "# A\n\n## B\n\nThe nested one.\n\n# A > B\n\nThe flat one.\n"
    )["id"]
    async with McpClient(build_server(handbook)) as session:

        async def twin_section(given: Any) -> Any:
            return await session.call_tool(
                "get_section", {"collection": "mcp-arrows", "document_id": twin, "section": given}
            )

        told = _error(await twin_section("A > B"))
        assert "names 2 sections" in told and "['A', 'B']" in told and "['A > B']" in told
        assert "section_path" in told
        assert _data(await twin_section(["A", "B"]))["text"] == "The nested one."
        assert _data(await twin_section(["A > B"]))["text"] == "The flat one."


async def test_get_section_refuses_a_nul_naming_the_argument_as_search_does(
    handbook: Store,
) -> None:
    """A NUL in ``get_section``'s section reached PostgreSQL and came back as "reading
    document 1: a value cannot be stored: PostgreSQL text fields cannot contain NUL", a
    write's words naming no argument; it is now refused as ``search`` refuses a NUL in
    its query, naming the argument and the character."""
    from mcp import Client as McpClient

    async with McpClient(build_server(handbook)) as session:
        searched = _error(
            await session.call_tool("search", {"collection": "handbook", "query": "Gu\x00ide"})
        )
        assert "the query holds a NUL character (\\u0000) at character 2" in searched
        for given, told in (
            ("Gu\x00ide", "section holds a NUL character (\\u0000) at character 2"),
            (
                ["Guide", "Roll\x00back"],
                "section[1] holds a NUL character (\\u0000) at character 4",
            ),
        ):
            text = _error(
                await session.call_tool(
                    "get_section",
                    {"collection": "handbook", "document_id": 1, "section": given},
                )
            )
            assert text == (
                f"Error executing tool get_section: error[invalid_input]: {told}, which "
                "PostgreSQL text cannot store; remove it"
            ), text


async def test_the_server_offers_only_tools_and_names_its_version(
    handbook: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """The SDK's server advertised the ``prompts`` and ``resources`` capabilities with
    none of either, answered ``prompts/get`` of any name with JSON-RPC error code 0 (no
    such code) after logging a traceback for the client's mistake, and said its version
    was "". It now advertises tools alone, answers a prompts or resources method as any
    it does not serve (-32601, nothing logged), and names ragstore's version."""
    import ragstore

    sent = [
        json.dumps(HELLO),
        '{"jsonrpc": "2.0", "method": "notifications/initialized"}',
        '{"jsonrpc": "2.0", "id": 2, "method": "prompts/get", "params": {"name": "nope"}}',
        '{"jsonrpc": "2.0", "id": 3, "method": "prompts/list"}',
        '{"jsonrpc": "2.0", "id": 4, "method": "resources/list"}',
        '{"jsonrpc": "2.0", "id": 5, "method": "resources/read", "params": {"uri": "x://y"}}',
        '{"jsonrpc": "2.0", "id": 6, "method": "tools/list"}',
    ]
    with caplog.at_level(logging.DEBUG):
        got = await _over_stdio(build_server(handbook), sent, answers=6)
    hello = got[0]["result"]
    assert hello["serverInfo"] == {"name": "ragstore", "version": ragstore.__version__}
    assert ragstore.__version__ not in ("", "0.0.0")
    assert set(hello["capabilities"]) == {"tools"}, hello["capabilities"]
    assert [(m["id"], m["error"]["code"]) for m in got[1:5]] == [
        (2, -32601),
        (3, -32601),
        (4, -32601),
        (5, -32601),
    ]
    assert {t["name"] for t in got[5]["result"]["tools"]} == READ_TOOLS
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
