"""A bulk load's vectors on a second connection, so that its two index builds overlap.

A bulk load (``ingest.service``) writes every round in one transaction and ends it with
two builds: the BM25 statistics and postings, one statement on one core, and the space's
HNSW index, on every core. In one transaction they can only run one after the other, and
on two cores the BM25 build left one idle for a fifth of a 100k first load
(docs/benchmarks.md). So the active space's vectors go elsewhere: to a staging table
(``spaces.create_load_table``) on a second pooled connection, in a transaction of its
own, a round's vectors once the load's transaction has stored that round's chunks. At
the end the HNSW index is built there while the load's connection builds BM25; the
staging transaction commits, and the load's transaction puts the staged table in the
place of the space's empty one (``spaces.attach_load_table``) and commits. Readers still
see the load at once, complete, or not at all.

A bulk load into a collection that holds vectors already (a load at least a quarter its size)
copies them into the staged table before the build, less those of the chunks the load
replaced: the space's own table and its index serve searches until the swap. ``ragstore
import`` into such a collection does the same (``imports.service``).

Nothing is left behind by a load that fails or is interrupted before the staging
transaction commits: the table goes with its rollback; one that fails after it drops the
table (:class:`StagedLock`, :func:`discard_staged`). A process killed between the two
commits leaves the staged table, which the next bulk load of the collection, its deletion
or ``ragstore db check --repair`` drops. While the load runs, the session lock it holds on
its staged table (:class:`StagedLock`) tells ``db check`` the table is in use: an import
verifies its rows between the two commits, and a repair in that window dropped the staged
table and failed the whole load.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from typing import Any

import numpy as np
import psycopg

from ragstore.db import documents, repository, spaces
from ragstore.db import session as db_session
from ragstore.db.errors import translated
from ragstore.errors import DatabaseUnavailableError, RagstoreError
from ragstore.runtime import Runtime

# A bulk load holds one pooled connection for its transaction and, to stage its vectors,
# a second; its reader and encoder threads (two with a remote model) borrow others for a
# lookup each meanwhile, waiting their turn when the pool is short.
MIN_POOL_TO_STAGE = 4
# A load into a collection that holds chunks already is a bulk load when what it brings
# is at least this share of what is stored (an ingest: the bytes of its new or changed
# sources; an import: its records against the space's vectors): building the HNSW index
# over old and new and adding the load's postings at the end then costs less than growing
# them round by round, which writes at about a quarter of a first load's rate. Measured at
# 135k chunks: 1.5x faster at a tenth, 1.8-1.9x at a quarter, 2x at half
# (docs/benchmarks.md, "A later load"); but a bulk load holds the collection's other
# writers for its whole length and a crash loses all of it, so loads of a day's size stay
# round by round.
REBUILD_SHARE = 0.25


def can_stage(rt: Runtime) -> bool:
    """Whether the pool can lend a bulk load a second connection for its whole length."""
    return rt.settings.pool_max_size >= MIN_POOL_TO_STAGE


# Pooled connections a process's bulk loads leave to everything else (their own reader
# and encoder threads' lookups, a job's progress writes, other jobs' and requests' short
# transactions): those wait their turn for one of these, never for a load to end.
POOL_LEFT_BY_LOADS = 2


class _LoadBudget:
    """The pooled connections a process's bulk loads may hold at once: the pool's size less
    :data:`POOL_LEFT_BY_LOADS` (at least one load always runs)."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size - POOL_LEFT_BY_LOADS)
        self.free = self.size
        self.pid = os.getpid()  # a forked child sizes its own (its pool is its own)
        self.cond = threading.Condition()


_budgets: weakref.WeakKeyDictionary[Any, _LoadBudget] = weakref.WeakKeyDictionary()
_budgets_lock = threading.Lock()


