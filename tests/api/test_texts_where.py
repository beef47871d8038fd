"""``POST .../texts/query`` and ``.../texts/delete-where``: ``Store.text_ids`` and
``Store.delete_texts_where`` over HTTP (search's filter language; the delete in one
transaction), with the Client's and AsyncClient's verbs of the same names, on a real server
on loopback against the module's database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from ragstore import AsyncClient, Client, Store
from ragstore.auth import KeyStore
from ragstore.config import Settings
from ragstore.db import documents
from ragstore.errors import (
    CollectionNotFoundError,
    InputError,
    InvalidFilterError,
    PermissionDeniedError,
)
from tests.api.conftest import running_server, with_

IDS = ["a-db-24", "b-ops-23", "c-ops-24", "d-pets", "e-ops-22"]
METAS = [
    {"team": "db", "year": 2024},
    {"team": "ops", "year": 2023},
    {"team": "ops", "year": 2024},
    {"team": "pets"},
    {"team": "ops", "year": 2022},
]
OPS = {"team": "ops"}
BAD = {"team": {"$bogus": 1}}


def _fill(backend: Client | Store, name: str) -> None:
    dim = 384
    vectors = [[0.1 * (i + 1)] + [0.0] * (dim - 1) for i in range(len(IDS))]
    backend.add_texts(name, [f"Note {i}." for i in IDS], METAS, IDS, vectors=vectors)


@pytest.fixture(scope="module")
def store(settings: Settings) -> Iterator[Store]:
    with Store(settings=settings) as s:
        yield s


@pytest.fixture(scope="module")
def filled(open_url: str, store: Store) -> Iterator[Client]:
    with Client(open_url) as c:
        _fill(c, "where-read")
        yield c


def test_text_ids_over_http_are_the_stores(filled: Client, store: Store) -> None:
    for where, ids in (
        (OPS, None),
        (None, None),
        ({"year": {"$gte": 2024}}, None),
        (OPS, ["e-ops-22", "a-db-24", "c-ops-24", "unknown", "c-ops-24"]),
        (None, []),
        ({"$not": OPS}, ["d-pets", "b-ops-23"]),
    ):
        over_http = filled.text_ids("where-read", where=where, ids=ids)
        assert over_http == store.text_ids("where-read", where=where, ids=ids), (where, ids)
    assert filled.text_ids("where-read", where=OPS) == ["b-ops-23", "c-ops-24", "e-ops-22"]

    async def over_async() -> list[str]:
        async with AsyncClient(str(filled._http.base_url)) as ac:
            return await ac.text_ids("where-read", where=OPS, ids=["c-ops-24", "d-pets"])

    assert asyncio.run(over_async()) == ["c-ops-24"]


def test_the_query_route_pages_by_cursor(filled: Client, open_url: str) -> None:
    url = f"{open_url}/v1/collections/where-read/texts/query"
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        body = {"where": OPS, "limit": 2, **({"cursor": cursor} if cursor else {})}
        r = httpx.post(url, json=body)
        assert r.status_code == 200, r.text
        page = r.json()
        seen += page["data"]
        assert page["count"] == len(page["data"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert (seen, pages) == (["b-ops-23", "c-ops-24", "e-ops-22"], 2)
    full = httpx.post(url, json={"where": OPS, "limit": 3}).json()  # no cursor to an empty page
    assert (full["count"], full["next_cursor"]) == (3, None)
    r = httpx.post(url, json={"cursor": "not-a-cursor"})
    assert r.status_code == 422 and "invalid cursor" in r.json()["detail"]
    r = httpx.post(url, json={"limit": 0})
    assert r.status_code == 422


def test_a_texts_cursor_of_a_collection_made_again_is_refused(
    client: Client, open_url: str
) -> None:
    """Paged on across a deletion and re-creation of the name, the cursor went on into the
    new collection's texts (after the same id) as if they followed the old one's."""
    import base64

    url = f"{open_url}/v1/collections/texts-remade/texts/query"
    _fill(client, "texts-remade")
    first = httpx.post(url, json={"limit": 2}).json()
    assert first["data"] == IDS[:2] and first["next_cursor"]
    client.delete_collection("texts-remade")
    _fill(client, "texts-remade")  # the same ids, in another collection
    r = httpx.post(url, json={"limit": 2, "cursor": first["next_cursor"]})
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "cursor_stale"
    assert "list again from the first page" in r.json()["detail"]
    seen: list[str] = []  # from the first page again: every text once
    cursor = None
    while True:
        page = httpx.post(url, json={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        seen += page.json()["data"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == IDS
    # a cursor of the format before (no collection in it) is taken as it was
    old = base64.urlsafe_b64encode(f"text:{IDS[1]}".encode()).decode().rstrip("=")
    r = httpx.post(url, json={"limit": 2, "cursor": old})
    assert r.status_code == 200 and r.json()["data"] == IDS[2:4], r.text
    client.delete_collection("texts-remade")


def test_ids_over_one_request_are_asked_in_several_and_merged(filled: Client) -> None:
    # 10,000 ids is what one request holds: the Client asks the rest in a second one
    many = [f"zz-{i:05d}" for i in range(10_050)] + ["e-ops-22", "b-ops-23", "a-db-24"]
    assert filled.text_ids("where-read", where=OPS, ids=many) == ["b-ops-23", "e-ops-22"]


def test_delete_where_deletes_what_text_ids_lists_and_answers_the_ids(
    client: Client, open_url: str
) -> None:
    _fill(client, "where-delete")
    assert client.delete_texts_where("where-delete", where=OPS, ids=["c-ops-24", "d-pets"]) == [
        "c-ops-24"
    ]
    assert client.delete_texts_where("where-delete", where=OPS) == ["b-ops-23", "e-ops-22"]
    r = httpx.post(
        f"{open_url}/v1/collections/where-delete/texts/delete-where",
        json={"where": {"team": "pets"}},
    )
    assert r.status_code == 200 and r.json() == {"deleted": 1, "ids": ["d-pets"]}

    async def delete_the_rest() -> list[str]:
        async with AsyncClient(open_url) as ac:
            return await ac.delete_texts_where("where-delete")

    assert asyncio.run(delete_the_rest()) == ["a-db-24"]  # neither: every text
    assert client.get_collection("where-delete")["documents"] == 0  # the collection stays


def test_a_bad_filter_is_400_invalid_filter_and_deletes_nothing(
    filled: Client, open_url: str
) -> None:
    for route in ("query", "delete-where"):
        r = httpx.post(f"{open_url}/v1/collections/where-read/texts/{route}", json={"where": BAD})
        assert r.status_code == 400, (route, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "invalid_filter" and "$bogus" in r.json()["detail"]
    with pytest.raises(InvalidFilterError, match=r"\$bogus"):
        filled.text_ids("where-read", where=BAD)
    with pytest.raises(InvalidFilterError, match=r"\$bogus"):
        filled.delete_texts_where("where-read", where=BAD)
    assert filled.get_collection("where-read")["documents"] == len(IDS)


def test_a_delete_by_a_filter_that_restricts_nothing_is_refused_and_deletes_nothing(
    client: Client, store: Store, open_url: str
) -> None:
    """``where={}`` (a filter whose conditions all dropped out) deleted every text of the
    collection, as leaving ``where`` out does on purpose: it is refused, on every surface;
    with ``ids`` it restricts nothing beyond them, and only they go."""
    _fill(client, "where-empty")
    url = f"{open_url}/v1/collections/where-empty/texts/delete-where"
    r = httpx.post(url, json={"where": {}})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "invalid_filter"
    assert "restricts nothing" in r.json()["detail"] and "leave out where" in r.json()["detail"]
    with pytest.raises(InvalidFilterError, match="would empty collection 'where-empty'"):
        client.delete_texts_where("where-empty", where={})
    with pytest.raises(InvalidFilterError, match="restricts nothing"):
        store.delete_texts_where("where-empty", where={})
    assert client.text_ids("where-empty", where={}) == IDS  # listing by it is harmless
    assert client.get_collection("where-empty")["documents"] == len(IDS)
    assert client.delete_texts_where("where-empty", where={}, ids=["d-pets"]) == ["d-pets"]
    assert client.get_collection("where-empty")["documents"] == len(IDS) - 1


def test_an_unknown_collection_is_404(client: Client, open_url: str) -> None:
    for route in ("query", "delete-where"):
        r = httpx.post(f"{open_url}/v1/collections/no-such/texts/{route}", json={"where": OPS})
        assert r.status_code == 404 and r.json()["code"] == "collection_not_found", route
    with pytest.raises(CollectionNotFoundError):
        client.text_ids("no-such", where=OPS)
    with pytest.raises(CollectionNotFoundError):
        client.delete_texts_where("no-such")


def test_a_delete_over_one_requests_ids_is_refused_before_anything_is_sent() -> None:
    # split, a failure could stop it halfway: the one transaction the Store gives is kept
    with Client("http://127.0.0.1:9") as c:  # no server listens here
        with pytest.raises(InputError, match="in one request \\(one transaction\\)"):
            c.delete_texts_where("notes", where=OPS, ids=[f"t{i}" for i in range(10_001)])
        with pytest.raises(InputError, match="ids is one string"):
            c.delete_texts_where("notes", ids="abc")


@pytest.fixture(scope="module")
def secure_url(settings: Settings) -> Iterator[str]:
    with running_server(with_(settings, auth="on")) as url:
        yield url


def test_a_read_key_lists_but_does_not_delete(
    secure_url: str, keys: KeyStore, filled: Client
) -> None:
    with Client(secure_url, api_key=keys.create("read").secret) as reader:
        assert reader.text_ids("where-read", where=OPS) == ["b-ops-23", "c-ops-24", "e-ops-22"]
        with pytest.raises(PermissionDeniedError, match="needs 'write'"):
            reader.delete_texts_where("where-read", where=OPS)
    with Client(secure_url, api_key=keys.create("write", "other").secret) as elsewhere:
        with pytest.raises(PermissionDeniedError, match="limited to collection 'other'"):
            elsewhere.text_ids("where-read")
        with pytest.raises(PermissionDeniedError, match="limited to collection 'other'"):
            elsewhere.delete_texts_where("where-read")
    with Client(secure_url) as anonymous:
        r = anonymous._http.post("/v1/collections/where-read/texts/delete-where", json={})
        assert r.status_code == 401
    assert filled.get_collection("where-read")["documents"] == len(IDS)


def _waiting_on_a_source_lock(admin: psycopg.Connection[Any]) -> bool:
    """Whether a backend of this database waits for an advisory lock (a source's)."""
    row = admin.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND NOT l.granted AND a.datname = current_database()"
    ).fetchone()
    return bool(row and row[0])


