"""BM25 top k: phase 1's lists in a function of their own, which native code may replace.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-02

With revision 0023's kernel, ``ragstore_bm25_topk`` took 3.2-3.4 ms at 100k chunks; phase
1's statement (each term's best n postings by impact, their exact shares summed per chunk,
the chunks best first, and whether every list was read to its end) about 0.4 ms of it
under auto_explain (docs/benchmarks.md, "Session of 2026-12-02 14:00-17:00 UTC").

The statement moves, unchanged, into ``ragstore_bm25_lists``; ``ragstore_bm25_topk``
calls ``ragstore_native.bm25_lists`` instead where that function exists (created by
``ragstore.db.native`` beside ``bm25_contenders``): the same array and flag, bit for bit
(the same postings read term by term in array order through bm25_postings_impact_idx, the
same float8 shares summed per chunk in that order, the same order).

The downgrade restores revision 0023's ``ragstore_bm25_topk`` and drops the function (a
native ``bm25_lists`` left behind is never called by that body).
"""

from alembic import op

from ragstore.db.revisions import earlier_revision

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

LIST_ROWS = 50  # revision 0022's estimate, which CREATE OR REPLACE resets

_LISTS = r"""
-- Phase 1 of ragstore_bm25_topk: each term's (array order) n best postings by impact,
-- a posting's exact share w * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avgdl))
-- summed per chunk; CAND the chunks by that sum DESC then chunk_id (NULL when none),
-- ALL_READ whether every term has fewer than n postings (no term read in full is left).
-- ragstore_native.bm25_lists, where present, returns the same bit for bit.
CREATE FUNCTION ragstore_bm25_lists(ids integer[], ws float8[], n integer, k1 float8,
                                    b float8, avgdl float8,
                                    OUT cand bigint[], OUT all_read boolean)
    LANGUAGE plpgsql STABLE AS $fn$
BEGIN
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
END $fn$;
"""

# revision 0023's phase-1 statement in ragstore_bm25_topk (0019's), and what replaces it
_STATEMENT_0023 = """\
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
"""
_STATEMENT = """\
        -- each term's best n postings, exactly scored (revision 0024: the native function
        -- where the embedded server has it, else the SQL one; the same array and flag)
        IF native_lists THEN
            SELECT * INTO cand, all_read FROM ragstore_native.bm25_lists(
                ids, ws, n, k1, b, avgdl);
        ELSE
            SELECT * INTO cand, all_read FROM ragstore_bm25_lists(ids, ws, n, k1, b, avgdl);
        END IF;
"""
_DECLARE_0023 = """\
                                AND p.proname = 'bm25_contenders');
BEGIN
"""
# its own check: a native schema created before this revision has no bm25_lists
_DECLARE = """\
                                AND p.proname = 'bm25_contenders');
    native_lists boolean := EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                                    JOIN pg_catalog.pg_namespace n
                                      ON n.oid = p.pronamespace
                                    WHERE n.nspname = 'ragstore_native'
                                      AND p.proname = 'bm25_lists');
BEGIN
"""

_SET_ROWS = f"ALTER FUNCTION ragstore_bm25_topk ROWS {LIST_ROWS};"


def _topk_0023() -> str:
    """Revision 0023's ``ragstore_bm25_topk``."""
    module = earlier_revision("0023_bm25_contenders.py")
    return str(module._topk())


def _topk() -> str:
    body = _topk_0023()
    for old, new in ((_STATEMENT_0023, _STATEMENT), (_DECLARE_0023, _DECLARE)):
        if body.count(old) != 1:
            raise RuntimeError("revision 0023's ragstore_bm25_topk is not the one 0024 edits")
        body = body.replace(old, new)
    return body


def upgrade() -> None:
    op.execute(_LISTS)
    op.execute(_topk())
    op.execute(_SET_ROWS)


def downgrade() -> None:
    op.execute(_topk_0023())
    op.execute(_SET_ROWS)
    op.execute(
        "DROP FUNCTION ragstore_bm25_lists(integer[], float8[], integer, float8, float8, float8)"
    )
