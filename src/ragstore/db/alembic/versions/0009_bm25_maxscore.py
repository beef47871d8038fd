"""BM25 top k in two phases (MaxScore over impact-ordered postings), with filters.

Revision ID: 0009
Revises: 0011
Create Date: 2026-12-01

Revision 0006's ``ragstore_bm25_topk`` read every query term's postings to the same depth,
quadrupling it until the unseen bound fell below the k-th known score, and could not take
a filter (filtered full-text searches scored every match). Its cost was mostly the final
scoring of contenders from their tsvectors (about 15-45 us each), and with uniform depths
common words were read as deep as rare ones. This revision replaces it:

1. **A lower bound.** The best ``n`` postings of each term (``n`` = 4k, at least 32) give
   known partial scores; the best 2k of those chunks that pass the filter are scored
   exactly and the k-th score is ``theta``. With a filter ``n`` quadruples until k chunks
   pass (the filter, checked in batches best-first, is the costly part); a filter that
   keeps under 5% of the chunks checked goes to the exhaustive list at once, where it is
   one join over the matches.
2. **MaxScore cut.** Terms sorted by the most a posting can add (``w * max impact``):
   those whose bounds sum below ``alpha * theta`` are not read at all; the others are read
   down to an impact cut chosen so that everything not read sums below ``alpha * theta``
   too (a term's trimmed tail, ``w * floor``, is always in that sum). A chunk's bound is
   its known part plus what its unread terms can add; the ones that can still reach
   ``theta`` (and pass the filter) are scored exactly, and the best k returned. ``alpha``
   (0.4; 0.5 cost 1.0-1.4x as much at k 10-100 on 121k chunks, 0.2 and 0.3 no less)
   trades reading postings (cheap, index only) for fewer exact scorings.

Scores are those of ``ragstore_bm25_exhaustive``, bit for bit (same arithmetic, same
summation order). It falls back to the exhaustive list when the query's k1/b are not the
ones impacts were written with, when the trimmed tails alone reach ``theta``, or when a
filter keeps fewer than k of the best ``max_n`` postings' chunks.

**Longer lists.** A term's postings below its floor (trimmed) can be bounded but not
enumerated, so their bounds ``w * floor`` always count as unread; at 121k chunks with 2,000
postings a term, a query with four or five common words had tails summing past ``theta``
and went to the exhaustive path (p90 0.5 s). Keeping every posting up to ``list_keep``
20,000 (the new default, also for existing collections; trims past twice that) cost 40%
more postings there (5.3M against 3.7M) and leaves common words to the MaxScore cut.
Postings already trimmed stay so until ``ragstore_bm25_rebuild`` (or a bulk load).

A filter is SQL text over ``c`` (chunks) and ``d`` (documents), executed dynamically:
the search service renders its compiled filter with client-side literal quoting (every
value quoted by psycopg), never from raw user text.
"""

from alembic import op

revision = "0009"
down_revision = "0011"
branch_labels = None
depends_on = None


