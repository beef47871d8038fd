"""BM25 top k: phase 2's contenders in a function of their own, which native code may replace.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-02

At 100k chunks hybrid search spent 4.6-5.0 ms of its 7.7 ms p50 in ``ragstore_bm25_topk``,
3.2 ms of that in one statement: phase 2's contenders (the postings at or above each
term's cut, summed per chunk into a bound, the chunks whose bound reaches theta, best
first). Its index reads took under 1 ms; the hash aggregate over some 11k chunks, the
two sorts of the ~2.7k kept (one per ordered ``array_agg``) and the arrays took the rest
(auto_explain over 60 SciFact claims; docs/benchmarks.md, "Session of 2026-12-02
14:00-17:00 UTC").

The statement moves, unchanged in what it returns, into ``ragstore_bm25_contenders``
(sorted once: both arrays aggregate one ordered subquery). ``ragstore_bm25_topk`` calls
``ragstore_native.bm25_contenders`` instead where that function exists: the same
arrays, bit for bit, from a C function that ragstore compiles and creates on the embedded
server only (``ragstore.db.native``: same postings read term by term in array order, the
same float sums per chunk, the same order). The exact scoring (1.4-1.8 ms of the list)
goes the same way: ``ragstore_native.bm25_score`` where it exists, else revision 0009's
``ragstore_bm25_score``, the same scores bit for bit (rows in another order, which no step
after depends on). The schema is outside ``public``, so backups leave it out, and an
external server, which never has it, runs this revision's SQL.

The downgrade restores revision 0022's ``ragstore_bm25_topk`` and drops the function and
the native schema.
"""

from alembic import op

from ragstore.db.revisions import earlier_revision

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

LIST_ROWS = 50  # revision 0022's estimate, which CREATE OR REPLACE resets

_CONTENDERS = r"""
-- Phase 2 of ragstore_bm25_topk: each term's postings with impact at or above its cut
-- (terms in array order; a NULL cut is not read), a posting's share wr * impact - cb
-- (wr = w * ratio, cb the most its unread postings add), summed per chunk; the chunks
-- whose (sum + rest) * 1.000001 reaches theta and are not in SIDS, bound DESC then
-- chunk_id (NULL arrays when none). ragstore_native.bm25_contenders, where present,
-- returns the same arrays bit for bit.
CREATE FUNCTION ragstore_bm25_contenders(ids integer[], ws float8[], cuts float8[],
                                         cbs float8[], ratio float8, rest float8,
                                         theta float8, sids bigint[],
                                         OUT contenders bigint[], OUT bounds float8[])
    LANGUAGE plpgsql STABLE AS $fn$
BEGIN
    -- the chunks scored already left out after the aggregate, on the few that pass (a
    -- filter on the scan would test every posting), through a hashed list (after a new
    -- plan they are thousands); one sort feeds both arrays
    WITH q AS (SELECT q.term_id, q.w * ratio AS wr, q.cut, q.cb
               FROM unnest(ids, ws, cuts, cbs) AS q(term_id, w, cut, cb)
               WHERE q.cut IS NOT NULL),
    c AS MATERIALIZED (
        SELECT p.chunk_id, (sum(p.g) + rest) * 1.000001 AS bound
        FROM q CROSS JOIN LATERAL (
            SELECT x.chunk_id, q.wr * x.impact - q.cb AS g FROM bm25_postings x
            WHERE x.term_id = q.term_id AND x.impact >= q.cut) p
        GROUP BY p.chunk_id HAVING (sum(p.g) + rest) * 1.000001 >= theta)
    SELECT array_agg(s.chunk_id), array_agg(s.bound) INTO contenders, bounds
    FROM (SELECT c.chunk_id, c.bound FROM c
          WHERE c.chunk_id NOT IN (SELECT unnest(sids))
          ORDER BY c.bound DESC, c.chunk_id) s;
END $fn$;
"""

# revision 0020's statement in ragstore_bm25_topk, and what replaces it
_STATEMENT_0020 = """\
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
"""
_STATEMENT = """\
        -- a posting's bound from its stored impact (w * impact * ratio: at least its exact
        -- share), less its term's share of rest (revision 0023: the native function where
        -- the embedded server has it, else the SQL one; the same arrays)
        IF native THEN
            SELECT * INTO contenders, bounds FROM ragstore_native.bm25_contenders(
                ids, ws, cuts, cbs, ratio, rest, theta, sids);
        ELSE
            SELECT * INTO contenders, bounds FROM ragstore_bm25_contenders(
                ids, ws, cuts, cbs, ratio, rest, theta, sids);
        END IF;
"""
_DECLARE_0020 = """\
    nout integer := greatest(k, coalesce(tail, 0)); -- rows returned
BEGIN
"""
# the statement naming ragstore_native is planned at its first run only, so on a server
# without that schema it is never parsed
_DECLARE = """\
    nout integer := greatest(k, coalesce(tail, 0)); -- rows returned
    native boolean := EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                              JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                              WHERE n.nspname = 'ragstore_native'
                                AND p.proname = 'bm25_contenders');
BEGIN
"""

