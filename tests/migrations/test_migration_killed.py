"""``db downgrade`` killed outright (SIGKILL) on a store with data, as its DDL runs: the
one transaction rolls back, searches answer as before, ``db check`` is clean, and the
downgrade then the upgrade, run again, end at the revisions they name.

SIGTERM and an ended connection are proven in ``test_migration_faults``; a kill during
the backup (its pg_dump) in ``test_backup``."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from ragstore.config import Settings
from ragstore.db import migrations
from ragstore.db.database import Database
from ragstore.ingest import ingest_paths
from ragstore.runtime import Runtime
from ragstore.search import search
from tests.conftest import run_cli
from tests.killing import killed_when
from tests.migrations.test_migration_faults import WAITING, _hold_every_table
from tests.sigterm import backends_sql


def _revision(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        return migrations.current_revision(conn)


def _answers(rt: Runtime) -> list[str]:
    return [h.text for h in search(rt, "paragraph seven", collection="kept", k=5, mode="vector")]


def test_a_downgrade_killed_as_it_runs_changes_nothing_and_runs_again(
    empty_database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = empty_database_url
    revisions = migrations.known_revisions()
    head, older = revisions[-1], revisions[-3]
    migrations.upgrade(Database(url), head)
    folder = tmp_path / "docs"
    folder.mkdir()
    for d in range(20):
        (folder / f"d{d}.md").write_text(f"# Doc {d}\n\nThis is paragraph {d} of the kept set.\n")
    settings = Settings(database_url=url, data_dir=tmp_path / "data", profile="test")
    with Runtime(settings) as rt:
        ingest_paths(rt, [folder], "kept")
        before = _answers(rt)
    assert len(before) == 5
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", url)
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(tmp_path / "data"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    args = ["db", "downgrade", "--to", older, "--yes", "--no-backup"]
    with psycopg.connect(url) as holder:
        _hold_every_table(holder)
        killed_when(
            args,
            env,
            url,
            backends_sql("datname = current_database() AND " + WAITING),  # its DDL waits
            tmp_path / "downgrade.log",
            release=holder.rollback,
        )
    assert _revision(url) == head
    with Runtime(settings) as rt:
        assert _answers(rt) == before
    capsys.readouterr()
    assert run_cli("db", "check") == 0, capsys.readouterr().out

    assert run_cli(*args) == 0
    assert _revision(url) == older
    assert run_cli("db", "upgrade", "--no-backup") == 0
    assert _revision(url) == head
    with Runtime(settings) as rt:
        assert _answers(rt) == before
    capsys.readouterr()
    assert run_cli("db", "check") == 0
    assert "ok: nothing to repair" in capsys.readouterr().out
