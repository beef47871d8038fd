"""The bulk write path: BM25 statistics and postings built once, after a large load.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01

Revision 0004's statistics triggers and 0006's postings triggers run once per statement
that writes ``chunks``; for a large first load (and an import) their per-statement work
(upserting every lexeme's df, inserting postings into a growing impact index, trimming
lists as they pass twice ``list_keep``) cost most of the write: about 0.4 ms and 4.6 ms per
chunk respectively on the shared 2-core machine, against about 0.5 ms for the chunk COPY.

A writer that sets the transaction-local setting ``ragstore.bulk`` to ``on`` makes every
BM25 trigger skip (a ``WHEN`` clause on the statement triggers: nothing runs), and then,
in the same transaction, calls ``ragstore_bm25_bulk_finish(collection)``: it recounts the
collection's chunk count and total length, reads every counted chunk's lexemes once into
a temporary table, counts document frequencies from it and writes the postings at the
final avgdl (``ragstore_bm25_write_postings``, which ``ragstore_bm25_rebuild`` now uses
too). Readers never see the chunks without their statistics and postings: both commit
together. The writer holds every source lock of the collection for the whole transaction
(``documents.begin_bulk``), so no other writer changes the collection's chunks meanwhile
and a recount from scratch is exact. The row trigger that fills ``tsv_length`` and
``ts_config`` still runs: those are columns of the chunk.
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


# Revision 0006's rebuild (restored by the downgrade).
_REBUILD_0006 = """
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
               row_number() OVER (PARTITION BY t.term_id ORDER BY x.impact DESC) AS rn
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


# Postings of collection CID from the temporary table ragstore_bm25_lex (lexeme, chunk_id,
# tf, len: one row per distinct lexeme of each counted chunk), at the collection's current
# avgdl and k1/b, for terms whose df is already counted (exactly: a rare term's stored
# count is set to its df). A rare term (df within list_keep) keeps all its postings,
# unranked; only the common terms' postings are ranked, ties at a list's cut broken by
# chunk id so that the postings kept do not depend on the rows' physical order. Same
# impacts, floors and stored counts as revision 0006's rebuild; a term's row is rewritten
# only where they change. When bm25_postings holds nothing else (a first load into a new
# store), its two indexes are dropped and built again after the insert (about twice as
# fast; other transactions wait for the commit, never see a part).
_WRITE_POSTINGS = """
    CREATE FUNCTION ragstore_bm25_write_postings(cid integer) RETURNS bigint
        LANGUAGE plpgsql AS $$
    DECLARE
        written bigint;
        more bigint;
        keep integer;
        st record;
        avgdl float8;
        alone boolean;
    BEGIN
        UPDATE bm25_collection_stats SET impact_k1 = NULL, impact_b = NULL, impact_avgdl = NULL
        WHERE collection_id = cid;
        PERFORM ragstore_bm25_impact_stats(ARRAY[cid]);
        SELECT * INTO st FROM bm25_collection_stats WHERE collection_id = cid;
        IF NOT FOUND THEN
            RETURN 0;
        END IF;
        keep := st.list_keep;
        avgdl := greatest(st.tokens::float8 / greatest(st.chunks, 1), 1.0);
        ANALYZE ragstore_bm25_lex;
        alone := NOT EXISTS (SELECT 1 FROM bm25_postings);
        IF alone THEN
            DROP INDEX bm25_postings_impact_idx;
            DROP INDEX bm25_postings_chunk_idx;
        END IF;
        INSERT INTO bm25_postings (term_id, impact, chunk_id, tf, len)
        SELECT t.term_id, ragstore_bm25_impact(x.tf, x.len, st.impact_k1, st.impact_b, avgdl),
               x.chunk_id, x.tf, x.len
        FROM ragstore_bm25_lex x
        JOIN bm25_terms t ON t.collection_id = cid AND t.lexeme = x.lexeme
        WHERE t.df <= keep ORDER BY 1, 2 DESC;
        GET DIAGNOSTICS written = ROW_COUNT;
        CREATE TEMP TABLE ragstore_bm25_ranked ON COMMIT DROP AS
        SELECT term_id, impact, chunk_id, tf, len,
               row_number() OVER (PARTITION BY term_id ORDER BY impact DESC, chunk_id) AS rn
        FROM (SELECT t.term_id, ragstore_bm25_impact(x.tf, x.len, st.impact_k1, st.impact_b,
                                                     avgdl) AS impact, x.chunk_id, x.tf, x.len
              FROM ragstore_bm25_lex x
              JOIN bm25_terms t ON t.collection_id = cid AND t.lexeme = x.lexeme
              WHERE t.df > keep) c;
        INSERT INTO bm25_postings (term_id, impact, chunk_id, tf, len)
        SELECT term_id, impact, chunk_id, tf, len FROM ragstore_bm25_ranked
        WHERE rn <= keep ORDER BY term_id, impact DESC;
        GET DIAGNOSTICS more = ROW_COUNT;
        IF alone THEN
            CREATE INDEX bm25_postings_impact_idx ON bm25_postings (term_id, impact DESC)
                INCLUDE (chunk_id, tf, len);
            CREATE INDEX bm25_postings_chunk_idx ON bm25_postings (chunk_id);
        END IF;
        -- a rare term's list is all its df postings, nothing trimmed
        UPDATE bm25_terms SET stored = df, floor = 0
        WHERE collection_id = cid AND df <= keep AND (stored <> df OR floor <> 0);
        UPDATE bm25_terms t SET stored = a.kept, floor = a.top
        FROM (SELECT term_id, (count(*) FILTER (WHERE rn <= keep))::integer AS kept,
                     coalesce(max(impact) FILTER (WHERE rn > keep), 0)::real AS top
              FROM ragstore_bm25_ranked GROUP BY term_id) a
        WHERE t.term_id = a.term_id AND (t.stored, t.floor) IS DISTINCT FROM (a.kept, a.top);
        DROP TABLE ragstore_bm25_ranked;
        RETURN written + more;
    END $$;
"""

