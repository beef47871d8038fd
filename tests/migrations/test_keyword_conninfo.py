"""A libpq ``key=value`` conninfo (``host=db dbname=x password='a b'``), which
RAGSTORE_DATABASE_URL takes as well as a URL, on every path that migrates: the library's
upgrade and downgrade, ``ragstore db upgrade`` (with its backup first) and ``db status``;
and its password never printed."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import ValidationError

from ragstore.config import Settings, describe_error
from ragstore.db import migrations
from ragstore.db.database import Database
from ragstore.errors import DatabaseUnavailableError
from tests.conftest import run_cli

# every character a URL or a keyword conninfo must quote: space, both quotes, a backslash,
# @ / : ? # % & = and a comma (the embedded server trusts local connections: libpq never
# sends it, but a conninfo mangled on its way to libpq no longer parses or connects)
PASSWORD = "s3cr et'\"\\@/:?#%&=,x"


def keyword_conninfo(url: str, **extra: str) -> str:
    """``url`` (a URL) as libpq's ``key=value`` form, with :data:`PASSWORD`."""
    params = {k: v for k, v in conninfo_to_dict(url).items() if v is not None}
    return make_conninfo("", **params, password=PASSWORD, **extra)


def test_upgrade_and_downgrade_through_a_keyword_conninfo(empty_database_url: str) -> None:
    """``migrations.upgrade`` handed the conninfo to SQLAlchemy as a URL, which only
    ``postgresql://`` ones were rewritten into: a ``key=value`` one failed with "Could not
    parse SQLAlchemy URL". Options in it (``sslmode``, ``application_name``) reach libpq."""
    conninfo = keyword_conninfo(
        empty_database_url, sslmode="disable", application_name="kv migrate"
    )
    assert conninfo.startswith(("host=", "user=", "dbname=", "port=")), conninfo
    db = Database(conninfo)
    try:
        assert migrations.upgrade(db, "0030").current == "0030"
        assert migrations.upgrade(db).current == migrations.head_revision()
        assert migrations.downgrade(db, "0030").current == "0030"
        assert migrations.downgrade(db, "base").current is None
        assert migrations.upgrade(db).is_current
    finally:
        db.close()
    assert migrations.status(Database(empty_database_url)).is_current


def test_upgrade_sql_of_a_database_with_a_keyword_conninfo(empty_database_url: str) -> None:
    """``upgrade_sql(db)`` set the conninfo as Alembic's URL: the same parse failure."""
    out = migrations.upgrade_sql(Database(keyword_conninfo(empty_database_url)))
    assert "CREATE TABLE" in out and PASSWORD not in out


def test_db_commands_through_a_keyword_conninfo(
    empty_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``ragstore db upgrade`` (which backs the database up first, through pg_dump) and
    ``db status`` with RAGSTORE_DATABASE_URL a ``key=value`` conninfo; nothing they print
    holds its password."""
    migrations.upgrade(Database(empty_database_url), "0030")
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", keyword_conninfo(empty_database_url))
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RAGSTORE_PROFILE", "test")
    capsys.readouterr()
    assert run_cli("db", "upgrade") == 0, capsys.readouterr()
    assert run_cli("db", "status") == 0
    captured = capsys.readouterr()
    assert f"upgraded 0030 -> {migrations.head_revision()}" in captured.out, captured
    assert "backup: " in captured.out and list(tmp_path.glob("backups/*")), captured
    for secret in (PASSWORD, "s3cr"):
        assert secret not in captured.out + captured.err, captured
    assert migrations.status(Database(empty_database_url)).is_current


def test_a_conninfo_libpq_cannot_parse_is_refused_without_its_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """libpq quotes the piece of a conninfo it stopped at: ``missing "=" after "hunter2"``
    (an unquoted space in a password) was the message of ``Database.connect``, and the
    migration's own parse raised it as it was. A conninfo that parses but names no server
    (``db upgrade``'s connection refused) never names its password either."""
    db = Database("host=127.0.0.1 port=1 password=se hunter2")
    for call in (db.connect, lambda: migrations.upgrade(db)):
        with pytest.raises(DatabaseUnavailableError) as caught:
            call()
        assert 'missing "=" after "…"' in str(caught.value), caught.value
        assert "hunter2" not in str(caught.value), caught.value
    for broken in ("'", '"', "\\"):  # an unescaped quote or backslash in the password
        text = f"host=db password='{PASSWORD.replace(broken, '').replace('x', broken)}'"
        with pytest.raises(ValidationError) as refused:
            Settings(database_url=text)
        said = describe_error(refused.value.errors()[0])  # what the CLI prints
        assert "is not a valid libpq key=value string: " in said, said
        assert "s3cr" not in said and "&=," not in said, said
    refused_port = make_conninfo("", host="127.0.0.1", port="1", password=PASSWORD)
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", refused_port)
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RAGSTORE_PROFILE", "test")
    capsys.readouterr()
    for args in (("db", "upgrade", "--no-backup"), ("db", "status")):
        assert run_cli(*args) == 69, args
        captured = capsys.readouterr()
        assert "error[database_unavailable]: " in captured.err, captured
        assert "s3cr" not in captured.out + captured.err, captured
