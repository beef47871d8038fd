"""A small bulk load defers its BM25 postings until the collection reaches postings_from.

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-01

The postings (revision 0006) are what make full-text top k fast at scale; below a few
thousand chunks scoring every match (``ragstore_bm25_exhaustive``) is about as fast as the
pruned top k is at 100k chunks, and writing them costs about as much as writing the chunks
(185k postings, 0.65 s of server CPU for 2,000 SciFact abstracts). Like Qdrant's
``indexing_threshold``, a bulk load (``ragstore_bm25_bulk_finish``: a large first load, an
import into an empty space) of fewer counted chunks than the collection's
``bm25_collection_stats.postings_from`` (default ``POSTINGS_FROM``) writes its statistics
and terms but no postings, and marks the collection ``postings_deferred``.

Nothing changes for search: with no impacts written (``impact_avgdl`` NULL)
``ragstore_bm25_topk`` already answers from ``ragstore_bm25_exhaustive``, the same list
with the same scores. The postings triggers skip a deferred collection; the write that
brings it to ``postings_from`` chunks builds all its postings in its own transaction
(``ragstore_bm25_rebuild``, which clears the mark), so a collection is never seen with
part of its postings. Collections written row by row from the start, and every collection
that has postings now, keep them as before. The downgrade builds the deferred ones.
"""

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0015"
down_revision = "0013"
branch_labels = None
depends_on = None

POSTINGS_FROM = 2500


