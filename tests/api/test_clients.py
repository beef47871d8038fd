"""``Client``, ``AsyncClient`` and ``Store``: the same verbs, options and answers, over a
real server on loopback and in-process against the same database."""

from __future__ import annotations

import asyncio
import http.server
import inspect
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ragstore import AsyncClient, Client, Store
from ragstore.config import Settings
from ragstore.errors import ConfigError, InputError, InvalidFilterError

NOTES = [
    "Rollback: run ragstore db downgrade to go back one schema revision.",
    "Backups are taken nightly and kept for thirty days.",
    "The search API answers vector, full-text and hybrid queries.",
]
SHARED = (
    "create_collection",
    "list_collections",
    "get_collection",
    "delete_collection",
    "fields",
    "field_indexes",
    "index_field",
    "drop_field_index",
    "add_texts",
    "get_texts",
    "delete_texts",
    "text_ids",
    "delete_texts_where",
    "add_document",
    "ingest",
    "list_documents",
    "iter_documents",
    "get_document",
    "delete_document",
    "search",
)


@pytest.fixture(scope="module")
def store(settings: Settings) -> Iterator[Store]:
    with Store(settings=settings) as s:
        yield s


@pytest.fixture(scope="module")
def notes(open_url: str) -> Iterator[Client]:
    with Client(open_url) as c:
        c.add_texts(
            "notes",
            NOTES,
            [{"topic": "db"}, {"topic": "ops"}, {"topic": "api"}],
            ids=["rollback", "backups", "search"],
        )
        yield c


def _params(fn: Any) -> list[tuple[str, Any, Any]]:
    sig = inspect.signature(fn)
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


@pytest.mark.parametrize("verb", SHARED)
def test_store_client_and_async_client_share_each_verb(verb: str) -> None:
    store_params = _params(getattr(Store, verb))
    assert _params(getattr(Client, verb)) == store_params
    assert _params(getattr(AsyncClient, verb)) == store_params
    assert inspect.iscoroutinefunction(getattr(AsyncClient, verb)) or verb == "iter_documents"


def test_http_add_texts_creates_the_collection_and_skips_unchanged(notes: Client) -> None:
    assert notes.get_collection("notes")["documents"] == 3
    again = notes.add_texts("notes", NOTES[:1], [{"topic": "db"}], ids=["rollback"])
    assert (again["unchanged"], again["embedded"]) == (1, 0)
    assert [t["id"] for t in notes.get_texts("notes", ["search", "rollback"])] == [
        "search",
        "rollback",
    ]


def test_the_three_give_the_same_mmr_hits(notes: Client, open_url: str, store: Store) -> None:
    """``mmr``, ``fetch_k`` and ``lambda_mult`` reach the server's search (search/mmr.py)
    from both clients; refused values are 422 problem+json, as in process InputError."""
    options: dict[str, Any] = {"k": 2, "mmr": True, "fetch_k": 3, "lambda_mult": 0.2}
    query = "how do I go back a revision"
    over_http = notes.search("notes", query, explain=True, **options)

    async def run_async() -> dict[str, Any]:
        async with AsyncClient(open_url) as ac:
            return await ac.search("notes", query, explain=True, **options)

    in_process = store.search("notes", query, explain=True, **options)
    picks = [h["explain"]["mmr"] for h in over_http["data"]]
    assert [p["fetch_k"] for p in picks] == [3, 3] and picks[1]["lambda_mult"] == 0.2
    for out in (asyncio.run(run_async()), in_process):
        assert out["data"] == over_http["data"]
        assert (
            out["plan"]["mmr"]
            == over_http["plan"]["mmr"]
            == {
                "fetch_k": 3,
                "lambda_mult": 0.2,
                "relevance": "ranking",
                "relevance_scale": "cosine",
                "similarity": "cosine",
            }
        )
    for body, message in (
        ({"k": 3, "mmr": True, "fetch_k": 2}, "fetch_k (2) is smaller than k (3)"),
        ({"mmr": True, "lambda_mult": 1.5}, "lambda_mult"),
        (
            {"fetch_k": 5},
            "fetch_k only applies to a maximal-marginal-relevance search; set mmr too",
        ),
    ):
        answer = httpx.post(f"{open_url}/v1/collections/notes/search", json={"query": "x", **body})
        assert answer.status_code == 422
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert message in answer.text
    with pytest.raises(InputError, match=r"fetch_k \(2\) is smaller than k \(3\)"):
        notes.search("notes", query, k=3, mmr=True, fetch_k=2)


