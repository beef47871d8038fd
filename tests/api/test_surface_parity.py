"""One input, one answer: the Store, the HTTP Client and the MCP tools (the SDK's client
over :func:`ragstore.integrations.mcp.build_server`, on the real Store) take or refuse
the same values with the same error code, and where each says why, in the same words.
docs/python.md promises that code moves from a Store to a Client by one line."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ragstore import Client, Store
from ragstore.config import Settings
from ragstore.errors import RagstoreError
from ragstore.integrations.mcp import build_server

NOTES = [
    "Backups are taken nightly and kept for thirty days.",
    "Rollback: run ragstore db downgrade to go back one schema revision.",
]


@pytest.fixture(scope="module")
def store(settings: Settings) -> Iterator[Store]:
    with Store(settings=settings) as s:
        s.add_texts("parity", NOTES, ids=["backups", "rollback"])
        yield s


@pytest.fixture()
def client(open_url: str, store: Store) -> Iterator[Client]:
    with Client(open_url) as c:
        yield c


def _refused(call: Any) -> RagstoreError:
    with pytest.raises(RagstoreError) as caught:
        call()
    return caught.value


async def _mcp_search(store: Store, **args: Any) -> tuple[bool, str]:
    """The MCP ``search`` tool's answer: (is an error, its text)."""
    from mcp import Client as McpClient

    async with McpClient(build_server(store)) as session:
        result = await session.call_tool(
            "search", {"collection": "parity", "query": "backups", **args}
        )
    return bool(result.is_error), str(result.content[0].text)


@pytest.mark.parametrize("context", ["2", "Section", " 2 ", "02"])
async def test_a_context_the_http_schema_refuses_is_refused_everywhere(
    store: Store, client: Client, context: str
) -> None:
    # the Store and MCP read it as str(context) stripped and lower-cased: "2" searched
    # with two neighbours there and was 422 through the Client
    for backend in (store, client):
        err = _refused(lambda b=backend: b.search("parity", "backups", context=context))
        assert err.code == "invalid_input", (backend, err)
        assert "context" in err.message, (backend, err)
    failed, text = await _mcp_search(store, context=context)
    assert failed and "error[invalid_input]: context" in text, text


async def test_a_context_the_http_schema_takes_is_taken_everywhere(
    store: Store, client: Client
) -> None:
    for context in (2, "section"):
        for backend in (store, client):
            hits = backend.search("parity", "backups", context=context)["data"]
            assert hits and hits[0]["context"], (backend, context)
        failed, text = await _mcp_search(store, context=context)
        assert not failed, text


@pytest.mark.parametrize("context", ["lots", "2", True, 51, -1, 2.5])
def test_a_bad_context_is_told_alike_by_the_store_and_the_client(
    store: Store, client: Client, context: Any
) -> None:
    # the Client sent it unchecked: the server schema's pydantic words came back
    # ("body.context: Input should be ..."), where the Store names it and how to fix it
    told = set()
    for backend in (store, client):
        err = _refused(lambda b=backend: b.search("parity", "backups", context=context))
        assert err.code == "invalid_input", (backend, err)
        told.add(err.message)
    assert told == {
        f"context {context!r} is invalid: give a number of neighbouring chunks "
        "(an integer, 0-50) or 'section'"
    }


@pytest.mark.parametrize("where", [[1], "x", 5])
async def test_a_where_that_is_no_object_is_an_invalid_filter_everywhere(
    store: Store, client: Client, where: Any
) -> None:
    # the MCP tool declared where a dict: the SDK's argument check answered invalid_input
    # ("the arguments are invalid: where: Input should be a valid dictionary")
    told = set()
    for backend in (store, client):
        err = _refused(lambda b=backend: b.search("parity", "backups", where=where))
        assert err.code == "invalid_filter", (backend, err)
        told.add(err.message)
    assert len(told) == 1, told
    failed, text = await _mcp_search(store, where=where)
    assert failed and text.endswith(f"error[invalid_filter]: {told.pop()}"), text


async def test_the_mcp_search_schema_still_says_where_is_an_object(store: Store) -> None:
    from mcp import Client as McpClient

    async with McpClient(build_server(store)) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    where = tools["search"].input_schema["properties"]["where"]
    assert {"type": "object", "additionalProperties": True} in where["anyOf"], where
    assert {"type": "null"} in where["anyOf"], where
    failed, text = await _mcp_search(store, where={"$nope": 1})
    assert failed and "error[invalid_filter]" in text, text


