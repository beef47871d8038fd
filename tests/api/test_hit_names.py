"""Search hits of an uploaded document carry the name it was uploaded under.

An upload is stored under the source ``<data dir>/uploads/<collection>/<name>``, the
server's own path: documents list answered the upload's ``name`` beside it, but search
hits (the HTTP answer, the Client's and Store's, ``ragstore search``, MCP) showed only the
source, a path the uploader never chose, which told every reader where the server keeps
its data. A hit of a file ingested from disk has no name: its source is its owner's path.
Every answer now gives an upload's name as its ``source`` and metadata ``path`` too, as the
documents answers do; the database keeps the stored path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ragstore import Client, Store
from ragstore.config import Settings
from ragstore.uploads import names
from tests.conftest import run_cli

COLLECTION = "hitnames"
UPLOAD = "notes/rollback.md"
UPLOADED = "# Rollback\n\n## Steps\n\nRun ragstore db downgrade to roll back a revision.\n"
ON_DISK = "# Backups\n\n## Schedule\n\nBackups to roll back from are taken nightly.\n"


@pytest.fixture(scope="module")
def local_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("own") / "backups.md"
    path.write_text(ON_DISK)
    return path.resolve()


@pytest.fixture(scope="module")
def store(settings: Settings) -> Iterator[Store]:
    with Store(settings=settings) as s:
        yield s


@pytest.fixture(scope="module")
def both(open_url: str, store: Store, local_file: Path) -> Iterator[Client]:
    """The collection holding one upload (through the server) and one file from disk."""
    with Client(open_url) as c:
        c.add_document(COLLECTION, UPLOAD, UPLOADED)
        store.ingest(COLLECTION, [local_file])
        yield c


def _names(hits: list[dict[str, Any]], local_file: Path) -> dict[str, str | None]:
    """Each hit's name by whose document it is: the upload's or the local file's."""
    out: dict[str, str | None] = {}
    for h in hits:
        out["local" if h["source"] == str(local_file) else "upload"] = h["name"]
    return out


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"sections": False},
        {"explain": True},
        {"context": "section"},
        {"context": 1},
        {"mmr": True},
        {"mode": "fulltext"},
        {"mode": "vector"},
    ],
    ids=repr,
)
def test_a_hit_of_an_upload_is_named_as_documents_list_names_it(
    both: Client,
    store: Store,
    open_url: str,
    local_file: Path,
    settings: Settings,
    options: dict[str, Any],
) -> None:
    """A hit of an upload gives its name as ``name``, ``source`` and metadata ``path``,
    as the documents answers do (the HTTP API's and the Store's alike): its ``source`` was
    the server's own ``<data dir>/uploads/...`` path, which no answer shows now, with
    context and explain too. A hit of a file from disk keeps its own path."""
    data_dir = str(settings.data_dir.resolve())
    assert not str(local_file).startswith(data_dir)  # else the local path would be it
    stored = {d["name"]: d for d in store.list_documents(COLLECTION)["data"]}
    assert stored[UPLOAD]["source"] == stored[UPLOAD]["metadata"]["path"] == UPLOAD
    with httpx.Client(base_url=open_url, timeout=120) as http:
        raw = http.post(
            f"/v1/collections/{COLLECTION}/search", json={"query": "roll back", **options}
        )
    assert raw.is_success, raw.text
    for answer in (
        raw.json(),
        both.search(COLLECTION, "roll back", **options),
        store.search(COLLECTION, "roll back", **options),
    ):
        dumped = json.dumps(answer)
        assert data_dir not in dumped and "/uploads/" not in dumped
        hits = answer["data"]
        assert _names(hits, local_file) == {"upload": UPLOAD, "local": None}
        assert {h["source"] for h in hits} == {UPLOAD, str(local_file)}
        for h in hits:
            assert h["metadata"].get("path", h["source"]) == h["source"], h
        assert all(h["document_id"] == stored[UPLOAD]["id"] for h in hits if h["name"])


