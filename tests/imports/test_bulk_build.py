"""An import's one-time builds: BM25 postings equal to a rebuild's (a bulk import into an
empty collection, a second, incremental one into the same collection, and one as large as
the collection, which rebuilds it), full-text lists equal to the exhaustive ones, and an
HNSW index built with the workers it is given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ragstore.db import spaces
from ragstore.imports.files import JsonlSource
from ragstore.imports.service import ImportOptions, ImportReport, plan_import, run_import
from ragstore.integrity import check
from ragstore.runtime import Runtime
from ragstore.search.bm25 import DEFAULT_B, DEFAULT_K1
from tests.imports.helpers import vectors, write_jsonl

SCIFACT = Path(__file__).resolve().parents[3] / "shared" / "data" / "scifact"
N = 700  # 700 x 384-d vectors: a heap past spaces.FORCE_WORKERS_BYTES
MORE = 150  # a second import into the same collection
DIM = 384


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], list[str]]:
    texts: list[str] = []
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            texts.append(f"{row['title']}\n{row['text']}")
            if len(texts) == N + MORE:
                break
    with (SCIFACT / "queries.jsonl").open(encoding="utf-8") as fh:
        queries = [str(json.loads(line)["text"]) for line in fh][:20]
    return texts, queries


def _import(rt: Runtime, name: str, path: Path) -> ImportReport:
    opts = ImportOptions(
        collection=name, model="legacy@v1", dimension=DIM, backup=False, verify_queries=20
    )
    return run_import(rt, plan_import(rt, JsonlSource(path), opts), opts)


def _source(tmp: Path, texts: list[str], first: int, seed: int) -> Path:
    ids = [f"sf-{i}" for i in range(first, first + len(texts))]
    return write_jsonl(tmp / f"s{first}.jsonl", ids, vectors(len(ids), DIM, seed), texts)


@pytest.fixture(scope="module")
def imported(
    rt: Runtime, corpus: tuple[list[str], list[str]], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """'built': the first N records imported into an empty collection (the bulk path)."""
    tmp = tmp_path_factory.mktemp("bulk")
    built = _import(rt, "bulk-built", _source(tmp, corpus[0][:N], 0, 0))
    return {"built": built, "tmp": tmp}


def _cid(rt: Runtime, name: str) -> int:
    with rt.db.connection() as conn:
        row = conn.execute("SELECT id FROM collections WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


def _state(rt: Runtime, cid: int) -> dict[str, Any]:
    with rt.db.connection() as conn:
        stats = conn.execute(
            "SELECT chunks, tokens, impact_avgdl IS NOT NULL"
            " FROM bm25_collection_stats WHERE collection_id = %s",
            (cid,),
        ).fetchone()
        postings = conn.execute(
            "SELECT t.lexeme, t.df, t.stored, t.floor, p.chunk_id, p.impact, p.tf, p.len"
            " FROM bm25_terms t LEFT JOIN bm25_postings p ON p.term_id = t.term_id"
            " WHERE t.collection_id = %s ORDER BY 1, 5",
            (cid,),
        ).fetchall()
    return {"stats": stats, "postings": postings, "stored": sum(p[4] is not None for p in postings)}


def _lists_agree(rt: Runtime, cid: int, queries: list[str]) -> None:
    with rt.db.connection() as conn:
        for query in queries:
            args = (cid, query, DEFAULT_K1, DEFAULT_B)
            exact = conn.execute(
                "SELECT * FROM ragstore_bm25_exhaustive(%s, 'english', %s, 10, %s, %s)", args
            ).fetchall()
            assert exact, query
            pruned = conn.execute(
                "SELECT * FROM ragstore_bm25_topk(%s, 'english', %s, 10, %s, %s)", args
            ).fetchall()
            assert pruned == exact, query


def test_an_import_writes_the_postings_a_rebuild_writes(
    rt: Runtime, imported: dict[str, Any], corpus: tuple[list[str], list[str]]
) -> None:
    report: ImportReport = imported["built"]
    assert report.verification.ok and report.written == N
    cid = _cid(rt, "bulk-built")
    before = _state(rt, cid)
    assert before["stored"] > 50 * N  # SciFact abstracts hold about 90 lexemes each
    assert before["stats"][2] is True
    with rt.db.connection() as conn:
        conn.execute("SELECT ragstore_bm25_rebuild(%s)", (cid,))
    assert _state(rt, cid) == before
    _lists_agree(rt, cid, corpus[1])


def test_a_second_import_keeps_the_postings_a_rebuild_writes(
    rt: Runtime, imported: dict[str, Any], corpus: tuple[list[str], list[str]]
) -> None:
    cid = _cid(rt, "bulk-built")
    report = _import(rt, "bulk-built", _source(imported["tmp"], corpus[0][N:], N, 1))
    assert report.verification.ok and report.written == MORE
    after = _state(rt, cid)
    assert after["stats"][0] == N + MORE and after["stats"][2] is True
    assert after["stored"] > 50 * (N + MORE)
    # impacts written incrementally lag a rebuild's (avgdl drift is re-ranked lazily), so
    # the statistics and the (term, df) pairs must match a rebuild and the top k be exact
    _lists_agree(rt, cid, corpus[1])
    with rt.db.connection() as conn:
        conn.execute("SELECT ragstore_bm25_rebuild(%s)", (cid,))
    rebuilt = _state(rt, cid)
    assert rebuilt["stats"] == after["stats"]
    assert {p[:2] for p in rebuilt["postings"]} == {p[:2] for p in after["postings"]}
    _lists_agree(rt, cid, corpus[1])


def test_the_index_build_leaves_no_parallel_setting_on_the_table(
    rt: Runtime, imported: dict[str, Any]
) -> None:
    with rt.db.connection() as conn:
        row = conn.execute(
            "SELECT s.table_name FROM embedding_spaces s JOIN collections c"
            " ON c.active_space_id = s.id WHERE c.name = 'bulk-built'"
        ).fetchone()
        assert row is not None
        table = str(row[0])
        assert spaces.has_index(conn, table)
        size = conn.execute("SELECT pg_relation_size(%s::regclass)", (table,)).fetchone()
        options = conn.execute(
            "SELECT reloptions FROM pg_class WHERE oid = %s::regclass", (table,)
        ).fetchone()
    assert size is not None and int(size[0]) >= spaces.FORCE_WORKERS_BYTES
    assert options == (None,)


def test_searches_of_the_collection_go_on_during_an_import_into_it(
    rt: Runtime, imported: dict[str, Any], corpus: tuple[list[str], list[str]]
) -> None:
    """An import into a collection that has rows writes through its live index, in one
    transaction: another connection reads the collection's vectors meanwhile (the old
    ones) instead of waiting for the import's end (it held the space's table ACCESS
    EXCLUSIVE until it committed)."""
    table = rt.collection("bulk-built").table
    with rt.db.connection() as conn:
        before = spaces.count_vectors(conn, table)
    seen: list[int] = []

    def look(stage: str, done: int, total: int) -> None:
        if stage == "documents" and not seen:
            with rt.db.connect(autocommit=True) as other:
                other.execute("SET lock_timeout = '2s'")
                seen.append(spaces.count_vectors(other, table))

    opts = ImportOptions(
        collection="bulk-built", model="legacy@v1", dimension=DIM, backup=False, verify_queries=5
    )
    source = _source(imported["tmp"], corpus[0][N : N + 20], 10_000, 3)
    report = run_import(rt, plan_import(rt, JsonlSource(source), opts), opts, progress=look)
    assert report.verification.ok and seen == [before]
    with rt.db.connection() as conn:
        assert spaces.count_vectors(conn, table) == before + 20


def _table_oid(rt: Runtime, table: str) -> int:
    with rt.db.connection() as conn:
        row = conn.execute("SELECT %s::regclass::oid", (table,)).fetchone()
    assert row is not None
    return int(row[0])


def test_an_import_as_large_as_the_collection_rebuilds_it(
    rt: Runtime, corpus: tuple[list[str], list[str]], tmp_path: Path
) -> None:
    """Half the records into an empty collection, then the other half: the second import
    stages the old vectors with its own and swaps the indexed table in (a new table), adds
    its postings to the old ones, and leaves what a rebuild from scratch would; searches
    of the collection read the old rows meanwhile, without waiting, until it commits."""
    texts, queries = corpus
    half = N // 2
    _import(rt, "bulk-rebuilt", _source(tmp_path, texts[:half], 0, 5))
    table = rt.collection("bulk-rebuilt").table
    oid = _table_oid(rt, table)
    seen: dict[str, int] = {}

    def look(stage: str, done: int, total: int) -> None:
        if stage in ("documents", "index", "parity") and stage not in seen:
            with rt.db.connect(autocommit=True) as other:
                other.execute("SET lock_timeout = '2s'")
                seen[stage] = spaces.count_vectors(other, table)

    opts = ImportOptions(
        collection="bulk-rebuilt", model="legacy@v1", dimension=DIM, backup=False, verify_queries=20
    )
    plan = plan_import(rt, JsonlSource(_source(tmp_path, texts[half:N], half, 6)), opts)
    report = run_import(rt, plan, opts, progress=look)
    assert report.verification.ok and report.written == N - half
    assert seen == {"documents": half, "index": half, "parity": half}
    assert _table_oid(rt, table) != oid  # the staged table took the space's place
    with rt.db.connection() as conn:
        assert spaces.count_vectors(conn, table) == N
        assert spaces.has_index(conn, table)
        staged = conn.execute("SELECT to_regclass(%s)", (spaces.load_table(table),)).fetchone()
    assert staged == (None,)
    cid = _cid(rt, "bulk-rebuilt")
    after = _state(rt, cid)
    assert after["stats"][0] == N and after["stored"] > 50 * N
    _lists_agree(rt, cid, queries)
    with rt.db.connection() as conn:
        conn.execute("SELECT ragstore_bm25_rebuild(%s)", (cid,))
    rebuilt = _state(rt, cid)
    assert rebuilt["stats"] == after["stats"]
    assert {p[:2] for p in rebuilt["postings"]} == {p[:2] for p in after["postings"]}
    assert rebuilt["stored"] == after["stored"]


def test_an_import_under_a_quarter_of_the_collection_writes_through_its_index(
    rt: Runtime, imported: dict[str, Any], corpus: tuple[list[str], list[str]]
) -> None:
    table = rt.collection("bulk-built").table
    oid = _table_oid(rt, table)
    with rt.db.connection() as conn:
        before = spaces.count_vectors(conn, table)
    extra = corpus[0][N : N + before // 5]
    report = _import(rt, "bulk-built", _source(imported["tmp"], extra, 20_000, 7))
    assert report.verification.ok and report.written == len(extra)
    assert _table_oid(rt, table) == oid


def test_a_check_while_a_rebuilding_import_verifies_leaves_its_staged_table(
    rt: Runtime, corpus: tuple[list[str], list[str]], tmp_path: Path
) -> None:
    """An import verifies its staged table between its two commits (committed, not swapped
    in yet), holding its space's table in a mode that is not exclusive: ``db check`` took
    the staged table for a leftover there, and ``--repair`` dropped it, failing the import."""
    texts = corpus[0]
    _import(rt, "beside-import", _source(tmp_path, texts[:5], 0, 7))
    _import(rt, "verifying", _source(tmp_path, texts[5:45], 5, 8))
    staged = spaces.load_table(rt.collection("verifying").table)
    seen: list[tuple[list[str], list[str], bool]] = []  # leftovers: found, repaired; kept

    def look(stage: str, done: int, total: int) -> None:
        if stage == "checksum" and not seen:  # the staged table is committed by now
            with rt.db.connection() as conn:
                exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (staged,)).fetchone()
            assert exists == (True,), "the import is not between its two commits"
            found = check(rt, "beside-import")
            # (a repair that took it for a leftover waited for the import's table: here,
            # on the import's own thread, for good)
            repaired = check(rt, "beside-import", repair=True) if not found.leftovers else found
            with rt.db.connection() as conn:
                kept = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (staged,)).fetchone()
            seen.append((found.leftovers, repaired.leftovers, kept == (True,)))

    opts = ImportOptions(
        collection="verifying", model="legacy@v1", dimension=DIM, backup=False, verify_queries=5
    )
    plan = plan_import(rt, JsonlSource(_source(tmp_path, texts[45:85], 45, 9)), opts)
    report = run_import(rt, plan, opts, progress=look)
    assert seen == [([], [], True)]
    assert report.verification.ok and report.written == 40
    with rt.db.connection() as conn:
        assert spaces.count_vectors(conn, rt.collection("verifying").table) == 80
        assert conn.execute("SELECT to_regclass(%s)", (staged,)).fetchone() == (None,)
