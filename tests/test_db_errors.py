"""The one table mapping PostgreSQL failures to our errors, row by row, and the cases
that reach it through a real database."""

from __future__ import annotations

import select
import signal
import socket
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import psycopg
import pytest
from psycopg import errors as pg
from psycopg.pq import DiagnosticField
from psycopg_pool import PoolTimeout

from ragstore import backup
from ragstore.config import Settings
from ragstore.db import spaces
from ragstore.db.database import Breaker, Database, is_full, refused_for_limit
from ragstore.db.errors import (
    DISK_FULL,
    SQLSTATE_MAP,
    classify,
    ends_session,
    recovery_conflict,
    translate,
    translated,
)
from ragstore.errors import (
    BackupError,
    ConflictError,
    DatabaseError,
    DatabaseUnavailableError,
    InputError,
    RagstoreError,
    RetryLater,
    SearchTimeoutError,
    StatementCancelledError,
    public_detail,
    public_reason,
)
from ragstore.http.problems import problem_body
from ragstore.jobs.runner import passing_cause
from ragstore.runtime import Runtime
from ragstore.search import search
from ragstore.search.service import _search_deadline
from tests.conftest import create_database, drop_database, run_cli
from tests.search_helpers import Doc, make_collection, write_docs


def _sample(key: str) -> psycopg.Error:
    """A psycopg exception carrying the SQLSTATE ``key`` (a class gets its 000 code)."""
    code = key if len(key) == 5 else key + "000"
    cls: type[psycopg.Error] = pg.lookup(code)
    return cls(f"boom {code}")


@pytest.mark.parametrize("key", sorted(SQLSTATE_MAP))
def test_every_row_of_the_table_maps_as_listed(key: str) -> None:
    expected, reason = SQLSTATE_MAP[key]
    got = translate(_sample(key), "doing x")
    assert type(got) is expected
    assert reason in str(got) and str(got).startswith("doing x")


def test_the_table_sends_input_to_4xx_and_only_connections_to_503() -> None:
    statuses = {key: cls.http_status for key, (cls, _) in SQLSTATE_MAP.items()}
    for key, status in statuses.items():
        # a lock timeout: retry; a read-only database refuses every write until it is fixed;
        # a session ended for idling in a transaction (25P03), as class 57's
        if key[:2] in ("08", "53", "57") or key in ("55P03", "25006", "25P03"):
            assert status == 503, key
        elif key in ("55", "58") or key[:2] == "XX":
            # the server's state or its own failure: no retry mends it, an operator acts
            assert status == 500, key
        else:
            assert 400 <= status < 500, key


