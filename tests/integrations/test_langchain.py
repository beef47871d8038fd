"""LangChain: langchain-tests' standard ``VectorStoreIntegrationTests`` suite against the
real embedded database, then ragstore's own model behind ``as_retriever()``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from ragstore import Client, Store
from ragstore.auth.keys import KeyStore
from ragstore.config import Settings
from ragstore.errors import (
    CollectionNotFoundError,
    EmptyDocumentError,
    InputError,
    InvalidFilterError,
    ModelMismatchError,
)
from ragstore.integrations.langchain import RagstoreVectorStore
from ragstore.validation import a_type
from tests.api.conftest import running_server, with_


class TestRagstoreStandard(VectorStoreIntegrationTests):
    """The standard suite (sync and async, 25 tests) with its 6-dimensional fake
    embedding: vectors made outside ragstore, stored and searched by vector."""

    @pytest.fixture()
    def vectorstore(self, store: Store) -> Iterator[VectorStore]:  # type: ignore[override]
        vs = RagstoreVectorStore(store, f"lc-{uuid.uuid4().hex[:10]}", self.get_embeddings())
        try:
            yield vs
        finally:
            vs.delete()


def test_standard_suite_stored_the_outside_model_on_the_collection(store: Store) -> None:
    vs = RagstoreVectorStore(
        store, "lc-fake", VectorStoreIntegrationTests.get_embeddings(), model_name="fake-embedding"
    )
    vs.add_texts(["one"], ids=["1"])
    coll = store.get_collection("lc-fake")
    assert (coll["model"], coll["dimension"]) == ("fake-embedding@imported", 6)


def test_an_outside_model_is_refused_on_a_collection_of_another_model(store: Store) -> None:
    """A collection of ragstore's own 384-dimension model took a LangChain model's
    384-dimension vectors without a word; its searches then mixed the two models."""
    RagstoreVectorStore(store, "lc-native").add_texts(["kept by ragstore's model"], ids=["n"])
    outside = DeterministicFakeEmbedding(size=384)
    with pytest.raises(ModelMismatchError, match="holds vectors of all-MiniLM-L6-v2@"):
        RagstoreVectorStore(store, "lc-native", outside).add_texts(["theirs"], ids=["x"])
    with pytest.raises(ModelMismatchError, match="holds vectors of fake-a@imported"):
        RagstoreVectorStore(store, "lc-a", outside, model_name="fake-a").add_texts(["a"])
        RagstoreVectorStore(store, "lc-a", outside, model_name="fake-b").add_texts(["b"])
    assert [t["id"] for t in store.get_texts("lc-native", ["n", "x"])] == ["n"]
    assert store.get_collection("lc-a")["documents"] == 1
    again = RagstoreVectorStore(store, "lc-a", outside, model_name="fake-a")
    assert len(again.add_texts(["the same model again"])) == 1  # the model it holds


@pytest.fixture(scope="module")
def handbook(store: Store) -> RagstoreVectorStore:
    vs = RagstoreVectorStore(store, "lc-handbook")
    vs.add_documents(
        [
            Document(
                page_content="To roll back a schema migration run ragstore db downgrade.",
                metadata={"team": "db", "year": 2024},
            ),
            Document(
                page_content="Backups run nightly and are kept for thirty days.",
                metadata={"team": "ops", "year": 2023},
            ),
            Document(
                page_content="Kittens sleep most of the day.",
                metadata={"team": "pets", "year": 2024},
            ),
        ],
        ids=["rollback", "backups", "kittens"],
    )
    return vs


def test_as_retriever_invoke_uses_ragstores_model_and_hybrid_search(
    handbook: RagstoreVectorStore,
) -> None:
    docs = handbook.as_retriever(search_kwargs={"k": 1}).invoke("how do I undo a migration?")
    assert [d.id for d in docs] == ["rollback"]
    assert docs[0].metadata == {"team": "db", "year": 2024}


def test_retriever_filter_is_ragstores_where_language(handbook: RagstoreVectorStore) -> None:
    retriever = handbook.as_retriever(search_kwargs={"k": 3, "filter": {"year": {"$lt": 2024}}})
    assert [d.id for d in retriever.invoke("how do I undo a migration?")] == ["backups"]


@pytest.mark.parametrize("mode", ["vector", "hybrid", "fulltext"])
def test_relevance_scores_are_between_zero_and_one(
    store: Store, handbook: RagstoreVectorStore, mode: str
) -> None:
    """In every mode relevance is the cosine similarity mapped to [0, 1]: a hybrid hit's
    fused rank score came out as about 0.5 for every hit, a BM25 score above 1."""
    vs = RagstoreVectorStore(store, "lc-handbook", mode=mode)
    scored = vs.similarity_search_with_relevance_scores("nightly backups", k=3)
    assert scored[0][0].id == "backups"
    assert all(0.0 <= s <= 1.0 for _, s in scored)
    assert scored[0][1] > 0.75 > scored[1][1] >= scored[2][1]
    kept = vs.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.75}
    ).invoke("nightly backups")
    assert [d.id for d in kept] == ["backups"]


@pytest.mark.parametrize("mode", ["hybrid", "fulltext"])
async def test_async_relevance_scores_are_the_sync_ones(
    store: Store, handbook: RagstoreVectorStore, mode: str
) -> None:
    """The async relevance search was langchain_core's default: the store's ``mode``
    scores mapped as cosine (hybrid: about 0.55 for every hit), so ``ainvoke`` of a
    threshold retriever dropped the texts ``invoke`` kept."""
    vs = RagstoreVectorStore(store, "lc-handbook", mode=mode)
    query = "nightly backups"
    sync = vs.similarity_search_with_relevance_scores(query, k=3)
    asynced = await vs.asimilarity_search_with_relevance_scores(query, k=3)
    assert [d.id for d, _ in asynced] == [d.id for d, _ in sync]
    assert [s for _, s in asynced] == pytest.approx([s for _, s in sync])
    retriever = vs.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.75}
    )
    assert [d.id for d in await retriever.ainvoke(query)] == ["backups"]
    assert [d.id for d in retriever.invoke(query)] == ["backups"]


def test_delete_without_ids_empties_the_collection_and_keeps_it(store: Store) -> None:
    """``delete()`` deleted the collection: its settings and pinned model went with it."""
    store.create_collection("lc-emptied", model="fake-kept", dimension=6, settings={"bm25_k1": 1.5})
    fake = DeterministicFakeEmbedding(size=6)
    vs = RagstoreVectorStore(store, "lc-emptied", fake, model_name="fake-kept")
    vs.add_texts(["one", "two"], ids=["1", "2"])
    before = store.get_collection("lc-emptied")
    assert vs.delete() is True
    after = store.get_collection("lc-emptied")
    assert after["documents"] == 0
    assert store.get_texts("lc-emptied", ["1", "2"]) == []
    assert (after["model"], after["settings"]) == (before["model"], before["settings"])
    assert after["settings"]["bm25_k1"] == 1.5
    assert RagstoreVectorStore(store, "lc-never-made").delete() is True
    with pytest.raises(CollectionNotFoundError):
        store.get_collection("lc-never-made")


def test_delete_without_ids_over_http_needs_a_write_key_only(
    store: Store, settings: Settings
) -> None:
    """Over HTTP ``delete()`` needed an ``admin`` key (to delete the collection): with a
    ``write`` key, the one its adds need, it raised PermissionDeniedError."""
    writer = KeyStore(store.runtime.db).create("write", name="langchain-writer").secret
    fake = DeterministicFakeEmbedding(size=6)
    with running_server(with_(settings, auth="on")) as url, Client(url, api_key=writer) as c:
        vs = RagstoreVectorStore(c, "lc-over-http", fake, model_name="fake-http")
        vs.add_texts(["one", "two"], ids=["1", "2"])
        assert vs.delete() is True
    coll = store.get_collection("lc-over-http")
    assert (coll["documents"], coll["model"]) == (0, "fake-http@imported")


def test_a_self_query_runs_as_ragstores_where_filter(handbook: RagstoreVectorStore) -> None:
    """What SelfQueryRetriever does with an LLM's structured query, without the LLM: the
    metadata described from ``fields``, the query translated, then ``vectorstore.search``
    with the translated arguments; operators ragstore lacks are refused."""
    from langchain_core.structured_query import (
        Comparator,
        Comparison,
        Operation,
        Operator,
        StructuredQuery,
    )

    from ragstore.integrations.langchain import RagstoreTranslator

    info = {a["name"]: a for a in handbook.metadata_field_info()}
    assert set(info) == {"team", "year"}
    assert (info["team"]["type"], info["year"]["type"]) == ("string", "integer")
    assert "'ops'" in info["team"]["description"]
    asked = StructuredQuery(
        query="when do backups or migrations run",
        filter=Operation(
            operator=Operator.AND,
            arguments=[
                Comparison(comparator=Comparator.IN, attribute="team", value=["db", "ops"]),
                Operation(
                    operator=Operator.NOT,
                    arguments=[Comparison(comparator=Comparator.GTE, attribute="year", value=2024)],
                ),
            ],
        ),
        limit=None,
    )
    query, kwargs = RagstoreTranslator().visit_structured_query(asked)
    assert kwargs == {
        "filter": {"$and": [{"team": {"$in": ["db", "ops"]}}, {"$not": {"year": {"$gte": 2024}}}]}
    }
    assert [d.id for d in handbook.search(query, "similarity", **kwargs)] == ["backups"]
    dated = Comparison(
        comparator=Comparator.LT,
        attribute="created_at",
        value={"date": "2000-01-01", "type": "date"},
    )
    assert handbook.search("backups", "similarity", filter=dated.accept(RagstoreTranslator())) == []
    with pytest.raises(ValueError, match="disallowed comparator"):
        Comparison(comparator=Comparator.LIKE, attribute="team", value="o%").accept(
            RagstoreTranslator()
        )
    assert RagstoreVectorStore(handbook.backend, "lc-none").metadata_field_info() == []


def test_a_refused_add_with_an_outside_model_makes_no_collection(store: Store) -> None:
    """With a LangChain embedding the collection was made for its model before the texts
    were checked: an add refused for an empty text, bad metadata or ids of another length
    left an empty collection pinned to that model, and the next add with the right model
    was refused as a model mismatch. The call is checked first now (before the model is
    called), and a refused one leaves nothing."""
    wrong = RagstoreVectorStore(
        store, "lc-refused", DeterministicFakeEmbedding(size=8), model_name="fake-8"
    )
    with pytest.raises(EmptyDocumentError):
        wrong.add_texts(["fine", "  "])
    with pytest.raises(InputError, match="non-finite"):
        wrong.add_texts(["fine"], metadatas=[{"score": float("nan")}])
    with pytest.raises(InputError, match="ids has 2 entries for 1 texts"):
        wrong.add_texts(["fine"], ids=["a", "b"])
    assert "lc-refused" not in {c["name"] for c in store.list_collections()}
    right = RagstoreVectorStore(
        store, "lc-refused", DeterministicFakeEmbedding(size=16), model_name="fake-16"
    )
    assert right.add_texts(["kept"], ids=["k"]) == ["k"]
    assert store.get_collection("lc-refused")["dimension"] == 16


def test_k_is_not_coerced(handbook: RagstoreVectorStore) -> None:
    """``similarity_search`` cast k with ``int()``: k=2.5 searched for 2 hits, k=True for
    1 and k="3" for 3, where every other search of ragstore (``Store.search``, the
    relevance-score search beside it, the API) refuses them. Now refused alike; an
    integer of numpy's is an integer."""
    import numpy as np

    for k in (2.5, True, "3"):
        with pytest.raises(InputError, match="k must be an integer"):
            handbook.similarity_search("backups", k=k)  # type: ignore[arg-type]
    assert len(handbook.similarity_search("backups", k=np.int64(2))) == 2  # type: ignore[arg-type]


