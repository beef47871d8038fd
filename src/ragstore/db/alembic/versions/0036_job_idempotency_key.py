"""Ingest jobs remember the ``Idempotency-Key`` of the request that queued them.

Revision ID: 0036
Revises: 0035
Create Date: 2026-12-06

An upload (or a text) over RAGSTORE_BACKGROUND_INGEST_BYTES is queued as a job even when
the client did not ask for one; the client, which sends such a request again when it got
no answer, then queued a second job storing the same documents. A request may now carry
an ``Idempotency-Key``: ``idempotency_key`` holds a digest of it with the caller's API
key, unique per collection, and ``request_digest`` one of the files the job holds, so a
request sent again is answered with the job the first one queued (and one that reuses a
key for other files is refused). Jobs queued without the header keep both NULL. The
downgrade drops the index and both columns.
"""

from alembic import op

revision = "0036"
down_revision = "0035"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    ALTER TABLE ingest_jobs ADD COLUMN idempotency_key text, ADD COLUMN request_digest text;
    CREATE UNIQUE INDEX ingest_jobs_idempotency_key_idx ON ingest_jobs (collection, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    """)


def downgrade() -> None:
    op.execute("""
    DROP INDEX ingest_jobs_idempotency_key_idx;
    ALTER TABLE ingest_jobs DROP COLUMN idempotency_key, DROP COLUMN request_digest;
    """)