@pytest.mark.parametrize(
    "exc, expected",
    [
        (pg.SyntaxError("bug"), DatabaseError),  # 42601: our bug, 500
        (pg.UndefinedTable("bug"), DatabaseError),  # 42P01: our bug, 500
        # ... except a collection's vector table, dropped by a concurrent delete or rollback
        (pg.UndefinedTable('relation "emb_12" does not exist'), ConflictError),
        # ... whatever the server's lc_messages (its quotes translated, the name not)
        (pg.UndefinedTable("FEHLER:  Relation »emb_12« existiert nicht"), ConflictError),
        (pg.UndefinedTable('relation "members_12" does not exist'), DatabaseError),
        # a hot standby's recovery conflict is not the caller's: 503, not 409
        (
            pg.SerializationFailure("canceling statement due to conflict with recovery"),
            StatementCancelledError,
        ),
        (
            pg.DeadlockDetected("canceling statement due to conflict with recovery"),
            StatementCancelledError,
        ),
        (pg.DeadlockDetected("deadlock detected"), ConflictError),
        (psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"), InputError),
        (psycopg.OperationalError("connection failed"), DatabaseUnavailableError),
        (psycopg.InterfaceError("the connection is closed"), DatabaseUnavailableError),
        (PoolTimeout("no connection"), DatabaseUnavailableError),
    ],
)
def test_errors_outside_the_table(exc: Exception, expected: type[RagstoreError]) -> None:
    assert classify(exc)[0] is expected
    assert type(translate(exc, "x")) is expected


@pytest.mark.parametrize(
    "code, text, expected, words",
    [
        # class 58: a system error of the server's (a disk's I/O error, a file missing)
        (
            "58030",
            'could not read block 0 in file "base/5/16384": Input/output error',
            DatabaseError,
            "system error (such as an I/O error): an operator must look into the database",
        ),
        ("58P01", 'could not open file "base/5/16384": No such file', DatabaseError, "system"),
        # class XX: corrupted data or an index, a bug of the server's
        (
            "XX001",
            "invalid page in block 0 of relation base/5/16384",
            DatabaseError,
            "corrupted data: an operator must look into the database server's log and "
            "repair or restore",
        ),
        ("XX002", 'index "chunks_pkey" has wrong tuple order', DatabaseError, "REINDEX"),
        ("XX000", "cache lookup failed for relation 1", DatabaseError, "internal error"),
        # class 55: the statement's own state
        ("55000", "recovery is in progress", DatabaseError, "not in the state"),
        ("55P02", 'parameter "wal_level" cannot be changed now', DatabaseError, "not in the"),
        ("55006", 'database "x" is being accessed by other users', ConflictError, "in use"),
        # classes without a row that psycopg raises as an OperationalError: answered
        ("57000", "operator intervention", DatabaseError, "refused the statement"),
        ("38000", "external routine exception", DatabaseError, "refused the statement"),
        ("F0000", "config file error", DatabaseError, "refused the statement"),
        ("HV000", "fdw error", DatabaseError, "refused the statement"),
    ],
)
def test_an_error_the_server_answered_is_not_told_as_unreachable(
    code: str, text: str, expected: type[RagstoreError], words: str
) -> None:
    """psycopg raises an ``OperationalError`` for many SQLSTATEs the server answered (55,
    57000, 58, F0, HV ...): every one the table had no row for was told 503 "the
    database cannot be reached" with a retry, of a server that had answered, and of a
    disk's I/O error or corrupted data (class 58, XX) that no retry mends. Each is told
    by its SQLSTATE now: the server's failures 500 ``database_error`` saying an operator
    must read its log, a statement's own state 500 (or 409 for an object in use)."""
    exc = _server_error(pg.lookup(code), text, code, "any.c")
    assert exc.sqlstate == code
    got = translate(exc, "storing a.md")
    assert type(got) is expected, got
    said = str(got)
    assert said.startswith("storing a.md: ") and words in said, said
    assert text in said and "cannot be reached" not in said, said
    assert not isinstance(got, RetryLater) and not got.advice, said
    assert passing_cause(got) is None  # a background job is not run again for it
    body = problem_body(got, request_id="r", instance="/x")
    assert body["status"] == (409 if expected is ConflictError else 500), body
    if expected is DatabaseError:
        assert f"(SQLSTATE {code}: {text})" in said, said
        assert body["code"] == "database_error" and words in body["detail"], body


def test_a_statement_the_server_refused_for_its_state_is_its_own_failure(
    database_url: str,
) -> None:
    """``currval`` of a sequence before any ``nextval`` in the session: the server
    answers SQLSTATE 55000, which psycopg raises as an ``OperationalError``. It was told
    503 "the database cannot be reached" (the CLI, the log, an API caller told to retry);
    it is the statement's own 500 ``database_error`` now, in the server's words, and
    the pooled connection stays in use: no breaker, the next block served."""
    db = Database(database_url)
    try:
        with db.connection() as conn:
            conn.execute("CREATE SEQUENCE IF NOT EXISTS never_drawn")
        with (
            pytest.raises(DatabaseError) as err,
            db.connection() as conn,
            translated("reading the sequence"),
        ):
            conn.execute("SELECT currval('never_drawn')")
        assert isinstance(err.value.__cause__, pg.ObjectNotInPrerequisiteState)
        assert type(err.value) is DatabaseError, err.value
        said = str(err.value)
        assert said.startswith(
            "reading the sequence: the database refused the statement: something it uses "
            "is not in the state the statement needs (SQLSTATE 55000: "
        ), said
        assert "currval" in said and "cannot be reached" not in said, said
        # the same met by the pool's own block, no translated() of the caller's
        with pytest.raises(DatabaseError) as pooled, db.connection() as conn:
            conn.execute("SELECT currval('never_drawn')")
        assert type(pooled.value) is DatabaseError and "SQLSTATE 55000" in str(pooled.value)
        assert db.breaker.failures == 0
        with db.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        db.close()


def test_a_system_error_the_server_reports_is_not_told_as_unreachable(database_url: str) -> None:
    """A SQLSTATE of class 58 (an I/O error) or XX (corrupted data) as the server sends
    it: PostgreSQL raises them for a failing disk or a damaged page, which a test cannot
    make, so a function raises them here, down the same wire. 58030 was 503 "the
    database cannot be reached", to be retried; both are 500 ``database_error`` naming
    the SQLSTATE and the server's log, and the connection stays in use."""
    db = Database(database_url)
    try:
        for code, cls, words in (
            ("58030", pg.IoError, "system error"),
            ("XX001", pg.DataCorrupted, "corrupted data"),
        ):
            with (
                pytest.raises(DatabaseError) as err,
                db.connection() as conn,
                translated("reading a.md"),
            ):
                conn.execute(
                    "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '"
                    + code
                    + "', MESSAGE = 'could not read block 7'; END $$"
                )
            assert isinstance(err.value.__cause__, cls), err.value.__cause__
            said = str(err.value)
            assert type(err.value) is DatabaseError and words in said, said
            assert f"(SQLSTATE {code}: could not read block 7)" in said, said
            assert "database server's log" in said and "cannot be reached" not in said
        assert db.breaker.failures == 0
        with db.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        db.close()


def test_dropping_a_database_in_use_is_a_conflict(pg_admin_uri: str) -> None:
    """DROP DATABASE of a database another session is connected to: SQLSTATE 55006,
    which was told 503 "the database cannot be reached" by a server that had just
    answered. It is 409 ``conflict``: the database is in use."""
    url = create_database(pg_admin_uri, None)
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    try:
        with (
            psycopg.connect(url),  # the other session
            psycopg.connect(pg_admin_uri, autocommit=True) as admin,
            pytest.raises(ConflictError) as err,
            translated(f"dropping database {name}"),
        ):
            admin.execute(f'DROP DATABASE "{name}"')
        assert isinstance(err.value.__cause__, pg.ObjectInUse)
        said = str(err.value)
        assert said.startswith(f"dropping database {name}: it is in use"), said
        assert "being accessed by other users" in said and "cannot be reached" not in said
        assert err.value.http_status == 409
    finally:
        drop_database(pg_admin_uri, url)


# What a hot standby whose lc_messages is German sends for a read its replay cancelled:
# the message translated, the SQLSTATE and the source file ("F") as in every language
_GERMAN_CONFLICT = "FEHLER:  Abbruch der Anweisung wegen Konflikt mit der Wiederherstellung"


def _server_error(cls: type[psycopg.Error], text: str, code: str, source: str) -> psycopg.Error:
    """``cls`` as psycopg raises it for a server's ErrorResponse: its fields in ``diag``."""
    fields = {DiagnosticField.SQLSTATE: code, DiagnosticField.SOURCE_FILE: source}
    return cls(text, info={k: v.encode() for k, v in fields.items()})


@pytest.mark.parametrize(
    "exc, expected",
    [
        # a recovery conflict (ProcessRecoveryConflictInterrupt, CheckRecoveryConflictDeadlock)
        (_server_error(pg.SerializationFailure, _GERMAN_CONFLICT, "40001", "postgres.c"), True),
        (_server_error(pg.DeadlockDetected, _GERMAN_CONFLICT, "40P01", "standby.c"), True),
        # a serializable transaction's collision, a deadlock on the primary: the caller's
        (
            _server_error(
                pg.SerializationFailure, "could not serialize access", "40001", "predicate.c"
            ),
            False,
        ),
        (_server_error(pg.DeadlockDetected, "deadlock detected", "40P01", "deadlock.c"), False),
        # a function's RAISE of the same words is no replay's
        (
            _server_error(
                pg.SerializationFailure,
                "canceling statement due to conflict with recovery",
                "40001",
                "pl_exec.c",
            ),
            False,
        ),
    ],
)
def test_a_recovery_conflict_is_told_whatever_the_servers_language(
    exc: psycopg.Error, expected: bool
) -> None:
    """A hot standby's "canceling statement due to conflict with recovery" was told by its
    English text: a server with a translated ``lc_messages`` had its cancelled reads
    answered 409 ``conflict`` ("collided with a concurrent change") instead of 503
    ``statement_cancelled`` with Retry-After. The source file the server names tells it."""
    assert recovery_conflict(exc) is expected
    assert (classify(exc)[0] is StatementCancelledError) is expected


@pytest.mark.parametrize(
    "exc",
    [
        pg.DiskFull('could not extend file "base/1/2": No space left on device'),
        psycopg.OperationalError(
            'connection to server on socket "/d/pg/.s.PGSQL.5432" failed: FATAL:  could not '
            "write init file: No space left on device"
        ),
        # the same from a server whose lc_messages is German: no SQLSTATE to go by
        psycopg.OperationalError(
            'connection to server on socket "/d/pg/.s.PGSQL.5432" failed: FATAL:  konnte '
            "Init-Datei nicht schreiben: Auf dem Gerät ist kein Speicherplatz mehr verfügbar"
        ),
    ],
)
def test_a_full_disk_says_so_and_how_to_fix_it(exc: Exception) -> None:
    """Class 53's "out of resources (connections, memory or disk)" did not say which, nor
    that space must be freed (a retry alone fails again)."""
    assert classify(exc) == (DatabaseUnavailableError, DISK_FULL)
    got = translate(exc, "storing a.md")
    assert isinstance(got, DatabaseUnavailableError) and got.public == DISK_FULL
    assert str(got).startswith("storing a.md: the database's disk is full; free space")


def test_the_open_breaker_repeats_the_reason_it_opened_for() -> None:
    """Calls turned away by the breaker said only "the database is down", hiding a full
    disk (the server up and answering, its disk full) behind what reads like a crash."""
    breaker = Breaker()
    cause = translate(pg.DiskFull("No space left on device"), "storing a.md")
    assert isinstance(cause, DatabaseUnavailableError)
    breaker.trip(cause)
    with pytest.raises(DatabaseUnavailableError) as turned_away:
        breaker.check()
    assert DISK_FULL in turned_away.value.public
    assert "storing a.md" in str(turned_away.value)
    breaker.reset()
    breaker.trip()  # a failure with no reason known: the generic words
    with pytest.raises(DatabaseUnavailableError) as generic:
        breaker.check()
    assert generic.value.public == "the database is unavailable"


def test_database_error_is_500_and_unavailable_is_503() -> None:
    assert DatabaseError.http_status == 500
    assert DatabaseUnavailableError.http_status == 503
    assert ConflictError.http_status == 409


def test_real_failures_map_to_4xx(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        with pytest.raises(InputError, match="NUL"), translated("nul"):
            conn.execute("SELECT %s::text", ("a\x00b",))
        conn.rollback()
        with pytest.raises(InputError, match="out of range"), translated("range"):
            conn.execute("SELECT %s::integer", (10**30,))
        conn.rollback()
        with pytest.raises(InputError, match="klingon"), translated("ts"):
            conn.execute("SELECT to_tsvector(%s::regconfig, 'x')", ("klingon",))
        conn.rollback()
        conn.execute("CREATE TEMP TABLE u (x int PRIMARY KEY)")
        conn.execute("INSERT INTO u VALUES (1)")
        with pytest.raises(ConflictError, match="already exists"), translated("dup"):
            conn.execute("INSERT INTO u VALUES (1)")


def test_a_lock_timeout_fails_the_statement_not_the_database(database_url: str) -> None:
    """A statement that waited past ``lock_timeout`` used to read as a database that cannot
    be reached (503 ``database_unavailable``, counted by the breaker): it is a cancelled
    statement, this request's alone."""
    with psycopg.connect(database_url) as holder, psycopg.connect(database_url) as waiter:
        holder.execute("CREATE TABLE locked_here (x int)")
        holder.commit()
        holder.execute("LOCK TABLE locked_here IN ACCESS EXCLUSIVE MODE")
        waiter.execute("SET lock_timeout = '100ms'")
        with (
            pytest.raises(StatementCancelledError, match="waiting for a lock"),
            translated("reading"),
        ):
            waiter.execute("SELECT * FROM locked_here")


def test_a_read_only_transaction_fails_its_write_not_the_database(database_url: str) -> None:
    """A write a read-only database refuses (SQLSTATE 25006) is 503 database_unavailable,
    saying what to do (it was a 500 database_error), and opens no breaker: reads go on."""
    db = Database(database_url)
    try:
        with (
            pytest.raises(DatabaseUnavailableError) as err,
            db.connection() as conn,
            translated("storing x"),
        ):
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute("CREATE TEMP TABLE refused (x int)")
        assert "read-only" in err.value.public and "RAGSTORE_DATABASE_URL" in err.value.public
        assert db.breaker.failures == 0
        with db.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        db.close()


def test_a_session_an_administrator_ends_is_not_told_as_a_server_shutting_down(
    database_url: str,
) -> None:
    """``pg_terminate_backend`` of a ragstore session in the middle of its work: PostgreSQL
    sends the 57P01 of a fast shutdown (same words, same source), which was told "the
    database server is shutting down" (the CLI's message, the log's) while the server ran
    on. It now says the session was ended; the API's reason, told by a probe that the
    server still takes connections, says only this connection closed. The next block is
    served: no breaker opened."""
    db = Database(database_url)
    try:
        with (
            psycopg.connect(database_url, autocommit=True) as admin,
            pytest.raises(DatabaseUnavailableError) as err,
            db.connection() as conn,
            translated("searching collection x"),
        ):
            conn.execute("SELECT 1")
            admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
            conn.execute("SELECT 1")
        assert isinstance(err.value.__cause__, pg.AdminShutdown)  # what the server sent
        said = str(err.value)
        assert said.startswith("searching collection x: the database ended this session"), said
        assert "pg_terminate_backend" in said and "shutting down)" in said
        assert "server is shutting down" not in said + public_detail(err.value)
        told = public_detail(err.value)  # the API's
        assert told.startswith("the database closed the connection in use"), told
        assert told.count("retry") == 1 and told.endswith(
            "; retry in 1s (the server log has the details)"
        )
        assert db.breaker.failures == 0
        with db.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        db.close()


def test_a_session_its_idle_session_timeout_ended_names_the_setting(database_url: str) -> None:
    """A session left idle past the server's ``idle_session_timeout`` is ended by the
    server (SQLSTATE 57P05), which the next statement on it finds: it was told "the
    database cannot be reached", sending the reader after a server that was up all along,
    and the API's reason said only that a connection closed. Both name the setting now;
    the server answers, so no breaker opens and the next block is served."""
    db = Database(database_url)
    try:
        with (
            pytest.raises(DatabaseUnavailableError) as err,
            db.connection() as conn,
            translated("listing collections"),
        ):
            conn.execute("SET idle_session_timeout = '50ms'")
            conn.commit()  # idle outside a transaction: the timeout runs
            # the server's FATAL and the socket's close make it readable: the session ended
            readable, _, _ = select.select([conn.fileno()], [], [], 60)
            assert readable, "the session did not time out"
            conn.execute("SELECT 1")
        assert isinstance(err.value.__cause__, pg.IdleSessionTimeout)  # what the server sent
        said, told = str(err.value), public_detail(err.value)
        assert said.startswith(
            "listing collections: the database ended this session: it sat "
            "idle longer than the server's idle_session_timeout"
        ), said
        assert told.startswith(
            "the database ended this session: it sat idle longer than the "
            "server's idle_session_timeout"
        ), told
        assert told.endswith("; retry in 1s (the server log has the details)"), told
        assert "cannot be reached" not in said + told
        assert db.breaker.failures == 0
        with db.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        db.close()


def test_a_session_its_idle_in_transaction_timeout_ended_names_the_setting(
    database_url: str,
) -> None:
    """A session left idle inside a transaction past the server's
    ``idle_in_transaction_session_timeout`` is ended by the server (SQLSTATE 25P03, which
    psycopg raises as an ``InternalError``): it was told 500 ``database_error`` "the
    database failed", and passed out of a block that did not translate it as psycopg's
    own error. It is told as 57P05 is now: the setting named, 503 with ``Retry-After: 1``,
    no breaker opened (the server answers), the next block served."""
    db = Database(database_url)
    try:
        for translating in (True, False):
            with (
                pytest.raises(DatabaseUnavailableError) as err,
                db.connection() as conn,
                translated("listing collections") if translating else nullcontext(),
            ):
                # SET opens the transaction (not autocommit) left idle: the timeout runs
                conn.execute("SET idle_in_transaction_session_timeout = '50ms'")
                # the server's FATAL and the socket's close make it readable
                readable, _, _ = select.select([conn.fileno()], [], [], 60)
                assert readable, "the session did not time out"
                conn.execute("SELECT 1")
            assert isinstance(err.value.__cause__, pg.IdleInTransactionSessionTimeout)
            said, told = str(err.value), public_detail(err.value)
            ended = (
                "the database ended this session: it sat idle inside a transaction longer "
                "than the server's idle_in_transaction_session_timeout"
            )
            # (untranslated by the block, it is told where the pool's connection led)
            where = "listing collections: " if translating else "using postgresql://"
            assert said.startswith(where) and ended in said, said
            assert told.startswith(ended), told
            assert told.endswith("; retry in 1s (the server log has the details)"), told
            assert err.value.http_status == 503 and err.value.retry_after == 1.0
            assert db.breaker.failures == 0
            with db.connection() as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        db.close()


def test_a_statement_refused_on_a_session_kept_is_not_told_as_a_closed_connection(
    database_url: str,
) -> None:
    """A sort past the session's ``temp_file_limit`` is refused with SQLSTATE 53400 (an
    ``OperationalError``, as a connection lost is), the session kept: whenever the server
    answered it was told "the database closed the connection in use" (the API's reason, a
    job's record), which it had not. It keeps its own words, which name the limit; the
    same connection goes on serving, and no breaker opened."""
    db = Database(database_url)
    try:
        with (
            pytest.raises(DatabaseUnavailableError) as err,
            db.connection() as conn,
            translated("sorting"),
        ):
            conn.execute("SET temp_file_limit = '64kB'")
            conn.execute("SET work_mem = '64kB'")  # the sort spills to a temporary file
            conn.execute("SELECT g FROM generate_series(1, 200000) g ORDER BY g DESC")
        assert isinstance(err.value.__cause__, pg.ConfigurationLimitExceeded)
        told = public_detail(err.value)
        assert "closed the connection" not in told + str(err.value), told
        assert told.startswith(
            "the statement went over a limit set in the database's configuration"
        ), told
        assert "temp_file_limit" in str(err.value)
        assert not conn.closed  # the pool took it back to lend again: the session kept
        assert db.breaker.failures == 0
        with db.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        db.close()


@pytest.mark.parametrize(
    "exc",
    [
        pg.IdleSessionTimeout("terminating connection due to idle-session timeout"),
        pg.IdleInTransactionSessionTimeout("terminating connection due to ..."),
    ],
)
def test_a_session_ended_for_a_timeout_is_a_background_job_s_passing_cause(
    exc: Exception,
) -> None:
    """A job's document not stored because the server ended its session for idling (57P05,
    25P03) is a passing cause: the job runs again and stores it. 25P03 was a 500
    ``database_error``, taken for the document's own failure and the job recorded
    ``succeeded`` with the document never stored."""
    err = translate(exc, "storing document x.md")
    err.__cause__ = exc
    assert passing_cause(err) == "unavailable"


@pytest.mark.parametrize(
    ("exc", "ended"),
    [
        (pg.AdminShutdown("terminating connection due to administrator command"), True),
        (pg.IdleSessionTimeout("terminating connection due to idle-session timeout"), True),
        (pg.IdleInTransactionSessionTimeout("terminating connection due to ..."), True),
        (pg.ConnectionFailure("connection failure"), True),  # class 08
        (pg.OutOfMemory("out of memory"), False),  # 53200: the statement's, session kept
        (pg.ConfigurationLimitExceeded("temporary file size exceeds"), False),  # 53400
        (pg.QueryCanceled("canceling statement due to statement timeout"), False),  # 57014
        (psycopg.OperationalError("server closed the connection unexpectedly"), False),
    ],
)
def test_only_a_session_ending_sqlstate_says_the_session_ended(exc: Exception, ended: bool) -> None:
    """``Database._lost`` asks :func:`ends_session` (and the connection's own state, and
    a psycopg error without a SQLSTATE where that state is not known) whether the
    connection is gone: an ``OperationalError`` alone is no sign of it."""
    assert ends_session(exc) is ended


def test_a_dropped_database_is_told_as_dropped() -> None:
    """SQLSTATE 57P04 (the session's database dropped) was told "the database cannot be
    reached", as a server down is."""
    got = translate(pg.DatabaseDropped("terminating connection: database dropped"), "storing x")
    assert isinstance(got, DatabaseUnavailableError)
    assert got.public.startswith("the database was dropped"), got.public
    assert "RAGSTORE_DATABASE_URL" in got.public and "cannot be reached" not in str(got)


@pytest.mark.parametrize(
    ("exc", "advice"),
    [
        (pg.QueryCanceled("canceling statement due to statement timeout"), "retry it"),
        (pg.LockNotAvailable("canceling statement due to lock timeout"), "retry it"),
        (pg.SerializationFailure("could not serialize access"), "retry the request"),
        (pg.DeadlockDetected("deadlock detected"), "retry the request"),
        (pg.UndefinedTable('relation "emb_12" does not exist'), "retry the request"),
    ],
)
def test_a_passing_failure_s_advice_is_the_request_s_alone(exc: Exception, advice: str) -> None:
    """A cancelled statement's "only this request failed, retry it" and a collision's
    "retry the request" end the message and the API's detail, as before, and are not part
    of its reason (``public_reason``), which a background job's record tells with its own
    "send it again": it told the reader of a job to retry a request nobody had made."""
    got = translate(exc, "storing document x.md")
    assert got.advice.endswith(advice)
    assert str(got).endswith(f"; {got.advice}") and public_detail(got) == str(got)
    reason = public_reason(got)
    assert reason.startswith("storing document x.md: ") and "retry" not in reason, reason


def test_a_server_that_takes_no_connections_is_not_told_as_starting_up() -> None:
    """57P03 is PostgreSQL's refusal of a connection while it starts up, recovers or shuts
    down (its words say which, in the server's language): it was told "the database server
    is starting up" for a server shutting down."""
    got = translate(pg.CannotConnectNow("the database system is shutting down"), "connecting")
    assert isinstance(got, DatabaseUnavailableError)
    assert "shutting down" in got.public and "starting up" in got.public


def test_unreachable_database_fails_fast_without_its_address() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = Database(f"postgresql://nobody@127.0.0.1:{port}/secretdb", connect_timeout_s=1)
    with pytest.raises(DatabaseUnavailableError) as first, db.connection():
        pass
    body = problem_body(first.value, request_id="r", instance="/x")
    assert body["status"] == 503
    assert "127.0.0.1" not in body["detail"] and "secretdb" not in body["detail"]
    assert "POOL_MAX_SIZE" not in str(first.value)

    t0 = time.monotonic()
    for _ in range(20):  # the breaker is open: no connect timeout per call
        with pytest.raises(DatabaseUnavailableError) as again, db.connection():
            pass
        assert again.value.retry_after > 0
    # a connect timeout each would be 20 s; the margin is for a loaded CI machine
    assert time.monotonic() - t0 < 5.0
    db.close()


def test_an_embedded_server_that_will_not_start_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reason is in the server's log (a full disk: "could not write lock file ...: No
    space left on device"); the error quoted pg_ctl's command line and its exit status."""
    pg_dir = tmp_path / "pg"
    pg_dir.mkdir()
    (pg_dir / "PG_VERSION").write_text("18\n")  # a data directory with its files gone
    for path in (tmp_path, pg_dir):
        path.chmod(0o777)  # the server's own user (under root) writes its log here
    monkeypatch.delenv("RAGSTORE_DATABASE_URL", raising=False)
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(tmp_path))
    capsys.readouterr()
    assert run_cli("collections", "list") == 69
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith(
        f"error[database_unavailable]: could not start the embedded PostgreSQL under {pg_dir}: "
    ), err
    assert "could not access the server configuration file" in err, err
    assert "Command '[" not in err and f"(its log: {pg_dir / 'log'})" in err, err


def test_a_full_pool_at_the_servers_connection_limit_is_busy_not_down(database_url: str) -> None:
    """A pool timeout is told apart by a fresh connection: one that the server refuses for
    its connection limit (SQLSTATE 53300, ``too many clients``) was taken for a server that
    does not answer: the breaker opened and every request for 1-5 s was answered "the
    database is unavailable". The server answers: the pool is busy, the breaker stays shut."""
    role = "limited_pool_user"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
    try:
        url = psycopg.conninfo.make_conninfo(database_url, user=role)
        db = Database(url, min_size=1, max_size=1, connect_timeout_s=1)
        try:
            with db.connection() as held:  # the pool's one connection: the role's limit
                held.execute("SELECT 1")
                with pytest.raises(DatabaseUnavailableError) as busy, db.connection():
                    pass
            assert busy.value.busy, busy.value
            assert "overloaded" in busy.value.public, busy.value.public
            assert db.breaker.failures == 0
            with db.connection() as conn:  # the held one came back: still served
                assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            db.close()
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [role]
            )
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_a_check_at_the_connection_limit_reads_on_a_pooled_connection(database_url: str) -> None:
    """``Database.checking`` (what /readyz and the scrape read on) took the server's refusal
    of a fresh connection for its connection limit for a server down. It lends a pooled
    connection instead (``full``); without a pool it raises, told full (not down) by
    ``is_full``; with every pooled connection held, busy as well."""
    role = "limited_check_user"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
    url = psycopg.conninfo.make_conninfo(database_url, user=role)
    db = Database(url, min_size=1, max_size=1, connect_timeout_s=1)

    def settled(sessions: int) -> None:
        """Wait for a closed connection's backend to exit: the role's count holds it
        until then, and the next connection would be refused."""
        deadline = time.monotonic() + 10
        with psycopg.connect(database_url, autocommit=True) as admin:
            while True:
                row = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", [role]
                ).fetchone()
                if row is not None and row[0] == sessions:
                    return
                assert time.monotonic() < deadline, f"{row} sessions of {role}"
                time.sleep(0.05)

    try:
        with db.checking() as got:
            assert not got.full and got.conn.execute("SELECT 1").fetchone() == (1,)
        settled(0)
        with db.connection() as conn:  # the pool opens: its one connection is the limit
            conn.execute("SELECT 1")
        with db.checking() as got:
            assert got.full and got.conn.execute("SELECT 1").fetchone() == (1,)
        pool = db.opened_pool
        assert pool is not None
        errors = pool.get_stats().get("requests_errors", 0)
        with db.connection(), pytest.raises(DatabaseUnavailableError) as busy, db.checking():
            pass
        assert busy.value.busy and is_full(busy.value), busy.value
        # told from the pool's figures: no request timed out, which would count in
        # ragstore_db_pool_timeouts_total and page (a check runs every second)
        assert pool.get_stats().get("requests_errors", 0) == errors
        db.close()
        settled(0)
        # the limit taken by another client, and no pool here
        with psycopg.connect(url), pytest.raises(DatabaseUnavailableError) as none, db.checking():
            pass
        assert is_full(none.value) and not none.value.busy, none.value
        assert "connection limit" in none.value.public
        assert db.breaker.failures == 0
    finally:
        db.close()
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [role]
            )
            admin.execute(f"DROP ROLE IF EXISTS {role}")


