"""BM25 impact-ordered postings and the top-k function that reads them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Full-text search used to score every chunk holding any query word, so its cost grew with
the collection (319 ms p50 at 105k chunks). This revision keeps postings
``bm25_postings (term_id, impact, chunk_id, tf, len)`` ordered in a btree by
``(term_id, impact DESC)`` with the rest included, so the best postings of a term are an
index-only range read. ``impact`` is the BM25 term-frequency part only,
``tf (k1 + 1) / (tf + k1 (1 - b + b len / avgdl))`` at the collection's avgdl when the
posting was written: idf is left out, so document frequencies and the chunk count may
change without rewriting a posting, and the smallest avgdl any posting was written with
(``bm25_collection_stats.impact_avgdl``) bounds how far the live tf part can exceed a
stored impact (by ``max(1, avgdl_now / impact_avgdl)``).

Each term keeps only its best postings: between the collection's ``list_keep`` (default
``LIST_KEEP``) and twice that. When a list
grows past that its weakest postings are dropped and the term's ``floor`` (in
``bm25_terms``) rises to the best impact dropped; a new posting is stored only if its
impact is above the floor. So every posting not stored has an impact at most ``floor``,
rare terms keep all their postings, and storage and write cost stop growing with the
frequency of common words (which is where most postings are).

``ragstore_bm25_topk`` is Fagin's threshold algorithm over those lists: read the top
``n`` postings of each query term, score what was read (tf and len travel with the
posting), and stop once the k-th best known score is above what any chunk not read could
reach (each list's next impact, or its floor once it is read to the end, times idf,
query-term count and the avgdl bound). The chunks whose bound still reaches the k-th score
are then scored from their tsvector by the very arithmetic of the exhaustive function, so
the scores are bit-identical. Otherwise ``n`` quadruples; when the lists are read to the
end without a decision, past a cap, or when the query's k1/b differ from those the
impacts were written with, it falls back to ``ragstore_bm25_exhaustive``.

Statement triggers (named ``chunks_bm25_zpostings_*`` so that they fire after revision
0004's statistics triggers, in name order) keep the postings in step with every INSERT,
UPDATE and DELETE of chunks. Deletes leave floors and the stored counts as they are
(still valid bounds; the next trim recounts). ``ragstore_bm25_rebuild(collection)``
rewrites a collection's postings at its current avgdl (the backfill below; after a bulk
load or a change of the collection's bm25_k1/bm25_b).
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

LIST_KEEP = 2000  # default postings kept per term after a trim; trimmed past twice this

# The stored postings of the chunks in relation REL (a transition table or chunks) that are
# above their term's floor, at each collection's current avgdl; the terms' stored counts.
_INSERT = """
        WITH ins AS (
            INSERT INTO bm25_postings (term_id, impact, chunk_id, tf, len)
            SELECT t.term_id, x.impact, n.id, x.tf, n.tsv_length
            FROM {rel} n JOIN bm25_collection_stats s ON s.collection_id = n.collection_id
            CROSS JOIN LATERAL (
                SELECT u.lexeme, greatest(cardinality(u.positions), 1) AS tf,
                       ragstore_bm25_impact(greatest(cardinality(u.positions), 1),
                           n.tsv_length, s.impact_k1, s.impact_b,
                           greatest(s.tokens::float8 / greatest(s.chunks, 1), 1.0)) AS impact
                FROM unnest(n.tsv) u) x
            JOIN bm25_terms t ON t.collection_id = n.collection_id AND t.lexeme = x.lexeme
            WHERE n.chunk_type <> 'heading' AND x.impact > t.floor {extra}
            RETURNING term_id),
        counted AS (
            UPDATE bm25_terms t SET stored = t.stored + i.n
            FROM (SELECT term_id, count(*) AS n FROM ins GROUP BY term_id) i
            WHERE t.term_id = i.term_id RETURNING t.term_id, t.collection_id, t.stored)
        SELECT array_agg(c.term_id ORDER BY c.term_id) INTO over FROM counted c
        JOIN bm25_collection_stats s ON s.collection_id = c.collection_id
        WHERE c.stored > 2 * s.list_keep;
        IF over IS NOT NULL THEN
            PERFORM ragstore_bm25_trim(over);
        END IF;
