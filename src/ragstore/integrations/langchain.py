"""A LangChain ``VectorStore`` on ragstore: ``RagstoreVectorStore`` (extra ``[langchain]``).

::

    from ragstore import Store
    from ragstore.integrations.langchain import RagstoreVectorStore

    vs = RagstoreVectorStore(Store(), "notes")            # the collection's own model
    vs.add_texts(["Rollback: run ragstore db downgrade."], metadatas=[{"team": "db"}])
    vs.as_retriever(search_kwargs={"k": 3, "filter": {"team": "db"}}).invoke("roll back?")

Without ``embedding`` ragstore embeds with the collection's pinned model, chunks long
texts, and searches in ``mode`` (hybrid by default: vector and BM25 fused). With a
LangChain ``embedding`` the vectors are LangChain's: each text is stored whole with its
vector in a collection created for that model, and searches are by vector. Either way the
backend is a :class:`ragstore.Store` or a :class:`ragstore.Client` (same verbs), and
``filter`` is ragstore's ``where`` language (``{"year": {"$gte": 2020}}``). A document's
LangChain ``id`` is its ragstore text id.
"""

from __future__ import annotations

import numbers
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.runnables.config import run_in_executor
from langchain_core.structured_query import (
    Comparator,
    Comparison,
    Operation,
    Operator,
    StructuredQuery,
    Visitor,
)
from langchain_core.vectorstores import VectorStore

from ragstore.errors import CollectionNotFoundError, InputError, InvalidFilterError
from ragstore.ingest.texts import check_call
from ragstore.integrations.backend import (
    Backend,
    described_fields,
    ensure_vector_collection,
    metadata_field,
)
from ragstore.integrations.hits import distinct_hits, distinct_mmr_hits, whole_texts
from ragstore.validation import a_type, id_list, text_list

__all__ = ["RagstoreTranslator", "RagstoreVectorStore"]


