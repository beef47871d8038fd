"""WAL positions (LSNs): where the primary has written to, how far a replica has replayed.

Read-your-writes rests on these: a write answers with the primary's WAL position after its
commit, and a later read that carries it is served by a replica only once that replica's
``pg_last_wal_replay_lsn()`` has reached it. LSNs travel as PostgreSQL's text form
(``16/B374D848``) and are compared as integers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg

from ragstore.errors import InputError

HEADER = "RAGStore-LSN"
# the header's value on a write whose position could not be read after its commit: a read
# that sends it back is served by the primary (a replica cannot be shown to have the write)
ON_PRIMARY = "primary"
_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")

Conn = psycopg.Connection[Any]


def parse(text: str) -> int:
    """An LSN's text form as an integer; InputError naming the header when it is not one."""
    m = _LSN_RE.match(text.strip())
    if m is None:
        raise InputError(
            f"{HEADER} header {text!r} is not a WAL position; send back the value a write "
            "returned, e.g. 0/3020B60"
        )
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def on_primary(text: str) -> bool:
    """The header asks for the primary (:data:`ON_PRIMARY`) instead of naming a position."""
    return text.strip().lower() == ON_PRIMARY


def format_lsn(value: int) -> str:
    """The text form PostgreSQL prints for an LSN integer."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def current(conn: Conn) -> int:
    """The primary's WAL write position: at or past every transaction committed so far."""
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return parse(str(row[0]))


@dataclass(frozen=True)
class ReplayState:
    """What a server says about itself: standby or not, and for a standby how far it is."""

    in_recovery: bool
    replay_lsn: int | None  # None on a primary
    replay_age_s: float | None  # seconds since the last replayed commit (None: none yet)
    receive_lsn: int | None = None  # streamed in so far (None: not streaming)
    streaming: bool = False  # a WAL receiver runs: the stream from the primary is up

    @property
    def replayed_all_received(self) -> bool:
        """Replay keeps up with what streams in: any gap is transit, not lag.

        Only while a WAL receiver runs: the receive position stays where a broken stream
        left it, so a standby cut off from the primary has "replayed all it received"
        forever while the primary's writes never reach it."""
        return (
            self.streaming
            and self.receive_lsn is not None
            and self.replay_lsn is not None
            and self.replay_lsn >= self.receive_lsn
        )


def replay_state(conn: Conn) -> ReplayState:
    """One round trip: is this a standby, what has it received and replayed, how old is its
    last replayed commit, is its WAL stream up."""
    row = conn.execute(
        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,"
        " extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8,"
        " pg_last_wal_receive_lsn()::text,"
        # its pid is shown to every role (the other columns need pg_read_all_stats)
        " EXISTS (SELECT 1 FROM pg_stat_wal_receiver)"
    ).fetchone()
    assert row is not None
    replayed = parse(str(row[1])) if row[1] is not None else None
    age = float(row[2]) if row[2] is not None else None
    received = parse(str(row[3])) if row[3] is not None else None
    return ReplayState(bool(row[0]), replayed, age, received, bool(row[4]))


def in_recovery(conn: Conn) -> bool:
    """True on a hot standby (every write there fails)."""
    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    return bool(row and row[0])
