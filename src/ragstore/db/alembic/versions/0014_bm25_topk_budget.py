"""BM25 top k: the cut budget goes to the longest lists; contenders scored best bound first.

Revision ID: 0014
Revises: 0012
Create Date: 2026-12-01

Revision 0009's ``ragstore_bm25_topk`` (MaxScore over impact-ordered postings) spent most of
its time in phase 2 and in the final exact scoring. Measured on the 121k-chunk scale
collection (docs/benchmarks.md, "Scale"), phase 2 read 10,000-45,000 postings for a top 10:
after the cheapest terms were left unread, the rest of the cut budget was spread over every
read term in proportion to its bound, which gave each a cut (about 0.04 of an impact that
runs to 2.2) that skipped nothing. And every contender was scored from its tsvector (about
20 us each), hundreds to thousands of them. This revision changes two things and keeps the
rest (phase 1, the filter handling, the fallbacks, the bit-identical scores):

1. **The budget goes to the longest lists first.** Terms are taken in order of postings
   stored per unit of weight (``stored / w``: common words, cheap in bound, long to read):
   each is left unread while its whole bound fits the budget; the next one is read only
   down to the cut the rest of the budget allows (a high cut on a long list skips most
   of it); the others are read to their floor. The budget itself is unchanged
   (``rest + alpha * (theta - rest)``), so the sum of what is not read stays below theta.
2. **Contenders best bound first.** The chunks that can still reach theta are scored in
   growing batches (2k, 4k, ...) in order of their bound, and scoring stops as soon as the
   next bound is below the k-th exact score found so far; the 2k chunks scored for theta
   in phase 1 are kept, not scored again. A filter is checked on each batch before it
   is scored (before: on every contender).

Both only decide what is read and scored; a chunk is left out only when its bound is below
an exact k-th score, so the list is still the exhaustive one (``tests/test_search_topk.py``).
The default ``alpha`` rises from 0.4 to 0.5: scoring in bound order makes a larger
unread share cheaper.
"""

from alembic import op

from ragstore.db.revisions import earlier_revision

revision = "0014"
down_revision = "0012"
branch_labels = None
depends_on = None


