"""Two first BM25 builds no longer deadlock; a collection's impacts follow its avgdl.

Revision ID: 0039
Revises: 0038
Create Date: 2026-12-07

**Two first builds.** ``ragstore_bm25_bulk_finish`` and ``ragstore_bm25_rebuild``
(revision 0029) drop the postings' indexes when the table held no postings at all
(``alone``), and build them after their insert. Looking takes ACCESS SHARE on
``bm25_postings``, held to commit, and ``DROP INDEX`` needs ACCESS EXCLUSIVE: two first
bulk loads into two collections of a new store (or a load and ``db check --repair``'s
recount) each saw ``alone``, each waited for the other's look to end, and PostgreSQL
rolled one back (40P01) after all its loading and embedding. Now a caller that sees
``alone`` takes ACCESS EXCLUSIVE on the table with ``NOWAIT`` before it drops anything;
when anyone else holds any lock on it (the other load, which has looked, or a search) the
lock is refused at once and the build writes through the live indexes (slower, nothing
waits). NOWAIT never queues, so it cannot close a wait cycle; of two builds that both
looked, neither can take it (each holds the ACCESS SHARE the other's request conflicts
with), and a build that takes it before the other looked makes the other's look wait
until it commits, and then see its postings (not ``alone``). A table that got postings
committed between the look and the lock is looked at again under the lock, and the lock
given back (the block rolled back) when it did.

**Loose impacts.** Each posting's ``impact`` is the tf part of BM25 at the collection's
avgdl when it was written, and ``impact_avgdl`` is the smallest such avgdl: the top-k
bound multiplies stored impacts by ``avgdl_now / impact_avgdl`` (revision 0006). Only
the bulk paths and a rebuild reset it, so a collection grown chunk by chunk from a short
first chunk kept its bounds loose for good (a one-word first chunk: ``impact_avgdl`` 1,
avgdl 45.8 after 1,460 CISI documents, and top-k four times slower than at the avgdl of
the last write, with the same lists). After an insert or update of chunks (a statement
trigger after the postings triggers, and ``ragstore_bm25_bulk_add``), a collection whose
avgdl is now above ``LOOSE`` times its ``impact_avgdl`` has its postings rewritten
(``ragstore_bm25_rebuild``) when it has at most ``TIGHTEN_MAX_CHUNKS`` chunks: the bound
stays within a factor of two. Each rewrite needs the avgdl to have doubled since the last
one, so its tokens (what a rewrite costs) are at most about twice those written since: a
collection grown from one word to avgdl 46 is rewritten about five times, the largest at
the size where the avgdl last doubled (for CISI, within its first dozen documents). The
insert that crosses the line pays for the whole rewrite, though: measured on a busy
2-core machine, 0.9 s at 1,460 CISI chunks (111k tokens), 5.1 s at 5,840, 17.9 s at
20,440. ``TIGHTEN_MAX_CHUNKS`` (2,000) keeps that pause near a second; a larger
collection whose avgdl doubles keeps the looser bound (results exact, top-k slower) until
a bulk load rewrites it. The check itself is one look at the statistics row per statement.

The downgrade restores revision 0029's two functions, revision 0032's
``ragstore_bm25_bulk_add``, and drops the trigger and its functions.
"""

from alembic import op

from ragstore.db.revisions import earlier_revision

revision = "0039"
down_revision = "0038"
branch_labels = None
depends_on = None

LOOSE = 2  # avgdl over impact_avgdl past which the collection's impacts are rewritten
TIGHTEN_MAX_CHUNKS = 2000  # largest collection rewritten by an ordinary insert

