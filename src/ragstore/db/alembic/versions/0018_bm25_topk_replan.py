"""BM25 top k: plan the contenders again once theta has risen (the long tail at 1M chunks).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02

``ragstore_bm25_topk`` plans its second phase once, from the k-th best exact score phase 1
found (theta): how deep each term's postings are read, and which chunks may still reach
theta (the contenders), scored from their tsvectors best bound first. At a million chunks
a few queries of common words start from a low theta with a loose budget and pass tens
of thousands of contenders; theta then rises within the first batches, but the function
went on scoring the contenders planned from the old one: a SciFact claim of six common
terms scored 32,752 chunks (1.0 s of its 1.2 s) for a top 10 (docs/benchmarks.md,
"Full-text tails at 1M").

Now, after each batch, when theta has risen by a tenth since the plan (``replan_rise``,
1.1) and ``replan_at`` (default 1,024) or more contenders still have a bound above it, the
function plans again from the new theta with half the alpha (a smaller budget: more of the
lists read, tighter bounds), leaving out the chunks scored already (a hashed list: they
can be thousands), at most three times. The top k stays the exhaustive one: every chunk
that is not scored has a bound below an exact k-th score. Queries that settle in the
first plan (at 121k chunks nearly all) run the same statements as before. New parameters
mean a new signature, so revision 0017's function is dropped first; the downgrade
restores it.
"""

from alembic import op

from ragstore.db.revisions import earlier_revision

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_DROP_0017 = """
DROP FUNCTION ragstore_bm25_topk(integer, regconfig, text, integer, float8, float8, integer,
                                 integer, text, float8, integer);
"""

