"""The failed-authentication throttle admits and counts a key id's checks atomically."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from ragstore.auth.throttle import KEY_SPREAD, AuthThrottle
from ragstore.errors import AuthenticationError, RateLimitedError


def _fail(throttle: AuthThrottle, key_id: str, address: str = "10.0.0.1") -> None:
    with pytest.raises(AuthenticationError), throttle.attempt(key_id, address):
        raise AuthenticationError(f"API key {key_id}: wrong secret")


def test_a_failed_check_is_counted_before_the_next_one_is_admitted() -> None:
    throttle = AuthThrottle(per_key=2, per_address=100)
    _fail(throttle, "k1")
    _fail(throttle, "k1")
    over = "too many failed authentications for API key k1 from 10.0.0.1"
    with pytest.raises(RateLimitedError, match=over), throttle.attempt("k1", "10.0.0.1"):
        pass
    with throttle.attempt("k2", "10.0.0.1"):  # another key id: its own budget
        pass


def test_one_address_guessing_a_key_id_does_not_lock_its_owner_out_elsewhere() -> None:
    # counted per key id alone, ten wrong secrets a minute from anywhere (a key id is
    # printed in logs and errors) refused the key's owner everywhere for the minute
    throttle = AuthThrottle(per_key=2, per_address=100)
    for _ in range(2):
        _fail(throttle, "k1", "203.0.113.9")
    with pytest.raises(RateLimitedError, match=r"k1 from 203\.0\.113\.9"):
        _fail(throttle, "k1", "203.0.113.9")
    with throttle.attempt("k1", "10.0.0.2"):  # the owner, from its own address
        pass
    # guesses from many addresses still meet the key id's overall limit (KEY_SPREAD x)
    for i in range(2 * KEY_SPREAD - 2):
        _fail(throttle, "k1", f"198.51.100.{i // 2}")
    with pytest.raises(RateLimitedError, match="for API key k1; retry"):
        _fail(throttle, "k1", "10.0.0.3")


def test_a_check_in_flight_refuses_a_concurrent_one_of_the_same_key() -> None:
    throttle = AuthThrottle(per_key=10, per_address=100)
    with (
        throttle.attempt("k1", "10.0.0.1"),
        pytest.raises(RateLimitedError, match="in progress"),
        throttle.attempt("k1", "10.0.0.2"),
    ):
        pass
    with throttle.attempt("k1", "10.0.0.1"):  # the slot was freed
        pass


def test_concurrent_guesses_never_hash_more_than_the_budget() -> None:
    """Sixteen threads guessing one key id: at most ``per_key`` checks ever run (the
    others are refused), however the threads interleave. With the check before the slot
    and the count after it, a guess that passed the check could take the slot a failing
    one had just freed before its failure was counted."""
    throttle = AuthThrottle(per_key=3, per_address=10_000)
    ran = 0
    lock = threading.Lock()
    start = threading.Barrier(16)

    def guess(_: int) -> str:
        nonlocal ran
        start.wait()
        outcomes = []
        for _ in range(50):
            try:
                with throttle.attempt("k1", "10.0.0.1"):
                    with lock:
                        ran += 1
                    raise AuthenticationError("wrong secret")
            except AuthenticationError:
                outcomes.append("401")
            except RateLimitedError:
                outcomes.append("429")
        return ",".join(outcomes)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(guess, range(16)))
    assert ran == 3


def test_a_check_of_the_same_secret_waits_for_the_one_in_flight() -> None:
    """Parallel first requests with one valid key: all but one were refused 429 "another
    authentication ... in progress". One of the same secret now waits for the check in
    flight (and then finds its outcome); another secret is still refused at once."""
    throttle = AuthThrottle(per_key=10, per_address=100)
    entered = threading.Event()
    release = threading.Event()

    def first() -> None:
        with throttle.attempt("k1", "10.0.0.1", b"same"):
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=first)
    holder.start()
    assert entered.wait(5)
    with (
        pytest.raises(RateLimitedError, match="in progress"),
        throttle.attempt("k1", "10.0.0.2", b"other"),
    ):
        pass
    threading.Timer(0.2, release.set).start()
    with throttle.attempt("k1", "10.0.0.1", b"same"):  # admitted once the first is done
        assert release.is_set()
    holder.join(5)


def test_old_failures_filling_the_table_do_not_reset_a_live_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Buckets were trimmed only when seen again, so old scanners' ones stayed; once
    there were too many the whole table was cleared, a key id over its limit with it."""
    import time

    from ragstore.auth import throttle as throttle_module

    monkeypatch.setattr(throttle_module, "_MAX_TRACKED", 20)
    throttle = AuthThrottle(per_key=2, per_address=100, window_s=0.5)
    for i in range(15):
        throttle.failed(None, f"10.1.0.{i}")  # old scanners, one bucket each
    time.sleep(0.6)
    _fail(throttle, "k1", "10.0.0.1")
    _fail(throttle, "k1", "10.0.0.1")
    for i in range(15):
        throttle.failed(None, f"10.2.0.{i}")  # the table overflows
    with pytest.raises(RateLimitedError, match="API key k1"), throttle.attempt("k1", "10.0.0.1"):
        pass


def test_an_ipv4_client_is_one_address_in_either_form() -> None:
    """A forwarded client written ``::ffff:1.2.3.4`` and ``1.2.3.4`` (a dual-stack proxy
    or listener) was counted as two addresses, with twice the budget of failures."""
    throttle = AuthThrottle(per_key=2, per_address=3)
    _fail(throttle, "k1", "::ffff:198.51.100.7")
    _fail(throttle, "k1", "198.51.100.7")
    with pytest.raises(RateLimitedError, match=r"k1 from 198\.51\.100\.7;"):
        _fail(throttle, "k1", "::ffff:198.51.100.7")
    _fail(throttle, "k2", "::FFFF:c633:6407")  # 198.51.100.7 again, the third failure
    with pytest.raises(RateLimitedError, match=r"client 198\.51\.100\.7;"):
        throttle.check(None, "198.51.100.7")
    throttle.check(None, "2001:db8::1")  # other addresses are counted as they are
    throttle.check(None, "not-an-address")
