"""psycopg's errors become ours here, and only here.

:data:`SQLSTATE_MAP` is the one table that says which of our errors a PostgreSQL failure
is, by SQLSTATE (a full five-character code wins over its two-character class). The rule
behind it: bad *input* (a NUL byte, a number out of range, a duplicate name, an unknown
text search configuration) is the caller's to fix and answers 4xx; only a database that
cannot be reached, or refuses every write (its disk full, a read-only database),
answers 503 ``database_unavailable``; a statement PostgreSQL cancelled
(an administrator's ``pg_cancel_backend``, a role's ``statement_timeout`` or
``lock_timeout``, a hot standby's replay in a conflict with recovery) fails its own
request only, 503 ``statement_cancelled`` (not a
database that is down: the breaker of ``db/database.py`` stays closed); anything else is
our bug and answers 500 ``database_error``. So does a failure the server reported of
itself (class 58, a system error such as an I/O error; class XX, an internal error or
corrupted data), which an operator must look into and a retry does not mend: its message
gives the SQLSTATE and sends the reader to the server's log. Only an error with no SQLSTATE
at all (no word from the server) is "the database cannot be reached": psycopg raises an
``OperationalError`` for many a statement the server answered (classes 55, 57, 58, F0,
HV ...), and each was told so. ``tests/test_db_errors.py`` enumerates the table.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg_pool import PoolTimeout

from ragstore.db import server_words
from ragstore.errors import (
    ConflictError,
    DatabaseError,
    DatabaseUnavailableError,
    InputError,
    RagstoreError,
    StatementCancelledError,
)

# SQLSTATE (class or full code) -> (our error class, what to tell the caller)
SQLSTATE_MAP: dict[str, tuple[type[RagstoreError], str]] = {
    "08": (DatabaseUnavailableError, "the database connection failed"),
    "53": (
        DatabaseUnavailableError,
        "the database is out of resources (connections, memory or disk)",
    ),
    # a statement refused for a limit the server's settings set (temp_file_limit, the temp
    # files a session may write): no resource ran out, and more disk would not help
    "53400": (
        DatabaseUnavailableError,
        "the statement went over a limit set in the database's configuration (such as "
        "temp_file_limit)",
    ),
    "57014": (
        StatementCancelledError,
        "the database cancelled the statement (an administrator's cancel or a statement "
        "timeout set in the database)",
    ),
    "55P03": (
        StatementCancelledError,
        "the database gave up waiting for a lock (a lock timeout set in the database)",
    ),
    # PostgreSQL ends a session with the same 57P01, words and source (postgres.c's
    # ProcessInterrupts) for an administrator's pg_terminate_backend and for a fast
    # shutdown: "the database server is shutting down" was told of one session ended while
    # the server ran on. Whether the server still takes connections is ``Database._lost``'s
    # probe, which words an API caller's reason by it
    "57P01": (
        DatabaseUnavailableError,
        "the database ended this session (an administrator's pg_terminate_backend, or the "
        "server shutting down)",
    ),
    "57P02": (DatabaseUnavailableError, "the database server crashed"),
    # both end one session while the server runs on: "the database cannot be reached"
    # (psycopg's OperationalError) was told of each, and sent the reader to look for a
    # server that was up all along
    "57P04": (
        DatabaseUnavailableError,
        "the database was dropped (DROP DATABASE) while this session used it; point "
        "RAGSTORE_DATABASE_URL at a database that exists",
    ),
    "57P05": (
        DatabaseUnavailableError,
        "the database ended this session: it sat idle longer than the server's "
        "idle_session_timeout (a setting of the server, the database or the role)",
    ),
    # a psycopg InternalError (class 25), told "the database failed" (500) of a session the
    # server ended on purpose while it ran on, as 57P05's
    "25P03": (
        DatabaseUnavailableError,
        "the database ended this session: it sat idle inside a transaction longer than the "
        "server's idle_in_transaction_session_timeout (a setting of the server, the database "
        "or the role)",
    ),
    # one SQLSTATE for a server starting up, recovering, or shutting down ("the database
    # system is shutting down"), which was told as starting up
    "57P03": (
        DatabaseUnavailableError,
        "the database server takes no connections now (it is starting up, recovering or "
        "shutting down)",
    ),
    "25006": (
        DatabaseUnavailableError,
        "the database refuses writes: it is read-only (a hot standby, or "
        "default_transaction_read_only is on, as some hosted databases set when their disk "
        "is nearly full); point RAGSTORE_DATABASE_URL at the primary or make the database "
        "writable, then retry: nothing of the failed write was stored",
    ),
    "22": (InputError, "a value is invalid for the database"),
    "23": (InputError, "a value breaks a rule of the stored data"),
    "23505": (ConflictError, "it already exists"),
    "23503": (ConflictError, "it refers to something that was removed meanwhile"),
    "40": (ConflictError, "it collided with a concurrent change"),
    "42704": (InputError, "it names something the database does not know"),
    "54": (InputError, "a value is over a database limit"),
    # class 55, object not in prerequisite state (currval before nextval, a WAL function
    # on a standby, a setting that cannot change now): the statement's own, and ours to
    # fix; an object in use (DROP DATABASE of one another session is connected to) is
    # the present state of the thing the caller acts on, 409. Both were "the database
    # cannot be reached" (503, retry), as psycopg raises an OperationalError for them
    "55": (
        DatabaseError,
        "the database refused the statement: something it uses is not in the state the "
        "statement needs",
    ),
    "55006": (ConflictError, "it is in use (by another session, or by this one's open query)"),
    # the server's own failures: nothing the caller sent, nothing a retry mends (a disk's
    # I/O error, corrupted data): an operator reads the server's log and acts
    "58": (
        DatabaseError,
        "the database reported a system error (such as an I/O error): an operator must "
        "look into the database server's log",
    ),
    "XX": (
        DatabaseError,
        "the database reported an internal error: an operator must look into the database "
        "server's log",
    ),
    "XX001": (
        DatabaseError,
        "the database found corrupted data: an operator must look into the database "
        "server's log and repair or restore the table it names",
    ),
    "XX002": (
        DatabaseError,
        "the database found a corrupted index: an operator must look into the database "
        "server's log and REINDEX the index it names",
    ),
}

# what an error the table has no row for is told: the server's own words follow
DATABASE_FAILED = "the database failed"
# ... and one psycopg raised as an ``OperationalError`` that carries a SQLSTATE: the
# server answered, so "cannot be reached" would be untrue
REFUSED = "the database refused the statement"

DISK_FULL = (
    "the database's disk is full; free space on the disk that holds its data directory (or "
    "give it a bigger one), then retry: nothing of the failed write was stored"
)


def disk_full(exc: BaseException) -> bool:
    """Whether PostgreSQL failed for want of room on its disk: SQLSTATE 53100 for a
    statement, or the server's "No space left on device" (in the server's language:
    ``server_words``) for a connection it could not start (a backend that cannot write
    its init file ends with a FATAL the client sees without a SQLSTATE). Class 53 alone
    also covers memory and connections, whose fix differs, and a full disk stays full
    until someone frees it."""
    if getattr(exc, "sqlstate", None) == "53100":
        return True
    return server_words.says(str(exc), server_words.NO_SPACE_LEFT)


# SQLSTATEs of a statement the server answered and refused, its session left as it was:
# the server is up and reads still work, so they must not open the connection breaker
# (``Database._lost``); a full disk's "53100" is one, a read-only database's "25006" another
REFUSED_WRITE = frozenset({"53100", "25006"})


def refused_write(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a write the server refused while it still answers (its disk full,
    a read-only database): every later write fails too, but no connection was lost."""
    return getattr(exc, "sqlstate", None) in REFUSED_WRITE


