"""The ``rate_limit_buckets`` table: token buckets shared by every process on one database.

One statement per request takes a token (refilling by the time since the last one) under
the row's lock, so concurrent servers and workers cannot overspend a key's budget.
"""

from __future__ import annotations

from typing import Any

import psycopg

Conn = psycopg.Connection[Any]

_TAKE = """
WITH cur AS (
  SELECT least(%(cap)s, tokens + extract(epoch FROM clock_timestamp() - refreshed_at)
               * %(rate)s)::double precision AS avail
  FROM rate_limit_buckets WHERE bucket = %(bucket)s FOR UPDATE
), up AS (
  UPDATE rate_limit_buckets b
  SET tokens = CASE WHEN cur.avail >= 1 THEN cur.avail - 1 ELSE cur.avail END,
      refreshed_at = clock_timestamp()
  FROM cur WHERE b.bucket = %(bucket)s
  RETURNING cur.avail
)
SELECT avail FROM up
"""

_CREATE = """
INSERT INTO rate_limit_buckets (bucket, tokens) VALUES (%(bucket)s, %(cap)s)
ON CONFLICT (bucket) DO NOTHING
"""


_GIVE_BACK = """
UPDATE rate_limit_buckets
SET tokens = least(%(cap)s, tokens + extract(epoch FROM clock_timestamp() - refreshed_at)
                            * %(rate)s + 1)::double precision,
    refreshed_at = clock_timestamp()
WHERE bucket = %(bucket)s
"""


def take(conn: Conn, bucket: str, capacity: float, per_second: float) -> float | None:
    """Take one token from ``bucket``; return the tokens that were available before.

    Below 1 means refused (nothing taken): the caller waits ``(1 - avail) / per_second``.
    ``None``: the database is read-only (a standby), so nothing can be counted here.
    """
    params = {"bucket": bucket, "cap": capacity, "rate": per_second}
    try:
        row = conn.execute(_TAKE, params).fetchone()
        if row is None:
            conn.execute(_CREATE, params)
            row = conn.execute(_TAKE, params).fetchone()
    except psycopg.errors.ReadOnlySqlTransaction:
        conn.rollback()
        return None
    assert row is not None
    return float(row[0])


def give_back(conn: Conn, bucket: str, capacity: float, per_second: float) -> bool:
    """Return the token a request took from ``bucket`` (never past ``capacity``), in one
    statement under the row's lock: one taken and given back by another server or worker
    in between is counted exactly once. False: the database is read-only."""
    params = {"bucket": bucket, "cap": capacity, "rate": per_second}
    try:
        conn.execute(_GIVE_BACK, params)
    except psycopg.errors.ReadOnlySqlTransaction:
        conn.rollback()
        return False
    return True
