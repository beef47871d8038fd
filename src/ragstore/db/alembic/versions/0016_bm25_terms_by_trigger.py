"""A collection's BM25 terms removed with it by a statement trigger, not a foreign key.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01

``bm25_terms.collection_id`` referenced ``collections`` (revision 0004) only so that a
collection's terms went with it (``ON DELETE CASCADE``). The price was a foreign-key check
per term row written: a lookup and a row lock on ``collections`` for each of the 22k
terms of 2,000 SciFact abstracts, 70-100 ms of the 200 ms that writing them takes in an
import's BM25 build (docs/benchmarks.md), and as much for every new term an ingest adds.

Every writer of ``bm25_terms`` (the statistics triggers, ``ragstore_bm25_bulk_finish``,
``ragstore_bm25_rebuild``) takes the collection id from chunks it has just written or
read, whose own foreign key holds the collection row (``FOR KEY SHARE``) until they
commit, so a term of a missing collection cannot be written, and a concurrent delete of
the collection waits for them as before. The cascade becomes an ``AFTER DELETE`` statement
trigger on ``collections`` that deletes the terms of every collection the statement
removed (shadows deleted by cascade included: their delete is a statement of its own).
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE FUNCTION ragstore_bm25_terms_gone() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM bm25_terms t USING gone g WHERE t.collection_id = g.id;
        RETURN NULL;
    END $$;
    CREATE TRIGGER collections_bm25_terms_gone AFTER DELETE ON collections
        REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
        EXECUTE FUNCTION ragstore_bm25_terms_gone();
    ALTER TABLE bm25_terms DROP CONSTRAINT bm25_terms_collection_id_fkey;
    """)


def downgrade() -> None:
    op.execute("""
    DROP TRIGGER collections_bm25_terms_gone ON collections;
    DROP FUNCTION ragstore_bm25_terms_gone();
    DELETE FROM bm25_terms t WHERE NOT EXISTS
        (SELECT 1 FROM collections c WHERE c.id = t.collection_id);
    ALTER TABLE bm25_terms ADD CONSTRAINT bm25_terms_collection_id_fkey
        FOREIGN KEY (collection_id) REFERENCES collections(id) ON DELETE CASCADE;
    """)