# SQLSTATEs that end the session they are sent on (the server's FATAL, or a connection
# that failed): class 08, 57P01-57P05 (an administrator, a crash, a dropped database, a
# timeout), 25P03 (idle_in_transaction_session_timeout)
_SESSION_ENDING = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05", "25P03"})


def ends_session(exc: BaseException | None) -> bool:
    """Whether ``exc``'s SQLSTATE says its session is gone. A statement the server
    refused on a session it kept (out of memory, 53200; a configuration limit, 53400) is
    no such error, though psycopg raises an ``OperationalError`` for it as for a
    connection lost: it was told "the database closed the connection in use"."""
    state = getattr(exc, "sqlstate", None)
    return isinstance(state, str) and (state[:2] == "08" or state in _SESSION_ENDING)


# The server source files that raise a hot standby's "canceling statement due to conflict
# with recovery" (SQLSTATE 40001, or 40P01 for a deadlock with the startup process):
# postgres.c's interrupt handling for every reason, standby.c for a buffer pin's deadlock
_RECOVERY_CONFLICT_SOURCES = frozenset({"postgres.c", "standby.c"})


def recovery_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is a statement a hot standby cancelled to replay the primary's WAL.

    Its SQLSTATE is a serialization failure's or a deadlock's, which on a primary is a
    collision the caller raced (409), so the server source file it was raised in (the
    diagnostic field ``F``, sent untranslated) tells them apart: the message text is in
    the server's ``lc_messages``, and a German server's "Abbruch der Anweisung wegen
    Konflikt mit der Wiederherstellung" was taken for a collision. Only an error without
    that field (a proxy that drops it) is told by PostgreSQL's English text."""
    if getattr(exc, "sqlstate", None) not in ("40001", "40P01"):
        return False
    diag = getattr(exc, "diag", None)
    source = diag.source_file if isinstance(diag, psycopg.errors.Diagnostic) else None
    if source:
        return source.rsplit("/", 1)[-1] in _RECOVERY_CONFLICT_SOURCES
    return "conflict with recovery" in str(exc)


