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
from ragstore.wire import LSN_HEADER

HEADER = LSN_HEADER  # the header the positions travel in (ragstore.wire)
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


# the sizes of a WAL page's header: every page's, and the longer one that opens a segment
# (PostgreSQL's SizeOfXLogShortPHD and SizeOfXLogLongPHD)
_PAGE_HEADER = 24
_SEGMENT_HEADER = 40


def record_end(insert: int, *, block_size: int, segment_size: int) -> int:
    """An insert position as the end of the record before it, the form a standby's
    ``pg_last_wal_replay_lsn()`` takes.

    After a record that filled its page the insert position points past the next page's
    header, which the standby's replay position (the record's end: the page's start)
    never reaches until more WAL comes: a write's reads would wait for WAL it never made.
    """
    if insert % segment_size == _SEGMENT_HEADER:
        return insert - _SEGMENT_HEADER
    if insert % block_size == _PAGE_HEADER:
        return insert - _PAGE_HEADER
    return insert


def current(conn: Conn) -> int:
    """The primary's WAL position: at or past every transaction committed so far.

    The insert position, not ``pg_current_wal_lsn()`` (how far WAL is written out): with
    ``synchronous_commit = off`` (a server's or role's setting) a commit returns before
    its record is written, and the written position, answered as a write's, was before
    its commit: a replica that had replayed that far, without the write, served the
    writer's next read. A standby receives WAL only once it is flushed, so it waits for
    the insert position as it would for the write's own record."""
    row = conn.execute(
        "SELECT pg_current_wal_insert_lsn()::text, current_setting('wal_block_size')::int,"
        " pg_size_bytes(current_setting('wal_segment_size'))"
    ).fetchone()
    assert row is not None
    return record_end(parse(str(row[0])), block_size=int(row[1]), segment_size=int(row[2]))


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


def replayed(conn: Conn) -> int | None:
    """How far this standby has replayed; None on a server not in recovery (a primary, a
    promoted standby), which replays nobody's WAL."""
    row = conn.execute(
        "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text END"
    ).fetchone()
    return parse(str(row[0])) if row and row[0] is not None else None


def in_recovery(conn: Conn) -> bool:
    """True on a hot standby (every write there fails)."""
    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    return bool(row and row[0])
