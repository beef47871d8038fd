"""A rebuilding load joins its lexemes to the collection's terms once, not once per chunk.

Revision ID: 0032
Revises: 0031
Create Date: 2026-12-05

``ragstore_bm25_bulk_add`` (revision 0030) wrote the load's postings with revision 0006's
insert-trigger statement: each new chunk's lexemes (a lateral ``unnest`` of its tsvector)
joined to the collection's terms. The load's chunks, and the terms whose df it has just
recounted, are its own transaction's rows, past the tables' statistics, so the planner's
counts of both could be anything. Taking them for a handful, it joined the terms inside
the lateral side: a hash of the collection's terms rebuilt for every new chunk, chunks x
terms rows read. A 30,000-record import into a 30,000-record collection, in a store of
three other such collections, spent over seven minutes there where the same import into a
store holding only that collection took 28 s (docs/benchmarks.md). Counting them first
(ANALYZE of a copy of the chunks) did not do: the terms' count stayed wrong, and ANALYZE
of ``bm25_terms`` in the load's transaction would hold every other collection's bulk load
at its own ANALYZE until this one commits.

The statement now reads the new chunks' lexemes once into a materialised CTE, a fence the
planner cannot join through, and joins that to the terms in one pass (the function plans
without nested loops). The postings written, their impacts (the same
``ragstore_bm25_impact`` at the avgdl of now, only above the term's floor), the stored
counts and the trim of lists past twice ``list_keep`` are those of revision 0006's
statement. The downgrade restores revision 0030's function.
"""

from alembic import op

from ragstore.db.revisions import earlier_revision

revision = "0032"
down_revision = "0031"
branch_labels = None
depends_on = None

INSERT = """
        WITH lexemes AS MATERIALIZED (
            SELECT n.id, n.tsv_length, u.lexeme, greatest(cardinality(u.positions), 1) AS tf
            FROM chunks n CROSS JOIN LATERAL unnest(n.tsv) u
            WHERE n.collection_id = cid AND n.id > since AND n.chunk_type <> 'heading'),
        ins AS (
            INSERT INTO bm25_postings (term_id, impact, chunk_id, tf, len)
            SELECT t.term_id, x.impact, x.id, x.tf, x.tsv_length
            FROM (SELECT l.id, l.tsv_length, l.lexeme, l.tf,
                         ragstore_bm25_impact(l.tf, l.tsv_length, s.impact_k1, s.impact_b,
                             greatest(s.tokens::float8 / greatest(s.chunks, 1), 1.0)) AS impact
                  FROM lexemes l CROSS JOIN bm25_collection_stats s
                  WHERE s.collection_id = cid) x
            JOIN bm25_terms t ON t.collection_id = cid AND t.lexeme = x.lexeme
            WHERE x.impact > t.floor
            RETURNING term_id),
        counted AS (
            UPDATE bm25_terms t SET stored = t.stored + i.n
            FROM (SELECT term_id, count(*) AS n FROM ins GROUP BY term_id) i
            WHERE t.term_id = i.term_id RETURNING t.term_id, t.stored)
        SELECT array_agg(c.term_id ORDER BY c.term_id) INTO over FROM counted c
        WHERE c.stored > 2 * (SELECT list_keep FROM bm25_collection_stats
                              WHERE collection_id = cid);
        IF over IS NOT NULL THEN
            PERFORM ragstore_bm25_trim(over);
        END IF;
"""


def upgrade() -> None:
    op.execute(
        earlier_revision("0030_bm25_bulk_add.py").function("CREATE OR REPLACE", insert=INSERT)
    )


def downgrade() -> None:
    op.execute(earlier_revision("0030_bm25_bulk_add.py").function("CREATE OR REPLACE"))