_UPGRADE = r"""
-- The chunks among IDS that pass the filter COND (SQL over c and d); all of them without one.
CREATE FUNCTION ragstore_bm25_passing(ids bigint[], cond text) RETURNS bigint[]
    LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    kept bigint[];
BEGIN
    IF cond IS NULL OR ids IS NULL THEN
        RETURN ids;
    END IF;
    -- one index probe per id (OFFSET 0 keeps the subquery from being pulled up into a
    -- join that the planner may run as a scan of every chunk)
    EXECUTE format('SELECT array_agg(i.id) FROM unnest($1) i(id) CROSS JOIN LATERAL'
                   ' (SELECT 1 FROM chunks c JOIN documents d ON d.id = c.document_id'
                   ' WHERE c.id = i.id AND (%s) OFFSET 0) ok', cond)
        INTO kept USING ids;
    RETURN coalesce(kept, '{}');
END $fn$;

-- Exact BM25 scores of the chunks IDS, as ragstore_bm25_exhaustive computes them (same
-- arithmetic, summed in lexeme order): bit-identical.
CREATE FUNCTION ragstore_bm25_score(ids bigint[], lexs text[], ws float8[], k1 float8,
                                    b float8, avgdl float8)
    RETURNS TABLE (chunk_id bigint, raw float8) LANGUAGE sql STABLE AS $fn$
    WITH qt AS (SELECT * FROM unnest(lexs, ws) AS qt(lexeme, w))
    SELECT c.id, sum(qt.w * u.tf * (k1 + 1.0) / (u.tf + k1
               * (1.0 - b + b * c.tsv_length / avgdl)) ORDER BY u.lexeme COLLATE "C")
    FROM chunks c
    CROSS JOIN LATERAL (SELECT x.lexeme, greatest(cardinality(x.positions), 1) AS tf
        FROM unnest(ts_filter(setweight(c.tsv, 'A', lexs), '{a}')) x) u
    JOIN qt ON qt.lexeme = u.lexeme
    WHERE c.id = ANY(ids)
    GROUP BY c.id $fn$;

-- ragstore_bm25_exhaustive with a filter COND over c and d (without one, that function).
CREATE FUNCTION ragstore_bm25_exhaustive_where(cid integer, cfg regconfig, terms text,
                                               k integer, k1 float8, b float8, cond text)
    RETURNS TABLE (chunk_id bigint, raw float8) LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    IF cond IS NULL THEN
        RETURN QUERY SELECT * FROM ragstore_bm25_exhaustive(cid, cfg, terms, k, k1, b);
        RETURN;
    END IF;
    RETURN QUERY EXECUTE format($q$
        WITH s AS (SELECT chunks AS n, greatest(tokens::float8 / greatest(chunks, 1), 1.0)
                   AS avgdl FROM bm25_collection_stats WHERE collection_id = $1),
        qt AS (SELECT t.lexeme, (q.qtf * ln(1.0 + (s.n - t.df + 0.5) / (t.df + 0.5)))::float8
                   AS w
               FROM (SELECT u.lexeme, greatest(cardinality(u.positions), 1) AS qtf
                     FROM unnest(to_tsvector($2, $3)) u) q
               JOIN bm25_terms t ON t.collection_id = $1 AND t.lexeme = q.lexeme
               CROSS JOIN s)
        SELECT c.id, sum(qt.w * u.tf * ($5 + 1.0) / (u.tf + $5
                   * (1.0 - $6 + $6 * c.tsv_length / s.avgdl)) ORDER BY u.lexeme COLLATE "C")
               AS raw
        FROM chunks c JOIN documents d ON d.id = c.document_id CROSS JOIN s
        CROSS JOIN LATERAL (SELECT x.lexeme, greatest(cardinality(x.positions), 1) AS tf
            FROM unnest(ts_filter(setweight(c.tsv, 'A', (SELECT array_agg(lexeme) FROM qt)),
                                  '{a}')) x) u
        JOIN qt ON qt.lexeme = u.lexeme
        WHERE c.collection_id = $1 AND c.chunk_type <> 'heading'
          AND c.tsv @@ (SELECT ragstore_any_lexeme(array_agg(lexeme)) FROM qt)
          AND (%s)
        GROUP BY c.id ORDER BY raw DESC, c.id LIMIT $4 $q$, cond)
        USING cid, cfg, terms, k, k1, b;
END $fn$;

DROP FUNCTION ragstore_bm25_topk(integer, regconfig, text, integer, float8, float8,
                                 integer, integer);

CREATE FUNCTION ragstore_bm25_topk(cid integer, cfg regconfig, terms text, k integer,
                                   k1 float8, b float8, start_n integer DEFAULT 0,
                                   max_n integer DEFAULT 4096, cond text DEFAULT NULL,
                                   alpha float8 DEFAULT 0.4)
    RETURNS TABLE (chunk_id bigint, raw float8) LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    st record;
    avgdl float8;
    ratio float8;
    ids integer[];
    lexs text[];
    ws float8[];
    fls float8[];  -- w * floor * ratio: the most a term's trimmed postings add
    ubs float8[];  -- w * max(best impact, floor) * ratio: the most the term adds
    cuts float8[]; -- phase 2: read a term's postings with impact >= cut (NULL: not read)
    cbs float8[];  -- phase 2: the most a term's postings not read add
    essential boolean[];
    m integer;
    n integer;
    lim integer;
    step integer;
    total integer;
    cand bigint[];
    passing bigint[];
    contenders bigint[];
    all_read boolean;
    theta float8;
    budget float8;
    acc float8;
    rest float8;
    slack float8;
    span float8;
    i integer;
    t integer;
BEGIN
    SELECT * INTO st FROM bm25_collection_stats s WHERE s.collection_id = cid;
    IF NOT FOUND OR st.chunks <= 0 THEN
        RETURN;
    END IF;
    IF st.impact_avgdl IS NULL OR st.impact_k1 IS DISTINCT FROM k1
       OR st.impact_b IS DISTINCT FROM b THEN
        RETURN QUERY SELECT * FROM ragstore_bm25_exhaustive_where(cid, cfg, terms, k, k1, b,
                                                                  cond);
        RETURN;
    END IF;
    avgdl := greatest(st.tokens::float8 / greatest(st.chunks, 1), 1.0);
    -- bound inflation: avgdl grown since impacts were written; float4 rounding of impacts
    ratio := greatest(1.0, avgdl / st.impact_avgdl) * 1.000001;
    SELECT array_agg(tt.term_id ORDER BY tt.lexeme COLLATE "C"),
           array_agg(tt.lexeme ORDER BY tt.lexeme COLLATE "C"),
           array_agg(wt.w ORDER BY tt.lexeme COLLATE "C"),
           array_agg(wt.w * tt.floor * ratio ORDER BY tt.lexeme COLLATE "C"),
           array_agg(wt.w * greatest(tt.floor, coalesce(
               (SELECT max(x.impact) FROM bm25_postings x WHERE x.term_id = tt.term_id), 0))
               * ratio ORDER BY tt.lexeme COLLATE "C")
    INTO ids, lexs, ws, fls, ubs
    FROM (SELECT u.lexeme, greatest(cardinality(u.positions), 1) AS qtf
          FROM unnest(to_tsvector(cfg, terms)) u) q
    JOIN bm25_terms tt ON tt.collection_id = cid AND tt.lexeme = q.lexeme
    CROSS JOIN LATERAL (SELECT (q.qtf * ln(1.0 + (st.chunks - tt.df + 0.5)
                                           / (tt.df + 0.5)))::float8 AS w) wt;
    IF ids IS NULL THEN
        RETURN;
    END IF;
    m := cardinality(ids);
    -- Phase 1: the best n postings of each term; chunks best first by the part read.
    n := greatest(start_n, 4 * k, 32);
    LOOP
        WITH q AS (SELECT * FROM unnest(ids, ws) AS q(term_id, w)),
        lists AS (
            SELECT q.term_id, q.w, p.chunk_id, p.tf, p.len
            FROM q CROSS JOIN LATERAL (
                SELECT x.chunk_id, x.tf, x.len FROM bm25_postings x
                WHERE x.term_id = q.term_id ORDER BY x.impact DESC LIMIT n) p),
        cnt AS (SELECT count(l.chunk_id) < n AS done
                FROM q LEFT JOIN lists l ON l.term_id = q.term_id GROUP BY q.term_id),
        c AS (SELECT l.chunk_id, sum(l.w * l.tf * (k1 + 1.0) / (l.tf + k1
                   * (1.0 - b + b * l.len / avgdl))) AS known
              FROM lists l GROUP BY l.chunk_id)
        SELECT (SELECT array_agg(c.chunk_id ORDER BY c.known DESC, c.chunk_id) FROM c),
               (SELECT bool_and(cnt.done) FROM cnt)
        INTO cand, all_read;
        cand := coalesce(cand, '{}');
        IF cond IS NOT NULL THEN
            -- the filter costs a chunk and document read each: check the best first, in
            -- growing batches, until k pass
            lim := 0;
            total := cardinality(cand);
            passing := '{}';
            LOOP
                step := greatest(4 * k, lim);
                passing := passing || ragstore_bm25_passing(cand[lim + 1:lim + step], cond);
                lim := lim + step;
                EXIT WHEN cardinality(passing) >= k OR lim >= total
                    -- a filter keeping under 5% is cheaper on every match (one join)
                    OR (lim >= 8 * k AND cardinality(passing) < 0.05 * lim);
            END LOOP;
            IF cardinality(passing) < k AND cardinality(passing) < 0.05 * least(lim, total)
               AND NOT (all_read AND lim >= total) THEN
                RETURN QUERY SELECT * FROM ragstore_bm25_exhaustive_where(cid, cfg, terms, k,
                                                                          k1, b, cond);
                RETURN;
            END IF;
            all_read := all_read AND lim >= total;
            cand := ARRAY(SELECT x.id FROM unnest(cand[1:lim]) WITH ORDINALITY x(id, o)
                          WHERE x.id = ANY(passing) ORDER BY x.o);
        END IF;
        EXIT WHEN cardinality(cand) >= k;
        IF all_read AND NOT EXISTS (SELECT 1 FROM unnest(fls) f WHERE f > 0) THEN
            contenders := cand;  -- every chunk holding a query term (and passing) was read
            EXIT;
        END IF;
        IF all_read OR n >= max_n THEN
            RETURN QUERY SELECT * FROM ragstore_bm25_exhaustive_where(cid, cfg, terms, k, k1,
                                                                      b, cond);
            RETURN;
        END IF;
        n := least(n * 4, max_n);
    END LOOP;
    IF contenders IS NULL THEN
        SELECT min(z.raw), count(*) INTO theta, i FROM (
            SELECT r.raw FROM ragstore_bm25_score(cand[1:2 * k], lexs, ws, k1, b, avgdl) r
            ORDER BY r.raw DESC LIMIT k) z;
        IF i < k THEN  -- cannot happen (each chunk read holds a query term); never guess
            RETURN QUERY SELECT * FROM ragstore_bm25_exhaustive_where(cid, cfg, terms, k, k1,
                                                                      b, cond);
            RETURN;
        END IF;
        -- Phase 2: what is not read must sum below budget (< theta); trimmed tails always
        -- count, so when they alone come near theta nothing can be pruned.
        rest := (SELECT sum(f) FROM unnest(fls) f);
        IF rest >= theta * 0.95 THEN
            RETURN QUERY SELECT * FROM ragstore_bm25_exhaustive_where(cid, cfg, terms, k, k1,
                                                                      b, cond);
            RETURN;
        END IF;
        budget := least(rest + (theta - rest) * alpha, theta * 0.999999);
        -- the terms of smallest bound are not read while their bounds fit the budget
        essential := array_fill(true, ARRAY[m]);
        acc := 0;
        FOR t IN SELECT o FROM unnest(ubs) WITH ORDINALITY u(ub, o) ORDER BY u.ub, u.o LOOP
            EXIT WHEN acc + ubs[t] + rest - fls[t] > budget;
            essential[t] := false;
            acc := acc + ubs[t];
            rest := rest - fls[t];
        END LOOP;
        -- the rest of the budget goes to the read terms in proportion to their range
        slack := budget - acc - rest;
        span := 0;
        FOR i IN 1..m LOOP
            IF essential[i] THEN
                span := span + ubs[i] - fls[i];
            END IF;
        END LOOP;
        cuts := array_fill(NULL::float8, ARRAY[m]);
        cbs := ubs;
        FOR i IN 1..m LOOP
            IF essential[i] THEN
                cbs[i] := fls[i] + CASE WHEN span > 0
                                        THEN slack * (ubs[i] - fls[i]) / span ELSE 0 END;
                cuts[i] := cbs[i] / (ws[i] * ratio);
            END IF;
        END LOOP;
        rest := (SELECT sum(x) FROM unnest(cbs) x);
        -- a chunk can reach at most its known part plus the bounds of its terms not read
        WITH q AS (SELECT * FROM unnest(ids, ws, cuts, cbs) AS q(term_id, w, cut, cb)
                   WHERE q.cut IS NOT NULL),
        lists AS (
            SELECT q.w, q.cb, p.chunk_id, p.tf, p.len
            FROM q CROSS JOIN LATERAL (
                SELECT x.chunk_id, x.tf, x.len FROM bm25_postings x
                WHERE x.term_id = q.term_id AND x.impact >= q.cut) p),
        c AS (SELECT l.chunk_id, sum(l.w * l.tf * (k1 + 1.0) / (l.tf + k1
                   * (1.0 - b + b * l.len / avgdl))) AS known, sum(l.cb) AS seen
              FROM lists l GROUP BY l.chunk_id)
        SELECT array_agg(c.chunk_id) INTO contenders FROM c
        WHERE (c.known + rest - c.seen) * 1.000001 >= theta;
        contenders := ragstore_bm25_passing(contenders, cond);
    END IF;
    RETURN QUERY SELECT r.chunk_id, r.raw
        FROM ragstore_bm25_score(contenders, lexs, ws, k1, b, avgdl) r
        ORDER BY r.raw DESC, r.chunk_id LIMIT k;
END $fn$;
"""


