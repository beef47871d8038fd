"""LlamaIndex: ``VectorStoreIndex.from_vector_store(...).as_retriever()`` over a ragstore
collection on the real embedded database and model, with metadata filters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import httpx
import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import node_to_metadata_dict

from ragstore import Client, Store
from ragstore.config import Settings
from ragstore.errors import (
    CollectionNotFoundError,
    EmptyDocumentError,
    InputError,
    InvalidFilterError,
)
from ragstore.integrations.backend import Backend
from ragstore.integrations.llamaindex import RagstoreEmbedding, RagstoreVectorStore, to_where
from ragstore.validation import a_type
from tests.api.conftest import running_server, with_
from tests.search_helpers import reference_mmr

NODES = [
    TextNode(
        id_="rollback",
        text="To roll back a schema migration run ragstore db downgrade.",
        metadata={"team": "db", "year": 2024},
    ),
    TextNode(
        id_="backups",
        text="Backups run nightly and are kept for thirty days.",
        metadata={"team": "ops", "year": 2023},
    ),
    TextNode(
        id_="restore",
        text="Restore a backup with ragstore restore FILE.",
        metadata={"team": "ops", "year": 2024},
    ),
]


@pytest.fixture(scope="module")
def url(settings: Settings) -> Iterator[str]:
    """The URL of a real server on loopback (auth off) over the module's database."""
    with running_server(with_(settings, auth="off")) as served:
        yield served


@pytest.fixture(scope="module")
def http(url: str) -> Iterator[Client]:
    """A Client of that server."""
    with Client(url) as client:
        yield client


@pytest.fixture(params=["store", "client"])
def backend(request: pytest.FixtureRequest, store: Store) -> Backend:
    """The in-process Store, or a Client over HTTP: the vector store means the same on
    either."""
    if request.param == "store":
        return store
    return cast(Client, request.getfixturevalue("http"))


@pytest.fixture(scope="module")
def index(store: Store) -> VectorStoreIndex:
    vs = RagstoreVectorStore(store, "li-handbook")
    vs.add(NODES)  # no embeddings on the nodes: ragstore embeds them
    return VectorStoreIndex.from_vector_store(
        vs, embed_model=RagstoreEmbedding(store, "li-handbook")
    )


def test_retriever_finds_the_node_with_its_metadata(index: VectorStoreIndex) -> None:
    found = index.as_retriever(similarity_top_k=1).retrieve("how do I undo a migration?")
    assert [n.node.node_id for n in found] == ["rollback"]
    assert found[0].node.metadata == {"team": "db", "year": 2024}
    assert found[0].node.get_content() == NODES[0].text


def test_retriever_applies_metadata_filters(index: VectorStoreIndex) -> None:
    filters = MetadataFilters(
        filters=[
            MetadataFilter(key="team", value="ops"),
            MetadataFilter(key="year", value=2024, operator=FilterOperator.GTE),
        ]
    )
    found = index.as_retriever(similarity_top_k=3, filters=filters).retrieve(
        "how long are backups kept?"
    )
    assert [n.node.node_id for n in found] == ["restore"]


def test_inserted_documents_are_embedded_by_the_index_and_deleted_by_ref(
    index: VectorStoreIndex, store: Store
) -> None:
    index.insert(
        Document(text="Kittens sleep most of the day.", id_="pets-doc", metadata={"team": "pets"})
    )
    found = index.as_retriever(similarity_top_k=1).retrieve("which animal naps a lot?")
    assert found[0].node.ref_doc_id == "pets-doc"
    index.delete_ref_doc("pets-doc")
    left = index.as_retriever(similarity_top_k=5).retrieve("which animal naps a lot?")
    assert "pets-doc" not in {n.node.ref_doc_id for n in left}
    assert store.get_collection("li-handbook")["documents"] == 3


def test_query_by_embedding_alone(index: VectorStoreIndex, store: Store) -> None:
    vs = index.vector_store
    embedding = RagstoreEmbedding(store, "li-handbook").get_query_embedding("nightly backups")
    result = vs.query(VectorStoreQuery(query_embedding=embedding, similarity_top_k=1))
    assert result.ids == ["backups"]


def test_a_query_restricted_to_nodes_or_documents_answers_from_those_alone(
    store: Store,
) -> None:
    # node_ids and doc_ids were ignored: a retriever built for some nodes
    # (VectorIndexRetriever(node_ids=...)) was answered from the whole collection
    vs = RagstoreVectorStore(store, "li-restricted")
    nodes = [
        TextNode(id_=f"{doc}-{i}", text=text)
        for doc, texts in (
            ("db", ["Roll back a migration with db downgrade."]),
            ("ops", ["Backups run nightly.", "Restore a backup with ragstore restore."]),
        )
        for i, text in enumerate(texts)
    ]
    for node in nodes:
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(
            node_id=node.node_id.split("-")[0]
        )
    vs.add(nodes)

    def ids(**restrict: list[str] | None) -> list[str]:
        query = VectorStoreQuery(query_str="backups", similarity_top_k=5, **restrict)
        return sorted(vs.query(query).ids or [])

    assert ids() == ["db-0", "ops-0", "ops-1"]
    assert ids(node_ids=["db-0"]) == ["db-0"]
    assert ids(doc_ids=["ops"]) == ["ops-0", "ops-1"]
    assert ids(doc_ids=["ops"], node_ids=["ops-1", "db-0"]) == ["ops-1"]
    assert ids(node_ids=[]) == ["db-0", "ops-0", "ops-1"]  # what as_retriever() passes
    filters = MetadataFilters(filters=[MetadataFilter(key="ref_doc_id", value="db")])
    only = vs.query(
        VectorStoreQuery(
            query_str="backups", similarity_top_k=5, filters=filters, node_ids=["ops-0"]
        )
    )
    assert only.ids == []


def test_vector_store_info_describes_the_nodes_metadata(
    index: VectorStoreIndex, store: Store
) -> None:
    """What the auto-retriever is told of the metadata: the nodes' own keys with their
    types and values, none of LlamaIndex's bookkeeping (``_node_content``, ``doc_id``)."""
    vs = RagstoreVectorStore(store, "li-handbook")
    info = vs.vector_store_info("Operations handbook notes")
    got = {m.name: m for m in info.metadata_info}
    assert set(got) == {"team", "year"}
    assert (got["team"].type, got["year"].type) == ("str", "int")
    assert "'ops'" in got["team"].description and "2024" in got["year"].description
    assert info.content_info == "Operations handbook notes"
    assert RagstoreVectorStore(store, "li-none").vector_store_info("x").metadata_info == []


def test_filters_translate_to_ragstores_where_language() -> None:
    filters = MetadataFilters(
        condition=FilterCondition.OR,
        filters=[
            MetadataFilter(key="team", value=["db", "ops"], operator=FilterOperator.IN),
            MetadataFilter(key="year", value=2020, operator=FilterOperator.LT),
        ],
    )
    assert to_where(filters) == {"$or": [{"team": {"$in": ["db", "ops"]}}, {"year": {"$lt": 2020}}]}
    with pytest.raises(InputError, match="operator text_match on 'title' has no ragstore"):
        to_where(
            MetadataFilters(
                filters=[MetadataFilter(key="title", value="x", operator=FilterOperator.TEXT_MATCH)]
            )
        )