# the exact scores: ragstore_native.bm25_score (revision 0009's ragstore_bm25_score in C,
# the same scores bit for bit) where it exists; the rows come in another order, which no
# step after depends on (each sorts, or takes them as a set)
_CONTENDERS_SCORED_0020 = """\
    IF contenders IS NOT NULL THEN
        RETURN QUERY SELECT r.chunk_id, r.raw
            FROM ragstore_bm25_score(contenders, lexs, ws, k1, b, avgdl) r
            ORDER BY r.raw DESC, r.chunk_id LIMIT nout;
        RETURN;
    END IF;
    SELECT array_agg(r.chunk_id), array_agg(r.raw) INTO sids, sraws
        FROM ragstore_bm25_score(cand[1:2 * k], lexs, ws, k1, b, avgdl) r;
"""
_CONTENDERS_SCORED = """\
    IF contenders IS NOT NULL AND native THEN
        RETURN QUERY SELECT r.chunk_id, r.raw
            FROM ragstore_native.bm25_score(contenders, lexs, ws, k1, b, avgdl) r
            ORDER BY r.raw DESC, r.chunk_id LIMIT nout;
        RETURN;
    ELSIF contenders IS NOT NULL THEN
        RETURN QUERY SELECT r.chunk_id, r.raw
            FROM ragstore_bm25_score(contenders, lexs, ws, k1, b, avgdl) r
            ORDER BY r.raw DESC, r.chunk_id LIMIT nout;
        RETURN;
    END IF;
    IF native THEN
        SELECT array_agg(r.chunk_id), array_agg(r.raw) INTO sids, sraws
            FROM ragstore_native.bm25_score(cand[1:2 * k], lexs, ws, k1, b, avgdl) r;
    ELSE
        SELECT array_agg(r.chunk_id), array_agg(r.raw) INTO sids, sraws
            FROM ragstore_bm25_score(cand[1:2 * k], lexs, ws, k1, b, avgdl) r;
    END IF;
"""
_BATCH_SCORED_0020 = """\
            SELECT sids || coalesce(array_agg(r.chunk_id), '{}'),
                   sraws || coalesce(array_agg(r.raw), '{}')
                INTO sids, sraws
                FROM ragstore_bm25_score(batch, lexs, ws, k1, b, avgdl) r;
"""
_BATCH_SCORED = """\
            IF native THEN
                SELECT sids || coalesce(array_agg(r.chunk_id), '{}'),
                       sraws || coalesce(array_agg(r.raw), '{}')
                    INTO sids, sraws
                    FROM ragstore_native.bm25_score(batch, lexs, ws, k1, b, avgdl) r;
            ELSE
                SELECT sids || coalesce(array_agg(r.chunk_id), '{}'),
                       sraws || coalesce(array_agg(r.raw), '{}')
                    INTO sids, sraws
                    FROM ragstore_bm25_score(batch, lexs, ws, k1, b, avgdl) r;
            END IF;
"""

_SET_ROWS = f"ALTER FUNCTION ragstore_bm25_topk ROWS {LIST_ROWS};"


def _topk_0020() -> str:
    """Revision 0020's ``ragstore_bm25_topk`` (0021 and 0022 kept its body)."""
    module = earlier_revision("0020_bm25_enough_terms.py")
    return str(module._UPGRADE)


def _topk() -> str:
    body = _topk_0020()
    for old, new in (
        (_STATEMENT_0020, _STATEMENT),
        (_DECLARE_0020, _DECLARE),
        (_CONTENDERS_SCORED_0020, _CONTENDERS_SCORED),
        (_BATCH_SCORED_0020, _BATCH_SCORED),
    ):
        if body.count(old) != 1:
            raise RuntimeError("revision 0020's ragstore_bm25_topk is not the one 0023 edits")
        body = body.replace(old, new)
    return body


def upgrade() -> None:
    op.execute(_CONTENDERS)
    op.execute(_topk())
    op.execute(_SET_ROWS)


def downgrade() -> None:
    op.execute(_topk_0020())
    op.execute(_SET_ROWS)
    op.execute("""
    DROP FUNCTION ragstore_bm25_contenders(integer[], float8[], float8[], float8[], float8,
                                           float8, float8, bigint[]);
    DROP SCHEMA IF EXISTS ragstore_native CASCADE;
    """)