def test_a_model_name_with_a_revision_is_taken(store: Store) -> None:
    """``model_name="NAME@REVISION"`` (ragstore's way to name a model's revision) was
    compared by its name alone with the collection's ``NAME@REVISION``: the first add made
    the collection and was then refused as a mismatch of the model with itself ("holds
    vectors of org/model@v2, and these texts come with vectors of org/model@v2"), every
    later one too. The revision now counts: the same one is taken, another refused."""
    fake = DeterministicFakeEmbedding(size=4)
    vs = RagstoreVectorStore(store, "lc-revision", fake, model_name="org/model@v2")
    assert vs.add_texts(["first"], ids=["1"]) == ["1"]
    assert vs.add_texts(["second"], ids=["2"]) == ["2"]
    assert store.get_collection("lc-revision")["model"] == "org/model@v2"
    assert RagstoreVectorStore(store, "lc-revision", fake, model_name="org/model").add_texts(
        ["any revision"], ids=["3"]
    ) == ["3"]
    with pytest.raises(ModelMismatchError, match="holds vectors of org/model@v2"):
        RagstoreVectorStore(store, "lc-revision", fake, model_name="org/model@v3").add_texts(
            ["another revision"]
        )
    assert store.get_collection("lc-revision")["documents"] == 3


def test_an_argument_the_store_does_not_take_is_refused_not_ignored(store: Store) -> None:
    """Keyword arguments other than ``k`` and ``filter`` were ignored: ``where=`` (ragstore's
    own word for the filter) searched the whole collection, and ``delete(filter=...)`` had
    no ids, so it deleted the whole collection. Each is refused now, naming what is taken,
    and nothing is deleted."""
    vs = RagstoreVectorStore(store, "lc-kwargs")
    vs.add_texts(["alpha text", "beta text"], metadatas=[{"t": 1}, {"t": 2}], ids=["a", "b"])
    with pytest.raises(InputError, match=r"does not take where=; it takes query=, k=, filter="):
        vs.similarity_search("alpha", k=2, where={"t": 2})
    with pytest.raises(InputError, match="does not take where="):
        vs.as_retriever(search_kwargs={"where": {"t": 2}}).invoke("alpha")
    with pytest.raises(InputError, match="does not take where="):
        vs.similarity_search_with_relevance_scores("alpha", k=2, where={"t": 2})
    with pytest.raises(InputError, match="does not take where="):
        vs.similarity_search_by_vector([0.1] * 384, k=2, where={"t": 2})
    with pytest.raises(InputError, match="by position"):
        vs.similarity_search_with_score("alpha", 2, {"t": 2})
    with pytest.raises(InputError, match=r"delete does not take filter=; it takes ids= alone"):
        vs.delete(filter={"t": 1})
    assert store.get_collection("lc-kwargs")["documents"] == 2
    assert [d.id for d in vs.similarity_search("alpha", k=2, filter={"t": 2})] == ["b"]


