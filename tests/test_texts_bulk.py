"""A large ``add_texts`` call (over ``RAGSTORE_BULK_LOAD_BYTES``) goes through the ingest's
pipeline, into an empty collection as one bulk load, and stores exactly what the batch by
batch path stores: the same documents, chunks, metadata and search results."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ragstore.config import Settings
from ragstore.db import spaces
from ragstore.errors import EmptyDocumentError
from ragstore.ingest import texts as texts_mod
from ragstore.ingest.texts import add_texts
from ragstore.runtime import Runtime
from ragstore.search import search

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
    texts, ids, metas = _corpus()
    assert texts_mod._in_bulk(bulk_rt, texts) and not texts_mod._in_bulk(rt, texts)
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
    docs, _ = _stored(bulk_rt, "one-bad")
    assert [d[0] for d in docs] == sorted(i for i in ids if i != "doc-5")
