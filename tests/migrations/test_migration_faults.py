"""``db upgrade`` / ``db downgrade`` whose connection is ended, whose process is stopped,
or whose database goes away once they committed: each says where the schema is, names
the backup taken before it, and a run again finishes the job."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import psycopg
import pytest

from ragstore.db import migrations
from ragstore.db.database import Database
from tests.conftest import run_cli
from tests.sigterm import backends_where, sigterm_when

# the migration's DDL waiting for the table lock a test holds (it is the one backend of
# the test's database waiting on a lock)
WAITING = "wait_event_type = 'Lock' AND backend_type = 'client backend'"


@pytest.fixture()
def behind(
    empty_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Database, str, str]:
    """A database one revision behind the code, and the CLI pointed at it."""
    revisions = migrations.known_revisions()
    db = Database(empty_database_url)
    migrations.upgrade(db, revisions[-2])
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", empty_database_url)
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(tmp_path))
    return db, revisions[-2], revisions[-1]


def _hold_every_table(holder: psycopg.Connection[tuple[object, ...]]) -> None:
    """SHARE on every table of the schema, in ``holder``'s open transaction: the head
    revision, whichever table it alters or writes, waits behind it (a lock on
    ``documents`` alone let a revision that alters another table, 0034's ``api_keys``, run
    through; ACCESS SHARE, one that only deletes rows, 0037's queue entries). Reads, the
    backup's pg_dump among them, go on."""
    tables = holder.execute(
        "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = 'public'"
    ).fetchall()
    holder.execute(f"LOCK TABLE {', '.join(str(t[0]) for t in tables)} IN SHARE MODE")


def _backup_named(out: str) -> Path:
    return Path(next(ln for ln in out.splitlines() if ln.startswith("backup: ")).split()[1])


def test_an_upgrade_whose_connection_is_ended_says_where_the_schema_is_and_names_its_backup(
    behind: tuple[Database, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The connection of a running upgrade ended (a failover, an administrator): the error
    said "the schema is as it was" without the revision, and named no backup (with --json,
    none at all). It names both; run again, the upgrade completes."""
    db, older, head = behind
    holder = psycopg.connect(db.conninfo)
    _hold_every_table(holder)  # the upgrade's DDL waits

    def end_the_upgrade() -> None:
        deadline = time.monotonic() + 60
        while not backends_where(db.conninfo, WAITING) and time.monotonic() < deadline:
            time.sleep(0.05)
        with psycopg.connect(db.conninfo, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> "
                "pg_backend_pid() AND " + WAITING
            )
        holder.commit()

    ender = threading.Thread(target=end_the_upgrade)
    ender.start()
    try:
        status = run_cli("db", "upgrade", "--json")
    finally:
        ender.join()
        holder.close()
    err = capsys.readouterr().err
    assert status == 69, err
    assert f"rolled back, the schema is as it was: {older}" in err, err
    backups = list((Path(os.environ["RAGSTORE_DATA_DIR"]) / "backups").glob("*-upgrade.dump"))
    assert len(backups) == 1
    assert err.rstrip().endswith(f"the backup taken before it is kept: {backups[0]}"), err
    assert migrations.status(db).current == older
    assert run_cli("db", "upgrade", "--no-backup") == 0
    assert migrations.status(db).current == head


def test_an_upgrade_stopped_by_sigterm_says_where_the_schema_is(
    behind: tuple[Database, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM (a service manager, ``timeout``) killed ``db upgrade`` without a word; it
    now stops the migration's transaction and says the schema is where it was, naming the
    backup; run again, the upgrade completes."""
    db, older, head = behind
    holder = psycopg.connect(db.conninfo)
    _hold_every_table(holder)
    sent_box: list[list[bool]] = []

    def release_later() -> None:
        deadline = time.monotonic() + 60
        while not (sent_box and sent_box[0][0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1)
        holder.commit()

    with sigterm_when(lambda: backends_where(db.conninfo, WAITING) > 0) as sent:
        sent_box.append(sent)
        releaser = threading.Thread(target=release_later)
        releaser.start()
        status = run_cli("db", "upgrade")
        releaser.join()
    holder.close()
    out, err = capsys.readouterr()
    assert sent[0]
    assert status == 143, (out, err)
    backup = _backup_named(out)
    assert err == (
        f"interrupted by SIGTERM: the upgrade was rolled back; the schema is at {older}, "
        f"as it was; the backup taken before it is kept: {backup}\n"
    ), err
    assert backup.exists()
    assert migrations.status(db).current == older
    assert run_cli("db", "upgrade", "--no-backup") == 0
    assert migrations.status(db).current == head


def test_a_downgrade_whose_database_goes_away_after_its_commit_reports_it_done(
    behind: tuple[Database, str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The revision was read again in a transaction of its own after the migration had
    committed: a database that went away in between (a restart, here its session ended)
    made a done downgrade end with database_unavailable (69). The revision it committed is
    now read inside its transaction."""
    db, older, head = behind
    migrations.upgrade(db)
    real = migrations.current_revision
    calls = [0]

    def ended_after_the_first(conn: psycopg.Connection[tuple[object, ...]]) -> str | None:
        calls[0] += 1
        if calls[0] > 1:  # the CLI's own read before it starts goes through
            with psycopg.connect(db.conninfo, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s, 10000)", (conn.info.backend_pid,))
        return real(conn)

    monkeypatch.setattr(migrations, "current_revision", ended_after_the_first)
    status = run_cli("db", "downgrade", "--to", older, "--yes", "--no-backup")
    out, err = capsys.readouterr()
    monkeypatch.setattr(migrations, "current_revision", real)
    assert status == 0, err
    assert f"downgraded {head} -> {older}" in out
    assert migrations.status(db).current == older


_WAIT_AT_COMMIT = """
CREATE FUNCTION public.wait_at_commit() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN PERFORM pg_advisory_lock(4242); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER wait_at_commit AFTER UPDATE ON alembic_version
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.wait_at_commit();
"""


@pytest.mark.parametrize("reachable", [True, False], ids=["read-back", "unreadable"])
def test_an_upgrade_whose_connection_ends_as_it_commits_says_where_the_schema_is(
    behind: tuple[Database, str, str],
    pg_admin_uri: str,
    reachable: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The connection ended while the upgrade's COMMIT ran (a deferred trigger holds it
    there; a failover, an administrator): where the database can be read, the revision is
    read back and said; where it cannot (it refuses connections), the outcome is
    ``outcome_unknown`` (76) saying how to tell, not "rolled back"."""
    db, older, head = behind
    name = psycopg.conninfo.conninfo_to_dict(db.conninfo)["dbname"]
    with psycopg.connect(db.conninfo, autocommit=True) as conn:
        conn.execute(_WAIT_AT_COMMIT)
    holder = psycopg.connect(db.conninfo, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(4242)")
    at_commit = "wait_event_type = 'Lock' AND wait_event = 'advisory'"

    def end_the_commit() -> None:
        deadline = time.monotonic() + 60
        while not backends_where(db.conninfo, at_commit) and time.monotonic() < deadline:
            time.sleep(0.05)
        with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
            if not reachable:
                conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                f"datname = '{name}' AND " + at_commit
            )

    ender = threading.Thread(target=end_the_commit)
    ender.start()
    try:
        status = run_cli("db", "upgrade", "--no-backup")
    finally:
        ender.join()
        with psycopg.connect(pg_admin_uri, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        holder.close()
    err = capsys.readouterr().err
    if reachable:
        assert status == 69, err
        assert f"rolled back, the schema is as it was: {older}" in err, err
    else:
        assert status == 76, err
        assert err.startswith("error[outcome_unknown]: upgrade of "), err
        assert "the connection was lost as it committed" in err, err
        assert f"`ragstore db status` shows {head} if it did, {older} if not" in err, err
    with psycopg.connect(db.conninfo, autocommit=True) as conn:
        conn.execute("DROP TRIGGER wait_at_commit ON alembic_version")
    assert migrations.status(db).current == older
    assert run_cli("db", "upgrade", "--no-backup") == 0
    assert migrations.status(db).current == head


def test_an_upgrade_stopped_during_its_backup_leaves_no_dump_running_or_file_behind(
    behind: tuple[Database, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM while the backup before an upgrade ran killed the command without a word
    and left pg_dump running on its own, writing a whole copy of the database to a hidden
    ``.partial`` file nothing removed. pg_dump is now stopped, its file removed, and the
    command says nothing was changed."""
    db, older, _head = behind
    holder = psycopg.connect(db.conninfo)
    holder.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")  # pg_dump waits for it
    dumping = "application_name = 'pg_dump' AND wait_event_type = 'Lock'"
    sent_box: list[list[bool]] = []

    def release_later() -> None:  # once the signal is out (unfixed, the dump went on)
        deadline = time.monotonic() + 60
        while not (sent_box and sent_box[0][0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1)
        holder.commit()

    with sigterm_when(lambda: backends_where(db.conninfo, dumping) > 0) as sent:
        sent_box.append(sent)
        releaser = threading.Thread(target=release_later)
        releaser.start()
        status = run_cli("db", "upgrade")
        releaser.join()
    holder.close()
    out, err = capsys.readouterr()
    assert sent[0]
    assert status == 143, (out, err)
    assert err == (
        "interrupted by SIGTERM: the backup before the upgrade was not finished and was "
        "removed; the upgrade did not start, nothing was changed\n"
    ), err
    time.sleep(1)
    assert backends_where(db.conninfo, "application_name = 'pg_dump'") == 0
    assert list((Path(os.environ["RAGSTORE_DATA_DIR"]) / "backups").iterdir()) == []
    assert migrations.status(db).current == older


def test_an_upgrade_ended_while_it_waits_for_the_migration_lock_names_no_false_revision(
    behind: tuple[Database, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Ended before it had the migration lock (another upgrade ran), the upgrade has read
    no revision yet: the error must not say the schema is "(empty)"."""
    db, older, head = behind
    holder = psycopg.connect(db.conninfo)
    holder.execute("SELECT pg_advisory_xact_lock(%s)", (migrations.MIGRATION_LOCK_KEY,))
    waiting = "wait_event_type = 'Lock' AND wait_event = 'advisory'"

    def end_the_upgrade() -> None:
        deadline = time.monotonic() + 60
        while not backends_where(db.conninfo, waiting) and time.monotonic() < deadline:
            time.sleep(0.05)
        with psycopg.connect(db.conninfo, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> "
                "pg_backend_pid() AND " + waiting
            )
        holder.commit()

    ender = threading.Thread(target=end_the_upgrade)
    ender.start()
    try:
        status = run_cli("db", "upgrade", "--no-backup")
    finally:
        ender.join()
        holder.close()
    err = capsys.readouterr().err
    assert status == 69, err
    assert "(rolled back, the schema is as it was)" in err and "(empty)" not in err, err
    assert migrations.status(db).current == older
    assert run_cli("db", "upgrade", "--no-backup") == 0
    assert migrations.status(db).current == head


def test_an_upgrade_that_finds_it_done_under_the_lock_says_so_and_keeps_its_backup(
    behind: tuple[Database, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Two ``db upgrade`` at once: the second read the old revision, backed up, waited for
    the migration lock, found the work done and said "upgraded X -> Y" for the first's
    work. It says the schema was already at the head when it got the lock, changed by
    another process. Its backup holds the database from before that change, and the
    other upgrade took none (``--no-backup``): it was removed as "not needed" after being
    named, and the one copy of the database before the upgrade was gone. It is kept."""
    db, older, head = behind
    holder = psycopg.connect(db.conninfo, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (migrations.MIGRATION_LOCK_KEY,))
    waiting = "wait_event_type = 'Lock' AND wait_event = 'advisory'"
    other = threading.Thread(target=migrations.upgrade, args=(db,))  # first in the queue
    other.start()
    deadline = time.monotonic() + 60
    while backends_where(db.conninfo, waiting) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)

    def release_when_both_wait() -> None:
        deadline = time.monotonic() + 120
        while backends_where(db.conninfo, waiting) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        holder.execute("SELECT pg_advisory_unlock(%s)", (migrations.MIGRATION_LOCK_KEY,))

    releaser = threading.Thread(target=release_when_both_wait)
    releaser.start()
    try:
        status = run_cli("db", "upgrade")
    finally:
        releaser.join()
        other.join()
        holder.close()
    out, err = capsys.readouterr()
    assert status == 0, (out, err)
    path = _backup_named(out)
    assert out.splitlines()[-1] == (
        f"schema already at {head} when the migration lock was had: another process "
        f"changed it from {older} meanwhile; the backup taken first is kept (it may be the "
        f"one copy of the database from before that change): {path}; nothing to do"
    ), out
    from ragstore.backup import check_archive

    info = check_archive(path)
    assert info is not None and info.revision == older
    assert migrations.status(db).current == head


def test_an_upgrade_whose_backup_holds_the_schema_as_it_is_now_removes_it(
    behind: tuple[Database, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The backup a ``db upgrade`` took is removed as not needed only where it records the
    schema the other process left (taken after its change: a copy of what is there)."""
    from ragstore.backup import create_backup
    from ragstore.cli.db_cmd import _report
    from ragstore.config import Settings

    db, older, head = behind
    migrations.upgrade(db)
    info = create_backup(db, Settings(), reason="upgrade")
    assert info.revision == head
    _report("upgrade", older, migrations.migrate(db, "upgrade", "head"), info.path, as_json=False)
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == (
        f"schema already at {head} when the migration lock was had: another process "
        f"changed it from {older} meanwhile; the backup taken first was not needed and "
        f"was removed: {info.path}; nothing to do"
    ), out
    assert list((Path(os.environ["RAGSTORE_DATA_DIR"]) / "backups").iterdir()) == []


def test_an_upgrade_behind_a_session_holding_its_tables_gives_up_naming_it(
    behind: tuple[Database, str, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A session holding ragstore's tables (a backup's pg_dump holds every one until it
    ends: hours): the upgrade's ALTER waited behind it without end, saying nothing, and
    its queued lock held every other query on the table waiting behind it. Each try now
    waits a bounded time and is rolled back; in the end one error names the session, the
    schema as it was, and others' queries went on between the tries."""
    db, older, head = behind
    monkeypatch.setattr(migrations, "LOCK_WAIT_S", 0.5, raising=False)
    monkeypatch.setattr(migrations, "LOCK_RETRY_PAUSE_S", 0.3, raising=False)
    monkeypatch.setattr(migrations, "LOCK_GIVE_UP_S", 3.0, raising=False)
    holder = psycopg.connect(db.conninfo)
    holder.execute("SET application_name = 'pg_dump'")
    _hold_every_table(holder)
    pid = holder.info.backend_pid
    # unfixed, the upgrade waits for good: the holder lets go in the end
    unstick = threading.Timer(20, holder.rollback)
    unstick.start()
    reads: list[float] = []
    done = threading.Event()

    def read_api_keys() -> None:  # a query of the service's, on a table the upgrade alters
        with psycopg.connect(db.conninfo, autocommit=True) as conn:
            while not done.is_set():
                conn.execute("SELECT count(*) FROM api_keys")
                reads.append(time.monotonic())
                time.sleep(0.05)

    reader = threading.Thread(target=read_api_keys)
    reader.start()
    started = time.monotonic()
    try:
        status = run_cli("db", "upgrade", "--no-backup")
    finally:
        took = time.monotonic() - started
        done.set()
        unstick.cancel()
        holder.rollback()
        holder.close()
        reader.join()
    err = capsys.readouterr().err
    assert status == 75, err
    assert took < 20, took
    assert err.startswith("error[statement_cancelled]: upgrade of "), err
    assert err.count("\n") == 1, err
    assert f"pid {pid} (pg_dump: a backup, idle in transaction" in err, err
    assert f"Nothing was changed (rolled back, the schema is at {older})" in err, err
    assert migrations.status(db).current == older
    # the service's reads went on while the upgrade tried (not stuck behind it)
    assert sum(1 for t in reads if started < t < started + took) > 10, len(reads)
    assert run_cli("db", "upgrade", "--no-backup") == 0
    assert migrations.status(db).current == head


def test_an_upgrade_whose_tables_are_let_go_while_it_tries_completes(
    behind: tuple[Database, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A holder that ends while the upgrade tries again (a backup finishing): the next
    try has the locks and the upgrade completes."""
    db, _older, head = behind
    monkeypatch.setattr(migrations, "LOCK_WAIT_S", 0.5, raising=False)
    monkeypatch.setattr(migrations, "LOCK_RETRY_PAUSE_S", 0.3, raising=False)
    monkeypatch.setattr(migrations, "LOCK_GIVE_UP_S", 30.0, raising=False)
    holder = psycopg.connect(db.conninfo)
    _hold_every_table(holder)
    release = threading.Timer(2.0, holder.rollback)
    release.start()
    try:
        assert run_cli("db", "upgrade", "--no-backup") == 0
    finally:
        release.join()
        holder.close()
    assert migrations.status(db).current == head