def test_nodes_with_and_without_embeddings_are_refused_not_silently_reembedded(
    store: Store,
) -> None:
    """Some nodes with an embedding, some without: ragstore embedded them all with its
    model and dropped the given vectors unsaid. It refuses the call, naming a node of
    each kind, and stores nothing."""
    vs = RagstoreVectorStore(store, "li-mixed")
    mixed = [
        TextNode(id_="with", text="Has its own vector.", embedding=[0.1] * 384),
        TextNode(id_="without", text="Has none."),
    ]
    with pytest.raises(InputError, match=r"nodes\[1\] has no embedding while nodes\[0\]"):
        vs.add(mixed)
    assert "li-mixed" not in [c["name"] for c in store.list_collections()]


def test_a_collection_ingested_outside_llamaindex_is_queried_not_crashed(store: Store) -> None:
    """A collection filled by ``ragstore ingest`` (or LangChain, or ``Store.add_texts``)
    has no LlamaIndex node in its metadata: every query over it raised ValueError ("Node
    content not found in metadata dict"). Its hits now come back as text nodes, their
    ids the documents' sources and their metadata the stored one."""
    store.add_document("li-plain", "guide.md", "# Guide\n\nBackups run nightly.\n")
    store.add_texts("li-plain", ["Kittens sleep most of the day."], [{"team": "pets"}], ["cat"])
    vs = RagstoreVectorStore(store, "li-plain")
    found = vs.query(VectorStoreQuery(query_str="which animal naps?", similarity_top_k=2))
    assert found.ids is not None and found.nodes is not None
    assert found.ids[0] == "cat"
    assert found.nodes[0].node_id == "cat"
    assert found.nodes[0].get_content() == "Kittens sleep most of the day."
    assert found.nodes[0].metadata == {"team": "pets"}
    retrieved = VectorStoreIndex.from_vector_store(
        vs, embed_model=RagstoreEmbedding(store, "li-plain")
    ).as_retriever(similarity_top_k=2)
    assert "Backups run nightly." in retrieved.retrieve("nightly backups")[0].node.get_content()


def test_a_node_ragstore_chunks_is_answered_once_and_whole(store: Store) -> None:
    """A node added without an embedding and longer than one of ragstore's chunks (a
    LlamaIndex node of its default 1024 tokens) is found by each chunk: a query for two
    nodes answered that node twice, each holding a part of its text, and not the other."""
    long = " ".join(
        f"Backup {i} of the database runs nightly and restores fast." for i in range(80)
    )
    vs = RagstoreVectorStore(store, "li-chunked")
    vs.add([TextNode(id_="long", text=long), TextNode(id_="cat", text="Kittens sleep.")])
    found = vs.query(VectorStoreQuery(query_str="nightly database backups", similarity_top_k=2))
    assert found.ids == ["long", "cat"]
    assert found.nodes is not None and found.nodes[0].get_content() == long


@pytest.mark.parametrize("prefetch", [None, 2])
def test_mmr_answers_k_nodes_when_chunks_of_one_node_fill_its_picks(
    store: Store, prefetch: int | None
) -> None:
    """MMR picks chunks, and the chunks of a node ragstore cut were dropped as repeats:
    with relevance first (threshold 1) every pick was a chunk of the long node, and a
    query for two nodes answered one. It answers two now, the long node whole; with a
    prefetch of 2 (two of its chunks) the candidates are widened to hold two nodes, and
    a query for more nodes than are stored answers those there are."""
    from llama_index.core.vector_stores.types import VectorStoreQueryMode

    long = " ".join(
        f"Backup {i} of the database runs nightly and restores fast." for i in range(80)
    )
    vs = RagstoreVectorStore(store, "li-chunked-mmr")
    vs.add([TextNode(id_="long", text=long), TextNode(id_="cat", text="Kittens sleep.")])
    assert len(store.search("li-chunked-mmr", "nightly database backups", k=5)["data"]) > 2
    kwargs = {} if prefetch is None else {"mmr_prefetch_k": prefetch}

    def mmr(k: int) -> VectorStoreQueryResult:
        query = VectorStoreQuery(
            query_str="nightly database backups",
            similarity_top_k=k,
            mode=VectorStoreQueryMode.MMR,
            mmr_threshold=1.0,
        )
        return vs.query(query, **kwargs)

    found = mmr(2)
    assert found.ids == ["long", "cat"]
    assert found.nodes is not None and found.nodes[0].get_content() == long
    if prefetch is None:
        assert mmr(3).ids == ["long", "cat"]


class _Counting(httpx.HTTPTransport):
    """A transport that notes each request a Client sends (method and path)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(f"{request.method} {request.url.path}")
        return super().handle_request(request)


def test_a_query_reads_again_only_the_nodes_ragstore_chunked(store: Store, url: str) -> None:
    """Every query read the whole texts of its hits again (one more request over HTTP),
    nodes added with their own embedding too, which ragstore stores whole: their hit is
    the whole text already. Only a node ragstore embedded and chunked is read again now,
    and every node still comes back whole."""
    name = "li-round-trips"
    long = " ".join(
        f"Backup {i} of the database runs nightly and restores fast." for i in range(80)
    )
    RagstoreVectorStore(store, name).add(
        _vectored([TextNode(id_="whole", text=long), TextNode(id_="short", text="Kittens.")])
    )
    RagstoreVectorStore(store, name).add([TextNode(id_="cut", text=long)])
    search = f"POST /v1/collections/{name}/search"
    counting = _Counting()
    with Client(url, transport=counting) as client:
        vs = RagstoreVectorStore(client, name)
        found = vs.query(
            VectorStoreQuery(
                query_embedding=[1.0] + [0.0] * 383,
                similarity_top_k=2,
                node_ids=["whole", "short"],
            )
        )
        assert found.nodes is not None
        assert {n.node_id: n.get_content() for n in found.nodes} == {
            "whole": long,
            "short": "Kittens.",
        }
        assert counting.sent == [search]
        counting.sent.clear()
        found = vs.query(
            VectorStoreQuery(
                query_str="nightly database backups", similarity_top_k=1, node_ids=["cut"]
            )
        )
        assert found.nodes is not None and found.nodes[0].get_content() == long
        assert counting.sent == [search, f"POST /v1/collections/{name}/texts/get"]


class _Reporting:
    """A backend over a real Store that keeps what each ``add_texts`` answered (its
    added, updated and unchanged counts), which ``add`` does not return."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reports: list[dict[str, Any]] = []

    def add_texts(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        out = self.store.add_texts(*args, **kwargs)
        self.reports.append(out)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def _outcome(report: dict[str, Any]) -> tuple[int, int, int]:
    return report["added"], report["updated"], report["unchanged"]


def test_re_adding_a_node_stored_before_the_whole_mark_is_unchanged(store: Store) -> None:
    """A node added with its embedding is marked stored whole (``_ragstore_whole`` next to
    LlamaIndex's own keys), and the mark changed the stored metadata's content hash: a
    node stored by a release without the mark, re-added unchanged, was answered updated
    (and rewritten). It is unchanged now, still found whole; a new vector still updates
    it, and a node stored with the mark re-added is unchanged too."""
    name = "li-before-the-mark"
    text = "Backups run nightly and are kept for thirty days."
    vector = [0.3] + [0.0] * 383
    node = TextNode(id_="old", text=text, metadata={"team": "ops"}, embedding=vector)
    # what the release before the mark stored for it: LlamaIndex's metadata, no mark
    legacy = node_to_metadata_dict(node, remove_text=True, flat_metadata=False)
    store.add_texts(name, [text], [legacy], ["old"], vectors=[vector])
    reporting = _Reporting(store)
    vs = RagstoreVectorStore(cast(Backend, reporting), name)
    vs.add([node])
    assert _outcome(reporting.reports[-1]) == (0, 0, 1)
    found = vs.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=1))
    assert found.nodes is not None
    assert [(n.node_id, n.get_content(), n.metadata) for n in found.nodes] == [
        ("old", text, {"team": "ops"})
    ]
    vs.add([node.model_copy(update={"embedding": [0.0, 0.3] + [0.0] * 382})])
    assert _outcome(reporting.reports[-1]) == (0, 1, 0)
    fresh = TextNode(id_="new", text="Kittens sleep.", embedding=vector)
    vs.add([fresh])
    vs.add([fresh])
    assert [_outcome(r) for r in reporting.reports[-2:]] == [(1, 0, 0), (0, 0, 1)]


