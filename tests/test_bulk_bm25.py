"""BM25 statistics and postings of a bulk load (revision 0011) against the incremental path.

The same CISI records are ingested twice as files: once as a bulk load (one transaction,
the BM25 triggers off, statistics and postings built once before the commit) and once
round by round through the triggers. Document frequencies, chunk count, total length and
every full-text list must be identical, and the bulk load's postings must be exactly
those a rebuild of the incremental collection writes. Each collection keeps 6 postings
per term so that lists are trimmed and floors rise, as for common words at scale. A bulk
load is seen by other connections all at once or not at all: while it runs nothing of it
is visible, and a load whose connection dies leaves nothing behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ragstore.db import repository
from ragstore.embedding.registry import resolve_spec
from ragstore.ingest import ingest_paths
from ragstore.ingest.service import IngestReport, Item, ingest_items
from ragstore.runtime import Runtime
from tests.bm25_rows import bm25_rows, bulk_loads, collection_keeping, full_text

CISI = Path(__file__).resolve().parents[2] / "shared" / "data" / "cisi"
N_DOCS = 12
KEEP = 6
_ADVISORY_CLASS = 0x5257 << 16  # high half of documents' source-lock keys


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp("cisi")
    with (CISI / "corpus.jsonl").open(encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            if n == N_DOCS:
                break
            row = json.loads(line)
            (folder / f"cisi-{row['_id']}.txt").write_text(
                f"{row['title']}\n\n{row['text']}\n", encoding="utf-8"
            )
    with (CISI / "queries.jsonl").open(encoding="utf-8") as fh:
        queries = [str(json.loads(line)["text"]) for line in fh][:15]
    return folder, queries


def _visible_chunks(rt: Runtime, cid: int) -> int:
    with rt.db.connection() as conn:
        row = conn.execute("SELECT count(*) FROM chunks WHERE collection_id = %s", (cid,))
        return int(row.fetchone()[0])  # type: ignore[index]


@pytest.fixture(scope="module")
def loaded(rt: Runtime, corpus: tuple[Path, list[str]]) -> dict[str, Any]:
    folder = corpus[0]
    out: dict[str, Any] = {}
    for label in ("bulk", "inc"):
        bulk_loads(rt, label == "bulk")
        coll = collection_keeping(rt, f"bm25-{label}", KEEP)
        seen: list[int] = []
        report = ingest_paths(
            rt,
            [folder],
            coll.name,
            progress=lambda *_, cid=coll.id, seen=seen: seen.append(_visible_chunks(rt, cid)),
        )
        assert not report.failed and report.chunks > 0
        out[label] = {"coll": coll, "seen": seen, "report": report}
    bulk_loads(rt, True)
    return out


def test_a_bulk_load_is_invisible_until_it_commits(loaded: dict[str, Any]) -> None:
    assert loaded["bulk"]["seen"] and not any(loaded["bulk"]["seen"])
    # the incremental load commits round by round, so other connections see it grow
    assert len(loaded["inc"]["seen"]) > 1 and any(loaded["inc"]["seen"])
    assert loaded["bulk"]["report"].stages.keys() >= {"bm25_build", "index_build"}
    assert "bm25_build" not in loaded["inc"]["report"].stages


def test_bulk_statistics_and_lists_equal_the_incremental_ones(
    rt: Runtime, loaded: dict[str, Any], corpus: tuple[Path, list[str]]
) -> None:
    bulk_id, inc_id = loaded["bulk"]["coll"].id, loaded["inc"]["coll"].id
    bulk, inc = bm25_rows(rt, bulk_id), bm25_rows(rt, inc_id)
    assert bulk["stats"][:2] == inc["stats"][:2] and bulk["stats"][5] == KEEP
    assert bulk["df"] == inc["df"] and len(bulk["df"]) > 500
    assert bulk["postings"] and any(floor > 0 for floor, _ in bulk["lists"].values())
    with rt.db.connection() as conn:
        for query in corpus[1]:
            exact = full_text(conn, bulk_id, query, "exhaustive")
            assert exact, query
            assert full_text(conn, bulk_id, query) == exact
            assert full_text(conn, inc_id, query, "exhaustive") == exact


def test_bulk_postings_are_those_a_rebuild_writes(rt: Runtime, loaded: dict[str, Any]) -> None:
    inc_id = loaded["inc"]["coll"].id
    with rt.db.connection() as conn:
        conn.execute("SELECT ragstore_bm25_rebuild(%s)", (inc_id,))
    bulk, inc = bm25_rows(rt, loaded["bulk"]["coll"].id), bm25_rows(rt, inc_id)
    assert bulk["stats"] == inc["stats"]
    assert bulk["lists"] == inc["lists"]
    assert bulk["postings"] == inc["postings"]


def test_a_bulk_load_whose_connection_dies_leaves_nothing(
    rt: Runtime, corpus: tuple[Path, list[str]]
) -> None:
    """The load's connection is terminated after its first round: the documents written
    are reported failed, the rest not attempted, and nothing of the load is left,
    statistics included."""
    files = sorted(corpus[0].iterdir())[:6]
    coll = collection_keeping(rt, "bm25-killed", KEEP)
    killed: list[int] = []

    def kill(*_: object) -> None:
        if killed:
            return
        with rt.db.connection() as conn:
            pids = [
                int(r[0])
                for r in conn.execute(
                    "SELECT DISTINCT pid FROM pg_locks WHERE locktype = 'advisory'"
                    " AND classid = %s AND pid <> pg_backend_pid()",
                    (_ADVISORY_CLASS,),
                )
            ]
            killed.extend(pids)
            for pid in pids:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))

    report = IngestReport(coll.name)
    items = [Item(str(f), f, str(f)) for f in files]
    # the server still answers: only the load's connection was lost, the breaker stays
    # closed and the index check that ends every ingest passes on a fresh connection
    ingest_items(rt, coll.name, items, report, progress=kill)
    assert len(killed) == 1, "the bulk load's connection holds the collection's source locks"
    assert len(report.outcomes) == len(files)
    # the rounds written failed with the load; the ingest stopped at the lost connection,
    # so the rounds after it were not read or encoded: not attempted
    assert report.stopped_by is not None and report.outcomes[0].status == "failed"
    assert all(
        o.status in ("failed", "not_attempted") and o.document is None for o in report.outcomes
    )
    assert rt.db.breaker.failures == 0
    with rt.db.connection() as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM documents WHERE collection_id = %(c)s),"
            " (SELECT count(*) FROM chunks WHERE collection_id = %(c)s),"
            " (SELECT count(*) FROM bm25_terms WHERE collection_id = %(c)s),"
            " (SELECT chunks FROM bm25_collection_stats WHERE collection_id = %(c)s)",
            {"c": coll.id},
        ).fetchone()
    assert row == (0, 0, 0, 0)


@pytest.mark.parametrize(("given", "used"), [("1GB", "256MB"), ("64MB", "64MB")])
def test_the_bm25_build_takes_the_build_memory_up_to_256mb(
    rt: Runtime, given: str, used: str
) -> None:
    """The vector index may take RAGSTORE_INDEX_BUILD_MEMORY (1 GB by default); the BM25
    build's sorts and hashes, each of which may use work_mem, are held to 256 MB."""
    from ragstore.db import documents

    with rt.db.connection() as conn:
        coll = repository.create_collection(conn, f"wm-{given}", resolve_spec(rt.settings.model))
        documents.begin_bulk(conn, coll.id)
        documents.finish_bulk(conn, coll.id, given)
        row = conn.execute("SELECT current_setting('work_mem')").fetchone()
        conn.rollback()
    assert row == (used,)