@pytest.mark.parametrize("distance", ["l2", "ip"])
def test_relevance_follows_the_collections_own_distance(store: Store, distance: str) -> None:
    """Relevance was mapped by the store's ``distance`` argument, not the collection's: an
    ``l2`` or ``ip`` score passed through unmapped (an ``l2`` score is minus the distance,
    so every relevance was 0 or below and LangChain warned), and a store opened on an
    ``l2`` collection without ``distance=`` mapped its scores as cosine similarities."""
    emb = DeterministicFakeEmbedding(size=8)
    name = f"lc-dist-{distance}"
    made = RagstoreVectorStore(store, name, emb, model_name=f"fake-{distance}", distance=distance)
    made.add_texts(["alpha", "beta", "gamma"], ids=["a", "b", "c"])
    assert store.get_collection(name)["distance"] == distance
    opened = RagstoreVectorStore(store, name, emb, model_name=f"fake-{distance}")
    for vs in (made, opened):
        scored = vs.similarity_search_with_relevance_scores("alpha", k=3)
        assert scored[0][0].id == "a"
        assert all(0.0 <= s <= 1.0 for _, s in scored), scored
        assert scored[0][1] >= scored[1][1] >= scored[2][1]
        if distance == "l2":
            assert scored[0][1] == pytest.approx(1.0)


