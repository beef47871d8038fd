"""A restore of an archive whose pinned models this machine cannot load is refused before
anything is dropped (unless told); ``db check`` names such a pin; a restore waits for a
running model migration's lock instead of replacing the database under it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from ragstore import backup
from ragstore.db.spaces import MIGRATION_LOCKS
from tests.conftest import run_cli
from tests.migrations.test_backup import full_dump

ZERO_SUM = "'sha256:' || repeat('0', 64)"


@pytest.fixture()
def store(cli_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """A store with one collection embedded by the built-in local model, as it was at the
    start of each test (restored from a backup taken the first time)."""
    url = cli_env["RAGSTORE_DATABASE_URL"]
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "cats.md").write_text("# Cats\n\nCats sleep sixteen hours a day.\n")
    with psycopg.connect(url) as conn:
        present = conn.execute("SELECT count(*) FROM collections").fetchone() == (1,)
    if not present:
        assert run_cli("ingest", str(docs), "-c", "kept") == 0
    yield url
    # the next test starts from the store with its pin as it was
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_unlock_all()")


def _archive_with(url: str, archive: Path, change: str) -> None:
    """Back up the store as it is with ``change`` made to its pins, then undo the change:
    an archive written on a machine whose weights were other than this one's."""
    with psycopg.connect(url, autocommit=True) as conn:
        kept = conn.execute("SELECT id, checksum, options FROM embedding_models").fetchall()
        conn.execute(f"UPDATE embedding_models SET {change}")
        try:
            assert run_cli("backup", str(archive), "--json") == 0
        finally:
            for model_id, checksum, options in kept:
                conn.execute(
                    "UPDATE embedding_models SET checksum = %s, options = %s WHERE id = %s",
                    (checksum, Jsonb(options), model_id),
                )