def lock_collection(
    rt: Runtime, conn: psycopg.Connection[tuple[object, ...]], coll: repository.Collection
) -> None:
    """Take the collection's write locks for a bulk load (:func:`documents.begin_bulk`),
    waiting at most ``RAGSTORE_BULK_LOAD_WAIT_S`` for them.

    A second load of the collection waits there while another write of it (a bulk load,
    in this process or any other) holds them; behind one that was stuck (a client gone
    quiet mid-load, an index build of hours) it waited for good, holding its pooled
    connections and its share of the pool (:func:`load_connections`) all that while, and
    its job stayed ``running``. Past the deadline it fails as the wait for that share
    does: busy ``database_unavailable``, retryable, nothing of it written (the locks come
    first in its transaction, which rolls back)."""
    with waiting_for_locks(
        rt, conn, coll.name, "a bulk load of", "nothing of this load was stored"
    ):
        documents.begin_bulk(conn, coll.id)


@contextmanager
def waiting_for_locks(
    rt: Runtime, conn: psycopg.Connection[Any], name: str, doing: str, outcome: str
) -> Iterator[None]:
    """Statements of the block wait at most ``RAGSTORE_BULK_LOAD_WAIT_S`` for each lock
    (``lock_timeout``, in the caller's transaction for the block alone: its own setting
    is put back after it); past it, busy ``database_unavailable``, retryable.

    For every writer that takes a collection's write locks in bulk: a bulk load
    (:func:`lock_collection`), ``ragstore import`` and the BM25 recount of ``ragstore db
    check --repair``. Behind a stuck write of the collection (a client gone quiet
    mid-load) each of them waited for good, silently. ``doing`` says what waited ("an
    import into"), ``outcome`` what became of it ("nothing of this load was stored"): the
    caller's transaction must roll back on the error, which leaves nothing of it."""
    limit = rt.settings.bulk_load_wait_s
    before = db_session.lock_timeout(conn)
    db_session.set_lock_timeout(conn, f"{max(1, round(limit * 1000))}ms", local=True)
    try:
        yield
    except psycopg.errors.LockNotAvailable:
        raise DatabaseUnavailableError(
            f"{doing} collection {name!r} waited {limit:g}s for its write locks: another "
            f"write of that collection holds them; {outcome}: retry once it ends, or raise "
            "RAGSTORE_BULK_LOAD_WAIT_S",
            public=f"another write of collection {name!r} is still running; {outcome}, "
            "retry it once that write ends",
            retry_after=min(limit, 30.0),
            busy=True,
            says_outcome=True,
        ) from None
    db_session.set_lock_timeout(conn, before, local=True)


@contextmanager
def load_connections(rt: Runtime, count: int) -> Iterator[None]:
    """Wait until this process's bulk loads hold few enough pooled connections that one
    more load may hold ``count`` (its transaction's, and its staging one's) for its whole
    length, and hold them in the budget until the block ends.

    A bulk load keeps its connections for minutes, and its threads borrow more meanwhile.
    ``ragstore worker --concurrency N`` runs N jobs in one process on one pool
    (``RAGSTORE_POOL_MAX_SIZE``): with more loads at once than the pool could lend, they
    held every connection, their own lookups timed out waiting for one, and their
    documents failed ``database_unavailable`` (retried, and the retries tripped the
    database-down breaker). Loads past the budget now wait their turn here before taking
    any connection, so a pool smaller than the worker's concurrency makes jobs wait, never
    fail. A semaphore in the process was the smallest such design: sizing the worker's
    pool for its concurrency instead needs the server's ``max_connections`` to allow it,
    and the API server's requests bulk-load on the same pool too.

    The wait ends after ``RAGSTORE_BULK_LOAD_WAIT_S`` with a retryable, busy
    ``database_unavailable`` (nothing of the load is written: it has taken no connection
    yet). Without a deadline a load behind one that was stuck (a lock never released, an
    index build of hours) waited for good, its job ``running`` and its client polling. It
    fails rather than going on round by round: a load is bulk by its size
    (:func:`ingest.service._bulk_load`), and the incremental path, which takes a pooled
    connection per round, is the one this budget exists to keep off a pool that bulk loads
    have lent out. The deadline is not the pool timeout, which would fail the loads that
    are only queued behind shorter ones (a worker whose concurrency is over its pool's
    size), which are to wait, not fail."""
    db = rt.db
    with _budgets_lock:
        budget = _budgets.get(db)
        if budget is None or budget.pid != os.getpid():
            budget = _budgets[db] = _LoadBudget(rt.settings.pool_max_size)
    take = min(count, budget.size)
    limit = rt.settings.bulk_load_wait_s
    with budget.cond:
        if not budget.cond.wait_for(lambda: budget.free >= take, timeout=limit):
            raise DatabaseUnavailableError(
                f"a bulk load waited {limit:g}s for its share of the connection pool: this "
                f"process's other bulk loads hold all {budget.size} connections they may "
                f"(RAGSTORE_POOL_MAX_SIZE={rt.settings.pool_max_size} less "
                f"{POOL_LEFT_BY_LOADS}); nothing of it was stored: retry once they end, or "
                "raise RAGSTORE_POOL_MAX_SIZE or RAGSTORE_BULK_LOAD_WAIT_S",
                public="the server is busy with other bulk loads; nothing of this load was "
                "stored, retry it",
                retry_after=min(limit, 30.0),
                busy=True,
            )
        budget.free -= take
    try:
        yield
    finally:
        with budget.cond:
            budget.free += take
            budget.cond.notify_all()


