"""API keys, stored as salted scrypt hashes and checked on every request.

A key reads ``rsk_<id>_<secret>``: the public ``id`` finds the row, the ``secret`` is
checked against ``scrypt(secret, salt)``. The key is printed once when created and never
stored. scrypt is slow on purpose, so a secret that verified once is remembered (as its
SHA-256, in this process only) and later requests only re-read the row: a revoked key is
refused on its very next request.

A probe's key (a scrape of ``/metrics``, the details of ``/readyz``:
:meth:`KeyStore.authenticate_probe`) is checked apart: a probe reports the database and
the pool, so its key check must not need the database's pool, nor the database at all
for a key this process verified already.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import psycopg

from ragstore.auth.throttle import AuthThrottle
from ragstore.db.database import Database
from ragstore.db.errors import translated
from ragstore.db.repository import check_name
from ragstore.errors import (
    ApiKeyNotFoundError,
    AuthenticationError,
    DatabaseUnavailableError,
    InputError,
    PermissionDeniedError,
)

log = logging.getLogger("ragstore.auth")

# lowest first: a key allows its scope and those below it. ``metrics`` reads /metrics (and
# /readyz's details) and nothing else, so a scraper's key reads no document (revision 0034)
SCOPES = ("metrics", "read", "write", "admin")
_RANK = {scope: i for i, scope in enumerate(SCOPES)}
_KEY_RE = re.compile(r"^rsk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32, "maxmem": 64 * 1024 * 1024}

Conn = psycopg.Connection[Any]

PROBE_RECHECK_S = 30.0
"""How long a probe's key verified in this process is taken without reading its row
again (:meth:`KeyStore.authenticate_probe`): a revocation made elsewhere (``ragstore
keys revoke`` in another process) refuses it within this time; made by this process, at
once. Two Prometheus scrapes at its default 15 s interval: one key check in two reads
the database."""

PROBE_CONNECT_S = 2.0
"""The longest a probe's key check waits to connect to the database before it takes
the key this process verified last (a database silent on the network, not refusing)."""


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)


@dataclass(frozen=True)
class ApiKey:
    """A stored key, never its secret."""

    id: int
    key_id: str
    scope: str
    collection: str | None
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def allows(self, scope: str) -> bool:
        return _RANK[self.scope] >= _RANK[scope]

    def require_scope(self, scope: str) -> None:
        """Raise PermissionDeniedError unless this key has ``scope`` (on some collection)."""
        if not self.allows(scope):
            raise PermissionDeniedError(
                f"API key {self.key_id} has scope {self.scope!r}; this request needs "
                f"{scope!r} (create a key with `ragstore keys create --scope {scope}`)"
            )

    def require(self, scope: str, collection: str | None = None) -> None:
        """Raise PermissionDeniedError unless this key has ``scope`` on ``collection``
        (``None``: on every collection)."""
        if not self.allows(scope):
            raise PermissionDeniedError(
                f"API key {self.key_id} has scope {self.scope!r}; this request needs "
                f"{scope!r} (create a key with `ragstore keys create --scope {scope}`)"
            )
        if self.collection is not None and collection != self.collection:
            what = f"collection {collection!r}" if collection else "every collection"
            raise PermissionDeniedError(
                f"API key {self.key_id} is limited to collection {self.collection!r}; "
                f"this request touches {what}"
            )


@dataclass(frozen=True)
class _Verified:
    """A secret that verified for its key in this process: its SHA-256, the key as its row
    read then, and when (``KeyStore.clock``) the row last said it was live."""

    digest: bytes
    key: ApiKey
    at: float


@dataclass(frozen=True)
class NewKey:
    key: ApiKey
    secret: str  # the whole key, shown once


_COLS = "id, key_id, scope, collection, name, created_at, last_used_at, revoked_at"


def _row(r: Any) -> ApiKey:
    return ApiKey(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7])


class KeyStore:
    """Keys in the ``api_keys`` table of one database."""

    def __init__(
        self, db: Database, throttle: AuthThrottle | None = None, *, read_only: bool = False
    ) -> None:
        self.db = db
        self.throttle = throttle or AuthThrottle()
        self.read_only = read_only  # a standby: keys are checked, last_used_at is not kept
        self._verified: dict[str, _Verified] = {}  # key_id -> its secret that verified
        self._lock = threading.Lock()
        self.clock: Callable[[], float] = time.monotonic  # (a test moves it on)
        self.probe_recheck_s = PROBE_RECHECK_S

    def create(self, scope: str, collection: str | None = None, name: str = "") -> NewKey:
        if scope not in SCOPES:
            raise InputError(f"unknown scope {scope!r}; use one of {', '.join(SCOPES)}")
        if collection is not None:
            # a name no collection can have ("", "team ", "a/b") made a key that reached
            # nothing, and `keys list` showed one limited to "" as "*", every collection
            check_name(collection)
        if scope == "metrics" and collection is not None:
            raise InputError(
                "a metrics key reads the server's metrics, which cover every collection; "
                "create it without --collection"
            )
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        with self.db.connection() as conn, translated("creating an API key"):
            row = conn.execute(
                f"INSERT INTO api_keys (key_id, salt, secret_hash, scope, collection, name)"
                f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_COLS}",
                (key_id, salt, _hash(secret, salt), scope, collection, name),
            ).fetchone()
        assert row is not None
        return NewKey(_row(row), f"rsk_{key_id}_{secret}")

    def list(self) -> list[ApiKey]:
        with self.db.connection() as conn, translated("listing API keys"):
            rows = conn.execute(f"SELECT {_COLS} FROM api_keys ORDER BY id").fetchall()
        return [_row(r) for r in rows]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke by public id (``rsk_<id>_...`` or the id alone); revoking twice is a no-op."""
        m = _KEY_RE.match(key_id)
        ident = m.group(1) if m else key_id
        with self.db.connection() as conn, translated("revoking an API key"):
            row = conn.execute(
                f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = %s"
                f" RETURNING {_COLS}",
                (ident,),
            ).fetchone()
        if row is None:
            raise ApiKeyNotFoundError(
                f"no API key with id {ident!r}; `ragstore keys list` shows the ids"
            )
        self._forget(ident)
        return _row(row)

    def authenticate(self, presented: str | None, address: str = "") -> ApiKey:
        """The live key behind ``presented``; AuthenticationError when missing, bad or revoked.

        Failures are counted per key id and per client ``address``; over the limit the
        check is refused (RateLimitedError) before the database or scrypt is touched.
        A secret already verified in this process skips the throttle and the hash.
        """
        key_id, secret, digest = self._parsed(presented, address)
        return self._authenticate(key_id, secret, digest, address, self.db.connection)

    def authenticate_probe(self, presented: str | None, address: str = "") -> ApiKey:
        """:meth:`authenticate` for a probe: a scrape of ``/metrics`` and the details of
        ``/readyz``, which must answer whatever the database's and the pool's state: they
        are what report it.

        Checked on a pooled connection, a scraper's key was refused 503 while the database
        was down (the scrape failed whole: ``up == 0``, every metric blank, and
        ``ragstore_db_up 0``, whose alert names the right runbook, never read), and waited
        out the pool timeout while every pooled connection was busy (the pool's own
        figures unread). Now a key whose secret verified in this process within
        :data:`PROBE_RECHECK_S` is taken without SQL; an older or new one is checked on
        a fresh connection (:meth:`Database.checking`, as the scrape's database figures
        are read), never the pool's; and when that cannot reach the database, a key
        verified in this process before is taken as it was last read (its revocation
        cannot be read either), while one never verified here is refused 503.

        /readyz's key (who may read each collection's details) was read on a pooled
        connection too: with the pool held, a balancer's probe carrying a key waited out
        the pool timeout, past its own, and took a busy but healthy server out of
        rotation. A revocation made by another process shows on /readyz within
        :data:`PROBE_RECHECK_S`, as on /metrics: the details it shows are names, no
        document."""
        key_id, secret, digest = self._parsed(presented, address)
        with self._lock:
            seen = self._verified.get(key_id)
        if seen is not None and not hmac.compare_digest(seen.digest, digest):
            seen = None
        if seen is not None and self.clock() - seen.at < self.probe_recheck_s:
            return seen.key
        try:
            return self._authenticate(key_id, secret, digest, address, self._fresh_connection)
        except DatabaseUnavailableError as exc:
            if seen is None:
                raise DatabaseUnavailableError(
                    f"API key {key_id} could not be checked: {exc.message}",
                    public=f"{exc.public}, so the API key could not be checked (a key this "
                    "server verified before the database went away is accepted for "
                    "/metrics until it is back)",
                    retry_after=exc.retry_after,
                    busy=exc.busy,
                ) from exc
            log.warning(
                "api key %s accepted for a scrape as verified %.0fs ago: the database "
                "cannot be reached to check it (%s)",
                key_id,
                self.clock() - seen.at,
                exc.message,
            )
            return seen.key

    @contextmanager
    def _fresh_connection(self) -> Iterator[Conn]:
        """A connection outside the pool for a probe's key check (see
        :meth:`authenticate_probe`)."""
        with self.db.checking(connect_s=PROBE_CONNECT_S) as got:
            yield got.conn

    def _parsed(self, presented: str | None, address: str) -> tuple[str, str, bytes]:
        """The key id, secret and the secret's SHA-256 of a presented key;
        AuthenticationError when it is missing or malformed (the latter counted)."""
        if not presented:
            raise AuthenticationError(
                "this request needs an API key: send `Authorization: Bearer rsk_...` "
                "(create one with `ragstore keys create`)"
            )
        m = _KEY_RE.match(presented.strip())
        if m is None:
            self.throttle.check(None, address)
            self.throttle.failed(None, address)
            raise AuthenticationError("the API key is malformed; keys look like rsk_<id>_<secret>")
        key_id, secret = m.group(1), m.group(2)
        return key_id, secret, hashlib.sha256(secret.encode()).digest()

    def _authenticate(
        self,
        key_id: str,
        secret: str,
        digest: bytes,
        address: str,
        connect: Callable[[], AbstractContextManager[Conn]],
    ) -> ApiKey:
        """:meth:`authenticate` of a parsed key, its row read on a connection of
        ``connect``."""
        cached = self._known(key_id, digest)
        if not cached:
            # admitted and, failing, counted atomically (auth/throttle.py); a check of the
            # same secret in flight is waited for, and its success is found here
            with self.throttle.attempt(key_id, address, digest):
                return self._check(key_id, secret, digest, self._known(key_id, digest), connect)
        try:
            return self._check(key_id, secret, digest, cached, connect)
        except AuthenticationError:
            self.throttle.failed(key_id, address)
            raise

    def _known(self, key_id: str, digest: bytes) -> bool:
        """Whether the secret of ``digest`` verified for ``key_id`` in this process."""
        with self._lock:
            known = self._verified.get(key_id)
        return known is not None and hmac.compare_digest(known.digest, digest)

    def _forget(self, key_id: str) -> None:
        """Drop what this process remembers of ``key_id`` (gone or revoked)."""
        with self._lock:
            self._verified.pop(key_id, None)

    def _check(
        self,
        key_id: str,
        secret: str,
        digest: bytes,
        cached: bool,
        connect: Callable[[], AbstractContextManager[Conn]],
    ) -> ApiKey:
        """The live key ``key_id`` whose secret is ``secret``; AuthenticationError when not.

        An unknown key id, a wrong secret and a revoked key with a wrong secret are one
        answer (:func:`_refused`), each after one scrypt: they were told apart ("is
        unknown", "wrong secret", "was revoked", the unknown and revoked ones answered
        without hashing, so faster), which told anyone which key ids exist and which were
        revoked. Only a caller whose secret verified is told its key was revoked. The
        server's log keeps the reason.

        A key found gone or revoked is forgotten (a probe's key is then never taken
        again unread, :meth:`authenticate_probe`); a live one is remembered with the
        time its row was read."""
        with connect() as conn, translated("checking an API key"):
            row = conn.execute(
                f"SELECT {_COLS}, salt, secret_hash FROM api_keys WHERE key_id = %s", (key_id,)
            ).fetchone()
            if row is None:
                _hash(secret, _NO_KEY_SALT)  # as long as a check of a key that exists
                if cached:
                    self._forget(key_id)  # (deleted from the table since)
                raise _refused(key_id, "unknown key id")
            key = _row(row)
            if not cached:
                salt, stored = cast(bytes, row[8]), cast(bytes, row[9])
                if not hmac.compare_digest(_hash(secret, bytes(salt)), bytes(stored)):
                    why = "revoked key, wrong secret" if key.revoked_at else "wrong secret"
                    raise _refused(key_id, why)
            if key.revoked_at is not None:
                self._forget(key_id)
                log.info("api key %s refused: revoked", key_id)
                raise AuthenticationError(f"API key {key_id} was revoked")
            with self._lock:
                self._verified[key_id] = _Verified(digest, key, self.clock())
            if not cached and not self.read_only:
                _mark_used(conn, key.id)
        return key


