"""A session's own settings, which belong to no table: how long its statements wait for a
lock, and whether an idle limit may end it.

Services that take a collection's write locks in bulk or hold a session idle for long
(a bulk load, ``ragstore import``, ``db check --repair``, a model migration's lock) set
them through these, so the statements stay in the database layer.
"""

from __future__ import annotations

from typing import Any

import psycopg

Conn = psycopg.Connection[Any]


def lock_timeout(conn: Conn) -> str:
    """The session's ``lock_timeout`` as the server says it ("0" where none is read), to
    be put back after a block that bounds it (:func:`set_lock_timeout`)."""
    row = conn.execute("SELECT current_setting('lock_timeout')").fetchone()
    return str(row[0]) if row else "0"


def set_lock_timeout(conn: Conn, value: str, *, local: bool) -> None:
    """Wait at most ``value`` (``"250ms"``, ``"5s"``) for each lock: for the caller's
    transaction alone with ``local``, else for the session's life (autocommit work whose
    every statement is a transaction of its own, such as a concurrent index build)."""
    if local:
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (value,))
    else:
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (value,))


def never_idle_out(conn: Conn) -> None:
    """No ``idle_session_timeout`` for this session: one that holds a session-level lock
    and sits idle while its command works (a model migration's) must not be ended, and
    the lock with it, by a server-wide idle limit."""
    conn.execute("SET idle_session_timeout = 0")
