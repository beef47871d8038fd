"""kill -9 in the middle of an ingest and of an import: what is stored is whole and right,
and running the same command again converges on the full result.

One seed per kill point by default; ``RAGSTORE_FAULT_SEEDS=N`` adds N more seeded kill
points per operation (slower, for a soak of the fault paths). A killed model migration is
covered by ``tests/models/test_resume.py`` (it resumes without re-embedding).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from ragstore.chunking.chunker import document_hash
from ragstore.config import Settings
from tests.conftest import run_cli
from tests.imports.helpers import vectors, write_jsonl
from tests.killing import killed_when
from tests.models.corpus import write_corpus

DOCS = 10
EXTRA = int(os.environ.get("RAGSTORE_FAULT_SEEDS", "0"))
INGEST_POINTS = [("first-round", 0.0), ("midway", 0.5)] + [
    (f"seed-{s}", random.Random(s).uniform(0.1, 0.9)) for s in range(1, EXTRA + 1)
]


def _env(settings: Settings) -> dict[str, str]:
    assert settings.database_url is not None
    return {
        **os.environ,
        "RAGSTORE_DATABASE_URL": settings.database_url.get_secret_value(),
        "RAGSTORE_DATA_DIR": str(settings.data_dir),
        "RAGSTORE_PROFILE": "test",
        "RAGSTORE_DEVICE": "cpu",
        "RAGSTORE_INGEST_BATCH_CHUNKS": "2",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def _signal_when(
    args: list[str], env: dict[str, str], log: Path, ready: Callable[[], bool], sig: int
) -> int:
    """Run ``ragstore ARGS``, send it ``sig`` as soon as ``ready()`` holds (it must not end
    first) and return its exit status: a signal the command handles (SIGTERM), where
    :func:`tests.killing.killed_when` kills it outright."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from ragstore.cli import main; main()", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None and not ready():
            time.sleep(0.02)
        assert proc.poll() is None, f"ended before the signal: {log.read_text()[-2000:]}"
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode


def _stored(url: str, coll: str) -> dict[str, tuple[str, int, int, int]]:
    """source -> (content_hash, chunks, chunks that need a vector, vectors stored)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT s.table_name FROM collections c JOIN embedding_spaces s"
            " ON s.id = c.active_space_id WHERE c.name = %s",
            (coll,),
        ).fetchone()
        if row is None:
            return {}
        table = str(row[0])
        rows = conn.execute(
            f"SELECT d.source, d.content_hash, count(k.id),"
            f" count(k.id) FILTER (WHERE k.chunk_type <> 'heading'), count(e.chunk_id)"
            f" FROM documents d JOIN collections c ON c.id = d.collection_id"
            f" LEFT JOIN chunks k ON k.document_id = d.id"
            f" LEFT JOIN {table} e ON e.chunk_id = k.id"
            f" WHERE c.name = %s GROUP BY d.source, d.content_hash",
            (coll,),
        ).fetchall()
    return {str(r[0]): (str(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows}


def _stored_at_least(coll: str, n: int) -> str:
    """A probe for :func:`killed_when`: whether ``coll`` holds ``n`` documents yet."""
    assert "'" not in coll
    return (
        f"SELECT count(*) >= {int(n)} FROM documents d JOIN collections c"
        f" ON c.id = d.collection_id WHERE c.name = '{coll}'"
    )


def _doc_count(url: str, coll: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM documents d JOIN collections c"
            " ON c.id = d.collection_id WHERE c.name = %s",
            (coll,),
        ).fetchone()
    return int(row[0]) if row else 0


def _assert_whole(stored: dict[str, tuple[str, int, int, int]], folder: Path) -> None:
    for source, (digest, chunks, need, have) in stored.items():
        assert digest == document_hash(Path(source).read_bytes()), source
        assert chunks > 0 and need == have, (source, chunks, need, have)


@pytest.mark.parametrize("point, fraction", INGEST_POINTS, ids=[p for p, _ in INGEST_POINTS])
def test_ingest_killed_leaves_whole_documents_and_a_rerun_converges(
    settings: Settings,
    cli_env: dict[str, str],
    tmp_path: Path,
    point: str,
    fraction: float,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = cli_env["RAGSTORE_DATABASE_URL"]
    coll = f"kill-{point}"
    folder = write_corpus(tmp_path / "corpus", docs=DOCS, paragraphs=3)
    threshold = max(1, int(DOCS * fraction))
    killed_when(
        ["ingest", str(folder), "-c", coll],
        _env(settings),
        url,
        _stored_at_least(coll, threshold),
        tmp_path / "ingest.log",
    )
    partial = _stored(url, coll)
    assert threshold <= len(partial) < DOCS
    _assert_whole(partial, folder)

    assert run_cli("ingest", str(folder), "-c", coll) == 0
    full = _stored(url, coll)
    assert len(full) == DOCS
    _assert_whole(full, folder)
    capsys.readouterr()
    assert run_cli("ingest", str(folder), "-c", coll, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    statuses = {o["status"] for o in report["outcomes"]}
    assert statuses == {"unchanged"}, report
    assert _stored(url, coll) == full


def test_ingest_sigterm_says_what_was_stored_and_how_to_resume(
    settings: Settings, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGTERM (a service manager stopping a job, a container shutting down) ends an ingest
    as Ctrl-C does: the round being written commits whole, and the command says so, with
    the counts the database holds and how to resume, and exits 143 (128 + SIGTERM)."""
    url = cli_env["RAGSTORE_DATABASE_URL"]
    coll = "sigterm"
    folder = write_corpus(tmp_path / "corpus", docs=DOCS, paragraphs=3)
    log = tmp_path / "ingest.log"
    args = ["ingest", str(folder), "-c", coll]
    status = _signal_when(
        args, _env(settings), log, lambda: _doc_count(url, coll) >= 2, signal.SIGTERM
    )
    text = log.read_text()
    assert status == 143, text
    stored = _stored(url, coll)
    assert 2 <= len(stored) < DOCS, text
    _assert_whole(stored, folder)
    assert f"interrupted by SIGTERM: {len(stored)} added, 0 updated" in text, text
    assert f"of {DOCS} files" in text and "run the same command again to resume" in text, text
    assert "Traceback" not in text, text