def test_a_node_key_named_like_ragstores_mark_is_refused_and_the_mark_never_shows(
    store: Store,
) -> None:
    """The mark of a node stored whole (``_ragstore_whole``) shares the stored metadata's
    top level with the node's own keys: a node's own ``_ragstore_whole`` was overwritten
    unsaid (and filters on it matched the mark), and one holding True added without an
    embedding would be answered from one chunk of its text. Such a node is refused now,
    nothing stored, as is a filter on the key; the nodes come back (query, get_nodes)
    with their own metadata, no mark."""
    name = "li-mark-key"
    for nodes in (
        [TextNode(id_="mine", text="Kittens.", metadata={"_ragstore_whole": "mine"})],
        _vectored(
            [
                TextNode(id_="fine", text="Puppies."),
                TextNode(id_="mine", text="Kittens.", metadata={"_ragstore_whole": True}),
            ]
        ),
    ):
        with pytest.raises(
            InputError,
            match=rf"nodes\[{len(nodes) - 1}\]\.metadata holds the key '_ragstore_whole', "
            r"which ragstore's LlamaIndex store writes itself .* rename the key\. Nothing",
        ):
            RagstoreVectorStore(store, name).add(nodes)
    with pytest.raises(CollectionNotFoundError):
        store.get_collection(name)
    # (LlamaIndex's filters take no True; is_empty matched every node not stored whole)
    mark = MetadataFilters(
        filters=[
            MetadataFilter(key="_ragstore_whole", value=None, operator=FilterOperator.IS_EMPTY)
        ]
    )
    with pytest.raises(InputError, match=r"'_ragstore_whole' is ragstore's mark of a node"):
        to_where(mark)
    vs = RagstoreVectorStore(store, name)
    vs.add(_vectored([TextNode(id_="whole", text="Kittens sleep.", metadata={"team": "pets"})]))
    vs.add([TextNode(id_="cut", text="Kittens purr.", metadata={"team": "pets"})])
    team = MetadataFilters(filters=[MetadataFilter(key="team", value="pets")])
    found = vs.query(VectorStoreQuery(query_str="kittens", similarity_top_k=2, filters=team))
    got = vs.get_nodes(["whole", "cut"], filters=team)
    assert found.nodes is not None
    for nodes in (found.nodes, got):
        assert sorted((n.node_id, n.metadata) for n in nodes) == [
            ("cut", {"team": "pets"}),
            ("whole", {"team": "pets"}),
        ]


def test_filters_mean_what_llamaindex_means(store: Store) -> None:
    """Each filter answers as LlamaIndex's own in-memory store answers it: ``not`` of
    several filters matches the nodes none of them match (ragstore answered ``not`` of
    their ``and``, so a node matching one of two came back), ``is_empty`` also matches a
    key that is null, "" or [] (ragstore matched only a missing key), and nested filters
    left empty restrict nothing (ragstore refused an ``$and`` it was never given)."""
    from llama_index.core.vector_stores import SimpleVectorStore

    nodes = [
        TextNode(
            id_="db-24",
            text="Roll back with db downgrade.",
            metadata={"team": "db", "year": 2024, "tag": "x"},
        ),
        TextNode(
            id_="ops-23",
            text="Backups run nightly.",
            metadata={"team": "ops", "year": 2023, "tag": ""},
        ),
        TextNode(
            id_="ops-24",
            text="Restore a backup.",
            metadata={"team": "ops", "year": 2024, "tag": None},
        ),
        TextNode(
            id_="pets-22",
            text="Kittens sleep a lot.",
            metadata={"team": "pets", "year": 2022, "tag": []},
        ),
        TextNode(
            id_="pets-21", text="Dogs bark at night.", metadata={"team": "pets", "year": 2021}
        ),
    ]
    ours = RagstoreVectorStore(store, "li-semantics")
    ours.add(nodes)
    theirs = SimpleVectorStore()
    theirs.add([n.model_copy(update={"embedding": [1.0, 0.0]}) for n in nodes])

    def both(filters: MetadataFilters) -> tuple[list[str], list[str]]:
        got = ours.query(
            VectorStoreQuery(query_str="backups", similarity_top_k=10, filters=filters)
        )
        want = theirs.query(
            VectorStoreQuery(query_embedding=[1.0, 0.0], similarity_top_k=10, filters=filters)
        )
        return sorted(got.ids or []), sorted(want.ids or [])

    cases = [
        MetadataFilters(
            condition=FilterCondition.NOT,
            filters=[
                MetadataFilter(key="team", value="ops"),
                MetadataFilter(key="year", value=2024),
            ],
        ),
        MetadataFilters(
            filters=[MetadataFilter(key="tag", value=None, operator=FilterOperator.IS_EMPTY)]
        ),
        # a missing or null value matches != and nin in LlamaIndex
        MetadataFilters(filters=[MetadataFilter(key="tag", value="x", operator=FilterOperator.NE)]),
        MetadataFilters(
            filters=[MetadataFilter(key="tag", value=["x"], operator=FilterOperator.NIN)]
        ),
        MetadataFilters(
            condition=FilterCondition.OR,
            filters=[
                MetadataFilter(key="year", value=2022, operator=FilterOperator.LTE),
                MetadataFilter(key="team", value=["db"], operator=FilterOperator.IN),
            ],
        ),
    ]
    for filters in cases:
        got, want = both(filters)
        assert got == want, filters
    nested = MetadataFilters(filters=[MetadataFilters(filters=[])])
    assert to_where(nested) is None
    got = ours.query(VectorStoreQuery(query_str="backups", similarity_top_k=10, filters=nested))
    assert len(got.ids or []) == 5


