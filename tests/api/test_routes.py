"""Every route of the API over real HTTP (auth off), and the error each can answer."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import psycopg
import pytest

from ragstore import AsyncClient, Client
from ragstore.config import Settings
from ragstore.db.repository import check_name
from ragstore.errors import (
    BinaryFileError,
    CollectionNotFoundError,
    ConflictError,
    CursorStaleError,
    DocumentNotFoundError,
    EmptyDocumentError,
    InputError,
    InvalidFilterError,
    JobNotFoundError,
    MethodNotAllowedError,
    MigrationStateError,
    ModelNotFoundError,
    NotFoundError,
)
from tests.api.conftest import running_server, with_

ROLLBACK = "# Rollback\n\nTo roll back a migration run `ragstore db downgrade --to REV`.\n"
KITTENS = "# Kittens\n\nKittens sleep most of the day and play at night.\n"


@pytest.fixture(scope="module")
def docs(open_url: str) -> Iterator[Client]:
    """A collection ``docs`` with two documents."""
    with Client(open_url) as c:
        c.create_collection("docs", settings={"purpose": "tests"})
        c.add_document("docs", "ops/rollback.md", ROLLBACK, metadata={"team": "ops"})
        c.add_document("docs", "pets/kittens.md", KITTENS, metadata={"team": "pets"})
        yield c


def test_healthz_answers_ok(client: Client) -> None:
    health = client.health()
    assert health["status"] == "ok"
    assert set(health["limits"]) == {"max_upload_bytes", "max_upload_files", "max_request_bytes"}


def test_readyz_reports_each_check(client: Client, docs: Client) -> None:
    ready = client.ready()
    assert ready["status"] == "ready"
    assert ready["checks"]["database"] == "ok"
    assert ready["checks"]["models"] == "1 collection(s) validated"


def test_created_collection_is_listed_with_its_model_and_counts(docs: Client) -> None:
    listed = {c["name"]: c for c in docs.list_collections()}
    assert listed["docs"]["model"].startswith("all-MiniLM-L6-v2@")
    assert listed["docs"]["dimension"] == 384
    assert listed["docs"]["documents"] == 2
    assert docs.get_collection("docs")["settings"] == {"purpose": "tests"}


def test_creating_an_existing_collection_is_a_conflict(docs: Client) -> None:
    with pytest.raises(ConflictError, match="already exists"):
        docs.create_collection("docs")


def test_unknown_model_is_model_not_found(client: Client) -> None:
    with pytest.raises(ModelNotFoundError, match="no pinned model 'nope'; pinned: "):
        client.create_collection("other", model="nope")


def test_unknown_collection_is_collection_not_found(client: Client) -> None:
    with pytest.raises(CollectionNotFoundError, match="'missing' does not exist"):
        client.get_collection("missing")
    with pytest.raises(CollectionNotFoundError):
        client.search("missing", "anything")


def test_adding_a_document_creates_its_collection_as_ingest_does(client: Client) -> None:
    doc = client.add_document("made-by-add", "a.md", "# A\n\nsome text")
    assert doc["status"] == "added"
    assert client.get_collection("made-by-add")["documents"] == 1
    client.delete_collection("made-by-add")


def test_added_document_reports_its_chunks_and_name(docs: Client) -> None:
    page = docs.list_documents("docs")
    names = sorted(d["name"] for d in page["data"])
    assert names == ["ops/rollback.md", "pets/kittens.md"]
    doc = next(d for d in page["data"] if d["name"] == "ops/rollback.md")
    assert doc["chunks"] == 2 and doc["format"] == "markdown" and doc["title"] == "Rollback"
    assert doc["metadata"]["team"] == "ops"
    assert docs.get_document("docs", doc["id"])["content_hash"] == doc["content_hash"]


def test_re_adding_unchanged_text_is_skipped_and_changed_text_updates(docs: Client) -> None:
    again = docs.add_document("docs", "ops/rollback.md", ROLLBACK, metadata={"team": "ops"})
    assert again["status"] == "unchanged"
    changed = docs.add_document(
        "docs", "ops/rollback.md", ROLLBACK + "\nAlso see backups.\n", metadata={"team": "ops"}
    )
    assert changed["status"] == "updated" and changed["id"] == again["id"]
    assert (
        docs.add_document("docs", "ops/rollback.md", ROLLBACK, metadata={"team": "ops"})["status"]
        == "updated"
    )


def test_re_adding_unchanged_text_with_new_metadata_updates_it(docs: Client) -> None:
    """Same name, same text, other metadata: stored with the new metadata (it was
    answered 201 and the old metadata kept, so a filter on the new value found nothing)."""
    docs.add_document("docs", "ops/owners.md", "# Owners\n\nPager duty.", metadata={"team": "a"})
    moved = docs.add_document(
        "docs", "ops/owners.md", "# Owners\n\nPager duty.", metadata={"team": "b"}
    )
    assert moved["status"] == "updated"
    assert docs.get_document("docs", moved["id"])["metadata"]["team"] == "b"
    found = docs.search("docs", "pager duty", k=5, where={"team": "b"})
    assert [h["source"].rsplit("/", 1)[-1] for h in found["data"]] == ["owners.md"]
    docs.delete_document("docs", moved["id"])


def test_search_finds_the_matching_document(docs: Client) -> None:
    result = docs.search("docs", "how do I undo a schema migration?", k=2)
    assert result["count"] == 2
    assert result["data"][0]["source"].endswith("ops/rollback.md")
    assert result["data"][0]["score"] >= result["data"][1]["score"]


def test_search_modes_and_filters_pass_through(docs: Client) -> None:
    vector = docs.search("docs", "sleepy cats", k=1, mode="vector")
    assert vector["data"][0]["source"].endswith("kittens.md")
    text = docs.search("docs", "kittens", k=5, mode="fulltext")
    assert [h["source"].rsplit("/", 1)[-1] for h in text["data"]] == ["kittens.md"]
    ops_only = docs.search("docs", "kittens", k=5, where={"team": "ops"})
    assert all(h["source"].endswith("rollback.md") for h in ops_only["data"])


def test_fields_list_what_a_filter_can_name(docs: Client, open_url: str) -> None:
    """GET /v1/collections/{name}/fields: the built-ins and the documents' metadata paths
    (``team`` as written, and what the parser added, like ``language``), the same through
    the async client; a missing collection is collection_not_found."""
    from ragstore import AsyncClient

    got = docs.fields("docs")
    paths = {m["field"]: m for m in got["metadata"]}
    assert sorted(paths["team"]["examples"]) == ["ops", "pets"]
    assert paths["team"]["documents"] == 2 and paths["team"]["indexed"] == []
    assert "source" in {b["field"] for b in got["builtins"]}
    assert got["sampled"]["documents"] == 2

    async def fields() -> dict[str, object]:
        async with AsyncClient(open_url) as a:
            return await a.fields("docs")

    assert asyncio.run(fields()) == got
    with pytest.raises(CollectionNotFoundError):
        docs.fields("nope")


def test_a_field_is_indexed_listed_and_dropped_over_http(docs: Client, open_url: str) -> None:
    """POST, GET and DELETE /v1/field-indexes: 201 when built, 200 when it already was,
    the field then marked indexed in the collection's fields; a prefixed path or an unknown
    type is a 422 problem; dropping twice changes nothing the second time."""
    assert docs.index_field("team", "string") == {
        "field": "team",
        "type": "string",
        "indexed": True,
        "changed": True,
    }
    try:
        assert {"field": "team", "type": "string"} in docs.field_indexes()
        paths = {m["field"]: m for m in docs.fields("docs")["metadata"]}
        assert paths["team"]["indexed"] == ["string"]
        with httpx.Client(base_url=open_url, timeout=60) as h:
            again = h.post("/v1/field-indexes", json={"field": "team", "type": "string"})
            assert again.status_code == 200 and again.json()["changed"] is False
            prefixed = h.post("/v1/field-indexes", json={"field": "chunk.team", "type": "string"})
            assert prefixed.status_code == 422
            assert prefixed.headers["content-type"].startswith("application/problem+json")
            assert "not a metadata path" in prefixed.json()["detail"]
            typed = h.post("/v1/field-indexes", json={"field": "team", "type": "date"})
            assert typed.status_code == 422
        assert docs.search("docs", "kittens", k=5, where={"team": {"$gte": "p"}})["count"] >= 1
    finally:
        dropped = docs.drop_field_index("team", "string")
    assert dropped == {"field": "team", "type": "string", "indexed": False, "changed": True}
    assert docs.drop_field_index("team", "string")["changed"] is False
    assert docs.field_indexes() == []


def test_invalid_search_input_is_invalid_input(docs: Client) -> None:
    with pytest.raises(InputError, match="k"):
        docs.search("docs", "x", k=0)
    with pytest.raises(InputError, match="mode"):
        docs.search("docs", "x", mode="psychic")
    # the schema's bound is the engine's (it said 1000; the engine refuses over 100)
    with pytest.raises(InputError, match=r"vector_weight: Input should be less than or equal"):
        docs.search("docs", "x", mode="hybrid", vector_weight=101)


def test_bad_where_filter_is_invalid_filter(docs: Client) -> None:
    with pytest.raises(InvalidFilterError):
        docs.search("docs", "x", where={"$nonsense": {"$gt": []}})


def test_documents_page_by_cursor_without_gaps_or_repeats(client: Client) -> None:
    c = client
    c.create_collection("paged")
    for i in range(5):
        c.add_document("paged", f"n{i}.txt", f"note number {i} about topic {i}")
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        page = c.list_documents("paged", cursor=cursor, limit=2)
        seen += [d["id"] for d in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 5 and len(set(seen)) == 5 and seen == sorted(seen)
    assert [d["id"] for d in c.iter_documents("paged", page_size=3)] == seen
    # a page exactly full is the last when no row follows: it answered a cursor to an
    # empty page; one row more, and the cursor's page holds that row alone
    assert c.list_documents("paged", limit=5)["next_cursor"] is None
    first = c.list_documents("paged", limit=4)
    last = c.list_documents("paged", limit=4, cursor=first["next_cursor"])
    assert [d["id"] for d in last["data"]] == seen[4:] and last["next_cursor"] is None


def test_a_documents_cursor_of_a_collection_made_again_is_refused(client: Client) -> None:
    """Paged on across a deletion and re-creation of the name, the cursor went on into the
    new collection's documents (their ids follow the old ones') as if they followed."""
    from ragstore.paging import encode_cursor

    for i in range(3):
        client.add_document("remade", f"old{i}.txt", f"old note {i}")
    first = client.list_documents("remade", limit=2)
    client.delete_collection("remade")
    for i in range(3):
        client.add_document("remade", f"new{i}.txt", f"new note {i}")
    with pytest.raises(CursorStaleError, match="list again from the first page") as err:
        client.list_documents("remade", cursor=first["next_cursor"], limit=2)
    assert err.value.code == "cursor_stale"
    ids = [d["id"] for d in client.list_documents("remade", limit=3)["data"]]
    # a cursor of no collection (`ragstore documents list --after ID` makes one) is taken
    page = client.list_documents("remade", cursor=encode_cursor(ids[0]), limit=3)
    assert [d["id"] for d in page["data"]] == ids[1:]
    client.delete_collection("remade")


def test_a_collection_deleted_mid_listing_leaves_no_page_empty(
    client: Client, open_url: str, settings: Settings
) -> None:
    """A collection deleted after the listing read its name but before its details was
    skipped, and a page whose every collection went so came back empty with a cursor:
    clients that stop at an empty page missed the collections after it. The server now
    reads the next names in its place. The race, made exact with a second connection:
    it holds embedding_models (which the details read joins, the names read does not)
    until the listing waits on it, deletes the first collection, and commits."""
    import threading
    import time

    from ragstore.db import catalog, repository
    from ragstore.paging import encode_name_cursor

    for name in ("race-1", "race-2", "race-3"):
        client.create_collection(name)
    params = {"limit": "1", "cursor": encode_name_cursor("race-0")}
    answers: list[httpx.Response] = []
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url.get_secret_value()) as other:
        other.execute("LOCK TABLE embedding_models IN ACCESS EXCLUSIVE MODE")
        listing = threading.Thread(
            target=lambda: answers.append(httpx.get(f"{open_url}/v1/collections", params=params))
        )
        listing.start()
        deadline = time.monotonic() + 30
        while not other.execute(  # the listing waits (its query is not yet in pg_stat_activity)
            "SELECT 1 FROM pg_locks WHERE relation = 'embedding_models'::regclass AND NOT granted"
        ).fetchone():
            assert time.monotonic() < deadline, "the listing never waited on the lock"
            time.sleep(0.02)
        catalog.delete_collection(other, repository.get_collection(other, "race-1"))
    listing.join(timeout=30)
    page = answers[0].json()
    assert [c["name"] for c in page["data"]] == ["race-2"] and page["count"] == 1
    nxt = httpx.get(f"{open_url}/v1/collections", params={**params, "cursor": page["next_cursor"]})
    assert [c["name"] for c in nxt.json()["data"]][:1] == ["race-3"]


def test_collections_page_by_cursor_and_the_client_follows_it(
    client: Client, open_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``GET /v1/collections`` answered every collection at once: now ``limit`` (default
    100, at most 1000) at a time in name order with an opaque ``next_cursor``, null on the
    last page; the Client's ``list_collections`` still returns them all, page by page."""
    from ragstore import _requests

    for name in ("pg-c", "pg-a", "pg-e", "pg-b", "pg-d"):
        client.create_collection(name)
    everything = httpx.get(f"{open_url}/v1/collections").json()
    assert everything["next_cursor"] is None  # a short list: one page, as before
    names = [c["name"] for c in everything["data"]]
    assert names == sorted(names) and everything["count"] == len(names) >= 5
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = httpx.get(f"{open_url}/v1/collections", params=params).json()
        assert page["count"] == len(page["data"]) <= 2
        seen += [c["name"] for c in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == names and pages == (len(names) + 1) // 2
    full = httpx.get(f"{open_url}/v1/collections", params={"limit": str(len(names))}).json()
    assert full["count"] == len(names) and full["next_cursor"] is None  # no empty page after
    first = httpx.get(f"{open_url}/v1/collections", params={"limit": str(len(names) - 1)})
    params = {"limit": str(len(names) - 1), "cursor": first.json()["next_cursor"]}
    last = httpx.get(f"{open_url}/v1/collections", params=params).json()
    assert [c["name"] for c in last["data"]] == names[-1:] and last["next_cursor"] is None
    for bad in ("limit=0", "limit=1001", "limit=x", "cursor=abc", "cursor=aWQ6NQ"):
        r = httpx.get(f"{open_url}/v1/collections?{bad}")  # aWQ6NQ: a documents cursor
        assert r.status_code == 422 and r.json()["code"] == "invalid_input", (bad, r.text)
    monkeypatch.setattr(_requests, "COLLECTIONS_PAGE", 2)  # the client, page by page
    assert [c["name"] for c in client.list_collections()] == names

    async def listed_async() -> list[str]:
        async with AsyncClient(open_url) as ac:
            return [c["name"] for c in await ac.list_collections()]

    assert asyncio.run(listed_async()) == names


@pytest.mark.parametrize(
    ("path", "takes"),
    [
        ("/v1/collections?limt=5", "it takes cursor, limit"),
        ("/v1/collections/docs?verbose=1", "it takes none"),
        ("/v1/jobs?colection=docs", "it takes collection, cursor, limit, status"),
    ],
)
def test_an_unknown_query_parameter_is_refused_naming_it(
    docs: Client, open_url: str, path: str, takes: str
) -> None:
    """Every route ignored a query parameter it does not take, so a misspelt ``limit`` or
    filter answered the whole list as if it had not been sent; now 422 names it and what
    the route takes, as a body's unknown field always was. The probes take any."""
    r = httpx.get(f"{open_url}{path}")
    assert r.status_code == 422 and r.json()["code"] == "invalid_input", r.text
    unknown = path.split("?")[1].split("=")[0]
    assert f"unknown query parameter {unknown!r}" in r.json()["detail"]
    assert takes in r.json()["detail"]
    assert httpx.get(f"{open_url}/healthz?probe=1").status_code == 200


def test_document_filters_by_metadata_format_and_prefix(docs: Client) -> None:
    ops = docs.list_documents("docs", metadata={"team": "ops"})["data"]
    assert [d["name"] for d in ops] == ["ops/rollback.md"]
    assert docs.list_documents("docs", format="pdf")["count"] == 0
    pets = docs.list_documents("docs", source_prefix="pets/")["data"]
    assert [d["name"] for d in pets] == ["pets/kittens.md"]


def test_bad_metadata_filter_and_cursor_are_refused(docs: Client) -> None:
    with pytest.raises(InvalidFilterError, match="not valid JSON"):
        docs.request("GET", "/v1/collections/docs/documents", params={"metadata": "{nope"})
    with pytest.raises(InputError, match="invalid cursor"):
        docs.list_documents("docs", cursor="garbage!")


def test_upload_multipart_files_ingests_them(docs: Client) -> None:
    out = docs.upload(
        "docs",
        [
            ("guide.md", b"# Guide\n\nUploading files works.\n"),
            ("notes.txt", b"plain text notes about uploads"),
        ],
        metadata={"batch": 1},
    )
    assert [d["name"] for d in out["data"]] == ["guide.md", "notes.txt"]
    assert all(d["status"] == "added" and d["metadata"]["batch"] == 1 for d in out["data"])


def test_upload_of_an_unknown_format_that_is_empty_or_binary_says_so(docs: Client) -> None:
    with pytest.raises(EmptyDocumentError, match=r"data\.xyz: the file is empty"):
        docs.upload("docs", [("data.xyz", b"")])
    with pytest.raises(BinaryFileError, match=r"unsupported binary file type '\.xyz'"):
        docs.upload("docs", [("data.xyz", b"\x00\x01\x02 not a known format")])


def test_binary_bytes_named_as_text_are_binary_file(docs: Client) -> None:
    with pytest.raises(BinaryFileError):
        docs.upload("docs", [("fake.txt", bytes(range(256)) * 8)])


def test_blank_text_is_empty_document(docs: Client) -> None:
    with pytest.raises(EmptyDocumentError):
        docs.add_document("docs", "blank.md", "   \n\n  ")


def test_unsafe_document_names_are_refused(docs: Client) -> None:
    for bad in ("../escape.md", "/etc/passwd", "a/../../b.md"):
        with pytest.raises(InputError, match="invalid document name"):
            docs.add_document("docs", bad, "text")


def test_an_unknown_or_repeated_upload_field_is_refused_naming_it(open_url: str) -> None:
    # the form's unknown fields were ignored and a field given twice kept its last value:
    # an upload whose metadata was misspelt, or sent twice, was stored without it (or with
    # the last only) and answered 201, where the JSON route refuses an unknown field
    url = f"{open_url}/v1/collections/formfields/documents/upload"
    part = [("files", ("f.md", b"# F\n\nform fields"))]
    cases = [
        ({"meta": '{"team": "ops"}'}, "unknown form field 'meta'"),
        ({"metadata": ['{"team": "ops"}', '{"team": "dev"}']}, "'metadata' is given 2 times"),
        ({"background": ["true", "false"]}, "'background' is given 2 times"),
    ]
    with httpx.Client(timeout=60) as http:
        for data, said in cases:
            r = http.post(url, files=part, data=data)
            assert r.status_code == 422, (data, r.text)
            assert said in r.json()["detail"], r.json()
        # a file part without a file name: it was pydantic's "Expected UploadFile"
        bare = b'--b\r\nContent-Disposition: form-data; name="files"\r\n\r\nhi\r\n--b--\r\n'
        r = http.post(
            url, content=bare, headers={"content-type": "multipart/form-data; boundary=b"}
        )
        assert r.status_code == 422, r.text
        assert "part 0 of field 'files' (counting from 0) has no file name" in r.json()["detail"]
        r = http.get(f"{open_url}/v1/collections/formfields")
        assert r.status_code == 404, r.text  # nothing stored, no collection made
        r = http.post(url, files=part, data={"metadata": '{"team": "ops"}'})
        assert r.status_code == 201, r.text
        assert r.json()["data"][0]["metadata"]["team"] == "ops"


def test_a_refused_write_creates_no_collection(client: Client) -> None:
    # the upload route created a missing collection before it read the files' names: a
    # 422 for a bad or repeated name left a new, empty collection behind
    with pytest.raises(InputError, match="invalid document name"):
        client.upload("fresh", [("../escape.md", b"# E\n\ntext")])
    with pytest.raises(InputError, match="appears twice"):
        client.upload("fresh", [("a.md", b"# A\n\none"), ("a.md", b"# A\n\ntwo")])
    # as a job it was accepted (202), and the job then failed on the repeated name
    with pytest.raises(InputError, match="appears twice"):
        twice = [("a.md", b"# A\n\none"), ("a.md", b"# A\n\ntwo")]
        client.upload("fresh", twice, background=True)
    # so did a blank document and add_texts refused for its ids, lengths or vectors
    with pytest.raises(EmptyDocumentError):
        client.add_document("fresh", "blank.md", "  \n\n ")
    with pytest.raises(InputError, match="appears twice"):
        client.add_texts("fresh", ["one", "two"], ids=["a", "a"])
    with pytest.raises(InputError, match="metadatas has 1 entries for 2 texts"):
        client.add_texts("fresh", ["one", "two"], metadatas=[{}])
    with pytest.raises(InputError, match="collection's dimension"):
        client.add_texts("fresh", ["one"], vectors=[[0.5, 0.5]])
    with pytest.raises(CollectionNotFoundError):
        client.get_collection("fresh")


def test_deleted_document_is_gone_with_its_chunks(docs: Client, settings: Settings) -> None:
    doc = docs.add_document("docs", "tmp/gone.md", "# Gone\n\nThis will be deleted.\n")
    docs.delete_document("docs", doc["id"])
    with pytest.raises(DocumentNotFoundError):
        docs.get_document("docs", doc["id"])
    with pytest.raises(DocumentNotFoundError, match="is not in collection 'docs'"):
        docs.delete_document("docs", doc["id"])
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        left = conn.execute(
            "SELECT count(*) FROM chunks WHERE document_id = %s", (doc["id"],)
        ).fetchone()
    assert left == (0,)


def test_deleting_a_document_leaves_the_file_it_was_read_from(
    docs: Client, settings: Settings
) -> None:
    """The API's delete removed the file of a document whose source lay under
    ``<data dir>/uploads/<collection>``, where uploads were once written; nothing writes
    there now, and a file of the user's own there, ingested from disk, was deleted with
    its document (the Store's and the CLI's delete leave files alone)."""
    from ragstore.ingest import ingest_paths
    from ragstore.runtime import Runtime

    own = settings.data_dir / "uploads" / "docs" / "mine" / "own.md"
    own.parent.mkdir(parents=True, exist_ok=True)
    own.write_text("# Mine\n\nA note of my own, kept on my disk.\n")
    with Runtime(settings) as rt:
        report = ingest_paths(rt, [own], "docs")
    assert [o.status for o in report.outcomes] == ["added"], report.outcomes
    # under the upload root, it is answered as an upload is: by its name there
    doc = next(d for d in docs.list_documents("docs")["data"] if d["source"] == "mine/own.md")
    docs.delete_document("docs", doc["id"])
    with pytest.raises(DocumentNotFoundError):
        docs.get_document("docs", doc["id"])
    assert own.read_text().startswith("# Mine"), "the user's file was deleted"


def test_deleted_collection_drops_its_embeddings_table(client: Client, settings: Settings) -> None:
    c = client
    c.create_collection("doomed")
    c.add_document("doomed", "a.md", "# A\n\nsome text")
    table = c.model_status("doomed")["spaces"][0]["table"]
    c.delete_collection("doomed")
    with pytest.raises(CollectionNotFoundError):
        c.get_collection("doomed")
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    assert exists == (False,)


def test_models_list_pins_and_status_shows_spaces(docs: Client) -> None:
    models = docs.list_models()
    mini = next(m for m in models if m["name"] == "all-MiniLM-L6-v2")
    assert "docs" in mini["collections"] and mini["checksum"].startswith("sha256:")
    status = docs.model_status("docs")
    assert status["active_model"] == f"{mini['name']}@{mini['revision']}"
    active = [s for s in status["spaces"] if s["status"] == "active"]
    assert len(active) == 1 and active[0]["embedded"] > 0


def test_unknown_job_is_job_not_found(client: Client) -> None:
    with pytest.raises(JobNotFoundError):
        client.get_job(999_999)


def test_unknown_route_and_method_are_problems(client: Client) -> None:
    c = client
    with pytest.raises(NotFoundError, match="no route"):
        c.request("GET", "/v1/nothing-here")
    with pytest.raises(MethodNotAllowedError):
        c.request("PUT", "/v1/collections")


def test_errors_are_problem_json_with_request_id(open_url: str) -> None:
    r = httpx.get(f"{open_url}/v1/collections/missing", headers={"X-Request-ID": "req-42"})
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["x-request-id"] == "req-42"
    body = r.json()
    assert body == {
        "type": "urn:ragstore:problem:collection_not_found",
        "title": "Collection not found",
        "status": 404,
        "detail": body["detail"],
        "code": "collection_not_found",
        "instance": "/v1/collections/missing",
        "request_id": "req-42",
    }
    assert "Traceback" not in r.text


def test_validation_errors_list_each_field(open_url: str) -> None:
    r = httpx.post(f"{open_url}/v1/collections/docs/search", json={"query": 5, "k": "many"})
    body = r.json()
    assert r.status_code == 422 and body["code"] == "invalid_input"
    assert {e["loc"] for e in body["errors"]} >= {"body.query", "body.k"}


def test_a_body_not_sent_as_json_says_to_send_json(open_url: str) -> None:
    url = f"{open_url}/v1/collections/docs/search"
    r = httpx.post(url, content=b"rollback", headers={"Content-Type": "text/plain"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_input"
    assert "sent as text/plain: send JSON with Content-Type: application/json" in r.json()["detail"]
    # a JSON body that is not an object is the caller's JSON, not its content type
    r = httpx.post(url, json=[1])
    assert r.status_code == 422 and "Content-Type" not in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            '{"query": "x", "where": '
            + '{"$and": [' * 1000
            + '{"team": "ops"}'
            + "]}" * 1000
            + "}",
            "the JSON body is nested too deeply to be read",
        ),
        ('{"query": "x", "where": {"year": ' + "9" * 5000 + "}}", "more than 4300 digits"),
    ],
    ids=["nested-1000-deep", "5000-digit-integer"],
)
def test_a_json_body_the_parser_cannot_take_says_why(open_url: str, body: str, says: str) -> None:
    """Valid JSON the parser still refuses (Python's recursion or integer-digits limit)
    was answered "There was an error parsing the body": nothing of what or how to fix."""
    r = httpx.post(
        f"{open_url}/v1/collections/docs/search",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["code"] == "invalid_input"
    assert says in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"query": "caf\xe9"}', "not UTF-8 text: the byte 0xe9 at byte 14 cannot be decoded"),
        (
            b"\xff\xfe{",
            "not UTF-16-LE text (the encoding its first bytes suggest): the byte 0x7b at byte 2",
        ),
        (b"\xff\xfe", "the body is not valid JSON: Expecting value (the body holds nothing"),
        (b'{"query": "x",\n "k": }', "Expecting value at line 2, column 7 (character 21)"),
    ],
    ids=["latin-1", "utf-16-bom-then-junk", "bom-alone", "syntax"],
)
def test_a_json_body_that_is_not_utf8_json_says_what_and_where(
    open_url: str, body: bytes, says: str
) -> None:
    """Bytes that are not UTF-8 were answered "There was an error parsing the body", a
    syntax error "body.21: JSON decode error": neither said what was wrong or how to fix."""
    r = httpx.post(
        f"{open_url}/v1/collections/docs/search",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["code"] == "invalid_input"
    assert r.headers["content-type"] == "application/problem+json"
    assert says in r.json()["detail"], r.json()["detail"]
    assert "Content-Type: application/json" in r.json()["detail"]


def test_a_json_body_naming_a_key_twice_is_refused(open_url: str, docs: Client) -> None:
    # the parser kept the last of a repeated key: this searched team = nobody, silently
    for body, key in (
        (
            b'{"query": "kittens", "where": {"team": "pets", "team": "nobody"}}',
            "team",
        ),
        (b'{"query": "kittens", "k": 1, "k": 1000}', "k"),
    ):
        r = httpx.post(
            f"{open_url}/v1/collections/docs/search",
            content=body,
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        assert r.status_code == 422 and r.json()["code"] == "invalid_input", r.text[:300]
        assert f"names the key {key!r} twice" in r.json()["detail"]
    # the same key in different objects is fine
    ok = b'{"query": "kittens", "where": {"$and": [{"team": "pets"}, {"team": "pets"}]}}'
    r = httpx.post(
        f"{open_url}/v1/collections/docs/search",
        content=ok,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 200 and r.json()["count"] >= 1, r.text[:300]


def test_openapi_document_has_every_resource_and_examples(open_url: str) -> None:
    spec = httpx.get(f"{open_url}/openapi.json").json()
    paths = set(spec["paths"])
    assert {
        "/v1/collections",
        "/v1/collections/{name}",
        "/v1/collections/{name}/documents",
        "/v1/collections/{name}/documents/upload",
        "/v1/collections/{name}/search",
        "/v1/models",
        "/v1/collections/{name}/model",
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/healthz",
        "/readyz",
    } <= paths
    create = spec["components"]["schemas"]["CollectionCreate"]["properties"]["name"]
    assert create["examples"] == ["handbook"]
    search_404 = spec["paths"]["/v1/collections/{name}/search"]["post"]["responses"]["404"]
    assert "application/problem+json" in search_404["content"]


def test_model_migrate_and_rollback_refuse_what_cannot_be_done(docs: Client) -> None:
    active = docs.model_status("docs")["active_model"]
    with pytest.raises(MigrationStateError, match="already uses"):
        docs.migrate_model("docs", active)
    with pytest.raises(ModelNotFoundError):
        docs.migrate_model("docs", "no-such-model")
    with pytest.raises(MigrationStateError, match="no previous model"):
        docs.rollback_model("docs")
    with pytest.raises(CollectionNotFoundError):
        docs.rollback_model("missing")


def test_search_context_and_explain_come_back_with_hits(docs: Client) -> None:
    near = docs.search("docs", "roll back a migration", k=1, mode="vector", context=1)
    hit = near["data"][0]
    assert hit["context_mode"] == "1"
    assert [c["is_hit"] for c in hit["context"]].count(True) == 1
    assert any(c["chunk_type"] == "heading" for c in hit["context"])
    section = docs.search("docs", "kittens", k=1, context="section")
    assert section["data"][0]["context_mode"] == "section"
    explained = docs.search("docs", "kittens", k=1, explain=True)
    assert explained["data"][0]["explain"]
    with pytest.raises(InputError):
        docs.search("docs", "kittens", context=99)


def test_auth_off_loopback_server_refuses_foreign_hosts_and_origins(
    open_url: str, docs: Client
) -> None:
    # With auth off, being on this machine is the only credential. A page of another site
    # must not use the server: not by DNS rebinding (its own name resolving to 127.0.0.1,
    # so the browser sends `Host: evil.example`) nor by a cross-site form post (a simple
    # request the browser sends without asking, with `Origin: https://evil.example`).
    port = open_url.rsplit(":", 1)[1]
    rebound = httpx.get(f"{open_url}/v1/collections", headers={"Host": f"evil.example:{port}"})
    assert rebound.status_code == 403, rebound.text
    assert rebound.headers["content-type"] == "application/problem+json"
    assert rebound.json()["code"] == "forbidden"
    assert "evil.example" in rebound.json()["detail"]
    assert "RAGSTORE_AUTH=on" in rebound.json()["detail"]
    assert httpx.get(f"{open_url}/ui/", headers={"Host": "evil.example"}).status_code == 403
    for origin in ("https://evil.example", "null"):
        forged = httpx.post(
            f"{open_url}/v1/collections/docs/documents/upload",
            files={"files": ("forged.md", b"# Forged\n\nplanted by another site\n")},
            headers={"Origin": origin},
        )
        assert forged.status_code == 403, forged.text
    assert "forged.md" not in {d["name"] for d in docs.list_documents("docs", limit=500)["data"]}
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "[::1]", "app.localhost"):
        ok = httpx.get(
            f"{open_url}/v1/collections",
            headers={"Host": host, "Origin": f"http://{host}"},
        )
        assert ok.status_code == 200, (host, ok.text)


def test_auth_off_server_refuses_a_client_of_another_machine(settings: Settings) -> None:
    # Keys off is safe only while every client is on this machine; the Host check alone
    # does not make it so (any client that is not a browser names the Host it likes). A
    # server reached from elsewhere while it judges itself on loopback (the app served by
    # uvicorn or gunicorn on 0.0.0.0, or a proxy on this machine forwarding the network)
    # must refuse those clients: here a proxy on loopback forwards one from 203.0.113.9.
    proxied = with_(settings, auth="off", trusted_proxies="127.0.0.1")
    with running_server(proxied) as url:
        port = url.rsplit(":", 1)[1]
        local = {"Host": f"localhost:{port}"}
        forwarded = httpx.get(
            f"{url}/v1/collections", headers={**local, "X-Forwarded-For": "203.0.113.9"}
        )
        assert forwarded.status_code == 403, forwarded.text
        assert forwarded.json()["code"] == "forbidden"
        assert "203.0.113.9" in forwarded.json()["detail"]
        for peer in ("127.0.0.1", "::1"):  # a client on this machine, through the proxy
            mine = httpx.get(f"{url}/v1/collections", headers={**local, "X-Forwarded-For": peer})
            assert mine.status_code == 200, (peer, mine.text)
        assert httpx.get(f"{url}/v1/collections", headers=local).status_code == 200


def test_json_nested_too_deep_for_the_parser_is_input_not_a_crash(
    open_url: str, docs: Client
) -> None:
    # json.loads raises RecursionError (not JSONDecodeError) past ~1000 levels
    deep = "[" * 3000
    up = httpx.post(
        f"{open_url}/v1/collections/docs/documents/upload",
        files={"files": ("deep.md", b"# Deep\n\ntext\n")},
        data={"metadata": deep},
    )
    assert up.status_code == 422 and up.json()["code"] == "invalid_input", up.text
    assert "nested deeper than" in up.json()["detail"]
    listed = httpx.get(f"{open_url}/v1/collections/docs/documents", params={"metadata": deep})
    assert listed.status_code == 400 and listed.json()["code"] == "invalid_filter", listed.text
    assert httpx.get(f"{open_url}/healthz").status_code == 200


def test_collection_deleted_meanwhile_is_not_a_server_error(
    open_url: str, settings: Settings, docs: Client
) -> None:
    # A request that looked the collection up just before another deleted it read a dropped
    # `emb_N` table (500 database_error) or a vanished row (500 internal_error).
    import threading
    import time

    from ragstore.db import catalog, repository
    from ragstore.db.database import Database
    from ragstore.errors import CollectionNotFoundError as Gone

    assert settings.database_url is not None
    db = Database(settings.database_url.get_secret_value())
    try:
        with db.connection() as conn:
            spec = repository.get_collection(conn, "docs").model
            coll = repository.create_collection(conn, "vanishing", spec)
            catalog.delete_collection(conn, coll)
            with pytest.raises(Gone, match="vanishing"):
                catalog.collection_detail(conn, coll)
    finally:
        db.close()

    answers: list[tuple[str, int, str]] = []
    stop = time.monotonic() + 3

    def churn(work: str) -> None:
        with httpx.Client(base_url=open_url, timeout=60) as c:
            while time.monotonic() < stop:
                if work == "create":
                    r = c.post("/v1/collections", json={"name": "churn"})
                elif work == "delete":
                    r = c.delete("/v1/collections/churn")
                elif work == "list":
                    r = c.get("/v1/collections")
                elif work == "get":
                    r = c.get("/v1/collections/churn")
                else:
                    r = c.post("/v1/collections/churn/search", json={"query": "x", "mode": work})
                answers.append((work, r.status_code, r.text[:300]))

    works = ("create", "delete", "list", "get", "vector", "hybrid")
    threads = [threading.Thread(target=churn, args=(w,)) for w in works]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {w for w, _, _ in answers} == set(works)
    errors = [a for a in answers if a[1] >= 500 or (a[0] == "list" and a[1] != 200)]
    assert not errors, errors[:5]
    assert httpx.get(f"{open_url}/healthz").status_code == 200


@pytest.mark.parametrize(
    "bad", ["a b", "ü", "ℌandbook", "-x", ".hidden", "x" * 64, "a\tb", "a\x00b", "\x00"]
)
def test_a_name_no_collection_can_have_is_refused_as_the_store_refuses_it(
    open_url: str, bad: str
) -> None:
    """Every way in names the one rule for collection names in one message: the API's
    path, body and query refused them with FastAPI's "String should match pattern
    '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'" where the Store, the Client and the CLI say
    which characters a name takes."""
    with pytest.raises(InputError) as caught:
        check_name(bad)
    rule = caught.value.message
    answers = [
        httpx.get(f"{open_url}/v1/collections/{quote(bad, safe='')}"),
        httpx.post(f"{open_url}/v1/collections", json={"name": bad}),
        httpx.get(f"{open_url}/v1/jobs", params={"collection": bad}),
    ]
    for r in answers:
        assert r.status_code == 422 and r.json()["code"] == "invalid_input", r.text
        assert rule in r.json()["detail"], r.text
        assert "should match pattern" not in r.text


def test_head_answers_wherever_get_does_without_a_body(open_url: str, docs: Client) -> None:
    # FastAPI's routes take only GET: HEAD /healthz (a load balancer's probe), a
    # collection, a console page and /docs were all refused 405
    for path in ("/healthz", "/readyz", "/v1/collections/docs", "/ui/collections", "/docs"):
        get = httpx.get(open_url + path)
        head = httpx.head(open_url + path)
        assert (head.status_code, get.status_code) == (200, 200), (path, head.text[:200])
        assert head.content == b"", path
        assert head.headers["content-type"] == get.headers["content-type"], path
        assert head.headers["content-length"] == get.headers["content-length"], path
        assert head.headers["content-security-policy"] == get.headers["content-security-policy"]
    # a GET's error is the HEAD's too, and a path without GET still says what it takes
    head = httpx.head(f"{open_url}/v1/collections/nope")
    assert head.status_code == 404 and head.content == b""
    assert head.headers["content-type"] == "application/problem+json"
    head = httpx.head(f"{open_url}/v1/collections/docs/search")
    assert head.status_code == 405 and head.headers["allow"] == "POST"
    r = httpx.post(f"{open_url}/healthz")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    # HEAD is not documented as an operation of its own
    paths = httpx.get(f"{open_url}/openapi.json").json()["paths"]
    assert not any("head" in ops for ops in paths.values())
