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
filters become ragstore's ``where`` filter, for queries and for ``get_nodes`` and
``delete_nodes`` alike. The backend is a :class:`ragstore.Store` or a
:class:`ragstore.Client`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode, NodeRelationship, TextNode
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

from ragstore.errors import (
    CollectionNotFoundError,
    InputError,
    InvalidFilterError,
    ModelMismatchError,
)
from ragstore.ingest.texts import WHOLE_MARK, check_call
from ragstore.integrations.backend import (
    Backend,
    described_fields,
    ensure_vector_collection,
    metadata_field,
)
from ragstore.integrations.hits import distinct_hits, distinct_mmr_hits, whole_texts
from ragstore.search.service import parse_mode
from ragstore.store import Store
from ragstore.validation import a_type, check_value, id_list, per_text_list

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


# Why the LlamaIndex operators ragstore's filter language cannot say exactly are refused
# (translated, each would match other nodes than LlamaIndex's own store does): its
# operators compare a key's whole value ($eq, $in: the value is one of a list), none
# looks inside a list or a string.
_NO_EQUIVALENT = {
    FilterOperator.CONTAINS: "ragstore's filters cannot test whether a list (or string) "
    "holds a value, only compare the whole value",
    FilterOperator.ANY: "ragstore's filters cannot test whether a list holds any of some "
    "values, only whether the whole value is one of them (in)",
    FilterOperator.ALL: "ragstore's filters cannot test whether a list holds all of some "
    "values, only compare the whole value",
    FilterOperator.TEXT_MATCH: "ragstore's filters have no substring match (search the "
    "text itself: the query's text runs full-text search)",
    FilterOperator.TEXT_MATCH_INSENSITIVE: "ragstore's filters have no substring match "
    "(search the text itself: the query's text runs full-text search)",
}


