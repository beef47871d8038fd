"""BM25 term statistics: chunk token lengths, per-collection document frequencies, triggers.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25

Full-text search ranks with BM25, which needs three numbers PostgreSQL does not keep:
each chunk's length in tokens (``chunks.tsv_length``), each lexeme's document frequency
in its collection (``bm25_terms``) and the collection's chunk count and total length
(``bm25_collection_stats``). Triggers keep them exact whatever writes the chunks: a
BEFORE row trigger fills the length (and the collection's text search configuration,
``collections.settings->>'ts_config'``, default english); AFTER statement triggers with
transition tables add and subtract the statistics in one grouped statement per COPY,
INSERT, UPDATE or DELETE (including the cascades from deleting a document or a
collection). Lexemes are upserted in sorted order so that concurrent writers take row
locks in the same order and cannot deadlock one another. Headings are structure, not
search targets: they are left out of the statistics as they are out of search.
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE FUNCTION ragstore_tsv_length(tsvector) RETURNS integer
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
        AS $$ SELECT coalesce(sum(greatest(cardinality(positions), 1)), 0)::integer
              FROM unnest($1) $$;

    ALTER TABLE chunks ADD COLUMN tsv_length integer NOT NULL DEFAULT 0;
    UPDATE chunks SET tsv_length = ragstore_tsv_length(tsv);

    CREATE TABLE bm25_collection_stats (
        collection_id integer PRIMARY KEY REFERENCES collections(id) ON DELETE CASCADE,
        chunks        bigint NOT NULL DEFAULT 0,
        tokens        bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE bm25_terms (
        collection_id integer NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        lexeme        text NOT NULL,
        df            integer NOT NULL,
        PRIMARY KEY (collection_id, lexeme)
    );

    INSERT INTO bm25_collection_stats (collection_id, chunks, tokens)
    SELECT collection_id, count(*), sum(tsv_length) FROM chunks
    WHERE chunk_type <> 'heading' GROUP BY collection_id;
    INSERT INTO bm25_terms (collection_id, lexeme, df)
    SELECT c.collection_id, l.lexeme, count(*) FROM chunks c,
           unnest(tsvector_to_array(c.tsv)) AS l(lexeme)
    WHERE c.chunk_type <> 'heading' GROUP BY 1, 2;

    CREATE FUNCTION ragstore_chunk_before_write() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            NEW.ts_config := coalesce(
                (SELECT (settings->>'ts_config')::regconfig FROM collections
                 WHERE id = NEW.collection_id), NEW.ts_config);
        END IF;
        NEW.tsv_length := ragstore_tsv_length(to_tsvector(NEW.ts_config, NEW.text));
        RETURN NEW;
    END $$;

    CREATE FUNCTION ragstore_bm25_added() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO bm25_collection_stats AS s (collection_id, chunks, tokens)
        SELECT collection_id, count(*), sum(tsv_length) FROM bm25_new
        WHERE chunk_type <> 'heading' GROUP BY collection_id ORDER BY collection_id
        ON CONFLICT (collection_id) DO UPDATE
            SET chunks = s.chunks + EXCLUDED.chunks, tokens = s.tokens + EXCLUDED.tokens;
        INSERT INTO bm25_terms AS t (collection_id, lexeme, df)
        SELECT n.collection_id, l.lexeme, count(*) FROM bm25_new n,
               unnest(tsvector_to_array(n.tsv)) AS l(lexeme)
        WHERE n.chunk_type <> 'heading' GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (collection_id, lexeme) DO UPDATE SET df = t.df + EXCLUDED.df;
        RETURN NULL;
    END $$;

    CREATE FUNCTION ragstore_bm25_removed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE bm25_collection_stats s SET chunks = s.chunks - o.n, tokens = s.tokens - o.len
        FROM (SELECT collection_id, count(*) AS n, sum(tsv_length) AS len FROM bm25_old
              WHERE chunk_type <> 'heading' GROUP BY collection_id) o
        WHERE s.collection_id = o.collection_id;
        UPDATE bm25_terms t SET df = t.df - o.n
        FROM (SELECT r.collection_id, l.lexeme, count(*) AS n FROM bm25_old r,
                     unnest(tsvector_to_array(r.tsv)) AS l(lexeme)
              WHERE r.chunk_type <> 'heading' GROUP BY 1, 2 ORDER BY 1, 2) o
        WHERE t.collection_id = o.collection_id AND t.lexeme = o.lexeme;
        DELETE FROM bm25_terms t WHERE t.df <= 0 AND (t.collection_id, t.lexeme) IN (
            SELECT r.collection_id, l.lexeme FROM bm25_old r,
                   unnest(tsvector_to_array(r.tsv)) AS l(lexeme));
        RETURN NULL;
    END $$;

    -- An UPDATE is the removal of the old rows and the addition of the new ones, counted
    -- only for rows whose indexed text, type or collection changed.
    CREATE FUNCTION ragstore_bm25_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM bm25_old o JOIN bm25_new n ON n.id = o.id
                       WHERE o.tsv IS DISTINCT FROM n.tsv
                          OR o.chunk_type IS DISTINCT FROM n.chunk_type
                          OR o.collection_id IS DISTINCT FROM n.collection_id
                          OR o.tsv_length IS DISTINCT FROM n.tsv_length) THEN
            RETURN NULL;
        END IF;
        WITH changed AS (
            SELECT o.id FROM bm25_old o JOIN bm25_new n ON n.id = o.id
            WHERE o.tsv IS DISTINCT FROM n.tsv OR o.chunk_type IS DISTINCT FROM n.chunk_type
               OR o.collection_id IS DISTINCT FROM n.collection_id
               OR o.tsv_length IS DISTINCT FROM n.tsv_length
        ), gone AS (
            SELECT r.* FROM bm25_old r JOIN changed USING (id) WHERE r.chunk_type <> 'heading'
        ), came AS (
            SELECT r.* FROM bm25_new r JOIN changed USING (id) WHERE r.chunk_type <> 'heading'
        ), delta AS (
            SELECT collection_id, lexeme, sum(n)::integer AS n FROM (
                SELECT g.collection_id, l.lexeme, -1 AS n FROM gone g,
                       unnest(tsvector_to_array(g.tsv)) AS l(lexeme)
                UNION ALL
                SELECT c.collection_id, l.lexeme, 1 FROM came c,
                       unnest(tsvector_to_array(c.tsv)) AS l(lexeme)
            ) x GROUP BY 1, 2 HAVING sum(n) <> 0
        ), stats AS (
            INSERT INTO bm25_collection_stats AS s (collection_id, chunks, tokens)
            SELECT collection_id, sum(n), sum(len) FROM (
                SELECT collection_id, -1 AS n, -tsv_length AS len FROM gone
                UNION ALL SELECT collection_id, 1, tsv_length FROM came
            ) x GROUP BY collection_id ORDER BY collection_id
            ON CONFLICT (collection_id) DO UPDATE
                SET chunks = s.chunks + EXCLUDED.chunks, tokens = s.tokens + EXCLUDED.tokens
        )
        INSERT INTO bm25_terms AS t (collection_id, lexeme, df)
        SELECT collection_id, lexeme, n FROM delta ORDER BY 1, 2
        ON CONFLICT (collection_id, lexeme) DO UPDATE SET df = t.df + EXCLUDED.df;
        DELETE FROM bm25_terms t WHERE t.df <= 0 AND (t.collection_id, t.lexeme) IN (
            SELECT r.collection_id, l.lexeme FROM bm25_old r,
                   unnest(tsvector_to_array(r.tsv)) AS l(lexeme));
        RETURN NULL;
    END $$;

    CREATE TRIGGER chunks_before_write BEFORE INSERT OR UPDATE OF text, ts_config ON chunks
        FOR EACH ROW EXECUTE FUNCTION ragstore_chunk_before_write();
    CREATE TRIGGER chunks_bm25_insert AFTER INSERT ON chunks
        REFERENCING NEW TABLE AS bm25_new
        FOR EACH STATEMENT EXECUTE FUNCTION ragstore_bm25_added();
    CREATE TRIGGER chunks_bm25_delete AFTER DELETE ON chunks
        REFERENCING OLD TABLE AS bm25_old
        FOR EACH STATEMENT EXECUTE FUNCTION ragstore_bm25_removed();
    CREATE TRIGGER chunks_bm25_update AFTER UPDATE ON chunks
        REFERENCING OLD TABLE AS bm25_old NEW TABLE AS bm25_new
        FOR EACH STATEMENT EXECUTE FUNCTION ragstore_bm25_changed();
    """)


def downgrade() -> None:
    op.execute("""
    DROP TRIGGER chunks_bm25_update ON chunks;
    DROP TRIGGER chunks_bm25_delete ON chunks;
    DROP TRIGGER chunks_bm25_insert ON chunks;
    DROP TRIGGER chunks_before_write ON chunks;
    DROP FUNCTION ragstore_bm25_changed();
    DROP FUNCTION ragstore_bm25_removed();
    DROP FUNCTION ragstore_bm25_added();
    DROP FUNCTION ragstore_chunk_before_write();
    DROP TABLE bm25_terms;
    DROP TABLE bm25_collection_stats;
    ALTER TABLE chunks DROP COLUMN tsv_length;
    DROP FUNCTION ragstore_tsv_length(tsvector);
    """)
