"""A bulk writer may bring each chunk's tsvector, computed beforehand on another connection.

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-01

``to_tsvector`` is most of what writing a chunk costs the server (about 0.2 ms of the 0.3
ms a SciFact abstract takes), and revision 0012's row trigger computes it in the writing
backend, one row after another, while the machine's other cores wait. It is a pure
function of the text and the text search configuration, so a bulk writer (an import)
computes it for the next slice of chunks on a second connection while the first writes
the current one, and sends ``tsv`` and ``tsv_length`` with the rows.

The trigger keeps the values a row brings only when all of these hold: the row is
inserted, the transaction is a bulk write (``ragstore.bulk`` on, revision 0011: only
``documents.begin_bulk`` sets it), ``tsv`` is not null and the row's ``ts_config`` is the
one the trigger would give it (the collection's). Any other insert, and every update of
``text`` or ``ts_config``, computes both here as before, so a writer that sends nothing,
or the wrong configuration, still gets ``to_tsvector(ts_config, text)``.
"""

from alembic import op

revision = "0015"
down_revision = "0013"
branch_labels = None
depends_on = None

_TRIGGER = """
    CREATE OR REPLACE FUNCTION ragstore_chunk_before_write() RETURNS trigger
        LANGUAGE plpgsql AS $$
    DECLARE
        cfg regconfig;
    BEGIN
        IF TG_OP = 'INSERT' THEN
            cfg := coalesce((SELECT (settings->>'ts_config')::regconfig FROM collections
                             WHERE id = NEW.collection_id), NEW.ts_config);
            -- a bulk writer's own tsvector, computed under the collection's configuration
            IF NEW.tsv IS NOT NULL AND NEW.ts_config = cfg
               AND coalesce(current_setting('ragstore.bulk', true), '') = 'on' THEN
                RETURN NEW;
            END IF;
            NEW.ts_config := cfg;
        END IF;
        NEW.tsv := to_tsvector(NEW.ts_config, NEW.text);
        NEW.tsv_length := ragstore_tsv_length(NEW.tsv);
        RETURN NEW;
    END $$;
"""

# revision 0012's function, restored by the downgrade
_TRIGGER_0012 = """
    CREATE OR REPLACE FUNCTION ragstore_chunk_before_write() RETURNS trigger
        LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            NEW.ts_config := coalesce(
                (SELECT (settings->>'ts_config')::regconfig FROM collections
                 WHERE id = NEW.collection_id), NEW.ts_config);
        END IF;
        NEW.tsv := to_tsvector(NEW.ts_config, NEW.text);
        NEW.tsv_length := ragstore_tsv_length(NEW.tsv);
        RETURN NEW;
    END $$;
"""


def upgrade() -> None:
    op.execute(_TRIGGER)


def downgrade() -> None:
    op.execute(_TRIGGER_0012)
