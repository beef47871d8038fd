"""Full-text search reads a chunk's section path with its text.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02

The model has read each chunk as its section path followed by its text since chunking v2
(``Chunk.embed_text``); BM25 read the text alone, so a question naming the API or option a
section is about (its heading: ``dns.lookup(hostname...)``, ``--unhandled-rejections``)
found the section's chunks only where their text repeated the name. A chunk under a heading
now has the tsvector of its section path, a newline and its text
(``ragstore_chunk_search_text``); a chunk with no heading above it (every one-record
document, every BEIR dataset, every import) and a heading chunk keep the tsvector of their
text alone, unchanged.

On the nodejs-api questions (``ragstore eval-sections``, the same stored chunks, tuning half
q1-20 then q21-40, top-1 / top-3): full-text 6 / 13 and 10 / 15 became 8 / 14 and 9 / 18,
hybrid 9 / 18 and 14 / 17 became 8 / 19 and 15 / 18 (docs/benchmarks.md). The last heading
alone instead of the whole path gave full-text 6 / 14 and hybrid 8 / 17 on q1-20.

The upgrade recomputes the tsvector of every chunk under a heading through the chunk
trigger (``UPDATE ... SET section_path = section_path``; the BM25 statement triggers keep
document frequencies and postings in step) and rebuilds the BM25 postings of the
collections it touched, at their new average length: 2 min 49 s for the 100k bench
collection (102,959 of its 135,752 chunks under a heading) on 2 busy cores, so about half
an hour for a million. The downgrade puts the text-only tsvectors back the same way.
"""

from alembic import op

from ragstore.db.revisions import earlier_revision

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

_SEARCH_TEXT = r"""
CREATE FUNCTION ragstore_chunk_search_text(chunk_type text, section_path text[], body text)
    RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
    SELECT CASE WHEN chunk_type <> 'heading' AND cardinality(section_path) > 0
                THEN array_to_string(section_path, E'\n') || E'\n' || body
                ELSE body END $fn$;
"""

# revision 0015's trigger with what to_tsvector reads changed; a bulk writer's own tsvector
# (computed from the text alone, imports.service._Lexer) is kept only for chunks whose
# search text is their text
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
               AND (NEW.chunk_type = 'heading' OR cardinality(NEW.section_path) = 0)
               AND coalesce(current_setting('ragstore.bulk', true), '') = 'on' THEN
                RETURN NEW;
            END IF;
            NEW.ts_config := cfg;
        END IF;
        NEW.tsv := to_tsvector(NEW.ts_config,
                               ragstore_chunk_search_text(NEW.chunk_type, NEW.section_path,
                                                          NEW.text));
        NEW.tsv_length := ragstore_tsv_length(NEW.tsv);
        RETURN NEW;
    END $$;

    DROP TRIGGER chunks_before_write ON chunks;
    CREATE TRIGGER chunks_before_write
        BEFORE INSERT OR UPDATE OF text, ts_config, section_path, chunk_type ON chunks
        FOR EACH ROW EXECUTE FUNCTION ragstore_chunk_before_write();
"""

# the downgrade's trigger: revision 0015's function, fired on text and ts_config again
_RECREATE_0015 = """
    DROP TRIGGER chunks_before_write ON chunks;
    CREATE TRIGGER chunks_before_write BEFORE INSERT OR UPDATE OF text, ts_config ON chunks
        FOR EACH ROW EXECUTE FUNCTION ragstore_chunk_before_write();
"""


def _trigger_0015() -> str:
    """Revision 0015's ``ragstore_chunk_before_write``, which the downgrade restores."""
    module = earlier_revision("0015_chunk_tsv_from_writer.py")
    return str(module._TRIGGER)


# every chunk under a heading read again by the trigger; then the touched collections'
# postings rewritten at their new average length
_REREAD = """
    CREATE TEMP TABLE ragstore_reread ON COMMIT DROP AS
        SELECT DISTINCT collection_id FROM chunks
        WHERE chunk_type <> 'heading' AND cardinality(section_path) > 0;
    UPDATE chunks SET {column} = {column}
        WHERE chunk_type <> 'heading' AND cardinality(section_path) > 0;
    SELECT ragstore_bm25_rebuild(collection_id) FROM ragstore_reread;
"""


def upgrade() -> None:
    op.execute(_SEARCH_TEXT)
    op.execute(_TRIGGER)
    op.execute(_REREAD.format(column="section_path"))


def downgrade() -> None:
    op.execute(_trigger_0015())
    op.execute(_RECREATE_0015)
    op.execute(_REREAD.format(column="text"))
    op.execute("DROP FUNCTION ragstore_chunk_search_text(text, text[], text)")
