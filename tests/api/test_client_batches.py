"""The Client sends long lists of texts or ids in several requests within the API's limits
(10,000 items, RAGSTORE_MAX_REQUEST_BYTES), as the Store takes any number; a request that
fails after earlier ones stored says which ids were stored and which were not. Against a
real server on loopback, in collections of caller-given vectors (no model to run)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from ragstore import AsyncClient, Client
from ragstore import _requests as calls
from ragstore.config import Settings
from ragstore.errors import EmptyDocumentError, OutcomeUnknownError, RequestTooLargeError
from tests.api.conftest import running_server, with_

SMALL_BODY = 4096  # the server's RAGSTORE_MAX_REQUEST_BYTES in these tests


@pytest.fixture(scope="module")
def small_url(settings: Settings) -> Iterator[str]:
    """A server whose JSON bodies may be 4 KiB at most."""
    with running_server(with_(settings, auth="off", max_request_bytes=SMALL_BODY)) as url:
        yield url


def _vectors(n: int) -> list[list[float]]:
    return [[1.0, float(i)] for i in range(n)]


def _collection(client: Client, name: str) -> None:
    client.create_collection(name, model="their-model@1", dimension=2)


def test_more_ids_than_one_request_takes_are_read_and_deleted(open_url: str) -> None:
    # 10,001 ids were answered 422 (TextIds caps a request at 10,000): the LangChain and
    # LlamaIndex integrations over a Client failed so, where the Store read them all
    with Client(open_url) as client:
        _collection(client, "many-ids")
        stored = [f"k{i}" for i in range(5)]
        client.add_texts("many-ids", stored, ids=stored, vectors=_vectors(5))
        asked = ["k1", *(f"missing-{i}" for i in range(9_998)), "k0", "k4", "k3"]  # 10,002
        assert [t["id"] for t in client.get_texts("many-ids", asked)] == ["k1", "k0", "k4", "k3"]

        async def read() -> list[str]:
            async with AsyncClient(open_url) as ac:
                return [t["id"] for t in await ac.get_texts("many-ids", asked)]

        assert asyncio.run(read()) == ["k1", "k0", "k4", "k3"]
        assert client.delete_texts("many-ids", [*asked, "k2"]) == 5  # summed over requests
        assert client.get_texts("many-ids", stored) == []


def test_texts_over_the_servers_byte_limit_are_added_in_parts(small_url: str) -> None:
    # ~7 KiB of texts in one body was refused 413 by a server taking 4 KiB
    texts = [f"text {i} " + "x" * 600 for i in range(12)]
    with Client(small_url) as client:
        _collection(client, "wide")
        added = client.add_texts("wide", texts, vectors=_vectors(12))  # ids drawn
        assert (added["added"], len(set(added["ids"]))) == (12, 12)
        found = client.get_texts("wide", added["ids"])
        assert [t["text"] for t in found] == texts


def test_texts_are_packed_within_the_byte_limit_the_client_is_given(
    small_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calls, "MAX_REQUEST_BYTES", SMALL_BODY)
    sent: list[int] = []

    def count(request: httpx.Request) -> None:
        sent.append(len(request.content))

    texts = [f"text {i} " + "y" * 600 for i in range(12)]
    with Client(small_url) as client:
        _collection(client, "packed")
        client._http.event_hooks["request"].append(count)
        added = client.add_texts("packed", texts, vectors=_vectors(12))
        assert added["added"] == 12 and len(sent) > 1
        assert max(sent) <= SMALL_BODY  # none refused: no request needed halving


def test_a_later_request_failing_says_which_ids_were_stored(small_url: str) -> None:
    # a text the server's limit cannot take comes after three that fit: those are stored
    # and the error names them, and the ones not stored, rather than reading as a 413 for
    # the whole call
    ids = [f"a{i}" for i in range(6)]
    texts = ["one", "two", "three", "x" * (SMALL_BODY + 100), "five", "six"]
    with Client(small_url) as client:
        _collection(client, "partial")
        with pytest.raises(RequestTooLargeError) as failed:
            client.add_texts("partial", texts, ids=ids, vectors=_vectors(6))
        members = {"stored_ids": ids[:3], "not_stored_ids": ids[3:]}
        assert failed.value.problem_members == members
        assert failed.value.problem["stored_ids"] == ids[:3]  # type: ignore[attr-defined]
        assert "3 of the 6 texts" in str(failed.value)
        assert [t["id"] for t in client.get_texts("partial", ids)] == ids[:3]


class _NoAnswerForTheSecond(httpx.HTTPTransport):
    """Delivers every request; the second answer of a route ending in ``suffix`` is lost (a
    timeout after the server did the work)."""

    def __init__(self, suffix: str) -> None:
        super().__init__()
        self.suffix = suffix
        self.adds = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path.endswith(self.suffix):
            self.adds += 1
            if self.adds == 2:
                response.read()
                raise httpx.ReadTimeout("timed out", request=request)
        return response


def test_a_request_without_answer_is_neither_stored_nor_not_stored(
    open_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calls, "MAX_ITEMS_PER_REQUEST", 2)
    ids = [f"u{i}" for i in range(5)]
    # retries=0: sent again (an upsert), the lost request is simply stored
    with Client(open_url, transport=_NoAnswerForTheSecond("/texts"), retries=0) as client:
        _collection(client, "unknown")
        with pytest.raises(OutcomeUnknownError) as failed:
            client.add_texts("unknown", ids, ids=ids, vectors=_vectors(5))
        assert failed.value.problem_members == {
            "stored_ids": ids[:2],
            "unknown_ids": ids[2:4],
            "not_stored_ids": ids[4:],
        }
        assert [t["id"] for t in client.get_texts("unknown", ids)] == ids[:4]


def test_a_delete_failing_after_earlier_requests_names_what_they_deleted(
    open_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calls, "MAX_ITEMS_PER_REQUEST", 2)
    ids = [f"d{i}" for i in range(5)]
    with Client(open_url, transport=_NoAnswerForTheSecond("/texts/delete")) as client:
        _collection(client, "deleting")
        client.add_texts("deleting", ids, ids=ids, vectors=_vectors(5))
        with pytest.raises(OutcomeUnknownError) as failed:
            client.delete_texts("deleting", ids)
        assert failed.value.problem_members == {
            "deleted": 2,
            "deleted_ids": ids[:2],
            "unknown_ids": ids[2:4],
            "not_deleted_ids": ids[4:],
        }
        assert [t["id"] for t in client.get_texts("deleting", ids)] == ids[4:]


def test_a_bad_text_in_a_later_request_is_refused_before_any_is_sent(
    open_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calls, "MAX_ITEMS_PER_REQUEST", 2)
    ids = [f"b{i}" for i in range(5)]
    with Client(open_url) as client:
        _collection(client, "checked")
        with pytest.raises(EmptyDocumentError, match=r"texts\[4\] is empty"):
            client.add_texts("checked", ["a", "b", "c", "d", " "], ids=ids, vectors=_vectors(5))
        assert client.get_texts("checked", ids) == []


def test_a_bad_text_in_a_later_requests_bulk_load_fails_alone_and_is_named(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server whose requests go through the ingest's pipeline (bulk loads from 1 KiB)
    stores a request's texts but a bad one, wherever it sits: the client said the first
    ids of that request were stored, listing a stored one as not stored too and the bad
    one nowhere."""
    monkeypatch.setattr(calls, "MAX_REQUEST_BYTES", SMALL_BODY)
    ids = [f"b{i}" for i in range(12)]
    texts = [f"text {i} about topic {i} " + "word " * 110 for i in range(12)]
    texts[8] = "\u200b"  # passes the checks; its parse finds no words
    server = with_(settings, auth="off", max_request_bytes=SMALL_BODY, bulk_load_bytes=1024)
    with running_server(server) as url, Client(url) as client:
        with pytest.raises(EmptyDocumentError) as failed:
            client.add_texts("bulk-parts", texts, ids=ids)
        stored = [i for i in ids if i != "b8"]
        assert failed.value.problem_members == {"stored_ids": stored, "not_stored_ids": ["b8"]}
        assert [t["id"] for t in client.get_texts("bulk-parts", ids)] == stored
