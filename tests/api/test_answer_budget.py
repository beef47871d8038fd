"""A search's answer is bounded (``RAGSTORE_MAX_ANSWER_CHUNKS``): ``k=1000, context=50``
(up to 101,000 chunks) held hundreds of megabytes of a server's memory for one request.
A search asking for more is refused before it runs, on every surface, with the request's
figures, the bound and the setting that raises it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from mcp import Client as McpClient

from ragstore import Client, Store
from ragstore.config import Settings
from ragstore.errors import AnswerTooLargeError
from ragstore.integrations.mcp import build_server
from tests.api.conftest import with_
from tests.conftest import run_cli

DOC = "\n\n".join(
    f"# Part {i}\n\nRollback step {i}: run `ragstore db downgrade` and check the logs."
    for i in range(5)
)
TOO_MANY = {"query": "rollback", "k": 1000, "context": 50, "mode": "fulltext"}
WORDS = ("101,000 chunks", "k=1000 hits, context=50", "20,000", "RAGSTORE_MAX_ANSWER_CHUNKS")


@pytest.fixture(scope="module")
def filled(open_url: str) -> str:
    """The server's URL, with a collection ``docs`` of one five-section document."""
    with Client(open_url) as c:
        c.add_document("docs", "ops/runbook.md", DOC)
    return open_url


def _says_all(text: str) -> None:
    for words in WORDS:
        assert words in text, (words, text)


def test_the_api_refuses_an_answer_over_the_bound_before_any_work(filled: str) -> None:
    """A 422 problem+json naming the figures; for a collection that does not exist too,
    so nothing was looked up in the database before the refusal."""
    for collection in ("docs", "ghost"):
        r = httpx.post(f"{filled}/v1/collections/{collection}/search", json=TOO_MANY)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "answer_too_large"
        _says_all(r.json()["detail"])
    section = {"query": "rollback", "k": 101, "context": "section", "mode": "fulltext"}
    r = httpx.post(f"{filled}/v1/collections/docs/search", json=section)
    assert r.status_code == 422 and r.json()["code"] == "answer_too_large", r.text
    assert "20,200 chunks" in r.json()["detail"] and "context='section'" in r.json()["detail"]


def test_the_default_bound_lets_any_k_up_to_100_through(filled: str) -> None:
    for context in (50, "section"):
        body = {"query": "rollback", "k": 100, "context": context, "mode": "fulltext"}
        r = httpx.post(f"{filled}/v1/collections/docs/search", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["count"] >= 1 and r.json()["data"][0]["context"]


def test_the_client_raises_its_class(filled: str) -> None:
    with Client(filled) as c, pytest.raises(AnswerTooLargeError) as exc:
        c.search("docs", "rollback", k=1000, context=50, mode="fulltext")
    _says_all(str(exc.value))


@pytest.fixture(scope="module")
def store(settings: Settings, filled: str) -> Iterator[Store]:
    with Store(settings=settings) as s:
        yield s


def test_the_store_refuses_it_and_answers_once_the_setting_is_raised(
    store: Store, settings: Settings
) -> None:
    with pytest.raises(AnswerTooLargeError) as exc:
        store.search("docs", "rollback", k=1000, context=50, mode="fulltext")
    _says_all(str(exc.value))
    with pytest.raises(AnswerTooLargeError) as exc:  # a NumPy integer is a k all the same
        store.search("docs", "rollback", k=np.int64(1000), context=50, mode="fulltext")
    _says_all(str(exc.value))
    with Store(settings=with_(settings, max_answer_chunks=101_000)) as raised:
        found = raised.search("docs", "rollback", k=1000, context=50, mode="fulltext")
    assert found["count"] >= 1 and found["data"][0]["context"]


async def test_an_mcp_search_over_the_bound_is_a_tool_error(store: Store) -> None:
    async with McpClient(build_server(store)) as session:
        result: Any = await session.call_tool(
            "search", {"collection": "docs", "query": "rollback", "k": 1000, "context": 50}
        )
    assert result.is_error
    text = str(result.content[0].text)
    assert "error[answer_too_large]: " in text
    _says_all(text)


@pytest.mark.parametrize("through_server", [False, True])
def test_the_cli_exits_65_with_the_figures(
    filled: str,
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    through_server: bool,
) -> None:
    if through_server:
        monkeypatch.setenv("RAGSTORE_URL", filled)
    status = run_cli(
        "search", "rollback", "-c", "docs", "-k", "1000", "--context", "50", "--mode", "fulltext"
    )
    err = capsys.readouterr().err
    assert status == 65, err
    assert "error[answer_too_large]: " in err
    _says_all(" ".join(err.split()))
