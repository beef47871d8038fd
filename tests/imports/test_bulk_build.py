"""An import's one-time builds: BM25 postings equal to a rebuild's, and an HNSW index built
with the workers it is given, the table's settings left as they were."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ragstore.db import spaces
from ragstore.imports.files import JsonlSource
from ragstore.imports.service import ImportOptions, ImportReport, plan_import, run_import
from ragstore.runtime import Runtime
from ragstore.search.bm25 import DEFAULT_B, DEFAULT_K1
from tests.imports.helpers import vectors, write_jsonl

SCIFACT = Path(__file__).resolve().parents[3] / "shared" / "data" / "scifact"
N = 700  # 700 x 384-d vectors: a heap past spaces.FORCE_WORKERS_BYTES
DIM = 384


@pytest.fixture(scope="module")
def imported(rt: Runtime, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    texts: list[str] = []
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            texts.append(f"{row['title']}\n{row['text']}")
            if len(texts) == N:
                break
    with (SCIFACT / "queries.jsonl").open(encoding="utf-8") as fh:
        queries = [str(json.loads(line)["text"]) for line in fh][:20]
    ids = [f"sf-{i}" for i in range(N)]
    path = write_jsonl(tmp_path_factory.mktemp("bulk") / "s.jsonl", ids, vectors(N, DIM), texts)
    opts = ImportOptions(
        collection="bulk-build", model="legacy@v1", dimension=DIM, backup=False, verify_queries=20
    )
    report = run_import(rt, plan_import(rt, JsonlSource(path), opts), opts)
    return {"report": report, "queries": queries}


def _postings(rt: Runtime, cid: int) -> list[tuple[Any, ...]]:
    with rt.db.connection() as conn:
        return conn.execute(
            "SELECT t.lexeme, t.df, t.stored, t.floor, p.chunk_id, p.impact, p.tf, p.len"
            " FROM bm25_terms t LEFT JOIN bm25_postings p ON p.term_id = t.term_id"
            " WHERE t.collection_id = %s ORDER BY 1, 5",
            (cid,),
        ).fetchall()


def test_an_import_writes_the_postings_a_rebuild_writes(
    rt: Runtime, imported: dict[str, Any]
) -> None:
    report: ImportReport = imported["report"]
    assert report.verification.ok and report.written == N
    with rt.db.connection() as conn:
        row = conn.execute("SELECT id FROM collections WHERE name = 'bulk-build'").fetchone()
    assert row is not None
    cid = int(row[0])
    before = _postings(rt, cid)
    assert len(before) > 50 * N  # SciFact abstracts hold about 90 lexemes each
    with rt.db.connection() as conn:
        conn.execute("SELECT ragstore_bm25_rebuild(%s)", (cid,))
    assert _postings(rt, cid) == before
    with rt.db.connection() as conn:
        for query in imported["queries"]:
            args = (cid, query, DEFAULT_K1, DEFAULT_B)
            exact = conn.execute(
                "SELECT * FROM ragstore_bm25_exhaustive(%s, 'english', %s, 10, %s, %s)", args
            ).fetchall()
            assert exact, query
            pruned = conn.execute(
                "SELECT * FROM ragstore_bm25_topk(%s, 'english', %s, 10, %s, %s)", args
            ).fetchall()
            assert pruned == exact, query


def test_the_index_build_leaves_no_parallel_setting_on_the_table(
    rt: Runtime, imported: dict[str, Any]
) -> None:
    with rt.db.connection() as conn:
        row = conn.execute(
            "SELECT s.table_name FROM embedding_spaces s JOIN collections c"
            " ON c.active_space_id = s.id WHERE c.name = 'bulk-build'"
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
