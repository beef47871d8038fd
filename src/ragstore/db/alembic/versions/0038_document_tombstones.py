"""Document deletes leave a tombstone, so a queued job does not bring the document back.

Revision ID: 0038
Revises: 0037
Create Date: 2026-12-06

A job's write of a document is ``superseded`` when the stored row was written after the
job was accepted: a later acknowledged write wins. A later delete left no row to compare,
so a document uploaded in the background (202) and deleted before the worker ran came
back once it did. ``document_tombstones`` holds, per collection and source, when the
document was last deleted (``clock_timestamp()`` under the delete's write locks); the
job's write, under the same locks, leaves a document deleted after its acceptance. A
direct write of the source removes its tombstone; tombstones no unfinished job can need
(deleted before the oldest one's acceptance) are pruned by each delete. Rows go with
their collection. The downgrade drops the table (what it held only guards jobs queued
at the time).
"""

from alembic import op

revision = "0038"
down_revision = "0037"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE TABLE document_tombstones (
        collection_id integer NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        source        text NOT NULL,
        deleted_at    timestamptz NOT NULL,
        PRIMARY KEY (collection_id, source)
    );
    """)


def downgrade() -> None:
    op.execute("DROP TABLE document_tombstones")