def test_a_text_too_large_for_the_full_text_index_is_named_and_nothing_is_stored(
    store: Store,
) -> None:
    """A text stored whole with its vector (one chunk) whose tsvector is over PostgreSQL's
    1 MB failed at its write with "string is too long for tsvector", naming no text, after
    the batches before it were stored. It is refused before anything is written now,
    naming its index and id; the collection is not made either."""
    import random
    import string

    rnd = random.Random(7)
    huge = " ".join("".join(rnd.choices(string.ascii_lowercase, k=10)) for _ in range(100_000))
    texts = [f"small text {i}" for i in range(300)] + [huge]
    ids = [f"t{i}" for i in range(301)]
    vs = RagstoreVectorStore(
        store, "lc-tsv", DeterministicFakeEmbedding(size=4), model_name="fake-tsv"
    )
    with pytest.raises(InputError, match=r"texts\[300\] \(id 't300'\) has too many distinct"):
        store.add_texts("lc-tsv-new", texts, ids=ids, vectors=[[0.1] * 384] * 301)
    assert "lc-tsv-new" not in {c["name"] for c in store.list_collections()}
    vs.add_texts(["first"], ids=["first"])
    with pytest.raises(InputError, match=r"Nothing of this call was stored"):
        vs.add_texts(texts, ids=ids)
    assert store.get_collection("lc-tsv")["documents"] == 1


