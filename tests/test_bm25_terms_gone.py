"""A collection's BM25 terms go with it (revision 0016: a statement trigger on
``collections`` instead of a foreign key), also those of a shadow deleted by cascade,
and nobody else's."""

from __future__ import annotations

from pathlib import Path

from ragstore.db import catalog, repository
from ragstore.imports.files import JsonlSource
from ragstore.imports.service import ImportOptions, plan_import, run_import
from ragstore.runtime import Runtime
from tests.imports.helpers import vectors, write_jsonl

TEXTS = ["Cells divide quickly", "Mice and men", "Dogs were barking", "Proteins fold", "Rain"]


def _import(rt: Runtime, tmp: Path, name: str) -> int:
    ids = [f"{name}-{i}" for i in range(len(TEXTS))]
    path = write_jsonl(tmp / f"{name}.jsonl", ids, vectors(len(ids), 8, 1), TEXTS)
    opts = ImportOptions(
        collection=name, model="gone@v1", dimension=8, backup=False, verify_queries=3
    )
    run_import(rt, plan_import(rt, JsonlSource(path), opts), opts)
    with rt.db.connection() as conn:
        return repository.get_collection(conn, name).id


def _terms(rt: Runtime, cid: int) -> int:
    with rt.db.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM bm25_terms WHERE collection_id = %s", (cid,)
        ).fetchone()
    return int(row[0]) if row else -1


def test_deleting_a_collection_deletes_its_terms_and_its_shadows(
    rt: Runtime, tmp_path: Path
) -> None:
    gone, kept = _import(rt, tmp_path, "gone"), _import(rt, tmp_path, "kept")
    before = _terms(rt, kept)
    assert _terms(rt, gone) > 5 and before > 5
    with rt.db.connection() as conn:
        shadow = conn.execute(
            "INSERT INTO collections (name, settings, shadow_of) VALUES ('~1', '{}', %s)"
            " RETURNING id",
            (gone,),
        ).fetchone()
        assert shadow is not None
        conn.execute(
            "INSERT INTO bm25_terms (collection_id, lexeme, df) VALUES (%s, 'shadowy', 1)",
            (shadow[0],),
        )
    assert _terms(rt, int(shadow[0])) == 1
    with rt.db.connection() as conn:
        catalog.delete_collection(conn, repository.get_collection(conn, "gone"))
    assert _terms(rt, gone) == 0
    assert _terms(rt, int(shadow[0])) == 0
    assert _terms(rt, kept) == before


def _bm25_rows(rt: Runtime, cid: int) -> tuple[object, ...]:
    """Everything BM25 keeps of a collection: its statistics, terms and postings."""
    with rt.db.connection() as conn:
        stats = conn.execute(
            "SELECT chunks, tokens FROM bm25_collection_stats WHERE collection_id = %s", (cid,)
        ).fetchall()
        terms = conn.execute(
            "SELECT lexeme, df, term_id, stored, floor FROM bm25_terms WHERE collection_id = %s"
            " ORDER BY lexeme",
            (cid,),
        ).fetchall()
        postings = conn.execute(
            "SELECT p.term_id, p.chunk_id, p.impact, p.tf, p.len FROM bm25_postings p"
            " JOIN bm25_terms t ON t.term_id = p.term_id WHERE t.collection_id = %s"
            " ORDER BY 1, 2",
            (cid,),
        ).fetchall()
    return stats, terms, postings


def test_deleting_a_collection_takes_its_postings_set_wise_and_leaves_the_rest_exact(
    rt: Runtime, tmp_path: Path
) -> None:
    """The delete removes the collection's postings and terms itself and turns the chunk
    triggers off while its rows go (``documents.bm25_dropped``): nothing of it may be
    left, nothing of another collection touched, and the triggers on again after."""
    from ragstore.integrity import check

    gone, kept = _import(rt, tmp_path, "setwise-gone"), _import(rt, tmp_path, "setwise-kept")
    before = _bm25_rows(rt, kept)
    assert before[0] and before[1] and before[2]
    assert _bm25_rows(rt, gone)[2], "the collection to delete has postings"
    with rt.db.connection() as conn:
        catalog.delete_collection(conn, repository.get_collection(conn, "setwise-gone"))
        # the same transaction goes on with the BM25 triggers on
        row = conn.execute("SELECT current_setting('ragstore.bulk', true)").fetchone()
        assert row is not None and row[0] == "off"
    assert _bm25_rows(rt, gone) == ([], [], [])
    assert _bm25_rows(rt, kept) == before
    with rt.db.connection() as conn:
        orphans = conn.execute(
            "SELECT count(*) FROM bm25_postings p"
            " WHERE NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = p.chunk_id)"
            " OR NOT EXISTS (SELECT 1 FROM bm25_terms t WHERE t.term_id = p.term_id)"
        ).fetchone()
    assert orphans is not None and orphans[0] == 0
    assert check(rt, "setwise-kept").ok