LIST_KEEP = 20_000  # revision 0006's default was 2,000
OLD_LIST_KEEP = 2000


def upgrade() -> None:
    op.execute(_UPGRADE)
    op.execute(
        f"ALTER TABLE bm25_collection_stats ALTER COLUMN list_keep SET DEFAULT {LIST_KEEP};"
        f" UPDATE bm25_collection_stats SET list_keep = {LIST_KEEP}"
        f" WHERE list_keep = {OLD_LIST_KEEP}"
    )


def downgrade() -> None:
    op.execute(
        f"ALTER TABLE bm25_collection_stats ALTER COLUMN list_keep SET DEFAULT {OLD_LIST_KEEP};"
        f" UPDATE bm25_collection_stats SET list_keep = {OLD_LIST_KEEP}"
        f" WHERE list_keep = {LIST_KEEP}"
    )
    op.execute("""
    DROP FUNCTION ragstore_bm25_topk(integer, regconfig, text, integer, float8, float8,
                                     integer, integer, text, float8);
    DROP FUNCTION ragstore_bm25_exhaustive_where(integer, regconfig, text, integer, float8,
                                                 float8, text);
    DROP FUNCTION ragstore_bm25_score(bigint[], text[], float8[], float8, float8, float8);
    DROP FUNCTION ragstore_bm25_passing(bigint[], text);
    """)
    op.execute(_TOPK_0006)


# revision 0006's ragstore_bm25_topk, restored by the downgrade
_TOPK_0006 = r"""
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
                FROM unnest(ts_filter(setweight(c.tsv, 'A', lexs), '{a}')) x) u
            JOIN qt ON qt.lexeme = u.lexeme
            WHERE c.id = ANY(contenders)
            GROUP BY c.id ORDER BY raw DESC, c.id LIMIT k;
    END $$;
"""
