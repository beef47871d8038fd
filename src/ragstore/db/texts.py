"""SQL for documents added as texts under caller-chosen ids (their ``source``).

``Store.add_texts`` and the integrations (LangChain, LlamaIndex) address documents by
the id the caller gave, which is the document's ``source``; these queries read them back
by that id, and delete those a filter selects (:func:`delete_matching`). Writes go
through :func:`ragstore.db.documents.write_documents`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from ragstore.chunking import recipe
from ragstore.db import documents

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class StoredText:
    """A document as text: its id (source), row id, text, metadata and content hash."""

    id: str
    document_id: int
    text: str
    metadata: dict[str, Any]
    content_hash: str


def texts_by_ids(conn: Conn, collection_id: int, ids: Sequence[str]) -> list[StoredText]:
    """The documents whose source is one of ``ids``, in the order of ``ids``; missing ids
    are left out. A document's text is the text its writer sent where the document kept it
    (``add_texts``, :func:`ragstore.chunking.recipe.original_text`), else its chunks'
    texts in order (headings included)."""
    if not ids:
        return []
    rows = conn.execute(
        "SELECT d.source, d.id, coalesce(string_agg(c.text, E'\\n\\n' ORDER BY c.ordinal), ''),"
        " d.metadata, d.content_hash, d.parsed"
        " FROM documents d LEFT JOIN chunks c ON c.document_id = d.id"
        " WHERE d.collection_id = %s AND d.source = ANY(%s) GROUP BY d.id",
        (collection_id, list(ids)),
    ).fetchall()
    found = {}
    for source, row_id, joined, metadata, content_hash, parsed in rows:
        sent = recipe.original_text(bytes(parsed)) if parsed is not None else None
        text = joined if sent is None else sent
        found[str(source)] = StoredText(
            str(source), int(row_id), str(text), dict(metadata), str(content_hash)
        )
    return [found[i] for i in dict.fromkeys(ids) if i in found]


def count_documents(conn: Conn, collection_id: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM documents WHERE collection_id = %s", (collection_id,)
    ).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class TextSelection:
    """Which texts of a collection a call means: those one of whose chunks meets
    ``condition`` (a compiled ``where`` filter over ``c`` and ``d``, its values in
    ``params``; None: every document), among the sources ``ids`` when given."""

    condition: sql.Composable | None = None
    params: dict[str, Any] = field(default_factory=dict)
    ids: list[str] | None = None

    def clause(self) -> sql.Composable:
        """The condition on a document ``d`` of collection ``%(cid)s``: ``ids`` and the
        filter, bound by :meth:`values`. A document matches as search finds it: through
        any of its chunks."""
        match = (
            sql.SQL("TRUE")
            if self.condition is None
            else sql.SQL(
                "EXISTS (SELECT 1 FROM chunks c WHERE c.document_id = d.id AND {})"
            ).format(self.condition)
        )
        return sql.SQL(
            "d.collection_id = %(cid)s"
            " AND (%(ids)s::text[] IS NULL OR d.source = ANY(%(ids)s::text[])) AND {}"
        ).format(match)

    def values(self, collection_id: int) -> dict[str, Any]:
        return {**self.params, "cid": collection_id, "ids": self.ids}


def sources_matching(
    conn: Conn,
    collection_id: int,
    selection: TextSelection,
    *,
    after: str | None = None,
    limit: int | None = None,
) -> list[str]:
    """The sources (text ids) of the collection's documents ``selection`` means, in
    source order. ``after`` and ``limit`` give one page of them (keyset on source, as
    the HTTP route pages)."""
    stmt = sql.SQL(
        "SELECT d.source FROM documents d WHERE {}"
        " AND (%(after)s::text IS NULL OR d.source > %(after)s::text)"
        " ORDER BY d.source LIMIT %(limit)s"
    ).format(selection.clause())
    values = {**selection.values(collection_id), "after": after, "limit": limit}
    return [str(r[0]) for r in conn.execute(stmt, values).fetchall()]


def delete_matching(conn: Conn, collection_id: int, selection: TextSelection) -> list[str]:
    """Delete the documents ``selection`` means, under their sources' write locks; the
    sources deleted are returned, in source order.

    The matching sources are read, their locks taken, and the condition checked again
    by the DELETE itself, whose snapshot is taken once the locks are held: a text that a
    writer changed meanwhile (holding its lock while the first read saw the old version)
    is deleted only if it still matches. Deleted by source alone, as read before the
    locks, a text whose metadata had just been changed to fall outside the filter was
    deleted all the same. The caller holds the collection row first
    (:func:`ragstore.db.documents.hold_live`)."""
    found = sources_matching(conn, collection_id, selection)
    if not found:
        return []
    documents.lock_sources(conn, collection_id, found)
    again = dataclasses.replace(selection, ids=found)  # not one added meanwhile
    stmt = sql.SQL("DELETE FROM documents d WHERE {} RETURNING d.source").format(again.clause())
    deleted = sorted(str(r[0]) for r in conn.execute(stmt, again.values(collection_id)).fetchall())
    documents.bury(conn, collection_id, deleted)  # a queued job does not store them again
    return deleted