def test_an_archive_whose_weights_differ_or_are_missing_is_refused_and_changes_nothing(
    store: str, cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The review's case: the archive's pin records another checksum than the weights
    here. The restore said "restored" (exit 0) and every search then failed
    model_mismatch, the store it replaced gone; it is refused now, naming the model and
    its collection, before the backup of what it would replace and before any drop. A pin
    whose weights folder does not exist here is refused alike."""
    differ, missing = tmp_path / "differ.dump", tmp_path / "missing.dump"
    _archive_with(store, differ, f"checksum = {ZERO_SUM}")
    _archive_with(store, missing, """options = options || '{"path": "/nonexistent/weights"}'""")
    before = full_dump(store)
    backups = Path(cli_env["RAGSTORE_DATA_DIR"]) / "backups"
    made = sorted(backups.glob("*.dump"))
    capsys.readouterr()
    assert run_cli("restore", str(differ), "--yes") == 78
    err = capsys.readouterr().err
    assert err.startswith(f"error[model_mismatch]: {differ} holds collections pinned"), err
    assert err.count("\n") == 1, err
    assert "model all-MiniLM-L6-v2@" in err and "(collection 'kept'): " in err, err
    assert "weights checksum differs from the pin: pinned sha256:000" in err, err
    assert "nothing was changed" in err and "--ignore-models" in err, err
    assert run_cli("restore", str(missing), "--yes", "--no-backup") == 78
    err = capsys.readouterr().err
    assert "/nonexistent/weights does not exist" in err, err
    assert full_dump(store) == before
    assert sorted(backups.glob("*.dump")) == made  # no backup taken for a refused restore
    assert run_cli("search", "how long do cats sleep", "-c", "kept") == 0


def test_ignore_models_restores_it_and_db_check_names_the_pin(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--ignore-models lets such a restore through (a scratch restore, the weights to be
    installed afterwards); ``db check`` then says which collection cannot be searched and
    why, found and not repaired by --repair (it said "ok: nothing to repair")."""
    good, differ = tmp_path / "good.dump", tmp_path / "differ.dump"
    assert run_cli("backup", str(good), "--json") == 0
    _archive_with(store, differ, f"checksum = {ZERO_SUM}")
    try:
        assert run_cli("restore", str(differ), "--yes", "--no-backup", "--ignore-models") == 0
        capsys.readouterr()
        assert run_cli("search", "how long do cats sleep", "-c", "kept") == 78
        for repair in ((), ("--repair",)):
            assert run_cli("db", "check", *repair) == 1
            out = capsys.readouterr().out
            assert "found: collection 'kept', " in out, out
            assert "searches and ingests fail model_mismatch: model all-MiniLM-L6-v2@" in out
            assert "weights checksum differs from the pin" in out, out
            assert "--repair cannot fix this: install the pinned weights" in out, out
            assert "ok: nothing to repair" not in out and "repaired:" not in out, out
    finally:
        assert run_cli("restore", str(good), "--yes", "--no-backup") == 0
    assert run_cli("db", "check") == 0


@pytest.mark.parametrize("no_backup", [False, True])
def test_a_restore_waits_for_a_running_model_migration_and_refuses_changing_nothing(
    store: str,
    cli_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_backup: bool,
) -> None:
    """A ``models migrate`` (here a session holding the collection's migration lock, as
    it does between its batches) was not waited for: the restore replaced the database
    under it. The restore now waits for that lock as for the schema migration lock, then
    gives up naming the collection and the session, nothing restored or backed up."""
    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive), "--json") == 0
    with psycopg.connect(store, autocommit=True) as conn:
        conn.execute("UPDATE collections SET settings = '{\"changed\": true}'")
        row = conn.execute("SELECT id FROM collections WHERE name = 'kept'").fetchone()
    assert row is not None
    before = full_dump(store)
    backups = Path(cli_env["RAGSTORE_DATA_DIR"]) / "backups"
    made = sorted(backups.glob("*.dump"))
    monkeypatch.setattr(backup, "RESTORE_LOCK_RETRY_PAUSE_S", 0.3)
    monkeypatch.setattr(backup, "RESTORE_LOCK_GIVE_UP_S", 1.5)
    with psycopg.connect(store, autocommit=True, application_name="a-model-migration") as holder:
        assert holder.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", (MIGRATION_LOCKS, row[0])
        ).fetchone() == (True,)
        capsys.readouterr()
        flags = ("--no-backup",) if no_backup else ()
        assert run_cli("restore", str(archive), "--yes", *flags) == 75
        err = capsys.readouterr().err
        assert err.startswith("error[statement_cancelled]: "), err
        assert err.count("\n") == 1, err
        assert "a model migration, rollback or prune held its collection's migration" in err
        assert f"collection 'kept': pid {holder.info.backend_pid} (a-model-migration" in err
        taken = "" if no_backup else " and no backup of it taken"
        assert f"Nothing of {archive} was restored{taken}; the database is as it was" in err
        assert full_dump(store) == before
        assert sorted(backups.glob("*.dump")) == made
    assert run_cli("restore", str(archive), "--yes", "--no-backup") == 0
    assert full_dump(store) != before


def test_a_model_migration_started_after_the_restore_looked_stops_its_transaction(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``models migrate`` that takes its lock just after the restore looked for one (the
    look skipped here, as if the migration came a moment later) is held off by the
    restore's transaction, which takes every collection's migration lock: its tries wait
    out their lock timeouts and it gives up naming the migration, nothing restored."""
    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive), "--json") == 0
    with psycopg.connect(store, autocommit=True) as conn:
        conn.execute("UPDATE collections SET settings = '{\"later\": true}'")
        row = conn.execute("SELECT id FROM collections WHERE name = 'kept'").fetchone()
    assert row is not None
    before = full_dump(store)
    monkeypatch.setattr(backup, "_wait_for_migrations", lambda *_a, **_k: None)
    monkeypatch.setattr(backup, "RESTORE_LOCK_WAIT_S", 0.5)
    monkeypatch.setattr(backup, "RESTORE_LOCK_RETRY_PAUSE_S", 0.3)
    monkeypatch.setattr(backup, "RESTORE_LOCK_GIVE_UP_S", 1.5)
    with psycopg.connect(store, autocommit=True, application_name="a-model-migration") as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", (MIGRATION_LOCKS, row[0]))
        capsys.readouterr()
        assert run_cli("restore", str(archive), "--yes", "--no-backup") == 75
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert (
            "model migrations holding a collection's migration lock: collection 'kept': "
            f"pid {holder.info.backend_pid} (a-model-migration"
        ) in err, err
        assert full_dump(store) == before
    assert run_cli("restore", str(archive), "--yes", "--no-backup") == 0
