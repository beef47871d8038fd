"""A LlamaIndex vector store on ragstore: ``RagstoreVectorStore`` (extra ``[llamaindex]``).

::

    from llama_index.core import VectorStoreIndex
    from ragstore import Store
    from ragstore.integrations.llamaindex import RagstoreEmbedding, RagstoreVectorStore

    store = Store()
    vs = RagstoreVectorStore(store, "notes")
    index = VectorStoreIndex.from_vector_store(vs, embed_model=RagstoreEmbedding(store, "notes"))
    index.as_retriever(similarity_top_k=3, filters=MetadataFilters(...)).retrieve("roll back?")

ragstore embeds the query itself (``is_embedding_query`` is false), so a retriever's text
query runs ragstore's ``mode`` (hybrid by default: vector and BM25 fused) with the
collection's pinned model. Nodes that arrive with embeddings (``index.insert`` computes
them with the ``embed_model``) are stored whole with those vectors; nodes without are
embedded by ragstore. Node ids are ragstore text ids; the node (relationships, metadata)
is kept in its metadata the LlamaIndex way, so results rebuild the same nodes. Metadata
filters become ragstore's ``where`` filter. The backend is a :class:`ragstore.Store` or a
:class:`ragstore.Client`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode, TextNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    MetadataInfo,
    VectorStoreInfo,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from ragstore.errors import CollectionNotFoundError, InputError, ModelMismatchError
from ragstore.ingest.texts import check_call
from ragstore.integrations.backend import Backend, described_fields, ensure_vector_collection
from ragstore.store import Store
from ragstore.validation import check_value

__all__ = ["RagstoreEmbedding", "RagstoreVectorStore", "to_where"]

_OPS = {
    FilterOperator.EQ: "$eq",
    FilterOperator.NE: "$ne",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
    FilterOperator.NIN: "$nin",
}


def to_where(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """LlamaIndex metadata filters as a ragstore ``where`` filter, meaning what LlamaIndex's
    own store (``SimpleVectorStore``) means by them; an operator ragstore's filter language
    lacks is refused by name. ``not`` matches the nodes that none of its filters match
    (it was translated as ``not`` of their ``and``, so a node matching one of two came
    back), and filters with nothing in them, nested ones too, restrict nothing (nested
    empty ones left an empty ``$and``, refused by ragstore with an error about a filter
    the caller never wrote)."""
    if filters is None or not filters.filters:
        return None
    parts: list[dict[str, Any]] = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            sub = to_where(f)
            if sub is not None:
                parts.append(sub)
            continue
        parts.append(_one(f))
    if not parts:
        return None
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.NOT:
        return {"$not": {"$or": parts}}
    return {"$or": parts} if condition == FilterCondition.OR else {"$and": parts}


def _one(f: MetadataFilter) -> dict[str, Any]:
    if f.operator == FilterOperator.IS_EMPTY:
        # LlamaIndex's is_empty: the key missing, or null, "" or [] (it was the key
        # missing alone, so nodes holding an empty value were left out)
        return {"$or": [{f.key: {"$exists": False}}, {f.key: {"$in": [None, "", []]}}]}
    operator = FilterOperator(f.operator)
    op = _OPS.get(operator)
    if op is None:
        raise InputError(
            f"metadata filter operator {operator.value} on {f.key!r} has no "
            "ragstore equivalent; use one of "
            f"{', '.join(o.value for o in _OPS)}"
        )
    return {f.key: {op: f.value}}


class RagstoreVectorStore(BasePydanticVectorStore):
    """A ragstore collection as a LlamaIndex vector store (text kept, query embedded by
    ragstore). ``model_name``/``dimension``: create the collection for vectors of an
    outside model rather than ragstore's default model."""

    stores_text: bool = True
    is_embedding_query: bool = False
    flat_metadata: bool = False

    _backend: Backend = PrivateAttr()
    _collection: str = PrivateAttr()
    _mode: str = PrivateAttr()
    _model_name: str | None = PrivateAttr()

    def __init__(
        self,
        backend: Backend,
        collection: str,
        *,
        mode: str = "hybrid",
        model_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._backend = backend
        self._collection = collection
        self._mode = mode
        self._model_name = model_name

    @property
    def client(self) -> Backend:
        return self._backend

    @property
    def collection(self) -> str:
        return self._collection

    def add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        if not nodes:
            return []
        for i, n in enumerate(nodes):
            # checked as the caller wrote it: node_to_metadata_dict dumps the node as JSON
            # first, which turned inf or NaN into null, so the store
            # was handed (and acknowledged) other metadata than the node's
            check_value(n.metadata, f"nodes[{i}].metadata")
        texts = [n.get_content(metadata_mode=MetadataMode.NONE) for n in nodes]
        metas = [node_to_metadata_dict(n, remove_text=True, flat_metadata=False) for n in nodes]
        ids = [n.node_id for n in nodes]
        vectors = None
        given = [n.embedding is not None for n in nodes]
        if any(given) and not all(given):
            # ragstore would embed them all with its model and drop the given vectors
            # unsaid; two models' vectors in one space do not compare either
            raise InputError(
                f"nodes[{given.index(False)}] has no embedding while nodes[{given.index(True)}] "
                "has one: give every node an embedding (the outside model's vectors) or none "
                "(ragstore embeds them with the collection's model)"
            )
        if all(given):
            vectors = [list(n.embedding or []) for n in nodes]
            if self._model_name is not None:
                # checked before the collection is made for the model: a refused add
                # left an empty collection pinned to it
                check_call(texts, metas, ids, vectors)
                ensure_vector_collection(
                    self._backend, self._collection, self._model_name, len(vectors[0])
                )
            else:
                self._check_dimension(vectors)
        out = self._backend.add_texts(self._collection, texts, metas, ids, vectors=vectors)
        return list(out["ids"])

    def _check_dimension(self, vectors: list[list[float]]) -> None:
        """Refuse nodes whose embeddings cannot be the collection's model's (another
        length), naming the node, both models' lengths and the fix. With no
        ``model_name`` given vectors go to the collection as its own model's; the error
        was the store's "vectors must be N rows of 384 numbers", which named neither the
        node nor that the index's ``embed_model`` is another model (a collection not made
        yet is checked by the store against the model it would be made with)."""
        try:
            coll = self._backend.get_collection(self._collection)
        except CollectionNotFoundError:
            return
        dimension, model = int(coll["dimension"]), coll["model"]
        for i, vector in enumerate(vectors):
            if len(vector) != dimension:
                raise ModelMismatchError(
                    f"nodes[{i}] has an embedding of {len(vector)} numbers, and collection "
                    f"{self._collection!r} holds vectors of {model} ({dimension} numbers): "
                    "the embedding is another model's. Give the index ragstore's model "
                    "(embed_model=RagstoreEmbedding(store, collection)), or store this "
                    "model's vectors in another collection (model_name=...). Nothing was "
                    "stored"
                )

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id``."""
        with suppress(CollectionNotFoundError):
            ids = [
                d["source"]
                for d in self._backend.iter_documents(
                    self._collection, metadata={"ref_doc_id": ref_doc_id}
                )
            ]
            if ids:
                self._backend.delete_texts(self._collection, ids)

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        if filters is not None:
            raise InputError("deleting nodes by metadata filter is not supported; give node_ids")
        if node_ids:
            with suppress(CollectionNotFoundError):
                self._backend.delete_texts(self._collection, node_ids)

    def vector_store_info(self, content_info: str) -> VectorStoreInfo:
        """The collection's metadata described for LlamaIndex's auto-retriever
        (``VectorIndexAutoRetriever(index, vector_store_info=...)``), from ragstore's
        sample of it (``fields``): each path the nodes' metadata carries with its type and
        a few values, less LlamaIndex's own keys. A collection not made yet has none."""
        fields = described_fields(self._backend, self._collection, skip=_NODE_KEYS)
        infos = [
            MetadataInfo(name=name, type=_PYTHON_TYPES.get(kind, kind), description=about)
            for name, kind, about in fields
            if not name.startswith("_")
        ]
        return VectorStoreInfo(content_info=content_info, metadata_info=infos)

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        where = _restricted(to_where(query.filters), query)
        k = query.similarity_top_k
        mode = _mode(query.mode, self._mode)
        try:
            if query.query_str:
                vector_weight, fulltext_weight = _weights(query.alpha, mode)
                out = self._backend.search(
                    self._collection,
                    query.query_str,
                    k=k,
                    where=where,
                    mode=mode,
                    vector_weight=vector_weight,
                    fulltext_weight=fulltext_weight,
                )
            elif query.query_embedding is not None:
                # an embedding alone is searched by vector unless a mode is asked
                asked = None if query.mode == VectorStoreQueryMode.DEFAULT else mode
                vector_weight, fulltext_weight = _weights(query.alpha, asked or "vector")
                out = self._backend.search(
                    self._collection,
                    vector=query.query_embedding,
                    k=k,
                    where=where,
                    mode=asked,
                    vector_weight=vector_weight,
                    fulltext_weight=fulltext_weight,
                )
            else:
                raise InputError("the query has neither text nor an embedding")
        except CollectionNotFoundError:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        nodes, scores, ids = [], [], []
        for hit in out["data"]:
            nodes.append(_node(hit))
            scores.append(float(hit["score"]))
            ids.append(str(hit["source"]))
        return VectorStoreQueryResult(nodes=nodes, similarities=scores, ids=ids)


# the query modes ragstore runs, as its search modes (DEFAULT: the store's own mode)
_MODES = {VectorStoreQueryMode.HYBRID: "hybrid", VectorStoreQueryMode.TEXT_SEARCH: "fulltext"}


def _mode(asked: VectorStoreQueryMode | str, default: str) -> str:
    """The ragstore search mode for a query's ``mode``, or InputError for one ragstore
    cannot run (MMR, SVM, sparse vectors...): ignored, such a retriever got the plain
    ranking with no word that its mode was not applied."""
    mode = VectorStoreQueryMode(asked)
    if mode == VectorStoreQueryMode.DEFAULT:
        return default
    if mode not in _MODES:
        raise InputError(
            f"query mode {mode.value} is not one ragstore can run; use one of default, "
            "hybrid or text_search (ragstore's full-text search)"
        )
    return _MODES[mode]


def _weights(alpha: float | None, mode: str) -> tuple[float | None, float | None]:
    """The fusion weights of a hybrid search for LlamaIndex's ``alpha`` (1: the vector
    ranking alone, 0: the full-text one alone, between: both, weighted): ``vector_weight``
    ``alpha`` and ``fulltext_weight`` ``1 - alpha``. It was ignored, so a retriever asking
    for keyword-heavy hybrid results (``vector_store_query_alpha``) got the even fusion
    unsaid. An alpha outside [0, 1], or one given to a search that fuses nothing (full
    text, vector), is refused."""
    if alpha is None:
        return None, None
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise InputError(f"query alpha must be a number from 0 to 1, got {alpha!r}")
    if mode != "hybrid":
        raise InputError(
            f"query alpha weighs the two rankings of a hybrid search, and this one is "
            f"{mode}; leave alpha out or ask for the hybrid mode"
        )
    return float(alpha), 1.0 - float(alpha)


def _node(hit: dict[str, Any]) -> BaseNode:
    """The node a hit was stored from, or, for a text stored other than through LlamaIndex
    (``ragstore ingest``, LangChain, ``Store.add_texts``: no ``_node_content`` in its
    metadata), a text node of the hit: its id the document's source, its metadata the
    stored one. ``metadata_dict_to_node`` raised ValueError there, so every query over a
    collection filled outside LlamaIndex failed."""
    metadata = hit["metadata"]
    if "_node_content" not in metadata:
        return TextNode(id_=str(hit["source"]), text=hit["text"], metadata=dict(metadata))
    node = metadata_dict_to_node(metadata)
    node.set_content(hit["text"])
    return node


def _restricted(where: dict[str, Any] | None, query: VectorStoreQuery) -> dict[str, Any] | None:
    """``where`` narrowed to the query's ``node_ids`` (node ids are ragstore text ids, the
    documents' ``source``) and ``doc_ids`` (the nodes' ``ref_doc_id``), as a retriever
    built with them asks (``VectorIndexRetriever(node_ids=...)``). Left out, a search
    restricted to some nodes answered from every node of the collection. An empty list
    restricts nothing, as in LlamaIndex's other stores: ``index.as_retriever()`` passes
    the index's own node list, always empty over a store that keeps the text."""
    parts = [] if where is None else [where]
    for ids, field in ((query.node_ids, "source"), (query.doc_ids, "ref_doc_id")):
        if ids:
            parts.append({field: {"$in": [str(i) for i in ids]}})
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


# what node_to_metadata_dict adds to a node's own metadata
_NODE_KEYS = frozenset({"document_id", "doc_id", "ref_doc_id"})


_PYTHON_TYPES = {"string": "str", "integer": "int", "float": "float", "boolean": "bool"}


class RagstoreEmbedding(BaseEmbedding):
    """The collection's pinned ragstore model as a LlamaIndex embedding (in-process), for
    ``VectorStoreIndex.from_vector_store(..., embed_model=...)``: the index and ragstore
    then embed with one model, and nothing else is downloaded or called."""

    _store: Store = PrivateAttr()
    _name: str = PrivateAttr()

    def __init__(self, store: Store, collection: str, **kwargs: Any) -> None:
        super().__init__(model_name=f"ragstore:{collection}", **kwargs)
        self._store = store
        self._name = collection

    def _embedder(self) -> Any:
        rt = self._store.runtime
        return rt.embedder_for(rt.collection(self._name, create=True))

    def _get_query_embedding(self, query: str) -> list[float]:
        return [float(x) for x in self._embedder().embed_query(query)]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return [float(x) for x in self._embedder().embed([text])[0]]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return [[float(x) for x in row] for row in self._embedder().embed(texts)]
