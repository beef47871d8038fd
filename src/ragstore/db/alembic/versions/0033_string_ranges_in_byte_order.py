"""Documents' sources, and the indexed string fields, in byte order (``COLLATE "C"``).

Revision ID: 0033
Revises: 0032
Create Date: 2026-12-05

A filter's string range (``{"source": {"$gte": "docs/api/", "$lt": "docs/api0"}}``, a
folder's files) compared in the database's collation. Under a language collation
(``en_US.UTF-8``, many servers' default, which an external database made before
docs/operations/install.md asked for ``LC_COLLATE 'C'`` still has) punctuation is skipped
at first and case folded: that range left out ``docs/api/a.md`` and let ``docs/Api/`` and
``docs/api.0`` in. Filters now compare strings with ``COLLATE "C"`` (search/filters.py).

An index serves a comparison only in its own collation, and a column's index is in the
column's collation (``default``, even where the default is C), so the indexes such ranges
read are rebuilt in C here, or a folder's range and an indexed string field's range would
read every document of the collection:

- ``documents.source`` becomes a ``COLLATE "C"`` column (its unique
  ``(collection_id, source)`` index is rebuilt with it; equality is the same in every
  deterministic collation, so no two sources that were distinct become equal);
- each string field index (``ragstore_field_string_*``, db/field_indexes.py, labelled with
  its path) is built again over the same expression in C, under the same name and label.

The downgrade builds both back in the database's collation.
"""

from alembic import op

revision = "0033"
down_revision = "0032"
branch_labels = None
depends_on = None

# each labelled string field index of this schema, dropped and built again over the same
# expression (db/field_indexes.py: typed_value, partial on chunks) with COLLATE {collate}
_REBUILD = """
DO $$
DECLARE
    r record;
    meta jsonb;
    keys text;
    expr text;
BEGIN
    FOR r IN
        SELECT ic.relname AS idx, c.relname AS tbl, obj_description(ic.oid, 'pg_class') AS note
          FROM pg_index i
          JOIN pg_class ic ON ic.oid = i.indexrelid
          JOIN pg_class c ON c.oid = i.indrelid
         WHERE ic.relnamespace = current_schema()::regnamespace
           AND ic.relname LIKE 'ragstore\\_field\\_string\\_%'
           AND c.relname IN ('documents', 'chunks')
         ORDER BY ic.relname
    LOOP
        BEGIN
            meta := r.note::jsonb;
        EXCEPTION WHEN others THEN
            CONTINUE;  -- no label of ours: search does not use it, `db check` reports it
        END;
        IF jsonb_typeof(meta -> 'field') <> 'array' OR meta ->> 'kind' <> 'string' THEN
            CONTINUE;
        END IF;
        keys := quote_literal(ARRAY(SELECT jsonb_array_elements_text(meta -> 'field'))::text);
        expr := format(
            '(CASE WHEN jsonb_typeof((%1$I.metadata #> %2$s::text[])) = ''string'''
            ' THEN (%1$I.metadata #> %2$s::text[]) #>> ''{}'' END)', r.tbl, keys);
        EXECUTE format('DROP INDEX %I', r.idx);
        EXECUTE format('CREATE INDEX %I ON %I (%s COLLATE {collate})%s', r.idx, r.tbl, expr,
                       CASE WHEN r.tbl = 'chunks' THEN format(' WHERE %s IS NOT NULL', expr)
                            ELSE '' END);
        EXECUTE format('COMMENT ON INDEX %I IS %L', r.idx, r.note);
    END LOOP;
END $$;
"""


def upgrade() -> None:
    op.execute('ALTER TABLE documents ALTER COLUMN source TYPE text COLLATE "C"')
    op.execute(_REBUILD.replace("{collate}", '"C"'))


def downgrade() -> None:
    op.execute('ALTER TABLE documents ALTER COLUMN source TYPE text COLLATE "default"')
    op.execute(_REBUILD.replace("{collate}", '"default"'))