def lock_wait_gave_up(exc: BaseException) -> bool:
    """Whether ``exc`` is our :class:`StatementCancelledError` for a lock waited for past a
    ``lock_timeout`` (SQLSTATE 55P03): another write held it, and made again the write
    stores. A statement cancelled by a ``statement_timeout`` (57014) is not one: a write
    that takes too long takes too long again."""
    state = getattr(exc.__cause__, "sqlstate", None)
    return isinstance(exc, StatementCancelledError) and state == "55P03"


def collided(exc: BaseException) -> bool:
    """Whether ``exc`` is our :class:`ConflictError` for a write that collided with a
    concurrent one (SQLSTATE class 40: a deadlock, a serialization failure): the write
    itself was fine, and made again it stores, unlike class 23's "it already exists".
    Told by the PostgreSQL error it was translated from (its ``__cause__``)."""
    state = getattr(exc.__cause__, "sqlstate", None)
    return isinstance(exc, ConflictError) and isinstance(state, str) and state[:2] == "40"


# A collection's vector table (``spaces.py``: emb_<space id>) as a missing relation's
# message names it: the name is never translated, the quotes around it are (a German
# server's "Relation »emb_12« existiert nicht")
_VECTOR_TABLE = re.compile(r"\bemb_\d+\b")


def vector_table_gone(exc: BaseException) -> bool:
    """Whether ``exc`` is our :class:`ConflictError` for a collection's vector table that
    was dropped while the caller used it (:func:`classify`'s SQLSTATE 42P01 naming an
    ``emb_<space id>``): the collection deleted, or a model it no longer serves pruned
    after a switch or rollback. Where the collection is still there, the same work done
    again reads its present model and stores. Told by the PostgreSQL error it was
    translated from (its ``__cause__``)."""
    cause = exc.__cause__
    return (
        isinstance(exc, ConflictError)
        and getattr(cause, "sqlstate", None) == "42P01"
        and _VECTOR_TABLE.search(str(cause)) is not None
    )