def test_a_refused_add_of_an_outside_models_nodes_makes_no_collection(store: Store) -> None:
    """With ``model_name`` the collection was made for that model before the nodes were
    checked: a refused add (an empty node, metadata JSON cannot hold) left an empty
    collection pinned to the model. A refused add leaves nothing now."""
    vs = RagstoreVectorStore(store, "li-refused", model_name="outside")
    with pytest.raises(InputError, match="out of the 64-bit range"):
        vs.add([TextNode(id_="a", text="fine", metadata={"x": 10**30}, embedding=[0.1] * 4)])
    with pytest.raises(EmptyDocumentError):
        vs.add([TextNode(id_="b", text=" ", embedding=[0.1] * 4)])
    assert "li-refused" not in {c["name"] for c in store.list_collections()}
    assert vs.add([TextNode(id_="c", text="kept", embedding=[0.1] * 4)]) == ["c"]


def test_a_query_mode_ragstore_cannot_run_is_refused_not_ignored(index: VectorStoreIndex) -> None:
    """``VectorStoreQuery.mode`` was ignored: a retriever asking for SVM or sparse vectors
    got the plain hybrid ranking with no word. The modes ragstore has run as asked
    (``text_search`` is its full-text search, ``hybrid`` its hybrid, ``mmr`` its maximal
    marginal relevance); the others are refused, naming those it takes."""
    from llama_index.core.vector_stores.types import VectorStoreQueryMode

    vs = index.vector_store
    for mode in (VectorStoreQueryMode.SVM, VectorStoreQueryMode.SPARSE):
        with pytest.raises(InputError, match=f"query mode {mode.value} .*default, hybrid"):
            vs.query(VectorStoreQuery(query_str="backups", similarity_top_k=2, mode=mode))
    text = vs.query(
        VectorStoreQuery(
            query_str="nightly", similarity_top_k=3, mode=VectorStoreQueryMode.TEXT_SEARCH
        )
    )
    assert text.ids == ["backups"]  # full text: only the node holding the word


def test_query_alpha_weighs_the_hybrid_fusion(index: VectorStoreIndex) -> None:
    """``VectorStoreQuery.alpha`` was ignored: a hybrid query asking for the keyword
    ranking alone (alpha 0) or the vector one alone (alpha 1) got the even fusion. It now
    sets the fusion's weights (vector ``alpha``, full text ``1 - alpha``); an alpha out of
    [0, 1], or given to a search that fuses nothing, is refused."""
    from llama_index.core.vector_stores.types import VectorStoreQueryMode

    vs = index.vector_store

    def ids(alpha: float | None, mode: str = "hybrid") -> list[str]:
        query = VectorStoreQuery(
            query_str="nightly", similarity_top_k=3, alpha=alpha, mode=VectorStoreQueryMode(mode)
        )
        return list(vs.query(query).ids or [])

    text = ids(None, "text_search")
    assert text == ["backups"]
    keyword_only = ids(0.0)
    assert keyword_only == text  # the full-text ranking alone: the node with the word
    assert len(ids(1.0)) == 3 and len(ids(0.5)) == 3  # the vector ranking takes part
    retriever = index.as_retriever(similarity_top_k=3, vector_store_query_mode="hybrid", alpha=0.0)
    assert [n.node.node_id for n in retriever.retrieve("nightly")] == ["backups"]
    with pytest.raises(InputError, match="alpha must be a number from 0 to 1"):
        ids(1.5)
    with pytest.raises(InputError, match=r"alpha weighs .* this one is fulltext"):
        ids(0.5, "text_search")


def test_nodes_with_another_models_embeddings_are_refused_by_name(store: Store) -> None:
    """Nodes embedded by another model (an index's own ``embed_model``: 1536 numbers) sent
    to a collection of ragstore's 384-dimension model without ``model_name`` were refused
    with the store's "vectors must be 1 rows of 384 numbers", naming neither the node nor
    the cause. The error names the node, both lengths and the fix; nothing is stored."""
    from ragstore.errors import ModelMismatchError

    vs = RagstoreVectorStore(store, "li-dimension")
    vs.add([TextNode(id_="native", text="Embedded by ragstore.")])
    theirs = [
        TextNode(id_="ok", text="Right length.", embedding=[0.1] * 384),
        TextNode(id_="long", text="Another model.", embedding=[0.1] * 1536),
    ]
    with pytest.raises(ModelMismatchError, match=r"nodes\[1\] has an embedding of 1536 .*384"):
        vs.add(theirs)
    assert store.get_collection("li-dimension")["documents"] == 1


def test_node_metadata_json_cannot_hold_is_refused_not_changed(store: Store) -> None:
    """A node's metadata went through LlamaIndex's JSON dump before ragstore saw it:
    ``{"d": inf}`` was stored (and acknowledged) as ``{"d": null}``. Such metadata is
    refused now, naming the node, as ``add_texts`` refuses it; nothing is stored."""
    vs = RagstoreVectorStore(store, "li-odd-metadata")
    for metadata, problem in (
        ({"d": float("inf")}, "non-finite number"),
        ({"d": float("nan")}, "non-finite number"),
    ):
        nodes = [
            TextNode(id_="fine", text="fine"),
            TextNode(id_="odd", text="odd", metadata=metadata),
        ]
        with pytest.raises(InputError, match=rf"nodes\[1\]\.metadata holds a {problem}"):
            vs.add(nodes)
    assert "li-odd-metadata" not in {c["name"] for c in store.list_collections()}


def test_keyword_arguments_the_store_does_not_take_are_refused(
    index: VectorStoreIndex, store: Store
) -> None:
    """Every method took ``**kwargs`` and ignored what it did not know: a narrowing the
    caller meant was dropped (a delete deleted more, a query answered from more nodes),
    and the constructor passed LlamaIndex's own fields on (``is_embedding_query=True``
    had retrievers embed queries the store searched by text). Each is refused by name,
    and nothing is written or deleted."""
    with pytest.raises(InputError, match=r"RagstoreVectorStore\(\) does not take foo="):
        RagstoreVectorStore(store, "li-kwargs", foo=1)
    with pytest.raises(InputError, match="does not take is_embedding_query="):
        RagstoreVectorStore(store, "li-kwargs", is_embedding_query=True)
    with pytest.raises(InputError, match="unknown search mode 'mmr'"):
        RagstoreVectorStore(store, "li-kwargs", mode="mmr")
    vs = RagstoreVectorStore(store, "li-kwargs")
    with pytest.raises(InputError, match="add does not take batch_size="):
        vs.add([TextNode(id_="a", text="Backups run nightly.")], batch_size=10)
    assert "li-kwargs" not in {c["name"] for c in store.list_collections()}
    node = TextNode(id_="a", text="Backups run nightly.")
    node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id="doc")
    vs.add([node])
    with pytest.raises(InputError, match="delete does not take filters="):
        vs.delete("doc", filters={"team": "ops"})
    with pytest.raises(InputError, match="delete_nodes does not take where="):
        vs.delete_nodes(["a"], where={"team": "ops"})
    with pytest.raises(InputError, match="query does not take where="):
        vs.query(VectorStoreQuery(query_str="backups"), where={"team": "ops"})
    assert store.get_collection("li-kwargs")["documents"] == 1
    retriever = index.as_retriever(vector_store_kwargs={"where": {"team": "db"}})
    with pytest.raises(InputError, match="query does not take where="):
        retriever.retrieve("backups")


