"""A ``Store`` opened before ``os.fork()`` (gunicorn ``--preload``, multiprocessing's fork
start method, celery prefork) and then used in the parent and its children at once: each
process must talk to the database over its own connections. Real embedded database; the
collections are vector-only, so no child loads the model, except where a child embeds with the
parent's model."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from ragstore import Store
from ragstore.config import Settings

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

ROUNDS = 15


@pytest.fixture(scope="module")
def store(settings: Settings) -> Iterator[Store]:
    with Store(settings=settings) as s:
        s.create_collection("forked", model="outside-embedder@v1", dimension=3)
        s.add_texts("forked", ["before the fork"], ids=["before"], vectors=[[1.0, 0.0, 0.0]])
        yield s


def _work(store: Store, who: str) -> None:
    """Writes, each read back at once: a reply meant for another process fails it."""
    for j in range(ROUNDS):
        tid = f"{who}-{j}"
        added = store.add_texts("forked", [f"text {tid}"], ids=[tid], vectors=[[0.0, 1.0, j]])
        assert added["added"] == 1, added
        got = store.get_texts("forked", [tid])
        assert [t["text"] for t in got] == [f"text {tid}"], got
        assert store.delete_texts("forked", [f"{who}-gone"]) == 0


def _in_children(n: int, child: Callable[[int], object], timeout_s: float = 60.0) -> list[str]:
    """Run ``child(i)`` in ``n`` forked children while the parent goes on; each one's
    outcome ("ok" or its error) read back through a pipe; a child that hangs is killed."""
    procs: list[tuple[int, int]] = []
    for i in range(n):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover (a child)
            os.close(r)
            try:
                child(i)
                out = "ok"
            except BaseException as exc:
                out = f"{type(exc).__name__}: {exc}"
            os.write(w, json.dumps(out).encode())
            os._exit(0)
        os.close(w)
        procs.append((pid, r))
    return [_collect(pid, r, timeout_s) for pid, r in procs]


def _collect(pid: int, r: int, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
        return "hung"
    with os.fdopen(r, "rb") as f:
        return str(json.loads(f.read() or b'"no answer"'))


def test_a_store_opened_before_a_fork_works_in_the_parent_and_its_children(
    store: Store,
) -> None:
    # the children used the parent's pooled sockets: the processes' statements and
    # answers mixed on one stream ("unexpected result EMPTY_QUERY from command 'BEGIN'",
    # "the last operation didn't produce records") and calls hung
    assert store.get_texts("forked", ["before"])  # the pool is open, connections idle
    outcomes = _in_children(3, lambda i: _work(store, f"child{i}"))
    _work(store, "parent")  # the children have ended: their outcomes are in
    assert outcomes == ["ok"] * 3
    ids = [f"{who}-{j}" for who in ("child0", "child1", "child2", "parent") for j in range(ROUNDS)]
    assert len(store.get_texts("forked", ids)) == len(ids)


def test_a_hybrid_search_in_a_child_starts_its_own_list_threads() -> None:
    # the child's copy of the full-text lists' executor counted the parent's idle threads
    # and started none: a hybrid search in the child waited for its full-text list forever
    from ragstore.search import service

    assert service._lists_executor().submit(lambda: 1).result(timeout=10) == 1
    time.sleep(0.1)  # the worker goes idle

    def child(_: int) -> None:
        assert service._lists_executor().submit(lambda: 2).result(timeout=10) == 2

    assert _in_children(1, child, timeout_s=30) == ["ok"]


def _backends(settings: Settings) -> int:
    import psycopg

    assert settings.database_url is not None
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _until(holds: Callable[[], bool], what: str, within_s: float = 30.0) -> None:
    """Wait until ``holds()``, checking every 10 ms; fail naming ``what`` after ``within_s``."""
    deadline = time.monotonic() + within_s
    while not holds():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


def _lock_waiters(settings: Settings) -> int:
    """This database's sessions waiting for a lock."""
    import psycopg

    assert settings.database_url is not None
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_close_waits_for_the_calls_other_threads_have_in_flight(settings: Settings) -> None:
    # closed under a call another thread had started, the call's next statement found the
    # pool gone: it failed with "the database cannot be reached (the pool 'ragstore' is
    # already closed)", or reopened a pool that nothing closed
    import threading

    import psycopg

    assert settings.database_url is not None
    before = _backends(settings)
    store = Store(settings=settings)
    store.create_collection("in-flight", model="outside-embedder@v1", dimension=3)
    calls = ThreadPoolExecutor(max_workers=1)
    with psycopg.connect(settings.database_url.get_secret_value()) as blocker:
        blocker.execute("LOCK TABLE collections IN ACCESS EXCLUSIVE MODE")
        adding = calls.submit(
            store.add_texts, "in-flight", ["late"], ids=["late"], vectors=[[1, 0, 0]]
        )
        _until(lambda: _lock_waiters(settings) > 0, "the call waits for the lock")
        closing = threading.Thread(target=store.close)
        closing.start()
        _until(lambda: store._closing, "the close began")
        with pytest.raises(RuntimeError, match="this Store is closed"):
            store.list_collections()  # a new call once close has begun
        waited = closing.is_alive()  # for the call in flight
        blocker.rollback()  # the lock goes
    added = adding.result(30)  # its error, had it failed, raised here
    calls.shutdown()
    closing.join(30)
    assert not closing.is_alive()
    assert isinstance(added, dict), added
    assert added["added"] == 1
    with Store(settings=settings) as again:
        assert [t["text"] for t in again.get_texts("in-flight", ["late"])] == ["late"]
        again.delete_collection("in-flight")
    # the closed pools' sessions end as their backends exit, a moment after the close
    _until(lambda: _backends(settings) == before, "the Stores' sessions all ended")
    assert waited


