"""Chunks' tsvectors computed before a bulk write (revision 0015).

An import computes the next slice's tsvectors on a second connection and sends them with
the chunks; the chunk trigger keeps them only in a bulk write and only when they were
computed under the collection's text search configuration. Here each branch of that rule
is written directly (a tsvector that is not the text's shows which value was stored), and
an import of several slices into a collection set to ``simple`` must store exactly
``to_tsvector(ts_config, text)`` for every chunk.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import psycopg
import pytest

from ragstore.db import documents, repository
from ragstore.imports import service
from ragstore.imports.files import JsonlSource
from ragstore.imports.service import ImportOptions, declared_spec, plan_import, run_import
from ragstore.models import Chunk, ChunkType
from ragstore.runtime import Runtime
from tests.imports.helpers import vectors, write_jsonl

TEXTS = ["Running dogs were barking loudly", "The cells divided quickly", "Of mice and men"]
PLANTED = "zebra quokka"  # a tsvector no text here gives


def _write(
    rt: Runtime, name: str, *, bulk: bool, config: str, planted: bool
) -> list[tuple[str, str, str, int]]:
    """Write TEXTS as documents with precomputed lexemes; return each chunk's stored
    (ts_config, tsv, tsv of its text under the collection's config, tsv_length)."""
    spec = declared_spec(rt, "lexeme-test@v1", 4, None)
    with rt.db.connection() as conn, conn.transaction():
        coll = repository.create_collection(conn, name, spec, {"ts_config": "simple"})
        if bulk:
            documents.begin_bulk(conn, coll.id)
        lex = documents.text_search_vectors(
            conn, config, [PLANTED] * len(TEXTS) if planted else TEXTS
        )
        writes = []
        for n, (text, part) in enumerate(zip(TEXTS, lex.split([1] * len(TEXTS)), strict=True)):
            digest = hashlib.sha256(text.encode()).hexdigest()
            record = documents.DocumentRecord(f"d{n}", None, "text", digest, len(text), {})
            chunk = Chunk(0, ChunkType.PARAGRAPH, text, (), None, 0, len(text), 5, digest)
            vec = np.full((1, 4), 0.5, dtype=np.float32)
            writes.append(documents.DocumentWrite(record, [chunk], vec, lexemes=part))
        documents.write_documents(conn, coll, writes)
        if bulk:
            documents.finish_bulk(conn, coll.id)
        rows = conn.execute(
            "SELECT ts_config::text, tsv::text, to_tsvector('simple', text)::text, tsv_length"
            " FROM chunks WHERE collection_id = %s ORDER BY id",
            (coll.id,),
        ).fetchall()
        raise psycopg.Rollback()  # nothing of these writes stays
    return [(str(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rows]


def test_a_bulk_write_keeps_the_tsvectors_it_brings(rt: Runtime) -> None:
    rows = _write(rt, "lex-kept", bulk=True, config="simple", planted=True)
    assert [r[1] for r in rows] == ["'quokka':2 'zebra':1"] * len(TEXTS)
    assert all(r[0] == "simple" and r[3] == 2 for r in rows)


@pytest.mark.parametrize(
    ("bulk", "config"), [(True, "english"), (False, "simple")], ids=["other-config", "not-bulk"]
)
def test_other_writes_compute_the_tsvector_themselves(rt: Runtime, bulk: bool, config: str) -> None:
    rows = _write(rt, f"lex-{config}-{bulk}", bulk=bulk, config=config, planted=True)
    assert len(rows) == len(TEXTS)
    for ts_config, tsv, expected, length in rows:
        assert ts_config == "simple" and tsv == expected and length == len(expected.split())
    assert "'running':1" in rows[0][1]  # simple: no stemming


def test_an_import_of_several_slices_stores_the_tsvector_of_each_text(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # slices of 15, 30, 60, 60, 60, 60, 60 and 22 records, each one's tsvectors computed
    # on the second connection while the writer stores an earlier one
    monkeypatch.setattr(service, "WRITE_SLICE", 60)
    monkeypatch.setattr(service, "MIN_SLICE", 60)
    n = 367
    assert [b - a for a, b in service._slices(n)] == [15, 30, 60, 60, 60, 60, 60, 22]
    ids = [f"r{i}" for i in range(n)]
    texts = [f"Record {i} says running cells {'divided ' * (i % 5)}#{i * 7}" for i in range(n)]
    path = write_jsonl(tmp_path / "lex.jsonl", ids, vectors(n, 8, 3), texts)
    spec = declared_spec(rt, "lexeme-import@v1", 8, None)
    with rt.db.connection() as conn:
        repository.create_collection(conn, "lex-import", spec, {"ts_config": "simple"})
    opts = ImportOptions(
        collection="lex-import",
        model="lexeme-import@v1",
        dimension=8,
        backup=False,
        verify_queries=5,
    )
    report = run_import(rt, plan_import(rt, JsonlSource(path), opts), opts)
    assert report.written == n and report.verification.ok
    with rt.db.connection() as conn:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE ts_config = 'simple'"
            " AND tsv = to_tsvector('simple', text)"
            " AND tsv_length = ragstore_tsv_length(to_tsvector('simple', text)))"
            " FROM chunks c JOIN collections k ON k.id = c.collection_id"
            " WHERE k.name = 'lex-import'"
        ).fetchone()
    assert row == (n, n)
