"""A write that creates its collection and then stores nothing does not leave the
collection behind (CLI ``ingest``, ``Store.ingest``/``add_document``/``add_texts``), so a
retry with another model is not refused; a concurrent writer's document into the new
collection is kept. On the real embedded database and model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ragstore import Store
from ragstore.config import Settings
from ragstore.errors import CollectionNotFoundError, EmptyDocumentError, InputError, RagstoreError
from ragstore.ingest.service import created_for_this_write
from tests.conftest import run_cli

OTHER_MODEL = "all-MiniLM-L6-v2-256d"  # another built-in: a retry's other choice


@pytest.fixture(scope="module")
def store(settings: Settings) -> Iterator[Store]:
    with Store(settings=settings) as s:
        yield s


def _names(store: Store) -> list[str]:
    return [c["name"] for c in store.list_collections()]


def _empty_file(tmp_path: Path) -> Path:
    path = tmp_path / "empty.md"
    path.write_text("   \n")
    return path


def test_store_ingest_that_stores_nothing_leaves_no_collection(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(EmptyDocumentError):
        store.ingest("fresh-ingest", _empty_file(tmp_path))
    assert "fresh-ingest" not in _names(store)
    good = tmp_path / "good.md"
    good.write_text("# Kittens\n\nKittens sleep most of the day.\n")
    with Store(settings=settings, model=OTHER_MODEL) as other:
        out = other.ingest("fresh-ingest", good)
        assert [d["status"] for d in out["data"]] == ["added"]
        assert OTHER_MODEL in other.get_collection("fresh-ingest")["model"]


def test_store_add_document_that_fails_to_parse_leaves_no_collection(
    store: Store, settings: Settings
) -> None:
    with pytest.raises(RagstoreError):
        store.add_document("fresh-doc", "report.pdf", "this is not a PDF")
    assert "fresh-doc" not in _names(store)
    with Store(settings=settings, model=OTHER_MODEL) as other:
        assert other.add_document("fresh-doc", "notes.md", "Dogs need a walk.")["status"] == (
            "added"
        )


def test_store_add_texts_refused_after_creating_leaves_no_collection(
    store: Store, settings: Settings
) -> None:
    """The default model a vector-only one (no weights to run): the collection was made,
    then the texts without vectors refused."""
    store.create_collection("seed-outside", model="outside-made@v1", dimension=4)
    with Store(settings=settings, model="outside-made@v1") as outside:
        with pytest.raises(InputError, match="cannot run"):
            outside.add_texts("fresh-texts", ["no vector given"], ids=["a"])
        assert "fresh-texts" not in _names(outside)
        assert outside.add_texts("fresh-texts", ["x"], ids=["a"], vectors=[[1, 0, 0, 0]])
    assert "fresh-texts" in _names(store)


def test_cli_ingest_that_stores_nothing_leaves_no_collection(
    cli_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_cli("ingest", str(_empty_file(tmp_path)), "-c", "fresh-cli") == 1
    capsys.readouterr()
    assert run_cli("collections", "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert "fresh-cli" not in json.dumps(listed)
    good = tmp_path / "good.md"
    good.write_text("# Fish\n\nGoldfish live in water.\n")
    monkeypatch.setenv("RAGSTORE_MODEL", OTHER_MODEL)
    assert run_cli("ingest", str(good), "-c", "fresh-cli") == 0
    capsys.readouterr()
    assert run_cli("collections", "list", "--json") == 0
    assert OTHER_MODEL in capsys.readouterr().out


def test_a_concurrent_writers_document_keeps_the_collection(
    store: Store, settings: Settings
) -> None:
    """The creating write stores nothing, another writer stored into the new collection
    meanwhile: the collection and that document stay."""
    rt = store.runtime
    coll, created = rt.open_or_create("fresh-shared")
    assert created
    with Store(settings=settings) as other, created_for_this_write(rt, coll, created):
        other.add_texts("fresh-shared", ["the other writer's text"], ids=["theirs"])
    assert [t["id"] for t in store.get_texts("fresh-shared", ["theirs"])] == ["theirs"]
    # and one made by this call that nobody used is removed
    coll, created = rt.open_or_create("fresh-unused")
    with created_for_this_write(rt, coll, created):
        pass
    assert "fresh-unused" not in _names(store)


def test_a_write_into_a_collection_deleted_while_it_embedded_is_told_so(
    store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that looked the collection up, then embedded while another client deleted
    it (or the write that made it removed it again, having stored nothing), went on to
    write into a collection row that no longer existed: the answer was a foreign-key
    conflict or a "retry" for a dropped table, neither saying what happened. It is now
    collection_not_found naming the collection."""
    store.add_texts("deleted-meanwhile", ["the first text"], ids=["first"])
    rt = store.runtime
    embedder = rt.embedder_for(rt.collection("deleted-meanwhile"))
    embed = embedder.embed

    def embed_while_deleted(texts: list[str]) -> Any:
        with Store(settings=settings) as other:
            other.delete_collection("deleted-meanwhile")
        return embed(texts)

    monkeypatch.setattr(embedder, "embed", embed_while_deleted)
    with pytest.raises(CollectionNotFoundError) as err:
        store.add_texts("deleted-meanwhile", ["a second text"], ids=["second"])
    assert "'deleted-meanwhile' was deleted while" in err.value.message
    assert "deleted-meanwhile" not in _names(store)