def test_the_three_give_the_same_hits(notes: Client, open_url: str, store: Store) -> None:
    options: dict[str, Any] = {
        "k": 2,
        "where": {"topic": {"$in": ["db", "ops"]}},
        "rrf_k": 20,
        "vector_weight": 2.0,
        "explain": True,
    }
    over_http = notes.search("notes", "how do I go back a revision", **options)

    async def run_async() -> dict[str, Any]:
        async with AsyncClient(open_url) as ac:
            return await ac.search("notes", "how do I go back a revision", **options)

    over_async = asyncio.run(run_async())
    in_process = store.search("notes", "how do I go back a revision", **options)
    for out in (over_async, in_process):
        assert [h["chunk_id"] for h in out["data"]] == [h["chunk_id"] for h in over_http["data"]]
        assert set(out) == set(over_http)
    assert over_http["data"][0]["metadata"] == {"topic": "db"}
    assert over_http["data"][0]["explain"]["rrf"] == {
        "k": 20,
        "vector_weight": 2.0,
        "fulltext_weight": 1.0,
    }


def test_search_by_vector_over_http(notes: Client, store: Store) -> None:
    rt = store.runtime
    vec = rt.embedder_for(rt.collection("notes")).embed_query("nightly backups").tolist()
    out = notes.search("notes", vector=vec, k=1)
    assert out["query"] is None
    assert out["data"][0]["text"] == NOTES[1]
    with pytest.raises(InputError, match="holds 384-dimensional vectors"):
        notes.search("notes", vector=[1.0, 2.0])


def test_a_vector_with_mode_fulltext_is_refused_alike(notes: Client, store: Store) -> None:
    # the full-text list has no use for a vector: it was dropped unsaid, and the hits were
    # the BM25 ranking of the words, taken for a ranking by the vector
    rt = store.runtime
    vec = rt.embedder_for(rt.collection("notes")).embed_query("nightly backups").tolist()
    for backend in (store, notes):
        with pytest.raises(InputError, match=r"with mode 'fulltext'.*would ignore it") as caught:
            backend.search("notes", "rollback", vector=vec, mode="fulltext")
        assert type(caught.value) is InputError, backend
        # with the words alone, or the vector in another mode, it searches
        assert backend.search("notes", "rollback", mode="fulltext")["data"]
        assert backend.search("notes", "rollback", vector=vec, mode="hybrid")["data"]


def test_k_0_is_refused_in_process_as_over_http(notes: Client, store: Store) -> None:
    # Store.search (and the MCP tool on it) read k=0 as "the default" and answered 10 hits
    with pytest.raises(InputError, match="k must be between 1 and 1000, got 0"):
        store.search("notes", "backups", k=0, mode="fulltext")
    with pytest.raises(InputError, match="greater than or equal to 1"):
        notes.search("notes", "backups", k=0)


