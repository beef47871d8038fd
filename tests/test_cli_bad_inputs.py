"""Bad values a user can type or set, each refused as one line naming what to fix, before
anything is read or changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli

CONFIG_INVALID = 78
CLI = [sys.executable, "-c", "import sys; from ragstore.cli import main; main(sys.argv[1:])"]


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("RAGSTORE_DATABASE_URL", "", "it is empty; set it to postgresql://"),
        ("RAGSTORE_DATABASE_URL", "  ", "it is empty; set it to postgresql://"),
        ("RAGSTORE_DATABASE_URL", "http://u:hunter2@db/x", "it is an http:// URL"),
        ("RAGSTORE_DATABASE_URL", "mysql://u:hunter2@db/x", "it is a mysql:// URL"),
        ("RAGSTORE_DATABASE_URL", "9x://u:hunter2@db/x", "it is a URL of another scheme"),
        ("RAGSTORE_DATABASE_URL", "hunter2", "it is not a PostgreSQL URL"),
        (
            "RAGSTORE_READ_DATABASE_URLS",
            "postgresql://db2/x, hunter2",
            "item 2 of the comma-separated list is not a PostgreSQL URL",
        ),
        # libpq quotes the piece it stopped at: these were exit 69 at the first connection,
        # saying 'missing "=" after "hunter2"' and 'invalid percent-encoded token:
        # "hunter2%ZZ"'
        (
            "RAGSTORE_DATABASE_URL",
            "host=db password=se hunter2",
            'it is not a valid libpq key=value string: missing "=" after "…" in connection '
            "info string; quote a value that holds a space or a quote: password='a b\\'c'",
        ),
        (
            "RAGSTORE_DATABASE_URL",
            "host=db password='hunter2",
            "it is not a valid libpq key=value string: unterminated quoted string",
        ),
        (
            "RAGSTORE_DATABASE_URL",
            "postgresql://u:hunter2%ZZ@db/x",
            'it is not a valid PostgreSQL URL: invalid percent-encoded token: "…"; percent-encode',
        ),
        # libpq reads the port only when it connects: these were exit 69 there
        (
            "RAGSTORE_DATABASE_URL",
            "postgresql://u:hunter2@db:notaport/x",
            "it names a port that is not a number from 1 to 65535; e.g. postgresql://",
        ),
        (
            "RAGSTORE_READ_DATABASE_URLS",
            "host=db2 port=99999 password=hunter2",
            "item 1 of the comma-separated list names a port that is not a number from 1 "
            "to 65535; e.g. port=5432",
        ),
        (
            "RAGSTORE_READ_DATABASE_URLS",
            "postgresql://u:hunter2@db1,db2/x?target_session_attrs=read-only,"
            " postgresql://u:hunter2@db3,db4:notaport/x",
            "item 2 of the comma-separated list names a port that is not a number from 1 "
            "to 65535; e.g. postgresql://user:password@host:5432/dbname (percent-encode a "
            "reserved character of the password: @ as %40, : as %3A) (the list is split at "
            "each comma followed by a URL, a key= or nothing, and at a comma in a URL's "
            "path; write a password's comma as %2C)",
        ),
        # one server listed twice made two pools of it: twice the connections and twice
        # the share of the reads
        (
            "RAGSTORE_READ_DATABASE_URLS",
            "postgresql://u:hunter2@db2:5432/x, postgres://v:hunter2@DB2/x?sslmode=require",
            "items 1 and 2 of the comma-separated list name the same server (db2:5432, "
            "database x); list each replica once",
        ),
        (
            "RAGSTORE_READ_DATABASE_URLS",
            "postgresql://db9/y,host=db1,db2 dbname=x password=hunter2,"
            "  host=db2,db1 port=5432  dbname=x user=x",
            "items 2 and 3 of the comma-separated list name the same server (db1:5432, "
            "db2:5432, database x); list each replica once",
        ),
        # items sharing a server (a multi-host item naming another item's host): that
        # server took the reads of both, twice its share
        (
            "RAGSTORE_READ_DATABASE_URLS",
            "host=db1,db2 dbname=x password=hunter2, postgresql://u:hunter2@DB2:5432,db3/x",
            "items 1 and 2 of the comma-separated list both name db2:5432, database x: that "
            "server would take the reads of both (twice its share); name each server in one "
            "item only (hosts are compared as written, no name resolved)",
        ),
        (  # a socket directory with and without its trailing slash
            "RAGSTORE_READ_DATABASE_URLS",
            "postgresql://db9/x, host=/run/pg/ port=5433 dbname=x password=hunter2,"
            " host=db1,/run/pg port=5433 dbname=x",
            "items 2 and 3 of the comma-separated list both name /run/pg:5433, database x",
        ),
        # libpq's password "hunter2,dbname=x" was taken for two replicas, both valid: the
        # first with the wrong password, the second the local socket's
        *(
            (
                "RAGSTORE_READ_DATABASE_URLS",
                value,
                "item 1 of the comma-separated list ends in a password followed by a comma "
                "and a key=: is that the password's own comma, or the start of the next "
                "replica? Quote the password (password='a,b=c') or percent-encode it in a URL "
                "(, as %2C, = as %3D)",
            )
            for value in (
                "host=db1 password=hunter2,dbname=x",
                "postgresql://u@db1/x?sslmode=prefer&password=hunter2,dbname=x",
            )
        ),
    ],
)
def test_a_database_url_libpq_cannot_take_is_a_config_error(
    variable: str,
    value: str,
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A mistyped RAGSTORE_DATABASE_URL was reported as the database being unavailable
    (exit 69) and an empty one went to whatever server listened on the default local
    socket; a mistyped replica URL was taken for a replica that is down, and every read
    went to the primary without a word. Each is now a config error (78) naming the
    variable, never repeating the value (it may hold a password)."""
    monkeypatch.setenv(variable, value)
    assert run_cli("collections", "list", "--json") == CONFIG_INVALID
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"error[config_invalid]: {variable}=(secret) is invalid: ")
    assert said in err and "hunter2" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        # a validator's own ValueError: pydantic put "Value error, " before its message
        (
            "RAGSTORE_TRUSTED_PROXIES",
            "10.0.0.5, *",
            "'*' is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/24)",
        ),
        (
            "RAGSTORE_URL",
            "ftp://ragstore",
            "not an http(s) URL of a ragstore server (e.g. http://127.0.0.1:8080); unset it "
            "to work on the database directly",
        ),
        # pydantic's own words say what is wrong: kept as they are
        (
            "RAGSTORE_WORKER_MAX_ATTEMPTS",
            "lots",
            "Input should be a valid integer, unable to parse string as an integer",
        ),
        ("RAGSTORE_PROFILE", "production", "Input should be 'dev', 'test' or 'prod'"),
    ],
)
def test_a_bad_setting_is_one_line_in_the_users_words(
    variable: str,
    value: str,
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The line says what a validator said, without pydantic's ``Value error, `` before it
    (the name of a Python exception in the middle of a sentence written for the user)."""
    monkeypatch.setenv(variable, value)
    assert run_cli("config", "show") == CONFIG_INVALID
    out, err = capsys.readouterr()
    assert out == ""
    shown = "(secret)" if variable == "RAGSTORE_URL" else repr(value)
    assert err == f"error[config_invalid]: {variable}={shown} is invalid: {said}\n"


def test_a_validators_message_is_its_own_without_pydantics_context() -> None:
    """``errors(include_context=False)`` holds no exception to read the message from: the
    prefix is taken off pydantic's message instead."""
    from pydantic import ValidationError

    from ragstore.config import Settings, describe_error

    with pytest.raises(ValidationError) as refused:
        Settings(data_dir="  ")
    said = describe_error(refused.value.errors(include_context=False)[0])
    assert said.startswith("RAGSTORE_DATA_DIR='  ' is invalid: it is empty; name a folder, ")


@pytest.mark.parametrize(
    "value",
    [
        "postgresql://u@db:5432/x",
        "postgres://db/x",
        "host=/tmp dbname=x user=u",
    ],
)
def test_every_form_libpq_takes_is_accepted(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from ragstore.config import Settings

    # other databases on the same server: not the primary's, nor one another's
    primary, other = value.replace("x", "z"), value.replace("x", "y")
    settings = Settings(database_url=primary, read_database_urls=f"{value},{other}")
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == primary
    assert settings.replica_urls == [value, other]


def test_a_replica_item_naming_the_primarys_server_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A replica item whose hosts include the primary's (its host and port, its database)
    was read from as a replica: the first of its hosts to answer took the item's share of
    the reads, and where that was the primary, they were the primary's all along."""
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", "postgresql://u:hunter2@db1/x")
    monkeypatch.setenv(
        "RAGSTORE_READ_DATABASE_URLS", "postgresql://db7/x, postgresql://u:hunter2@db2,DB1:5432/x"
    )
    assert run_cli("collections", "list", "--json") == CONFIG_INVALID
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "error[config_invalid]: RAGSTORE_READ_DATABASE_URLS=(secret) is invalid: item 2 of "
        "the comma-separated list names the primary's db1:5432, database x "
        "(RAGSTORE_DATABASE_URL): reads sent there would be the primary's; remove that host "
        "from the item, or add target_session_attrs=standby where its hosts take turns as the "
        "primary (hosts are compared as written, no name resolved)\n"
    )


@pytest.mark.parametrize(
    ("primary", "replicas", "said"),
    [
        # the item names every host the primary may be on: whichever is, the item reaches it
        (
            "postgresql://u:hunter2@db1,db2/x?target_session_attrs=read-write",
            "postgresql://db7/x, host=db2,DB1 port=5432 dbname=x password=hunter2",
            "item 2 of the comma-separated list names every host of the primary's (db1:5432, "
            "db2:5432, database x; RAGSTORE_DATABASE_URL): whichever of them is the primary, "
            "the item reaches it, a primary and no replica; name only the standbys' hosts in "
            "the item, or add target_session_attrs=standby (hosts are compared as written, no "
            "name resolved)",
        ),
        (  # and other hosts besides
            "host=/run/pg,db2 port=5433 dbname=x",
            "postgresql://u@db3:5433,db2:5433,%2Frun%2Fpg%2F:5433/x",
            "item 1 of the comma-separated list names every host of the primary's "
            "(/run/pg:5433, db2:5433, database x; RAGSTORE_DATABASE_URL)",
        ),
        (  # a single-host primary given by its address: the item names that address
            "host=db1 hostaddr=192.0.2.1 dbname=x",
            "host=192.0.2.1,db2 dbname=x",
            "item 1 of the comma-separated list names the primary's 192.0.2.1:5432, database x "
            "(RAGSTORE_DATABASE_URL): reads sent there would be the primary's",
        ),
        # a host of a multi-host primary named by two items is still one server in two
        (
            "postgresql://u@db1,db2/x",
            "postgresql://u@db2/x, host=db3,db2 dbname=x",
            "items 1 and 2 of the comma-separated list both name db2:5432, database x",
        ),
    ],
)
def test_a_replica_item_naming_every_host_of_the_primary_is_a_config_error(
    primary: str,
    replicas: str,
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Only some of a multi-host primary's hosts make a replica (see below): an item naming
    all of them, whatever else it names, reaches the primary wherever it is."""
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", primary)
    monkeypatch.setenv("RAGSTORE_READ_DATABASE_URLS", replicas)
    assert run_cli("collections", "list", "--json") == CONFIG_INVALID
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(
        f"error[config_invalid]: RAGSTORE_READ_DATABASE_URLS=(secret) is invalid: {said}"
    )
    assert "hunter2" not in err


@pytest.mark.parametrize(
    ("primary", "replicas", "warned"),
    [
        (  # the common failover shape: db2 a standby while db1 is the primary
            "postgresql://u:hunter2@db1,db2/x?target_session_attrs=read-write",
            "host=db2 dbname=x user=u password=hunter2",
            [
                "item 1 of RAGSTORE_READ_DATABASE_URLS names db2:5432, database x, a failover "
                "host of RAGSTORE_DATABASE_URL: while it is the primary (after a failover to "
                "it) it is no standby, and reads skip the item (they go to the other "
                "replicas, or to the primary)"
            ],
        ),
        (  # the first host too, and an item of other hosts besides
            "host=db1,db2 dbname=x",
            "postgresql://u@DB1:5432/x, postgresql://u@db3,db2/x",
            [
                "item 1 of RAGSTORE_READ_DATABASE_URLS names db1:5432, database x, a failover "
                "host of RAGSTORE_DATABASE_URL: while it is the primary (after a failover to "
                "it) it is no standby, and reads skip the item (they go to the other "
                "replicas, or to the primary)",
                "item 2 of RAGSTORE_READ_DATABASE_URLS names db2:5432, database x, a failover "
                "host of RAGSTORE_DATABASE_URL: while it is the primary (after a failover to "
                "it) it is no standby, and reads skip the item; add "
                "target_session_attrs=standby to the item to have libpq pass over it to the "
                "item's other hosts then",
            ],
        ),
        (  # a socket directory (its trailing /) and a port for each host
            "host=/run/pg,db2 port=5433,5434 dbname=x",
            "host=/run/pg/ port=5433 dbname=x",
            [
                "item 1 of RAGSTORE_READ_DATABASE_URLS names /run/pg:5433, database x, a "
                "failover host of RAGSTORE_DATABASE_URL: while it is the primary (after a "
                "failover to it) it is no standby, and reads skip the item (they go to the "
                "other replicas, or to the primary)"
            ],
        ),
        # asking for a standby, it is no warning: libpq passes over a primary
        ("postgresql://u@db1,db2/x", "postgresql://u@db2,db3/x?target_session_attrs=standby", []),
        # one name (a certificate's) with two addresses: two servers, libpq connects to each
        # hostaddr
        ("host=db hostaddr=192.0.2.1 dbname=x", "host=db hostaddr=192.0.2.2 dbname=x", []),
        ("host=db1 dbname=x", "host=db1 hostaddr=192.0.2.2 dbname=x", []),
    ],
)
def test_a_replica_on_a_failover_host_of_the_primary_is_accepted_with_a_warning(
    primary: str,
    replicas: str,
    warned: list[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A primary URL listing failover hosts with a replica item naming one of them (a
    standby while another is the primary) was refused at start: a common, valid setup that
    stopped starting. It is a replica; the warning says what a failover to it does."""
    import logging

    from ragstore import profiles

    monkeypatch.setattr(profiles, "_warned", set())
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", primary)
    monkeypatch.setenv("RAGSTORE_READ_DATABASE_URLS", replicas)
    with caplog.at_level(logging.WARNING, logger="ragstore.profiles"):
        settings = profiles.get_settings()
        profiles.get_settings()  # once a process
    assert settings.read_database_urls is not None
    assert settings.read_database_urls.get_secret_value() == replicas
    lines = [r.getMessage() for r in caplog.records if r.name == "ragstore.profiles"]
    assert lines == warned
    assert not any("hunter2" in line for line in lines)


@pytest.mark.parametrize(
    ("primary", "replicas"),
    [
        # compared as written: a name and an address (or localhost) are not resolved
        (None, "postgresql://u@localhost/x, postgresql://u@127.0.0.1/x"),
        (None, "host=db1,db2 dbname=x, host=db2,db3 dbname=y"),  # another database
        (None, "host=db1,db2 port=5433 dbname=x, host=db2 dbname=x"),  # another port
        (None, "service=a, service=b"),  # hosts in the service file, not read
        ("postgresql://u@db1/x", "postgresql://u@db1:5433/x, postgresql://u@db1/y"),
        # hosts that take turns as the primary: libpq passes over the one that is
        *(
            ("postgresql://u@db1,db2/x", f"postgresql://u@db1,db2/x?target_session_attrs={a}")
            for a in ("standby", "prefer-standby", "read-only")
        ),
    ],
)
def test_replicas_that_share_no_server_are_accepted(primary: str | None, replicas: str) -> None:
    from ragstore.config import Settings

    """Only a server reached through two items (or an item and the primary) is refused:
    what is not one as written, or is one libpq is told to pass over, is a replica."""
    settings = Settings(database_url=primary, read_database_urls=replicas)
    assert settings.read_database_urls is not None
    assert settings.read_database_urls.get_secret_value() == replicas


@pytest.mark.parametrize(
    "value",
    [
        "postgresql://u@db1:5432,db2:5433/x",  # a port for each host
        "postgresql://u@db1,db2:5433/x",  # db1 on the default port
        "host=db1,db2 port=5432,5433",
    ],
)
def test_a_port_for_each_of_several_hosts_is_accepted(value: str) -> None:
    from ragstore.config import Settings

    settings = Settings(database_url=value)
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == value


@pytest.mark.parametrize(
    ("value", "replicas"),
    [
        (  # a libpq multi-host URL was cut at its commas and refused
            "postgresql://u:p@db1:5432,db2:5433/x?target_session_attrs=read-only",
            ["postgresql://u:p@db1:5432,db2:5433/x?target_session_attrs=read-only"],
        ),
        (
            "postgresql://u@db1,db2/x?target_session_attrs=read-only,"
            " postgres://u@db3:5432,db4:5433/x",
            [
                "postgresql://u@db1,db2/x?target_session_attrs=read-only",
                "postgres://u@db3:5432,db4:5433/x",
            ],
        ),
        (
            "host=db1,db2 port=5432,5433 password='a,b=c',host=db3",
            ["host=db1,db2 port=5432,5433 password='a,b=c'", "host=db3"],
        ),
        # a password's comma and key= written so that the list cannot take them for a
        # separator (the documented ways); a space after a comma says that it is one
        ("host=db1 password='a,dbname=b'", ["host=db1 password='a,dbname=b'"]),
        ("host=db1 password=a\\,dbname=b", ["host=db1 password=a\\,dbname=b"]),
        (
            "postgresql://u:a%2Cdbname=b@db1/x, postgresql://db2/x?password=a%2Cdbname%3Db",
            ["postgresql://u:a%2Cdbname=b@db1/x", "postgresql://db2/x?password=a%2Cdbname%3Db"],
        ),
        ("host=db1 password=a, dbname=b", ["host=db1 password=a", "dbname=b"]),
    ],
)
def test_a_replica_of_several_hosts_is_one_replica(value: str, replicas: list[str]) -> None:
    from ragstore.config import Settings

    assert Settings(read_database_urls=value).replica_urls == replicas


NOT_UTF8 = os.fsdecode(b"team\xff")  # as Python holds an argument of bytes not UTF-8


@pytest.mark.parametrize(
    ("args", "where"),
    [
        (["collections", "show", NOT_UTF8], "'NAME'"),
        (["collections", "create", "ok", "--model", NOT_UTF8], "'--model'"),
        (["documents", "list", "-c", NOT_UTF8], "'--collection' / '-c'"),
        (["models", "show", NOT_UTF8], "'MODEL'"),
        (["keys", "create", "--scope", "read", "--name", NOT_UTF8], "'--name'"),
        (["keys", "revoke", NOT_UTF8], "'KEY_ID'"),
        (["ingest", "notes.md", "-c", "ok", "--meta", f"{NOT_UTF8}=x"], "'--meta'"),
    ],
)
def test_a_name_of_bytes_not_utf8_is_a_usage_error_not_a_traceback(
    args: list[str],
    where: str,
    cli_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A collection, model or key named with bytes that are not UTF-8 (a Latin-1 terminal,
    ``$'team\\xff'``) reached the database driver, which cannot encode it: the command ended
    with a UnicodeEncodeError traceback (exit 1), or, for ``--meta``, failed every file
    with "invalid input syntax for type json". Each is now one usage line naming the
    option and the byte, before anything is read or stored."""
    assert run_cli(*args) == 64
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"error[usage]: Invalid value for {where}: it holds the byte 0xFF ")
    assert "at character 5, which is not UTF-8 text; type it in UTF-8" in err
    assert len(err.strip().splitlines()) == 1
    assert run_cli("collections", "list", "--json") == 0
    assert "ok" not in capsys.readouterr().out


def test_restore_from_a_named_pipe_is_refused_not_waited_on(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """``ragstore restore FIFO --yes`` waited for good in ``pg_restore --list`` on a pipe
    that no one wrote to (and a pipe written to could not be read again for the restore
    itself); ``backup`` and ``ingest`` already refused one. Now it is one line, exit 65,
    at once. A child process, so that the test fails rather than hangs without the fix."""
    fifo = tmp_path / "archive.dump"
    os.mkfifo(fifo)
    proc = subprocess.run(
        [*CLI, "restore", str(fifo), "--yes"],
        env={**os.environ, **cli_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 65, proc.stderr
    assert proc.stderr == (
        f"error[backup_invalid]: {fifo} is not a regular file (a device, pipe or socket); "
        "nothing was restored: copy the archive to a file and restore that\n"
    )


def test_a_question_on_a_closed_stdin_is_answered_no(
    cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With stdin closed (``ragstore db downgrade --to base <&-``, a service manager),
    Python's ``sys.stdin`` is None: the question ended the command with an AttributeError
    traceback. No answer is now a no: exit 1, nothing changed, as at end of input."""
    from ragstore.db import migrations
    from ragstore.db.database import Database

    db = Database(cli_env["RAGSTORE_DATABASE_URL"])
    head = migrations.status(db).current
    monkeypatch.setattr(sys, "stdin", None)
    assert run_cli("db", "downgrade", "--to", "base") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.endswith("[y/N]: \naborted: nothing was changed\n")
    assert migrations.status(db).current == head


def _cli_with_fd_closed(
    fd: int, env: dict[str, str], *args: str, answer: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process started with file descriptor ``fd`` closed, as
    ``ragstore ARGS <&-`` (0) or ``2>&-`` (2) starts it; stdin is ``answer`` unless closed,
    what stdout and stderr (unless closed) held is returned."""
    return subprocess.run(
        [*CLI, *args],
        env={**os.environ, **env},
        input=answer,
        stdin=None if answer is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if fd != 2 else None,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.close(fd),
    )


def test_a_question_with_stderr_closed_is_asked_and_answered(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``ragstore collections delete NAME 2>&-`` (cron, a service manager): Python's
    ``sys.stderr`` is None, and writing the question to it ended the command with an
    AttributeError (exit 1, the collection kept) whatever was answered. stderr is now the
    /dev/null on fd 2: a yes deletes, a no aborts with 1, an error keeps its own status."""
    assert run_cli("collections", "create", "closed-stderr") == 0
    capsys.readouterr()
    kept = _cli_with_fd_closed(2, cli_env, "collections", "delete", "closed-stderr", answer="n\n")
    assert (kept.returncode, kept.stdout) == (1, "")
    assert run_cli("collections", "show", "closed-stderr") == 0
    gone = _cli_with_fd_closed(
        2, cli_env, "collections", "delete", "closed-stderr", "--json", answer="y\n"
    )
    assert gone.returncode == 0, gone.stdout
    assert json.loads(gone.stdout) == {"deleted": "closed-stderr", "documents": 0}
    assert run_cli("collections", "show", "closed-stderr") == 66
    missing = _cli_with_fd_closed(
        2, cli_env, "collections", "delete", "closed-stderr", answer="y\n"
    )
    assert (missing.returncode, missing.stdout) == (66, "")


def test_a_question_with_stdin_closed_in_the_real_cli_is_answered_no(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``ragstore collections delete NAME <&-``, the real process (Python's ``sys.stdin``
    None, fd 0 the /dev/null the CLI put there): no answer is a no, exit 1, nothing
    deleted and no traceback; an error still exits with its own status, one line."""
    assert run_cli("collections", "create", "closed-stdin") == 0
    capsys.readouterr()
    kept = _cli_with_fd_closed(0, cli_env, "collections", "delete", "closed-stdin")
    assert (kept.returncode, kept.stdout) == (1, ""), kept.stderr
    assert kept.stderr == (
        "Delete collection 'closed-stdin' with its 0 documents? (pass --yes to skip this "
        "question) [y/N]: \naborted: nothing was changed\n"
    )
    assert run_cli("collections", "show", "closed-stdin") == 0
    missing = _cli_with_fd_closed(0, cli_env, "collections", "delete", "no-such-collection")
    assert (missing.returncode, missing.stdout) == (66, ""), missing.stderr
    assert missing.stderr.startswith("error[collection_not_found]: ")
    assert missing.stderr.count("\n") == 1, missing.stderr


def test_an_empty_data_dir_is_a_config_error_not_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``RAGSTORE_DATA_DIR=`` (``=$UNSET_VAR``) was the path "", the current directory: the
    command created a PostgreSQL cluster in ``./pg`` wherever it ran and worked on that
    empty store ("no collections yet"). Now it is one config error naming the variable."""
    monkeypatch.delenv("RAGSTORE_DATABASE_URL", raising=False)
    monkeypatch.setenv("RAGSTORE_DATA_DIR", "")
    monkeypatch.chdir(tmp_path)
    assert run_cli("collections", "list") == CONFIG_INVALID
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error[config_invalid]: RAGSTORE_DATA_DIR='' is invalid: ")
    assert "it is empty; name a folder, or unset it to use the default (" in err
    assert list(tmp_path.iterdir()) == []


def test_a_failed_files_line_escapes_a_newline_in_its_path(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file named ``$'e.md\\n  failed [x] spoof.md'`` (empty: it fails) made its failure
    line two, the second one spoofing another file's failure. Its newline is now shown as
    ``\\n``: one line per failed file."""
    name = "e.md\n  failed [binary_file] spoof.md"
    (tmp_path / name).write_text("")
    assert run_cli("ingest", str(tmp_path / name), "-c", "escaped-paths") == 1
    failed = [line for line in capsys.readouterr().err.splitlines() if "failed [" in line]
    assert len(failed) == 1, failed
    assert "e.md\\n  failed [binary_file] spoof.md" in failed[0]
    assert failed[0].startswith("  failed [empty_document] ")


def test_an_error_escapes_a_newline_in_the_path_it_names(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ragstore restore $'a\\nb.dump'`` (no such file) said ``a b.dump`` was not found:
    one line, but a path that is not the one given. Now the newline is shown as ``\\n``,
    as in every other path the CLI prints, and the error is still one line."""
    missing = tmp_path / "a\nb.dump"
    assert run_cli("restore", str(missing), "--yes") == 66
    err = capsys.readouterr().err
    assert err.startswith(f"error[path_not_found]: {tmp_path}/a\\nb.dump"), err
    assert err.count("\n") == 1 and err.endswith("\n"), err


def test_output_to_a_closed_stdout_is_an_io_error(cli_env: dict[str, str]) -> None:
    """``ragstore collections list >&-``: Python's stdout is None, every print wrote
    nothing and the command ended 0, its output lost unsaid. Now exit 74 (EX_IOERR) and
    one line saying so."""
    proc = subprocess.run(
        [*CLI, "collections", "list", "--json"],
        env={**os.environ, **cli_env},
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.close(1),
    )
    assert proc.returncode == 74, proc.stderr
    assert proc.stderr == (
        "error[output_failed]: could not write the output to stdout (stdout is closed); "
        "what the command printed there is lost: run it with stdout to a file or pipe "
        "that can be written\n"
    )


# the real CLI, with a write to file descriptor 1 in the middle of its backup, as a
# library's C code makes one (a Rust or C++ warning, printf); then what the backup's lock
# file (a file the command holds open) holds is said
_WRITES_TO_FD_1_MID_BACKUP = """
import os, sys
from pathlib import Path
import ragstore.backup
dump = ragstore.backup._dump_to
def dump_with_a_write(tmp, *args, **kwargs):
    os.write(1, b"STRAY OUTPUT\\n")
    lock = Path(tmp).with_name("." + Path(tmp).name[1:].removesuffix(".partial") + ".lock")
    print("the lock file holds", repr(lock.read_text()), file=sys.stderr)
    return dump(tmp, *args, **kwargs)
ragstore.backup._dump_to = dump_with_a_write
from ragstore.cli import main
main(sys.argv[1:])
"""


def test_a_closed_stdout_is_taken_by_no_file_a_command_opens(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """``ragstore backup x.dump >&-``: the next file opened took fd 1 (the backup's lock
    file, or the connection to PostgreSQL), so what a library's C code wrote to stdout
    went into that file. fd 1 is now /dev/null from the start; the output still counts as
    lost: exit 74, one line saying so."""
    import hashlib
    import json

    path = tmp_path / "x.dump"
    proc = subprocess.run(
        [sys.executable, "-c", _WRITES_TO_FD_1_MID_BACKUP, "backup", str(path)],
        env={**os.environ, **cli_env},
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
        preexec_fn=lambda: os.close(1),
    )
    assert proc.returncode == 74, proc.stderr
    assert proc.stderr == (
        "the lock file holds ''\n"
        "error[output_failed]: could not write the output to stdout (stdout is closed); "
        "what the command printed there is lost: run it with stdout to a file or pipe "
        "that can be written\n"
    )
    archive = path.read_bytes()
    assert archive.startswith(b"PGDMP") and b"STRAY" not in archive
    sidecar = json.loads(path.with_name("x.dump.json").read_text())
    assert sidecar["sha256"] == hashlib.sha256(archive).hexdigest()


def test_output_into_a_closed_pipe_ends_quietly_with_141(cli_env: dict[str, str]) -> None:
    """``ragstore collections list | head -c1`` whose reader has gone: the broken pipe
    ended the command with exit status 1 (typer's) or 0, or a traceback at exit. Now, as
    a tool killed by SIGPIPE: exit 141, nothing on stderr."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            [*CLI, "collections", "list", "--json"],
            env={**os.environ, **cli_env},
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (141, "")


def test_restore_checks_the_archive_before_asking(
    cli_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``ragstore restore`` asked "Replace everything ...?" of a file that did not exist or
    was no archive at all, and a "yes" was answered with the refusal. The cheap checks
    (exists, a file, readable, starts as a pg_dump archive) now come before the question."""
    import io

    text = tmp_path / "notes.txt"
    text.write_text("not an archive\n")
    for path, status, said in (
        (tmp_path / "missing.dump", 66, "error[path_not_found]: "),
        (text, 65, "error[backup_invalid]: "),
    ):
        monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
        assert run_cli("restore", str(path)) == status
        err = capsys.readouterr().err
        assert "[y/N]" not in err and "Replace everything" not in err, err
        assert err.startswith(said + str(path)), err


def test_an_unknown_model_name_is_a_config_error_naming_where_to_look(
    cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``collections create --model bogus`` (or ``RAGSTORE_MODEL=bogus``) exited 70,
    EX_SOFTWARE, as ragstore's own failure; it is the user's configuration to fix: 78,
    with the command that lists the names to use."""
    assert run_cli("collections", "create", "bogus-opt", "--model", "bogus") == CONFIG_INVALID
    err = capsys.readouterr().err
    assert err.startswith("error[model_not_found]: no pinned model 'bogus'"), err
    assert "`ragstore models list` lists the names to use" in err
    monkeypatch.setenv("RAGSTORE_MODEL", "bogus")
    assert run_cli("collections", "create", "bogus-env") == CONFIG_INVALID
    assert "`ragstore models list`" in capsys.readouterr().err


def test_a_backup_to_an_unwritable_path_names_that_path(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``ragstore backup /proc/x.dump`` failed in pg_dump naming its hidden temporary file
    (``could not open output file "/proc/.x.dump.partial"``), a name the user never gave.
    The error names ``/proc/x.dump``."""
    assert run_cli("backup", "/proc/x.dump") == 74
    err = capsys.readouterr().err
    assert err.startswith("error[backup_failed]: cannot write the backup to /proc/x.dump: "), err
    assert ".partial" not in err


def test_a_backup_to_an_empty_path_is_a_usage_error_not_the_current_folder(
    cli_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``ragstore backup ""`` (a path from an unset variable) is ``Path("")``, the current
    folder: a whole copy of the database was written there. It is a usage error, and
    nothing is written."""
    monkeypatch.chdir(tmp_path)
    assert run_cli("backup", "") == 64
    err = capsys.readouterr().err
    assert err.startswith(
        "error[usage]: Invalid value for '[PATH]': the path is empty; name a file or a "
        "folder, or leave it out to write under DATA_DIR/backups"
    ), err
    assert list(tmp_path.iterdir()) == []


def test_a_bad_value_from_dot_env_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``RAGSTORE_SEARCH_K=abc`` in ./.env said ``RAGSTORE_SEARCH_K='abc' is invalid``,
    sending the user to an environment with no such variable: the line names the file.
    The same value from the environment (which wins over .env) names none."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAGSTORE_SEARCH_K", raising=False)
    (tmp_path / ".env").write_text("RAGSTORE_SEARCH_K=abc\n")
    assert run_cli("config", "show") == CONFIG_INVALID
    err = capsys.readouterr().err
    assert err.startswith(
        f"error[config_invalid]: RAGSTORE_SEARCH_K='abc' (from {tmp_path / '.env'}) is invalid: "
    ), err
    monkeypatch.setenv("RAGSTORE_SEARCH_K", "xyz")
    assert run_cli("config", "show") == CONFIG_INVALID
    assert capsys.readouterr().err.startswith(
        "error[config_invalid]: RAGSTORE_SEARCH_K='xyz' is invalid: "
    )


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["keys", "create", "--scope", "bogus"], "--scope"),
        (["ingest", ".", "-c", "x", "--prune"], "--prune"),
    ],
)
def test_a_bad_option_value_is_a_usage_error(
    cli_env: dict[str, str],
    args: list[str],
    option: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """TROUBLESHOOTING.md: a bad option value exits 64 (``error[usage]``), as ``jobs list
    --status bogus`` does: ``keys create --scope bogus`` and ``--prune`` without
    ``--sync`` exited 65 (``invalid_input``). Nothing is created."""
    monkeypatch.chdir(tmp_path)
    assert run_cli(*args) == 64
    err = capsys.readouterr().err
    assert err.startswith(f"error[usage]: Invalid value for '{option}': "), err
    assert err.count("\n") == 1, err
    assert run_cli("keys", "list", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []


def test_a_backup_into_a_missing_folder_is_refused_and_creates_nothing(
    cli_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``ragstore backup /nonexistent/dir/x.dump`` created /nonexistent/dir (0700) and
    exited 0. A folder named is the user's: a missing one is ``path_not_found`` (66), as
    ``restore nothere.dump`` is; the default folder under the data dir is still made."""
    target = tmp_path / "nowhere" / "deeper" / "x.dump"
    assert run_cli("backup", str(target)) == 66
    err = capsys.readouterr().err
    assert err == (
        f"error[path_not_found]: {target.parent}: no such folder; nothing was backed up: "
        "create it first, or name a file in an existing folder\n"
    )
    assert list(tmp_path.iterdir()) == []
    data_dir = tmp_path / "data"  # a data dir with no backups folder yet
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(data_dir))
    assert run_cli("backup") == 0
    made = [p.name for p in (data_dir / "backups").iterdir() if p.suffix == ".dump"]
    assert len(made) == 1 and made[0].endswith("-manual.dump"), made


def test_an_ingest_of_only_missing_paths_exits_as_path_not_found(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ragstore ingest missing-dir`` exited 1 where TROUBLESHOOTING.md maps
    ``path_not_found`` to 66, the status ``restore nothere.dump`` exits with. Every path
    given missing: 66; a missing one beside a file that is ingested: 1, some failed."""
    gone, also_gone = tmp_path / "missing-dir", tmp_path / "nope.md"
    assert run_cli("ingest", str(gone), str(also_gone), "-c", "missing-paths") == 66
    err = capsys.readouterr().err
    assert f"[path_not_found] {gone}: no such file or directory" in err, err
    real = tmp_path / "real.md"
    real.write_text("# Real\n\nThere is a file here.\n")
    assert run_cli("ingest", str(gone), str(real), "-c", "missing-paths") == 1
    assert "1 added" in capsys.readouterr().err
