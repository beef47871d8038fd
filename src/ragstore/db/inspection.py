"""Read-only SQL for looking inside a collection: sizes, spaces with progress, last ingest,
and a document's chunks in order (or a section's).

The web console (``/ui``) shows these through the JSON API; they never write. Functions
take an open connection and run inside the caller's transaction. The ``documents`` and
``chunks`` tables are shared by every collection, so their sizes are reported as the
shared tables' sizes; each embedding space has tables of its own, sized exactly.
"""

from __future__ import annotations

import re
from typing import Any, cast

import psycopg
from psycopg import sql

from ragstore.db.catalog import document_not_found
from ragstore.db.repository import Collection

Conn = psycopg.Connection[Any]

MAX_CHUNKS_PAGE = 5000


def collection_stats(conn: Conn, collection_id: int) -> dict[str, Any]:
    """Counts, last ingest and the shared tables' sizes for one collection."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM documents WHERE collection_id = %(c)s),"
        " (SELECT count(*) FROM chunks WHERE collection_id = %(c)s),"
        " (SELECT max(updated_at) FROM documents WHERE collection_id = %(c)s),"
        " (SELECT created_at FROM collections WHERE id = %(c)s),"
        " pg_table_size('documents'), pg_indexes_size('documents'),"
        " pg_table_size('chunks'), pg_indexes_size('chunks')",
        {"c": collection_id},
    ).fetchone()
    assert row is not None  # aggregates always answer one row
    return {
        "documents": int(row[0]),
        "chunks": int(row[1]),
        "last_ingest": row[2],
        "created_at": row[3],
        "shared_tables": [
            {"table": "documents", "table_bytes": int(row[4]), "index_bytes": int(row[5])},
            {"table": "chunks", "table_bytes": int(row[6]), "index_bytes": int(row[7])},
        ],
    }


def space_stats(conn: Conn, collection_id: int) -> list[dict[str, Any]]:
    """Each embedding space of a collection with its vector count and sizes, oldest first.

    A space's table is counted with ``count(*)`` (exact, an index-only scan on its primary
    key); a dropped table (cancelled migration racing this read) counts as empty.
    """
    rows = conn.execute(
        "SELECT s.id, m.name || '@' || m.revision, m.name, s.status, s.table_name,"
        " s.created_at, s.activated_at, (c.active_space_id = s.id),"
        " to_regclass(quote_ident(s.table_name)) IS NOT NULL"
        " FROM embedding_spaces s JOIN embedding_models m ON m.id = s.model_id"
        " JOIN collections c ON c.id = s.collection_id"
        " WHERE s.collection_id = %s ORDER BY s.id",
        (collection_id,),
    ).fetchall()
    out = []
    for r in rows:
        table, exists = str(r[4]), bool(r[8])
        embedded = table_bytes = index_bytes = 0
        if exists:
            sized = conn.execute(
                sql.SQL(
                    "SELECT pg_table_size(%(t)s::regclass), pg_indexes_size(%(t)s::regclass),"
                    " (SELECT count(*) FROM {})"
                ).format(sql.Identifier(table)),
                {"t": table},
            ).fetchone()
            assert sized is not None
            table_bytes, index_bytes, embedded = int(sized[0]), int(sized[1]), int(sized[2])
        out.append(
            {
                "id": int(r[0]),
                "model": r[1],
                "model_name": r[2],
                "status": r[3],
                "table": table,
                "created_at": r[5],
                "activated_at": r[6],
                "active": bool(r[7]),
                "embedded": embedded,
                "table_bytes": table_bytes,
                "index_bytes": index_bytes,
            }
        )
    return out


def _require_document(conn: Conn, coll: Collection, document_id: int) -> None:
    """DocumentNotFoundError unless the document is in the collection: a read of its
    chunks then finds none only where it has no more."""
    found = conn.execute(
        "SELECT 1 FROM documents WHERE collection_id = %s AND id = %s", (coll.id, document_id)
    ).fetchone()
    if found is None:
        raise document_not_found(document_id, coll, conn)


def document_chunks(
    conn: Conn, coll: Collection, document_id: int, *, after: int | None, limit: int
) -> list[dict[str, Any]]:
    """A document's chunks in reading order (by ordinal) after ordinal ``after``.

    Raises DocumentNotFoundError when the document is not in the collection, so an empty
    list always means "no more chunks".
    """
    _require_document(conn, coll, document_id)
    rows = conn.execute(
        "SELECT id, ordinal, chunk_type, section_path, page, token_count, char_start,"
        " char_end, text, metadata FROM chunks WHERE document_id = %(d)s"
        " AND (%(after)s::int IS NULL OR ordinal > %(after)s)"
        " ORDER BY ordinal LIMIT %(limit)s",
        {"d": document_id, "after": after, "limit": limit},
    ).fetchall()
    return [
        {
            "id": int(r[0]),
            "ordinal": int(r[1]),
            "chunk_type": r[2],
            "section_path": list(r[3]),
            "page": r[4],
            "token_count": int(r[5]),
            "char_start": int(r[6]),
            "char_end": int(r[7]),
            "text": r[8],
            "metadata": dict(r[9]),
        }
        for r in rows
    ]


# A section's chunks: those labelled with its path or a subsection's, and the chunk
# holding its heading. The chunker lets a tiny section join the chunk before it
# (chunking/chunker.py ``_packs``): that chunk keeps the path it starts in and names the
# heading in ``metadata["headings"]``; the heading chunks it names follow it, in that
# order, before any other chunk but headings. So a heading's holder is the nearest body
# chunk before it, naming it at the place it stands after that chunk. A heading found
# held is left out (its line is in the holder's text), and ``flags`` says of each heading
# a chunk names whether it is the section's own (2), a subsection's (1) or another's (0).
# Each heading costs one step back in the (document_id, ordinal) index.
_SECTION_SQL = """
WITH heads AS (
    SELECT h.id, hold.id AS holder
    FROM chunks h
    LEFT JOIN LATERAL (
        SELECT b.id, b.ordinal, b.metadata FROM chunks b
        WHERE b.document_id = h.document_id AND b.ordinal < h.ordinal
          AND b.chunk_type <> 'heading'
        ORDER BY b.ordinal DESC LIMIT 1
    ) hold ON hold.metadata -> 'headings' ->> (h.ordinal - hold.ordinal - 1) = h.text
    WHERE h.document_id = %(d)s AND h.chunk_type = 'heading'
      AND (h.section_path || h.text)[1:%(n)s] = %(path)s::text[]
), picked AS (
    SELECT c.id FROM chunks c
    WHERE c.document_id = %(d)s AND c.section_path[1:%(n)s] = %(path)s::text[]
      AND NOT EXISTS (SELECT 1 FROM heads WHERE heads.id = c.id AND heads.holder IS NOT NULL)
    UNION
    SELECT holder FROM heads WHERE holder IS NOT NULL
)
SELECT c.text, c.section_path[1:%(n)s] = %(path)s::text[], named.names, named.flags,
       count(*) OVER ()
