"""The fields a search filter can name in a collection: the built-ins, and the metadata
paths its documents and chunks carry, each with the JSON types and a few values seen.

A filter names metadata by path (``{"year": {"$gte": 2020}}``), so whoever builds one (a
person at the console, an agent through MCP, LlamaIndex's auto-retriever or LangChain's
self-query retriever, which are given a description of the metadata) first needs to know
which paths exist and what they hold. Metadata is free-form JSON with no schema in the
catalog, so the paths are read from a bounded sample, whatever the collection's size: the
latest :data:`SAMPLE` documents (through the index on ``created_at``) and
:data:`CHUNK_SAMPLE` chunks, for the metadata some carry of their own. A path only a few
older documents or rare chunks carry can be missed; the answer says how many of each were
read.

Each path is listed by the field a filter must name to read it (the grammar's
:func:`~ragstore.metadata_paths.field_name`): a metadata key named like a built-in
(``source``, a loader's usual key) as ``document.source`` where documents carry it and
``chunk.source`` where only chunks do, since a filter on ``source`` reads the built-in
column.
Listed bare, a filter written from the listing read the column and found other chunks.
Paths no filter can name (a key holding a dot) are left out and counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ragstore.chunking.recipe import CHUNKER_KEYS
from ragstore.db import field_indexes, inspection
from ragstore.db.errors import translated
from ragstore.db.repository import Collection
from ragstore.metadata_paths import field_name
from ragstore.models import ChunkType
from ragstore.search.filters import json_type

if TYPE_CHECKING:
    from ragstore.runtime import Runtime

SAMPLE = 1000  # documents read at most
CHUNK_SAMPLE = 20_000  # chunks read at most (a small row each: most carry no metadata)
MAX_FIELDS = 200  # paths reported at most, the most common first
MAX_DEPTH = 4  # nested objects are walked this deep (``a.b.c.d``)
MAX_EXAMPLES = 5  # distinct values shown a path
EXAMPLE_CHARS = 80  # a longer string value is cut
UNFILTERABLE = (
    "an empty key, or a path longer than a filter may name, cannot be named by a filter; "
    "rename the metadata key (e.g. 'blank' for '') to filter on it"
)

# The built-in fields (search/filters.py's BUILTINS), as a caller writes their values
BUILTIN_FIELDS: tuple[dict[str, Any], ...] = (
    {"field": "source", "type": "string", "about": "the document's name (a file's path)"},
    {"field": "title", "type": "string", "about": "the document's title, if it has one"},
    {
        "field": "chunk_type",
        "type": "string",
        "about": "the kind of chunk",
        "values": [t.value for t in ChunkType],
    },
    {
        "field": "created_at",
        "type": "timestamp",
        "about": "when the document was first stored (ISO 8601, e.g. 2026-01-31)",
    },
    {"field": "page", "type": "integer", "about": "the chunk's page, in paged formats"},
    {"field": "collection", "type": "string", "about": "the collection's name"},
)


@dataclass
class _Path:
    keys: tuple[str, ...]
    types: set[str] = field(default_factory=set)
    documents: int = 0
    chunks: int = 0
    examples: list[Any] = field(default_factory=list)


def describe_fields(rt: Runtime, coll: Collection) -> dict[str, Any]:
    """The built-in fields and the metadata paths of ``coll``'s sampled documents and
    chunks: each path's JSON types, how many sampled documents and chunks carry it, up
    to :data:`MAX_EXAMPLES` of its values, and the kinds of value (number, string) that
    a range on it finds through an index (``ragstore db index-field``)."""
    with rt.db.connection() as conn, translated(f"reading the fields of {coll.name!r}"):
        documents = inspection.document_metadata_sample(conn, coll.id, SAMPLE)
        scanned, chunks = inspection.chunk_metadata_sample(
            conn, coll.id, CHUNK_SAMPLE, without=list(CHUNKER_KEYS)
        )
        indexed = field_indexes.indexed(conn)
    paths: dict[str, _Path] = {}
    unnamed: dict[tuple[str, ...], None] = {}  # the paths no filter can name, in order
    for metadata in documents:
        for name in _walk(metadata, (), "document", paths, unnamed):
            paths[name].documents += 1
    for metadata in chunks:
        for name in _walk(metadata, (), "chunk", paths, unnamed):
            paths[name].chunks += 1
    kinds: dict[str, list[str]] = {}
    for index in indexed:
        kinds.setdefault(index.field, []).append(index.kind)
    ranked = sorted(paths.items(), key=lambda kv: (-(kv[1].documents + kv[1].chunks), kv[0]))
    return {
        "collection": coll.name,
        "sampled": {"documents": len(documents), "chunks": scanned},
        "builtins": [dict(b) for b in BUILTIN_FIELDS],
        "metadata": [
            {
                "field": name,
                "types": sorted(p.types),
                "documents": p.documents,
                "chunks": p.chunks,
                "examples": p.examples,
                "indexed": sorted(kinds.get(name, [])),
                "keys": list(p.keys),
            }
            for name, p in ranked[:MAX_FIELDS]
        ],
        "truncated": len(ranked) > MAX_FIELDS,
        "unfilterable": {
            "count": len(unnamed),
            "examples": [list(k) for k in list(unnamed)[:MAX_EXAMPLES]],
            "reason": UNFILTERABLE if unnamed else None,
        },
    }


def _walk(
    value: Any,
    keys: tuple[str, ...],
    scope: str,
    paths: dict[str, _Path],
    unnamed: dict[tuple[str, ...], None],
) -> set[str]:
    """Record every path of the metadata object ``value`` under ``keys``, seen in the
    metadata of ``scope`` (document or chunk), by the field a filter names it; the fields
    seen (each counted once a row). A path that needs a prefix is ``document.PATH`` where
    sampled documents carry it (the chunks of ``add_texts`` carry their text's metadata
    too: one entry, not two), ``chunk.PATH`` where only chunks do. A path no filter can
    name is put in ``unnamed``, and what it holds is not walked."""
    seen: set[str] = set()
    if not isinstance(value, Mapping):
        return seen
    for key, item in value.items():
        if not isinstance(key, str):
            continue
        here = (*keys, key)
        name = field_name(here, "document")
        if scope == "chunk" and name not in paths:  # documents are walked first
            name = field_name(here, scope)
        if name is None:
            unnamed.setdefault(here, None)
            continue
        path = paths.setdefault(name, _Path(here))
        path.types.add(json_type(item))
        seen.add(name)
        if isinstance(item, Mapping):
            if len(here) < MAX_DEPTH:
                seen |= _walk(item, here, scope, paths, unnamed)
        elif not isinstance(item, list) and item is not None:
            example = item[:EXAMPLE_CHARS] if isinstance(item, str) else item
            known = {(type(e), e) for e in path.examples}  # True is not 1 here
            if len(path.examples) < MAX_EXAMPLES and (type(example), example) not in known:
                path.examples.append(example)
    return seen