def test_vector_only_collection_over_http(client: Client) -> None:
    made = client.create_collection("ext", model="their-model@2024", dimension=3, distance="l2")
    assert (made["dimension"], made["distance"]) == (3, "l2")
    client.add_texts(
        "ext", ["red", "green"], ids=["r", "g"], vectors=[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    )
    assert [h["text"] for h in client.search("ext", vector=[0.1, 0.8, 0.0])["data"]] == [
        "green",
        "red",
    ]
    with pytest.raises(InputError, match="cannot run, so text cannot be embedded"):
        client.search("ext", "green", mode="hybrid")


def test_async_client_reads_and_deletes(open_url: str, notes: Client) -> None:
    async def scenario() -> tuple[list[str], int, list[dict[str, Any]]]:
        async with AsyncClient(open_url) as ac:
            await ac.add_texts("tmp", ["one", "two"], ids=["1", "2"])
            names = [c["name"] for c in await ac.list_collections()]
            deleted = await ac.delete_texts("tmp", ["1"])
            left = [d async for d in ac.iter_documents("tmp")]
            await ac.delete_collection("tmp")
            return names, deleted, left

    names, deleted, left = asyncio.run(scenario())
    assert "tmp" in names and deleted == 1
    assert [d["name"] for d in left] == ["2"]


@contextmanager
def _answering(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A stand-in server on loopback answering with ``handler`` (for answers the real
    server never gives); yields its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_url_that_is_not_ragstore_is_a_config_error() -> None:
    # RAGSTORE_URL at another web server (a wrong port, a proxy's page) answered 200 HTML:
    # the clients raised json.JSONDecodeError, the CLI printed its traceback

    class Page(http.server.BaseHTTPRequestHandler):
        def _page(self) -> None:
            body = b"<html>a captive portal</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _page

        def log_message(self, *args: Any) -> None:
            pass

    with _answering(Page) as url:
        with Client(url) as c, pytest.raises(ConfigError, match="not ragstore's API") as info:
            c.list_collections()
        assert url in str(info.value) and "text/html" in str(info.value)

        async def search() -> None:
            async with AsyncClient(url) as ac:
                await ac.search("notes", "rollback")

        with pytest.raises(ConfigError, match="not ragstore's API"):
            asyncio.run(search())


def test_list_collections_follows_the_cursor_past_a_page_left_empty() -> None:
    """A page whose every collection was deleted between the server reading the names and
    reading their details comes back with no data but a ``next_cursor``: both clients
    stopped there and returned [], dropping the collections after it. That race cannot
    be timed from outside the route, so a server on loopback answers its two pages."""
    import json

    pages = {
        "/v1/collections?limit=1000": {"data": [], "count": 0, "next_cursor": "bmFtZTpi"},
        "/v1/collections?limit=1000&cursor=bmFtZTpi": {
            "data": [{"name": "c"}],
            "count": 1,
            "next_cursor": None,
        },
    }

    class Pages(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(pages[self.path]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with _answering(Pages) as url:
        with Client(url) as c:
            assert c.list_collections() == [{"name": "c"}]

        async def listed() -> list[dict[str, Any]]:
            async with AsyncClient(url) as ac:
                return await ac.list_collections()

        assert asyncio.run(listed()) == [{"name": "c"}]


def test_names_and_ids_cannot_steer_a_call_to_another_route(notes: Client, store: Store) -> None:
    # delete_collection("notes/documents/1") sent DELETE /v1/collections/notes/documents/1
    # and deleted that document; an id of "1/../x" reached another route the same way
    doc = notes.list_documents("notes")["data"][0]
    for steer in (f"notes/documents/{doc['id']}", "..", "notes%2Fdocuments", "notes\n"):
        with pytest.raises(InputError, match="invalid collection name"):
            notes.delete_collection(steer)
    with pytest.raises(InputError, match="invalid document id"):
        notes.get_document("notes", f"{doc['id']}/chunks")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="invalid job id"):
        notes.get_job("1/../../collections")  # type: ignore[arg-type]
    assert notes.get_document("notes", doc["id"])["id"] == doc["id"]
    # the in-process check read `$` as "end, or before a final newline"
    with pytest.raises(InputError, match="invalid collection name"):
        store.create_collection("notes2\n")


def test_in_process_metadata_postgresql_would_refuse_is_named(store: Store) -> None:
    # the HTTP schemas refuse these at the edge; in process (and through MCP's add_document)
    # they reached PostgreSQL: "invalid input syntax for type json", and a collection made
    with pytest.raises(InputError, match=r"metadatas\[0\] holds a non-finite number"):
        store.add_texts("notes", ["x"], [{"a": float("nan")}])
    with pytest.raises(InputError, match=r"metadata holds a NUL byte"):
        store.add_document("never-made", "n.md", "hi", metadata={"a\x00": 1})
    with pytest.raises(InputError, match=r"metadata holds a lone surrogate \(U\+D800\) at 'a'"):
        store.add_document("never-made", "n.md", "hi", metadata={"a": "x\ud800"})
    with pytest.raises(InputError, match=r"lone surrogate \(U\+DC00\) in a key"):
        store.add_document("never-made", "n.md", "hi", metadata={"\udc00": 1})
    assert "never-made" not in {c["name"] for c in store.list_collections()}


# (label, verb, args, error class, message): what the Store and the Client refused alike
# only after these fixes. Unchecked, the Client took a bare string as its characters
# (delete_texts("notes", "search") deleted the texts "s", "e", ...), the Store stored id
# None as "None", a key 1 beside "1" lost a value, and NaN or a set reached httpx's
# encoder as a bare ValueError/TypeError no `except RagstoreError` caught.
NAN = float("nan")
REFUSED_ALIKE: list[tuple[str, str, tuple[Any, ...], type[Exception], str]] = [
    ("bare ids", "delete_texts", ("notes", "search"), InputError, "ids is one string"),
    ("bare ids get", "get_texts", ("notes", "search"), InputError, "ids is one string"),
    # a caller's 10 KB name was quoted whole by the Client, cut by the Store
    ("long name", "get_collection", ("n" * 10240,), InputError, r"name 'n{100}\.\.\.': use"),
    ("dict ids", "delete_texts", ("notes", {"search": 1}), InputError, "ids is a dict, not a"),
    ("dict ids get", "get_texts", ("notes", {"search": 1}), InputError, "ids is a dict, not a"),
    # a set has no order: its ids were paired with the texts in whatever order it iterated
    ("set ids", "add_texts", ("notes", ["x", "y"], None, {"p", "q"}), InputError, "ids is a set"),
    ("bare texts", "add_texts", ("notes", "one text"), InputError, "texts is one string"),
    ("id None", "add_texts", ("notes", ["x"], None, [None]), InputError, r"ids\[0\] is None"),
    ("id int", "add_texts", ("notes", ["x"], None, [7]), InputError, r"ids\[0\] is 7"),
    ("key int", "add_texts", ("notes", ["x"], [{1: "a", "1": "b"}], ["k"]), InputError, "key"),
    ("nan meta", "add_texts", ("notes", ["x"], [{"a": NAN}]), InputError, "non-finite"),
    ("set meta", "add_texts", ("notes", ["x"], [{"a": {1}}]), InputError, "JSON-serialisable"),
    ("str meta", "add_texts", ("notes", ["x"], ["a"]), InputError, "not a JSON object"),
    ("doc key", "add_document", ("notes", "k.md", "hi", {1: "a"}), InputError, "key"),
    ("doc id 0", "get_document", ("notes", 0), InputError, "invalid document id 0"),
    ("doc id bool", "get_document", ("notes", True), InputError, "invalid document id True"),
    ("doc id big", "delete_document", ("notes", 2**64), InputError, "invalid document id"),
]


@pytest.mark.parametrize(
    ("verb", "args", "error", "message"),
    [case[1:] for case in REFUSED_ALIKE],
    ids=[case[0] for case in REFUSED_ALIKE],
)
def test_store_and_client_refuse_bad_input_alike_and_change_nothing(
    notes: Client, store: Store, verb: str, args: tuple[Any, ...], error: type, message: str
) -> None:
    if verb == "add_document":  # its metadata is keyword-only
        args, kwargs = args[:3], {"metadata": args[3]}
    else:
        kwargs = {}
    before = sorted(t["id"] for t in notes.get_texts("notes", ["rollback", "backups", "search"]))
    count = notes.get_collection("notes")["documents"]
    for backend in (store, notes):
        with pytest.raises(error, match=message) as caught:
            getattr(backend, verb)(*args, **kwargs)
        assert type(caught.value) is error, backend
    after = sorted(t["id"] for t in notes.get_texts("notes", ["rollback", "backups", "search"]))
    assert (after, notes.get_collection("notes")["documents"]) == (before, count)


def test_store_and_client_name_a_bad_filter_value_alike(notes: Client, store: Store) -> None:
    for backend in (store, notes):
        with pytest.raises(InvalidFilterError, match=r"non-finite number \(nan\) at 'a'"):
            backend.search("notes", "backups", where={"a": NAN})
        with pytest.raises(InvalidFilterError, match=r"metadata filter holds a non-finite"):
            backend.list_documents("notes", metadata={"a": NAN})
        with pytest.raises(InputError, match="the query vector holds NaN"):
            backend.search("notes", vector=[NAN] * 384)
        with pytest.raises(InputError, match="holds NaN"):
            backend.add_texts("notes", ["x"], vectors=[[NAN] * 384])


@pytest.mark.parametrize("where", [[{"topic": "ops"}], "topic", 3, True])
def test_a_where_that_is_no_object_is_an_invalid_filter_alike(
    notes: Client, store: Store, where: Any
) -> None:
    # the HTTP schemas answered 422 (InputError over a Client) where the Store raised
    # InvalidFilterError; the texts are all still there after the delete
    calls = {
        "search": lambda b: b.search("notes", "backups", where=where),
        "text_ids": lambda b: b.text_ids("notes", where=where),
        "delete_texts_where": lambda b: b.delete_texts_where("notes", where=where),
    }
    for verb, call in calls.items():
        for backend in (store, notes):
            with pytest.raises(
                InvalidFilterError, match="the filter must be a JSON object"
            ) as caught:
                call(backend)
            assert type(caught.value) is InvalidFilterError, (verb, backend)
    assert notes.text_ids("notes") == ["backups", "rollback", "search"]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (Decimal("1.5"), r"a Decimal \(Decimal\('1.5'\)\) at 'a\.\$gte', .* give a float"),
        (b"ops", r"a bytes \(b'ops'\) at 'a\.\$gte', .* \(value.decode\(\)\)"),
        (np.int64(3), r"an int64 \(.*\) at 'a\.\$gte', .* \(value.item\(\)\)"),
        (datetime(2024, 1, 1), r"a datetime .* \(value.isoformat\(\)\)"),
    ],
)
def test_a_filter_value_json_has_no_form_of_is_named_alike(
    notes: Client, store: Store, value: Any, shown: str
) -> None:
    # in process it passed the value check and failed in json.dumps with a bare TypeError
    # (no path, no RagstoreError); a Decimal is refused, not taken as a number: the HTTP
    # client has no way to send one either
    for backend in (store, notes):
        with pytest.raises(InvalidFilterError, match="the filter holds " + shown) as caught:
            backend.search("notes", "backups", where={"a": {"$gte": value}})
        assert type(caught.value) is InvalidFilterError, backend
        with pytest.raises(InvalidFilterError, match="metadata filter holds a"):
            backend.list_documents("notes", metadata={"a": value})


def test_search_values_the_encoder_would_fail_on_are_input_errors_alike(
    notes: Client, store: Store
) -> None:
    # over HTTP they reached httpx's JSON encoder: a bare UnicodeEncodeError or ValueError
    # that no `except RagstoreError` caught, where the Store named them
    for backend in (store, notes):
        with pytest.raises(InputError, match=r"lone surrogate \(U\+D800\)"):
            backend.search("notes", "backups\ud800")
        for option in ("rrf_k", "vector_weight", "fulltext_weight"):
            with pytest.raises(InputError, match="nan") as caught:
                backend.search("notes", "backups", **{option: NAN})
            assert type(caught.value) is InputError, (backend, option)


def test_an_empty_query_with_a_vector_searches_by_it_alike(notes: Client, store: Store) -> None:
    # Store.search("", vector=...) searched by the vector; the HTTP API's schema refused the
    # empty query (422 "String should have at least 1 character")
    rt = store.runtime
    vec = rt.embedder_for(rt.collection("notes")).embed_query("nightly backups").tolist()
    texts = []
    for backend in (store, notes):
        out = backend.search("notes", "", vector=vec, k=1)
        assert out["query"] == ""
        texts.append([h["text"] for h in out["data"]])
        # without a vector an empty query is one error, the same everywhere
        with pytest.raises(InputError, match="the query is empty"):
            backend.search("notes", "")
    assert texts == [[NOTES[1]], [NOTES[1]]]


async def test_a_closed_client_says_so(open_url: str) -> None:
    # httpx's "Cannot send a request, as the client has been closed." named neither
    client = Client(open_url)
    client.close()
    client.close()
    with pytest.raises(RuntimeError, match=r"this Client is closed; open a new Client\("):
        client.health()
    async_client = AsyncClient(open_url)
    await async_client.aclose()
    with pytest.raises(RuntimeError, match="this AsyncClient is closed"):
        await async_client.health()


def test_client_ingest_takes_one_bare_path_as_that_path(
    notes: Client, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the Client iterated a bare path's characters: "guide.md" was the paths "g", "u",
    # ..., ".", "m", "d" (failing on "g": no such file; "." the whole working directory),
    # where the Store takes one path given bare as that path
    (tmp_path / "guide.md").write_text("# Guide\n\nBackups run nightly.\n")
    (tmp_path / "secret.md").write_text("# Secret\n\nNot for the server.\n")
    monkeypatch.chdir(tmp_path)
    for backend, collection in ((store, "bare-store"), (notes, "bare-client")):
        out = backend.ingest(collection, "guide.md")
        stored = backend.list_documents(collection)["data"]
        for docs in (out["data"], stored):
            assert [Path(d["name"]).name for d in docs] == ["guide.md"], backend
        backend.delete_collection(collection)


def test_client_upload_takes_one_bare_file_as_that_file(notes: Client, tmp_path: Path) -> None:
    # as ingest: a bare path was read as one file per character, a bare (name, bytes)
    # tuple as the file named by its name and then the bytes as a path
    page = tmp_path / "page.md"
    page.write_text("# Page\n\nSome words.\n")
    for given in (page, str(page), ("memo.md", b"# Memo\n\nMore words.\n")):
        out = notes.upload("bare-upload", given)
        assert len(out["data"]) == 1, given
    names = sorted(d["name"] for d in notes.list_documents("bare-upload")["data"])
    assert names == ["memo.md", "page.md"]
    notes.delete_collection("bare-upload")


def test_the_write_position_kept_is_the_latest_whatever_order_answers_come_in() -> None:
    # writes sent at once answer in any order: the last answer could be an earlier
    # write's position, and a read after all of them then went to a replica without the rest
    with Client("http://127.0.0.1:9") as c:  # bookkeeping only: nothing is sent
        sends = [c._with_lsn({})[1] for _ in range(5)]  # sent at once, answered now
        for sent, answered in zip(
            sends, ("0/3000B60", "0/2000000", "0/FFFFFF", "1/10", "0/FFFFFFFF"), strict=True
        ):
            c._note_lsn(httpx.Response(201, headers={"RAGStore-LSN": answered}), sent)
        assert c.last_lsn == "1/10"
        c._note_lsn(httpx.Response(200), c._with_lsn({})[1])  # a read: no position, kept
        assert c.last_lsn == "1/10"


def test_primary_set_by_hand_is_kept_from_answers_to_requests_already_sent() -> None:
    # ``primary`` copied in from another client (whose write's position was unread) while
    # a write was in flight: that write may have committed before the other client's, and
    # its answer replaced ``primary``; only a request sent after it may
    with Client("http://127.0.0.1:9") as c:  # bookkeeping only: nothing is sent
        headers, in_flight = c._with_lsn({})
        assert "headers" not in headers  # no write yet: nothing to send back
        c.last_lsn = "primary"
        c._note_lsn(httpx.Response(201, headers={"RAGStore-LSN": "5/0"}), in_flight)
        assert c.last_lsn == "primary"
        headers, after = c._with_lsn({})
        assert headers["headers"]["RAGStore-LSN"] == "primary"
        c._note_lsn(httpx.Response(201, headers={"RAGStore-LSN": "0/10"}), after)
        assert c.last_lsn == "0/10"


def test_empty_lists_are_no_ops_in_process_as_over_http(notes: Client, store: Store) -> None:
    # the HTTP schemas refused an empty list (422) where the Store answered it: code that
    # moved from Store to Client failed on a batch that happened to be empty
    count = notes.get_collection("notes")["documents"]
    for backend in (store, notes):
        added = backend.add_texts("notes", [])
        assert (added["ids"], added["added"], added["embedded"]) == ([], 0, 0), backend
        assert backend.get_texts("notes", []) == [], backend
        assert backend.delete_texts("notes", []) == 0, backend
    assert notes.get_collection("notes")["documents"] == count


@pytest.mark.parametrize(
    ("verb", "args"),
    [
        ("get_collection", ()),
        ("fields", ()),
        ("delete_collection", ()),
        ("get_texts", (["x"],)),
        ("delete_texts", (["x"],)),
        ("text_ids", ()),
        ("delete_texts_where", ()),
        ("list_documents", ()),
        ("get_document", (1,)),
        ("delete_document", (1,)),
        ("search", ("backups",)),
    ],
)
def test_an_invalid_collection_name_is_an_input_error_in_process_as_over_http(
    notes: Client, store: Store, verb: str, args: tuple[Any, ...]
) -> None:
    # the Store answered "collection 'no such/name' does not exist": it never could, and
    # the Client says what is wrong with the name and how to fix it
    for name in ("no such/name", "", "-dash", "x" * 64, "tab\tname"):
        for backend in (store, notes):
            with pytest.raises(InputError, match="invalid collection name") as caught:
                getattr(backend, verb)(name, *args)
            assert type(caught.value) is InputError, (backend, name)
            assert "starting with a letter or digit" in str(caught.value)


def test_a_query_longer_than_the_api_takes_is_refused_in_process_alike(
    notes: Client, store: Store
) -> None:
    # over HTTP the schema stops a query over 10,000 characters; Store.search (and the MCP
    # tools on it) embedded and ran a query of any length
    long = "backups " * 1251  # 10,008 characters
    for backend in (store, notes):
        with pytest.raises(InputError, match="at most 10000 characters") as caught:
            backend.search("notes", long, mode="fulltext")
        assert "query" in str(caught.value), backend
    assert store.search("notes", long[:10_000], mode="fulltext")["count"] >= 1


def test_list_documents_filters_alike_in_process_and_over_http(notes: Client, store: Store) -> None:
    # a relative source_prefix is a document's name (an upload's path below the folder):
    # the API resolved it, the Store matched it against the stored absolute path (nothing);
    # an empty format or prefix the Client left out (every document) where the Store and
    # the API filter by it
    notes.add_document("named", "guides/setup.md", "# Setup\n\nInstall it first.")
    notes.add_document("named", "faq.md", "# FAQ\n\nAsk away.")
    for backend in (store, notes):
        found = backend.list_documents("named", source_prefix="guides/")["data"]
        assert [d["name"] for d in found] == ["guides/setup.md"], backend
        assert backend.list_documents("named", format="")["count"] == 0, backend
        assert backend.list_documents("named", source_prefix="")["count"] == 2, backend


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("k", "3"),
        ("k", True),
        ("k", 2.5),
        ("ef_search", "40"),
        ("rrf_k", "20"),
        ("vector_weight", True),
        ("query", 42),
        ("explain", "yes"),
        ("sections", "no"),
    ],
)
def test_search_options_of_the_wrong_type_are_input_errors_in_process_as_over_http(
    notes: Client, store: Store, option: str, value: Any
) -> None:
    # the HTTP schema refuses them (no coercion); in process k="3" raised a TypeError,
    # k=True searched for 1 hit, k=2.5 reached PostgreSQL's LIMIT and a query of 42 an
    # AttributeError: none of them a RagstoreError naming the option
    options: dict[str, Any] = {"query": "backups", option: value}
    for backend in (store, notes):
        with pytest.raises(InputError, match=option) as caught:
            backend.search("notes", **options)
        assert type(caught.value) is InputError, backend


