"""Backup -> damage -> restore gives identical data; bad archives are refused before
anything is touched; a schema upgrade backs up first and its backup rolls it back."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from ragstore import backup
from ragstore.db import field_indexes, migrations
from ragstore.db.database import Database
from ragstore.db.embedded import pg_bin_dir
from ragstore.db.field_indexes import FieldIndex
from tests.conftest import run_cli
from tests.imports.helpers import vectors, write_jsonl
from tests.sigterm import backends_where, sigterm_when


def full_dump(url: str) -> str:
    """Schema and every row, as pg_dump prints them (its random \\restrict key left out)."""
    out = subprocess.run(
        [str(pg_bin_dir() / "pg_dump"), "--no-owner", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return "\n".join(
        line for line in out.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))
    )


@pytest.fixture(scope="module")
def populated(cli_env_module: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("pop")
    for name, seed in (("alpha", 1), ("beta", 2)):
        src = write_jsonl(
            tmp / f"{name}.jsonl", [f"{name}{i}" for i in range(50)], vectors(50, 12, seed=seed)
        )
        assert (
            run_cli(
                "import",
                str(src),
                "-c",
                name,
                "--model",
                "bk@v1",
                "--dimension",
                "12",
                "--no-backup",
            )
            == 0
        )
    # an indexed metadata field: its indexes and their comments are part of what is restored
    assert run_cli("db", "index-field", "year", "--type", "number") == 0
    return cli_env_module["RAGSTORE_DATABASE_URL"]


@pytest.fixture(scope="module")
def cli_env_module(
    settings: object, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    import os

    env = {
        "RAGSTORE_DATABASE_URL": database_url,
        "RAGSTORE_DATA_DIR": str(tmp_path_factory.mktemp("bkdata")),
        "RAGSTORE_PROFILE": "test",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_backup_damage_restore_gives_identical_data(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = full_dump(populated)
    archive = tmp_path / "before.dump"
    assert run_cli("backup", str(archive)) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"backup: {archive} (")
    assert "at schema revision " + migrations.head_revision() in out
    assert "2 collections, 100 documents, 100 chunks" in out
    # damage: rows deleted, an embedding table dropped, a new collection, settings changed
    with psycopg.connect(populated) as conn:
        conn.execute("DELETE FROM documents WHERE source LIKE 'alpha1%'")
        table = conn.execute(
            "SELECT s.table_name FROM collections c JOIN embedding_spaces s"
            " ON s.id = c.active_space_id WHERE c.name = 'beta'"
        ).fetchone()
        assert table is not None
        conn.execute(psycopg.sql.SQL("DROP TABLE {}").format(psycopg.sql.Identifier(table[0])))
        conn.execute("UPDATE collections SET settings = '{\"damaged\": true}'")
        index = FieldIndex(("year",), "number").name("documents")
        conn.execute(psycopg.sql.SQL("DROP INDEX {}").format(psycopg.sql.Identifier(index)))
    src = write_jsonl(tmp_path / "gamma.jsonl", ["g1", "g2"], vectors(2, 12, seed=3))
    assert (
        run_cli(
            "import",
            str(src),
            "-c",
            "gamma",
            "--model",
            "bk@v1",
            "--dimension",
            "12",
            "--no-backup",
        )
        == 0
    )
    assert full_dump(populated) != before
    capsys.readouterr()
    assert run_cli("restore", str(archive), "--yes") == 0
    out = capsys.readouterr().out
    assert f"restored {archive} into " in out and "2 collections, 100 documents" in out
    assert full_dump(populated) == before
    with psycopg.connect(populated) as conn:
        assert field_indexes.indexed(conn) == [FieldIndex(("year",), "number")]


def test_damaged_archive_is_refused_and_nothing_changes(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive)) == 0
    before = full_dump(populated)
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    assert run_cli("restore", str(archive), "--yes") == 65
    err = capsys.readouterr().err
    assert err.startswith(
        f"error[backup_invalid]: {archive}: sha256 differs from the one recorded at backup time"
    )
    Path(f"{archive}.json").unlink()  # without the sidecar, pg_restore itself refuses it
    assert run_cli("restore", str(archive), "--yes") == 65
    assert "is not a readable pg_dump custom-format archive" in capsys.readouterr().err
    # cut near its end, its table of contents still reads: the data does not
    archive.write_bytes(data[:-200])
    assert run_cli("restore", str(archive), "--yes", "--unchecked") == 65
    err = capsys.readouterr().err
    assert err.startswith(f"error[backup_invalid]: {archive} is truncated or damaged"), err
    assert full_dump(populated) == before


def test_an_archive_without_its_sidecar_is_refused_unless_told(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without its sidecar nothing checked an archive's bytes: pg_restore reads its table
    of contents (the SQL of every table, index and function, uncompressed) as it finds
    it, and an archive with one letter of an index's comment flipped restored with exit 0
    into a database whose field index was another field's. It is refused unless
    ``--unchecked``, nothing changed."""
    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive)) == 0
    Path(f"{archive}.json").unlink()
    data = archive.read_bytes()
    at = data.index(b'IS \'{"field": ["year"]') + len(b'IS \'{"field": ["y')
    archive.write_bytes(data[:at] + b"E" + data[at + 1 :])  # "year" -> "yEar"
    before = full_dump(populated)
    capsys.readouterr()
    assert run_cli("restore", str(archive), "--yes") == 65
    err = capsys.readouterr().err
    assert err.startswith(
        f"error[backup_invalid]: {archive} has no sidecar ({archive}.json, written with it"
    ), err
    assert err.rstrip().endswith("or pass --unchecked to restore the archive as it is"), err
    assert full_dump(populated) == before
    archive.write_bytes(data)  # told, an archive without its sidecar is restored
    assert run_cli("restore", str(archive), "--yes", "--no-backup", "--unchecked") == 0
    assert full_dump(populated) == before


