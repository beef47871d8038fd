"""Read-only SQL for a search hit's context (``search/context.py``): the chunks of
ranges of a document around hits, and each hit's parent heading.

Each statement reads in one snapshot whether a hit's chunk is still in its document: one
replaced or deleted since the search has ordinals of its old version, so its range reads
nothing. Functions take an open connection and run inside the caller's transaction.
"""

from __future__ import annotations

from typing import Any

import psycopg

Conn = psycopg.Connection[Any]

# each range with whether its hit's chunk is still in the document in this statement's
# snapshot (``live``): a range whose hit is gone reads no chunks and comes back as one row.
# ``last``: the range's last ordinal, ``hi`` itself where no heading ends it first (it was
# an exclusive end of ``hi``, so a section without a later heading lost its last chunk)
_RANGE_SQL = """
SELECT q.i, v.live, c.id, c.ordinal, c.chunk_type, c.text, c.section_path, c.page
FROM unnest(%(doc)s::bigint[], %(hit)s::bigint[], %(lo)s::int[], %(hi)s::int[],
            %(depth)s::int[], %(page)s::int[])
     WITH ORDINALITY AS q(doc, hit, lo, hi, depth, page, i)
CROSS JOIN LATERAL (
    SELECT EXISTS (SELECT 1 FROM chunks h WHERE h.id = q.hit AND h.document_id = q.doc) AS live
) v
CROSS JOIN LATERAL (
    SELECT coalesce(min(e.ordinal) - 1, q.hi) AS last FROM chunks e
    WHERE e.document_id = q.doc AND e.ordinal > q.lo AND e.ordinal <= q.hi
      AND e.chunk_type = 'heading' AND cardinality(e.section_path) < q.depth
) b
LEFT JOIN chunks c ON v.live AND c.document_id = q.doc AND c.ordinal BETWEEN q.lo AND b.last
     AND (q.page IS NULL OR c.page = q.page)
ORDER BY q.i, c.ordinal
"""

# a hit whose chunk is gone (its document replaced or deleted since the search) has no row
_PARENTS_SQL = """
SELECT h.id, p.ordinal, cardinality(p.section_path) + 1
FROM chunks h LEFT JOIN chunks p ON p.id = h.parent_id WHERE h.id = ANY(%s)
"""


def ranges(
    conn: Conn,
    *,
    doc: list[int],
    hit: list[int],
    lo: list[int],
    hi: list[int],
    depth: list[int],
    page: list[int | None],
) -> list[Any]:
    """The chunks of each range i (document ``doc[i]``, ordinals ``lo[i]`` to ``hi[i]``,
    on page ``page[i]`` where that is not None, ended before the first heading shallower
    than ``depth[i]`` where that is > 0), as rows (i from 1, live, chunk id, ordinal,
    chunk type, text, section path, page) in order; a range whose hit ``hit[i]`` is no
    longer in its document is one row, not live, with no chunk."""
    params = {"doc": doc, "hit": hit, "lo": lo, "hi": hi, "depth": depth, "page": page}
    return conn.execute(_RANGE_SQL, params).fetchall()


def parents(conn: Conn, chunk_ids: list[int]) -> list[Any]:
    """(chunk id, its parent's ordinal, its section depth + 1) of each of ``chunk_ids``
    still stored; the parent's values are None for a chunk without one."""
    return conn.execute(_PARENTS_SQL, (chunk_ids,)).fetchall()