@pytest.mark.parametrize("metadata", [["a"], "team=ops", 7])
def test_metadata_that_is_no_object_is_refused_alike_and_makes_nothing(
    notes: Client, store: Store, tmp_path: Path, metadata: Any
) -> None:
    # in process a list or a string passed the value check and failed in dict() with a
    # ValueError, add_document having made the collection first
    page = tmp_path / "page.md"
    page.write_text("# Page\n\nSome text.")
    for backend in (store, notes):
        with pytest.raises(InputError, match=r"metadata is an? .*, not a JSON object"):
            backend.add_document("meta-made", "p.md", "hi", metadata=metadata)
        with pytest.raises(InputError, match=r"metadata is an? .*, not a JSON object"):
            backend.ingest("meta-made", page, metadata=metadata)
    assert "meta-made" not in {c["name"] for c in store.list_collections()}


@pytest.mark.parametrize("limit", ["5", True, 2.5, 0, 501])
def test_a_page_size_the_api_does_not_take_is_refused_alike(
    notes: Client, store: Store, limit: Any
) -> None:
    # in process "5" raised a TypeError and True or 2.5 reached PostgreSQL's LIMIT; the
    # Client sent "5" as a page of 5
    for backend in (store, notes):
        with pytest.raises(InputError, match="limit must be") as caught:
            backend.list_documents("notes", limit=limit)
        assert type(caught.value) is InputError, backend