def test_a_sidecar_that_is_a_folder_or_records_no_sha256_is_one_error(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sidecar that was a folder, or whose sha256 was no string (other valid JSON),
    failed the restore with a Python traceback (IsADirectoryError, TypeError)."""
    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive)) == 0
    side = Path(f"{archive}.json")
    recorded = json.loads(side.read_text())
    side.write_text(json.dumps({**recorded, "sha256": 5}))
    capsys.readouterr()
    assert run_cli("restore", str(archive), "--yes") == 65
    assert capsys.readouterr().err == (
        f"error[backup_invalid]: {side}: unreadable backup description (its sha256 is not "
        "64 hex digits: 5); nothing was restored: restore another backup\n"
    )
    side.unlink()
    side.mkdir()
    assert run_cli("restore", str(archive), "--yes") == 65
    assert capsys.readouterr().err.startswith(
        f"error[backup_invalid]: {side} cannot be read (Is a directory); nothing was restored"
    )


def test_a_file_name_too_long_for_the_backup_or_its_sidecar_is_refused_before_the_dump(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A name over the file system's limit failed ``backup`` and ``restore`` with a
    Python traceback ("File name too long"); one a few bytes under it was dumped whole,
    then failed as its sidecar's temporary name was made, with "check the folder's free
    space and permissions". Both are refused before the dump, nothing written."""
    for length in (256, 246):  # over the limit; over it for ``.NAME.json.partial``
        path = tmp_path / ("a" * (length - 5) + ".dump")
        capsys.readouterr()
        assert run_cli("backup", str(path)) == 74
        err = capsys.readouterr().err
        assert err.startswith(
            f"error[backup_failed]: cannot write the backup to {path}: its file name is "
            f"{length} bytes long, and the file system allows 241 for a backup's name"
        ), err
        assert err.endswith("nothing was written: choose a shorter name\n"), err
    assert list(tmp_path.iterdir()) == []
    missing = tmp_path / ("a" * 256)
    assert run_cli("restore", str(missing), "--yes") == 66
    assert capsys.readouterr().err == (
        f"error[path_not_found]: {missing}: File name too long; nothing was restored: name "
        "the archive's file\n"
    )


def _archived_rows(archive: Path, table: str) -> int:
    """How many rows of ``table`` the archive holds (its COPY data, as pg_restore prints it)."""
    out = subprocess.run(
        [str(pg_bin_dir() / "pg_restore"), "--data-only", "--table", table, "-f", "-", archive],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rows = out.split(f"COPY public.{table} ", 1)[1].split("\n", 1)[1].split("\n\\.\n", 1)[0]
    return len(rows.splitlines())


def test_a_backup_describes_the_rows_its_archive_holds(
    populated: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sidecar's revision and counts were read in a transaction of their own before
    pg_dump took its snapshot: a write committed in between was in the archive and not in
    the counts the backup printed. Both now come from the one snapshot."""
    real = backup._tool

    def write_then(name: str) -> str:
        if name == "pg_dump":  # after the counts, before pg_dump starts: a concurrent write
            with psycopg.connect(populated) as conn:
                conn.execute("INSERT INTO collections (name, settings) VALUES ('late', '{}')")
        return real(name)

    monkeypatch.setattr(backup, "_tool", write_then)
    archive = tmp_path / "during.dump"
    try:
        assert run_cli("backup", str(archive)) == 0
    finally:
        with psycopg.connect(populated) as conn:
            conn.execute("DELETE FROM collections WHERE name = 'late'")
    info = backup.read_info(archive)
    assert info is not None
    for table in ("collections", "documents", "chunks"):
        assert info.counts[table] == _archived_rows(archive, table), (table, info.counts)


def test_restore_of_a_missing_file_names_it(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("restore", str(tmp_path / "nope.dump"), "--yes") == 66
    assert f"{tmp_path / 'nope.dump'}: no such file or directory" in capsys.readouterr().err


def test_db_upgrade_backs_up_first_and_restore_rolls_it_back(
    empty_database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    revisions = migrations.known_revisions()
    older = revisions[-2]
    db = Database(empty_database_url)
    migrations.upgrade(db, older)
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", empty_database_url)
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(tmp_path))
    assert run_cli("db", "upgrade") == 0
    out = capsys.readouterr().out
    backup_line = next(line for line in out.splitlines() if line.startswith("backup: "))
    archive = Path(backup_line.split()[1])
    assert archive.parent == tmp_path / "backups" and archive.name.endswith("-upgrade.dump")
    # the whole database: readable by this user alone, whatever the umask (0022 here)
    assert stat.S_IMODE(archive.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(f"{archive}.json").stat().st_mode) == 0o600
    assert f"upgraded {older} -> {revisions[-1]}" in out
    assert migrations.status(db).current == revisions[-1]
    assert run_cli("restore", str(archive), "--yes") == 0
    assert migrations.status(db).current == older
    # the restore backed up what it replaced (the upgraded database) before replacing it
    out = capsys.readouterr().out
    replaced = Path(next(ln for ln in out.splitlines() if ln.startswith("backup: ")).split()[1])
    assert replaced.name.endswith("-restore.dump") and replaced.parent == archive.parent
    assert run_cli("db", "upgrade", "--no-backup") == 0
    assert "backup:" not in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "backups").glob("*.dump")) == sorted(
        [archive.name, replaced.name]
    )
    # and undoing the restore with it brings back what it replaced: the upgraded schema
    assert run_cli("restore", str(replaced), "--yes", "--no-backup") == 0
    assert migrations.status(db).current == revisions[-1]
    assert "backup:" not in capsys.readouterr().out


def test_a_backup_that_cannot_be_written_is_one_error_and_leaves_no_file(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pg_dump (or its temporary file) failing, and the cleanup after it failing too (a
    read-only volume refuses even the unlink of a file that is not there; here the
    temporary name is taken by a folder), is ``backup_failed``, not a traceback of the
    cleanup; a sidecar that cannot be written fails the backup and takes the archive with
    it."""
    archive = tmp_path / "b.dump"
    (tmp_path / ".b.dump.partial").mkdir()
    capsys.readouterr()
    assert run_cli("backup", str(archive)) == 74
    err = capsys.readouterr().err
    # the temporary file is made before pg_dump runs; its error names the path given
    assert err.startswith(f"error[backup_failed]: cannot write the backup to {archive}: ")
    assert ".partial" not in err
    assert not archive.exists()
    (tmp_path / ".b.dump.partial").rmdir()
    Path(f"{archive}.json").mkdir()
    assert run_cli("backup", str(archive)) == 74
    err = capsys.readouterr().err
    assert err.startswith(f"error[backup_failed]: cannot write {archive}.json") and err[-1] == "\n"
    assert not archive.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.dump.json"]


def test_a_backup_onto_an_existing_file_is_refused_unless_told_to_overwrite(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ragstore backup last-week.dump`` replaced last week's backup with today's; it is
    refused and the file kept, and ``--overwrite`` replaces archive and sidecar whole."""
    archive = tmp_path / "last-week.dump"
    assert run_cli("backup", str(archive)) == 0
    old = archive.read_bytes()
    old_side = Path(f"{archive}.json").read_text()
    (tmp_path / "link.dump").symlink_to(archive)
    for target in (archive, tmp_path / "link.dump"):
        capsys.readouterr()
        assert run_cli("backup", str(target)) == 65
        assert capsys.readouterr().err == (
            f"error[conflict]: cannot write the backup to {target}: a file of that name "
            "exists (an earlier backup?) and was left as it is; choose a new file's name or "
            "a folder, or pass --overwrite to replace it\n"
        )
    assert archive.read_bytes() == old and Path(f"{archive}.json").read_text() == old_side
    (tmp_path / "settings.json").write_text('{"mine": true}')  # the sidecar's name: taken
    assert run_cli("backup", str(tmp_path / "settings")) == 65
    assert f"cannot write the backup to {tmp_path / 'settings.json'}: a file of" in (
        capsys.readouterr().err
    )
    assert (tmp_path / "settings.json").read_text() == '{"mine": true}'
    (tmp_path / "settings.json").unlink()
    with psycopg.connect(populated) as conn:
        conn.execute("INSERT INTO collections (name, settings) VALUES ('later', '{}')")
    try:
        assert run_cli("backup", str(archive), "--overwrite") == 0
    finally:
        with psycopg.connect(populated) as conn:
            conn.execute("DELETE FROM collections WHERE name = 'later'")
    info = backup.check_archive(archive)  # the new sidecar describes the new archive
    assert info is not None and info.counts["collections"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "last-week.dump",
        "last-week.dump.json",
        "link.dump",
    ]


def test_an_overwrite_of_a_symbolic_link_is_refused_and_leaves_link_and_target(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``backup LINK --overwrite`` renamed the new archive over the link: the link the
    user kept was gone and the file it pointed to left as it was (written through the
    link, the backup would land where the user did not name). Either link, the archive's
    or its sidecar's, is now refused before anything is dumped."""
    target = tmp_path / "kept.dump"
    target.write_bytes(b"kept")
    link = tmp_path / "latest.dump"
    link.symlink_to(target)
    capsys.readouterr()
    assert run_cli("backup", str(link), "--overwrite") == 65
    assert capsys.readouterr().err == (
        f"error[conflict]: cannot write the backup to {link}: it is a symbolic link (to "
        f"{target}), which an overwrite does not replace or write through, and it was left "
        "as it is; name the file it points to, or a new file's name or a folder\n"
    )
    assert link.is_symlink() and target.read_bytes() == b"kept"
    side_link = tmp_path / "other.dump.json"
    side_link.symlink_to(target)
    assert run_cli("backup", str(tmp_path / "other.dump"), "--overwrite") == 65
    assert f"cannot write the backup to {side_link}: it is a symbolic link" in (
        capsys.readouterr().err
    )
    assert side_link.is_symlink() and target.read_bytes() == b"kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "kept.dump",
        "latest.dump",
        "other.dump.json",
    ]


def test_a_backup_onto_a_device_or_pipe_is_refused_and_leaves_it_alone(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The archive is renamed over its path: a named pipe (and, as root, /dev/null) was
    replaced by a plain file with a sidecar beside it, and the backup reported as done."""
    import os

    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    (tmp_path / "link").symlink_to(pipe)
    for target in (pipe, tmp_path / "link"):
        capsys.readouterr()
        assert run_cli("backup", str(target)) == 74
        err = capsys.readouterr().err
        assert err == (
            f"error[backup_failed]: cannot write the backup to {target}: it is not a regular "
            "file or folder (a device, pipe or socket); give a new file's path or a folder\n"
        )
    assert stat.S_ISFIFO(pipe.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "pipe"]


def test_restore_of_an_archive_that_is_no_ragstore_backup_is_refused(
    populated: str,
    empty_database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A pg_dump of another database (no ragstore schema in it) would replace every
    collection with tables ragstore cannot use, and a later command's automatic schema
    set-up would trip over them; it is refused before anything is dropped."""
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE documents (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO documents VALUES (1, 'not ragstore')")
    foreign = tmp_path / "other.dump"
    dump = [str(pg_bin_dir() / "pg_dump"), "--format=custom", "--file", str(foreign)]
    subprocess.run([*dump, empty_database_url], check=True)
    before = full_dump(populated)
    capsys.readouterr()
    assert run_cli("restore", str(foreign), "--yes") == 65
    err = capsys.readouterr().err
    assert err.startswith(f"error[backup_invalid]: {foreign} holds no ragstore schema")
    assert full_dump(populated) == before


def test_a_restore_into_another_applications_database_is_refused(
    populated: str,
    empty_database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """RAGSTORE_DATABASE_URL naming another application's database: the restore dropped
    its tables (everything in public) and, with no ragstore schema there, took no backup
    first. It is refused before anything is changed."""
    archive = tmp_path / "ours.dump"
    assert run_cli("backup", str(archive)) == 0
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE invoices (id int PRIMARY KEY, total numeric)")
        conn.execute("INSERT INTO invoices VALUES (1, 9.5)")
        conn.execute("CREATE VIEW big_invoices AS SELECT * FROM invoices WHERE total > 5")
    before = full_dump(empty_database_url)
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", empty_database_url)
    capsys.readouterr()
    assert run_cli("restore", str(archive), "--yes") == 65
    err = capsys.readouterr().err
    assert err.startswith("error[conflict]: ") and err.count("\n") == 1, err
    assert "holds tables that are not ragstore's (big_invoices, invoices)" in err
    assert "Nothing was changed" in err
    assert full_dump(empty_database_url) == before
    with psycopg.connect(empty_database_url, autocommit=True) as conn:  # an empty one: fine
        conn.execute("DROP VIEW big_invoices")
        conn.execute("DROP TABLE invoices")
    assert run_cli("restore", str(archive), "--yes") == 0
    assert migrations.status(Database(empty_database_url)).current is not None


def test_schema_set_up_over_foreign_tables_is_one_error(
    empty_database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A database that holds another application's ``documents`` table: the upgrade's
    error is one line naming the clash (it was a SQLAlchemy traceback quoting the whole
    first revision)."""
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE documents (id int PRIMARY KEY, body text)")
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", empty_database_url)
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(tmp_path))
    capsys.readouterr()
    status = run_cli("db", "upgrade", "--no-backup")
    err = capsys.readouterr().err
    assert status == 65, err
    assert err.startswith("error[") and err.count("\n") == 1, err
    assert 'relation "documents" already exists' in err
    assert migrations.status(Database(empty_database_url)).current is None


def test_a_session_open_across_a_restore_still_sends_vectors(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A running server's pooled sessions know the ``vector`` type by its OID. A restore
    that dropped and re-created the extension gave the type a new OID, and every search of
    a server left running failed from then on ("cache lookup failed for type N") until it
    was restarted; the extension is kept as it is."""
    archive = tmp_path / "live.dump"
    assert run_cli("backup", str(archive)) == 0
    with psycopg.connect(populated, autocommit=True) as conn:
        register_vector(conn)
        query = "SELECT %s <-> %s"
        a, b = np.ones(3, dtype=np.float32), np.zeros(3, dtype=np.float32)
        assert conn.execute(query, (a, b)).fetchone() is not None
        capsys.readouterr()
        assert run_cli("restore", str(archive), "--yes") == 0
        row = conn.execute(query, (a, b)).fetchone()
        assert row is not None and abs(float(row[0]) - 3**0.5) < 1e-6


def test_an_archive_of_a_newer_schema_is_refused_and_nothing_changes(
    populated: str,
    cli_env_module: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An archive written by a newer ragstore (a revision this code does not know) was
    restored, said so with exit 0, and left a database every command then refused as
    ahead of the code, the one it replaced gone; it is refused before anything is
    dropped, with the version that can restore it."""
    with psycopg.connect(populated, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
        archive = tmp_path / "newer.dump"
        try:
            assert run_cli("backup", str(archive)) == 0
        finally:
            conn.execute(
                "UPDATE alembic_version SET version_num = %s", (migrations.head_revision(),)
            )
    before = full_dump(populated)
    backups = Path(cli_env_module["RAGSTORE_DATA_DIR"]) / "backups"
    archives = sorted(backups.glob("*.dump"))
    capsys.readouterr()
    assert run_cli("restore", str(archive), "--yes") == 69
    err = capsys.readouterr().err
    assert err.startswith(
        f"error[schema_mismatch]: {archive} holds a database at schema revision 9999, which "
        "this version of ragstore does not know"
    ), err
    assert err.count("\n") == 1 and "nothing was changed" in err
    assert full_dump(populated) == before
    # refused before the backup of what a restore replaces: no archive made for nothing
    assert sorted(backups.glob("*.dump")) == archives


def test_a_restore_stopped_by_sigterm_rolls_back_and_says_so(
    populated: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """SIGTERM (a service manager, ``timeout``) killed the command outright: no word of
    what happened, the whole database as SQL left in a temporary folder, and psql left
    running, to commit the restore after the command had died. It now stops the restore's
    transaction, waits for it to roll back, removes its files and says so."""
    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive)) == 0
    with psycopg.connect(populated) as conn:
        conn.execute("DELETE FROM documents WHERE source = 'alpha1'")
    before = full_dump(populated)
    holder = psycopg.connect(populated)
    holder.execute("LOCK TABLE documents IN ACCESS SHARE MODE")  # the restore's drop waits

    def restore_waits() -> bool:
        return (
            backends_where(populated, "application_name = 'psql' AND wait_event = 'relation'") > 0
        )

    def release_later() -> None:
        # once the signal is out (unfixed, psql went on when the lock was gone); waiting
        # for it, not a fixed time, so that a slow start cannot let the restore through
        deadline = time.monotonic() + 60
        while not sent[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1)
        holder.commit()

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    capsys.readouterr()
    with sigterm_when(restore_waits) as sent:
        releaser = threading.Timer(0, release_later)
        releaser.start()
        status = run_cli("restore", str(archive), "--yes")
        releaser.join()
    holder.close()
    assert sent[0]
    err = capsys.readouterr().err
    assert status == 143, err
    said, _, kept = err.partition("; the backup of what it replaced is kept: ")
    assert said == "interrupted by SIGTERM: nothing of " + str(archive) + (
        " was restored; the database is as it was"
    ), err
    assert Path(kept.rstrip("\n")).name.endswith("-restore.dump"), err
    time.sleep(1)
    with psycopg.connect(populated, autocommit=True) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'psql'"
        ).fetchone()
    assert left == (0,)
    assert full_dump(populated) == before
    assert list((tmp_path / "tmp").iterdir()) == []


@contextlib.contextmanager
def _restore_backend_ended(url: str) -> Iterator[None]:
    """Run the block (a restore) with ``documents`` locked, so that the restore's drop
    waits; once psql waits for the lock its backend is ended (a failover, an
    administrator), then the lock is let go."""
    holder = psycopg.connect(url)
    holder.execute("LOCK TABLE documents IN ACCESS SHARE MODE")  # the restore's drop waits
    waiting = "application_name = 'psql' AND wait_event = 'relation'"

    def end_the_restore() -> None:
        deadline = time.monotonic() + 60
        while not backends_where(url, waiting) and time.monotonic() < deadline:
            time.sleep(0.05)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE " + waiting)
        holder.commit()

    ender = threading.Thread(target=end_the_restore)
    ender.start()
    try:
        yield
    finally:
        ender.join()
        holder.close()


def test_a_restore_whose_connection_is_ended_says_what_the_database_holds(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """psql failing (its backend ended: a failover, an administrator) was reported with
    psql's words alone, which say nothing of the database; the restore now reads back
    whether its transaction committed and says so."""
    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive)) == 0
    with psycopg.connect(populated) as conn:
        conn.execute("DELETE FROM documents WHERE source = 'alpha2'")
    before = full_dump(populated)
    capsys.readouterr()
    with _restore_backend_ended(populated):
        status = run_cli("restore", str(archive), "--yes", "--no-backup")
    err = capsys.readouterr().err
    assert status == 74, err
    assert err.startswith(f"error[backup_failed]: restoring {archive} into "), err
    assert "terminating connection" in err and "NOTICE" not in err, err  # psql's error
    assert err.endswith(f"; nothing of {archive} was restored; the database is as it was\n"), err
    assert full_dump(populated) == before


def _end_own_backend(url: str, conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """End ``conn``'s backend from another session (a restart, a failover, an
    administrator), so that its next statement meets a connection the server closed."""
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 10000)", (conn.info.backend_pid,))


def test_a_restore_whose_counts_cannot_be_read_after_its_commit_says_it_was_restored(
    populated: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The row counts read after a committed restore failed (the database restarted): the
    command ended with that database error (exit 69) though the restore had taken effect.
    The counts are read again; where they stay unreadable the restore is reported done,
    saying how to read them."""
    from ragstore.db import catalog

    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive)) == 0
    info = backup.read_info(archive)
    assert info is not None
    real = catalog.row_counts
    ended = [0]

    def ended_once(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, int]:
        if not ended[0]:
            ended[0] += 1
            _end_own_backend(populated, conn)
        return real(conn)

    monkeypatch.setattr(backup, "READ_BACK_DELAYS", (0.05, 0.05), raising=False)
    monkeypatch.setattr(catalog, "row_counts", ended_once)
    with psycopg.connect(populated) as conn:
        conn.execute("DELETE FROM documents WHERE source = 'alpha3'")
    capsys.readouterr()
    status = run_cli("restore", str(archive), "--yes", "--no-backup")
    out, err = capsys.readouterr()
    assert status == 0, err
    assert ended[0] == 1
    assert f"documents: {info.counts['documents']}" not in out  # printed as "N documents"
    assert f"{info.counts['documents']} documents" in out, out

    def ended_always(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, int]:
        ended[0] += 1
        _end_own_backend(populated, conn)
        return real(conn)

    with psycopg.connect(populated) as conn:
        conn.execute("DELETE FROM documents WHERE source = 'alpha3'")
    monkeypatch.setattr(catalog, "row_counts", ended_always)
    status = run_cli("restore", str(archive), "--yes", "--no-backup")
    out, err = capsys.readouterr()
    assert status == 0, err
    assert ended[0] == 4  # three tries
    assert out.startswith(f"restored {archive} into "), out
    assert "could not be read afterwards" in out and "ragstore db status" in out, out
    monkeypatch.setattr(catalog, "row_counts", real)
    with psycopg.connect(populated) as conn:  # it was restored
        assert conn.execute(
            "SELECT count(*) FROM documents WHERE source = 'alpha3'"
        ).fetchone() == (1,)


def test_a_restore_whose_outcome_cannot_be_read_says_it_is_unknown(
    populated: str,
    pg_admin_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """psql's connection ended and the database refused every connection after it (a
    restart): the restore was reported as failed (backup_failed, 74) although it may have
    committed. It now says the outcome is unknown and how to find out (outcome_unknown,
    76)."""
    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive)) == 0
    with psycopg.connect(populated) as conn:
        conn.execute("DELETE FROM documents WHERE source = 'alpha4'")
    before = full_dump(populated)
    name = psycopg.conninfo.conninfo_to_dict(populated)["dbname"]
    holder = psycopg.connect(populated)
    holder.execute("LOCK TABLE documents IN ACCESS SHARE MODE")  # the restore's drop waits
    waiting = "application_name = 'psql' AND wait_event = 'relation'"

    def end_the_restore() -> None:
        deadline = time.monotonic() + 60
        while not backends_where(populated, waiting) and time.monotonic() < deadline:
            time.sleep(0.05)
        with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                f"datname = '{name}' AND " + waiting
            )
        holder.commit()

    monkeypatch.setattr(backup, "READ_BACK_DELAYS", (0.05,), raising=False)
    ender = threading.Thread(target=end_the_restore)
    ender.start()
    capsys.readouterr()
    try:
        status = run_cli("restore", str(archive), "--yes", "--no-backup")
    finally:
        ender.join()
        holder.close()
        with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    err = capsys.readouterr().err
    assert status == 76, err
    assert err.startswith(f"error[outcome_unknown]: restoring {archive} into "), err
    assert f"whether the restore of {archive} committed could not be read" in err, err
    assert "ragstore db status" in err and "backup_failed" not in err, err
    assert full_dump(populated) == before


def test_a_restore_whose_own_backup_cannot_be_written_says_it_did_not_start(
    populated: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The backup a restore takes of what it replaces, where it could not be written,
    ended the restore with "cannot create .../backups: File exists" alone: nothing said
    why the restore stopped there, nor how to go on. It now says, as `db upgrade` does."""
    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive)) == 0
    before = full_dump(populated)
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "backups").write_text("")  # the folder cannot be made
    capsys.readouterr()
    assert run_cli("restore", str(archive), "--yes") == 74
    err = capsys.readouterr().err
    assert err.startswith(f"error[backup_failed]: cannot create {tmp_path / 'data' / 'backups'}")
    assert "was restored; the database is as it was; the restore did not start" in err, err
    assert "--no-backup" in err and err.count("\n") == 1, err
    assert full_dump(populated) == before


def test_a_restore_that_fails_after_its_backup_names_that_backup(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --json, the backup a restore takes of what it replaces was named nowhere when
    the restore then failed (here its connection ended); the error now names it."""
    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive)) == 0
    capsys.readouterr()
    with _restore_backend_ended(populated):
        status = run_cli("restore", str(archive), "--yes", "--json")
    out, err = capsys.readouterr()
    assert status == 74, err
    assert out == ""
    kept = Path(err.rstrip("\n").rsplit("; the backup of what it replaced is kept: ", 1)[1])
    assert kept.name.endswith("-restore.dump") and kept.exists(), err
    assert backup.read_info(kept) is not None


def _dump_waits_then(url: str, then: Callable[[], None]) -> Callable[[], None]:
    """Hold a table lock so that the next pg_dump waits for it; once it does, run
    ``then`` and let the dump go on. Returns a join for the thread that does so."""
    holder = psycopg.connect(url)
    holder.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
    dumping = "application_name = 'pg_dump' AND wait_event_type = 'Lock'"

    def watch() -> None:
        deadline = time.monotonic() + 60
        while not backends_where(url, dumping) and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            then()
        finally:
            holder.commit()
            holder.close()

    thread = threading.Thread(target=watch)
    thread.start()
    return thread.join


def test_a_backup_stopped_by_sigterm_stops_pg_dump_and_leaves_no_file(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM during ``ragstore backup`` killed the command without a word and left
    pg_dump running on its own, writing a whole copy of the database to a hidden
    ``.partial`` file nothing removed. pg_dump is stopped, its file removed, the command
    says no backup was taken, and a file it was to overwrite is as it was."""
    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive)) == 0
    old = archive.read_bytes()
    holder = psycopg.connect(populated)
    holder.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")  # pg_dump waits for it
    dumping = "application_name = 'pg_dump' AND wait_event_type = 'Lock'"
    capsys.readouterr()
    sent_box: list[list[bool]] = []

    def release_later() -> None:  # once the signal is out (unfixed, the dump went on)
        deadline = time.monotonic() + 60
        while not (sent_box and sent_box[0][0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1)
        holder.commit()

    with sigterm_when(lambda: backends_where(populated, dumping) > 0) as sent:
        sent_box.append(sent)
        releaser = threading.Thread(target=release_later)
        releaser.start()
        status = run_cli("backup", str(archive), "--overwrite")
        releaser.join()
    holder.close()
    out, err = capsys.readouterr()
    assert sent[0]
    assert status == 143, (out, err)
    assert err == (
        "interrupted by SIGTERM: no backup was taken (its unfinished file was removed); "
        f"{archive} is as it was\n"
    ), err
    time.sleep(1)
    assert backends_where(populated, "application_name = 'pg_dump'") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.dump", "b.dump.json"]
    assert archive.read_bytes() == old


def test_an_interrupt_as_a_backup_names_its_files_waits_for_both_names(
    populated: str, tmp_path: Path
) -> None:
    """A SIGTERM between the archive's name and its sidecar's left a named archive with no
    sidecar (restored unchecked) and the sidecar's hidden ``.partial`` file behind; it is
    held until both have their names and then says the backup is complete."""
    import os
    import signal

    from ragstore.cli.signals import terminate_as_interrupt

    archive = tmp_path / "b.dump"
    with (
        pytest.raises(backup.BackupInterrupted) as stopped,
        terminate_as_interrupt(),
        backup._finishing(archive),
    ):
        os.kill(os.getpid(), signal.SIGTERM)  # as the archive gets its name
        archive.write_bytes(b"archive")
        Path(f"{archive}.json").write_text("{}")
    assert stopped.value.what == (
        f"the backup was complete before it stopped and is kept: {archive}"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.dump", "b.dump.json"]


def test_an_overwrite_whose_sidecar_cannot_be_named_keeps_the_earlier_backup(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``backup --overwrite`` renamed the new archive over the old one, then failed to
    name the new sidecar and deleted the new archive: both backups were gone, and the
    error said only that the new one was not kept. The earlier archive is now kept until
    both new files have their names, and put back."""
    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive)) == 0
    old = archive.read_bytes()
    side = Path(f"{archive}.json")
    saved = tmp_path / "saved.json"

    def block_the_sidecar() -> None:  # its name taken by a folder while pg_dump runs
        side.rename(saved)
        side.mkdir()

    join = _dump_waits_then(populated, block_the_sidecar)
    capsys.readouterr()
    try:
        status = run_cli("backup", str(archive), "--overwrite")
    finally:
        join()
    err = capsys.readouterr().err
    assert status == 74, err
    assert err.startswith(f"error[backup_failed]: cannot write {side}: "), err
    assert f"the backup was not kept, and the earlier backup at {archive} is as it was" in err
    assert archive.read_bytes() == old
    side.rmdir()
    saved.rename(side)
    assert backup.check_archive(archive) is not None  # the earlier pair, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.dump", "b.dump.json"]


def test_a_restore_refuses_to_drop_a_users_objects_in_other_schemas(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user's view, materialized view and foreign key in a schema of their own, over
    ragstore's tables: the restore's ``DROP ... CASCADE`` dropped them without a word. It
    is refused before anything is changed (or backed up), naming them and the way on; with
    ``--drop-dependents`` it drops them as it did."""
    archive = tmp_path / "ours.dump"
    assert run_cli("backup", str(archive)) == 0
    with psycopg.connect(populated, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA mine")
        conn.execute("CREATE VIEW mine.names AS SELECT name FROM public.collections")
        conn.execute("CREATE MATERIALIZED VIEW mine.n AS SELECT count(*) FROM public.documents")
        conn.execute("CREATE TABLE mine.notes (cid bigint REFERENCES public.collections(id))")
    before = full_dump(populated)
    backups = Path(os.environ["RAGSTORE_DATA_DIR"]) / "backups"
    taken = set(backups.iterdir()) if backups.exists() else set()
    capsys.readouterr()
    assert run_cli("restore", str(archive), "--yes") == 65
    err = capsys.readouterr().err
    assert err.startswith("error[conflict]: ") and err.count("\n") == 1, err
    for name in ("view mine.names", "materialized view mine.n", "on table mine.notes"):
        assert name in err, err
    assert "Nothing was changed" in err and "--drop-dependents" in err, err
    assert full_dump(populated) == before
    assert (set(backups.iterdir()) if backups.exists() else set()) == taken  # none taken
    assert run_cli("restore", str(archive), "--yes", "--drop-dependents") == 0
    with psycopg.connect(populated, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('mine.names')").fetchone() == (None,)
        assert conn.execute("SELECT to_regclass('mine.notes')").fetchone() is not None
        conn.execute("DROP SCHEMA mine CASCADE")


def test_a_dependent_made_after_the_check_fails_the_restore_and_changes_nothing(
    populated: str, tmp_path: Path
) -> None:
    """The refusal is checked again inside the restore's transaction, before its drops:
    a view made between the check and the drops was dropped with them."""
    archive = tmp_path / "ours.dump"
    assert run_cli("backup", str(archive)) == 0

    def make_view(snapshot: str) -> None:
        with psycopg.connect(populated, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA mine")
            conn.execute("CREATE VIEW mine.names AS SELECT name FROM public.collections")

    db = Database(populated)
    with pytest.raises(backup.BackupError) as failed:
        backup.restore_backup(db, archive, make_view)
    assert "objects outside ragstore's schema depend on its tables" in str(failed.value)
    assert "the database is as it was" in str(failed.value)
    with psycopg.connect(populated, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('mine.names')").fetchone() != (None,)
        conn.execute("DROP SCHEMA mine CASCADE")


def test_a_backup_after_one_killed_outright_is_not_corrupted_by_its_orphaned_pg_dump(
    populated: str, tmp_path: Path
) -> None:
    """``ragstore backup FILE --overwrite`` killed with SIGKILL left its pg_dump running
    on its own, writing the hidden ``.FILE.partial``. The next backup to FILE wrote the
    same file (pg_dump truncates it: one inode), named it FILE and recorded its sha256;
    the orphan then wrote on into FILE, which no longer matched its sidecar: a backup
    reported taken that no restore would accept. The killed backup's lock being free, its
    leftovers are removed first and the orphan writes into a file nothing names."""
    import signal
    import sys

    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive)) == 0
    holder = psycopg.connect(populated)
    holder.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")  # pg_dump waits for it
    dumping = "application_name = 'pg_dump' AND wait_event_type = 'Lock'"
    cli = "from ragstore.cli import main; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", cli, "backup", str(archive), "--overwrite"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    orphan = 0
    try:
        deadline = time.monotonic() + 120
        while not backends_where(populated, dumping) and time.monotonic() < deadline:
            time.sleep(0.05)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 1, children
        orphan = int(children[0])
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # it goes on once the next backup is done (where it outlived its parent: the
        # kernel now kills it with that, on Linux)
        with contextlib.suppress(ProcessLookupError):
            os.kill(orphan, signal.SIGSTOP)
        holder.commit()
        assert run_cli("backup", str(archive), "--overwrite") == 0
        with contextlib.suppress(ProcessLookupError):
            os.kill(orphan, signal.SIGCONT)
        deadline = time.monotonic() + 60
        while Path(f"/proc/{orphan}").exists() and time.monotonic() < deadline:
            with open(f"/proc/{orphan}/stat") as stat_file:
                if stat_file.read().split(")")[-1].split()[0] == "Z":
                    break
            time.sleep(0.05)
    finally:
        holder.close()
        if orphan:
            with contextlib.suppress(ProcessLookupError):
                os.kill(orphan, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 60
    while backends_where(populated, "application_name = 'pg_dump'") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backup.check_archive(archive) is not None  # its sha256 is still the one recorded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.dump", "b.dump.json"]


def _interrupted_overwrite(tmp_path: Path) -> tuple[Path, bytes, bytes]:
    """The files of ``backup FILE --overwrite`` killed between its two renames: FILE holds
    the new archive, FILE.json still the earlier one's sidecar, the earlier archive kept
    as ``.FILE.<hex>.old`` and the new sidecar as ``.FILE.json.partial``. Returns FILE
    and the earlier archive's and sidecar's bytes."""
    archive = tmp_path / "b.dump"
    newer = tmp_path / "n" / "b.dump"
    newer.parent.mkdir(parents=True)
    assert run_cli("backup", str(archive)) == 0
    time.sleep(1.1)  # an archive records its time to the second: a different newer one
    assert run_cli("backup", str(newer)) == 0
    assert newer.read_bytes() != archive.read_bytes()
    old, old_side = archive.read_bytes(), Path(f"{archive}.json").read_bytes()
    os.link(archive, tmp_path / ".b.dump.0a1b2c3d.old")
    newer.replace(archive)
    Path(f"{newer}.json").replace(tmp_path / ".b.dump.json.partial")
    newer.parent.rmdir()
    return archive, old, old_side


def test_a_restore_of_an_overwrite_killed_between_its_renames_puts_the_earlier_back(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An overwrite killed between its renames left FILE holding the new archive beside
    the earlier one's sidecar, the earlier archive hidden as ``.FILE.<hex>.old`` for
    good; a restore of FILE said only that it was damaged. It now puts the earlier pair
    back, removes the leftovers, says so and restores nothing; run again, it restores."""
    archive, old, old_side = _interrupted_overwrite(tmp_path)
    capsys.readouterr()
    assert run_cli("restore", str(archive), "--yes", "--no-backup") == 65
    err = capsys.readouterr().err
    assert err.startswith("error[conflict]: "), err
    assert "killed before it finished" in err and "nothing was restored" in err, err
    assert archive.read_bytes() == old and Path(f"{archive}.json").read_bytes() == old_side
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.dump", "b.dump.json"]
    assert run_cli("restore", str(archive), "--yes", "--no-backup") == 0


def test_a_restore_of_an_overwrite_killed_before_its_second_rename_puts_the_earlier_back(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed between its two renames, an overwrite left no FILE at all: only the earlier
    archive hidden as ``.FILE.<hex>.old``. The restore's check of the archive before its
    question said "no such file"; the earlier pair is put back instead, as above."""
    archive, old, old_side = _interrupted_overwrite(tmp_path)
    archive.unlink()  # the new archive never got the name
    capsys.readouterr()
    assert run_cli("restore", str(archive), "--yes", "--no-backup") == 65
    err = capsys.readouterr().err
    assert "killed before it finished" in err and "nothing was restored" in err, err
    assert archive.read_bytes() == old and Path(f"{archive}.json").read_bytes() == old_side


def test_a_backup_over_an_overwrite_killed_between_its_renames_leaves_one_good_pair(
    populated: str, tmp_path: Path
) -> None:
    """The next ``backup FILE --overwrite`` after such a kill: the hidden earlier archive
    stayed beside FILE forever. The earlier pair is put back, then replaced as asked;
    nothing else is left; without ``--overwrite`` the put-back backup is refused."""
    archive, old, old_side = _interrupted_overwrite(tmp_path)
    assert run_cli("backup", str(archive)) == 65
    assert archive.read_bytes() == old and Path(f"{archive}.json").read_bytes() == old_side
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.dump", "b.dump.json"]
    archive, old, old_side = _interrupted_overwrite(tmp_path / "again")
    assert run_cli("backup", str(archive), "--overwrite") == 0
    assert backup.check_archive(archive) is not None
    assert sorted(p.name for p in archive.parent.iterdir()) == ["b.dump", "b.dump.json"]


def test_stale_leftovers_of_a_completed_overwrite_are_removed(
    populated: str, tmp_path: Path
) -> None:
    """Killed after both new names but before the kept earlier archive was removed: FILE
    and its sidecar agree, and the ``.old`` copy is stale; the next backup removes it."""
    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive)) == 0
    (tmp_path / ".b.dump.0a1b2c3d.old").write_bytes(b"an earlier archive")
    (tmp_path / ".b.dump.partial").write_bytes(b"cut short")
    (tmp_path / ".b.dump.lock").write_bytes(b"")
    assert run_cli("backup", str(archive), "--overwrite") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.dump", "b.dump.json"]


def test_two_backups_to_one_path_at_once_the_second_is_refused(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two ``backup FILE --overwrite`` at once wrote the same ``.FILE.partial``: one
    pg_dump truncated the other's archive under it. The second is now refused at once."""
    archive = tmp_path / "b.dump"
    status: list[int] = []
    thread = threading.Thread(
        target=lambda: status.append(run_cli("backup", str(archive), "--overwrite"))
    )

    def second() -> None:  # unfixed, it waited with the first for the table lock
        thread.start()
        thread.join(20)

    join = _dump_waits_then(populated, second)
    capsys.readouterr()
    try:
        assert run_cli("backup", str(archive), "--overwrite") == 0
    finally:
        join()
        thread.join()
    assert status == [65]
    assert "another `ragstore backup` or `ragstore restore` is using" in capsys.readouterr().err
    assert backup.check_archive(archive) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.dump", "b.dump.json"]


def test_a_backup_into_the_default_folder_removes_what_killed_backups_left_there(
    populated: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ragstore backup`` (or the one ``db upgrade`` takes) killed outright left its
    hidden ``.ragstore-<time>-<reason>.dump.partial`` in DATA_DIR/backups: no later
    backup had that name, so it stayed there forever. The next backup into that folder
    removes such leftovers; a running backup's (its lock held) are left alone."""
    import fcntl

    folder = Path(os.environ["RAGSTORE_DATA_DIR"]) / "backups"
    folder.mkdir(parents=True, exist_ok=True)
    dead = ".ragstore-20200101T000000000000Z-manual.dump"
    live = ".ragstore-20200101T000001000000Z-upgrade.dump"
    for name in (f"{dead}.partial", f"{dead}.json.partial", f"{dead}.lock"):
        (folder / name).write_bytes(b"left by a killed backup")
    (folder / f"{live}.partial").write_bytes(b"being written")
    with (folder / f"{live}.lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        capsys.readouterr()
        assert run_cli("backup") == 0
    hidden = sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
    assert hidden == [f"{live}.lock", f"{live}.partial"], hidden
    for name in hidden:
        (folder / name).unlink()


def test_a_backup_during_which_the_schema_changed_is_not_kept(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A migration committed while pg_dump ran (a second ``db upgrade`` backing up as the
    first migrates): the archive, read in the earlier snapshot, may hold a rewritten
    table empty, and the backup was reported taken. It now fails and leaves no file."""
    archive = tmp_path / "b.dump"
    head = migrations.head_revision()
    older = migrations.known_revisions()[-2]

    def migrate() -> None:  # as a migration's commit would, seen by the revision
        with psycopg.connect(populated, autocommit=True) as conn:
            conn.execute("UPDATE alembic_version SET version_num = %s", (older,))

    join = _dump_waits_then(populated, migrate)
    capsys.readouterr()
    try:
        status = run_cli("backup", str(archive))
    finally:
        join()
        with psycopg.connect(populated, autocommit=True) as conn:
            conn.execute("UPDATE alembic_version SET version_num = %s", (head,))
    err = capsys.readouterr().err
    assert status == 74, err
    assert f"changed from {head} to {older} while the backup ran" in err, err
    assert list(tmp_path.iterdir()) == []


def test_the_check_after_a_dump_reads_the_revision_and_not_every_row(populated: str) -> None:
    """After every dump, the check that the schema revision did not change ran
    ``count(*)`` over chunks, documents and collections (seconds to minutes on a big
    database) and used none of it. Seen here by chunks held in a lock no read can share:
    the check reads the revision at once, not once the lock is let go."""
    head = migrations.head_revision()
    holder = psycopg.connect(populated)
    holder.execute("LOCK TABLE chunks IN ACCESS EXCLUSIVE MODE")
    letgo = threading.Timer(6.0, holder.rollback)
    letgo.start()
    started = time.monotonic()
    try:
        backup._refuse_schema_changed(Database(populated), head)
        took = time.monotonic() - started
        with pytest.raises(backup.BackupError, match=f"changed from x to {head} while"):
            backup._refuse_schema_changed(Database(populated), "x")
    finally:
        letgo.cancel()
        holder.rollback()
        holder.close()
    assert took < 3.0, took


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``ragstore ARGS`` as a process of its own (to be killed outright)."""
    import sys

    return subprocess.Popen(
        [sys.executable, "-c", "from ragstore.cli import main; main()", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )


def _child_of(proc: subprocess.Popen[bytes]) -> int:
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def _gone_within(pid: int, seconds: float) -> bool:
    """Whether process ``pid`` has ended (or is a zombie) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat_file:
                if stat_file.read().split(")")[-1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def _wait_for(url: str, condition: str) -> None:
    deadline = time.monotonic() + 120
    while not backends_where(url, condition) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backends_where(url, condition), condition


def test_pg_dump_of_a_backup_killed_outright_dies_with_it(populated: str, tmp_path: Path) -> None:
    """``ragstore backup`` killed with SIGKILL left its pg_dump reading the whole
    database on its own, to the end. The kernel now kills it with its parent."""
    import signal

    archive = tmp_path / "b.dump"
    holder = psycopg.connect(populated)
    holder.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")  # pg_dump waits for it
    proc = _cli("backup", str(archive))
    try:
        _wait_for(populated, "application_name = 'pg_dump' AND wait_event_type = 'Lock'")
        dump = _child_of(proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert _gone_within(dump, 5), "pg_dump outlived the backup killed outright"
    finally:
        holder.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_psql_of_a_restore_killed_outright_dies_with_it_and_commits_nothing(
    populated: str, tmp_path: Path
) -> None:
    """``ragstore restore`` killed with SIGKILL left psql running on its own: it replayed
    the whole archive and committed it after the command had died. psql now dies with
    it, and its transaction rolls back: the database is as it was."""
    import signal

    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive)) == 0
    with psycopg.connect(populated) as conn:
        conn.execute("DELETE FROM documents WHERE source = 'alpha2'")
    before = full_dump(populated)
    holder = psycopg.connect(populated)
    holder.execute("LOCK TABLE documents IN ACCESS SHARE MODE")  # the restore's drop waits
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    proc = _cli("restore", str(archive), "--yes", "--no-backup", env=env)
    try:
        _wait_for(populated, "application_name = 'psql' AND wait_event = 'relation'")
        psql = _child_of(proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert _gone_within(psql, 5), "psql outlived the restore killed outright"
    finally:
        holder.commit()
        holder.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 30
    while backends_where(populated, "application_name = 'psql'") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backends_where(populated, "application_name = 'psql'") == 0
    assert full_dump(populated) == before


def test_the_next_restore_removes_what_a_restore_killed_outright_left(
    populated: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ragstore restore`` killed outright left ``$TMPDIR/ragstore-restore-*/restore.sql``
    (the whole database as plain SQL) for good. The next restore removes such folders;
    one whose restore still runs (its lock held) is left alone."""
    import fcntl
    import signal

    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive)) == 0
    work = tmp_path / "tmp"
    work.mkdir()
    holder = psycopg.connect(populated)
    holder.execute("LOCK TABLE documents IN ACCESS SHARE MODE")  # the restore's drop waits
    proc = _cli(
        "restore", str(archive), "--yes", "--no-backup", env={**os.environ, "TMPDIR": str(work)}
    )
    try:
        _wait_for(populated, "application_name = 'psql' AND wait_event = 'relation'")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        holder.commit()
        holder.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (left,) = work.iterdir()
    assert left.name.startswith("ragstore-restore-") and (left / "restore.sql").is_file()
    running = work / "ragstore-restore-running"
    running.mkdir(mode=0o700)
    (running / "restore.sql").write_text("a restore still running")
    held = os.open(running, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        old = time.time() - 60  # neither is being made this instant
        os.utime(left, (old, old))
        os.utime(running, (old, old))
        monkeypatch.setattr(tempfile, "tempdir", str(work))
        assert run_cli("restore", str(archive), "--yes", "--no-backup") == 0
        assert list(work.iterdir()) == [running]
    finally:
        os.close(held)


def _alpha_table(url: str) -> str:
    """The vector table of collection alpha (made after api_keys: pg_dump, which locks
    tables in the order they were made, waits for api_keys before it locks this one)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT s.table_name FROM embedding_spaces s JOIN collections c"
            " ON c.active_space_id = s.id WHERE c.name = 'alpha'"
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_a_backup_during_which_an_import_swapped_a_vector_table_is_not_kept(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An import large enough to rebuild a collection's vectors on the side swaps its
    staged table in for the space's (DROP, RENAME). Committed after the backup's snapshot
    and before pg_dump locked that table (pg_dump waiting for another table's lock), it
    failed the backup with pg_dump's "cache lookup failed for index N" and a page of its
    query. The backup now says which table changed while it ran and to take it again,
    and leaves no file."""
    import sys

    table = _alpha_table(populated)
    src = write_jsonl(
        tmp_path / "more.jsonl", [f"more{i}" for i in range(40)], vectors(40, 12, seed=7)
    )
    archive = tmp_path / "out" / "b.dump"
    archive.parent.mkdir()
    imported: list[subprocess.CompletedProcess[str]] = []

    def rebuild() -> None:  # a real import (40 records onto 50: a rebuild), a process of its own
        cli = "from ragstore.cli import main; main()"
        args = ["import", str(src), "-c", "alpha", "--model", "bk@v1", "--dimension", "12"]
        imported.append(
            subprocess.run(
                [sys.executable, "-c", cli, *args, "--no-backup"], capture_output=True, text=True
            )
        )

    join = _dump_waits_then(populated, rebuild)
    capsys.readouterr()
    try:
        status = run_cli("backup", str(archive))
    finally:
        join()
    err = capsys.readouterr().err
    assert imported[0].returncode == 0, imported[0].stderr
    assert _alpha_table(populated) == table
    assert status == 74, err
    assert f"public.{table}" in err and "while the backup ran" in err, err
    assert "take it again" in err and "cache lookup" not in err, err
    assert list(archive.parent.iterdir()) == []


def test_a_backup_during_which_a_table_was_rewritten_is_not_kept(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A table rewritten in place (new storage, same table) after the backup's snapshot
    and before pg_dump locked it reads as empty in that snapshot: the backup was reported
    taken with none of its rows (here: collection alpha's vectors, its chunks kept). It
    now fails, naming the table, and leaves no file."""
    table = _alpha_table(populated)
    archive = tmp_path / "b.dump"

    def rewrite() -> None:  # a volatile default: every row written anew
        with psycopg.connect(populated, autocommit=True) as conn:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN x int DEFAULT (random() * 0)::int")

    join = _dump_waits_then(populated, rewrite)
    capsys.readouterr()
    try:
        status = run_cli("backup", str(archive))
    finally:
        join()
        with psycopg.connect(populated, autocommit=True) as conn:
            conn.execute(f"ALTER TABLE {table} DROP COLUMN IF EXISTS x")
    err = capsys.readouterr().err
    assert status == 74, (err, status == 0 and _archived_rows(archive, table))
    assert f"public.{table}" in err and "while the backup ran" in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_restore_refuses_to_drop_a_users_cast_or_publication_of_ragstore_objects(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Objects of no schema of their own that depend on ragstore's types and tables (a
    cast from one of its row types, a publication's membership of one of its tables) were
    not seen by the dependents check, and the restore's ``DROP ... CASCADE`` dropped them
    without a word (a logical replica stopped receiving that table). They are named and
    the restore refused, as a view in another schema is."""
    archive = tmp_path / "ours.dump"
    assert run_cli("backup", str(archive)) == 0
    with psycopg.connect(populated, autocommit=True) as conn:
        conn.execute("CREATE CAST (public.collections AS text) WITH INOUT")
        conn.execute("CREATE PUBLICATION mine FOR TABLE public.documents")
    try:
        before = full_dump(populated)
        capsys.readouterr()
        assert run_cli("restore", str(archive), "--yes", "--no-backup") == 65
        err = capsys.readouterr().err
        assert err.startswith("error[conflict]: ") and err.count("\n") == 1, err
        assert "cast from collections to text" in err, err
        assert "publication mine" in err, err
        assert full_dump(populated) == before
        with psycopg.connect(populated, autocommit=True) as conn:
            conn.execute("DROP PUBLICATION mine")
        capsys.readouterr()
        assert run_cli("restore", str(archive), "--yes", "--no-backup") == 65  # the cast
        assert "cast from collections to text" in capsys.readouterr().err
        assert run_cli("restore", str(archive), "--yes", "--no-backup", "--drop-dependents") == 0
        with psycopg.connect(populated, autocommit=True) as conn:
            found = conn.execute(
                "SELECT count(*) FROM pg_cast WHERE castsource = 'public.collections'::regtype"
            ).fetchone()
            assert found == (0,)
    finally:
        with psycopg.connect(populated, autocommit=True) as conn:
            conn.execute("DROP PUBLICATION IF EXISTS mine")
            conn.execute("DROP CAST IF EXISTS (public.collections AS text)")


def test_a_backup_during_which_a_materialized_view_was_refreshed_is_kept(
    populated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user's materialized view refreshed while pg_dump ran (a cron job): its storage
    changed, and the check for tables changed under the dump failed a backup that was
    whole, though an archive holds no materialized view's rows (only the refresh that
    rebuilds them at restore). The backup is kept, and restores the view's rows."""
    archive = tmp_path / "b.dump"
    with psycopg.connect(populated, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA mine")
        conn.execute("CREATE MATERIALIZED VIEW mine.n AS SELECT count(*) AS n FROM collections")

    def refresh() -> None:
        with psycopg.connect(populated, autocommit=True) as conn:
            conn.execute("REFRESH MATERIALIZED VIEW mine.n")

    join = _dump_waits_then(populated, refresh)
    capsys.readouterr()
    try:
        status = run_cli("backup", str(archive))
    finally:
        join()
        with psycopg.connect(populated, autocommit=True) as conn:
            conn.execute("DROP SCHEMA mine CASCADE")
    err = capsys.readouterr().err
    assert status == 0, err
    assert backup.check_archive(archive) is not None
    listing = subprocess.run(
        [str(pg_bin_dir() / "pg_restore"), "--list", str(archive)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "MATERIALIZED VIEW DATA mine n " in listing, listing


def test_a_table_lock_asked_for_as_pg_dump_starts_does_not_hang_the_backup(
    populated: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The backup read its revision and counts inside the transaction that exported its
    snapshot, which stays open until pg_dump ends: it held ACCESS SHARE on chunks (and
    collections, documents, alembic_version) the whole time. A session asking for ACCESS
    EXCLUSIVE on chunks then (DDL with no lock_timeout) queued behind it, and pg_dump's
    own lock on chunks queued behind that session: the backup waited for pg_dump, pg_dump
    for the session, the session for the backup, a cycle PostgreSQL cannot see, and all
    three (and every query on chunks) hung for good. Now the session has its lock at once,
    pg_dump waits for it to end, and the backup completes with the right counts."""
    with psycopg.connect(populated) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM collections), (SELECT count(*) FROM documents),"
            " (SELECT count(*) FROM chunks)"
        ).fetchone()
    assert row is not None
    expected = {"collections": row[0], "documents": row[1], "chunks": row[2]}
    locker = psycopg.connect(populated)  # a session of its own, no lock_timeout
    locker_pid = locker.info.backend_pid
    got: list[BaseException | None] = []
    dumping = "application_name = 'pg_dump' AND wait_event_type = 'Lock'"

    def lock_then_release() -> None:  # hold the lock until pg_dump waits for it
        try:
            locker.execute("LOCK TABLE chunks IN ACCESS EXCLUSIVE MODE")
            deadline = time.monotonic() + 30
            while not backends_where(populated, dumping) and time.monotonic() < deadline:
                time.sleep(0.05)
            locker.commit()
            got.append(None)
        except psycopg.Error as exc:
            locker.rollback()
            got.append(exc)

    lock_thread = threading.Thread(target=lock_then_release)
    real = backup._tool

    def lock_then(name: str) -> str:
        if name == "pg_dump":  # the snapshot is exported: the lock is asked for, then pg_dump
            lock_thread.start()
            asked = "wait_event_type = 'Lock' OR state = 'idle in transaction'"
            _wait_for(populated, f"pid = {locker_pid} AND ({asked})")
        return real(name)

    done = threading.Event()
    stuck: list[bool] = []

    def watchdog() -> None:  # unfixed, the cycle never ends: cancel the lock request
        if not done.wait(20):
            stuck.append(True)
            with psycopg.connect(populated, autocommit=True) as conn:
                conn.execute("SELECT pg_cancel_backend(%s)", (locker_pid,))

    monkeypatch.setattr(backup, "_tool", lock_then)
    guard = threading.Thread(target=watchdog)
    guard.start()
    archive = tmp_path / "b.dump"
    try:
        status = run_cli("backup", str(archive))
    finally:
        done.set()
        guard.join()
        if lock_thread.is_alive() or lock_thread.ident is not None:
            lock_thread.join()
        locker.close()
    assert not stuck, "the backup hung (its lock request was cancelled after 20 s)"
    assert got == [None], got
    assert status == 0
    info = backup.read_info(archive)
    assert info is not None
    assert info.counts == expected
    assert info.counts["chunks"] == _archived_rows(archive, "chunks")
    assert backends_where(populated, "application_name = 'pg_dump'") == 0


class _Reader:
    """A query of the service's on ``chunks`` (a search), asked again and again on a
    connection of its own while a restore runs: when each answer came."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[float] = []
        self.errors: list[BaseException] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read)

    def _read(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.done.is_set():
                try:
                    conn.execute("SELECT count(*) FROM chunks")
                except psycopg.Error as exc:
                    self.errors.append(exc)
                self.answers.append(time.monotonic())
                time.sleep(0.05)

    def __enter__(self) -> _Reader:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()

    def longest_wait(self, start: float, end: float) -> float:
        """The longest time between answers from ``start`` to ``end``."""
        points = [start, *(t for t in self.answers if start < t < end), end]
        return max(b - a for a, b in itertools.pairwise(points))


def _short_lock_waits(monkeypatch: pytest.MonkeyPatch, give_up_s: float) -> None:
    monkeypatch.setattr(backup, "RESTORE_LOCK_WAIT_S", 0.5, raising=False)
    monkeypatch.setattr(backup, "RESTORE_LOCK_RETRY_PAUSE_S", 0.3, raising=False)
    monkeypatch.setattr(backup, "RESTORE_LOCK_GIVE_UP_S", give_up_s, raising=False)


def test_a_restore_that_waited_out_its_lock_timeout_names_the_sessions_holding_tables(
    populated: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A restore whose drops waited out their lock_timeout behind another session's open
    transaction failed with psql's bare "canceling statement due to lock timeout" and a
    line of the restore script, naming no holder. It is now one error naming the session
    that held the tables and how to go on, with the database as it was.

    It waited in one try of 60 s, and its queued ACCESS EXCLUSIVE request held every
    other query on the table (a service's searches) waiting behind it all that time. Each
    try now waits a bounded time and is rolled back, and the searches go on between."""
    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive), "--json") == 0
    before = full_dump(populated)
    _short_lock_waits(monkeypatch, give_up_s=3.0)
    holder = psycopg.connect(populated, application_name="a-reporting-job")
    holder.execute("SELECT 1 FROM chunks LIMIT 1")  # open, holding chunks
    holder_pid = holder.info.backend_pid
    # unfixed, the restore waits 60 s in one try: the holder lets go before then
    unstick = threading.Timer(20, holder.rollback)
    unstick.start()
    capsys.readouterr()
    started = time.monotonic()
    try:
        with _Reader(populated) as reader:
            status = run_cli("restore", str(archive), "--yes", "--json", "--no-backup")
            took = time.monotonic() - started
    finally:
        unstick.cancel()
        holder.rollback()
        holder.close()
    err = capsys.readouterr().err
    assert status == 75, err
    assert took < 20, took
    assert "lock timeout" not in err and "prelude.sql" not in err, err
    assert err.count("\n") == 1, err
    assert "tries, each waiting 0.5s for the table locks" in err, err
    assert f"pid {holder_pid} (a-reporting-job, idle in transaction," in err, err
    assert f"Nothing of {archive} was restored; the database is as it was" in err, err
    assert "pg_terminate_backend" in err, err
    assert full_dump(populated) == before
    assert backends_where(populated, "application_name = 'psql'") == 0
    assert reader.errors == []
    # the reads of chunks went on while the restore tried (not stuck behind its lock)
    assert reader.longest_wait(started, started + took) < 2.0, reader.answers


def test_a_restore_whose_tables_are_let_go_while_it_tries_completes(
    populated: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A holder that ends while the restore tries again (a report's transaction, a backup
    finishing): the next try has the locks and the restore completes; meanwhile the
    service's reads of the held table went on, not queued behind the restore's lock."""
    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive), "--json") == 0
    before = full_dump(populated)
    with psycopg.connect(populated, autocommit=True) as conn:  # changed after the backup
        conn.execute("UPDATE collections SET settings = '{\"changed\": true}'")
    assert full_dump(populated) != before
    _short_lock_waits(monkeypatch, give_up_s=30.0)
    holder = psycopg.connect(populated)
    holder.execute("SELECT 1 FROM chunks LIMIT 1")  # open, holding chunks
    released: list[float] = []

    def release() -> None:
        released.append(time.monotonic())
        holder.rollback()

    letgo = threading.Timer(4.0, release)
    capsys.readouterr()
    started = time.monotonic()
    try:
        with _Reader(populated) as reader:
            letgo.start()
            status = run_cli("restore", str(archive), "--yes", "--json", "--no-backup")
    finally:
        letgo.join()
        holder.close()
    err = capsys.readouterr().err
    assert status == 0, err
    assert full_dump(populated) == before
    assert reader.errors == []
    # while the holder held chunks (the restore waiting), the reads were answered
    assert reader.longest_wait(started, released[0]) < 2.0, reader.answers


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "human"])
def test_a_restore_tried_again_names_every_backup_it_took(
    populated: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    as_json: bool,
) -> None:
    """Each try of a restore behind another session's transaction takes its own backup
    of what it replaces (a try rolled back lets writes in before the next); ``--json``
    named only the last, the earlier tries' files left on disk unnamed. It names every
    one: the last as ``replaced_backup``, the earlier ones as ``earlier_backups``.
    Without ``--json`` each try printed its ``backup:`` line and nothing said which one
    undoes the restore: it says so now, and that the others are earlier copies."""
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(tmp_path))
    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive), "--json") == 0
    restored = full_dump(populated)
    _short_lock_waits(monkeypatch, give_up_s=60.0)
    folder = tmp_path / "backups"

    def taken() -> list[Path]:
        return sorted(folder.glob("ragstore-*-restore.dump"))

    holder = psycopg.connect(populated)
    holder.execute("SELECT 1 FROM chunks LIMIT 1")  # open, holding chunks: the drops wait

    def release_after_two_backups() -> None:
        deadline = time.monotonic() + 60
        while len(taken()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        holder.rollback()

    letgo = threading.Thread(target=release_after_two_backups)
    capsys.readouterr()
    letgo.start()
    try:
        status = run_cli("restore", str(archive), "--yes", *(["--json"] if as_json else []))
    finally:
        letgo.join()
        holder.close()
    out, err = capsys.readouterr()
    assert status == 0, err
    assert full_dump(populated) == restored
    on_disk = taken()
    assert len(on_disk) >= 2, on_disk
    if not as_json:
        assert [ln for ln in out.splitlines() if ln.startswith("backup: ")][1:], out
        *earlier, last = on_disk
        assert f"to undo it, restore {last}, the backup of what it replaced" in out, out
        assert (
            f"other backup{'s' if earlier[1:] else ''} above ({', '.join(map(str, earlier))})"
            in out
        )
        assert "from the restore's earlier tries, older than that one" in out, out
        return
    result = json.loads(out)
    named = [*result.get("earlier_backups", []), result["replaced_backup"]]
    assert [Path(p).resolve() for p in named] == [p.resolve() for p in on_disk], out


def test_a_restore_waits_for_the_migration_lock_and_refuses_changing_nothing(
    populated: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Another session holds the schema migration lock (a ``db upgrade`` in its
    transaction, here a bare session): the restore took no part in that lock and replaced
    the database under the migration. It now waits for the lock as for a table lock, then
    gives up with one error naming that session, the database as it was; once the lock
    is let go, the restore goes through."""
    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive), "--json") == 0
    restored = full_dump(populated)
    with psycopg.connect(populated, autocommit=True) as conn:  # changed after the backup
        conn.execute("UPDATE collections SET settings = '{\"changed\": true}'")
    before = full_dump(populated)
    assert before != restored
    _short_lock_waits(monkeypatch, give_up_s=3.0)
    holder = psycopg.connect(populated, application_name="a-migration")
    holder.execute("SELECT pg_advisory_xact_lock(%s)", (migrations.MIGRATION_LOCK_KEY,))
    holder_pid = holder.info.backend_pid
    capsys.readouterr()
    try:
        status = run_cli("restore", str(archive), "--yes", "--json", "--no-backup")
        err = capsys.readouterr().err
        assert status == 75, err
        assert err.count("\n") == 1, err
        assert "schema migration lock (a `db upgrade`, `db downgrade` or another restore)" in err
        assert f"pid {holder_pid} (a-migration, holding the schema migration lock, idle" in err
        assert f"Nothing of {archive} was restored; the database is as it was" in err, err
        assert full_dump(populated) == before
        assert backends_where(populated, "application_name = 'psql'") == 0
    finally:
        holder.rollback()
        holder.close()
    assert run_cli("restore", str(archive), "--yes", "--json", "--no-backup") == 0
    assert full_dump(populated) == restored


def test_a_restore_behind_a_migration_takes_no_backup_it_cannot_use(
    populated: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Behind a migration holding the lock, a restore took its backup of what it would
    replace (minutes, for a big database), then gave up waiting for the lock all the same:
    a backup nobody asked for, of a restore that never ran. It now waits for the lock
    before the backup, and gives up without one."""
    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive), "--json") == 0
    before = full_dump(populated)
    _short_lock_waits(monkeypatch, give_up_s=2.0)
    holder = psycopg.connect(populated, application_name="a-migration")
    holder.execute("SELECT pg_advisory_xact_lock(%s)", (migrations.MIGRATION_LOCK_KEY,))
    capsys.readouterr()
    try:
        status = run_cli("restore", str(archive), "--yes", "--json")
        err = capsys.readouterr().err
        assert status == 75, err
        assert f"Nothing of {archive} was restored and no backup of it taken" in err, err
        assert "holding the schema migration lock" in err, err
        assert sorted((tmp_path / "backups").glob("*-restore.dump")) == []
        assert full_dump(populated) == before
    finally:
        holder.rollback()
        holder.close()


def test_a_migration_started_during_a_restore_waits_for_it(
    populated: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A ``db upgrade`` started while a restore's transaction runs (held here at its drops
    by a session reading chunks) ran alongside it: it read the revision the restore was
    replacing and altered the tables under it. It now waits for the migration lock the
    restore holds to its end, then reads the restored revision."""
    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive), "--json") == 0
    restored = full_dump(populated)
    with psycopg.connect(populated, autocommit=True) as conn:  # changed after the backup
        conn.execute("UPDATE collections SET settings = '{\"changed\": true}'")
    monkeypatch.setattr(backup, "RESTORE_LOCK_WAIT_S", 60.0, raising=False)  # one try
    holder = psycopg.connect(populated)
    holder.execute("SELECT 1 FROM chunks LIMIT 1")  # open, holding chunks: the drops wait
    restore_waits = "application_name = 'psql' AND wait_event = 'relation'"
    migration_waits = "wait_event_type = 'Lock' AND wait_event = 'advisory'"
    seen: list[str] = []
    found: list[str | None] = []

    def migrate() -> None:
        found.append(migrations.migrate(Database(populated), "upgrade", "head").found)

    migration = threading.Thread(target=migrate)

    def start_the_migration_then_let_go() -> None:
        try:
            deadline = time.monotonic() + 60
            while not backends_where(populated, restore_waits) and time.monotonic() < deadline:
                time.sleep(0.05)
            migration.start()
            deadline = time.monotonic() + 10  # unfixed, it never waits for the lock
            while time.monotonic() < deadline:
                if backends_where(populated, migration_waits):
                    seen.append("waited")
                    break
                time.sleep(0.05)
        finally:
            holder.rollback()

    helper = threading.Thread(target=start_the_migration_then_let_go)
    capsys.readouterr()
    helper.start()
    try:
        status = run_cli("restore", str(archive), "--yes", "--json", "--no-backup")
    finally:
        helper.join()
        if migration.ident is not None:
            migration.join(timeout=120)
        holder.close()
    err = capsys.readouterr().err
    assert status == 0, err
    assert seen == ["waited"]
    assert found == [migrations.head_revision()]
    assert full_dump(populated) == restored


def test_an_interrupt_as_a_failed_restores_outcome_is_read_says_it_is_unknown(
    populated: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """psql failed (its backend ended) and Ctrl-C came while the restore read back whether
    its transaction had committed: the command printed "nothing was restored; the
    database is as it was" without having read it. It now says the outcome is unknown and
    how to tell."""
    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive)) == 0

    def ctrl_c_then_read(*args: object) -> tuple[str | None, str]:
        # Ctrl-C as the outcome is read: raised here rather than signalled, so that a
        # SIGINT handler another test left behind cannot swallow it
        del args
        raise KeyboardInterrupt

    monkeypatch.setattr(backup, "_outcome", ctrl_c_then_read)
    capsys.readouterr()
    with _restore_backend_ended(populated):
        status = run_cli("restore", str(archive), "--yes", "--no-backup")
    err = capsys.readouterr().err
    assert status == 130, err
    assert "nothing was restored" not in err and "as it was" not in err, err
    assert f"whether the restore of {archive} committed could not be read" in err, err
    assert "ragstore db status" in err, err


def test_a_collection_deleted_or_swapped_just_after_pg_dump_ended_keeps_the_backup(
    populated: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check for tables changed under a dump compared the snapshot's tables with the
    live catalog once pg_dump had ended: a collection deleted (its vector table dropped),
    or an import's rebuild swapped in, in the moment after pg_dump ended and before the
    check failed a backup that was whole ("tables ... were dropped, replaced or rewritten
    while the backup ran"). What pg_dump read is what is checked now: the backup is kept,
    and holds the deleted collection."""
    import sys

    src = write_jsonl(tmp_path / "g.jsonl", [f"g{i}" for i in range(5)], vectors(5, 12, seed=9))
    args = ["--model", "bk@v1", "--dimension", "12", "--no-backup"]
    assert run_cli("import", str(src), "-c", "gamma", *args) == 0
    more = write_jsonl(
        tmp_path / "more.jsonl", [f"late{i}" for i in range(40)], vectors(40, 12, seed=8)
    )
    real = backup._dump_to
    after: list[Callable[[], None]] = []

    def dump_then(*a: object) -> None:
        real(*a)  # type: ignore[arg-type]
        after.pop(0)()

    def delete_gamma() -> None:
        assert run_cli("collections", "delete", "gamma", "--yes") == 0

    def swap_alpha() -> None:  # a rebuild of alpha's vectors beside it, swapped in
        cli = "from ragstore.cli import main; main()"
        done = subprocess.run(
            [sys.executable, "-c", cli, "import", str(more), "-c", "alpha", *args],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr

    def alpha_oid() -> object:
        with psycopg.connect(populated) as conn:
            row = conn.execute("SELECT to_regclass(%s)::oid", (table,)).fetchone()
        return None if row is None else row[0]

    monkeypatch.setattr(backup, "_dump_to", dump_then)
    for name, change in (("deleted", delete_gamma), ("swapped", swap_alpha)):
        table = _alpha_table(populated)
        oid = alpha_oid()
        after.append(change)
        archive = tmp_path / f"{name}.dump"
        assert run_cli("backup", str(archive)) == 0, name
        assert backup.check_archive(archive) is not None
        if name == "swapped":
            assert alpha_oid() != oid  # the swap happened (a new table of that name)
            assert _archived_rows(archive, table) >= 50


def test_a_field_index_asked_for_by_a_request_during_a_backup_says_why_it_waits(
    populated: str, tmp_path: Path
) -> None:
    """A concurrent index build waits for every older transaction, a running backup's
    pg_dump among them: ``POST /v1/field-indexes`` (and ``Store.index_field``) hung for
    the whole backup without a word. A request's declaration now gives up after its wait
    with one error naming the backup's pg_dump and saying to retry, and the retry after
    the backup builds the field's indexes."""
    from ragstore.errors import StatementCancelledError

    archive = tmp_path / "b.dump"
    outcome: list[object] = []

    def declare_while_dumping() -> None:
        def declare() -> None:
            try:
                outcome.append(
                    field_indexes.declare(Database(populated), "mid", "number", wait_s=1)
                )
            except StatementCancelledError as exc:
                outcome.append(exc)

        build = threading.Thread(target=declare)
        build.start()
        build.join(timeout=30)  # pg_dump waits on: the declaration must end by itself

    join = _dump_waits_then(populated, declare_while_dumping)
    try:
        assert run_cli("backup", str(archive)) == 0
    finally:
        join()
    assert len(outcome) == 1 and isinstance(outcome[0], StatementCancelledError), outcome
    message = str(outcome[0])
    assert "pg_dump: a backup" in message and "retry" in message, message
    with psycopg.connect(populated, autocommit=True) as conn:
        assert FieldIndex(("mid",), "number") not in field_indexes.indexed(conn)
    assert field_indexes.declare(Database(populated), "mid", "number", wait_s=5) is True
    assert field_indexes.declare(Database(populated), "mid", "number", drop=True, wait_s=5)


def test_a_backup_onto_a_full_disk_fails_cleanly_and_leaves_no_file(
    populated: str, cli_env_module: dict[str, str], tmp_path: Path
) -> None:
    """pg_dump stopped as it writes (here by the file-size limit, `ulimit -f`, as a
    full volume stops it) fails the backup with one error and leaves nothing a restore
    would take; the error said "pg_dump failed: no message", and now names the signal
    and the limit."""
    import resource
    import sys

    archive = tmp_path / "b.dump"

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))

    cli = "from ragstore.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", cli, "backup", str(archive)],
        capture_output=True,
        text=True,
        env={**os.environ, **cli_env_module},
        preexec_fn=limited,
        timeout=120,
    )
    assert done.returncode == 74, (done.returncode, done.stderr)
    assert done.stderr.startswith("error[backup_failed]: "), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert "pg_dump failed: killed by SIGXFSZ" in done.stderr, done.stderr  # not "no message"
    assert "ulimit -f" in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("lost", ["row", "table"])
def test_a_restore_into_a_database_whose_revision_was_lost_backs_it_up_first(
    populated: str,
    empty_database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    lost: str,
) -> None:
    """ragstore's tables with the ``alembic_version`` row lost read as "no ragstore
    schema": a restore replaced them without the backup it takes of what it replaces
    (with the table lost, it refused them as another application's). That backup is
    taken, and restoring it brings them back, revision lost as it was."""
    archive = tmp_path / "ours.dump"
    assert run_cli("backup", str(archive)) == 0
    migrations.upgrade(Database(empty_database_url))
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO collections (name) VALUES ('only_here')")
        conn.execute(
            "DELETE FROM alembic_version" if lost == "row" else "DROP TABLE alembic_version"
        )
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", empty_database_url)
    capsys.readouterr()
    assert run_cli("restore", str(archive), "--yes") == 0
    out = capsys.readouterr().out
    replaced = Path(next(ln for ln in out.splitlines() if ln.startswith("backup: ")).split()[1])
    assert replaced.name.endswith("-restore.dump") and replaced.exists(), out
    assert migrations.status(Database(empty_database_url)).is_current
    assert run_cli("restore", str(replaced), "--yes", "--no-backup") == 0
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        assert conn.execute("SELECT name FROM collections").fetchall() == [("only_here",)]
    assert migrations.status(Database(empty_database_url)).current is None


def test_a_restore_into_a_newer_schema_does_not_offer_a_way_back_it_refuses(
    populated: str,
    empty_database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The backup a restore takes of a database a newer ragstore upgraded was announced
    "restore with `ragstore restore PATH`", which this version then refuses (a revision
    it does not know): it says that the newer version restores it."""
    archive = tmp_path / "ours.dump"
    assert run_cli("backup", str(archive)) == 0
    migrations.upgrade(Database(empty_database_url))
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", empty_database_url)
    capsys.readouterr()
    assert run_cli("restore", str(archive), "--yes") == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("backup: "))
    replaced = Path(line.split()[1])
    assert "at schema revision 9999, which this version of ragstore does not know" in line
    assert "with the newer ragstore that wrote it" in line, line
    assert run_cli("restore", str(replaced), "--yes", "--no-backup") == 69
    assert "9999" in capsys.readouterr().err


def test_an_upgrade_committed_just_after_pg_dump_ended_keeps_the_backup(
    populated: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check that the schema did not change under a dump read the revision once
    pg_dump had ended: a ``db upgrade`` committing in the moment after (pg_dump had read
    every table) failed a backup that was whole. The revision read once pg_dump held its
    locks is what is compared now: the backup is kept, at the revision it holds."""
    head = migrations.head_revision()
    older = migrations.known_revisions()[-2]
    real = backup._dump_to

    def dump_then(*a: object) -> None:
        real(*a)  # type: ignore[arg-type]
        with psycopg.connect(populated, autocommit=True) as conn:
            conn.execute("UPDATE alembic_version SET version_num = %s", (older,))

    monkeypatch.setattr(backup, "_dump_to", dump_then)
    archive = tmp_path / "b.dump"
    try:
        assert run_cli("backup", str(archive)) == 0
    finally:
        with psycopg.connect(populated, autocommit=True) as conn:
            conn.execute("UPDATE alembic_version SET version_num = %s", (head,))
    info = backup.check_archive(archive)
    assert info is not None and info.revision == head


def test_a_dump_that_fails_after_its_locks_gives_its_own_error(
    populated: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """pg_dump failing once it had read the tables (a full disk), with a ``db upgrade``
    committed in the moment after: the backup's error said the schema had changed while
    it ran ("take it again") instead of pg_dump's own error."""
    head = migrations.head_revision()
    older = migrations.known_revisions()[-2]
    real = backup._dump_to

    def dump_then_fail(*a: object) -> None:
        real(*a)  # type: ignore[arg-type]
        with psycopg.connect(populated, autocommit=True) as conn:
            conn.execute("UPDATE alembic_version SET version_num = %s", (older,))
        raise backup.BackupError("pg_dump failed: No space left on device")

    monkeypatch.setattr(backup, "_dump_to", dump_then_fail)
    capsys.readouterr()
    try:
        assert run_cli("backup", str(tmp_path / "b.dump")) == 74
    finally:
        with psycopg.connect(populated, autocommit=True) as conn:
            conn.execute("UPDATE alembic_version SET version_num = %s", (head,))
    err = capsys.readouterr().err
    assert "No space left on device" in err and "changed from" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_write_acknowledged_while_a_restore_runs_is_in_its_backup_or_the_restored_database(
    populated: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A restore backed up what it replaces, then began its transaction: a collection a
    running service created in between (acknowledged to its client) was in neither that
    backup nor the restored database. The restore now holds every write from before its
    backup's snapshot to its commit: each acknowledged write is in the backup, or waited
    and is in the restored database. The window is widened here (a pause once the backup's
    pg_dump is done) with a writer creating collections as fast as it can all along."""
    from ragstore.config import Settings
    from ragstore.db import catalog, repository
    from ragstore.embedding.registry import resolve_spec

    archive = tmp_path / "b.dump"
    assert run_cli("backup", str(archive)) == 0
    spec = resolve_spec(Settings().model)
    real_dump = backup._dump_to
    dumped = threading.Event()

    def dump_then_pause(*args: object, **kw: object) -> None:
        real_dump(*args, **kw)  # type: ignore[arg-type]
        if str(args[0]).endswith("-restore.dump.partial"):  # the restore's own backup
            dumped.set()
            time.sleep(1.5)  # the writer's writes fall in here

    monkeypatch.setattr(backup, "_dump_to", dump_then_pause)
    acked: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def write() -> None:
        with psycopg.connect(populated, autocommit=True) as conn:
            for i in itertools.count():
                if stop.is_set():
                    return
                name = f"during{i}"
                try:
                    repository.create_collection(conn, name, spec)
                except Exception as exc:  # told to its client: not acknowledged
                    refused.append(f"{name}: {exc}")
                    conn.rollback()
                else:
                    acked.append(name)

    writer = threading.Thread(target=write)
    capsys.readouterr()
    writer.start()
    try:
        status = run_cli("restore", str(archive), "--yes")
        after = len(acked)
        deadline = time.monotonic() + 30
        while len(acked) < after + 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # a few writes after the restore, into the restored database
    finally:
        stop.set()
        writer.join()
    out, err = capsys.readouterr()
    assert status == 0, err
    assert dumped.is_set()
    kept = Path(next(ln for ln in out.splitlines() if ln.startswith("backup: ")).split()[1])
    pg_restore = str(pg_bin_dir() / "pg_restore")
    in_backup = subprocess.run(
        [pg_restore, "--data-only", "--table=collections", "-f", "-", str(kept)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    with psycopg.connect(populated, autocommit=True) as conn:
        restored = {str(r[0]) for r in conn.execute("SELECT name FROM collections")}
        for name in sorted(restored):  # left as the module's other tests expect it
            if name.startswith("during"):
                catalog.delete_collection(conn, repository.get_collection(conn, name))
    backed_up = {line.split("\t")[1] for line in in_backup.splitlines() if "\tduring" in line}
    lost = [name for name in acked if name not in restored and name not in backed_up]
    assert acked and lost == [], (lost, acked, refused)


def test_an_archive_named_like_an_option_restores_under_a_quoted_work_folder(
    populated: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative archive name starting with "-" was read as pg_restore's options (``-x``
    an invalid option: the good archive called damaged; ``-d`` a database name, the
    archive then awaited on stdin), and a work folder under a $TMPDIR holding ``'`` failed
    every restore in psql's ``\\copy ... TO '...'``."""
    before = full_dump(populated)
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "it's a \\ folder"
    work.mkdir()
    monkeypatch.setenv("TMPDIR", str(work))
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    # the second with its own backup first: the writes held at a gate psql reads (``\\i``)
    for name, options in (("-x.dump", ["--no-backup"]), ("-dx.dump", [])):
        assert run_cli("backup", "--", name) == 0
        assert (tmp_path / name).is_file()
        with psycopg.connect(populated) as conn:
            conn.execute("DELETE FROM documents WHERE source LIKE 'alpha1%'")
        assert full_dump(populated) != before
        assert run_cli("restore", "--yes", *options, "--", name) == 0
        assert full_dump(populated) == before
    assert not any(work.iterdir())  # the restores' work folders went with them
