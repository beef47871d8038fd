"""A rate-limit token given back (a request shed before it ran, api/shed.py) is there
for the next request, in PostgreSQL's shared bucket and in a process's own, and never
lifts a bucket past its limit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from ragstore.auth import RateLimiter
from ragstore.config import Settings
from ragstore.db.database import Database
from ragstore.errors import RateLimitedError


@pytest.fixture(scope="module")
def db(settings: Settings) -> Iterator[Database]:
    assert settings.database_url is not None
    database = Database(settings.database_url.get_secret_value())
    yield database
    database.close()


@pytest.mark.parametrize("shared", [True, False])
def test_a_token_given_back_is_there_for_the_next_request(db: Database, shared: bool) -> None:
    limiter = RateLimiter(2, db if shared else None)
    key = f"give-back-{uuid.uuid4().hex[:8]}"
    first = limiter.hit(key)
    assert first is not None and first.shared is shared
    limiter.give_back(first)
    limiter.give_back(first)  # twice: still no more than the limit
    limiter.hit(key)
    limiter.hit(key)
    with pytest.raises(RateLimitedError):
        limiter.hit(key)


def test_no_token_is_taken_without_a_limit() -> None:
    assert RateLimiter(0).hit("any") is None


def test_a_give_back_does_not_wait_out_the_pool_for_a_connection(settings: Settings) -> None:
    """A shed request's give-back runs before its 503, when the pool is most likely lent
    out: it waited the pool's whole timeout (here 120 s) before the 503 went out. It now
    waits a moment, leaves the token spent, and says so in the log."""
    import threading

    assert settings.database_url is not None
    database = Database(
        settings.database_url.get_secret_value(), min_size=1, max_size=1, connect_timeout_s=120
    )
    try:
        limiter = RateLimiter(2, database)
        key = f"give-back-busy-{uuid.uuid4().hex[:8]}"
        taken = limiter.hit(key)
        assert taken is not None and taken.shared
        returned = threading.Event()
        with database.connection():  # the pool's only connection, lent out
            giving = threading.Thread(
                target=lambda: (limiter.give_back(taken), returned.set()), daemon=True
            )
            giving.start()
            # a minute: far less than the pool's timeout, far more than the give-back's wait
            assert returned.wait(60), "the give-back waited for the pool"
        limiter.hit(key)  # the token stayed spent: one left of two
        with pytest.raises(RateLimitedError):
            limiter.hit(key)
    finally:
        database.close()