def test_a_text_changed_while_the_delete_waits_for_it_is_deleted_only_if_it_still_matches(
    store: Store, settings: Settings
) -> None:
    """``delete_texts_where`` read the matching ids, then took their locks and deleted by
    id: a text whose writer (holding its lock) changed its metadata to fall outside the
    filter was deleted once the writer committed. The delete now checks the filter again
    under the locks. The interleaving is made by hand: a writer's transaction holds the
    text's lock and has changed its metadata when the delete starts, and commits once
    the delete waits for that lock."""
    store.add_texts("where-race", ["Kept by its writer.", "Deleted."], [OPS, OPS], ["keep", "go"])
    coll = store.runtime.collection("where-race")
    assert settings.database_url is not None
    url = settings.database_url.get_secret_value()
    with psycopg.connect(url) as writer, psycopg.connect(url, autocommit=True) as admin:
        documents.lock_sources(writer, coll.id, ["keep"])  # as write_documents does
        writer.execute(
            "UPDATE documents SET metadata = %s WHERE collection_id = %s AND source = 'keep'",
            (Jsonb({"team": "db"}), coll.id),
        )
        writer.execute(
            "UPDATE chunks SET metadata = %s WHERE document_id ="
            " (SELECT id FROM documents WHERE collection_id = %s AND source = 'keep')",
            (Jsonb({"team": "db"}), coll.id),
        )
        with ThreadPoolExecutor(max_workers=1) as pool:
            deleting = pool.submit(store.delete_texts_where, "where-race", where=OPS)
            end = time.monotonic() + 60
            while not _waiting_on_a_source_lock(admin):
                assert not deleting.done(), deleting.result()  # it read the old version
                assert time.monotonic() < end, "the delete never waited for the lock"
                time.sleep(0.05)
            writer.commit()
            assert deleting.result(timeout=60) == ["go"]
    assert store.text_ids("where-race") == ["keep"]
    assert store.get_texts("where-race", ["keep"])[0]["metadata"] == {"team": "db"}