class RagstoreVectorStore(VectorStore):
    """A ragstore collection as a LangChain vector store.

    ``backend``: a :class:`ragstore.Store` or :class:`ragstore.Client`; ``collection``: its
    name; ``embedding``: a LangChain model whose vectors to store (``None``: ragstore's own
    model); ``model_name``: how the collection records that outside model; ``mode``: the
    search mode when ragstore embeds (``hybrid``, ``vector`` or ``fulltext``);
    ``distance``: that of a collection made for the outside model (``None``: the model's
    own, cosine for a new one).
    """

    def __init__(
        self,
        backend: Backend,
        collection: str,
        embedding: Embeddings | None = None,
        *,
        model_name: str | None = None,
        mode: str = "hybrid",
        distance: str | None = None,
    ) -> None:
        self.backend = backend
        self.collection = collection
        self._embedding = embedding
        self.model_name = model_name or (
            f"langchain-{type(embedding).__name__}" if embedding is not None else None
        )
        self.mode = mode
        self.distance = distance

    @property
    def embeddings(self) -> Embeddings | None:
        return self._embedding

    # --- writing -------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Add or update texts; ids missing (``None``) are generated. Returns the ids.
        One string is refused (it was added as one text per character), as is ``None``."""
        batch = text_list(texts)
        if not batch:
            return []
        given: list[str | None] = list(ids) if ids else [None] * len(batch)
        chosen = [i if i else uuid.uuid4().hex for i in given]
        vectors = None
        if self._embedding is not None:
            # checked before the collection is made for the model (and before the model
            # is called): a refused add left an empty collection pinned to it
            check_call(batch, metadatas, chosen, None)
            vectors = self._embedding.embed_documents(batch)
            check_call(batch, metadatas, chosen, vectors)
            assert self.model_name is not None
            ensure_vector_collection(
                self.backend, self.collection, self.model_name, len(vectors[0]), self.distance
            )
        out = self.backend.add_texts(self.collection, batch, metadatas, chosen, vectors=vectors)
        return list(out["ids"])

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete these ids (unknown ones are ignored); ``None`` deletes every text, in
        one transaction, and keeps the collection with its model and settings (as
        LlamaIndex's ``clear()``). It deleted the collection: its settings and pinned
        model went with it, and over HTTP it needed an ``admin`` key where a ``write``
        key deletes texts. Any other argument is refused: ignored, ``delete(filter={...})``
        (a delete by metadata, as some stores take) had no ids and deleted everything."""
        _no_other_arguments("delete", kwargs, ())
        with suppress(CollectionNotFoundError):  # no collection: nothing to delete
            if ids is None:
                self.backend.delete_texts_where(self.collection)
            else:
                self.backend.delete_texts(self.collection, ids)
        return True

    # --- reading -------------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        try:
            # one string is refused, not read as the ids of its characters
            found = self.backend.get_texts(self.collection, id_list(ids, "ids"))
        except CollectionNotFoundError:
            return []
        return [Document(id=t["id"], page_content=t["text"], metadata=t["metadata"]) for t in found]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    def similarity_search_with_score(
        self, *args: Any, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """``(query, k=4, filter=None)``: documents with ragstore's score (higher is
        closer: cosine similarity in vector mode, the fused RRF score in hybrid)."""
        query, k, where = _query_args(args, kwargs)
        if self._embedding is not None:
            return self._search(vector=self._embedding.embed_query(query), k=k, where=where)
        return self._search(query=query, k=k, where=where, mode=self.mode)

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[Document]:
        _no_other_arguments("similarity_search_by_vector", kwargs, ("filter",))
        return [doc for doc, _ in self._search(vector=embedding, k=k, where=kwargs.get("filter"))]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int | None = None,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """``k`` documents picked by maximal marginal relevance among the best ``fetch_k``
        of the search (``mode``; by vector with a LangChain ``embedding``): ragstore's
        search with ``mmr`` (search/mmr.py): by vector LangChain's definition, cosine
        similarity of the stored vectors; in hybrid or full-text mode relevance is that
        mode's ranking. What ``as_retriever(search_type="mmr")`` runs. Without
        ``fetch_k`` the pool is 20, or ``k`` when larger: LangChain's default of 20 was
        refused for ``k`` above 20, where LangChain's own stores return up to ``k``."""
        _no_other_arguments("max_marginal_relevance_search", kwargs, ("filter",))
        _query_text(query, "max_marginal_relevance_search")
        if self._embedding is not None:
            vector = self._embedding.embed_query(query)
            return self.max_marginal_relevance_search_by_vector(
                vector, k, fetch_k, lambda_mult, **kwargs
            )
        return self._mmr(
            kwargs, query=query, k=k, mode=self.mode, fetch_k=fetch_k, lambda_mult=lambda_mult
        )

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int | None = None,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """:meth:`max_marginal_relevance_search` by ``embedding`` (a vector search, the
        embedding also the query's vector MMR compares with)."""
        _no_other_arguments("max_marginal_relevance_search_by_vector", kwargs, ("filter",))
        return self._mmr(kwargs, vector=embedding, k=k, fetch_k=fetch_k, lambda_mult=lambda_mult)

    def _mmr(self, kwargs: dict[str, Any], **search: Any) -> list[Document]:
        """The MMR search both MMR methods run (their arguments checked), ``filter`` from
        ``kwargs``."""
        return [doc for doc, _ in self._search(where=kwargs.get("filter"), mmr=True, **search)]

    async def amax_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int | None = None,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """:meth:`max_marginal_relevance_search` on a worker thread. langchain_core's
        default passed its own ``fetch_k=20``, so ``ainvoke`` of an MMR retriever with
        ``k`` above 20 was refused (fetch_k smaller than k) where ``invoke`` was not."""
        return await run_in_executor(
            None, self.max_marginal_relevance_search, query, k, fetch_k, lambda_mult, **kwargs
        )

    async def amax_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int | None = None,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """:meth:`max_marginal_relevance_search_by_vector` on a worker thread (``fetch_k``
        as :meth:`amax_marginal_relevance_search` says)."""
        return await run_in_executor(
            None,
            self.max_marginal_relevance_search_by_vector,
            embedding,
            k,
            fetch_k,
            lambda_mult,
            **kwargs,
        )

    def _search(
        self,
        *,
        query: str | None = None,
        vector: Sequence[float] | None = None,
        k: int,
        where: dict[str, Any] | None,
        mode: str | None = None,
        mmr: bool = False,
        fetch_k: int | None = None,
        lambda_mult: float | None = None,
    ) -> list[tuple[Document, float]]:
        _check_filter(where)
        if isinstance(fetch_k, numbers.Integral) and not isinstance(fetch_k, bool):
            fetch_k = int(fetch_k)  # numpy's, as for k (_query_args)

        def search(n: int, pool: int | None = None) -> list[dict[str, Any]]:
            extra: dict[str, Any] = (
                {"mmr": True, "fetch_k": pool, "lambda_mult": lambda_mult} if mmr else {}
            )
            out = self.backend.search(
                self.collection, query, vector=vector, k=n, where=where, mode=mode, **extra
            )
            return list(out["data"])

        # a text ragstore embedded is chunked when long, and found by each chunk: one
        # Document per text, whole, scored by its best chunk (integrations/hits.py)
        try:
            hits = distinct_mmr_hits(search, k, fetch_k) if mmr else distinct_hits(search, k)
        except CollectionNotFoundError:
            return []  # an empty store: nothing added yet
        chunked = [str(h["source"]) for h in hits] if self._embedding is None else []
        whole = whole_texts(self.backend, self.collection, chunked)
        found = []
        for hit in hits:
            stored = whole.get(str(hit["source"]), hit)
            doc = Document(
                id=hit["source"], page_content=stored["text"], metadata=stored["metadata"]
            )
            found.append((doc, float(hit["score"])))
        return found

    def metadata_field_info(self) -> list[dict[str, str]]:
        """The collection's metadata described for a self-query retriever
        (``SelfQueryRetriever.from_llm(..., metadata_field_info=vs.metadata_field_info(),
        structured_query_translator=RagstoreTranslator())``): each path with its type and
        a few values, from ragstore's sample of it (``fields``). None before the first add.
        Each name is the field the translator passes on: a key named like a ragstore
        built-in (a loader's ``source`` or ``page``) is named by its path in the
        documents' metadata, ``document.source``; named ``source``, the filter the
        language model wrote on it compared the built-in column (the text id) instead."""
        return [
            {"name": _field(name), "type": kind, "description": about}
            for name, kind, about in described_fields(self.backend, self.collection)
        ]

    def _similarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Relevance is a similarity, so these searches are by vector whatever ``mode``:
        in hybrid mode a hit's score is its fused rank score (about 0.03 to 0.2), which
        the cosine mapping turned into about 0.5 for every hit, and in full-text mode a
        BM25 score, unbounded; a ``score_threshold`` kept or dropped hits at random."""
        _no_other_arguments("similarity_search_with_relevance_scores", kwargs, ("filter",))
        _query_text(query, "similarity_search_with_relevance_scores")
        where = kwargs.get("filter")
        if self._embedding is not None:
            hits = self._search(vector=self._embedding.embed_query(query), k=k, where=where)
        else:
            hits = self._search(query=query, k=k, where=where, mode="vector")
        if not hits:
            return []
        relevance = self._select_relevance_score_fn()
        return [(doc, relevance(score)) for doc, score in hits]

    async def _asimilarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """:meth:`_similarity_search_with_relevance_scores` on a worker thread. Not
        overridden, langchain_core's default mapped ``asimilarity_search_with_score`` in
        the store's ``mode``: in hybrid mode every hit came out about 0.55, so
        ``ainvoke`` of a ``score_threshold`` retriever returned nothing where ``invoke``
        returned the matching texts."""
        return await run_in_executor(
            None, self._similarity_search_with_relevance_scores, query, k, **kwargs
        )

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Scores to [0, 1] for ``similarity_search_with_relevance_scores``, by the
        distance of the collection searched (``distance=`` only chooses it for a
        collection this store makes; an existing one keeps its own). Taken from the
        argument, a store opened on an ``l2`` collection mapped its scores as cosine
        similarities, and ``l2`` or ``ip`` scores passed through unmapped (an ``l2`` score
        is minus the distance: every relevance came out 0 or below).

        cosine: ``(similarity + 1) / 2``; ip (the inner product, a cosine for the unit
        vectors it is meant for): the same, clipped to [0, 1]; l2: ``1 / (1 + distance)``."""
        try:
            distance = str(self.backend.get_collection(self.collection)["distance"])
        except CollectionNotFoundError:
            distance = self.distance or "cosine"
        if distance == "l2":
            return lambda score: 1.0 / (1.0 - score)  # score = -distance
        if distance == "ip":
            return lambda score: min(1.0, max(0.0, (score + 1.0) / 2.0))
        return lambda score: (score + 1.0) / 2.0

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> RagstoreVectorStore:
        """``from_texts(texts, embedding, backend=Store(), collection="name")``."""
        try:
            backend, collection = kwargs.pop("backend"), kwargs.pop("collection")
        except KeyError as exc:
            raise TypeError(
                f"from_texts needs {exc.args[0]}=: a ragstore Store or Client "
                "and the collection name"
            ) from None
        store = cls(backend, collection, embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store


def _query_args(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[str, int, dict[str, Any] | None]:
    """``(query, k, filter)``: ``k`` is checked by the search, as every search of ragstore
    checks it (cast with ``int()``, k=2.5 searched for 2 hits and k=True for 1); an
    integer of another type (numpy's) is made a Python ``int``, which a Client can send."""
    if len(args) > 2:
        raise InputError(
            f"similarity_search_with_score takes (query, k) by position, got {len(args)} "
            "arguments; pass filter= by name"
        )
    _no_other_arguments("similarity_search", kwargs, ("query", "k", "filter"))
    query = args[0] if args else kwargs["query"]
    k = args[1] if len(args) > 1 else kwargs.get("k", 4)
    if isinstance(k, numbers.Integral) and not isinstance(k, bool):
        k = int(k)
    where = kwargs.get("filter")
    return _query_text(query, "similarity_search"), k, where


def _check_filter(value: Any) -> None:
    """Refuse a ``filter`` that is no dict (a mapping), in LangChain's terms. Passed on,
    the search refused it as a ``where`` that is no object ("send 'where' as an object"),
    naming ragstore's own parameter, which a LangChain caller never used; the code is
    the same (``invalid_filter``)."""
    if value is not None and not isinstance(value, Mapping):
        raise InvalidFilterError(
            'filter must be a dict, e.g. {"team": "ops"} or {"year": {"$gte": 2020}}, '
            f"got {a_type(value)} ({value!r:.60})"
        )


def _query_text(query: Any, method: str) -> str:
    """``query`` when it is text, else InputError. Made a string, ``None`` was searched
    for as the word "None" (and ``b"..."`` as its repr), answered with hits as if asked."""
    if not isinstance(query, str):
        raise InputError(f"{method}'s query must be text, got {type(query).__name__} {query!r:.80}")
    return query


def _no_other_arguments(method: str, kwargs: dict[str, Any], known: Sequence[str]) -> None:
    """Refuse the keyword arguments of ``method`` other than ``known``. Ignored, one the
    caller meant was dropped unsaid: ``similarity_search(q, where={...})`` (ragstore's own
    word for ``filter``) searched the whole collection, ``delete(filter={...})`` deleted
    all of it."""
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        takes = ", ".join(f"{k}=" for k in known) or "ids= alone"
        hint = ' (filter= is ragstore\'s where language: {"year": {"$gte": 2020}})'
        raise InputError(
            f"{method} does not take {', '.join(f'{k}=' for k in unknown)}; it takes "
            f"{takes}{hint if 'filter' in known else ''}"
        )


def _field(name: str) -> str:
    """The field of a path the ``fields`` sample names: already a filter's field, escaped
    (``v1\\.2``) or nested (``author.name``), where it holds a dot or a backslash, so kept
    (made a key's field again, ``author.name`` became the one key ``author\\.name``); a
    bare key as :func:`metadata_field` names it (``source``, from a server that listed a
    built-in's name bare, is ``document.source``)."""
    return name if "." in name or "\\" in name else metadata_field(name)


class RagstoreTranslator(Visitor):
    """A self-query retriever's structured query as ragstore's ``where`` filter (the
    ``structured_query_translator`` of LangChain's ``SelfQueryRetriever``). ``contain``
    and ``like`` have no ragstore operator and are refused, as is ``not`` of more than
    one condition."""

    allowed_comparators = (
        Comparator.EQ,
        Comparator.NE,
        Comparator.GT,
        Comparator.GTE,
        Comparator.LT,
        Comparator.LTE,
        Comparator.IN,
        Comparator.NIN,
    )
    allowed_operators = (Operator.AND, Operator.OR, Operator.NOT)

    def visit_operation(self, operation: Operation) -> dict[str, Any]:
        self._validate_func(operation.operator)
        args = [a.accept(self) for a in operation.arguments]
        if operation.operator is Operator.NOT:
            if len(args) != 1:
                raise ValueError(f"not takes one condition, got {len(args)}")
            return {"$not": args[0]}
        return {f"${operation.operator.value}": args}

    def visit_comparison(self, comparison: Comparison) -> dict[str, Any]:
        self._validate_func(comparison.comparator)
        value = comparison.value
        if isinstance(value, dict) and value.get("type") in ("date", "datetime"):
            value = value.get("date", value.get("datetime"))  # the query constructor's dates
        return {comparison.attribute: {f"${comparison.comparator.value}": value}}

    def visit_structured_query(
        self, structured_query: StructuredQuery
    ) -> tuple[str, dict[str, Any]]:
        if structured_query.filter is None:
            return structured_query.query, {}
        return structured_query.query, {"filter": structured_query.filter.accept(self)}