_UPGRADE = r"""
CREATE FUNCTION ragstore_bm25_topk(cid integer, cfg regconfig, terms text, k integer,
                                   k1 float8, b float8, start_n integer DEFAULT 0,
                                   max_n integer DEFAULT 4096, cond text DEFAULT NULL,
                                   alpha float8 DEFAULT 0.5, tail integer DEFAULT 0,
                                   replan_at integer DEFAULT 1024,
                                   replan_rise float8 DEFAULT 1.1)
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
    floor_rest float8; -- the sum of the terms' floors
    plan_theta float8; -- theta when the contenders were planned
    replan boolean;
    plans integer := 0;
    nout integer := greatest(k, coalesce(tail, 0)); -- rows returned
BEGIN
    SELECT * INTO st FROM bm25_collection_stats s WHERE s.collection_id = cid;
    IF NOT FOUND OR st.chunks <= 0 THEN
        RETURN;
    END IF;
    IF st.impact_avgdl IS NULL OR st.impact_k1 IS DISTINCT FROM k1
       OR st.impact_b IS DISTINCT FROM b THEN
        RETURN QUERY SELECT * FROM ragstore_bm25_exhaustive_where(cid, cfg, terms, nout, k1, b,
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
                RETURN QUERY SELECT * FROM ragstore_bm25_exhaustive_where(cid, cfg, terms, nout,
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
            RETURN QUERY SELECT * FROM ragstore_bm25_exhaustive_where(cid, cfg, terms, nout, k1,
                                                                      b, cond);
            RETURN;
        END IF;
        n := least(n * 4, max_n);
    END LOOP;
    IF contenders IS NOT NULL THEN
        RETURN QUERY SELECT r.chunk_id, r.raw
            FROM ragstore_bm25_score(contenders, lexs, ws, k1, b, avgdl) r
            ORDER BY r.raw DESC, r.chunk_id LIMIT nout;
        RETURN;
    END IF;
    SELECT array_agg(r.chunk_id), array_agg(r.raw) INTO sids, sraws
        FROM ragstore_bm25_score(cand[1:2 * k], lexs, ws, k1, b, avgdl) r;
    IF coalesce(cardinality(sids), 0) < k THEN
        RETURN QUERY SELECT * FROM ragstore_bm25_exhaustive_where(cid, cfg, terms, nout, k1,
                                                                  b, cond);
        RETURN;
    END IF;
    theta := (SELECT x FROM unnest(sraws) x ORDER BY x DESC OFFSET k - 1 LIMIT 1);
    rest := (SELECT sum(f) FROM unnest(fls) f);
    IF rest >= theta * 0.95 THEN
        RETURN QUERY SELECT * FROM ragstore_bm25_exhaustive_where(cid, cfg, terms, nout, k1,
                                                                  b, cond);
        RETURN;
    END IF;
    -- plan: the budget, the lists' cuts and the contenders from theta; then score the
    -- contenders best bound first until the next bound is below theta. When theta has
    -- risen replan_rise-fold (a tenth) with replan_at or more contenders still above it,
    -- plan again from the new theta with half the alpha (at most three times): a higher
    -- theta and a smaller budget read more of the lists but pass far fewer chunks, which
    -- is what long tails at a million chunks spend their time scoring (tens of thousands
    -- of contenders)
    floor_rest := rest;
    LOOP
        plan_theta := theta;
        budget := least(floor_rest + (theta - floor_rest) * alpha, theta * 0.999999);
        -- the budget goes to the longest lists of the cheapest terms first: each is left
        -- unread while its whole bound fits; the next is read down to the cut the rest
        -- of the budget allows; the others are read to their floor
        slack := budget - floor_rest;
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
        -- a posting's bound from its stored impact (w * impact * ratio: at least its exact
        -- share), less its term's share of rest; the chunks scored already left out after
        -- the aggregate, on the few that pass (a filter on the scan would test every
        -- posting), through a hashed list (after a new plan they are thousands)
        WITH q AS (SELECT q.term_id, q.w * ratio AS wr, q.cut, q.cb
                   FROM unnest(ids, ws, cuts, cbs) AS q(term_id, w, cut, cb)
                   WHERE q.cut IS NOT NULL),
        c AS MATERIALIZED (
            SELECT p.chunk_id, (sum(p.g) + rest) * 1.000001 AS bound
            FROM q CROSS JOIN LATERAL (
                SELECT x.chunk_id, q.wr * x.impact - q.cb AS g FROM bm25_postings x
                WHERE x.term_id = q.term_id AND x.impact >= q.cut) p
            GROUP BY p.chunk_id HAVING (sum(p.g) + rest) * 1.000001 >= theta)
        SELECT array_agg(c.chunk_id ORDER BY c.bound DESC, c.chunk_id),
               array_agg(c.bound ORDER BY c.bound DESC, c.chunk_id)
        INTO contenders, bounds FROM c
        WHERE c.chunk_id NOT IN (SELECT unnest(sids));
        -- score the contenders best bound first, in growing batches, until the next bound
        -- is below the k-th exact score
        i := 0;
        total := coalesce(cardinality(contenders), 0);
        step := greatest(k, 16);
        replan := false;
        WHILE i < total AND bounds[i + 1] >= theta LOOP
            batch := ragstore_bm25_passing(contenders[i + 1:i + step], cond);
            SELECT sids || coalesce(array_agg(r.chunk_id), '{}'),
                   sraws || coalesce(array_agg(r.raw), '{}')
                INTO sids, sraws
                FROM ragstore_bm25_score(batch, lexs, ws, k1, b, avgdl) r;
            theta := (SELECT x FROM unnest(sraws) x ORDER BY x DESC OFFSET k - 1 LIMIT 1);
            i := i + step;
            step := step * 2;
            IF plans < 3 AND theta >= plan_theta * replan_rise AND total - i >= replan_at
               AND (SELECT count(*) FROM unnest(bounds[i + 1:total]) x WHERE x >= theta)
                   >= replan_at THEN
                replan := true;
                EXIT;
            END IF;
        END LOOP;
        EXIT WHEN NOT replan;
        plans := plans + 1;
        alpha := alpha * 0.5;
        RAISE DEBUG 'ragstore_bm25_topk: plan % from theta % (was %), % of % contenders scored',
            plans + 1, theta, plan_theta, i, total;
    END LOOP;
    -- the exact top k, then the best of the other chunks scored on the way (the tail)
    RETURN QUERY SELECT x.id, x.raw FROM unnest(sids, sraws) x(id, raw)
        ORDER BY x.raw DESC, x.id LIMIT nout;
END $fn$;
"""


def _topk_0017() -> str:
    """Revision 0017's ``ragstore_bm25_topk``, which the downgrade restores."""
    module = earlier_revision("0017_bm25_topk_tail.py")
    return str(module._UPGRADE)


def upgrade() -> None:
    op.execute(_DROP_0017)
    op.execute(_UPGRADE)


def downgrade() -> None:
    op.execute("""
    DROP FUNCTION ragstore_bm25_topk(integer, regconfig, text, integer, float8, float8,
                                     integer, integer, text, float8, integer, integer, float8);
    """)
    op.execute(_topk_0017())