@pytest.mark.parametrize(
    "where",
    [
        {"topic": {"$in": ("db", "ops")}},
        {"topic": {"$nin": ("api",)}},
        {"$or": ({"topic": "db"}, {"topic": "ops"})},
        {"$and": ({"topic": {"$ne": "api"}},)},
    ],
    ids=["in", "nin", "or", "and"],
)
def test_a_tuple_in_a_filter_is_an_array_alike(
    notes: Client, store: Store, where: dict[str, Any]
) -> None:
    # the Client sends a tuple as a JSON array, and the Store refused it: "$in takes an
    # array, got an object" (as $nin, $and and $or did)
    for backend in (store, notes):
        hits = backend.search("notes", "backups", where=where, k=3, mode="fulltext")
        assert [h["source"] for h in hits["data"]] == ["backups"], backend
        assert backend.text_ids("notes", where=where) == ["backups", "rollback"], backend


@pytest.mark.parametrize("option", ["k", "fetch_k", "ef_search", "context"])
def test_a_numpy_integer_option_is_taken_alike(
    notes: Client, open_url: str, store: Store, option: str
) -> None:
    # the Store takes any integral k (numbers.Integral, as the LangChain store passes
    # one on); the Client refused np.int64(2) as "not JSON-serialisable"
    options: dict[str, Any] = {"k": 2, option: np.int64(2)}
    if option == "fetch_k":
        options["mmr"] = True
    expected = store.search("notes", "backups", **{**options, option: 2})
    for backend in (store, notes):
        out = backend.search("notes", "backups", **options)
        assert [h["source"] for h in out["data"]] == [h["source"] for h in expected["data"]]

    async def over_async() -> dict[str, Any]:
        async with AsyncClient(open_url) as client:
            return await client.search("notes", "backups", **options)

    out = asyncio.run(over_async())
    assert [h["source"] for h in out["data"]] == [h["source"] for h in expected["data"]]


