"""BM25 for a bulk load into a collection that has chunks: the new chunks added, not all rewritten.

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-05

A load that brings at least a quarter of a collection's bytes is a bulk load (``ingest.service.
BulkLoad.REBUILD``): the BM25 triggers skip while it writes, and until now its end
rewrote every posting of the collection (``ragstore_bm25_bulk_finish``), old and new,
through the postings' live indexes, leaving the old ones as dead rows: at 135k chunks plus
71k the rewrite was the load's tail (75-82 s, docs/benchmarks.md) and the postings table
grew by half until autovacuum.

``ragstore_bm25_bulk_add(cid, since, before)`` leaves the collection's BM25 state as the
statement triggers would have, with the load's chunks written in one statement:

1. where fewer than ``before`` (the count when the load took its locks) of the
   collection's chunks up to ``since`` are left (the load replaced documents, whose chunks
   it deleted), the postings of chunks that are gone are deleted, and their terms'
   stored counts lowered;
2. the statistics (counted chunks, total length) and every term's df are recounted from
   the chunks, term ids kept (terms no chunk holds any more are deleted, new ones added);
3. the chunks written by the load (the collection's ids above ``since``, its largest
   before the load: every new id comes from the sequence later) get their postings
   exactly as revision 0006's insert trigger writes them: at the avgdl of now (the
   smallest avgdl impacts were written with recorded first), only above their term's
   floor, and the lists past twice ``list_keep`` trimmed.

The downgrade drops the function.
"""

from alembic import op

from ragstore.db.revisions import earlier_revision

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None


def _insert_trigger_body(rel: str) -> str:
    """Revision 0006's insert of postings for a relation of chunks, over the load's new
    chunks: the one text both paths run."""
    module = earlier_revision("0006_bm25_postings.py")
    return str(module._insert(rel))


def function(create: str = "CREATE", insert: str | None = None) -> str:
    """``ragstore_bm25_bulk_add``'s definition; ``insert`` replaces the statements that
    write the load's postings (revision 0032)."""
    if insert is None:
        insert = _insert_trigger_body(
            "(SELECT * FROM chunks WHERE collection_id = cid AND id > since)"
        )
    return f"""
    {create} FUNCTION ragstore_bm25_bulk_add(cid integer, since bigint, before bigint)
        RETURNS void LANGUAGE plpgsql SET enable_nestloop = off AS $$
    DECLARE
        v_n bigint;
        v_len bigint;
        over integer[];
    BEGIN
        IF (SELECT count(*) FROM chunks WHERE collection_id = cid AND id <= since) < before
        THEN
            WITH gone AS (
                DELETE FROM bm25_postings p USING bm25_terms t
                WHERE t.collection_id = cid AND p.term_id = t.term_id
                  AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = p.chunk_id)
                RETURNING p.term_id)
            UPDATE bm25_terms t SET stored = greatest(t.stored - g.n, 0)
            FROM (SELECT term_id, count(*) AS n FROM gone GROUP BY term_id) g
            WHERE t.term_id = g.term_id;
        END IF;
        SELECT count(*), coalesce(sum(tsv_length), 0) INTO v_n, v_len FROM chunks
        WHERE collection_id = cid AND chunk_type <> 'heading';
        INSERT INTO bm25_collection_stats AS s (collection_id, chunks, tokens)
        VALUES (cid, v_n, v_len)
        ON CONFLICT (collection_id) DO UPDATE SET chunks = v_n, tokens = v_len;
        CREATE TEMP TABLE ragstore_bm25_df ON COMMIT DROP AS
        SELECT u.lexeme, count(*)::integer AS df
        FROM chunks n CROSS JOIN LATERAL unnest(tsvector_to_array(n.tsv)) AS u(lexeme)
        WHERE n.collection_id = cid AND n.chunk_type <> 'heading'
        GROUP BY u.lexeme;
        DELETE FROM bm25_terms t WHERE t.collection_id = cid
            AND NOT EXISTS (SELECT 1 FROM ragstore_bm25_df d WHERE d.lexeme = t.lexeme);
        INSERT INTO bm25_terms AS t (collection_id, lexeme, df)
        SELECT cid, d.lexeme, d.df FROM ragstore_bm25_df d
        ON CONFLICT (collection_id, lexeme) DO UPDATE SET df = EXCLUDED.df
            WHERE t.df <> EXCLUDED.df;
        DROP TABLE ragstore_bm25_df;
        IF v_n = 0 THEN
            RETURN;
        END IF;
        PERFORM ragstore_bm25_impact_stats(ARRAY[cid]);
{insert}
    END $$;
    """


def upgrade() -> None:
    op.execute(function())


def downgrade() -> None:
    op.execute("DROP FUNCTION ragstore_bm25_bulk_add(integer, bigint, bigint)")
