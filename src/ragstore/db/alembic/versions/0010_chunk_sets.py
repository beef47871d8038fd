"""Chunk sets: documents keep their parsed blocks; a collection may have shadow rows.

Revision ID: 0010
Revises: 0007
Create Date: 2026-12-01

A model migration to a model that reads fewer tokens must cut the documents again, and
the stored chunks cannot be cut again exactly (a chunk may merge several blocks, and the
text between them is gone). So ``documents.parsed`` keeps what the chunker was given: the
parser's blocks and the metadata laid over every chunk, zlib-compressed JSON
(:mod:`ragstore.chunking.recipe`); NULL for rows written before this revision and for
documents that were never chunked (imports, texts sent with their vectors).

The re-cut chunks live in a *shadow* collection row (``collections.shadow_of`` = the
collection it serves, name ``~<id>``): its own documents, chunks, BM25 statistics and
embedding space, invisible to every lookup by name and every listing. The switch swaps the
two rows' names in one transaction; rollback swaps them back, so the old model comes back
with its own chunks, untouched. Deleting a collection deletes its shadows (cascade).
"""

from alembic import op

revision = "0010"
down_revision = "0007"
branch_labels = None
depends_on = None

NAME = r"'^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'"


def upgrade() -> None:
    op.execute(f"""
    ALTER TABLE documents ADD COLUMN parsed bytea;
    ALTER TABLE collections
        ADD COLUMN shadow_of integer REFERENCES collections(id) ON DELETE CASCADE;
    CREATE INDEX collections_shadow_of_idx ON collections (shadow_of)
        WHERE shadow_of IS NOT NULL;
    ALTER TABLE collections DROP CONSTRAINT collections_name_check;
    ALTER TABLE collections ADD CONSTRAINT collections_name_check CHECK (
        CASE WHEN shadow_of IS NULL THEN name ~ {NAME} ELSE name ~ '^~[0-9]+$' END);
    """)


def downgrade() -> None:
    # shadows go with their documents, chunks (BM25 statistics follow by trigger), spaces
    # and vector tables: after a downgrade a rolled-back-to model is no longer available
    op.execute(f"""
    DO $$
    DECLARE t text;
    BEGIN
        FOR t IN SELECT s.table_name FROM embedding_spaces s
                 JOIN collections c ON c.id = s.collection_id
                 WHERE c.shadow_of IS NOT NULL LOOP
            EXECUTE format('DROP TABLE IF EXISTS %I', t);
        END LOOP;
    END $$;
    DELETE FROM collections WHERE shadow_of IS NOT NULL;
    ALTER TABLE collections DROP CONSTRAINT collections_name_check;
    ALTER TABLE collections ADD CONSTRAINT collections_name_check CHECK (name ~ {NAME});
    DROP INDEX collections_shadow_of_idx;
    ALTER TABLE collections DROP COLUMN shadow_of;
    ALTER TABLE documents DROP COLUMN parsed;
    """)