def _revision(name: str) -> ModuleType:
    """An earlier revision's module: its SQL builds the old bodies the downgrade restores."""
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(f"ragstore_revision_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# A statement that wrote chunks of a deferred collection up to its postings_from: all its
# postings at once (in sorted order of collection id: concurrent writers lock alike).
_DUE = """
        FOR due IN SELECT s.collection_id FROM bm25_collection_stats s
                   WHERE s.postings_deferred AND s.chunks >= s.postings_from
                     AND s.collection_id IN (SELECT collection_id FROM bm25_new)
                   ORDER BY 1
        LOOP
            PERFORM ragstore_bm25_rebuild(due);
        END LOOP;
"""

# The collections of these rows that keep postings (not deferred).
_KEPT = (
    "JOIN bm25_collection_stats ks ON ks.collection_id = bm25_new.collection_id"
    " AND NOT ks.postings_deferred"
)


def _added(deferral: bool) -> str:
    insert = _revision("0006_bm25_postings.py")._insert
    return f"""
    CREATE OR REPLACE FUNCTION ragstore_bm25_postings_added() RETURNS trigger
        LANGUAGE plpgsql AS $$
    DECLARE
        over integer[];
        due integer;
    BEGIN
        PERFORM ragstore_bm25_impact_stats(array_agg(DISTINCT bm25_new.collection_id))
        FROM bm25_new {_KEPT if deferral else ""}
        WHERE chunk_type <> 'heading' HAVING count(*) > 0;
        {insert("bm25_new", "AND NOT s.postings_deferred" if deferral else "")}
        {_DUE if deferral else ""}
        RETURN NULL;
    END $$;
    """


def _changed(deferral: bool) -> str:
    insert = _revision("0006_bm25_postings.py")._insert
    extra = "AND n.id = ANY(changed)" + (" AND NOT s.postings_deferred" if deferral else "")
    return f"""
    CREATE OR REPLACE FUNCTION ragstore_bm25_postings_changed() RETURNS trigger
        LANGUAGE plpgsql AS $$
    DECLARE
        changed bigint[];
        over integer[];
        due integer;
    BEGIN
        SELECT array_agg(o.id) INTO changed FROM bm25_old o JOIN bm25_new n ON n.id = o.id
        WHERE o.tsv IS DISTINCT FROM n.tsv OR o.chunk_type IS DISTINCT FROM n.chunk_type
           OR o.collection_id IS DISTINCT FROM n.collection_id
           OR o.tsv_length IS DISTINCT FROM n.tsv_length;
        IF changed IS NULL THEN
            RETURN NULL;
        END IF;
        DELETE FROM bm25_postings WHERE chunk_id = ANY(changed);
        PERFORM ragstore_bm25_impact_stats(array_agg(DISTINCT bm25_new.collection_id))
        FROM bm25_new {_KEPT if deferral else ""}
        WHERE chunk_type <> 'heading' AND id = ANY(changed) HAVING count(*) > 0;
        {insert("bm25_new", extra)}
        {_DUE if deferral else ""}
        RETURN NULL;
    END $$;
    """


# An explicit rebuild always writes the postings (and ends a deferral).
_REBUILD = """
    CREATE OR REPLACE FUNCTION ragstore_bm25_rebuild(cid integer) RETURNS bigint
        LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE bm25_collection_stats SET postings_deferred = false WHERE collection_id = cid;
        DELETE FROM bm25_postings p USING bm25_terms t
        WHERE t.collection_id = cid AND p.term_id = t.term_id;
        RETURN ragstore_bm25_write_postings(cid);
    END $$;
"""

# Revision 0013's bulk finish, deferring the postings of a collection below postings_from.
_BULK_FINISH = """
    CREATE OR REPLACE FUNCTION ragstore_bm25_bulk_finish(cid integer) RETURNS bigint
        LANGUAGE plpgsql AS $$
    DECLARE
        v_n bigint;
        v_len bigint;
        st record;
    BEGIN
        SELECT count(*), coalesce(sum(tsv_length), 0) INTO v_n, v_len FROM chunks
        WHERE collection_id = cid AND chunk_type <> 'heading';
        IF v_n > 0 THEN
            INSERT INTO bm25_collection_stats AS s (collection_id, chunks, tokens)
            VALUES (cid, v_n, v_len)
            ON CONFLICT (collection_id) DO UPDATE SET chunks = v_n, tokens = v_len;
        ELSE
            UPDATE bm25_collection_stats SET chunks = 0, tokens = 0 WHERE collection_id = cid;
        END IF;
        DELETE FROM bm25_postings p USING bm25_terms t
        WHERE t.collection_id = cid AND p.term_id = t.term_id;
        DELETE FROM bm25_terms WHERE collection_id = cid;
        IF v_n = 0 THEN
            RETURN 0;
        END IF;
        SELECT list_keep, postings_from INTO st FROM bm25_collection_stats
        WHERE collection_id = cid;
        -- a rare term's list is all its postings: stored = df from the start
        INSERT INTO bm25_terms (collection_id, lexeme, df, stored)
        SELECT cid, u.lexeme, count(*),
               CASE WHEN count(*) <= st.list_keep THEN count(*) ELSE 0 END
        FROM chunks n CROSS JOIN LATERAL unnest(tsvector_to_array(n.tsv)) AS u(lexeme)
        WHERE n.collection_id = cid AND n.chunk_type <> 'heading'
        GROUP BY u.lexeme;
        IF v_n < st.postings_from THEN
            -- no impacts written: top k is the exhaustive list until the postings come
            UPDATE bm25_collection_stats
            SET postings_deferred = true, impact_k1 = NULL, impact_b = NULL,
                impact_avgdl = NULL
            WHERE collection_id = cid;
            RETURN 0;
        END IF;
        UPDATE bm25_collection_stats SET postings_deferred = false WHERE collection_id = cid;
        RETURN ragstore_bm25_write_postings(cid);
    END $$;
"""


def upgrade() -> None:
    op.execute(
        "ALTER TABLE bm25_collection_stats"
        f" ADD COLUMN postings_from integer NOT NULL DEFAULT {POSTINGS_FROM}"
        " CHECK (postings_from >= 0),"
        " ADD COLUMN postings_deferred boolean NOT NULL DEFAULT false"
    )
    op.execute(_REBUILD)
    op.execute(_BULK_FINISH)
    op.execute(_added(True))
    op.execute(_changed(True))


def downgrade() -> None:
    prev = _revision("0013_bm25_build_direct.py")
    op.execute(
        "SELECT ragstore_bm25_rebuild(collection_id) FROM bm25_collection_stats"
        " WHERE postings_deferred ORDER BY collection_id"
    )
    op.execute(_added(False))
    op.execute(_changed(False))
    op.execute(prev.BULK_FINISH)
    op.execute(prev.REBUILD)
    op.execute(
        "ALTER TABLE bm25_collection_stats DROP COLUMN postings_from, DROP COLUMN postings_deferred"
    )
