"""The BM25 bulk build read straight from the chunks: no staging table, hash joins.

Revision ID: 0013
Revises: 0014
Create Date: 2026-12-01

Revision 0011's ``ragstore_bm25_bulk_finish`` (a large first load, an import into an empty
space) and ``ragstore_bm25_rebuild`` first copied every counted chunk's lexemes into a
temporary table (one row per posting, about 185k for 2,000 SciFact abstracts), analysed
it, and read it twice; the term rows were sorted by lexeme. Here both passes read the
chunks' tsvectors directly: the document frequencies in one grouped pass over
``tsvector_to_array`` (no positions decoded), the postings in one pass over ``unnest``
joined to the collection's terms by a hash join (the chunks were just written, so their
statistics say a handful of rows and the planner would otherwise probe the terms' index
once per posting). Only the terms longer than ``list_keep`` need ranking; they are read
into a temporary table only when there are any (none below ``list_keep`` chunks).

Same postings, impacts, floors, stored counts and statistics as revision 0011 (the bulk
test compares them with a rebuild and with the incremental triggers). A term's row id
(``term_id``) is no longer drawn in lexeme order; nothing reads that order.
"""

from types import ModuleType

from alembic import op

from ragstore.db.revisions import earlier_revision

revision = "0013"
down_revision = "0014"
branch_labels = None
depends_on = None

# One collection's counted chunks and their lexemes with tf (PostgreSQL decodes positions
# only here, where tf needs them).
_LEXEMES = """
            FROM chunks n
            CROSS JOIN LATERAL (SELECT u.lexeme, greatest(cardinality(u.positions), 1) AS tf
                                FROM unnest(n.tsv) u) x
            JOIN bm25_terms t ON t.collection_id = cid AND t.lexeme = x.lexeme
            WHERE n.collection_id = cid AND n.chunk_type <> 'heading'"""

# Postings of collection CID at its current avgdl and k1/b, for terms whose df is already
# counted (a rare term's stored count already set to its df). See revision 0011 for the
# rules; the postings indexes are dropped and built after the insert when the table holds
# nothing else (a first load into a new store).
WRITE_POSTINGS = f"""
    CREATE OR REPLACE FUNCTION ragstore_bm25_write_postings(cid integer) RETURNS bigint
        LANGUAGE plpgsql SET enable_nestloop = off AS $$
    DECLARE
        written bigint;
        more bigint := 0;
        keep integer;
        st record;
        avgdl float8;
        alone boolean;
    BEGIN
        UPDATE bm25_collection_stats SET impact_k1 = NULL, impact_b = NULL, impact_avgdl = NULL
        WHERE collection_id = cid;
        PERFORM ragstore_bm25_impact_stats(ARRAY[cid]);
        SELECT * INTO st FROM bm25_collection_stats WHERE collection_id = cid;
        IF NOT FOUND THEN
            RETURN 0;
        END IF;
        keep := st.list_keep;
        avgdl := greatest(st.tokens::float8 / greatest(st.chunks, 1), 1.0);
        alone := NOT EXISTS (SELECT 1 FROM bm25_postings);
        IF alone THEN
            DROP INDEX bm25_postings_impact_idx;
            DROP INDEX bm25_postings_chunk_idx;
        END IF;
        INSERT INTO bm25_postings (term_id, impact, chunk_id, tf, len)
        SELECT t.term_id, ragstore_bm25_impact(x.tf, n.tsv_length, st.impact_k1, st.impact_b,
                                                avgdl), n.id, x.tf, n.tsv_length
        {_LEXEMES} AND t.df <= keep
        ORDER BY 1, 2 DESC;
        GET DIAGNOSTICS written = ROW_COUNT;
        IF EXISTS (SELECT 1 FROM bm25_terms WHERE collection_id = cid AND df > keep) THEN
            CREATE TEMP TABLE ragstore_bm25_ranked ON COMMIT DROP AS
            SELECT c.*, row_number() OVER (PARTITION BY c.term_id
                                           ORDER BY c.impact DESC, c.chunk_id) AS rn
            FROM (SELECT t.term_id, ragstore_bm25_impact(x.tf, n.tsv_length, st.impact_k1,
                                                         st.impact_b, avgdl) AS impact,
                         n.id AS chunk_id, x.tf, n.tsv_length AS len
                  {_LEXEMES} AND t.df > keep) c;
            INSERT INTO bm25_postings (term_id, impact, chunk_id, tf, len)
            SELECT term_id, impact, chunk_id, tf, len FROM ragstore_bm25_ranked
            WHERE rn <= keep ORDER BY term_id, impact DESC;
            GET DIAGNOSTICS more = ROW_COUNT;
            UPDATE bm25_terms t SET stored = a.kept, floor = a.top
            FROM (SELECT term_id, (count(*) FILTER (WHERE rn <= keep))::integer AS kept,
                         coalesce(max(impact) FILTER (WHERE rn > keep), 0)::real AS top
                  FROM ragstore_bm25_ranked GROUP BY term_id) a
            WHERE t.term_id = a.term_id AND (t.stored, t.floor) IS DISTINCT FROM (a.kept, a.top);
            DROP TABLE ragstore_bm25_ranked;
        END IF;
        IF alone THEN
            CREATE INDEX bm25_postings_impact_idx ON bm25_postings (term_id, impact DESC)
                INCLUDE (chunk_id, tf, len);
            CREATE INDEX bm25_postings_chunk_idx ON bm25_postings (chunk_id);
        END IF;
        -- a rare term's list is all its df postings, nothing trimmed
        UPDATE bm25_terms SET stored = df, floor = 0
        WHERE collection_id = cid AND df <= keep AND (stored <> df OR floor <> 0);
        RETURN written + more;
    END $$;
"""

