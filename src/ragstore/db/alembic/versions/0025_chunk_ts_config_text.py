"""A chunk's text search configuration stored by name, so that pg_upgrade can carry the database.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-03

``chunks.ts_config`` was a ``regconfig``: the oid of a row of ``pg_ts_config``. pg_upgrade
refuses every table with a column of a ``reg*`` type that holds such an oid (regconfig,
regproc, regoper ...: "Your installation contains one of the reg* data types in user
tables"), because the new cluster's catalog numbers its rows afresh, so a database with
ragstore's schema could not move to a new PostgreSQL major version in place, as managed
services (RDS, Cloud SQL) and ``pg_upgradecluster`` do. The column now holds the
configuration's name as ``regconfig`` prints it (``english``), read back through
``::regconfig`` where a tsvector is computed: the same configuration, looked up by name.

The chunk trigger (revision 0021's) is the same but for the casts; it compares a bulk
writer's configuration with the collection's as ``regconfig`` values, so any spelling of
the same configuration matches. The upgrade rewrites ``chunks`` once (the column's type
changes; no trigger fires: every tsvector stays as it is), about as long as a ``VACUUM
FULL`` of the table: ``ragstore db upgrade`` of the 100k bench collection (135,752 chunks)
took 9.5 s on 2 cores, server start included, and searches right after it ran as fast as
before it (docs/benchmarks.md, "Revision 0025 on the 100k collection"). The downgrade
turns the names back into ``regconfig``. ``pg_upgrade --check`` of an embedded data
directory at this revision (its native functions dropped first) against a fresh ``initdb``
reports "Clusters are compatible"; at revision 0024 it failed on ``chunks.ts_config``.
"""

from alembic import op

from ragstore.db.revisions import earlier_revision

revision = "0025"
down_revision = "0024"
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
                             WHERE id = NEW.collection_id), NEW.ts_config::regconfig);
            -- a bulk writer's own tsvector, computed under the collection's configuration
            IF NEW.tsv IS NOT NULL AND NEW.ts_config::regconfig = cfg
               AND (NEW.chunk_type = 'heading' OR cardinality(NEW.section_path) = 0)
               AND coalesce(current_setting('ragstore.bulk', true), '') = 'on' THEN
                NEW.ts_config := cfg::text;
                RETURN NEW;
            END IF;
            NEW.ts_config := cfg::text;
        END IF;
        NEW.tsv := to_tsvector(NEW.ts_config::regconfig,
                               ragstore_chunk_search_text(NEW.chunk_type, NEW.section_path,
                                                          NEW.text));
        NEW.tsv_length := ragstore_tsv_length(NEW.tsv);
        RETURN NEW;
    END $$;
"""

_CREATE_TRIGGER = """
    CREATE TRIGGER chunks_before_write
        BEFORE INSERT OR UPDATE OF text, ts_config, section_path, chunk_type ON chunks
        FOR EACH ROW EXECUTE FUNCTION ragstore_chunk_before_write();
"""


def _trigger_0021() -> str:
    """Revision 0021's ``ragstore_chunk_before_write`` and trigger, which the downgrade
    restores."""
    module = earlier_revision("0021_bm25_reads_section_path.py")
    return str(module._TRIGGER)


def _retype(kind: str) -> None:
    """``chunks.ts_config`` as ``kind``, its values cast, default english. A column named
    in a trigger's UPDATE OF list cannot change type under it: the trigger goes first."""
    op.execute("DROP TRIGGER chunks_before_write ON chunks")
    op.execute(f"""
    ALTER TABLE chunks ALTER COLUMN ts_config DROP DEFAULT,
        ALTER COLUMN ts_config TYPE {kind} USING ts_config::{kind},
        ALTER COLUMN ts_config SET DEFAULT 'english';
    """)


def upgrade() -> None:
    _retype("text")
    op.execute(_TRIGGER)
    op.execute(_CREATE_TRIGGER)


def downgrade() -> None:
    _retype("regconfig")
    # revision 0021's function; its script drops the trigger before creating it again
    op.execute(_CREATE_TRIGGER)
    op.execute(_trigger_0021())