def to_where(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """LlamaIndex metadata filters as a ragstore ``where`` filter, meaning what LlamaIndex's
    own store (``SimpleVectorStore``) means by them; an operator ragstore's filter language
    lacks is refused by name. ``not`` matches the nodes that none of its filters match
    (it was translated as ``not`` of their ``and``, so a node matching one of two came
    back), and filters with nothing in them, nested ones too, restrict nothing (nested
    empty ones left an empty ``$and``, refused by ragstore with an error about a filter
    the caller never wrote). ``None`` (no filter) is the only other value taken: a dict
    or a single ``MetadataFilter`` failed with an AttributeError, and is refused as an
    ``invalid_filter`` naming ``filters`` (a dict is not read as ragstore's ``where``:
    LlamaIndex's ``filters`` are ``MetadataFilters``)."""
    if filters is None:
        return None
    if not isinstance(filters, MetadataFilters):
        # invalid_filter, as every surface refuses a filter of the wrong shape (a Store's
        # or a Client's ``where`` that is no object, a LangChain ``filter`` no dict)
        raise InvalidFilterError(
            f"filters must be a MetadataFilters, got {a_type(filters)}; wrap it: "
            "MetadataFilters(filters=[MetadataFilter(key=..., value=...)])"
        )
    if not filters.filters:
        return None
    parts: list[dict[str, Any]] = []
    everything = False  # a member restricting nothing (an empty nested MetadataFilters)
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            sub = to_where(f)
            if sub is None:
                everything = True
            else:
                parts.append(sub)
            continue
        parts.append(_one(f))
    condition = filters.condition or FilterCondition.AND
    if everything and condition == FilterCondition.OR:
        return None  # one member matching every node: so does the "or"
    if everything and condition == FilterCondition.NOT:
        # none of the members may match, and one matches every node: no node is left.
        # Dropped, the member made the "not" match more nodes than it can
        raise InputError(
            "a not-filter holds an empty MetadataFilters, which matches every node, so "
            "the filter matches none; remove the empty MetadataFilters"
        )
    if not parts:
        return None
    if condition == FilterCondition.NOT:
        return {"$not": {"$or": parts}}
    return {"$or": parts} if condition == FilterCondition.OR else {"$and": parts}


def _one(f: MetadataFilter) -> dict[str, Any]:
    if not f.key:
        # an empty key is no path ragstore's filter can name (a dot within a key is
        # escaped by metadata_field: "v1.2" is the field "v1\\.2")
        raise InputError(
            f"metadata filter key {f.key!r} cannot be filtered in ragstore: a filter's "
            "path must not be empty; rename the metadata key (e.g. 'blank' for '') in the "
            "nodes you add, then filter on the new name"
        )
    if f.key == _WHOLE:
        # no node's metadata holds it (add refuses it): a filter on it matched ragstore's
        # own mark, selecting nodes by how they were stored
        raise InputError(
            f"metadata filter key {f.key!r} is ragstore's mark of a node stored whole, not "
            "a key of the nodes' metadata (add refuses it there); filter on the nodes' own "
            "keys"
        )
    key = metadata_field(f.key)
    if f.operator == FilterOperator.IS_EMPTY:
        # LlamaIndex's is_empty: the key missing, or null, "" or [] (it was the key
        # missing alone, so nodes holding an empty value were left out)
        return {"$or": [{key: {"$exists": False}}, {key: {"$in": [None, "", []]}}]}
    operator = FilterOperator(f.operator)
    op = _OPS.get(operator)
    if op is None:
        raise InputError(
            f"metadata filter operator {operator.value} on {f.key!r} has no "
            f"ragstore equivalent: {_NO_EQUIVALENT.get(operator, 'ragstore has no such test')}. "
            f"Use one of {', '.join(o.value for o in _OPS)} or is_empty"
        )
    if f.value is None:
        # LlamaIndex matches no node by == None (a missing or null value matches only
        # != and nin), where ragstore's null would match the nodes holding null
        raise InputError(
            f"metadata filter {operator.value} on {f.key!r} has no value (None); "
            "use the is_empty operator for a missing or null value"
        )
    return {key: {op: f.value}}


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
        # LlamaIndex's own fields (stores_text, is_embedding_query, flat_metadata) describe
        # how this store works and are not the caller's to change: passed on,
        # is_embedding_query=True had every retriever embed the query for a store that
        # searched by its text alone; anything else was taken and ignored
        _no_other_arguments("RagstoreVectorStore()", kwargs, ())
        super().__init__(stores_text=True)
        self._backend = backend
        self._collection = collection
        self._mode = parse_mode(mode)  # refused here, not at the first query
        self._model_name = model_name

    @property
    def client(self) -> Backend:
        return self._backend

    @property
    def collection(self) -> str:
        return self._collection

    def add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        """Add or update ``nodes``; returns their ids. ``None`` or one node is refused,
        as is a list holding something else than nodes: ``add(None)`` answered ``[]`` as
        if nothing had been asked, and one node failed with a bare AttributeError (its
        fields iterated as the list's items), as did a list of strings."""
        _no_other_arguments("add", kwargs, ())
        nodes = _node_list(nodes)
        if not nodes:
            return []
        for i, n in enumerate(nodes):
            # checked as the caller wrote it: node_to_metadata_dict dumps the node as JSON
            # first, which turned inf or NaN into null, so the store
            # was handed (and acknowledged) other metadata than the node's
            check_value(n.metadata, f"nodes[{i}].metadata", paths=True)
            if _WHOLE in n.metadata:
                # stored next to the node's own keys (node_to_metadata_dict lays them at the
                # top), the mark overwrote the node's value unsaid, and a node added
                # without an embedding holding True was answered from one chunk of its text
                raise InputError(
                    f"nodes[{i}].metadata holds the key {_WHOLE!r}, which ragstore's "
                    "LlamaIndex store writes itself (its mark of a node stored whole, with "
                    "its embedding); rename the key. Nothing was stored"
                )
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
        if vectors is not None:
            for meta in metas:
                # ragstore stores a node with an embedding whole, one chunk: its hits hold
                # all of its text, which query then need not read again (_chunked_node).
                # Only those are marked, and the mark is no part of the content hash
                # (ingest/texts.py): a node stored by a release without it, re-added
                # unchanged, stays unchanged (and is read again, as then)
                meta[_WHOLE] = True
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
        """Delete every node of the source document ``ref_doc_id``. Any other argument is
        refused (ignored, a meant narrowing was dropped), and so is a ``ref_doc_id`` that
        is no non-empty string: ``None`` matched every node stored without a source
        document and deleted them all."""
        _no_other_arguments("delete", delete_kwargs, ())
        if not isinstance(ref_doc_id, str) or not ref_doc_id:
            raise InputError(
                f"delete takes the id of a source document (a non-empty string), got "
                f"{ref_doc_id!r}; delete_nodes(node_ids=[...]) deletes nodes by id, "
                "clear() every node"
            )
        with suppress(CollectionNotFoundError):
            ids = [
                d["source"]
                for d in self._backend.iter_documents(
                    self._collection, metadata={"ref_doc_id": ref_doc_id}
                )
                if ref_doc_id != "None" or _source_id(d["metadata"]) == "None"
            ]
            if ids:
                self._backend.delete_texts(self._collection, ids)

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete the nodes ``node_ids`` (unknown ids are ignored) that ``filters`` match
        (both given: the nodes in both, as in LlamaIndex's own stores), in one transaction.
        The filters mean what they mean to ``query`` (one translation, :func:`to_where`).
        A call with neither, or with filters that restrict nothing and no ids, is refused
        (LlamaIndex's own store deletes every node there; ``clear()`` says so), and so is
        any other argument: each would delete other nodes than the caller meant."""
        _no_other_arguments("delete_nodes", delete_kwargs, ("node_ids", "filters"))
        where = to_where(filters)
        if node_ids is None and where is None:
            what = "needs node_ids=[...] or filters=" if filters is None else "got filters="
            raise InputError(
                f"delete_nodes {what}"
                + ("" if filters is None else " that restrict nothing (every node)")
                + "; to delete every node call clear()"
            )
        doomed = None if node_ids is None else id_list(node_ids, "delete_nodes node_ids")
        if doomed == []:
            return
        with suppress(CollectionNotFoundError):
            if where is None:
                assert doomed is not None
                self._backend.delete_texts(self._collection, doomed)
            else:
                self._backend.delete_texts_where(self._collection, where=where, ids=doomed)

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """The stored nodes ``node_ids`` that ``filters`` match (both given: the nodes in
        both), as queries return them: in the order of ``node_ids`` (unknown ids are left
        out), else of their ids. The filters mean what they mean to ``query``; a call
        with neither is refused (it raised NotImplementedError, as did every call)."""
        if node_ids is None and filters is None:
            raise InputError(
                "get_nodes needs node_ids=[...], the ids of the nodes to get, or filters="
            )
        wanted = None if node_ids is None else id_list(node_ids, "get_nodes node_ids")
        where = to_where(filters)
        if wanted == []:
            return []
        try:
            if where is not None or wanted is None:
                kept = self._backend.text_ids(self._collection, where=where, ids=wanted)
                if wanted is not None:
                    found = set(kept)
                    kept = [i for i in dict.fromkeys(wanted) if i in found]
                wanted = kept
            found_texts = self._backend.get_texts(self._collection, wanted) if wanted else []
        except CollectionNotFoundError:
            return []
        return [_node({**t, "source": t["id"]}) for t in found_texts]

    def clear(self) -> None:
        """Delete every node; the collection stays, with its model and settings (it
        raised NotImplementedError, so a ``VectorMemory.reset()`` over ragstore failed).
        In one transaction on a :class:`ragstore.Store` as over HTTP (one request), so a
        failure deletes none: deleted 500 at a time, one failing halfway left the
        collection part emptied (over HTTP, the ids listed were deleted in several
        requests)."""
        with suppress(CollectionNotFoundError):
            self._backend.delete_texts_where(self._collection)

    def vector_store_info(self, content_info: str) -> VectorStoreInfo:
        """The collection's metadata described for LlamaIndex's auto-retriever
        (``VectorIndexAutoRetriever(index, vector_store_info=...)``), from ragstore's
        sample of it (``fields``): each path the nodes' metadata carries with its type and
        a few values, less LlamaIndex's own keys. A collection not made yet has none.
        Each is named by its top-level key, as a ``MetadataFilter`` names it (nested paths
        are left out: LlamaIndex reads a key ``a.b`` as one key, which :func:`to_where`
        refuses)."""
        fields = described_fields(self._backend, self._collection, skip=_NODE_KEYS, top_level=True)
        infos = [
            MetadataInfo(name=name, type=_PYTHON_TYPES.get(kind, kind), description=about)
            for name, kind, about in fields
            if not name.startswith("_")
        ]
        return VectorStoreInfo(content_info=content_info, metadata_info=infos)

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The ``similarity_top_k`` best nodes for the query's text (searched in ``mode``),
        its embedding (by vector), or both (the embedding then stands for the text in the
        vector ranking), within its ``filters``, ``node_ids`` and ``doc_ids``. A field
        ragstore has no equivalent of, and any keyword argument (a retriever's
        ``vector_store_kwargs``), is refused: each was ignored, so the query ran other
        than asked with no word. Mode ``mmr`` runs ragstore's maximal-marginal-relevance
        search (search/mmr.py) with ``mmr_threshold`` (the query's or a
        ``vector_store_kwargs`` one, default 0.5) as its lambda and ``mmr_prefetch_k``
        candidates (default 20, at least ``similarity_top_k``); the similarities are the
        ranking's scores, in the order MMR picked the nodes."""
        if not isinstance(query, VectorStoreQuery):
            # a string (the text meant) or a dict failed with a bare AttributeError
            raise InputError(
                f"query takes a VectorStoreQuery, got {a_type(query)} "
                f"({query!r:.60}); pass VectorStoreQuery(query_str=..., similarity_top_k=...)"
            )
        mmr = _mmr(query, kwargs)
        _no_other_arguments("query", kwargs, ())
        for field, fix in _UNSUPPORTED_FIELDS.items():
            if getattr(query, field) is not None:
                raise InputError(
                    f"query {field}={getattr(query, field)!r} is not something ragstore "
                    f"can do: {fix}"
                )
        where = _restricted(to_where(query.filters), query)
        k = query.similarity_top_k
        mode = _mode(query.mode, self._mode)
        text, vector = query.query_str or None, query.query_embedding
        if text is None and vector is None:
            raise InputError(
                "the query has neither text (query_str) nor an embedding (query_embedding)"
            )
        if text is None:
            # an embedding alone is searched by vector unless a mode is asked
            plain = (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.MMR)
            asked = None if VectorStoreQueryMode(query.mode) in plain else mode
            mode_run, weights = asked, _weights(query.alpha, asked or "vector")
        else:
            mode_run, weights = mode, _weights(query.alpha, mode)

        def search(n: int, pool: int | None = None) -> list[dict[str, Any]]:
            out = self._backend.search(
                self._collection,
                text,
                vector=vector,
                k=n,
                where=where,
                mode=mode_run,
                vector_weight=weights[0],
                fulltext_weight=weights[1],
                **({**mmr, "fetch_k": pool} if mmr else {}),
            )
            return list(out["data"])

        # a node longer than one of ragstore's chunks (one added without an embedding,
        # which ragstore embeds and chunks) is found by each chunk (integrations/hits.py)
        try:
            prefetch = mmr.get("fetch_k")
            hits = distinct_mmr_hits(search, k, prefetch) if mmr else distinct_hits(search, k)
        except CollectionNotFoundError:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        # a node stored whole (with its own embedding) is its hit's text already: only
        # the nodes ragstore chunked are read again, whole (one more request or query)
        chunked = [str(h["source"]) for h in hits if _chunked_node(h["metadata"])]
        whole = whole_texts(self._backend, self._collection, chunked)
        nodes, scores, ids = [], [], []
        for hit in hits:
            source = str(hit["source"])
            text_of = whole[source]["text"] if source in whole else hit["text"]
            nodes.append(_node({**hit, "text": text_of}))
            scores.append(float(hit["score"]))
            ids.append(source)
        return VectorStoreQueryResult(nodes=nodes, similarities=scores, ids=ids)


# the VectorStoreQuery fields ragstore has no equivalent of, with what to do instead
_UNSUPPORTED_FIELDS = {
    "sparse_top_k": "ragstore's hybrid search has one k (similarity_top_k); leave it out",
    "hybrid_top_k": "ragstore's hybrid search has one k (similarity_top_k); leave it out",
    "output_fields": "nodes come back whole; leave it out",
    "embedding_field": "ragstore keeps one embedding per node; leave it out",
}


def _node_list(nodes: Any) -> list[BaseNode]:
    """``nodes`` as a list of nodes, or InputError saying what was given instead (see
    :meth:`RagstoreVectorStore.add`; :func:`ragstore.validation.per_text_list` refuses
    ``None``, a string, a dict or a set, as the LangChain store's ``add_texts`` does)."""
    if isinstance(nodes, BaseNode):  # iterable, over its fields
        raise InputError(
            f"nodes is one {type(nodes).__name__}, not a list of nodes; pass [node] to add one"
        )
    listed = per_text_list(nodes, "nodes", "pass a list of nodes ([TextNode(...), ...])")
    for i, node in enumerate(listed):
        if not isinstance(node, BaseNode):
            raise InputError(
                f"nodes[{i}] is {a_type(node)} ({node!r:.60}), not a node; "
                "pass LlamaIndex nodes (TextNode(text=...))"
            )
    return listed


def _no_other_arguments(method: str, kwargs: dict[str, Any], known: Sequence[str]) -> None:
    """Refuse the keyword arguments of ``method`` other than ``known``. Ignored, one the
    caller meant was dropped unsaid: a narrowing of a delete deleted more, of a query
    answered from more nodes."""
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        takes = ", ".join(f"{k}=" for k in known) or "no keyword arguments"
        raise InputError(
            f"{method} does not take {', '.join(f'{k}=' for k in unknown)}; it takes {takes}"
        )


# the query modes ragstore runs, as its search modes (DEFAULT and MMR: the store's own
# mode, MMR picking among its best; see _mmr)
_MODES = {VectorStoreQueryMode.HYBRID: "hybrid", VectorStoreQueryMode.TEXT_SEARCH: "fulltext"}
_MMR_KWARGS = ("mmr_threshold", "mmr_prefetch_k")


def _mmr(query: VectorStoreQuery, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The search's MMR options for a query in mode ``mmr`` (``{}`` in any other), taking
    its ``mmr_threshold`` and ``mmr_prefetch_k`` out of ``kwargs`` (a retriever's
    ``vector_store_kwargs``, where LlamaIndex passes them). Given to another mode, they
    stay in ``kwargs`` and are refused with the other unknown ones; a field
    ``mmr_threshold`` outside mode mmr is refused here."""
    if VectorStoreQueryMode(query.mode) != VectorStoreQueryMode.MMR:
        if query.mmr_threshold is not None:
            raise InputError(
                f"query mmr_threshold={query.mmr_threshold!r} applies to the mmr mode and "
                f"this query's is {VectorStoreQueryMode(query.mode).value}; ask for "
                'vector_store_query_mode="mmr", or leave it out'
            )
        return {}
    given = {name: kwargs.pop(name) for name in _MMR_KWARGS if name in kwargs}
    threshold = query.mmr_threshold
    if threshold is None:
        threshold = given.get("mmr_threshold")
    elif given.get("mmr_threshold", threshold) != threshold:
        raise InputError(
            f"the query's mmr_threshold ({threshold!r}) and the one passed as an argument "
            f"({given['mmr_threshold']!r}) differ; give one"
        )
    return {
        "mmr": True,
        "lambda_mult": threshold,
        "fetch_k": given.get("mmr_prefetch_k"),
    }


def _mode(asked: VectorStoreQueryMode | str, default: str) -> str:
    """The ragstore search mode for a query's ``mode``, or InputError for one ragstore
    cannot run (MMR, SVM, sparse vectors...): ignored, such a retriever got the plain
    ranking with no word that its mode was not applied."""
    mode = VectorStoreQueryMode(asked)
    if mode in (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.MMR):
        return default
    if mode not in _MODES:
        raise InputError(
            f"query mode {mode.value} is not one ragstore can run; use one of default, "
            "hybrid, text_search (ragstore's full-text search) or mmr"
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


def _source_id(metadata: dict[str, Any]) -> str | None:
    """The id of the source document of the node stored with ``metadata`` (``None``: no
    source, or not a LlamaIndex node). LlamaIndex stores a node without a source with
    ``ref_doc_id`` the string ``"None"``, so ``delete("None")`` matched every such node
    and deleted them all, where LlamaIndex's own store deletes none of them."""
    try:
        relations = json.loads(metadata["_node_content"])["relationships"]
        return str(relations[NodeRelationship.SOURCE.value]["node_id"])
    except (KeyError, TypeError, ValueError):
        return None


# the stored metadata's mark of a node stored whole (added with its embedding), written
# by add next to LlamaIndex's own keys (_node_content...); the node's own metadata, kept
# in _node_content, is returned without it, and may not hold the key (add refuses it, a
# filter names no such key of a node)
_WHOLE = WHOLE_MARK


def _chunked_node(metadata: dict[str, Any]) -> bool:
    """Whether a hit with ``metadata`` may hold a part of its node's text: a node added
    without an embedding, which ragstore chunks when long (and one stored before add
    marked the nodes it stores whole: read again, as then). A node added with its
    embedding is one chunk, its hit the whole text: it was read again all the same, one
    more request (or query) for every query. A text stored other than through
    LlamaIndex is its hit, as :func:`_node` answers it."""
    return "_node_content" in metadata and metadata.get(_WHOLE) is not True


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
    for name, field in (("node_ids", "source"), ("doc_ids", "ref_doc_id")):
        ids = getattr(query, name)
        if ids is not None:
            # one string was the list of its characters, so a query for node "ab" was
            # answered from nodes "a" and "b"
            ids = id_list(ids, f"query {name}")
        if ids:
            parts.append({field: {"$in": ids}})
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

    def _embed(self, texts: list[str], *, query: bool = False) -> list[list[float]]:
        """``texts`` embedded by the collection's model, or, before the collection exists,
        by the model an add would make it with (the Store's ``RAGSTORE_MODEL``). Nothing
        is created: the collection was made (``create=True``) by the first query's
        embedding, so a query against a misspelt name left an empty collection behind.
        Counted as a call of the Store (:meth:`Store.in_call`), so that its close waits
        for it rather than closing the pool under the lookup."""
        from ragstore.modelops.specs import find_model

        with self._store.in_call() as rt:
            try:
                embedder = rt.embedder_for(rt.collection(self._name))
            except CollectionNotFoundError:
                embedder = rt.embedder(find_model(rt, rt.settings.model).spec)
            if query:
                return [[float(x) for x in embedder.embed_query(t)] for t in texts]
            return [[float(x) for x in row] for row in embedder.embed(texts)]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed([query], query=True)[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embed(texts)
