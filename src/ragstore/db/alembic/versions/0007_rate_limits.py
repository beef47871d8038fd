"""Shared rate-limit buckets: one token bucket per API key, for every server and worker.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

Counting requests in each process's memory let N uvicorn workers (or N servers) allow N
times a key's limit. One row per key, updated in a single upsert per request, makes the
limit hold across all of them.
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE rate_limit_buckets (
        bucket text PRIMARY KEY,
        tokens double precision NOT NULL,
        refreshed_at timestamptz NOT NULL DEFAULT clock_timestamp()
    )""")


def downgrade() -> None:
    op.execute("DROP TABLE rate_limit_buckets")
