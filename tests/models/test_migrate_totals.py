"""A migration's totals with documents ingested and deleted while it runs.

The total was counted once, before the backfill: the bar stopped at "840/888" and the
report said "840 chunks embedded ... 888 in all" for a space holding 870 (ingest wrote 30,
a delete removed 48). It is counted again after each pass, and the report says how many
vectors ingest wrote to the new space meanwhile. Real database, real models; the writes
happen between two batches, from the migration's own progress callback."""

from __future__ import annotations

import dataclasses

import pytest

from ragstore.cli.models_cmd import _migrated_line
from ragstore.db import catalog, spaces
from ragstore.db.models import upsert_model
from ragstore.embedding.registry import DEFAULT_MODEL, TRUNCATED_MODEL, resolve_spec
from ragstore.ingest import ingest_paths
from ragstore.modelops import migrate, rechunk
from ragstore.runtime import Runtime
from tests.models.corpus import write_corpus

COLL = "totals"


def test_a_migration_counts_its_total_again_and_names_what_ingest_wrote(
    rt: Runtime, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("totals")
    report = ingest_paths(rt, [write_corpus(root / "docs", docs=6, paragraphs=4, long=True)], COLL)
    assert report.count("added") == 6 and not report.failed
    coll = rt.collection(COLL)
    with rt.db.connection() as conn:
        assert spaces.count_vectors(conn, coll.table) == 24
        last_two = [
            int(r[0])
            for r in conn.execute(
                "SELECT id FROM documents WHERE collection_id = %s ORDER BY id DESC LIMIT 2",
                (coll.id,),
            )
        ]
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        if len(seen) == 2:  # after the first batch: 3 chunks stored, 8 not yet embedded gone
            late = write_corpus(root / "late", docs=1, paragraphs=3, prefix="late", long=True)
            assert ingest_paths(rt, [late], COLL).count("added") == 1
            with rt.db.connection() as conn:
                for doc_id in last_two:
                    catalog.delete_document(conn, coll, doc_id)

    got = migrate(rt, COLL, TRUNCATED_MODEL, batch_size=4, progress=progress)
    assert got.switched
    assert seen[0] == (0, 24)
    assert seen[-1] == (19, 19), seen
    assert (got.embedded, got.resumed_from, got.total) == (16, 0, 19)
    with rt.db.connection() as conn:
        assert spaces.count_vectors(conn, got.table) == 19
    assert got.ingested == 3
    assert "16 chunks embedded with " in _migrated_line(got)
    assert "(0 chunks already done, 3 written by ingest meanwhile, 19 in all)" in (
        _migrated_line(got)
    )


def test_a_migration_that_cuts_again_counts_its_documents_again(
    rt: Runtime, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for a target that cuts the documents otherwise (its own chunk set)."""
    with rt.db.connection() as conn:
        upsert_model(
            conn, dataclasses.replace(resolve_spec(DEFAULT_MODEL), name="minilm-96", max_tokens=96)
        )
    monkeypatch.setattr(rechunk, "BATCH_DOCUMENTS", 1)
    root = tmp_path_factory.mktemp("recut")
    docs = write_corpus(root / "docs", docs=4, paragraphs=2, long=True)
    assert ingest_paths(rt, [docs], "recut-totals").count("added") == 4
    coll = rt.collection("recut-totals")
    with rt.db.connection() as conn:
        last_two = [
            int(r[0])
            for r in conn.execute(
                "SELECT id FROM documents WHERE collection_id = %s ORDER BY id DESC LIMIT 2",
                (coll.id,),
            )
        ]
    seen: list[tuple[int, int]] = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        if len(seen) == 2:  # after the first document: two not yet cut are deleted
            with rt.db.connection() as conn:
                for doc_id in last_two:
                    catalog.delete_document(conn, coll, doc_id)

    got = migrate(rt, "recut-totals", "minilm-96", progress=progress)
    assert got.switched and got.recut
    assert seen[0] == (0, 4)
    assert seen[-1] == (2, 2), seen
    assert (got.rechunked, got.total) == (2, 2)