def test_arguments_of_another_type_are_refused_not_read_as_nothing(store: Store) -> None:
    """``add(None)`` answered ``[]`` as if asked for nothing, one node (not a list) and a
    list of strings failed with a bare AttributeError, and so did ``query("text")``;
    the LangChain store's ``add_texts(None)`` is refused the same way. Nothing is made."""
    vs = RagstoreVectorStore(store, "li-types")
    node = TextNode(id_="a", text="Backups run nightly.")
    for nodes, message in [
        (None, "nodes is None, not a list; pass a list of nodes"),
        (node, r"nodes is one TextNode, not a list of nodes; pass \[node\]"),
        (["Backups run nightly."], r"nodes\[0\] is a str \('Backups run nightly.'\), not a node"),
        ("abc", "nodes is a str, not a list"),
    ]:
        with pytest.raises(InputError, match=message):
            vs.add(nodes)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="query takes a VectorStoreQuery, got a str"):
        vs.query("backups")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="delete_nodes node_ids is one string"):
        vs.delete_nodes("a")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="get_nodes node_ids is an int, not a list of ids"):
        vs.get_nodes(5)  # type: ignore[arg-type]
    assert "li-types" not in {c["name"] for c in store.list_collections()}


def test_query_fields_ragstore_has_no_equivalent_of_are_refused(index: VectorStoreIndex) -> None:
    """``sparse_top_k``, ``hybrid_top_k``, ``output_fields`` and ``embedding_field`` were
    ignored: the query ran as if they were not there. (``mmr_threshold`` outside mode
    mmr: test_mmr_options_outside_mode_mmr_are_refused.)"""
    vs = index.vector_store
    for field, value in (
        ("sparse_top_k", 5),
        ("hybrid_top_k", 5),
        ("output_fields", ["team"]),
        ("embedding_field", "vec"),
    ):
        with pytest.raises(InputError, match=f"query {field}=.* is not something ragstore"):
            query = VectorStoreQuery(query_str="backups")
            setattr(query, field, value)
            vs.query(query)
    with pytest.raises(InputError, match="query node_ids is one string"):
        vs.query(VectorStoreQuery(query_str="backups", node_ids="backups"))  # type: ignore[arg-type]


def test_a_query_with_text_and_embedding_ranks_by_the_embedding(
    index: VectorStoreIndex, store: Store
) -> None:
    """A query carrying both (a retriever given a ``QueryBundle`` with its embedding) was
    searched by its text alone, the embedding dropped; it now stands for the text in the
    vector ranking."""
    vs = index.vector_store
    embedding = RagstoreEmbedding(store, "li-handbook").get_query_embedding(
        "how do I undo a schema migration?"
    )
    from llama_index.core.vector_stores.types import VectorStoreQueryMode

    query = VectorStoreQuery(
        query_str="how long are backups kept?",
        query_embedding=embedding,
        similarity_top_k=1,
        mode=VectorStoreQueryMode.HYBRID,
        alpha=1.0,  # the vector ranking alone
    )
    assert vs.query(query).ids == ["rollback"]


def test_delete_without_a_source_document_is_refused_not_widened(store: Store) -> None:
    """``delete(None)`` matched every node stored without a source document and deleted
    them all; ``delete_nodes()`` with neither ids nor filters did nothing unsaid
    (LlamaIndex's own store deletes every node there). Both are refused."""
    vs = RagstoreVectorStore(store, "li-delete")
    vs.add([TextNode(id_="a", text="No source."), TextNode(id_="b", text="None either.")])
    with pytest.raises(InputError, match="delete takes the id of a source document"):
        vs.delete(None)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="delete takes the id of a source document"):
        vs.delete("")
    with pytest.raises(
        InputError, match=r"delete_nodes needs node_ids=\[...\] or filters=; .* clear\(\)"
    ):
        vs.delete_nodes()
    with pytest.raises(InputError, match=r"filters= that restrict nothing .* call clear\(\)"):
        vs.delete_nodes(filters=MetadataFilters(filters=[]))
    assert store.get_collection("li-delete")["documents"] == 2
    vs.delete_nodes(["a", "unknown"])
    assert sorted(n.node_id for n in vs.get_nodes(["a", "b"])) == ["b"]


def test_delete_of_the_source_none_keeps_the_nodes_without_a_source(store: Store) -> None:
    """LlamaIndex stores a node without a source document with ``ref_doc_id`` "None" (the
    string): ``delete("None")`` deleted every such node, where LlamaIndex's own store
    deletes only the nodes of a source document so named."""
    sourced = TextNode(id_="named", text="Of the document named None.")
    sourced.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id="None")
    vs = RagstoreVectorStore(store, "li-delete-none")
    vs.add([TextNode(id_="loose", text="No source."), sourced])
    vs.delete("None")
    assert [n.node_id for n in vs.get_nodes(["loose", "named"])] == ["loose"]


def test_get_nodes_and_clear(backend: Backend) -> None:
    """``get_nodes`` and ``clear`` raised NotImplementedError. ``get_nodes`` returns the
    stored nodes by id, in that order, as queries do. ``clear``
    deletes every node and keeps the collection (its model and settings)."""
    name = f"li-clear-{type(backend).__name__.lower()}"
    vs = RagstoreVectorStore(backend, name)
    assert vs.get_nodes(["a"]) == []  # no collection yet
    vs.clear()
    vs.add(
        [
            TextNode(id_="a", text="First.", metadata={"team": "db"}),
            TextNode(id_="b", text="Second.", metadata={"team": "ops"}),
        ]
    )
    got = vs.get_nodes(["b", "unknown", "a"])
    assert [(n.node_id, n.get_content(), n.metadata) for n in got] == [
        ("b", "Second.", {"team": "ops"}),
        ("a", "First.", {"team": "db"}),
    ]
    assert vs.get_nodes([]) == []
    with pytest.raises(InputError, match=r"get_nodes needs node_ids"):
        vs.get_nodes()
    vs.clear()
    assert backend.get_collection(name)["documents"] == 0