def test_close_with_a_timeout_gives_up_waiting_and_leaves_the_call_whole(
    settings: Settings,
) -> None:
    # close had no timeout: a call stuck on a lock held forever kept it waiting forever
    import psycopg

    from ragstore.errors import InputError

    assert settings.database_url is not None
    store = Store(settings=settings)
    store.create_collection("slow-close", model="outside-embedder@v1", dimension=3)
    with pytest.raises(InputError, match="timeout must be a number of seconds"):
        store.close(timeout=-1)
    calls = ThreadPoolExecutor(max_workers=1)
    with psycopg.connect(settings.database_url.get_secret_value()) as blocker:
        blocker.execute("LOCK TABLE collections IN ACCESS EXCLUSIVE MODE")
        adding = calls.submit(
            store.add_texts, "slow-close", ["late"], ids=["late"], vectors=[[1, 0, 0]]
        )
        time.sleep(0.5)  # its lookup of the collection waits for the lock
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"1 call\(s\) .* still running after 0.3 s"):
            store.close(timeout=0.3)
        assert time.monotonic() - started < 5
        with pytest.raises(RuntimeError, match="this Store is closed"):
            store.list_collections()  # still closing: new calls refused
        blocker.rollback()  # the lock goes
    # the call in flight was not cut off: its pool stayed open under it
    assert adding.result(30)["added"] == 1
    calls.shutdown()
    store.close(timeout=10)  # nothing in flight now: it closes
    with pytest.raises(RuntimeError, match="this Store is closed"):
        store.list_collections()
    with Store(settings=settings) as again:
        assert [t["text"] for t in again.get_texts("slow-close", ["late"])] == ["late"]
        again.delete_collection("slow-close")


def test_close_from_a_signal_handler_inside_a_call_does_not_wait_for_itself(
    settings: Settings,
) -> None:
    # close waits for the calls in flight; one of its own thread's (a SIGALRM or SIGTERM
    # handler that closes the Store, run inside a call) would never finish first
    store = Store(settings=settings)
    store.create_collection("self-close", model="outside-embedder@v1", dimension=3)
    closed: list[bool] = []

    def handler(signum: int, frame: object) -> None:
        store.close()
        closed.append(True)

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        deadline = time.monotonic() + 20
        while not closed and time.monotonic() < deadline:
            try:
                store.list_collections()
            except RuntimeError:
                break
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert closed == [True]
    with Store(settings=settings) as again:
        again.delete_collection("self-close")


def test_a_child_forked_while_another_thread_has_a_call_in_flight_can_close(
    settings: Settings,
) -> None:
    # the child inherited the parent's count of calls in flight, by thread: the other
    # thread's call never ends in the child (the thread is not there), so close() waited
    # for it forever, or raised TimeoutError, and every call after it was refused
    import threading

    store = Store(settings=settings)
    store.create_collection("fork-in-flight", model="outside-embedder@v1", dimension=3)
    started, release = threading.Event(), threading.Event()

    def held() -> Iterator[str]:
        """The add's texts, read inside the verb: it stays in flight until released."""
        started.set()
        release.wait(60)
        yield "held across the fork"

    def child(_: int) -> None:
        store.close(timeout=10)
        with pytest.raises(RuntimeError, match="this Store is closed"):
            store.list_collections()

    calls = ThreadPoolExecutor(max_workers=1)
    adding = calls.submit(
        store.add_texts, "fork-in-flight", held(), ids=["held"], vectors=[[1.0, 0.0, 0.0]]
    )
    try:
        assert started.wait(30)
        outcomes = _in_children(1, child, timeout_s=60)
    finally:
        release.set()
    assert adding.result(30)["added"] == 1  # the parent's call was left alone
    calls.shutdown()
    assert [t["text"] for t in store.get_texts("fork-in-flight", ["held"])] == [
        "held across the fork"
    ]
    store.delete_collection("fork-in-flight")
    store.close(timeout=30)
    assert outcomes == ["ok"]


def test_a_child_forked_after_the_parent_embedded_embeds_too(settings: Settings) -> None:
    # torch's CPU thread pool (GNU OpenMP) does not survive fork(): once the parent had
    # embedded, the child's first embedding waited for the parent's pool threads forever
    with Store(settings=settings) as s:
        s.add_texts("forked-model", ["a cat sleeps all day", "a dog walks twice a day"])
        assert s.search("forked-model", "which pet sleeps?", k=1, mode="hybrid")["data"]

        def child(_: int) -> None:
            found = s.search("forked-model", "which pet walks?", k=2, mode="hybrid")
            assert found["data"], found
            added = s.add_texts("forked-model", ["a fish swims in its tank"], ids=["child"])
            assert added["added"] == 1, added

        assert _in_children(1, child, timeout_s=60) == ["ok"]
        assert [t["text"] for t in s.get_texts("forked-model", ["child"])] == [
            "a fish swims in its tank"
        ]
        s.delete_collection("forked-model")


def test_a_forked_child_keeps_one_thread_when_threads_are_set_again() -> None:
    # a child loading another local model set RAGSTORE_EMBED_THREADS' count again, and
    # more than one thread waited on the parent's dead pool as before
    import torch

    from ragstore.embedding.local import set_threads

    x = torch.ones(64, 384)
    before = torch.get_num_threads()
    set_threads(2)
    try:
        torch.nn.functional.layer_norm(x @ x.T, (64,))  # the parent's pool is running

        def child(_: int) -> None:
            set_threads(2)
            torch.nn.functional.layer_norm(x @ x.T, (64,))
            assert torch.get_num_threads() == 1

        assert _in_children(1, child, timeout_s=60) == ["ok"]
    finally:
        torch.set_num_threads(before)
