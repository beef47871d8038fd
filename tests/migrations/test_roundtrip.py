"""Schema migrations on the real server: round trip, status, refusal of a stale schema."""

from __future__ import annotations

import subprocess
import threading
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from ragstore.config import Settings
from ragstore.db import migrations
from ragstore.db.database import Database
from ragstore.db.embedded import pg_bin_dir
from ragstore.errors import DatabaseError, InputError, SchemaMismatchError
from ragstore.runtime import Runtime
from tests.conftest import run_cli


def schema_dump(url: str) -> str:
    out = subprocess.run(
        [str(pg_bin_dir() / "pg_dump"), "--schema-only", "--no-owner", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # pg_dump 17+ prints a random \restrict key per run; it is not part of the schema
    return "\n".join(
        line for line in out.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))
    )


def test_upgrade_downgrade_upgrade_equals_single_upgrade(
    empty_database_url: str, template_url: str
) -> None:
    db = Database(empty_database_url)
    migrations.upgrade(db)
    assert migrations.downgrade(db, "base").current is None
    assert migrations.upgrade(db).is_current
    assert schema_dump(empty_database_url) == schema_dump(template_url)


def test_downgrade_to_base_leaves_no_ragstore_table(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    migrations.upgrade(db)
    migrations.downgrade(db, "base")
    with db.connect() as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename <> 'alembic_version'"
        ).fetchall()
    assert tables == []


def test_concurrent_upgrades_do_not_collide(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    errors: list[BaseException] = []

    def up() -> None:
        try:
            migrations.upgrade(db)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=up) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert migrations.status(db).is_current


def test_commands_refuse_a_schema_behind_the_code(
    empty_database_url: str, tmp_path: object
) -> None:
    rt = Runtime(Settings(database_url=empty_database_url, profile="test"))
    with pytest.raises(SchemaMismatchError, match=r"run `ragstore db upgrade`"):
        _ = rt.db


def test_commands_refuse_a_schema_ahead_of_the_code(empty_database_url: str) -> None:
    db = Database(empty_database_url)
    migrations.upgrade(db)
    with db.connect() as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
        conn.commit()
    rt = Runtime(Settings(database_url=empty_database_url, profile="test"))
    with pytest.raises(
        SchemaMismatchError, match="9999, which this version of ragstore does not know"
    ):
        _ = rt.db


def test_upgrade_sql_prints_the_sql_from_the_database_revision(empty_database_url: str) -> None:
    """``upgrade_sql(db)`` starts at ``db``'s revision (it printed every revision from the
    first whatever the database's); without a database or ``start``, from an empty one."""
    out = migrations.upgrade_sql(None)
    assert "CREATE TABLE chunks" in out
    assert "CREATE EXTENSION IF NOT EXISTS vector" in out
    db = Database(empty_database_url)
    assert "-- Running upgrade  -> 0001" in migrations.upgrade_sql(db)
    migrations.upgrade(db, "0036")
    behind = migrations.upgrade_sql(db)
    assert behind.split("-- Running upgrade ")[1].startswith("0036 -> 0037"), behind[:200]
    assert "CREATE TABLE chunks" not in behind and "-> 0001" not in behind
    assert behind == migrations.upgrade_sql(None, start="0036")
    migrations.upgrade(db)
    assert "Running upgrade" not in migrations.upgrade_sql(db)