"""


def _insert(rel: str, extra: str = "") -> str:
    return _INSERT.format(rel=rel, extra=extra)


def upgrade() -> None:
    op.execute(r"""
    -- A tsquery matching any of the lexemes, taken verbatim (no parser, no stemming again).
    CREATE FUNCTION ragstore_any_lexeme(lexemes text[]) RETURNS tsquery
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT string_agg('''' || replace(replace(l, '\', '\\'), '''', '''''') || '''',
                          ' | ')::tsquery FROM unnest(lexemes) l $$;
    """)
    op.execute(f"""
    ALTER TABLE bm25_terms ADD COLUMN term_id integer GENERATED ALWAYS AS IDENTITY,
        ADD COLUMN floor real NOT NULL DEFAULT 0, ADD COLUMN stored integer NOT NULL DEFAULT 0;
    CREATE UNIQUE INDEX bm25_terms_term_id_idx ON bm25_terms (term_id);
    ALTER TABLE bm25_collection_stats
        ADD COLUMN impact_k1 float8, ADD COLUMN impact_b float8, ADD COLUMN impact_avgdl float8,
        ADD COLUMN list_keep integer NOT NULL DEFAULT {LIST_KEEP} CHECK (list_keep > 0);

    CREATE TABLE bm25_postings (
        term_id  integer NOT NULL,
        impact   real NOT NULL,
        chunk_id bigint NOT NULL,
        tf       smallint NOT NULL,
        len      integer NOT NULL
    );
    CREATE INDEX bm25_postings_impact_idx ON bm25_postings (term_id, impact DESC)
        INCLUDE (chunk_id, tf, len);
    CREATE INDEX bm25_postings_chunk_idx ON bm25_postings (chunk_id);

    -- The collection's k1 and b as search uses them by default (settings, else 1.2 / 0.75,
    -- search/bm25.py's DEFAULT_K1 and DEFAULT_B).
    CREATE FUNCTION ragstore_bm25_params(cid integer, OUT k1 float8, OUT b float8)
        LANGUAGE sql STABLE AS $$
        SELECT coalesce((settings->>'bm25_k1')::float8, 1.2),
               coalesce((settings->>'bm25_b')::float8, 0.75)
        FROM collections WHERE id = cid $$;

    -- One stored impact: the tf part of BM25 at the avgdl of the time (inlined by the planner).
    CREATE FUNCTION ragstore_bm25_impact(tf integer, len integer, k1 float8, b float8,
                                         avgdl float8) RETURNS real
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS $$ SELECT (tf * (k1 + 1.0) / (tf + k1 * (1.0 - b + b * len / avgdl)))::real $$;

    -- Before postings are written for these collections: fix their k1/b on first use and
    -- record the smallest avgdl impacts are written with (the avgdl of now).
    CREATE FUNCTION ragstore_bm25_impact_stats(cids integer[]) RETURNS void
        LANGUAGE sql AS $$
        UPDATE bm25_collection_stats s
        SET impact_k1 = coalesce(s.impact_k1, p.k1), impact_b = coalesce(s.impact_b, p.b),
            impact_avgdl = least(coalesce(s.impact_avgdl, 'Infinity'),
                                 greatest(s.tokens::float8 / greatest(s.chunks, 1), 1.0))
        FROM (SELECT DISTINCT x AS cid FROM unnest(cids) x) c,
             LATERAL ragstore_bm25_params(c.cid) p
        WHERE s.collection_id = c.cid $$;

    -- Cut each of these terms' lists back to its collection's list_keep best postings; the
    -- floor rises to the best impact dropped, and the stored count is recounted.
    CREATE FUNCTION ragstore_bm25_trim(ids integer[]) RETURNS void LANGUAGE sql AS $$
        WITH edge AS (
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

    CREATE FUNCTION ragstore_bm25_postings_added() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        over integer[];
    BEGIN
        PERFORM ragstore_bm25_impact_stats(array_agg(DISTINCT collection_id)) FROM bm25_new
        WHERE chunk_type <> 'heading' HAVING count(*) > 0;
        {_insert("bm25_new")}
        RETURN NULL;
    END $$;

    CREATE FUNCTION ragstore_bm25_postings_removed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM bm25_postings WHERE chunk_id IN (SELECT id FROM bm25_old);
        RETURN NULL;
    END $$;

    -- An UPDATE rewrites the postings of the rows whose indexed text, type or collection
    -- changed (the same test as revision 0004's statistics trigger).
    CREATE FUNCTION ragstore_bm25_postings_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        changed bigint[];
        over integer[];
    BEGIN
        SELECT array_agg(o.id) INTO changed FROM bm25_old o JOIN bm25_new n ON n.id = o.id
        WHERE o.tsv IS DISTINCT FROM n.tsv OR o.chunk_type IS DISTINCT FROM n.chunk_type
           OR o.collection_id IS DISTINCT FROM n.collection_id
           OR o.tsv_length IS DISTINCT FROM n.tsv_length;
        IF changed IS NULL THEN
            RETURN NULL;
        END IF;
        DELETE FROM bm25_postings WHERE chunk_id = ANY(changed);
        PERFORM ragstore_bm25_impact_stats(array_agg(DISTINCT collection_id)) FROM bm25_new
        WHERE chunk_type <> 'heading' AND id = ANY(changed) HAVING count(*) > 0;
        {_insert("bm25_new", "AND n.id = ANY(changed)")}
        RETURN NULL;
    END $$;

    CREATE TRIGGER chunks_bm25_zpostings_insert AFTER INSERT ON chunks
        REFERENCING NEW TABLE AS bm25_new
        FOR EACH STATEMENT EXECUTE FUNCTION ragstore_bm25_postings_added();
    CREATE TRIGGER chunks_bm25_zpostings_delete AFTER DELETE ON chunks
        REFERENCING OLD TABLE AS bm25_old
        FOR EACH STATEMENT EXECUTE FUNCTION ragstore_bm25_postings_removed();
    CREATE TRIGGER chunks_bm25_zpostings_update AFTER UPDATE ON chunks
        REFERENCING OLD TABLE AS bm25_old NEW TABLE AS bm25_new
        FOR EACH STATEMENT EXECUTE FUNCTION ragstore_bm25_postings_changed();

    -- Rewrite one collection's postings at its current avgdl and k1/b: each term's best
    -- list_keep, the floor at the best one left out. Returns the postings written.
    CREATE FUNCTION ragstore_bm25_rebuild(cid integer) RETURNS bigint
        LANGUAGE plpgsql AS $$
    DECLARE
        written bigint;
        keep integer;
    BEGIN
        SELECT list_keep INTO keep FROM bm25_collection_stats WHERE collection_id = cid
        FOR UPDATE;
        DELETE FROM bm25_postings p USING bm25_terms t
        WHERE t.collection_id = cid AND p.term_id = t.term_id;
        UPDATE bm25_collection_stats SET impact_k1 = NULL, impact_b = NULL, impact_avgdl = NULL
        WHERE collection_id = cid;
        PERFORM ragstore_bm25_impact_stats(ARRAY[cid]);
        CREATE TEMP TABLE ragstore_bm25_all ON COMMIT DROP AS
        SELECT t.term_id, x.impact, n.id AS chunk_id, x.tf, n.tsv_length AS len,
               row_number() OVER (PARTITION BY t.term_id ORDER BY x.impact DESC) AS rn
        FROM chunks n JOIN bm25_collection_stats s ON s.collection_id = n.collection_id
        CROSS JOIN LATERAL (
            SELECT u.lexeme, greatest(cardinality(u.positions), 1) AS tf,
                   ragstore_bm25_impact(greatest(cardinality(u.positions), 1), n.tsv_length,
                       s.impact_k1, s.impact_b,
                       greatest(s.tokens::float8 / greatest(s.chunks, 1), 1.0)) AS impact
            FROM unnest(n.tsv) u) x
        JOIN bm25_terms t ON t.collection_id = n.collection_id AND t.lexeme = x.lexeme
        WHERE n.collection_id = cid AND n.chunk_type <> 'heading';
        INSERT INTO bm25_postings (term_id, impact, chunk_id, tf, len)
        SELECT term_id, impact, chunk_id, tf, len FROM ragstore_bm25_all
        WHERE rn <= keep ORDER BY term_id, impact DESC;
        GET DIAGNOSTICS written = ROW_COUNT;
        UPDATE bm25_terms t SET stored = a.kept, floor = a.top
        FROM (SELECT term_id, count(*) FILTER (WHERE rn <= keep) AS kept,
                     coalesce(max(impact) FILTER (WHERE rn > keep), 0) AS top
              FROM ragstore_bm25_all GROUP BY term_id) a
        WHERE t.term_id = a.term_id;
        DROP TABLE ragstore_bm25_all;
        RETURN written;
    END $$;

    -- The exact BM25 top k over every chunk holding a query lexeme (the reference, and the
    -- fallback of ragstore_bm25_topk). The pruned path scores its final chunks with this
    -- arithmetic, summed in the same (lexeme) order, so both give bit-identical scores.
    CREATE FUNCTION ragstore_bm25_exhaustive(cid integer, cfg regconfig, terms text, k integer,
                                             k1 float8, b float8)
        RETURNS TABLE (chunk_id bigint, raw float8) LANGUAGE sql STABLE AS $$
        WITH s AS (SELECT chunks AS n, greatest(tokens::float8 / greatest(chunks, 1), 1.0)
                   AS avgdl FROM bm25_collection_stats WHERE collection_id = cid),
        qt AS (SELECT t.lexeme, (q.qtf * ln(1.0 + (s.n - t.df + 0.5) / (t.df + 0.5)))::float8
                   AS w
               FROM (SELECT u.lexeme, greatest(cardinality(u.positions), 1) AS qtf
                     FROM unnest(to_tsvector(cfg, terms)) u) q
               JOIN bm25_terms t ON t.collection_id = cid AND t.lexeme = q.lexeme
               CROSS JOIN s)
        SELECT c.id, sum(qt.w * u.tf * (k1 + 1.0) / (u.tf + k1
                   * (1.0 - b + b * c.tsv_length / s.avgdl)) ORDER BY u.lexeme COLLATE "C")
               AS raw
        FROM chunks c CROSS JOIN s
        CROSS JOIN LATERAL (SELECT x.lexeme, greatest(cardinality(x.positions), 1) AS tf
            FROM unnest(ts_filter(setweight(c.tsv, 'A', (SELECT array_agg(lexeme) FROM qt)),
                                  '{{a}}')) x) u
        JOIN qt ON qt.lexeme = u.lexeme
        WHERE c.collection_id = cid AND c.chunk_type <> 'heading'
          AND c.tsv @@ (SELECT ragstore_any_lexeme(array_agg(lexeme)) FROM qt)
        GROUP BY c.id ORDER BY raw DESC, c.id LIMIT k $$;

    CREATE FUNCTION ragstore_bm25_topk(cid integer, cfg regconfig, terms text, k integer,
                                       k1 float8, b float8, start_n integer DEFAULT 64,
                                       max_n integer DEFAULT 8192)
        RETURNS TABLE (chunk_id bigint, raw float8) LANGUAGE plpgsql STABLE AS $$
    DECLARE
        st record;
        avgdl float8;
        ratio float8;
        ids integer[];
        lexs text[];
        ws float8[];
        floors float8[];
        n integer := greatest(start_n, k);
        theta float8;
        unseen float8;
        read_out boolean;
        contenders bigint[];
    BEGIN
        SELECT * INTO st FROM bm25_collection_stats WHERE collection_id = cid;
        IF NOT FOUND OR st.chunks <= 0 THEN
            RETURN;
        END IF;
        IF st.impact_avgdl IS NULL OR st.impact_k1 IS DISTINCT FROM k1
           OR st.impact_b IS DISTINCT FROM b THEN
            RETURN QUERY SELECT * FROM ragstore_bm25_exhaustive(cid, cfg, terms, k, k1, b);
            RETURN;
        END IF;
        avgdl := greatest(st.tokens::float8 / greatest(st.chunks, 1), 1.0);
        -- bound inflation: avgdl grown since impacts were written; float4 rounding of impacts
        ratio := greatest(1.0, avgdl / st.impact_avgdl) * 1.000001;
        SELECT array_agg(t.term_id ORDER BY t.lexeme COLLATE "C"),
               array_agg(t.lexeme ORDER BY t.lexeme COLLATE "C"),
               array_agg(w ORDER BY t.lexeme COLLATE "C"),
               array_agg(w * t.floor * ratio ORDER BY t.lexeme COLLATE "C")
        INTO ids, lexs, ws, floors
        FROM (SELECT u.lexeme, greatest(cardinality(u.positions), 1) AS qtf
              FROM unnest(to_tsvector(cfg, terms)) u) q
        JOIN bm25_terms t ON t.collection_id = cid AND t.lexeme = q.lexeme
        CROSS JOIN LATERAL (SELECT (q.qtf * ln(1.0 + (st.chunks - t.df + 0.5)
                                               / (t.df + 0.5)))::float8 AS w) wt;
        IF ids IS NULL THEN
            RETURN;
        END IF;
        LOOP
            WITH q AS (SELECT * FROM unnest(ids, ws, floors) AS q(term_id, w, fl)),
            lists AS (
                SELECT q.term_id, q.w, p.chunk_id, p.tf, p.len, p.impact
                FROM q CROSS JOIN LATERAL (
                    SELECT x.chunk_id, x.tf, x.len, x.impact FROM bm25_postings x
                    WHERE x.term_id = q.term_id ORDER BY x.impact DESC LIMIT n) p),
            bounds AS (
                SELECT q.term_id, count(l.chunk_id) < n AS done,
                       CASE WHEN count(l.chunk_id) < n THEN q.fl
                            ELSE q.w * min(l.impact) * ratio END AS ub
                FROM q LEFT JOIN lists l ON l.term_id = q.term_id
                GROUP BY q.term_id, q.w, q.fl),
            cand AS (
                SELECT l.chunk_id,
                       sum(l.w * l.tf * (k1 + 1.0) / (l.tf + k1
                           * (1.0 - b + b * l.len / avgdl))) AS known,
                       sum(bo.ub) AS seen_ub
                FROM lists l JOIN bounds bo ON bo.term_id = l.term_id GROUP BY l.chunk_id),
            total AS (SELECT sum(ub) AS ub, bool_and(done) AS done FROM bounds),
            th AS (SELECT known FROM cand ORDER BY known DESC OFFSET k - 1 LIMIT 1)
            SELECT (SELECT known FROM th), total.ub, total.done,
                   (SELECT array_agg(c.chunk_id) FROM cand c
                    WHERE (c.known + total.ub - c.seen_ub) * 1.000001
                          >= coalesce((SELECT known FROM th), '-Infinity'))
            INTO theta, unseen, read_out, contenders FROM total;
            -- (the 1e-6 margins absorb rounding: known sums are not in lexeme order)
            EXIT WHEN unseen = 0 OR (theta IS NOT NULL AND unseen * 1.000001 < theta);
            IF read_out OR n >= max_n THEN
                RETURN QUERY SELECT * FROM ragstore_bm25_exhaustive(cid, cfg, terms, k, k1, b);
                RETURN;
            END IF;
            n := least(n * 4, max_n);
        END LOOP;
        -- the contenders, scored as ragstore_bm25_exhaustive scores them
        RETURN QUERY
            WITH qt AS (SELECT * FROM unnest(lexs, ws) AS qt(lexeme, w))
            SELECT c.id, sum(qt.w * u.tf * (k1 + 1.0) / (u.tf + k1
                       * (1.0 - b + b * c.tsv_length / avgdl)) ORDER BY u.lexeme COLLATE "C")
                   AS raw
            FROM chunks c
            CROSS JOIN LATERAL (SELECT x.lexeme, greatest(cardinality(x.positions), 1) AS tf
                FROM unnest(ts_filter(setweight(c.tsv, 'A', lexs), '{{a}}')) x) u
            JOIN qt ON qt.lexeme = u.lexeme
            WHERE c.id = ANY(contenders)
            GROUP BY c.id ORDER BY raw DESC, c.id LIMIT k;
    END $$;
    """)
    op.execute(
        "SELECT ragstore_bm25_rebuild(collection_id) FROM bm25_collection_stats"
        " ORDER BY collection_id"
    )


def downgrade() -> None:
    op.execute("""
    DROP FUNCTION ragstore_bm25_topk(integer, regconfig, text, integer, float8, float8,
                                     integer, integer);
    DROP FUNCTION ragstore_bm25_exhaustive(integer, regconfig, text, integer, float8, float8);
    DROP FUNCTION ragstore_bm25_rebuild(integer);
    DROP TRIGGER chunks_bm25_zpostings_update ON chunks;
    DROP TRIGGER chunks_bm25_zpostings_delete ON chunks;
    DROP TRIGGER chunks_bm25_zpostings_insert ON chunks;
    DROP FUNCTION ragstore_bm25_postings_changed();
    DROP FUNCTION ragstore_bm25_postings_removed();
    DROP FUNCTION ragstore_bm25_postings_added();
    DROP FUNCTION ragstore_bm25_trim(integer[]);
    DROP FUNCTION ragstore_bm25_impact_stats(integer[]);
    DROP FUNCTION ragstore_bm25_impact(integer, integer, float8, float8, float8);
    DROP FUNCTION ragstore_bm25_params(integer);
    DROP FUNCTION ragstore_any_lexeme(text[]);
    DROP TABLE bm25_postings;
    ALTER TABLE bm25_collection_stats DROP COLUMN impact_k1, DROP COLUMN impact_b,
        DROP COLUMN impact_avgdl, DROP COLUMN list_keep;
    DROP INDEX bm25_terms_term_id_idx;
    ALTER TABLE bm25_terms DROP COLUMN term_id, DROP COLUMN floor, DROP COLUMN stored;
    """)
