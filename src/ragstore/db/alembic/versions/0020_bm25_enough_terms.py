"""BM25 top k: where the trimmed postings reach theta, score the chunks holding enough terms.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-02

At a million chunks each common term keeps its best 20,000 postings, and for a query of
many common words the floors of those lists alone sum to 95% of the k-th score phase 1
found: no chunk can be ruled out from the stored postings, and the exact list
(full-text search) scored every match, 2-7 s for 18 of 100 SciFact claims
(docs/benchmarks.md, "BM25 at 1M: the long tail"; revision 0019 gave hybrid's
approximate list a way out, not full-text's exact one).

A chunk's score is at most the sum of the bounds (``ubs``: the most a term adds to any
chunk) of the query terms it holds, so a chunk scoring theta or more holds a set of
terms whose bounds add up to theta. ``ragstore_bm25_enough`` writes that condition as a
tsquery (terms by bound, largest first: ``t1 & <the rest need theta - ub1> | <the rest
need theta>``), which the chunks' GIN index answers; ``ragstore_bm25_enough_topk``
scores the chunks it matches, best first. Trying a higher theta first (twice, then 1.4
times the one phase 1 found) keeps the matches few when phase 1's theta is low: a try
ends the search once k chunks score at or above it (every chunk that does holds enough
terms, so it was scored); otherwise theta rises to the k-th score found and the next try
runs. The last try is phase 1's theta, which the chunks phase 1 scored reach: the list is
exact. The condition grows with the terms (a threshold function has no small formula);
past 256 nodes the terms of smallest bound are left out of it and their bounds taken off
theta, a weaker condition that still holds every chunk that can reach theta. A filtered
search adds its filter to the condition (theta is then the k-th score of chunks that pass);
a list with a tail past k (only hybrid's approximate list asks for one) still scores every
match, whose ranks past k are exact.

On four such claims at 1,004,091 chunks: 3.1-4.7 s exhaustive, 41-944 ms this way, same
top 10 (the experiment that led here; the revision's own figures are in
docs/benchmarks.md).
"""

from alembic import op

from ragstore.db.revisions import earlier_revision

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

_ENOUGH = r"""
-- The chunks that may score NEED or more, as a tsquery over their terms: LEXS and their
-- bounds UBS (the most each adds to any chunk's score); NULL when no condition narrows the
-- matches (NEED reached without any term). Past BUDGET nodes the terms of smallest bound
-- are left out, their bounds taken off NEED (a weaker condition, never a stronger one).
CREATE FUNCTION ragstore_bm25_enough_at(lexs text[], ubs float8[], tails float8[], i integer,
                                        need float8, budget integer,
                                        OUT expr text, OUT used integer)
    LANGUAGE plpgsql IMMUTABLE AS $fn$
-- terms i.. (by bound, largest first; tails[i] the sum of their bounds): '' always holds,
-- NULL never does, used -1 when the budget ran out
DECLARE
    a record;
    o record;
    lit text;
    hold text;
BEGIN
    used := 0;
    IF need <= 0 THEN
        expr := '';
        RETURN;
    END IF;
    IF i > cardinality(lexs) OR tails[i] < need THEN
        expr := NULL;
        RETURN;
    END IF;
    IF budget <= 0 THEN
        used := -1;
        RETURN;
    END IF;
    SELECT * INTO a FROM ragstore_bm25_enough_at(lexs, ubs, tails, i + 1, need - ubs[i],
                                                 budget - 1);
    IF a.used < 0 THEN
        used := -1;
        RETURN;
    END IF;
    SELECT * INTO o FROM ragstore_bm25_enough_at(lexs, ubs, tails, i + 1, need,
                                                 budget - 1 - a.used);
    IF o.used < 0 THEN
        used := -1;
        RETURN;
    END IF;
    -- a quoted lexeme of tsquery's input syntax: backslashes and quotes doubled
    lit := '''' || replace(replace(lexs[i], '\', '\\'), '''', '''''') || '''';
    hold := CASE WHEN a.expr = '' THEN lit WHEN a.expr IS NULL THEN NULL
                 ELSE lit || ' & (' || a.expr || ')' END;
    expr := CASE WHEN o.expr IS NULL THEN hold WHEN hold IS NULL THEN o.expr
                 ELSE '(' || hold || ') | (' || o.expr || ')' END;
    used := 1 + a.used + o.used;
END $fn$;

CREATE FUNCTION ragstore_bm25_enough(lexs text[], ubs float8[], need float8,
                                     budget integer DEFAULT 256)
    RETURNS tsquery LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    sl text[];
    su float8[];
    tails float8[];
    m integer;
    r record;
    dropped float8 := 0;
BEGIN
    SELECT array_agg(x.l ORDER BY x.u DESC, x.l COLLATE "C"),
           array_agg(x.u ORDER BY x.u DESC, x.l COLLATE "C")
        INTO sl, su FROM unnest(lexs, ubs) x(l, u);
    m := coalesce(cardinality(sl), 0);
    WHILE m > 0 AND need - dropped > 0 LOOP
        tails := ARRAY(SELECT sum(y.x) OVER (ORDER BY y.o DESC)
                       FROM unnest(su[1:m]) WITH ORDINALITY y(x, o) ORDER BY y.o);
        SELECT * INTO r FROM ragstore_bm25_enough_at(sl[1:m], su[1:m], tails, 1,
                                                     need - dropped, budget);
        IF r.used >= 0 THEN
            RETURN CASE WHEN r.expr IS NULL OR r.expr = '' THEN NULL ELSE r.expr::tsquery END;
        END IF;
        -- too many nodes: the term of smallest bound leaves the condition, and any chunk
        -- may hold it
        dropped := dropped + su[m];
        m := m - 1;
    END LOOP;
    RETURN NULL;
END $fn$;

-- The exact top k when phase 1 found THETA and the trimmed postings' floors could reach
-- it: the chunks holding enough terms for a try at or above theta, scored exactly (see the
-- revision's docstring).
CREATE FUNCTION ragstore_bm25_enough_topk(cid integer, cfg regconfig, terms text,
                                          lexs text[], ws float8[], ubs float8[],
                                          theta float8, k integer, k1 float8, b float8,
                                          avgdl float8, cond text DEFAULT NULL)
    RETURNS TABLE (chunk_id bigint, raw float8) LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    tries float8[] := ARRAY[theta * 2, theta * 1.4, theta];
    t float8;
    q tsquery;
    most float8 := (SELECT sum(u) FROM unnest(ubs) u);
    batch bigint[];
    sids bigint[] := '{}';
    sraws float8[] := '{}';
    kth float8;
BEGIN
    FOREACH t IN ARRAY tries LOOP
        t := greatest(t, theta);
        CONTINUE WHEN t > most; -- no chunk can score that much
        q := ragstore_bm25_enough(lexs, ubs, t);
        EXIT WHEN q IS NULL;
        -- planned with the query's own tsquery (the GIN index, its matches estimated);
        -- a filter (COND, SQL over c and d) keeps the chunks that pass it: theta is then
        -- the k-th score of passing chunks
        EXECUTE format('SELECT ARRAY(SELECT c.id FROM chunks c'
                       ' JOIN documents d ON d.id = c.document_id WHERE c.collection_id = $1'
                       ' AND c.chunk_type <> ''heading'' AND c.tsv @@ $2 AND (%s)'
                       ' EXCEPT SELECT unnest($3::bigint[]))', coalesce(cond, 'true'))
            INTO batch USING cid, q, sids;
        SELECT sids || coalesce(array_agg(r.chunk_id), '{}'),
               sraws || coalesce(array_agg(r.raw), '{}')
            INTO sids, sraws
            FROM ragstore_bm25_score(batch, lexs, ws, k1, b, avgdl) r;
        -- every chunk scoring t or more has been scored: with k of them the list is exact
        kth := (SELECT x FROM unnest(sraws) x ORDER BY x DESC OFFSET k - 1 LIMIT 1);
        IF kth >= t THEN
            RETURN QUERY SELECT x.id, x.raw FROM unnest(sids, sraws) x(id, raw)
                ORDER BY x.raw DESC, x.id LIMIT k;
            RETURN;
        END IF;
        theta := greatest(theta, coalesce(kth, theta));
    END LOOP;
    -- no condition narrows the matches (or rounding kept the last try short): every match
    RETURN QUERY SELECT * FROM ragstore_bm25_exhaustive_where(cid, cfg, terms, k, k1, b, cond);
END $fn$;
"""