_UPGRADE = r"""
CREATE OR REPLACE FUNCTION ragstore_bm25_topk(cid integer, cfg regconfig, terms text, k integer,
                                   k1 float8, b float8, start_n integer DEFAULT 0,
                                   max_n integer DEFAULT 4096, cond text DEFAULT NULL,
                                   alpha float8 DEFAULT 0.5)
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
    lens float8[]; -- postings stored per term / w: which lists give the most for the budget
    cuts float8[]; -- phase 2: read a term's postings with impact >= cut (NULL: not read)
    cbs float8[];  -- phase 2: the most a term's postings not read add
    m integer;
    n integer;
    lim integer;
    step integer;
    total integer;
    cand bigint[];
    passing bigint[];
    contenders bigint[];
    bounds float8[];
    sids bigint[];   -- chunks scored exactly so far, and their scores
    sraws float8[];
    batch bigint[];
    all_read boolean;
    theta float8;
    budget float8;
    rest float8;
    slack float8;
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
    ratio := greatest(1.0, avgdl / st.impact_avgdl) * 1.000001;
    SELECT array_agg(tt.term_id ORDER BY tt.lexeme COLLATE "C"),
           array_agg(tt.lexeme ORDER BY tt.lexeme COLLATE "C"),
           array_agg(wt.w ORDER BY tt.lexeme COLLATE "C"),
           array_agg(wt.w * tt.floor * ratio ORDER BY tt.lexeme COLLATE "C"),
           array_agg(wt.w * greatest(tt.floor, coalesce(
               (SELECT max(x.impact) FROM bm25_postings x WHERE x.term_id = tt.term_id), 0))
               * ratio ORDER BY tt.lexeme COLLATE "C"),
           array_agg(tt.stored / greatest(wt.w, 1e-9) ORDER BY tt.lexeme COLLATE "C")
    INTO ids, lexs, ws, fls, ubs, lens
    FROM (SELECT u.lexeme, greatest(cardinality(u.positions), 1) AS qtf
          FROM unnest(to_tsvector(cfg, terms)) u) q
    JOIN bm25_terms tt ON tt.collection_id = cid AND tt.lexeme = q.lexeme
    CROSS JOIN LATERAL (SELECT (q.qtf * ln(1.0 + (st.chunks - tt.df + 0.5)
                                           / (tt.df + 0.5)))::float8 AS w) wt;
    IF ids IS NULL THEN
        RETURN;
    END IF;
    m := cardinality(ids);
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
            lim := 0;
            total := cardinality(cand);
            passing := '{}';
            LOOP
                step := greatest(4 * k, lim);
                passing := passing || ragstore_bm25_passing(cand[lim + 1:lim + step], cond);
                lim := lim + step;
                EXIT WHEN cardinality(passing) >= k OR lim >= total
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
            contenders := cand;
            EXIT;
        END IF;
        IF all_read OR n >= max_n THEN
            RETURN QUERY SELECT * FROM ragstore_bm25_exhaustive_where(cid, cfg, terms, k, k1,
                                                                      b, cond);
            RETURN;
        END IF;
        n := least(n * 4, max_n);
    END LOOP;
    IF contenders IS NOT NULL THEN
        RETURN QUERY SELECT r.chunk_id, r.raw
            FROM ragstore_bm25_score(contenders, lexs, ws, k1, b, avgdl) r
            ORDER BY r.raw DESC, r.chunk_id LIMIT k;
        RETURN;
    END IF;
    SELECT array_agg(r.chunk_id), array_agg(r.raw) INTO sids, sraws
        FROM ragstore_bm25_score(cand[1:2 * k], lexs, ws, k1, b, avgdl) r;
    IF coalesce(cardinality(sids), 0) < k THEN
        RETURN QUERY SELECT * FROM ragstore_bm25_exhaustive_where(cid, cfg, terms, k, k1,
                                                                  b, cond);
        RETURN;
    END IF;
    theta := (SELECT x FROM unnest(sraws) x ORDER BY x DESC OFFSET k - 1 LIMIT 1);
    rest := (SELECT sum(f) FROM unnest(fls) f);
    IF rest >= theta * 0.95 THEN
        RETURN QUERY SELECT * FROM ragstore_bm25_exhaustive_where(cid, cfg, terms, k, k1,
                                                                  b, cond);
        RETURN;
    END IF;
    budget := least(rest + (theta - rest) * alpha, theta * 0.999999);
    -- the budget goes to the longest lists of the cheapest terms first: each is left
    -- unread while its whole bound fits; the next is read down to the cut the rest
    -- of the budget allows; the others are read to their floor
    slack := budget - rest;
    cuts := array_fill(NULL::float8, ARRAY[m]);
    cbs := fls;
    FOR t IN SELECT o FROM unnest(lens) WITH ORDINALITY u(len, o) ORDER BY u.len DESC, u.o LOOP
        IF ubs[t] - fls[t] <= slack THEN
            cbs[t] := ubs[t];
            slack := slack - (ubs[t] - fls[t]);
        ELSE
            cbs[t] := fls[t] + slack;
            cuts[t] := cbs[t] / (ws[t] * ratio);
            slack := 0;
        END IF;
    END LOOP;
    rest := (SELECT sum(x) FROM unnest(cbs) x);
    WITH q AS (SELECT * FROM unnest(ids, ws, cuts, cbs) AS q(term_id, w, cut, cb)
               WHERE q.cut IS NOT NULL),
    lists AS (
        SELECT q.w, q.cb, p.chunk_id, p.tf, p.len
        FROM q CROSS JOIN LATERAL (
            SELECT x.chunk_id, x.tf, x.len FROM bm25_postings x
            WHERE x.term_id = q.term_id AND x.impact >= q.cut) p),
    c AS (SELECT l.chunk_id, (sum(l.w * l.tf * (k1 + 1.0) / (l.tf + k1
               * (1.0 - b + b * l.len / avgdl))) + rest - sum(l.cb)) * 1.000001 AS bound
          FROM lists l GROUP BY l.chunk_id)
    SELECT array_agg(c.chunk_id ORDER BY c.bound DESC, c.chunk_id),
           array_agg(c.bound ORDER BY c.bound DESC, c.chunk_id)
    INTO contenders, bounds FROM c
    WHERE c.bound >= theta AND c.chunk_id <> ALL(sids);
    -- score the contenders best bound first, in growing batches, until the next bound
    -- is below the k-th exact score
    i := 0;
    total := coalesce(cardinality(contenders), 0);
    step := greatest(2 * k, 32);
    WHILE i < total AND bounds[i + 1] >= theta LOOP
        batch := ragstore_bm25_passing(contenders[i + 1:i + step], cond);
        SELECT sids || coalesce(array_agg(r.chunk_id), '{}'),
               sraws || coalesce(array_agg(r.raw), '{}')
            INTO sids, sraws
            FROM ragstore_bm25_score(batch, lexs, ws, k1, b, avgdl) r;
        theta := (SELECT x FROM unnest(sraws) x ORDER BY x DESC OFFSET k - 1 LIMIT 1);
        i := i + step;
        step := step * 2;
    END LOOP;
    RETURN QUERY SELECT x.id, x.raw FROM unnest(sids, sraws) x(id, raw)
        ORDER BY x.raw DESC, x.id LIMIT k;
END $fn$;
"""


def _topk_0009() -> str:
    """Revision 0009's ``ragstore_bm25_topk`` (its last statement), which the downgrade restores."""
    module = earlier_revision("0009_bm25_maxscore.py")
    body = str(module._UPGRADE).split("CREATE FUNCTION ragstore_bm25_topk(", 1)[1]
    return "CREATE OR REPLACE FUNCTION ragstore_bm25_topk(" + body


def upgrade() -> None:
    op.execute(_UPGRADE)


def downgrade() -> None:
    op.execute(_topk_0009())
