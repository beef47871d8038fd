"""Large answers (search, texts/get, a document's chunks) are written as JSON on the worker
thread that built them, not by FastAPI on the event loop, and read the same as before."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from ragstore import Client
from ragstore.api.deps import Principal
from ragstore.api.routes import inspect, search, texts
from ragstore.config import Settings
from ragstore.runtime import Runtime
from ragstore.schemas import (
    ChunksPublic,
    SearchRequest,
    SearchResponse,
    TextIds,
    TextsPublic,
)
from ragstore.store import search_response

SECTIONS = 60
DOC = "\n\n".join(
    f"# Part {i}\n\nRollback step {i}: run `ragstore db downgrade` and check the logs {i}."
    for i in range(SECTIONS)
)
SEARCH = {"query": "rollback downgrade", "k": 1000, "context": 50, "explain": True}


@pytest.fixture(scope="module")
def settings(settings: Settings) -> Settings:
    """This module's servers and runtimes take an answer of ``SEARCH``'s size (up to
    101,000 chunks: the loop must stay free while it is written), over the default bound."""
    return settings.model_copy(update={"max_answer_chunks": 101_000})


@pytest.fixture(scope="module")
def filled(open_url: str) -> Iterator[tuple[str, int]]:
    """A collection ``big`` with one many-chunk document, texts ``t-0``..``t-49``; its
    document id."""
    with Client(open_url) as c:
        doc = c.add_document("big", "ops/runbook.md", DOC, metadata={"team": "ops", "n": None})
        c.add_texts("big", [f"text {i}" for i in range(50)], ids=[f"t-{i}" for i in range(50)])
        yield open_url, int(doc["id"])


def _without_timing(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "took_ms"}


def test_a_large_search_answer_is_the_stores_search_to_the_field(
    filled: tuple[str, int], settings: Settings
) -> None:
    """Same fields, same nulls, same values as the search the Store runs."""
    url, _ = filled
    r = httpx.post(f"{url}/v1/collections/big/search", json=SEARCH, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    got = r.json()
    assert got["count"] > 1 and got["data"][0]["context"]
    rt = Runtime(settings)
    try:
        want = search_response(rt, "big", SEARCH["query"], k=1000, context=50, explain=True)
    finally:
        rt.close()
    assert _without_timing(got) == _without_timing(want.model_dump(mode="json", by_alias=True))
    assert SearchResponse.model_validate(got).model_dump(mode="json") == got


def test_texts_and_chunks_answers_read_as_their_models(filled: tuple[str, int]) -> None:
    url, doc_id = filled
    r = httpx.post(f"{url}/v1/collections/big/texts/get", json={"ids": ["t-1", "t-7", "nope"]})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert TextsPublic.model_validate(r.json()).model_dump(mode="json") == r.json()
    assert [t["id"] for t in r.json()["data"]] == ["t-1", "t-7"]
    r = httpx.get(f"{url}/v1/collections/big/documents/{doc_id}/chunks", params={"limit": 2})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert ChunksPublic.model_validate(r.json()).model_dump(mode="json") == r.json()
    assert r.json()["count"] == 2 and r.json()["next_after"] is not None


def test_the_openapi_schema_still_documents_the_answers(filled: tuple[str, int]) -> None:
    url, _ = filled
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    ok = {
        ("/v1/collections/{name}/search", "post"): "SearchResponse",
        ("/v1/collections/{name}/texts/get", "post"): "TextsPublic",
        ("/v1/collections/{name}/texts/query", "post"): "TextIdsPage",
        ("/v1/collections/{name}/texts/delete-where", "post"): "TextsWhereDeleted",
        ("/v1/collections/{name}/documents/{document_id}/chunks", "get"): "ChunksPublic",
    }
    for (path, method), model in ok.items():
        schema = paths[path][method]["responses"]["200"]["content"]["application/json"]
        assert schema["schema"]["$ref"] == f"#/components/schemas/{model}"


def _endpoint(router: Any, path: str) -> Any:
    return next(r.endpoint for r in router.routes if isinstance(r, APIRoute) and r.path == path)


def test_the_routes_hand_fastapi_finished_bytes(
    filled: tuple[str, int], settings: Settings
) -> None:
    """FastAPI writes a returned model on the event loop (a ``def`` route's too); a returned
    ``Response`` it passes through. So each of these routes, called as FastAPI calls it,
    must return the body already written, from its worker thread."""
    _, doc_id = filled
    caller = Principal(None)
    rt = Runtime(settings)

    async def never() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client stays: no http.disconnect
        return {}

    request = Request({"type": "http", "method": "POST", "headers": []}, receive=never)
    run_search = _endpoint(search.router, "/v1/collections/{name}/search")
    try:
        answers = [
            asyncio.run(run_search("big", SearchRequest(**SEARCH), rt, caller, request)),
            _endpoint(texts.router, "/v1/collections/{name}/texts/get")(
                "big", TextIds(ids=["t-1"]), rt, caller
            ),
            _endpoint(inspect.router, "/v1/collections/{name}/documents/{document_id}/chunks")(
                "big", doc_id, rt, caller, after=None, limit=5
            ),
        ]
    finally:
        rt.close()
    for answer in answers:
        assert isinstance(answer, Response), type(answer)
        assert answer.media_type == "application/json" and answer.body.startswith(b"{")
