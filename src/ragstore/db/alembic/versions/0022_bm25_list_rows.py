"""The BM25 list functions tell the planner they return a short list.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02

A full-text or hybrid search statement joins its BM25 list (``ragstore_bm25_topk``, or
``ragstore_bm25_exhaustive``/``_where`` for exact and phrase searches) to ``chunks`` and
``documents`` for the hits' rows. PostgreSQL plans a set-returning function at 1,000 rows
unless told otherwise; on a collection of some thousands of chunks that made a hash join
over a sequential scan of every chunk (texts included) and every document look cheaper than
a few dozen index probes. On the SciFact corpus as the peers bench loads it (9,632 chunks)
that scan cost 15-30 ms of a full-text search whose list took 3-4 ms: full-text p50
18.9-19.6 ms and hybrid 14.4-15.6 ms against 4.0-4.6 and 4.1-4.3 ms with the estimate
below (the two alternating on the same collection; docs/benchmarks.md, "Session of
2026-12-02 11:34"). Larger collections were
planned with index probes already.

The functions return ``k`` rows (a search's depth, 10-100; hybrid's list 30), so they are
declared at 50 rows. ``CREATE OR REPLACE FUNCTION`` resets the estimate to 1,000: a
revision that redefines one of them must say ``ROWS 50`` again
(tests/test_search_topk.py checks the catalogue).
"""

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

LIST_FUNCTIONS = (
    "ragstore_bm25_topk",
    "ragstore_bm25_exhaustive",
    "ragstore_bm25_exhaustive_where",
    "ragstore_bm25_enough_topk",
)
LIST_ROWS = 50

_SET_ROWS = """
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.proname = ANY(ARRAY[{names}]) AND p.proretset LOOP
        EXECUTE format('ALTER FUNCTION %s ROWS {rows}', f);
    END LOOP;
END $$;
"""


def _set_rows(rows: int) -> None:
    op.execute(_SET_ROWS.format(names=", ".join(f"'{n}'" for n in LIST_FUNCTIONS), rows=rows))


def upgrade() -> None:
    _set_rows(LIST_ROWS)


def downgrade() -> None:
    _set_rows(1000)  # PostgreSQL's default for a set-returning function
