"""``ragstore db upgrade --sql``: the SQL that would run on the database, from its revision
(or from ``--from REV`` without a database), to be applied by hand. It printed the SQL of an
empty database (every revision from 0001) whatever the database's revision: applied to a
live one, it failed on its first statement."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ragstore.config import Settings
from ragstore.db import migrations
from ragstore.db.database import Database
from ragstore.db.embedded import pg_bin_dir
from ragstore.errors import SchemaMismatchError
from tests.conftest import run_cli


def _use(db: Database, monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", db.conninfo)
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("RAGSTORE_PROFILE", "test")


def _body(sql: str) -> str:
    """The SQL without the comment ``db upgrade --sql`` opens with."""
    return sql[sql.index("BEGIN;") :]


def test_the_sql_of_a_database_behind_starts_at_its_revision_and_applies(
    upgraded: tuple[Database, Settings],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db, _ = upgraded
    assert migrations.downgrade(db, "0036").current == "0036"
    _use(db, monkeypatch, tmp_path)
    capsys.readouterr()
    assert run_cli("db", "upgrade", "--sql") == 0
    out = capsys.readouterr().out
    header = out[: out.index("BEGIN;")]
    assert "the upgrade from revision 0036 (the database's on " in header, header
    assert f"to {migrations.head_revision()}." in header, header
    assert "no backup first" in header and "pg_advisory_xact_lock(" in header, header
    assert "SET LOCAL lock_timeout = '2000ms'" in header, header
    assert all(line.startswith("-- ") for line in header.splitlines() if line), header
    steps = [line for line in out.splitlines() if line.startswith("-- Running upgrade")]
    assert steps[0] == "-- Running upgrade 0036 -> 0037", steps
    assert steps[-1].endswith(f"-> {migrations.head_revision()}"), steps
    assert "-> 0001" not in out and "CREATE TABLE chunks" not in out, steps

    # what a DBA does with it: applied by hand, it brings the database to the head
    script = tmp_path / "upgrade.sql"
    script.write_text(out, encoding="utf-8")
    psql = [str(pg_bin_dir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    subprocess.run(
        [*psql, "-f", str(script), "-d", db.conninfo],
        check=True,
        capture_output=True,
    )
    assert migrations.status(db).is_current

    # --from prints the same SQL without opening a database (one that cannot be reached)
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    assert run_cli("db", "upgrade", "--sql", "--from", "0036") == 0
    offline = capsys.readouterr().out
    assert _body(offline) == _body(out)
    assert "the upgrade from revision 0036 (given with --from; no database was read)" in offline


def test_from_base_prints_every_revision_and_to_stops_there(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(tmp_path))
    capsys.readouterr()
    assert run_cli("db", "upgrade", "--sql", "--from", "base", "--to", "0036") == 0
    out = capsys.readouterr().out
    assert "the upgrade from an empty database (given with --from" in out
    assert "-- Running upgrade  -> 0001" in out and "CREATE TABLE chunks" in out
    assert "-> 0036" in out and "-> 0037" not in out


def test_every_statement_of_the_whole_script_ends_in_one_terminator(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A revision's SQL written ``op.execute("...;")`` (0038's and most others') printed
    ``);;`` at its end, Alembic's terminator after the revision's own: the script from an
    empty database to the head holds no ``;;``, and a statement still ends in one ``;``."""
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(tmp_path))
    capsys.readouterr()
    assert run_cli("db", "upgrade", "--sql", "--from", "base") == 0
    out = capsys.readouterr().out
    assert f"-> {migrations.head_revision()}" in out and out.rstrip().endswith("COMMIT;")
    doubled = [line for line in out.splitlines() if ";;" in line]
    assert doubled == [], doubled
    # 0038's statement, the one seen: still ended, by one terminator
    assert "PRIMARY KEY (collection_id, source)\n    );\n\n" in out, out[-800:]


def test_a_database_at_the_target_prints_nothing_to_apply(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    head = migrations.head_revision()
    for args in ([], ["--to", head], ["--from", head]):
        capsys.readouterr()
        assert run_cli("db", "upgrade", "--sql", *args) == 0, args
        captured = capsys.readouterr()
        assert captured.out == "", (args, captured.out[:300])
        assert f"is already at {head}, the upgrade's target: nothing to apply" in captured.err


def test_a_database_ahead_of_the_code_is_refused_as_db_upgrade_refuses_it(
    upgraded: tuple[Database, Settings],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db, _ = upgraded
    with db.connect() as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
        conn.commit()
    _use(db, monkeypatch, tmp_path)
    capsys.readouterr()
    said = []
    for args in (["--sql"], ["--no-backup"]):
        assert run_cli("db", "upgrade", *args) == 69, args
        captured = capsys.readouterr()
        assert captured.out == "", captured.out
        said.append(captured.err)
    assert said[0] == said[1], said
    assert "9999, which this version of ragstore does not know" in said[0], said
    with pytest.raises(
        SchemaMismatchError, match="9999, which this version of ragstore does not know"
    ):
        migrations.upgrade_sql(db)


@pytest.mark.parametrize(
    "args",
    [
        ["--from", "0036"],  # without --sql
        ["--sql", "--from", "bogus"],
        ["--sql", "--from", "0037", "--to", "0036"],
    ],
)
def test_a_from_that_cannot_be_used_is_one_line(
    args: list[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(tmp_path))
    capsys.readouterr()
    assert run_cli("db", "upgrade", *args) == 65, args
    captured = capsys.readouterr()
    assert captured.err.startswith("error[invalid_input]: --") and captured.err.count("\n") == 1
    assert captured.out == ""