def test_a_distance_the_model_is_not_pinned_with_is_refused(store: Store) -> None:
    """A collection's distance is its model's: ``distance="ip"`` for a model already
    pinned with ``l2`` (or ragstore's cosine model) made an ``l2`` (cosine) collection
    without a word, and its searches measured another distance than asked. It is refused
    now; left out, the model's own is taken."""
    from ragstore.errors import ModelMismatchError

    emb = DeterministicFakeEmbedding(size=8)
    RagstoreVectorStore(store, "lc-d1", emb, model_name="fake-d", distance="l2").add_texts(["a"])
    other = RagstoreVectorStore(store, "lc-d2", emb, model_name="fake-d", distance="ip")
    with pytest.raises(ModelMismatchError, match="pinned with distance l2, not ip"):
        other.add_texts(["b"])
    assert "lc-d2" not in {c["name"] for c in store.list_collections()}
    with pytest.raises(ModelMismatchError, match="pinned with distance cosine, not l2"):
        store.create_collection("lc-d3", distance="l2")
    same = RagstoreVectorStore(store, "lc-d2", emb, model_name="fake-d")
    assert len(same.add_texts(["b"])) == 1
    assert store.get_collection("lc-d2")["distance"] == "l2"


def test_a_self_query_on_a_metadata_key_named_like_a_built_in_reads_the_metadata(
    store: Store,
) -> None:
    """A loader's ``source`` and ``page`` keys were described to the self-query retriever
    as ``source`` and ``page``, which ragstore's filter reads as its built-in columns: a
    filter on the file the text came from compared the text id, one on its page the
    chunk's (none). They are described by their metadata path, which the translator
    passes on as is."""
    from langchain_core.structured_query import Comparator, Comparison

    from ragstore.integrations.langchain import RagstoreTranslator

    vs = RagstoreVectorStore(store, "lc-built-in-keys")
    vs.add_texts(
        ["Backups run nightly.", "Restore a backup.", "Kittens sleep."],
        metadatas=[
            {"source": "ops.pdf", "page": 3},
            {"source": "ops.pdf", "page": 4},
            {"source": "pets.pdf", "page": 3},
        ],
        ids=["ops.pdf", "restore", "kittens"],
    )
    names = {a["name"] for a in vs.metadata_field_info()}
    assert names == {"document.source", "document.page"}
    by_source = Comparison(
        comparator=Comparator.EQ, attribute="document.source", value="ops.pdf"
    ).accept(RagstoreTranslator())
    assert sorted(
        d.id or "" for d in vs.search("backups", "similarity", k=5, filter=by_source)
    ) == [
        "ops.pdf",
        "restore",
    ]
    by_page = Comparison(comparator=Comparator.EQ, attribute="document.page", value=3).accept(
        RagstoreTranslator()
    )
    assert sorted(d.id or "" for d in vs.search("backups", "similarity", k=5, filter=by_page)) == [
        "kittens",
        "ops.pdf",
    ]