def classify(exc: BaseException) -> tuple[type[RagstoreError], str]:
    """Our error class for a foreign database exception, and a short public reason."""
    if isinstance(exc, PoolTimeout):
        return DatabaseUnavailableError, "no database connection could be had in time"
    if disk_full(exc):
        return DatabaseUnavailableError, DISK_FULL
    state = getattr(exc, "sqlstate", None)
    if state == "42P01" and _VECTOR_TABLE.search(str(exc)):
        # a collection's vector table, the only kind dropped while serving: a request
        # that looked the collection up before another deleted it (or rolled its model
        # back) reads a table that is gone; retried, it gets collection_not_found
        return ConflictError, (
            "the collection was deleted or its model rolled back while this request ran"
        )
    if recovery_conflict(exc):
        # a hot standby's replay needed what the statement held (a lock, rows): it races
        # nothing of the caller's, as class 40's "collided with a concurrent change" (409)
        # said; a read-only server on the standby answers it 503 with Retry-After
        return StatementCancelledError, (
            "the hot standby cancelled the statement to replay the primary's changes "
            "(a conflict with recovery)"
        )
    if isinstance(state, str) and state:
        for key in (state, state[:2]):
            if key in SQLSTATE_MAP:
                return SQLSTATE_MAP[key]
        if isinstance(exc, psycopg.OperationalError):
            # the server answered (a SQLSTATE is its word) with a class the table does
            # not name (57000, 38, F0, HV ...): a refusal of this statement, not a
            # database out of reach
            return DatabaseError, REFUSED
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return DatabaseUnavailableError, "the database cannot be reached"
    if isinstance(exc, psycopg.DataError):  # client side: NUL byte, value psycopg cannot send
        return InputError, "a value cannot be stored"
    return DatabaseError, DATABASE_FAILED


# what the caller of a request that failed for a passing cause does: the last words of
# the error's message, its ``advice``, which a background job's record (no request of
# its own to retry) says its own way instead (``errors.public_reason`` leaves it out)
RETRY_IT = "only this request failed, retry it"
RETRY_REQUEST = "retry the request"


def advice(exc: BaseException, cls: type[RagstoreError]) -> str:
    """What the caller of the failed request is told to do about ``exc`` (translated to
    ``cls``): a cancelled statement and a collision (class 40, a vector table dropped
    under the request) pass, the request retried; the rest say nothing of a retry."""
    if cls is StatementCancelledError:
        return RETRY_IT
    state = getattr(exc, "sqlstate", None)
    if cls is ConflictError and isinstance(state, str) and (state[:2] == "40" or state == "42P01"):
        return RETRY_REQUEST
    return ""


def translate(exc: BaseException, where: str) -> RagstoreError:
    """The ragstore error for ``exc`` raised while doing ``where``; its :func:`advice`
    ends its message."""
    cls, reason = classify(exc)
    detail = _first_line(exc)
    if cls is DatabaseUnavailableError:
        return DatabaseUnavailableError(f"{where}: {reason} ({detail})", public=reason)
    if cls is InputError or cls is ConflictError:
        err: RagstoreError = cls(f"{where}: {reason}: {_without_context(detail)}")
    elif cls is StatementCancelledError:
        err = StatementCancelledError(f"{where}: {reason} ({_without_context(detail)})")
    elif reason == DATABASE_FAILED:
        return DatabaseError(f"{where}: {detail}")
    else:
        # a row of its own, or a refusal the table does not name: its words, then the
        # SQLSTATE the operator looks up and the server's
        state = getattr(exc, "sqlstate", None)
        return DatabaseError(f"{where}: {reason} (SQLSTATE {state}: {_without_context(detail)})")
    told = advice(exc, cls)
    if told:
        err.message = f"{err.message}; {told}"
        err.args = (err.message,)
        err.advice = told
    return err


@contextmanager
def translated(where: str) -> Iterator[None]:
    """Run a block of database work; turn psycopg failures into ragstore errors.

    ``where`` names what was being done ("connecting to postgresql://host/db",
    "storing document x.md") so the one line a user sees says where it went wrong.
    """
    try:
        yield
    except RagstoreError:
        raise
    except (psycopg.Error, PoolTimeout) as exc:
        raise translate(exc, where) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _without_context(text: str) -> str:
    """PostgreSQL's own words minus the SQL it quotes."""
    return text.split(" CONTEXT:", 1)[0]
