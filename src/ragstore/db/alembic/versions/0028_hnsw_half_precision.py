"""Every space's HNSW index over the half-precision cast of its vectors.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-04

Until now only a space wider than pgvector's 2,000-dimension HNSW limit was indexed over
``embedding::halfvec(n)``; the rest were indexed in full precision. The vectors stay in
full precision either way, and a search re-sorts the candidates the index gives by their
full-precision distance, so only which candidates the graph finds can change: at 100k
chunks of 384 dimensions recall@10 against exact search was the same within a run's
spread (0.88–0.92 at ``ef_search`` 40 and 100 either way) and so was a query's time,
while the index is 43% smaller (77 against 135 MB) and builds in 7–17% less time:
pgvector's half-precision distance reads half the memory a vector does. A first load's
build is the largest single part of its CPU.

The upgrade rebuilds each full-precision HNSW index in one process with 1 GB of
``maintenance_work_mem`` (enough for a million 384-d vectors' graph; no parallel workers,
whose shared memory a container may not have): 42 s for 102,959 vectors of 384
dimensions here, 52 s for the downgrade, which rebuilds those of up to 2,000 dimensions
in full precision again.
"""

from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None

# each HNSW index of a space table on its embedding column (FROM 'vector' or 'halfvec'),
# dropped and built again over TO: the cast or the column
_REBUILD = """
DO $$
DECLARE
    r record;
BEGIN
    SET LOCAL maintenance_work_mem = '1GB';
    SET LOCAL max_parallel_maintenance_workers = 0;
    FOR r IN
        SELECT ic.relname AS idx, c.relname AS tbl, o.opcname, a.atttypmod AS dim
          FROM pg_index i
          JOIN pg_class ic ON ic.oid = i.indexrelid
          JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'hnsw'
          JOIN pg_class c ON c.oid = i.indrelid
          JOIN pg_opclass o ON o.oid = i.indclass[0]
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'embedding'
         WHERE c.relnamespace = current_schema()::regnamespace
           AND o.opcname LIKE '{source}\\_%' AND a.atttypmod <= {max_dim}
         ORDER BY c.relname
    LOOP
        EXECUTE format('DROP INDEX %I', r.idx);
        BEGIN
            EXECUTE format('CREATE INDEX %1$I ON %2$I USING hnsw ({target} %4$s)', r.idx,
                           r.tbl, r.dim, '{target_ops}' || substr(r.opcname, {cut}));
        EXCEPTION WHEN numeric_value_out_of_range THEN
            RAISE EXCEPTION USING ERRCODE = 'numeric_value_out_of_range', MESSAGE = format(
                'collection %s (table %s) holds a vector value half precision cannot: %s. '
                'Revision 0028 indexes every space over its half-precision cast (values '
                'within ±65,504); re-embed that collection with a normalising model '
                '(ragstore models migrate) on the previous release, then upgrade again. '
                'Nothing was changed',
                coalesce((SELECT string_agg(quote_literal(col.name), ', ')
                            FROM embedding_spaces sp JOIN collections col
                              ON col.id = sp.collection_id
                           WHERE sp.table_name = r.tbl), '(none)'),
                r.tbl, SQLERRM);
        END;
    END LOOP;
END $$;
"""


def _rebuild(source: str, target: str, max_dim: int, over: str) -> str:
    """The rebuild of SOURCE-typed indexes (of up to MAX_DIM dimensions) as TARGET-typed
    ones over OVER (``%3$s`` is the dimension)."""
    return _REBUILD.format(
        source=source, max_dim=max_dim, target=over, target_ops=target, cut=len(source) + 1
    )


def upgrade() -> None:
    op.execute(_rebuild("vector", "halfvec", 4000, "(embedding::halfvec(%3$s))"))


def downgrade() -> None:
    op.execute(_rebuild("halfvec", "vector", 2000, "embedding"))
