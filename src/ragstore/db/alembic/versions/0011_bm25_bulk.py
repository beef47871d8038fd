"""The bulk write path: BM25 statistics and postings built once, after a large load.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01

Revision 0004's statistics triggers and 0006's postings triggers run once per statement
that writes ``chunks``; for a large first load (and an import) their per-statement work
(upserting every lexeme's df, inserting postings into a growing impact index, trimming
lists as they pass twice ``list_keep``) cost most of the write: about 0.4 ms and 4 ms per
chunk respectively, where the chunk COPY itself takes a few microseconds.

A writer that sets the transaction-local setting ``ragstore.bulk`` to ``on`` makes every
BM25 trigger skip (a ``WHEN`` clause on the statement triggers: nothing runs), and then,
in the same transaction, calls ``ragstore_bm25_bulk_finish(collection)``: it recounts the
collection's chunk count, total length and document frequencies from its chunks in one
grouped statement each, and rewrites its postings with ``ragstore_bm25_rebuild`` at the
final avgdl. Readers never see the chunks without their statistics and postings: both
commit together. The writer holds every source lock of the collection for the whole
transaction (``documents.lock_collection_writes``), so no other writer changes the
collection's chunks meanwhile and a recount from scratch is exact. The row trigger that
fills ``tsv_length`` and ``ts_config`` still runs: those are columns of the chunk.
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# (trigger, event, transition tables, function) of revisions 0004 and 0006
_TRIGGERS = [
    ("chunks_bm25_insert", "INSERT", "NEW TABLE AS bm25_new", "ragstore_bm25_added"),
    ("chunks_bm25_delete", "DELETE", "OLD TABLE AS bm25_old", "ragstore_bm25_removed"),
    (
        "chunks_bm25_update",
        "UPDATE",
        "OLD TABLE AS bm25_old NEW TABLE AS bm25_new",
        "ragstore_bm25_changed",
    ),
    (
        "chunks_bm25_zpostings_insert",
        "INSERT",
        "NEW TABLE AS bm25_new",
        "ragstore_bm25_postings_added",
    ),
    (
        "chunks_bm25_zpostings_delete",
        "DELETE",
        "OLD TABLE AS bm25_old",
        "ragstore_bm25_postings_removed",
    ),
    (
        "chunks_bm25_zpostings_update",
        "UPDATE",
        "OLD TABLE AS bm25_old NEW TABLE AS bm25_new",
        "ragstore_bm25_postings_changed",
    ),
]

_BULK_OFF = "coalesce(current_setting('ragstore.bulk', true), '') <> 'on'"


def _recreate(when: str) -> str:
    out = []
    for name, event, tables, fn in _TRIGGERS:
        out.append(
            f"DROP TRIGGER {name} ON chunks;\n"
            f"CREATE TRIGGER {name} AFTER {event} ON chunks REFERENCING {tables}\n"
            f"    FOR EACH STATEMENT {when} EXECUTE FUNCTION {fn}();"
        )
    return "\n".join(out)


# Revision 0006's rebuild, with ties between equal impacts at a list's cut broken by chunk
# id (``{tie}``), so that the postings kept do not depend on the rows' physical order: a
# bulk load and a rebuild of the same chunks keep the same ones.
_REBUILD = """
    CREATE OR REPLACE FUNCTION ragstore_bm25_rebuild(cid integer) RETURNS bigint
        LANGUAGE plpgsql AS $$
    DECLARE
        written bigint;
        keep integer;
    BEGIN
        SELECT list_keep INTO keep FROM bm25_collection_stats WHERE collection_id = cid
        FOR UPDATE;
        DELETE FROM bm25_postings p USING bm25_terms t
        WHERE t.collection_id = cid AND p.term_id = t.term_id;
        UPDATE bm25_collection_stats SET impact_k1 = NULL, impact_b = NULL, impact_avgdl = NULL
        WHERE collection_id = cid;
        PERFORM ragstore_bm25_impact_stats(ARRAY[cid]);
        CREATE TEMP TABLE ragstore_bm25_all ON COMMIT DROP AS
        SELECT t.term_id, x.impact, n.id AS chunk_id, x.tf, n.tsv_length AS len,
               row_number() OVER (PARTITION BY t.term_id ORDER BY x.impact DESC{tie}) AS rn
        FROM chunks n JOIN bm25_collection_stats s ON s.collection_id = n.collection_id
        CROSS JOIN LATERAL (
            SELECT u.lexeme, greatest(cardinality(u.positions), 1) AS tf,
                   ragstore_bm25_impact(greatest(cardinality(u.positions), 1), n.tsv_length,
                       s.impact_k1, s.impact_b,
                       greatest(s.tokens::float8 / greatest(s.chunks, 1), 1.0)) AS impact
            FROM unnest(n.tsv) u) x
        JOIN bm25_terms t ON t.collection_id = n.collection_id AND t.lexeme = x.lexeme
        WHERE n.collection_id = cid AND n.chunk_type <> 'heading';
        INSERT INTO bm25_postings (term_id, impact, chunk_id, tf, len)
        SELECT term_id, impact, chunk_id, tf, len FROM ragstore_bm25_all
        WHERE rn <= keep ORDER BY term_id, impact DESC;
        GET DIAGNOSTICS written = ROW_COUNT;
        UPDATE bm25_terms t SET stored = a.kept, floor = a.top
        FROM (SELECT term_id, count(*) FILTER (WHERE rn <= keep) AS kept,
                     coalesce(max(impact) FILTER (WHERE rn > keep), 0) AS top
              FROM ragstore_bm25_all GROUP BY term_id) a
        WHERE t.term_id = a.term_id;
        DROP TABLE ragstore_bm25_all;
        RETURN written;
    END $$;
"""


def upgrade() -> None:
    op.execute(_REBUILD.format(tie=", n.id"))
    op.execute(_recreate(f"WHEN ({_BULK_OFF})"))
    op.execute("""
    -- After a bulk write of collection CID (ragstore.bulk on, its sources locked): its
    -- statistics recounted from its chunks, its postings rewritten at the final avgdl.
    -- Returns the postings written.
    CREATE FUNCTION ragstore_bm25_bulk_finish(cid integer) RETURNS bigint
        LANGUAGE plpgsql AS $$
    DECLARE
        v_n bigint;
        v_len bigint;
    BEGIN
        SELECT count(*), coalesce(sum(tsv_length), 0) INTO v_n, v_len FROM chunks
        WHERE collection_id = cid AND chunk_type <> 'heading';
        -- as the triggers leave it: a row once a counted chunk was written, zeros after
        -- the last one is removed
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
        INSERT INTO bm25_terms (collection_id, lexeme, df)
        SELECT cid, l.lexeme, count(*) FROM chunks c,
               unnest(tsvector_to_array(c.tsv)) AS l(lexeme)
        WHERE c.collection_id = cid AND c.chunk_type <> 'heading'
        GROUP BY l.lexeme ORDER BY l.lexeme;
        IF v_n = 0 THEN
            RETURN 0;
        END IF;
        RETURN ragstore_bm25_rebuild(cid);
    END $$;
    """)


def downgrade() -> None:
    op.execute("DROP FUNCTION ragstore_bm25_bulk_finish(integer)")
    op.execute(_REBUILD.format(tie=""))
    op.execute(_recreate(""))
