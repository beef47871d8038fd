"""Chunks keep the context the model read before their text (``chunks.context``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

What a model embeds for a chunk is its section path as the chunker cut it (each part to 200
characters, top parts dropped to fit a quarter of the token budget), a newline, then the
text. A model migration used to rebuild that context with a copy of the rule, which had
drifted; now the chunker's own context is stored and the backfill embeds exactly
``context || E'\\n' || text`` (or the text alone when the context is empty).

Existing rows are filled without a tokenizer: the chunk's ``content_hash`` is the SHA-256 of
what was embedded, so the context is the suffix of the (cut) section path whose hash
matches; a chunk that matches none (a heading, an imported record) was embedded with no
context and keeps ``''``.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE chunks ADD COLUMN context text NOT NULL DEFAULT ''")
    op.execute(r"""
    UPDATE chunks c SET context = m.ctx
    FROM (
        SELECT k.id, (
            SELECT s.ctx FROM (
                SELECT i, array_to_string(ARRAY(
                    SELECT left(u.p, 200) FROM unnest(k.section_path[i:]) WITH ORDINALITY
                        AS u(p, o) ORDER BY u.o), ' > ') AS ctx
                FROM generate_series(1, cardinality(k.section_path)) AS i
            ) s
            WHERE s.ctx <> '' AND encode(sha256(convert_to(s.ctx || E'\n' || k.text, 'UTF8')),
                                         'hex') = k.content_hash
            ORDER BY s.i LIMIT 1) AS ctx
        FROM chunks k
        WHERE cardinality(k.section_path) > 0 AND k.chunk_type <> 'heading'
    ) m
    WHERE m.id = c.id AND m.ctx IS NOT NULL
    """)


def downgrade() -> None:
    op.execute("ALTER TABLE chunks DROP COLUMN context")
