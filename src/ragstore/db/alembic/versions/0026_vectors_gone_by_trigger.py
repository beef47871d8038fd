"""A chunk's vectors removed with it by a statement trigger on ``chunks``, not by foreign keys.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-03

Every space table (``emb_<id>``) had ``chunk_id REFERENCES chunks(id) ON DELETE CASCADE``.
A foreign key lives partly on the table it references: its cascade and check triggers
are on ``chunks``. So creating a space table took SHARE ROW EXCLUSIVE on ``chunks`` and
dropping one ACCESS EXCLUSIVE: creating a collection waited, with no timeout, for every
transaction writing chunks (a large first load or import of another collection holds
``chunks`` until it ends, minutes), and deleting a collection or pruning a space queued
for ``chunks`` with every search of every collection behind it (which is why revision
0025's code gave that drop a 3 s limit and a 409). A bulk load's swap of its staged table
needed the same lock on ``chunks`` to add the key.

The cascade becomes one ``AFTER DELETE`` statement trigger on ``chunks`` that deletes,
from each space table of the collections the statement touched, the vectors of the
chunks it removed (a document's chunks deleted by cascade included: that delete is a
statement of its own). Creating, swapping or dropping a space table now locks only that
table. The insert side of the key, that a vector's chunk exists, is kept by the writers:
ingest writes a chunk's vectors in the transaction that writes the chunk, and a backfill
(``spaces.insert_vectors``) reads the chunks it writes vectors for ``FOR KEY SHARE``, the
row lock the foreign key's check took, so a concurrent delete of one of them waits for
the backfill and then removes its vector.

A bulk load's swap of its staged table (revision 0025's code) renamed the space's empty
table to ``ragstore_old_emb_<id>`` rather than drop it, since dropping it dropped its key's
triggers on ``chunks``; with no key the swap drops it, and the upgrade drops those left
(empty by construction). It drops the keys of every space table and of staged tables
(``ragstore_load_emb_*``). The downgrade deletes vectors whose chunk is gone and adds the
keys back to the space tables.
"""

from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    CREATE FUNCTION ragstore_chunk_vectors_gone() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        space_table text;
    BEGIN
        -- a table dropped earlier in the transaction (a collection's, before its rows go)
        -- has nothing left to delete
        FOR space_table IN
            SELECT s.table_name FROM embedding_spaces s
             WHERE s.collection_id IN (SELECT DISTINCT collection_id FROM gone)
               AND to_regclass(quote_ident(s.table_name)) IS NOT NULL
             ORDER BY s.id
        LOOP
            EXECUTE format('DELETE FROM %I e USING gone g WHERE e.chunk_id = g.id',
                           space_table);
        END LOOP;
        RETURN NULL;
    END $$;
    CREATE TRIGGER chunks_vectors_gone AFTER DELETE ON chunks
        REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
        EXECUTE FUNCTION ragstore_chunk_vectors_gone();
    DO $$
    DECLARE
        key record;
    BEGIN
        FOR key IN
            SELECT c.conrelid::regclass AS tbl, c.conname FROM pg_constraint c
              JOIN pg_class r ON r.oid = c.conrelid
             WHERE c.contype = 'f' AND c.confrelid = 'chunks'::regclass
               AND (r.relname LIKE 'emb\\_%' OR r.relname LIKE 'ragstore\\_load\\_emb\\_%')
        LOOP
            EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', key.tbl, key.conname);
        END LOOP;
        FOR key IN
            SELECT c.oid::regclass AS tbl FROM pg_class c
             WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace
               AND c.relname LIKE 'ragstore\\_old\\_emb\\_%'
        LOOP
            EXECUTE format('DROP TABLE %s', key.tbl);
        END LOOP;
    END $$;
    """)


def downgrade() -> None:
    op.execute("""
    DROP TRIGGER chunks_vectors_gone ON chunks;
    DROP FUNCTION ragstore_chunk_vectors_gone();
    DO $$
    DECLARE
        space_table text;
    BEGIN
        FOR space_table IN
            SELECT table_name FROM embedding_spaces
             WHERE to_regclass(quote_ident(table_name)) IS NOT NULL
        LOOP
            EXECUTE format('DELETE FROM %I e WHERE NOT EXISTS'
                           ' (SELECT 1 FROM chunks c WHERE c.id = e.chunk_id)', space_table);
            EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I FOREIGN KEY (chunk_id)'
                           ' REFERENCES chunks(id) ON DELETE CASCADE',
                           space_table, space_table || '_chunk_id_fkey');
        END LOOP;
    END $$;
    """)