def test_a_dotted_key_is_described_by_its_escaped_field(store: Store) -> None:
    """A key holding a dot (``v1.2``) was left out of the self-query retriever's fields:
    no filter could name it. It is described as ``v1\\.2``, which finds it, and a nested
    path keeps its dots (``author.name``, not the one key ``author\\.name``)."""
    from langchain_core.structured_query import Comparator, Comparison

    from ragstore.integrations.langchain import RagstoreTranslator

    vs = RagstoreVectorStore(store, "lc-dotted-keys")
    vs.add_texts(
        ["Backups run nightly.", "Kittens sleep."],
        metadatas=[{"v1.2": "yes", "author": {"name": "Ann"}}, {"v1": {"2": "yes"}}],
        ids=["backups", "kittens"],
    )
    names = {a["name"] for a in vs.metadata_field_info()}
    assert names == {"v1\\.2", "author.name", "v1.2"}
    for name, expected in (("v1\\.2", ["backups"]), ("v1.2", ["kittens"])):
        where = Comparison(comparator=Comparator.EQ, attribute=name, value="yes").accept(
            RagstoreTranslator()
        )
        assert [d.id for d in vs.search("sleep", "similarity", k=5, filter=where)] == expected


class _TableEmbeddings(Embeddings):
    """Known vectors: each text's from a table (the query's too), so that a test can
    compute LangChain's own MMR choice from the very vectors ragstore holds."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.table[t] for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.table[text]


def _mmr_table() -> dict[str, list[float]]:
    import numpy as np

    rng = np.random.default_rng(7)
    topic = rng.normal(size=8)
    table = {f"copy {i}": topic for i in range(3)}  # three copies of one vector
    table.update({f"near {i}": topic + rng.normal(scale=0.8, size=8) for i in range(4)})
    table.update({f"far {i}": rng.normal(size=8) for i in range(3)})
    table["query"] = topic + rng.normal(scale=0.3, size=8)
    return {t: [float(x) for x in v] for t, v in table.items()}


@pytest.mark.parametrize(("k", "fetch_k", "lambda_mult"), [(4, 10, 0.5), (3, 6, 0.25)])
def test_mmr_retriever_picks_what_langchains_mmr_picks(
    store: Store, k: int, fetch_k: int, lambda_mult: float
) -> None:
    """``max_marginal_relevance_search`` raised NotImplementedError (langchain_core's), so
    ``as_retriever(search_type="mmr")`` failed; it now picks what langchain_core's own
    ``maximal_marginal_relevance`` picks from the best ``fetch_k`` by vector."""
    import numpy as np
    from langchain_core.vectorstores.utils import maximal_marginal_relevance

    table = _mmr_table()
    texts = [t for t in table if t != "query"]
    vs = RagstoreVectorStore(store, "lc-mmr", _TableEmbeddings(table), model_name="table")
    vs.add_texts(texts, ids=texts)
    candidates = vs.similarity_search_by_vector(table["query"], k=fetch_k)
    chosen = maximal_marginal_relevance(
        np.array(table["query"]),
        [table[d.page_content] for d in candidates],
        lambda_mult=lambda_mult,
        k=k,
    )
    expected = [candidates[i].id for i in chosen]
    assert len({i for i in expected if i and i.startswith("copy")}) <= 1  # diverse
    retriever = vs.as_retriever(
        search_type="mmr", search_kwargs={"k": k, "fetch_k": fetch_k, "lambda_mult": lambda_mult}
    )
    assert [d.id for d in retriever.invoke("query")] == expected
    by_vector = vs.max_marginal_relevance_search_by_vector(
        table["query"], k=k, fetch_k=fetch_k, lambda_mult=lambda_mult
    )
    assert [d.id for d in by_vector] == expected
    plain = [d.id for d in vs.similarity_search("query", k=3)]
    assert {"copy 0", "copy 1", "copy 2"} == set(plain)  # the copies fill a plain top 3


def test_mmr_search_with_ragstores_model_and_a_filter(handbook: RagstoreVectorStore) -> None:
    """Embedded by ragstore (hybrid search), within a filter; the options are checked by
    the search (fetch_k at least k) and unknown arguments refused."""
    docs = handbook.max_marginal_relevance_search(
        "how do I undo a migration?", k=2, fetch_k=3, filter={"year": 2024}
    )
    assert {d.id for d in docs} == {"rollback", "kittens"}
    assert docs[0].id == "rollback"
    with pytest.raises(InputError, match=r"fetch_k \(2\) is smaller than k \(3\)"):
        handbook.max_marginal_relevance_search("migration", k=3, fetch_k=2)
    with pytest.raises(InputError, match="lambda_mult must be between 0"):
        handbook.max_marginal_relevance_search("migration", lambda_mult=2)
    with pytest.raises(InputError, match="does not take where="):
        handbook.max_marginal_relevance_search("migration", where={"year": 2024})


def test_a_text_ragstore_chunks_is_one_whole_document(store: Store) -> None:
    """A text added without an embedding and longer than one of ragstore's chunks is
    found by each chunk: k=2 answered that text twice, each holding a part of it, and
    never the second best; MMR could pick two of its chunks, and answered one text."""
    long = " ".join(
        f"Backup {i} of the database runs nightly and restores fast." for i in range(80)
    )
    vs = RagstoreVectorStore(store, "lc-chunked")
    vs.add_texts([long, "Kittens sleep."], [{"n": 1}, {"n": 2}], ids=["long", "cat"])
    assert len(store.search("lc-chunked", "nightly database backups", k=5)["data"]) > 2
    q = "nightly database backups"
    for docs in (
        vs.similarity_search(q, k=2),
        [d for d, _ in vs.similarity_search_with_relevance_scores(q, k=2)],
    ):
        assert [d.id for d in docs] == ["long", "cat"]
        assert docs[0] == vs.get_by_ids(["long"])[0]
    # MMR picks chunks: with relevance first every pick was a chunk of the long text, the
    # repeats were dropped, and k=2 answered one text; with fetch_k=2 (two of its
    # chunks) the candidates are widened to hold two texts. k=3 of two: the two
    for fetch_k, k in ((10, 2), (2, 2), (10, 3)):
        mmr = vs.max_marginal_relevance_search(q, k=k, fetch_k=fetch_k, lambda_mult=1.0)
        assert [d.id for d in mmr] == ["long", "cat"]
        assert mmr[0].page_content == long


def test_a_query_or_texts_of_the_wrong_type_are_refused(store: Store) -> None:
    """A query that was no string was made one (``None`` searched for the word "None",
    answered with hits); texts or ids given as one string were read as one per character
    (``add_texts("abc")`` stored "a", "b" and "c"); ``None`` texts raised TypeError."""
    vs = RagstoreVectorStore(store, "lc-types")
    for query in (None, 5, b"alpha"):
        with pytest.raises(InputError, match="similarity_search's query must be text"):
            vs.similarity_search(query)  # type: ignore[arg-type]
        with pytest.raises(InputError, match="relevance_scores's query must be text"):
            vs.similarity_search_with_relevance_scores(query)  # type: ignore[arg-type]
        with pytest.raises(InputError, match="marginal_relevance_search's query must be text"):
            vs.max_marginal_relevance_search(query)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="texts is one string, not a list of texts"):
        vs.add_texts("xyz")
    with pytest.raises(InputError, match="texts is None, not a list; pass a list of strings"):
        vs.add_texts(None)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="ids is one string, not a list of ids"):
        vs.get_by_ids("a")
    with pytest.raises(CollectionNotFoundError):
        store.get_collection("lc-types")  # nothing was searched, stored or made


async def test_mmr_retriever_with_k_above_20_and_no_fetch_k_returns_k(store: Store) -> None:
    """``fetch_k`` defaulted to LangChain's 20 and the search refuses a pool smaller than
    ``k``: an MMR retriever with ``k`` 25 and no ``fetch_k`` raised InputError, where
    LangChain's own stores return up to ``k``. An explicit ``fetch_k`` below ``k`` is still
    refused."""
    texts = [f"Note {i}: the backup of volume {i} ran." for i in range(25)]
    ids = [f"n{i}" for i in range(25)]
    ours = RagstoreVectorStore(store, "lc-mmr-k25")
    ours.add_texts(texts, ids=ids)
    fake = DeterministicFakeEmbedding(size=8)
    theirs = RagstoreVectorStore(store, "lc-mmr-k25-vec", fake, model_name="fake-k25")
    theirs.add_texts(texts, ids=ids)
    for vs in (ours, theirs):
        retriever = vs.as_retriever(search_type="mmr", search_kwargs={"k": 25})
        assert sorted(d.id or "" for d in retriever.invoke("backup")) == sorted(ids)
        assert sorted(d.id or "" for d in await retriever.ainvoke("backup")) == sorted(ids)
        with pytest.raises(InputError, match=r"fetch_k \(10\) is smaller than k \(25\)"):
            vs.max_marginal_relevance_search("backup", k=25, fetch_k=10)
    by_vector = await theirs.amax_marginal_relevance_search_by_vector(fake.embed_query("x"), 25)
    assert len(by_vector) == 25


@pytest.mark.parametrize("filter_", ["team = db", ["team", "db"], 5])
def test_a_filter_that_is_no_dict_is_told_in_langchains_words(
    handbook: RagstoreVectorStore, filter_: Any
) -> None:
    """A ``filter`` that is no dict was told "send 'where' as an object", naming ragstore's
    own parameter, which a LangChain caller never passed; now it names ``filter``, with
    the same code as the Store's and the Client's refusal of such a ``where``."""
    retriever = handbook.as_retriever(search_kwargs={"k": 2, "filter": filter_})
    for call in (
        lambda: handbook.similarity_search("backups", k=2, filter=filter_),
        lambda: handbook.similarity_search_with_relevance_scores("backups", k=2, filter=filter_),
        lambda: handbook.max_marginal_relevance_search("backups", k=2, filter=filter_),
        lambda: retriever.invoke("backups"),
    ):
        with pytest.raises(InvalidFilterError) as caught:
            call()
        assert caught.value.code == "invalid_filter"
        assert caught.value.message == (
            f'filter must be a dict, e.g. {{"team": "ops"}} or '
            f'{{"year": {{"$gte": 2020}}}}, got {a_type(filter_)} ({filter_!r})'
        )