# Rewrite one collection's postings at its current avgdl and k1/b.
REBUILD = """
    CREATE OR REPLACE FUNCTION ragstore_bm25_rebuild(cid integer) RETURNS bigint
        LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM 1 FROM bm25_collection_stats WHERE collection_id = cid FOR UPDATE;
        DELETE FROM bm25_postings p USING bm25_terms t
        WHERE t.collection_id = cid AND p.term_id = t.term_id;
        RETURN ragstore_bm25_write_postings(cid);
    END $$;
"""

# After a bulk write of collection CID (ragstore.bulk on, its sources locked): statistics
# recounted from its chunks, postings rewritten at the final avgdl (revision 0011).
BULK_FINISH = """
    CREATE OR REPLACE FUNCTION ragstore_bm25_bulk_finish(cid integer) RETURNS bigint
        LANGUAGE plpgsql AS $$
    DECLARE
        v_n bigint;
        v_len bigint;
        keep integer;
    BEGIN
        SELECT count(*), coalesce(sum(tsv_length), 0) INTO v_n, v_len FROM chunks
        WHERE collection_id = cid AND chunk_type <> 'heading';
        IF v_n > 0 THEN
            INSERT INTO bm25_collection_stats AS s (collection_id, chunks, tokens)
            VALUES (cid, v_n, v_len)
            ON CONFLICT (collection_id) DO UPDATE SET chunks = v_n, tokens = v_len;
        ELSE
            UPDATE bm25_collection_stats SET chunks = 0, tokens = 0 WHERE collection_id = cid;
        END IF;
        DELETE FROM bm25_postings p USING bm25_terms t
        WHERE t.collection_id = cid AND p.term_id = t.term_id;
        DELETE FROM bm25_terms WHERE collection_id = cid;
        IF v_n = 0 THEN
            RETURN 0;
        END IF;
        SELECT list_keep INTO keep FROM bm25_collection_stats WHERE collection_id = cid;
        -- a rare term's list is all its postings: stored = df from the start
        INSERT INTO bm25_terms (collection_id, lexeme, df, stored)
        SELECT cid, u.lexeme, count(*), CASE WHEN count(*) <= keep THEN count(*) ELSE 0 END
        FROM chunks n CROSS JOIN LATERAL unnest(tsvector_to_array(n.tsv)) AS u(lexeme)
        WHERE n.collection_id = cid AND n.chunk_type <> 'heading'
        GROUP BY u.lexeme;
        RETURN ragstore_bm25_write_postings(cid);
    END $$;
"""


def upgrade() -> None:
    op.execute(WRITE_POSTINGS)
    op.execute(REBUILD)
    op.execute(BULK_FINISH)


def _revision_0011() -> ModuleType:
    """Revision 0011's module (its functions are what the downgrade restores)."""
    return earlier_revision("0011_bm25_bulk.py")


def downgrade() -> None:
    prev = _revision_0011()
    op.execute(
        "DROP FUNCTION ragstore_bm25_bulk_finish(integer);"
        " DROP FUNCTION ragstore_bm25_write_postings(integer);"
    )
    op.execute(prev._WRITE_POSTINGS)
    op.execute(prev._REBUILD)
    op.execute(prev._BULK_FINISH)