_LOOK = "        alone := NOT EXISTS (SELECT 1 FROM bm25_postings);\n"
_LOCK = """        IF alone THEN
            -- the indexes are dropped under this lock only, never waited for: two first
            -- builds that both looked hold what the other's request conflicts with
            BEGIN
                LOCK TABLE bm25_postings IN ACCESS EXCLUSIVE MODE NOWAIT;
                IF EXISTS (SELECT 1 FROM bm25_postings) THEN
                    RAISE lock_not_available;  -- postings committed since the look
                END IF;
            EXCEPTION WHEN lock_not_available THEN
                alone := false;  -- the block rolled back: the lock is given back
            END;
        END IF;
"""

TIGHTEN = f"""
    CREATE FUNCTION ragstore_bm25_tighten(cids integer[]) RETURNS void
        LANGUAGE plpgsql AS $$
    DECLARE
        c integer;
    BEGIN
        FOR c IN SELECT s.collection_id FROM bm25_collection_stats s
                 WHERE s.collection_id = ANY(cids) AND s.chunks <= {TIGHTEN_MAX_CHUNKS}
                   AND greatest(s.tokens::float8 / greatest(s.chunks, 1), 1.0)
                       > {LOOSE} * s.impact_avgdl
                 ORDER BY s.collection_id
        LOOP
            PERFORM ragstore_bm25_rebuild(c);
        END LOOP;
    END $$;

    CREATE FUNCTION ragstore_bm25_impacts_written() RETURNS trigger
        LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM ragstore_bm25_tighten(array_agg(DISTINCT collection_id)) FROM bm25_new;
        RETURN NULL;
    END $$;
"""

_BULK_OFF = "coalesce(current_setting('ragstore.bulk', true), '') <> 'on'"
# named after revision 0006's chunks_bm25_zpostings_*: they fire after them
TRIGGERS = f"""
    CREATE TRIGGER chunks_bm25_zzimpacts_insert AFTER INSERT ON chunks
        REFERENCING NEW TABLE AS bm25_new
        FOR EACH STATEMENT WHEN ({_BULK_OFF}) EXECUTE FUNCTION ragstore_bm25_impacts_written();
    CREATE TRIGGER chunks_bm25_zzimpacts_update AFTER UPDATE ON chunks
        REFERENCING NEW TABLE AS bm25_new
        FOR EACH STATEMENT WHEN ({_BULK_OFF}) EXECUTE FUNCTION ragstore_bm25_impacts_written();
"""


def _replaced(text: str, old: str, new: str) -> str:
    """``text`` with ``old`` (present exactly once) replaced."""
    if text.count(old) != 1:
        raise RuntimeError(f"revision 0039: expected one {old!r} in revision 0029's function")
    return text.replace(old, new)


def _bulk_add(insert: str) -> str:
    return str(earlier_revision("0030_bm25_bulk_add.py").function("CREATE OR REPLACE", insert))


def upgrade() -> None:
    _, rebuild, finish = earlier_revision("0029_bm25_keep_indexes_of_a_live_store.py")._functions()
    op.execute(_replaced(rebuild, _LOOK, _LOOK + _LOCK))
    op.execute(_replaced(finish, _LOOK, _LOOK + _LOCK))
    op.execute(TIGHTEN)
    op.execute(TRIGGERS)
    insert = str(earlier_revision("0032_bm25_bulk_add_terms_joined_once.py").INSERT)
    op.execute(_bulk_add(insert + "        PERFORM ragstore_bm25_tighten(ARRAY[cid]);\n"))


def downgrade() -> None:
    op.execute(
        "DROP TRIGGER chunks_bm25_zzimpacts_insert ON chunks;"
        " DROP TRIGGER chunks_bm25_zzimpacts_update ON chunks;"
        " DROP FUNCTION ragstore_bm25_impacts_written();"
    )
    insert = str(earlier_revision("0032_bm25_bulk_add_terms_joined_once.py").INSERT)
    op.execute(_bulk_add(insert))
    op.execute("DROP FUNCTION ragstore_bm25_tighten(integer[])")
    _, rebuild, finish = earlier_revision("0029_bm25_keep_indexes_of_a_live_store.py")._functions()
    op.execute(rebuild)
    op.execute(finish)