class StagedLock:
    """The session lock a bulk load holds on its staged table (``spaces.lock_staged``), on
    the load's own connection ``conn``, from before the table is created (:meth:`take`)
    until the load's transaction has ended: the block's exit commits it (its swap with
    it) or rolls it back and drops the staged table, then releases the lock.

    ``db check`` takes a staged table whose lock is held for a running load's, not a
    leftover, and ``--repair`` drops none (``integrity.leftover_tables``): between the
    load's two commits nothing else tells (the load's transaction holds no lock on the
    staged table, and its space's table in a mode readers share at most). The pool keeps
    a connection's session locks for its next borrower, so the lock is released before
    ``conn`` goes back, and a connection that cannot release it is closed (the lock goes
    with its session, as it does with a process killed)."""

    def __init__(self, rt: Runtime, conn: psycopg.Connection[Any]) -> None:
        self.rt = rt
        self.conn = conn
        self.table: str | None = None  # the space table whose staged table is locked

    def take(self, coll: repository.Collection) -> None:
        """Lock ``coll``'s staged table, waiting at most ``RAGSTORE_BULK_LOAD_WAIT_S`` (a
        repair or a failed load's clean-up holds it for the instant of a drop)."""
        with waiting_for_locks(
            self.rt, self.conn, coll.name, "a bulk load of", "nothing of this load was stored"
        ):
            spaces.lock_staged(self.conn, coll.table)
        self.table = coll.table

    def __enter__(self) -> StagedLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self.table is None:
            return
        try:
            if exc_type is None:
                self.conn.commit()  # the load, with its swap: its staged table is gone
        except BaseException:
            self._release(failed=True)
            raise
        self._release(failed=exc_type is not None)

    def _release(self, *, failed: bool) -> None:
        """Drop the staged table of a failed load (its transaction rolled back first:
        nothing holds the table then), then release the lock; a connection that cannot
        is closed, which releases it (the pool replaces it)."""
        table, self.table = self.table, None
        assert table is not None
        conn = self.conn
        try:
            if failed:
                conn.rollback()
                with conn.transaction():
                    # nothing should hold the table: a wait is bounded all the same
                    db_session.set_lock_timeout(conn, "5s", local=True)
                    spaces.drop_load_table(conn, table)
            spaces.unlock_staged(conn, table)
            conn.commit()
        except psycopg.Error:
            conn.close()  # ends the session and its lock (:func:`discard_staged` drops)