def test_filters_ragstore_cannot_mean_as_llamaindex_does_are_refused(store: Store) -> None:
    """A filter whose value is None (LlamaIndex matches no node by ``== None``, ragstore's
    null the nodes holding null), filters that are no ``MetadataFilters`` (a dict: an
    AttributeError) and a ``not`` holding an empty ``MetadataFilters`` (it matches no node;
    dropped, it matched more) are refused. An ``or`` holding one matches every node, as
    LlamaIndex's empty filters do (the empty one was dropped: fewer nodes)."""
    with pytest.raises(InputError, match=r"on 'team' has no value \(None\); use the is_empty"):
        to_where(MetadataFilters(filters=[MetadataFilter(key="team", value=None)]))
    with pytest.raises(InputError, match="filters must be a MetadataFilters, got a dict"):
        to_where({"team": "ops"})  # type: ignore[arg-type]
    team = MetadataFilter(key="team", value="ops")
    empty = MetadataFilters(filters=[])
    with pytest.raises(InputError, match="not-filter holds an empty MetadataFilters"):
        to_where(MetadataFilters(condition=FilterCondition.NOT, filters=[team, empty]))
    assert to_where(MetadataFilters(condition=FilterCondition.OR, filters=[team, empty])) is None
    assert to_where(MetadataFilters(filters=[team, empty])) == {"$and": [{"team": {"$eq": "ops"}}]}


@pytest.mark.parametrize(
    "filters", [{"team": "ops"}, "team = ops", [MetadataFilter(key="team", value="ops")]]
)
def test_filters_that_are_no_metadata_filters_are_an_invalid_filter_named_filters(
    index: VectorStoreIndex, filters: Any
) -> None:
    """LlamaIndex's ``filters`` that are no ``MetadataFilters`` are refused in its own
    terms (``filters``, how to wrap them), with the code every other surface gives a
    filter of the wrong shape (``invalid_filter``; it was ``invalid_input``), wherever
    they are given: a retriever's query, ``get_nodes``, ``delete_nodes``."""
    told = (
        f"filters must be a MetadataFilters, got {a_type(filters)}; wrap it: "
        "MetadataFilters(filters=[MetadataFilter(key=..., value=...)])"
    )
    vs = cast(RagstoreVectorStore, index.vector_store)
    for call in (
        lambda: index.as_retriever(filters=filters).retrieve("backups"),
        lambda: vs.get_nodes(filters=filters),
        lambda: vs.delete_nodes(filters=filters),
    ):
        with pytest.raises(InvalidFilterError) as caught:
            call()
        assert (caught.value.code, caught.value.message) == ("invalid_filter", told)
    assert len(vs.get_nodes(node_ids=[n.id_ for n in NODES])) == len(NODES)  # none deleted


def _vectored(nodes: list[TextNode]) -> list[TextNode]:
    """The nodes with a vector of ragstore's model's length each (nothing to embed)."""
    return [
        n.model_copy(update={"embedding": [0.1 * (i + 1)] + [0.0] * 383})
        for i, n in enumerate(nodes)
    ]


FILTERED = [
    TextNode(
        id_="db-24", text="Roll back with db downgrade.", metadata={"team": "db", "year": 2024}
    ),
    TextNode(id_="ops-23", text="Backups run nightly.", metadata={"team": "ops", "year": 2023}),
    TextNode(id_="ops-24", text="Restore a backup.", metadata={"team": "ops", "year": 2024}),
    TextNode(id_="pets-22", text="Kittens sleep a lot.", metadata={"team": "pets"}),
]
OPS = MetadataFilter(key="team", value="ops")
RECENT = MetadataFilter(key="year", value=2024, operator=FilterOperator.GTE)


def test_nodes_are_got_and_deleted_by_filter_as_llamaindex_does(backend: Backend) -> None:
    """``get_nodes(filters=...)`` and ``delete_nodes(filters=...)`` were refused (over a
    Client until the HTTP API listed and deleted texts by filter). They select the nodes
    the filters match (translated as ``query`` translates them), and the nodes in both
    where ``node_ids`` is given too, as LlamaIndex's own store does."""
    from llama_index.core.vector_stores import SimpleVectorStore

    cases: list[tuple[list[str] | None, MetadataFilters]] = [
        (None, MetadataFilters(filters=[OPS])),
        (None, MetadataFilters(filters=[RECENT], condition=FilterCondition.NOT)),
        (None, MetadataFilters(filters=[OPS, RECENT], condition=FilterCondition.OR)),
        (["ops-24", "db-24", "pets-22"], MetadataFilters(filters=[OPS])),
        (["pets-22", "unknown"], MetadataFilters(filters=[])),
        ([], MetadataFilters(filters=[OPS])),
    ]
    ours = RagstoreVectorStore(backend, f"li-by-filter-{type(backend).__name__.lower()}")
    assert ours.get_nodes(filters=MetadataFilters(filters=[OPS])) == []  # no collection yet
    for node_ids, filters in cases:
        ours.add(_vectored(FILTERED))
        theirs = SimpleVectorStore()
        theirs.add(_vectored(FILTERED))
        got = [n.node_id for n in ours.get_nodes(node_ids, filters=filters)]
        everything = VectorStoreQuery(
            query_embedding=[1.0] + [0.0] * 383, similarity_top_k=10, filters=filters
        )
        matching = set(theirs.query(everything).ids or [])
        order = node_ids if node_ids is not None else sorted(matching)
        assert got == [i for i in order if i in matching], (node_ids, filters)
        ours.delete_nodes(node_ids, filters=filters)
        theirs.delete_nodes(node_ids, filters=filters)
        left = {n.node_id for n in ours.get_nodes(filters=MetadataFilters(filters=[]))}
        assert left == set(theirs.data.embedding_dict), (node_ids, filters)
    # the nodes come back whole, in the order asked for
    ours.add(_vectored(FILTERED))
    got_nodes = ours.get_nodes(["ops-24", "ops-23"], filters=MetadataFilters(filters=[OPS]))
    assert [(n.node_id, n.get_content(), n.metadata) for n in got_nodes] == [
        ("ops-24", "Restore a backup.", {"team": "ops", "year": 2024}),
        ("ops-23", "Backups run nightly.", {"team": "ops", "year": 2023}),
    ]


def _failing_delete_of(store: Store, source: str) -> None:
    """A trigger that fails the delete of the document ``source`` (a failure halfway)."""
    with store.runtime.db.connection() as conn:
        conn.execute(
            "CREATE FUNCTION li_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            f" IF OLD.source = '{source}' THEN RAISE EXCEPTION 'refused for the test'; END IF;"
            " RETURN OLD; END $$"
        )
        conn.execute(
            "CREATE TRIGGER li_refuse BEFORE DELETE ON documents"
            " FOR EACH ROW EXECUTE FUNCTION li_refuse()"
        )


def _drop_failing_delete(store: Store) -> None:
    with store.runtime.db.connection() as conn:
        conn.execute("DROP TRIGGER IF EXISTS li_refuse ON documents")
        conn.execute("DROP FUNCTION IF EXISTS li_refuse()")