def test_a_busy_pool_met_inside_a_held_connection_leaves_the_breaker_shut(
    database_url: str,
) -> None:
    """A block holding one pooled connection asked for a second (a bulk load's staging
    connection) while a thread held the pool's other: the busy error, passing out through
    the first block, opened the database-down breaker, and the next request, which the
    connection just returned would serve, failed fast with "the database is down"."""
    db = Database(database_url, min_size=1, max_size=2, connect_timeout_s=1)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.connection() as conn:
            conn.execute("SELECT 1")
            holding.set()
            release.wait(20)

    holder = threading.Thread(target=hold)
    try:
        holder.start()
        assert holding.wait(20)
        with pytest.raises(DatabaseUnavailableError) as busy, db.connection() as outer:
            outer.execute("SELECT 1")
            with db.connection():
                pass
        assert busy.value.busy, busy.value
        assert "all 2 are busy" in str(busy.value) and "RAGSTORE_POOL_MAX_SIZE" in str(busy.value)
        assert busy.value.retry_after == 1.0
        assert db.breaker.failures == 0
        with db.connection() as conn:  # the outer block's connection, returned: served
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        release.set()
        holder.join(20)
        db.close()


# What a server whose lc_messages is German says for a statement its statement_timeout
# ended (SQLSTATE 57014, as for an administrator's cancel)
_GERMAN_TIMEOUT = "FEHLER:  storniere Anfrage wegen Zeitüberschreitung der Anfrage"


