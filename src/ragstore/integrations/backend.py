"""What the integrations need of ragstore: the verbs ``Store`` and ``Client`` share.

A structural type, so an integration takes either an in-process :class:`ragstore.Store`
or an HTTP :class:`ragstore.Client` without knowing which; and the small helpers every
integration repeats (make the collection for an outside embedding model on first add).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import suppress
from typing import Any, Protocol

from ragstore.errors import CollectionNotFoundError, ConflictError, ModelMismatchError
from ragstore.metadata_paths import escape_key, field_name


class Backend(Protocol):
    """The verbs of :class:`ragstore.Store` and :class:`ragstore.Client` used here."""

    def create_collection(
        self,
        name: str,
        *,
        model: str | None = None,
        settings: Mapping[str, Any] | None = None,
        dimension: int | None = None,
        distance: str | None = None,
    ) -> dict[str, Any]: ...

    def get_collection(self, name: str) -> dict[str, Any]: ...

    def fields(self, collection: str) -> dict[str, Any]: ...

    def delete_collection(self, name: str) -> None: ...

    def add_texts(
        self,
        collection: str,
        texts: Sequence[str],
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        ids: Sequence[str] | None = None,
        *,
        vectors: Sequence[Sequence[float]] | None = None,
    ) -> dict[str, Any]: ...

    def get_texts(self, collection: str, ids: Sequence[str]) -> list[dict[str, Any]]: ...

    def delete_texts(self, collection: str, ids: Sequence[str]) -> int: ...

    def text_ids(
        self,
        collection: str,
        *,
        where: Mapping[str, Any] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[str]: ...

    def delete_texts_where(
        self,
        collection: str,
        *,
        where: Mapping[str, Any] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[str]: ...

    def iter_documents(
        self, collection: str, *, page_size: int = 100, **filters: Any
    ) -> Iterator[dict[str, Any]]: ...

    def search(
        self,
        collection: str,
        query: str | None = None,
        *,
        vector: Sequence[float] | None = None,
        k: int = 10,
        mode: str | None = None,
        where: Mapping[str, Any] | None = None,
        context: int | str | None = None,
        explain: bool = False,
        ef_search: int | None = None,
        rrf_k: float | None = None,
        vector_weight: float | None = None,
        fulltext_weight: float | None = None,
        sections: bool = True,
        mmr: bool = False,
        fetch_k: int | None = None,
        lambda_mult: float | None = None,
    ) -> dict[str, Any]: ...


def ensure_vector_collection(
    backend: Backend, name: str, model: str, dimension: int, distance: str | None = None
) -> None:
    """Create ``name`` for vectors of an outside model unless it exists; an existing one
    must hold vectors of that model (a dimension that differs is refused by the add that
    follows). Used as is whatever it held, a collection of ragstore's own 384-dimension
    model took a framework model's 384-dimension vectors without a word, and its searches
    then compared vectors of two models. ``distance`` None: the model's own (cosine for
    a new one); one given that differs from the model's is refused by the backend."""
    try:
        held = str(backend.get_collection(name)["model"])
    except CollectionNotFoundError:
        with suppress(ConflictError):  # made meanwhile by another writer
            backend.create_collection(name, model=model, dimension=dimension, distance=distance)
        held = str(backend.get_collection(name)["model"])
    if not same_model(held, model):
        raise ModelMismatchError(
            f"collection {name!r} holds vectors of {held}, and these texts come with vectors "
            f"of {model} (the store's embedding): the two cannot be searched together. Use "
            "another collection, or pass model_name= naming the collection's model if the "
            "embedding is that model"
        )


def same_model(held: str, model: str) -> bool:
    """Whether a collection's model key ``held`` (``NAME@REVISION``) is ``model``: its
    name alone matches any revision, ``NAME@REVISION`` that revision only. Compared by
    name alone, a ``model_name`` with a revision never matched the collection made for it,
    so the first add made the collection and was refused as a mismatch with itself."""
    held_name, _, held_revision = held.partition("@")
    name, at, revision = model.partition("@")
    if held_name != name.strip():
        return False
    return not at or held_revision == (revision.strip() or "imported")


def exists(backend: Backend, name: str) -> bool:
    try:
        backend.get_collection(name)
    except CollectionNotFoundError:
        return False
    return True


def metadata_field(key: str) -> str:
    """The ``where`` field of the framework metadata key ``key``: the key itself, or for
    a key named like one of ragstore's built-in fields (``source``, ``page``, ...) its
    path in the document's metadata (``document.KEY``), where the frameworks' ``add``
    stores a node's metadata exactly as given. Passed as is, a filter on a LlamaIndex
    node's or LangChain document's own ``source`` or ``page`` (the loaders' usual keys)
    compared ragstore's column (the text id, the chunk's page) instead, so other nodes
    were returned and deleted. A key starting with ``$`` (read bare as an operator) is
    named the same way (metadata_paths.py's ``field_name``, for a key seen in documents),
    and a key holding a dot is escaped (``v1.2``: ``v1\\.2``), where it was read as the
    nested path ``v1`` -> ``2``. A key no filter can name (empty, or too long once
    escaped) is still escaped, so that the filter refuses it rather than reading a nested
    path."""
    return field_name((key,), "document") or escape_key(key)


def described_fields(
    backend: Backend, collection: str, skip: Collection[str] = (), top_level: bool = False
) -> list[tuple[str, str, str]]:
    """``(path, type, description)`` of each metadata path of ``collection`` that holds
    values (no objects), from the backend's ``fields`` sample, for the retrievers that
    have a language model write filters: ``type`` is ``string``, ``integer``, ``float``,
    ``boolean`` or ``list`` (several joined by `` or ``), ``description`` a few values.
    Paths whose first key is in ``skip`` (a framework's own keys) are left out; a
    collection not made yet has none. ``path`` is the field a ragstore filter names, or
    with ``top_level`` the documents' top-level keys alone, by the key itself (a
    LlamaIndex filter's key, which :func:`metadata_field` makes a field)."""
    try:
        fields = backend.fields(collection)["metadata"]
    except CollectionNotFoundError:
        return []
    out = []
    for f in fields:
        keys = f.get("keys") or f["field"].split(".")  # a server before "keys": bare paths
        if "object" in f["types"] or keys[0] in skip:
            continue
        name = f["field"]
        if top_level:
            bare = escape_key(keys[0])
            if len(keys) > 1 or name not in (bare, f"document.{bare}"):
                continue  # nested, or only in chunks' own metadata under a built-in's name
            name = keys[0]
        types = [t for t in f["types"] if t != "null"]
        if types == ["number"]:
            ints = all(isinstance(v, int) for v in f["examples"])
            types = ["integer" if ints else "float"]
        kind = " or ".join("list" if t == "array" else t for t in types) or "null"
        examples = ", ".join(repr(v) for v in f["examples"])
        out.append((name, kind, f"e.g. {examples}" if examples else "no values seen"))
    return out