def test_clear_and_a_delete_by_filter_that_fail_halfway_delete_nothing(
    backend: Backend, store: Store
) -> None:
    """``clear`` deleted 500 nodes at a time (over a Client, in requests of 10,000): one
    batch failing left the nodes of the batches before it deleted. It deletes in one
    transaction now, over a Client too, and so does a delete by filter: a failure on the
    last node leaves every node."""
    name = f"li-clear-fails-{type(backend).__name__.lower()}"
    vs = RagstoreVectorStore(backend, name)
    nodes = [
        TextNode(id_=f"n{i:03d}", text=f"Note number {i}.", metadata={"team": "ops"})
        for i in range(501)
    ]
    nodes.append(TextNode(id_="zz-last", text="The last note.", metadata={"team": "ops"}))
    vs.add(_vectored(nodes))
    _failing_delete_of(store, "zz-last")
    try:
        with pytest.raises(Exception, match="refused for the test"):
            vs.clear()
        assert store.get_collection(name)["documents"] == 502
        with pytest.raises(Exception, match="refused for the test"):
            vs.delete_nodes(filters=MetadataFilters(filters=[OPS]))
        assert store.get_collection(name)["documents"] == 502
    finally:
        _drop_failing_delete(store)
    vs.clear()
    assert store.get_collection(name)["documents"] == 0


def test_clear_over_a_client_is_one_transaction_whatever_the_servers_request_limit(
    settings: Settings, store: Store
) -> None:
    """Over a Client, ``clear`` listed every node and deleted them by id, in as many
    requests as the server's limits needed: under a small request limit (here 2 KiB, the
    ids halved after a 413) the requests before a failing one had deleted theirs. It is
    one request now (a delete by filter, no ids sent), so one transaction."""
    name = "li-clear-tight"
    nodes = [TextNode(id_=f"n{i:03d}", text=f"Note {i}.") for i in range(300)]
    nodes.append(TextNode(id_="zz-last", text="The last note."))
    RagstoreVectorStore(store, name).add(_vectored(nodes))
    tight = with_(settings, auth="off", max_request_bytes=2048)
    with running_server(tight) as url, Client(url) as client:
        vs = RagstoreVectorStore(client, name)
        _failing_delete_of(store, "zz-last")
        try:
            with pytest.raises(Exception, match="refused for the test"):
                vs.clear()
            assert store.get_collection(name)["documents"] == 301
        finally:
            _drop_failing_delete(store)
        vs.clear()
    assert store.get_collection(name)["documents"] == 0


def test_list_and_text_operators_ragstore_cannot_say_are_refused_with_why() -> None:
    """``contains``, ``any``, ``all`` and ``text_match`` look inside a list or a string,
    which no ragstore filter does: each is refused, saying so and what to use."""
    for operator, value, why in (
        (FilterOperator.CONTAINS, "x", "cannot test whether a list .* holds a value"),
        (FilterOperator.ANY, ["x"], "cannot test whether a list holds any"),
        (FilterOperator.ALL, ["x"], "cannot test whether a list holds all"),
        (FilterOperator.TEXT_MATCH, "x", "no substring match"),
        (FilterOperator.TEXT_MATCH_INSENSITIVE, "x", "no substring match"),
    ):
        filters = MetadataFilters(
            filters=[MetadataFilter(key="tags", value=value, operator=operator)]
        )
        with pytest.raises(
            InputError, match=f"operator {operator.value} on 'tags' .*{why}.* Use one of"
        ):
            to_where(filters)


def test_a_metadata_key_named_like_a_ragstore_built_in_is_the_nodes_metadata(
    store: Store,
) -> None:
    """A filter on a node's own ``source`` or ``page`` (the keys LlamaIndex's readers
    set) compared ragstore's built-in columns instead: ``source`` the text id (so the
    node *named* "x" matched ``source == "x"``), ``page`` the chunk's page (none here, so
    nothing matched). Queries, ``get_nodes`` and ``delete_nodes`` now match the nodes
    LlamaIndex's own store matches."""
    from llama_index.core.vector_stores import SimpleVectorStore

    nodes = [
        TextNode(id_="a", text="Alpha notes.", metadata={"source": "x", "page": 3}),
        TextNode(id_="b", text="Beta notes.", metadata={"source": "y", "page": 3}),
        TextNode(id_="c", text="Gamma notes.", metadata={"source": "x", "page": 7}),
        TextNode(id_="x", text="Delta notes.", metadata={"page": 1}),
        TextNode(id_="d", text="Epsilon notes.", metadata={}),
    ]
    cases = [
        MetadataFilters(filters=[MetadataFilter(key="source", value="x")]),
        MetadataFilters(filters=[MetadataFilter(key="page", value=3)]),
        MetadataFilters(filters=[MetadataFilter(key="page", value=3, operator=FilterOperator.GT)]),
        MetadataFilters(
            filters=[MetadataFilter(key="source", value="x", operator=FilterOperator.NE)]
        ),
        MetadataFilters(
            filters=[MetadataFilter(key="page", value=None, operator=FilterOperator.IS_EMPTY)]
        ),
    ]
    ours = RagstoreVectorStore(store, "li-built-in-keys")
    theirs = SimpleVectorStore()
    for filters in cases:
        ours.add(_vectored(nodes))
        theirs.add(_vectored(nodes))
        everything = VectorStoreQuery(
            query_embedding=[1.0] + [0.0] * 383, similarity_top_k=10, filters=filters
        )
        want = sorted(theirs.query(everything).ids or [])
        assert want  # each case matches some node
        assert sorted(ours.query(everything).ids or []) == want, filters
        assert [n.node_id for n in ours.get_nodes(filters=filters)] == want, filters
        ours.delete_nodes(filters=filters)
        theirs.delete_nodes(filters=filters)
        left = {n.node_id for n in ours.get_nodes(filters=MetadataFilters(filters=[]))}
        assert left == set(theirs.data.embedding_dict), filters
    # the node ids a query is restricted to are still the text ids (the built-in)
    ours.add(_vectored(nodes))
    got = ours.query(VectorStoreQuery(query_embedding=[1.0] + [0.0] * 383, node_ids=["x"]))
    assert got.ids == ["x"]


def _mmr_nodes() -> tuple[list[TextNode], list[float]]:
    """Nodes with known vectors (three copies of one) and a query vector near the copies."""
    import numpy as np

    rng = np.random.default_rng(11)
    topic = rng.normal(size=8)
    vectors = {f"copy-{i}": topic for i in range(3)}
    vectors.update({f"near-{i}": topic + rng.normal(scale=0.8, size=8) for i in range(4)})
    vectors.update({f"far-{i}": rng.normal(size=8) for i in range(3)})
    nodes = [
        TextNode(id_=name, text=f"node {name}", embedding=[float(x) for x in v])
        for name, v in vectors.items()
    ]
    return nodes, [float(x) for x in topic + rng.normal(scale=0.3, size=8)]


