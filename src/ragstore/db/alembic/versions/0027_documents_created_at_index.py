"""An index on each collection's documents by ``created_at``, for filters on when they came.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-04

A filter's range on ``created_at`` (``{"created_at": {"$gte": "2026-11-01"}}``: what came
in since a date) gave search no candidates, so a selective one made both search lists
read deep for the few chunks that pass. With ``(collection_id, created_at)`` indexed its
documents are found directly, and their chunks through the index on ``document_id``
(search/filters.py). A document row is written once per file, so a load pays one more
btree entry a file, not a chunk.
"""

from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS documents_created_at_idx"
        " ON documents (collection_id, created_at)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS documents_created_at_idx")
