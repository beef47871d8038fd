"""Builders for the legacy stores the import tests read: real files the tests write."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pytest

from ragstore.imports.verify import combine, digests_of
from tests.conftest import run_cli

Matrix = npt.NDArray[np.float32]


def vectors(n: int, dim: int, seed: int = 0) -> Matrix:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)).astype(np.float32)


def write_jsonl(
    path: Path,
    ids: list[str],
    vecs: Matrix,
    texts: list[str] | None = None,
    extra: list[dict[str, Any]] | None = None,
) -> Path:
    with path.open("w") as fh:
        for i, rid in enumerate(ids):
            obj: dict[str, Any] = {
                "id": rid,
                "text": texts[i] if texts else f"text of {rid}",
                "vector": vecs[i].tolist(),
                "metadata": {"n": i},
            }
            if extra:
                obj.update(extra[i])
            fh.write(json.dumps(obj) + "\n")
    return path


def write_npy_csv(path: Path, ids: list[str], vecs: Matrix) -> Path:
    np.save(path, vecs)
    with path.with_suffix(".csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text", "lang"])
        for rid in ids:
            w.writerow([rid, f"text of {rid}", "en"])
    return path


def checksum(ids: list[str], vecs: Matrix) -> str:
    return combine(digests_of(ids, vecs.astype(np.float32)))


def collection_state(url: str, name: str) -> dict[str, Any]:
    """Everything a collection holds, to compare before and after a failed import."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT c.id, s.table_name FROM collections c JOIN embedding_spaces s"
            " ON s.id = c.active_space_id WHERE c.name = %s",
            (name,),
        ).fetchone()
        if row is None:
            return {
                "exists": False,
                "spaces": conn.execute("SELECT count(*) FROM embedding_spaces").fetchone(),
            }
        cid, table = row
        docs = conn.execute(
            "SELECT source, metadata::text FROM documents WHERE collection_id = %s ORDER BY source",
            (cid,),
        ).fetchall()
        chunks = conn.execute(
            "SELECT text, metadata::text FROM chunks WHERE collection_id = %s ORDER BY text", (cid,)
        ).fetchall()
        embs = conn.execute(
            psycopg.sql.SQL("SELECT chunk_id, embedding::text FROM {} ORDER BY chunk_id").format(
                psycopg.sql.Identifier(table)
            )
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = %s ORDER BY 1", (table,)
        ).fetchall()
        # a rebuilding import's staged table (ingest.staging) must not outlive it
        staged = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f"ragstore_load_{table}",)
        ).fetchone()
        bm25 = conn.execute(
            "SELECT s.chunks, s.tokens, (SELECT count(*) FROM bm25_terms t"
            " WHERE t.collection_id = s.collection_id)"
            " FROM bm25_collection_stats s WHERE s.collection_id = %s",
            (cid,),
        ).fetchone()
    return {
        "exists": True,
        "docs": docs,
        "chunks": chunks,
        "embs": embs,
        "indexes": indexes,
        "staged": staged,
        "bm25": bm25,
    }


def import_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    """``ragstore import ARGS --no-backup --json`` in this process: its exit status, its
    JSON report (empty where it printed none) and its stderr."""
    capsys.readouterr()
    code = run_cli("import", *args, "--no-backup", "--json")
    out = capsys.readouterr()
    return code, (json.loads(out.out) if out.out.strip() else {}), out.err


def stored_metadata(url: str, coll: str) -> dict[str, dict[str, Any]]:
    """Each stored record's chunk metadata, by its id (its document's source)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT d.source, k.metadata FROM chunks k JOIN documents d ON d.id = k.document_id"
            " JOIN collections c ON c.id = d.collection_id WHERE c.name = %s",
            (coll,),
        ).fetchall()
    return {str(source): dict(meta) for source, meta in rows}