@pytest.mark.parametrize(
    ("option", "value", "plain"),
    [
        ("rrf_k", np.float32(20.5), 20.5),
        ("rrf_k", np.int64(30), 30.0),
        ("vector_weight", np.float32(0.25), 0.25),
        ("fulltext_weight", np.float16(2), 2.0),
        ("lambda_mult", np.float32(0.75), 0.75),
    ],
    ids=["rrf_k-float32", "rrf_k-int64", "vector_weight", "fulltext_weight", "lambda_mult"],
)
def test_a_numpy_number_option_is_taken_alike(
    notes: Client, open_url: str, store: Store, option: str, value: Any, plain: float
) -> None:
    # the Store takes any real number for the fusion knobs and lambda_mult; the Client
    # refused np.float32(20.5) (and np.int64(30)) as "not JSON-serialisable". Each is
    # searched with as the float the HTTP schema reads it as
    options: dict[str, Any] = {"k": 3, "explain": True, option: value}
    if option == "lambda_mult":
        options["mmr"] = True
    expected = store.search("notes", "backups", **{**options, option: plain})
    ranked = [(h["source"], h["score"]) for h in expected["data"]]
    for backend in (store, notes):
        out = backend.search("notes", "backups", **options)
        assert [(h["source"], h["score"]) for h in out["data"]] == ranked, backend
        assert out["plan"] == expected["plan"], backend
        plan = out["plan"]
        planned = (
            plan["mmr"]["lambda_mult"]
            if option == "lambda_mult"
            else plan["fusion"]["k" if option == "rrf_k" else option]
        )
        # the value searched with is the Python number (the Store kept the NumPy scalar)
        assert planned == plain and type(planned) is type(plain), backend

    async def over_async() -> dict[str, Any]:
        async with AsyncClient(open_url) as client:
            return await client.search("notes", "backups", **options)

    assert [(h["source"], h["score"]) for h in asyncio.run(over_async())["data"]] == ranked