class StagedVectors:
    """The staging table of one bulk load and the connection (transaction) that fills it.
    ``lock`` is the load's :class:`StagedLock`, taken before the table is created.

    Used from one thread at a time: the writer thread copies, then one thread builds.
    """

    def __init__(self, rt: Runtime, coll: repository.Collection, lock: StagedLock) -> None:
        self.rt = rt
        self.coll = coll
        self._lock = lock
        self._stack = ExitStack()
        self.conn: Any = None
        self.table = spaces.load_table(coll.table)
        self._cancelled = threading.Event()

    def __enter__(self) -> StagedVectors:
        self._lock.take(self.coll)
        with self._stack:
            self.conn = self._stack.enter_context(self.rt.db.connection())
            with translated(f"staging the vectors of {self.coll.name!r}"):
                spaces.create_load_table(self.conn, self.coll.table)
            self._stack = self._stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        """Commit what was built (nothing is visible until the load swaps it in), or roll
        it back with the table when the load failed."""
        self._stack.__exit__(*exc)  # type: ignore[arg-type]

    def copy(self, rows: list[tuple[list[int], np.ndarray]]) -> None:
        with translated(f"staging the vectors of {self.coll.name!r}"):
            for ids, vectors in rows:
                spaces.copy_vectors(self.conn, self.table, ids, vectors)

    def build(self, carried: spaces.Carried = (), memory: str | None = None) -> None:
        """The staged vectors' HNSW index, with the build memory (``memory``, or
        ``RAGSTORE_INDEX_BUILD_MEMORY``) and workers a bulk load's index gets; nothing once
        :meth:`cancel` was called. The space's vectors of the chunks ``carried`` (a load
        into a collection that holds some; :data:`spaces.EVERY_VECTOR` for a load that
        replaces none) are copied in first: :func:`spaces.carry_over`."""
        if self._cancelled.is_set():
            return
        with translated(f"indexing the vectors of {self.coll.name!r}"):
            if carried is spaces.EVERY_VECTOR or carried:
                spaces.carry_over(self.conn, self.coll.table, carried)
            spaces.ensure_index(
                self.conn,
                self.table,
                self.coll.model.distance,
                memory=memory or self.rt.settings.index_build_memory,
                workers=spaces.build_workers(),
            )

    def build_alongside(self, index: Callable[[], None], work: Callable[[], None]) -> None:
        """``index`` (this table's build, :meth:`build`) on a thread of its own while
        ``work`` (the load's BM25 build, on the load's connection) runs on this one; where
        ``work`` fails, the index build is cancelled and ``work``'s error raised."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragstore-index") as pool:
            built = pool.submit(index)
            done = False
            try:
                work()
                done = True
            finally:
                if not done:  # the load is lost: its index build need not finish
                    self.cancel()
            built.result()

    def cancel(self) -> None:
        """Stop the build (the load failed meanwhile): one in flight then fails at once, one
        not started yet does nothing. The load's own error is what the caller raises, so a
        connection that cannot take the cancel request is left as it is (it is rolled back
        and returned to the pool, or discarded, on exit)."""
        self._cancelled.set()
        with suppress(psycopg.Error):
            self.conn.cancel_safe()

    def commit(self) -> None:
        with translated(f"staging the vectors of {self.coll.name!r}"):
            self.conn.commit()


def discard_staged(rt: Runtime, coll: repository.Collection) -> None:
    """Drop the staged table of a load that failed after its staging transaction committed
    (its own transaction has rolled back by now, so nothing holds the table), where its
    :class:`StagedLock` could not: its connection was lost. Under the staged table's lock,
    taken without waiting: a load of the collection that started since holds it, and the
    table is that load's now. Best effort: where the database cannot be reached, the next
    bulk load of the collection, or ``db check --repair``, drops it."""
    with (
        suppress(RagstoreError),
        translated("dropping a failed load's staged vectors"),
        rt.db.connection() as conn,
    ):
        if spaces.try_lock_staged(conn, coll.table):
            spaces.drop_load_table(conn, coll.table)