@pytest.mark.parametrize("target", ["", " ", "bogus", ":", "@", "base:", "0031+500"])
def test_an_upgrade_target_that_is_no_revision_is_one_line(
    target: str, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Alembic fails some targets on an ``assert`` (and an empty one too), not with its
    CommandError: ``ragstore db upgrade [--sql] --to X`` ended with a traceback."""
    for sql in (["--sql"], []):
        capsys.readouterr()
        assert run_cli("db", "upgrade", *sql, "--to", target) == 65, (sql, target)
        captured = capsys.readouterr()
        assert (
            captured.err.startswith("error[invalid_input]: ") and captured.err.count("\n") == 1
        ), captured.err
        assert captured.out == ""


# the reg* types pg_upgrade refuses in user tables (check_for_data_types_usage in its
# check.c): they hold catalog oids, which a new cluster does not keep
_UNUPGRADABLE = [
    "regcollation",
    "regconfig",
    "regdictionary",
    "regnamespace",
    "regoper",
    "regoperator",
    "regproc",
    "regprocedure",
]


def test_no_column_holds_a_reg_type_pg_upgrade_refuses(template_url: str) -> None:
    """A database with ragstore's schema can move to a new PostgreSQL major version with
    pg_upgrade (revision 0025 stores chunks.ts_config by name, not as a regconfig)."""
    with Database(template_url).connect() as conn:
        found = conn.execute(
            "SELECT c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, NULL)"
            " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND c.relkind IN ('r', 'm', 'p') AND a.attnum > 0 AND NOT a.attisdropped"
            " AND format_type(a.atttypid, NULL) = ANY(%s)",
            (_UNUPGRADABLE,),
        ).fetchall()
    assert [r[0] for r in found] == []


def test_an_upgrade_of_a_schema_ahead_of_the_code_says_so(
    empty_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: object,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``ragstore db upgrade`` by an older ragstore on a database a newer one upgraded said
    "error[invalid_input]: cannot upgrade to 'head': Can't locate revision identified by
    '9999'", blaming the target; it says which revision the database is at, that this
    ragstore does not know it, and what to run, and changes nothing."""
    db = Database(empty_database_url)
    migrations.upgrade(db)
    with db.connect() as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
        conn.commit()
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", empty_database_url)
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RAGSTORE_PROFILE", "test")
    for target in ("head", "0030"):
        capsys.readouterr()
        assert run_cli("db", "upgrade", "--to", target) == 69, target
        err = capsys.readouterr().err
        assert err.startswith("error[schema_mismatch]: ") and err.count("\n") == 1, err
        assert "9999" in err and "does not know" in err and "upgrade ragstore" in err, err
    with pytest.raises(SchemaMismatchError, match="9999, which this version"):
        migrations.upgrade(db)
    assert migrations.status(db).current == "9999"


def test_an_upgrade_to_the_revision_or_below_takes_no_backup_and_says_so(
    empty_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``db upgrade --to REV`` with the database at REV took a whole backup first and kept
    it; at a revision above REV (or ``--to base``) it did that too and then ended with
    status 0, "nothing to do", as if the database were at REV. At REV: nothing to do, no
    backup; below it: one error pointing at ``db downgrade``, no backup."""
    migrations.upgrade(Database(empty_database_url), "0030")
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", empty_database_url)
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RAGSTORE_PROFILE", "test")
    capsys.readouterr()
    assert run_cli("db", "upgrade", "--to", "0030") == 0
    assert capsys.readouterr().out == "schema already at 0030; nothing to do\n"
    for target in ("0020", "base"):
        assert run_cli("db", "upgrade", "--to", target) == 65, target
        err = capsys.readouterr().err
        assert err.startswith("error[invalid_input]: ") and err.count("\n") == 1, err
        assert f"ragstore db downgrade --to {target}" in err, err
    assert not list(tmp_path.glob("backups/*"))
    assert migrations.status(Database(empty_database_url)).current == "0030"


def test_a_bad_target_or_a_backup_that_cannot_be_written_changes_nothing_and_says_how(
    empty_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``db upgrade --to nope`` on a database behind the code took a whole backup (kept on
    disk) before Alembic refused the target; a backup that could not be written ended the
    migration with "cannot create .../backups: File exists" alone. The target is refused
    before any backup; a failed backup says the migration did not run and how to go on."""
    db = Database(empty_database_url)
    migrations.upgrade(db, "0030")
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", empty_database_url)
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RAGSTORE_PROFILE", "test")
    capsys.readouterr()
    for target in ("nope", "003", "0031:0032"):
        assert run_cli("db", "upgrade", "--to", target) == 65, target
        captured = capsys.readouterr()
        assert captured.err.startswith(f"error[invalid_input]: cannot upgrade to {target!r}: ")
        assert captured.err.count("\n") == 1 and captured.out == "", captured
    assert not (tmp_path / "backups").exists()
    (tmp_path / "backups").write_text("")  # the folder cannot be made
    for args in (["upgrade"], ["downgrade", "--to", "0020", "--yes"]):
        assert run_cli("db", *args) == 74, args
        err = capsys.readouterr().err
        assert err.startswith(f"error[backup_failed]: cannot create {tmp_path / 'backups'}: ")
        assert f"the {args[0]} did not start, the schema was not changed" in err, err
        assert "--no-backup" in err and err.count("\n") == 1, err
    assert migrations.status(db).current == "0030"


def test_a_role_that_may_not_create_tables_is_told_what_to_grant(
    pg_admin_uri: str, empty_database_url: str
) -> None:
    """An external database whose role lacks CREATE (PostgreSQL 15 takes it on public
    from all but the owner) failed the upgrade with "permission denied for schema public"
    alone, ``database_error`` as though ragstore's bug; the error says what to grant."""
    from psycopg import sql

    role = f"r_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        db = Database(make_conninfo(empty_database_url, user=role))
        with pytest.raises(DatabaseError, match="permission denied") as caught:
            migrations.upgrade(db)
        assert "GRANT CREATE ON SCHEMA public TO <role>" in caught.value.message
        assert "CREATE EXTENSION vector" in caught.value.message
        assert migrations.status(Database(empty_database_url)).current is None
    finally:
        with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_store_stops_working_once_the_schema_changes_under_it(
    pg_admin_uri: str, template_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The schema was checked only when a Store or server first opened the database: one
    left running across a ``db upgrade`` (or downgrade) went on writing and searching a
    schema its code was not written for, where upgrade.md promises ``schema_mismatch``
    until it is restarted on the matching version. A pooled connection handed out checks
    the revision again at most every SCHEMA_RECHECK_S."""
    from psycopg import sql

    from ragstore import Store
    from ragstore.db import database
    from tests.conftest import TEMPLATE, create_database

    del template_url  # the template is built first
    url = create_database(pg_admin_uri, TEMPLATE)
    monkeypatch.setattr(database, "SCHEMA_RECHECK_S", 0.0)
    head = migrations.known_revisions()[-1]
    with Store(settings=Settings(database_url=url, data_dir=tmp_path, profile="test")) as store:
        store.add_texts("kb", ["before the upgrade"], ids=["a"])
        with psycopg.connect(url, autocommit=True) as admin:
            for revision, refused in (("9999", "does not know"), (head, None)):
                admin.execute(
                    sql.SQL("UPDATE alembic_version SET version_num = {}").format(
                        sql.Literal(revision)
                    )
                )
                if refused is None:
                    assert store.get_texts("kb", ["a"])[0]["text"] == "before the upgrade"
                    continue
                with pytest.raises(SchemaMismatchError, match=refused):
                    store.add_texts("kb", ["after the upgrade"], ids=["b"])
                with pytest.raises(SchemaMismatchError, match=refused):
                    store.search("kb", "upgrade")
        assert [t["id"] for t in store.get_texts("kb", ["a", "b"])] == ["a"]


@pytest.mark.parametrize("lost", ["row", "table"])
def test_a_database_whose_revision_was_lost_is_refused_and_left_as_it_is(
    empty_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    lost: str,
) -> None:
    """ragstore's tables with the ``alembic_version`` row (or table) lost were taken for a
    brand-new database: ``db upgrade`` ran the first revision over them and failed saying
    they were "not ragstore's" (a database of its own, it advised). Each way in now gives
    one error naming the lost revision and how to record it, and changes nothing."""
    db = Database(empty_database_url)
    migrations.upgrade(db)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO collections (name) VALUES ('kept')")
        conn.execute(
            "DELETE FROM alembic_version" if lost == "row" else "DROP TABLE alembic_version"
        )
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", empty_database_url)
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RAGSTORE_PROFILE", "test")
    head = migrations.head_revision()
    capsys.readouterr()
    assert run_cli("db", "upgrade") == 69
    err = capsys.readouterr().err
    assert err.startswith("error[schema_mismatch]: ") and err.count("\n") == 1, err
    assert "holds ragstore's tables" in err and "not ragstore's" not in err, err
    assert f"INSERT INTO alembic_version (version_num) VALUES ('{head}')" in err, err
    for args in (("upgrade", "--to", "base"), ("downgrade", "--to", "base", "--yes"), ("status",)):
        # they said "already at (empty)" / "holds no ragstore schema" / "(empty database)"
        assert run_cli("db", *args) == 69, args
        assert "but no schema revision" in capsys.readouterr().err, args
    for call in (
        lambda: migrations.upgrade(db),
        lambda: migrations.upgrade(db, "0001"),
        lambda: Runtime(Settings(database_url=empty_database_url, profile="test")).db,
    ):
        with pytest.raises(SchemaMismatchError, match="but no schema revision"):
            call()
    assert migrations.holds_ragstore_data(db)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        assert conn.execute("SELECT name FROM collections").fetchall() == [("kept",)]
        if lost == "table":
            conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES (%s)", (head,))
    assert migrations.status(db).is_current


def test_a_brand_new_or_downgraded_database_is_still_set_up(empty_database_url: str) -> None:
    """After ``downgrade --to base`` the empty ``alembic_version`` table stays: no ragstore
    table is left, so it is a new database and an upgrade sets it up."""
    db = Database(empty_database_url)
    assert not migrations.holds_ragstore_data(db)
    migrations.upgrade(db)
    migrations.downgrade(db, "base")
    assert not migrations.holds_ragstore_data(db)
    assert migrations.upgrade(db).is_current


def test_an_upgrade_below_the_database_in_python_is_refused(empty_database_url: str) -> None:
    """``migrations.upgrade(db, REV)`` with the database above REV did nothing and returned
    the status as if done (the CLI refused it; the library did not)."""
    db = Database(empty_database_url)
    migrations.upgrade(db, "0030")
    for target in ("0020", "base"):
        with pytest.raises(InputError, match=f"ragstore db downgrade --to {target}"):
            migrations.upgrade(db, target)
    assert migrations.upgrade(db, "0030").current == "0030"
    assert migrations.upgrade(db, "0031").current == "0031"
    assert migrations.status(db).current == "0031"