def test_a_search_timeout_is_told_by_the_clock_whatever_the_servers_language() -> None:
    """A search's timeout and an administrator's cancel are both 57014; they were told
    apart by the English "statement timeout" in the message, so under a German
    ``lc_messages`` every search timeout became 503 ``statement_cancelled`` ("retry it")
    instead of 504 ``search_timeout`` saying to narrow the search."""
    with (
        pytest.raises(SearchTimeoutError, match=r"RAGSTORE_SEARCH_TIMEOUT_S=0\.05"),
        _search_deadline("notes", 0.05),
    ):
        time.sleep(0.06)  # the limit has passed: only the timeout ends it now
        raise pg.QueryCanceled(_GERMAN_TIMEOUT)
    # a cancel before the limit is somebody else's, whatever it says
    with pytest.raises(pg.QueryCanceled), _search_deadline("notes", 30.0):
        raise pg.QueryCanceled("canceling statement due to statement timeout")
    with pytest.raises(pg.QueryCanceled), _search_deadline("notes", 0.0):  # no timeout set
        time.sleep(0.01)
        raise pg.QueryCanceled(_GERMAN_TIMEOUT)


def test_an_administrators_cancel_of_a_search_is_not_its_timeout(
    rt: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pg_cancel_backend`` of a running search (on the real server) fails that request
    only, 503 ``statement_cancelled``; its search timeout, far off, is not blamed."""
    monkeypatch.setattr(rt, "settings", settings.model_copy(update={"search_timeout_s": 60.0}))
    coll = make_collection(rt, "cancelled_by_admin")
    write_docs(rt, coll, [Doc("a.txt", ["pgvector keeps the embeddings"])])
    search(rt, "embeddings", collection=coll.name, k=1, mode="fulltext")  # cached
    url = settings.database_url
    assert url is not None
    with psycopg.connect(url.get_secret_value()) as holder:
        holder.execute("LOCK TABLE chunks IN ACCESS EXCLUSIVE MODE")  # the search waits
        failed: list[BaseException] = []

        def run() -> None:
            try:
                search(rt, "embeddings", collection=coll.name, k=1, mode="fulltext")
            except BaseException as exc:
                failed.append(exc)

        started = time.monotonic()
        thread = threading.Thread(target=run)
        thread.start()
        with psycopg.connect(url.get_secret_value(), autocommit=True) as admin:
            cancelled = False
            while not cancelled and time.monotonic() - started < 30:
                row = admin.execute(
                    "SELECT bool_or(pg_cancel_backend(pid)) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                ).fetchone()
                cancelled = bool(row and row[0])
                time.sleep(0.05)
        thread.join(30)
        holder.rollback()
    assert cancelled
    assert len(failed) == 1 and type(failed[0]) is StatementCancelledError, failed
    assert "cancelled the statement" in str(failed[0])
    assert time.monotonic() - started < 30


def test_a_restores_lock_timeout_is_told_by_its_sqlstate(database_url: str, tmp_path: Path) -> None:
    """A restore tries again while another session holds its tables: its psql's lock
    timeout was told by the English "canceling statement due to lock timeout", so under a
    German ``lc_messages`` the restore failed at its first try. psql prints the SQLSTATE
    (55P03) now, and only that is read; the server's source position it prints too is no
    part of a failure's message."""
    conninfo, env = backup._client_args(Database(database_url))

    def fails(text: str) -> BackupError:
        script = tmp_path / "script.sql"
        script.write_text(text)
        with pytest.raises(BackupError) as failed:
            backup._run(backup._psql(conninfo, [script]), env, "restoring x")
        return failed.value

    german = fails(
        "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '55P03', MESSAGE = 'storniere Anfrage "
        "wegen Zeitüberschreitung einer Sperre'; END $$;\n"
    )
    assert backup.waited_out_lock(german), german
    with psycopg.connect(database_url) as holder:
        holder.execute("CREATE TABLE IF NOT EXISTS held_by_another (x int)")
        holder.commit()
        holder.execute("LOCK TABLE held_by_another IN ACCESS EXCLUSIVE MODE")
        real = fails("SET lock_timeout = '100ms';\nDROP TABLE held_by_another;\n")
        holder.rollback()
    assert backup.waited_out_lock(real), real
    # the words alone, under another SQLSTATE, are not a lock timeout
    other = fails(
        "DO $$ BEGIN RAISE EXCEPTION 'canceling statement due to lock timeout'; END $$;\n"
        "SELECT 1;\n"
    )
    assert not backup.waited_out_lock(other), other
    missing = fails("SELECT * FROM no_such_table_here;\n")
    assert not backup.waited_out_lock(missing)
    assert "no_such_table_here" in str(missing) and ".c:" not in str(missing), missing


# What a German server says for a parallel index build's shared memory segment it cannot
# grow (dsm_impl.c), and for a table file it cannot extend on a full disk (md.c)
_GERMAN_DSM = (
    "FEHLER:  konnte Größe des Shared-Memory-Segments »/PostgreSQL.1« nicht auf 268435456 "
    "Bytes ändern: Auf dem Gerät ist kein Speicherplatz mehr verfügbar"
)
_GERMAN_FULL = (
    "FEHLER:  konnte Datei »base/5/16384« nicht erweitern: Auf dem Gerät ist kein Speicher"
)


@pytest.mark.parametrize(
    "exc, expected",
    [
        (_server_error(pg.DiskFull, _GERMAN_DSM, "53100", "dsm_impl.c"), True),
        # EFBIG or ENOMEM growing the segment, or no segment left: out of memory
        (_server_error(pg.OutOfMemory, "Segmente", "53200", "dsm_impl.c"), True),
        (_server_error(pg.OutOfMemory, "zu viele dynamische Segmente", "53200", "dsm.c"), True),
        # a full disk, a backend out of memory: a build in one process fails as well
        (_server_error(pg.DiskFull, _GERMAN_FULL, "53100", "md.c"), False),
        (_server_error(pg.OutOfMemory, "out of shared memory", "53200", "mcxt.c"), False),
        # without the source file (a proxy that drops it): PostgreSQL's English words
        (pg.DiskFull("could not resize shared memory segment: No space left"), True),
        (pg.DiskFull("could not extend file: No space left on device"), False),
    ],
)
def test_a_parallel_builds_shared_memory_is_told_whatever_the_servers_language(
    exc: psycopg.Error, expected: bool
) -> None:
    """A parallel HNSW build that cannot map its graph under /dev/shm (a container's 64 MB)
    is built again in one process; it was told from a full disk by the English "shared
    memory", so under a German ``lc_messages`` the build failed outright. The server's
    source file tells it (and a segment refused as out of memory, 53200, is one too)."""
    assert spaces._shared_memory_short(exc) is expected


def test_a_connection_refused_for_a_limit_is_told_whatever_the_servers_language(
    database_url: str,
) -> None:
    """A connection the server refuses for its connection limit carries no SQLSTATE (libpq
    keeps it), only the server's words: in English they said "the server is up, and
    full", in German ("zu viele Verbindungen von Rolle »r«") they read as a server that
    does not answer, and a full pool opened the breaker. Every language PostgreSQL
    speaks is read now; on the real server a role's limit is still told."""
    role = "no_connections_allowed"
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0")
    try:
        url = psycopg.conninfo.make_conninfo(database_url, user=role)
        with pytest.raises(psycopg.OperationalError) as real:
            psycopg.connect(url)
        assert real.value.sqlstate is None  # what psycopg gives: the words alone
        assert refused_for_limit(real.value)
        db = Database(url, connect_timeout_s=1)
        try:
            assert db.answers()  # up, and full for this role
        finally:
            db.close()
        elsewhere = psycopg.conninfo.make_conninfo(database_url, dbname="no_such_db_here")
        with pytest.raises(psycopg.OperationalError) as missing:
            psycopg.connect(elsewhere)
        assert not refused_for_limit(missing.value)
    finally:
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {role}")
    for words in (
        "FATAL:  zu viele Verbindungen von Rolle »ragstore«",
        "FATAL:  tut mir leid, schon zu viele Verbindungen",
        "FATAL:  trop de connexions pour la base de données « ragstore »",
        "FATAL:  die verbleibenden Verbindungen sind für Rollen mit dem Attribut SUPERUSER "
        "reserviert",
    ):
        refused = psycopg.OperationalError(
            f'connection to server on socket "/d/.s.PGSQL.5432" failed: {words}'
        )
        assert refused_for_limit(refused), words


@pytest.mark.parametrize("close_outlasts_the_wait", [False, True])
def test_a_wait_for_a_connection_the_pool_closed_under_is_told_closed(
    database_url: str, close_outlasts_the_wait: bool
) -> None:
    """A Store closed by a signal handler that interrupted its own thread's wait for a
    connection: the pool's close fails the waiter (PoolClosed), or, when the close took
    longer than the wait had left (a loaded machine; a CI run), the wait reads as run out.
    The first was told "cannot be reached", the second "all 10 are busy" (or "does not
    answer"): both the closed pool's, said so, and no breaker (a Store says RuntimeError,
    as for any use after close(): tests/test_store_processes.py)."""
    db = Database(database_url, max_size=1, connect_timeout_s=1.0)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.connection():
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(30)

    def close_in_handler(_signum: int, _frame: object) -> None:
        db.close()
        if close_outlasts_the_wait:
            time.sleep(1.5)  # a close slower than the 1 s the wait had: it reads as run out

    previous = signal.signal(signal.SIGALRM, close_in_handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)  # inside the wait: its one connection held
        with (
            pytest.raises(DatabaseUnavailableError, match="pool was closed while this call waited"),
            db.connection(),
        ):
            pass
        assert not db.breaker.failures
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        release.set()
        holder.join(30)
        db.close()