def test_ingest_killed_after_creating_its_collection_is_noted_by_db_check(
    settings: Settings, cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ingest into a new name killed outright after it created the collection, before
    anything was stored: nothing removes the empty collection (that runs only where an
    error reaches Python), and ``db check`` said "0 chunks ... ok: nothing to repair" and
    nothing more. It now notes the collection that never held anything, and how to
    delete it, and still passes (it may be wanted: ``collections create`` makes one)."""
    url = cli_env["RAGSTORE_DATABASE_URL"]
    coll = "bulk1"
    folder = write_corpus(tmp_path / "corpus", docs=DOCS, paragraphs=3)
    # a bulk load: one transaction, so nothing of it is stored before its commit
    env = {**_env(settings), "RAGSTORE_BULK_LOAD_BYTES": "1"}
    killed_when(
        ["ingest", str(folder), "-c", coll],
        env,
        url,
        f"SELECT EXISTS (SELECT 1 FROM collections WHERE name = '{coll}')",
        tmp_path / "ingest.log",
    )
    assert _doc_count(url, coll) == 0
    capsys.readouterr()
    assert run_cli("db", "check") == 0  # a note, not a finding
    out = capsys.readouterr().out
    assert (
        f"note: collection '{coll}': holds no document and never did (no job or model "
        "migration either): an ingest that created it may have been killed before it "
        f"stored anything\n  fix: run that ingest again, or delete the collection if it is "
        f"unwanted: ragstore collections delete {coll}\n"
    ) in out, out
    assert out.count("note: ") == 1, out  # not the collections that hold documents
    assert out.endswith("ok: nothing to repair\n"), out
    assert run_cli("db", "check", "--json") == 0
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert [n["where"] for n in notes] == [f"collection '{coll}'"], notes
    assert run_cli("ingest", str(folder), "-c", coll) == 0  # the same ingest again
    capsys.readouterr()
    assert run_cli("db", "check", "-c", coll) == 0
    assert "note: " not in capsys.readouterr().out


WRITING = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
    " AND (query ILIKE 'COPY%' OR query ILIKE 'CREATE INDEX%')"
)


def test_import_killed_mid_transaction_keeps_nothing_and_a_rerun_completes(
    settings: Settings, cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = cli_env["RAGSTORE_DATABASE_URL"]
    ids = [f"r{i}" for i in range(6000)]
    vecs = vectors(len(ids), 16, seed=7)
    src = write_jsonl(tmp_path / "store.jsonl", ids, vecs)
    args = [
        "import",
        str(src),
        "-c",
        "kill-import",
        "-m",
        "legacy@v1",
        "--dimension",
        "16",
        "--no-backup",
    ]

    # killed while it writes (its COPY or its index build, inside its one transaction);
    # killed_when returns once its sessions are gone, their transaction rolled back
    killed_when(args, _env(settings), url, WRITING, tmp_path / "import.log")
    with psycopg.connect(url) as conn:
        left = conn.execute(
            "SELECT count(*) FROM collections WHERE name = 'kill-import'"
        ).fetchone()
    assert left == (0,), "a killed import left a half-written collection"
    capsys.readouterr()
    assert run_cli(*args, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verification"]["ok"] is True
    assert report["verification"]["stored_rows"] == len(ids)