# The lexemes of collection CID's counted chunks, once (see _WRITE_POSTINGS).
_LEX = """
        CREATE TEMP TABLE ragstore_bm25_lex ON COMMIT DROP AS
        SELECT u.lexeme, n.id AS chunk_id, greatest(cardinality(u.positions), 1) AS tf,
               n.tsv_length AS len
        FROM chunks n CROSS JOIN LATERAL unnest(n.tsv) u
        WHERE n.collection_id = cid AND n.chunk_type <> 'heading';
"""

# Rewrite one collection's postings at its current avgdl and k1/b (revision 0006's
# function, faster). Returns the postings written.
_REBUILD = f"""
    CREATE OR REPLACE FUNCTION ragstore_bm25_rebuild(cid integer) RETURNS bigint
        LANGUAGE plpgsql AS $$
    DECLARE
        written bigint;
    BEGIN
        PERFORM 1 FROM bm25_collection_stats WHERE collection_id = cid FOR UPDATE;
        DELETE FROM bm25_postings p USING bm25_terms t
        WHERE t.collection_id = cid AND p.term_id = t.term_id;
        {_LEX}
        written := ragstore_bm25_write_postings(cid);
        DROP TABLE ragstore_bm25_lex;
        RETURN written;
    END $$;
"""

# After a bulk write of collection CID (ragstore.bulk on, its sources locked): its
# statistics recounted from its chunks (as the triggers leave them: a row once a counted
# chunk was written, zeros after the last one is removed), its postings rewritten at the
# final avgdl. Returns the postings written.
_BULK_FINISH = f"""
    CREATE FUNCTION ragstore_bm25_bulk_finish(cid integer) RETURNS bigint
        LANGUAGE plpgsql AS $$
    DECLARE
        v_n bigint;
        v_len bigint;
        written bigint;
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
        {_LEX}
        -- a rare term's list is all its postings: stored = df from the start
        INSERT INTO bm25_terms (collection_id, lexeme, df, stored)
        SELECT cid, x.lexeme, count(*),
               CASE WHEN count(*) <= (SELECT list_keep FROM bm25_collection_stats
                                      WHERE collection_id = cid) THEN count(*) ELSE 0 END
        FROM ragstore_bm25_lex x GROUP BY x.lexeme ORDER BY x.lexeme;
        written := ragstore_bm25_write_postings(cid);
        DROP TABLE ragstore_bm25_lex;
        RETURN written;
    END $$;
"""


def upgrade() -> None:
    op.execute(_WRITE_POSTINGS)
    op.execute(_REBUILD)
    op.execute(_recreate(f"WHEN ({_BULK_OFF})"))
    op.execute(_BULK_FINISH)


def downgrade() -> None:
    op.execute("DROP FUNCTION ragstore_bm25_bulk_finish(integer)")
    op.execute(_REBUILD_0006)
    op.execute("DROP FUNCTION ragstore_bm25_write_postings(integer)")
    op.execute(_recreate(""))