@pytest.mark.parametrize(
    ("option", "length", "cap"),
    [("source_prefix", 2000, 1000), ("source", 1001, 1000), ("format", 51, 50)],
)
def test_a_list_documents_filter_too_long_is_refused_alike(
    store: Store, client: Client, option: str, length: int, cap: int
) -> None:
    # the caps were the HTTP route's alone: the Store answered an empty page
    told = set()
    for backend in (store, client):
        err = _refused(lambda b=backend: b.list_documents("parity", **{option: "x" * length}))
        assert err.code == "invalid_input", (backend, err)
        told.add(err.message)
    assert told == {
        f"{option} is {length:,} characters, more than the {cap:,} it may have; give a shorter one"
    }
    # at the cap, a filter (matching nothing here)
    for backend in (store, client):
        assert backend.list_documents("parity", **{option: "x" * cap})["data"] == []


@pytest.mark.parametrize(
    ("metadata", "told"),
    [
        (
            {"x": b"b"},
            "metadatas[0] holds a bytes (b'b') at 'x', which is not JSON-serialisable; "
            "give text (value.decode())",
        ),
        (
            {"x": {"tags": {"a"}}},
            "metadatas[0] holds a set ({'a'}) at 'x.tags', which is not JSON-serialisable; "
            "give a list (sorted(value))",
        ),
    ],
    ids=["bytes", "set"],
)
def test_metadata_json_cannot_hold_is_told_alike(
    store: Store, client: Client, metadata: dict[str, Any], told: str
) -> None:
    # the Store said "metadatas[0] is not JSON-serialisable: Object of type bytes is not
    # JSON serializable", naming neither where nor how to write it
    for backend in (store, client):
        err = _refused(lambda b=backend: b.add_texts("parity", ["a note"], [metadata], ["m"]))
        assert (err.code, err.message) == ("invalid_input", told), backend
    assert store.get_texts("parity", ["m"]) == []


def test_a_nul_in_a_text_is_told_alike(store: Store, client: Client) -> None:
    # the Client sent one request's texts unchecked: the server's words for the whole
    # request came back, not the Store's for the text
    told = (
        "texts[1] holds a NUL character (\\u0000) at character 3, which PostgreSQL text "
        "cannot store; remove it"
    )
    for backend in (store, client):
        err = _refused(
            lambda b=backend: b.add_texts("parity", ["fine", "bad\x00text"], ids=["n1", "n2"])
        )
        assert (err.code, err.message) == ("invalid_input", told), backend
    assert store.get_texts("parity", ["n1", "n2"]) == []


async def test_the_mcp_search_takes_as_many_hits_by_default_as_the_store(store: Store) -> None:
    # the tool asked for 5 where Store.search, the Client and the CLI ask for 10, and the
    # docs say its k is as for Store.search
    from mcp import Client as McpClient

    async with McpClient(build_server(store)) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    default = inspect.signature(Store.search).parameters["k"].default
    assert tools["search"].input_schema["properties"]["k"]["default"] == default == 10


def test_the_openapi_schema_gives_list_documents_filters_their_caps(
    open_url: str, store: Store
) -> None:
    """The caps moved into the Store's check (``validation.document_filters``) and out of
    the schema: /openapi.json said nothing of them (a generated client sent 1,001
    characters and met a 422 its schema allowed). They are there again as ``maxLength``,
    and a longer value still gets the check's own problem, not pydantic's."""
    spec = httpx.get(f"{open_url}/openapi.json").json()
    params = spec["paths"]["/v1/collections/{name}/documents"]["get"]["parameters"]
    caps = {
        p["name"]: [b.get("maxLength") for b in p["schema"]["anyOf"] if b["type"] == "string"]
        for p in params
        if p["name"] in ("format", "source_prefix", "source")
    }
    assert caps == {"format": [50], "source_prefix": [1000], "source": [1000]}
    r = httpx.get(f"{open_url}/v1/collections/parity/documents", params={"format": "x" * 51})
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert (body["code"], body["detail"]) == (
        "invalid_input",
        "format is 51 characters, more than the 50 it may have; give a shorter one",
    ), body
    ok = httpx.get(f"{open_url}/v1/collections/parity/documents", params={"format": "x" * 50})
    assert ok.status_code == 200 and ok.json()["data"] == [], ok.text