@pytest.mark.parametrize(("threshold", "prefetch"), [(None, None), (0.3, 8), (0.8, 6)])
def test_mmr_mode_picks_by_maximal_marginal_relevance(
    backend: Backend, threshold: float | None, prefetch: int | None
) -> None:
    """Mode ``mmr`` was refused (ragstore ran no MMR); it now picks, among the ranking's
    best ``mmr_prefetch_k`` (default 20), MMR's choice with ``mmr_threshold`` (default
    0.5) as lambda, through the Store and the HTTP Client. The choice is LangChain's
    definition (the greatest similarity to every node picked), as ragstore's search runs
    it for every surface; LlamaIndex's own helper (``get_top_k_mmr_embeddings``) weighs
    only the similarity to the last node picked."""
    import numpy as np
    from llama_index.core.vector_stores.types import VectorStoreQueryMode

    nodes, query = _mmr_nodes()
    name = f"li-mmr-{type(backend).__name__.lower()}"
    vs = RagstoreVectorStore(backend, name, model_name="li-table")
    vs.add(nodes)
    depth = prefetch or 20
    plain = vs.query(VectorStoreQuery(query_embedding=query, similarity_top_k=depth))
    assert set(plain.ids[:3]) == {"copy-0", "copy-1", "copy-2"}
    by_id = {n.node_id: n.embedding for n in nodes}
    picked = reference_mmr(
        np.array(query),
        np.array([by_id[i] for i in plain.ids]),
        4,
        0.5 if threshold is None else threshold,
    )
    expected = [plain.ids[i] for i in picked]
    kwargs = {} if prefetch is None else {"mmr_prefetch_k": prefetch}
    found = vs.query(
        VectorStoreQuery(
            query_embedding=query,
            similarity_top_k=4,
            mode=VectorStoreQueryMode.MMR,
            mmr_threshold=threshold,
        ),
        **kwargs,
    )
    assert found.ids == expected
    copies = {i for i in found.ids if i.startswith("copy")}
    assert len(copies) == (1 if (threshold or 0.5) <= 0.5 else 3)  # 0.8: relevance first


def test_mmr_retriever_takes_its_threshold_from_vector_store_kwargs(
    index: VectorStoreIndex,
) -> None:
    """A retriever passes ``mmr_threshold`` in ``vector_store_kwargs`` (LlamaIndex's
    way); lambda 1 is the relevance ranking alone."""
    plain = index.as_retriever(similarity_top_k=3).retrieve("how do I undo a migration?")
    mmr = index.as_retriever(
        similarity_top_k=3,
        vector_store_query_mode="mmr",
        vector_store_kwargs={"mmr_threshold": 0.5},
    ).retrieve("how do I undo a migration?")
    assert {n.node.node_id for n in mmr} == {n.node.node_id for n in plain}
    assert mmr[0].node.node_id == "rollback"
    with pytest.raises(InputError, match="lambda_mult must be between 0"):
        index.as_retriever(
            vector_store_query_mode="mmr", vector_store_kwargs={"mmr_threshold": 1.5}
        ).retrieve("backups")


def test_mmr_options_outside_mode_mmr_are_refused(index: VectorStoreIndex) -> None:
    vs = index.vector_store
    with pytest.raises(InputError, match=r"mmr_threshold=0\.5 applies to the mmr mode"):
        vs.query(VectorStoreQuery(query_str="backups", mmr_threshold=0.5))
    with pytest.raises(InputError, match="query does not take mmr_prefetch_k="):
        vs.query(VectorStoreQuery(query_str="backups"), mmr_prefetch_k=10)


def test_a_dotted_key_is_escaped_and_a_dollar_key_is_the_nodes_metadata(store: Store) -> None:
    """LlamaIndex reads a filter's key as one top-level key. ragstore read ``v1.2`` as a
    nested path (key ``v1``, then ``2``: nothing matched; later it was refused) and
    ``$cost`` as an unknown operator, with a message about an operator the caller never
    wrote. A dotted key is escaped (``v1\\.2``) and finds its node, an empty key is
    refused with what to do; ``$cost`` is the node's metadata (``document.$cost``). The
    auto-retriever is told of the top-level keys by name (``source``, not the field
    ``document.source``; ``v1.2``, not ``v1\\.2``)."""
    with pytest.raises(InputError, match=r"key '' cannot be filtered.*rename the"):
        to_where(MetadataFilters(filters=[MetadataFilter(key="", value="x")]))
    dotted = MetadataFilters(filters=[MetadataFilter(key="v1.2", value="x")])
    assert to_where(dotted) == {"$and": [{"v1\\.2": {"$eq": "x"}}]}
    ours = RagstoreVectorStore(store, "li-odd-keys")
    ours.add(
        _vectored(
            [
                TextNode(id_="a", text="Alpha.", metadata={"$cost": 5, "source": "crm"}),
                TextNode(id_="b", text="Beta.", metadata={"$cost": 9, "v1.2": "x"}),
            ]
        )
    )
    cheap = MetadataFilters(
        filters=[MetadataFilter(key="$cost", value=5, operator=FilterOperator.LTE)]
    )
    assert to_where(cheap) == {"$and": [{"document.$cost": {"$lte": 5}}]}
    query = VectorStoreQuery(query_embedding=[1.0] + [0.0] * 383, similarity_top_k=5)
    query.filters = cheap
    assert ours.query(query).ids == ["a"]
    query.filters = dotted
    assert ours.query(query).ids == ["b"]
    names = {m.name for m in ours.vector_store_info("notes").metadata_info}
    assert names == {"$cost", "source", "v1.2"}


def test_embedding_a_query_creates_no_collection(store: Store) -> None:
    """``RagstoreEmbedding`` made its collection (``create=True``) to embed a query: a
    query against a misspelt name left an empty collection behind. Before the collection
    exists it embeds with the model an add would make it with, creating nothing."""
    before = {c["name"] for c in store.list_collections()}
    embedding = RagstoreEmbedding(store, "li-never-made")
    query = embedding.get_query_embedding("nightly backups")
    texts = embedding.get_text_embedding_batch(["nightly backups", "a cat naps"])
    assert {c["name"] for c in store.list_collections()} == before
    # the vectors of the model the collection gets when an add makes it
    store.add_texts("li-never-made", ["a cat naps"], ids=["cat"])
    try:
        made = RagstoreEmbedding(store, "li-never-made")
        # (one text or a batch of two: float32 rounding apart)
        assert query == pytest.approx(made.get_query_embedding("nightly backups"), abs=1e-5)
        assert texts[1] == pytest.approx(made.get_text_embedding("a cat naps"), abs=1e-5)
        assert texts[0] != pytest.approx(texts[1])
    finally:
        store.delete_collection("li-never-made")


def test_close_waits_for_an_embedding(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """``RagstoreEmbedding`` used ``store.runtime`` outside the Store's calls: a close from
    another thread did not wait for it and closed the pool under its lookup. It is now a
    call of the Store: a close while it is held waits for it (close(timeout=0) says a call
    is running), and the embedding then ends."""
    import threading

    entered, release = threading.Event(), threading.Event()
    own = Store(settings=settings)
    real = own.runtime.embedder

    def held(spec: Any) -> Any:
        entered.set()
        assert release.wait(60)
        return real(spec)

    monkeypatch.setattr(own.runtime, "embedder", held)
    got: list[list[float]] = []
    worker = threading.Thread(
        target=lambda: got.append(
            RagstoreEmbedding(own, "li-handbook").get_query_embedding("nightly backups")
        )
    )
    worker.start()
    try:
        assert entered.wait(60)
        with pytest.raises(TimeoutError, match=r"1 call\(s\) of other threads"):
            own.close(timeout=0)
    finally:
        release.set()
        worker.join(60)
        own.close()
    assert len(got) == 1 and len(got[0]) == 384
