"""A postings list's trim finds its edge once, not once per posting.

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-05

``ragstore_bm25_trim`` (revision 0006) cuts a term's list back to the collection's
``list_keep`` best postings once it holds more than twice that many: the incremental write
triggers call it, and so does a rebuilding load's ``ragstore_bm25_bulk_add``. Its ``edge``
(the ``list_keep``-th best impact of each term) was a common table expression referenced
once, which PostgreSQL inlines: the planner then evaluated the edge's subquery, a walk of
``list_keep`` (20,000) index entries, as the join filter of every posting of the term, so
one trim read list × ``list_keep`` entries. A term trimmed at 40,000 postings cost
800 million index reads: seconds per term with nested loops, minutes under
``enable_nestloop = off``, which ``ragstore_bm25_bulk_add`` sets (a 50,000-record import
into a 50,000-record collection sat in one trim for over five minutes,
docs/benchmarks.md).

The edge is now ``MATERIALIZED`` (computed once per term) and the function plans with
nested loops whatever its caller set, so the delete walks each term's list below its edge
through the postings' index. What it deletes, the floors and the stored counts it writes
are those of revision 0006. The downgrade restores revision 0006's function.
"""

from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None

# Revision 0006's function with the two changes as placeholders.
_TRIM = """
    CREATE OR REPLACE FUNCTION ragstore_bm25_trim(ids integer[]) RETURNS void
        LANGUAGE sql{options} AS $$
        WITH edge AS{materialized} (
            SELECT i.term_id, (SELECT p.impact FROM bm25_postings p WHERE p.term_id = i.term_id
                               ORDER BY p.impact DESC OFFSET s.list_keep - 1 LIMIT 1) AS e
            FROM unnest(ids) i(term_id) JOIN bm25_terms t ON t.term_id = i.term_id
            JOIN bm25_collection_stats s ON s.collection_id = t.collection_id),
        gone AS (
            DELETE FROM bm25_postings p USING edge
            WHERE p.term_id = edge.term_id AND p.impact < edge.e
            RETURNING p.term_id, p.impact)
        UPDATE bm25_terms t
        SET floor = greatest(t.floor, coalesce(g.top, 0)),
            stored = (SELECT count(*) FROM bm25_postings p WHERE p.term_id = t.term_id) - g.n
        FROM (SELECT i.term_id, max(gone.impact) AS top, count(gone.term_id) AS n
              FROM unnest(ids) i(term_id) LEFT JOIN gone ON gone.term_id = i.term_id
              GROUP BY i.term_id) g
        WHERE t.term_id = g.term_id $$;
"""


def upgrade() -> None:
    op.execute(_TRIM.format(options=" SET enable_nestloop = on", materialized=" MATERIALIZED"))


def downgrade() -> None:
    op.execute(_TRIM.format(options="", materialized=""))