# hashed for an unknown key id, so its refusal takes as long as a wrong secret's
_NO_KEY_SALT = secrets.token_bytes(16)


def _refused(key_id: str, why: str) -> AuthenticationError:
    """The one answer to a key that is unknown or whose secret is wrong; ``why`` is logged."""
    log.info("api key %s refused: %s", key_id, why)
    return AuthenticationError(
        f"API key {key_id} is not valid: no key has this id and secret (check it, or "
        "create one with `ragstore keys create`)"
    )


def is_live(conn: Any, key_id: int) -> bool:
    """Whether the key of row id ``key_id`` is still there and not revoked: one indexed
    read, for a holder that checked the key once and keeps using it (an MCP server over
    stdio)."""
    row = conn.execute("SELECT revoked_at FROM api_keys WHERE id = %s", (key_id,)).fetchone()
    return row is not None and row[0] is None


def _mark_used(conn: Any, key_id: int) -> None:
    """Record a key's first verified use in this process (``last_used_at``), where the
    database takes writes.

    A primary that only reads (``default_transaction_read_only``, as some hosted databases
    set when their disk is nearly full; the server checks for a standby only at its start)
    refused the update, and with it every request of each key's first use in each process,
    reads included (a 503 for a search that needs no write). The update now runs in a
    savepoint and a read-only refusal skips it: the key's check stands."""
    try:
        with conn.transaction():
            conn.execute("UPDATE api_keys SET last_used_at = now() WHERE id = %s", (key_id,))
    except psycopg.errors.ReadOnlySqlTransaction:
        log.info("api key %s: last use not recorded (the database is read-only)", key_id)