def test_documents_answer_an_uploads_name_as_its_source_not_the_servers_path(
    both: Client, open_url: str, local_file: Path, settings: Settings
) -> None:
    """Every documents answer (list, get, the ``source`` filter, an upload's own) named
    an upload's source by the server's ``<data dir>/uploads/...`` path, shown to any read
    key (the console's document page showed it as Source); it is the upload's name now,
    and a file ingested from disk keeps its own path."""
    data_dir = str(settings.data_dir.resolve())
    with httpx.Client(base_url=open_url, timeout=120) as http:
        base = f"/v1/collections/{COLLECTION}/documents"
        listed = http.get(base)
        upload = next(d for d in listed.json()["data"] if d["name"] == UPLOAD)
        local = next(d for d in listed.json()["data"] if d["name"] != UPLOAD)
        one = http.get(f"{base}/{upload['id']}")
        found = http.get(base, params={"source": upload["source"]})
        added = http.post(base, json={"name": UPLOAD, "text": UPLOADED})
        for answer in (listed, one, found, added):
            assert answer.is_success, answer.text
            assert data_dir not in answer.text and "/uploads/" not in answer.text
    assert upload["source"] == UPLOAD
    assert one.json()["source"] == one.json()["name"] == one.json()["metadata"]["path"] == UPLOAD
    assert [d["id"] for d in found.json()["data"]] == [upload["id"]]
    assert (added.json()["source"], added.json()["status"]) == (UPLOAD, "unchanged")
    assert local["source"] == local["name"] == local["metadata"]["path"] == str(local_file)
    # the database keeps the stored path: an absolute source finds the upload by it
    stored = names.source_of(settings, COLLECTION, UPLOAD)
    assert "/uploads/" in stored
    with Store(settings=settings) as s:
        assert s.find_document(COLLECTION, stored)["id"] == upload["id"]
        assert s.find_document(COLLECTION, UPLOAD)["source"] == UPLOAD


def test_a_hits_source_as_a_filter_finds_its_upload(
    both: Client, store: Store, local_file: Path, settings: Settings
) -> None:
    """A hit's ``source`` copied into ``where`` finds its document: an upload's is its
    name while the database keeps the stored path, and the filter named no document (no
    hits). ``$eq``, ``$in``, ``$ne`` and ``$nin`` read the name as the upload's, in
    ``$and``/``$or``/``$not`` too, through the server and the Store alike; the stored
    path and a file's own path still filter as before."""
    stored = names.source_of(settings, COLLECTION, UPLOAD)
    local = str(local_file)

    def sources(where: dict[str, Any]) -> set[str]:
        found = [
            {h["source"] for h in c.search(COLLECTION, "roll back", where=where)["data"]}
            for c in (both, store)
        ]
        assert found[0] == found[1], where
        return found[0]

    assert sources({"source": UPLOAD}) == {UPLOAD}
    assert sources({"source": {"$eq": UPLOAD}}) == {UPLOAD}
    assert sources({"source": {"$in": [UPLOAD, local]}}) == {UPLOAD, local}
    assert sources({"source": {"$ne": UPLOAD}}) == {local}
    assert sources({"source": {"$nin": [UPLOAD]}}) == {local}
    assert sources({"$not": {"source": UPLOAD}}) == {local}
    assert sources({"$or": [{"source": UPLOAD}, {"title": "no such title"}]}) == {UPLOAD}
    assert sources({"source": {"$eq": UPLOAD, "$in": [UPLOAD, local]}}) == {UPLOAD}
    assert sources({"source": {"$in": [UPLOAD], "$nin": [UPLOAD]}}) == set()
    assert sources({"source": stored}) == {UPLOAD}  # the stored path, as before
    assert sources({"source": local}) == {local}
    assert sources({"source": "notes/other.md"}) == set()


def test_the_openapi_schema_lists_a_hits_name(open_url: str) -> None:
    spec = httpx.get(f"{open_url}/openapi.json").json()
    hit = spec["components"]["schemas"]["HitPublic"]
    assert hit["properties"]["name"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert "name" not in hit.get("required", [])


@pytest.mark.parametrize("remote", [True, False], ids=["through-server", "in-process"])
def test_cli_search_prints_an_uploads_name_not_the_servers_path(
    both: Client,
    open_url: str,
    local_file: Path,
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    remote: bool,
) -> None:
    if remote:
        monkeypatch.setenv("RAGSTORE_URL", open_url)
    capsys.readouterr()
    assert run_cli("search", "roll back", "-c", COLLECTION) == 0
    out = capsys.readouterr().out
    assert f"  {UPLOAD}  " in out
    assert "/uploads/" not in out
    assert f"  {local_file}  " in out  # a file from disk: its own path, as before

    assert run_cli("search", "roll back", "-c", COLLECTION, "--context", "section") == 0
    out = capsys.readouterr().out
    assert f"  {UPLOAD}  " in out and "/uploads/" not in out

    for extra in ((), ("--context", "section")):
        assert run_cli("search", "roll back", "-c", COLLECTION, "--json", *extra) == 0
        out = capsys.readouterr().out
        assert "/uploads/" not in out
        hits = json.loads(out)
        assert _names(hits, local_file) == {"upload": UPLOAD, "local": None}
        assert {h["source"] for h in hits} == {UPLOAD, str(local_file)}