_UPGRADE = r"""
CREATE OR REPLACE FUNCTION ragstore_bm25_topk(cid integer, cfg regconfig, terms text, k integer,
                                   k1 float8, b float8, start_n integer DEFAULT 0,
                                   max_n integer DEFAULT 4096, cond text DEFAULT NULL,
                                   alpha float8 DEFAULT 0.5, tail integer DEFAULT 0,
                                   replan_at integer DEFAULT 1024,
                                   replan_rise float8 DEFAULT 1.1,
                                   floors_exact boolean DEFAULT true)
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
        IF floors_exact AND nout <= k THEN
            -- the trimmed postings alone could reach theta: score the chunks whose terms
            -- can add up to it (revision 0020), not every match (a tail, which only the
            -- approximate list asks for, still scores every match: exact ranks past k)
            RAISE DEBUG '%', format('ragstore_bm25_topk: the floors (%s) reach theta (%s): '
                                    'chunks holding enough terms', rest, theta);
            RETURN QUERY SELECT * FROM ragstore_bm25_enough_topk(cid, cfg, terms, lexs, ws, ubs,
                                                                 theta, k, k1, b, avgdl, cond);
            RETURN;
        END IF;
        IF floors_exact THEN
            RETURN QUERY SELECT * FROM ragstore_bm25_exhaustive_where(cid, cfg, terms, nout,
                                                                      k1, b, cond);
            RETURN;
        END IF;
        -- the trimmed postings alone could reach theta: the exact list scores every match
        -- (seconds at 1M); the approximate one plans over the stored postings as if
        -- nothing were trimmed (each term's best 20,000 and more), scores still exact
        RAISE DEBUG 'ragstore_bm25_topk: the floors (%) reach theta (%): stored postings only',
            rest, theta;
        fls := array_fill(0::float8, ARRAY[m]);
        rest := 0;
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


def _topk_0019() -> str:
    """Revision 0019's ``ragstore_bm25_topk``, which the downgrade restores."""
    module = earlier_revision("0019_bm25_topk_floors.py")
    return str(module._UPGRADE).replace(
        "CREATE FUNCTION ragstore_bm25_topk(", "CREATE OR REPLACE FUNCTION ragstore_bm25_topk(", 1
    )


def upgrade() -> None:
    op.execute(_ENOUGH)
    op.execute(_UPGRADE)


def downgrade() -> None:
    op.execute(_topk_0019())
    op.execute("""
    DROP FUNCTION ragstore_bm25_enough_topk(integer, regconfig, text, text[], float8[],
                                            float8[], float8, integer, float8, float8, float8,
                                            text);
    DROP FUNCTION ragstore_bm25_enough(text[], float8[], float8, integer);
    DROP FUNCTION ragstore_bm25_enough_at(text[], float8[], float8[], integer, float8, integer);
    """)