@pytest.mark.parametrize("option", ["rrf_k", "vector_weight", "fulltext_weight", "lambda_mult"])
@pytest.mark.parametrize(
    "value", [float("nan"), float("-inf"), np.float32("inf"), np.float64("nan")]
)
def test_a_nan_or_infinite_option_is_refused_alike(
    notes: Client, store: Store, option: str, value: Any
) -> None:
    # the Store said NaN was out of range ("must be between 0 and 10000, got nan"), the
    # Client that it was not JSON; both now say what is wrong with it, in the same words
    options: dict[str, Any] = {option: value, "mmr": option == "lambda_mult"}
    for backend in (store, notes):
        with pytest.raises(
            InputError, match=rf"^{option} must be a finite number \(not NaN or infinity\)"
        ) as caught:
            backend.search("notes", "backups", **options)
        assert type(caught.value) is InputError, backend


def test_a_numpy_integer_limit_id_or_dimension_is_taken_alike(notes: Client, store: Store) -> None:
    # the Store checked them as Python ints and refused np.int64 ("limit must be an
    # integer, got np.int64(2)"), as the Client did, where search took a NumPy k
    first = store.list_documents("notes", limit=2)
    doc_id = first["data"][0]["id"]
    for backend in (store, notes):
        page = backend.list_documents("notes", limit=np.int64(2))
        assert [d["id"] for d in page["data"]] == [d["id"] for d in first["data"]], backend
        assert backend.get_document("notes", np.int64(doc_id))["id"] == doc_id, backend
    for name, backend in (("np-dim-store", store), ("np-dim-client", notes)):
        made = backend.create_collection(name, model="their-model@2024", dimension=np.int64(3))
        assert made["dimension"] == 3 and type(made["dimension"]) is int, backend
        backend.delete_collection(name)
