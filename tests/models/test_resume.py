"""A migrate killed midway resumes where it stopped and embeds no finished chunk again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from psycopg import sql

from ragstore.config import Settings
from ragstore.embedding.registry import TRUNCATED_MODEL, resolve_spec
from ragstore.errors import MigrationStateError
from ragstore.ingest import ingest_paths
from ragstore.modelops import migrate
from ragstore.modelops.specs import model_spec
from ragstore.runtime import Runtime
from tests.conftest import run_cli
from tests.models.corpus import write_corpus
from tests.sigterm import sigterm_when

COLL = "resume"
TOTAL = 60  # 6 documents x 10 paragraphs, one chunk each (headings carry no vector)


def _building_table(rt: Runtime, coll: str = COLL) -> str | None:
    with rt.db.connection() as conn:
        row = conn.execute(
            "SELECT s.table_name FROM embedding_spaces s JOIN collections c"
            " ON c.id = s.collection_id WHERE c.name = %s AND s.status = 'building'",
            (coll,),
        ).fetchone()
    return str(row[0]) if row else None


def _rows(rt: Runtime, table: str) -> dict[int, str]:
    """chunk id -> xmin: the transaction that wrote the row (a rewrite changes it)."""
    with rt.db.connection() as conn:
        return {
            int(r[0]): str(r[1])
            for r in conn.execute(
                sql.SQL("SELECT chunk_id, xmin::text FROM {}").format(sql.Identifier(table))
            )
        }


def test_killed_migrate_resumes_without_re_embedding_finished_chunks(
    rt: Runtime, settings: Settings, tmp_path: Path
) -> None:
    report = ingest_paths(rt, [write_corpus(tmp_path, docs=6, paragraphs=10, long=True)], COLL)
    assert report.chunks - 6 == TOTAL
    # the target model loaded here now, not by the refused migrate below while the child
    # embeds on: that load (seconds) had the child need many more chunks to be sure of
    # being killed midway
    rt.embedder(model_spec(rt, TRUNCATED_MODEL))
    assert settings.database_url is not None
    env = {
        **os.environ,
        "RAGSTORE_DATABASE_URL": settings.database_url.get_secret_value(),
        "RAGSTORE_DATA_DIR": str(settings.data_dir),
        "RAGSTORE_PROFILE": "test",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "RAGSTORE_DEVICE": "cpu",
    }
    log = tmp_path / "migrate.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from ragstore.cli import main; main()",
                "models",
                "migrate",
                COLL,
                "--to",
                TRUNCATED_MODEL,
                "--batch-size",
                "2",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 180
        table, done, refused = None, 0, False
        while time.monotonic() < deadline and proc.poll() is None:
            table = table or _building_table(rt)
            done = len(_rows(rt, table)) if table else 0
            if done >= 2 and not refused:
                # a second migrate of the same collection is refused while one runs
                with pytest.raises(MigrationStateError, match="another model migration"):
                    migrate(rt, COLL, TRUNCATED_MODEL)
                refused = True
            if done >= 8:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"migrate ended before it was killed: {log.read_text()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL and refused and table is not None
    assert rt.collection(COLL).model.key != resolve_spec(TRUNCATED_MODEL).key
    before = _rows(rt, table)
    assert 8 <= len(before) < TOTAL, "killed midway, with whole batches committed"

    resumed = migrate(rt, COLL, TRUNCATED_MODEL, batch_size=64)
    assert resumed.table == table, "the same space is resumed, not a new one"
    assert resumed.resumed_from == len(before)
    assert resumed.embedded == TOTAL - len(before), "finished chunks are not embedded again"
    after = _rows(rt, table)
    assert len(after) == TOTAL
    assert {cid: after[cid] for cid in before} == before, "finished rows were not rewritten"
    assert resumed.switched and rt.collection(COLL).table == table


def test_sigterm_stops_a_migrate_saying_how_far_it_got(
    rt: Runtime, cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM mid-backfill: the batches committed stay, the command says how many vectors
    the new space holds, that searches still use the old model and how to resume, and
    exits 143 (it died silently, killed by the signal)."""
    coll = "resume-term"
    ingest_paths(rt, [write_corpus(tmp_path, docs=4, paragraphs=10, long=True)], coll)
    old = rt.collection(coll).model.key

    def started() -> bool:
        table = _building_table(rt, coll)
        return table is not None and len(_rows(rt, table)) >= 4

    capsys.readouterr()
    with sigterm_when(started) as sent:
        status = run_cli(
            "models", "migrate", "-c", coll, "--to", TRUNCATED_MODEL, "--batch-size", "2"
        )
    err = capsys.readouterr().err
    assert sent == [True] and status == 143, err
    table = _building_table(rt, coll)
    assert table is not None and rt.collection(coll).model.key == old
    stored = len(_rows(rt, table))
    assert 4 <= stored < 40, err
    target = resolve_spec(TRUNCATED_MODEL).key
    assert f"interrupted by SIGTERM: {stored} of 40 chunks have a vector for {target}" in err
    assert f"searches still use {old}" in err and "run the same command again" in err