FROM picked JOIN chunks c ON c.id = picked.id
LEFT JOIN LATERAL (
    SELECT array_agg(x.text ORDER BY x.ordinal) AS names,
           array_agg(CASE WHEN x.section_path || x.text = %(path)s::text[] THEN 2
                          WHEN (x.section_path || x.text)[1:%(n)s] = %(path)s::text[] THEN 1
                          ELSE 0 END ORDER BY x.ordinal) AS flags
    FROM chunks x
    WHERE jsonb_typeof(c.metadata -> 'headings') = 'array'
      AND x.document_id = c.document_id AND x.ordinal > c.ordinal
      AND x.ordinal <= c.ordinal + jsonb_array_length(c.metadata -> 'headings')
) named ON true
ORDER BY c.ordinal LIMIT %(limit)s
"""


def section_chunks(
    conn: Conn, coll: Collection, document_id: int, path: list[str], *, limit: int
) -> tuple[list[str], int]:
    """The texts of the chunks of a document's section ``path`` (a heading path: the chunks whose
    section path starts with it, its subsections' too, and the chunk before it that a tiny
    section was merged into), in reading order, at most ``limit``, and how many there are
    in all (in the same statement's snapshot).

    A chunk that holds other sections' text beside the section's is cut to the section's
    part: a tiny section read back is its own text, not its neighbour's, and a section
    followed by a tiny one does not end with it. Selected by the database: read from the
    whole document's chunks (at most 10,000 of them), a section past those was answered
    as no section at all. Raises DocumentNotFoundError when the document is not in the
    collection."""
    _require_document(conn, coll, document_id)
    rows = conn.execute(
        _SECTION_SQL,
        {"d": document_id, "n": len(path), "path": list(path), "limit": limit},
    ).fetchall()
    total = int(rows[0][4]) if rows else 0
    return [_section_part(str(r[0]), bool(r[1]), r[2] or [], r[3] or []) for r in rows], total


# The heading paths of a document's sections (each chunk's section path and each heading
# chunk's path with its heading, and every prefix of them) that read as ``joined`` when
# their headings are joined with " > ", as search hits name a section.
_SECTION_NAMED_SQL = """
SELECT DISTINCT s.p[1:i]
FROM (
    SELECT section_path AS p FROM chunks WHERE document_id = %(d)s
    UNION
    SELECT section_path || text FROM chunks
    WHERE document_id = %(d)s AND chunk_type = 'heading'
) s, generate_series(1, cardinality(s.p)) AS i
WHERE array_to_string(s.p[1:i], ' > ') = %(joined)s
"""


def sections_named(conn: Conn, coll: Collection, document_id: int, joined: str) -> list[list[str]]:
    """The heading paths of the document's sections that are named ``joined``: their
    headings joined with " > " (a search hit's ``section``). Matched whole, not split at
    ">": a heading may hold one (``Use a -> b``, ``<T>``, ``=>``), and a split cut it
    into headings no section has. Two paths may read alike (a heading ``a > b`` and a
    heading ``b`` under ``a``): all are returned, for the caller to ask which. Raises
    DocumentNotFoundError when the document is not in the collection."""
    _require_document(conn, coll, document_id)
    rows = conn.execute(_SECTION_NAMED_SQL, {"d": document_id, "joined": joined}).fetchall()
    return sorted([str(h) for h in r[0]] for r in rows)


def _section_part(text: str, inside: bool, names: list[str], flags: list[int]) -> str:
    """The part of a chunk's ``text`` that is the section's: the chunk names ``names``
    (the headings merged into it, in order, each with its ``flags``: 2 the section's own
    heading, 1 a subsection's, 0 another section's). A chunk ``inside`` the section ends
    before the first heading of another; one that only holds the section's heading starts
    after that heading's line (a section is read without its own heading) and ends as the
    other does. Where a heading line is not found, the whole text is the answer."""
    at = 0
    spans: list[tuple[int, int]] = []  # each named heading's line: (start, end)
    for name in names:
        line = re.compile(r"\n\n#{1,6} " + re.escape(" ".join(name.split())) + r"(?=\n\n)")
        found = line.search(text, at)
        if found is None:
            return text
        spans.append((found.start(), found.end()))
        at = found.end()
    start = first = 0
    if not inside:
        held = next((i for i, f in enumerate(flags) if f), None)
        if held is None:
            return text
        first, (line_start, line_end) = held, spans[held]
        start = line_end + 2 if flags[held] == 2 else line_start + 2
    end = next((spans[i][0] for i in range(first, len(flags)) if not flags[i]), None)
    return text[start:end]


# collations that order strings as their bytes (UTF-8's byte order is code point order)
_BYTE_ORDER = frozenset({"c", "posix", "c.utf8", "c.utf-8", "ucs_basic", "pg_c_utf8"})


def orders_bytes(provider: str, name: str) -> bool:
    """Whether a default collation (``provider``: ``c`` libc, ``i`` ICU, ``b`` builtin)
    orders strings byte by byte, as string ranges in filters assume (a folder's sources,
    ``{"$gte": "docs/api/", "$lt": "docs/api0"}``)."""
    return provider in ("c", "b") and name.lower() in _BYTE_ORDER


def database_collation(conn: Conn) -> tuple[str, bool]:
    """The database's default collation and whether it orders strings byte by byte.

    Under a language collation (``en_US.UTF-8``, many servers' default) punctuation is
    skipped at first, so a range such as a folder's sources can leave files out: ragstore
    makes its embedded server in C, and an external one is made so by
    docs/operations/install.md; ``ragstore db status`` says which a database has."""
    if conn.info.server_version >= 170000:
        query = "SELECT datlocprovider, coalesce(datlocale, datcollate)"
    elif conn.info.server_version >= 150000:
        query = "SELECT datlocprovider, coalesce(daticulocale, datcollate)"
    else:
        query = "SELECT 'c', datcollate"
    row = conn.execute(query + " FROM pg_database WHERE datname = current_database()").fetchone()
    assert row is not None
    provider, name = str(row[0]), str(row[1])
    return name, orders_bytes(provider, name)


def document_metadata_sample(conn: Conn, collection_id: int, limit: int) -> list[Any]:
    """The metadata of the collection's ``limit`` newest documents (ties, one write's, in
    order): the sample ``search/fields.py`` describes a collection's fields from."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT metadata FROM documents WHERE collection_id = %s"
            " ORDER BY created_at DESC, id LIMIT %s",  # ties (one write): in order
            (collection_id, limit),
        )
    ]


def chunk_metadata_sample(
    conn: Conn, collection_id: int, limit: int, *, without: list[str]
) -> tuple[int, list[Any]]:
    """(chunks scanned, the metadata of those carrying any) of at most ``limit`` of the
    collection's chunks, the keys ``without`` (the chunker's own) left out.

    The chunks come through (collection_id, content_hash): in effect a random sample of a
    bounded size (most carry nothing of their own: a search for those would scan them
    all); only those that carry something come back, in one row."""
    row = conn.execute(
        "SELECT count(*), coalesce(jsonb_agg(m) FILTER (WHERE m <> '{}'::jsonb), '[]')"
        " FROM (SELECT metadata - %s::text[] AS m FROM chunks"
        " WHERE collection_id = %s LIMIT %s) c",
        (without, collection_id, limit),
    ).fetchone()
    return (int(str(row[0])), cast(list[Any], row[1])) if row else (0, [])
