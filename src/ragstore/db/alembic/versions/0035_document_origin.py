"""Documents say where they came from: ``origin`` is ``file`` (ingested from a path on
disk), ``upload`` (sent over HTTP, or a job's file), ``text`` (``add_texts``, eval
corpora) or ``import`` (another vector store's records).

Revision ID: 0035
Revises: 0034
Create Date: 2026-12-06

``ingest --sync --prune`` removes stored documents under the synced folders that are gone
from disk. An upload's source is a path under the server's ``<data dir>/uploads/`` where
no file is ever written, so it always looks gone: the prune left out that one folder,
which works only when the syncing process has the server's data dir. A sync run with
another data dir (the CLI on the host of a containerised server, a Store of other
settings) deleted every uploaded document under the folder it synced. A sync now looks
only at documents of origin ``file``.

Rows stored before this revision are told apart by what they hold: a source under an
``uploads/<collection>/`` folder (a shadow's: the collection it serves) is an upload
(one whose file really lies under such a folder is then kept by a prune, never wrongly
removed), ``imported`` format an import, a source that is not an absolute path a text;
the rest are files (a text whose id is an absolute path too, as before). The downgrade drops the
column.
"""

from alembic import op

revision = "0035"
down_revision = "0034"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
    ALTER TABLE documents ADD COLUMN origin text NOT NULL DEFAULT 'file'
        CONSTRAINT documents_origin_check CHECK (origin IN ('file', 'upload', 'text', 'import'));
    UPDATE documents d SET origin = 'upload'
        FROM collections c LEFT JOIN collections live ON live.id = c.shadow_of
        WHERE c.id = d.collection_id
        AND strpos(d.source, '/uploads/' || coalesce(live.name, c.name) || '/') > 0;
    UPDATE documents SET origin = 'import' WHERE origin = 'file' AND format = 'imported';
    UPDATE documents SET origin = 'text' WHERE origin = 'file' AND left(source, 1) <> '/';
    """)


def downgrade() -> None:
    op.execute("ALTER TABLE documents DROP COLUMN origin")
