"""The routing rules without a standby: request classes, LSN text, lag arithmetic, and a
replica that cannot be reached (reads fall back to the primary)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ragstore import AsyncClient, Client
from ragstore.api.routing import classify
from ragstore.config import Settings
from ragstore.db import errors, lsn, routing
from ragstore.db.database import Database
from ragstore.db.routing import (
    PROBE_SLOW_S,
    PROBE_TIMEOUT_S,
    REPLICA_TCP,
    ReadRouter,
    with_keepalives,
)
from ragstore.errors import DatabaseUnavailableError, InputError
from ragstore.jobs.worker import run_worker
from tests.api.conftest import running_server
from tests.conftest import TEMPLATE, create_database


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("POST", "/v1/collections/kb/search", "read"),
        ("POST", "/v1/collections/kb/texts/get", "read"),
        ("POST", "/v1/collections/kb/texts/query", "read"),
        ("POST", "/v1/collections/kb/texts/delete-where", "write"),
        ("POST", "/v1/collections/query/texts/delete-where", "write"),
        ("POST", "/v1/collections/kb/texts", "write"),
        # writes to a collection named "search" (or "get") are writes
        ("POST", "/v1/collections/search/documents", "write"),
        ("POST", "/v1/collections/search/documents/upload", "write"),
        ("POST", "/v1/collections/search/texts", "write"),
        ("POST", "/v1/collections/search/texts/delete", "write"),
        ("POST", "/v1/collections/search/model/migrate", "write"),
        ("POST", "/v1/collections/search/search", "read"),
        ("POST", "/v1/collections/get/texts/get", "read"),
        ("GET", "/v1/collections", "read"),
        ("GET", "/v1/collections/kb/documents/3", "read"),
        ("POST", "/v1/collections/kb/documents", "write"),
        ("DELETE", "/v1/collections/kb", "write"),
        ("POST", "/v1/collections", "write"),
        ("GET", "/v1/jobs/4", "other"),  # a job just submitted is the primary's to show
        ("GET", "/readyz", "other"),
        ("GET", "/metrics", "other"),
    ],
)
def test_classify(method: str, path: str, kind: str) -> None:
    assert classify(method, path) == kind


def _ours(exc: psycopg.Error) -> BaseException:
    """Our error for ``exc``, as ``translated`` raises it (``exc`` its cause)."""
    err = errors.translate(exc, "reading")
    err.__cause__ = exc
    return err


def _state(sqlstate: str) -> psycopg.Error:
    return psycopg.errors.lookup(sqlstate)("the server's words")


@pytest.mark.parametrize(
    ("exc", "unusable"),
    [
        # no answer from the server, a connection that failed, a server that cannot serve
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (_ours(psycopg.OperationalError("consuming input failed")), True),
        (DatabaseUnavailableError("the database is down (failing fast)"), True),
        (_ours(_state("08006")), True),
        (_state("08001"), True),
        (_ours(_state("57P02")), True),  # crashed
        (_ours(_state("57P03")), True),  # starting up, shutting down
        (_ours(_state("57P04")), True),  # its database dropped (replayed)
        # a fast shutdown or one session terminated: a fresh connection decides
        (_ours(_state("57P01")), None),
        # the read's own, on a server that serves on
        (_ours(_state("57014")), False),  # statement_timeout, a cancel
        (_state("57014"), False),
        (_ours(_state("55000")), False),  # a WAL function on a standby
        (_state("55000"), False),
        (_ours(_state("53400")), False),  # temp_file_limit
        (_ours(_state("53200")), False),  # out of memory
        (_ours(_state("53100")), False),  # its disk full (temp files)
        (_ours(_state("57P05")), False),  # idle_session_timeout
        (_ours(_state("25P03")), False),  # idle_in_transaction_session_timeout
        (_ours(_state("25006")), False),  # a write refused: read-only
        (_ours(_state("40001")), False),  # a recovery conflict (told apart before)
        (_ours(_state("XX000")), False),
        (_state("42P01"), False),
        (psycopg.ProgrammingError("the query has 2 placeholders"), False),
        (DatabaseUnavailableError("all connections busy", busy=True), False),
        (InputError("bad filter"), False),
    ],
    ids=lambda v: type(v).__name__ + (f"-{v.sqlstate}" if getattr(v, "sqlstate", None) else ""),
)
def test_only_failures_of_the_server_make_a_replica_unusable(
    exc: BaseException, unusable: bool | None
) -> None:
    """Every ``DatabaseUnavailableError`` and raw ``OperationalError`` marked a replica
    down: a healthy standby's refusal of one read (a ``temp_file_limit``, out of memory, a
    session terminated or timed out) sent every read to the primary until the next probe.
    Only a server that does not answer, a failed connection and a crash or shutdown do."""
    assert routing.replica_unusable(exc) is unusable


def test_lsn_text_round_trips_and_orders() -> None:
    assert lsn.parse("0/3020B60") == 0x3020B60
    assert lsn.parse("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert lsn.format_lsn(lsn.parse("16/B374D848")) == "16/B374D848"
    assert lsn.parse("1/0") > lsn.parse("0/FFFFFFFF")
    with pytest.raises(InputError, match="RAGStore-LSN"):
        lsn.parse("yesterday")


def test_unreachable_replica_is_skipped(database_url: str) -> None:
    primary = Database(database_url)
    router = ReadRouter(
        primary, ["postgresql://postgres@127.0.0.1:1/ragstore"], max_lag_s=5, wait_s=0.1
    )
    try:
        t0 = time.monotonic()
        assert router.choose() is primary
        assert router.choose(min_lsn=lsn.parse("0/10")) is primary
        assert time.monotonic() - t0 < 5  # a down replica costs one short probe, not a wait
        [status] = router.statuses()
        assert status.up is False and status.lag_s is None and status.error
    finally:
        router.close()
        primary.close()


@contextmanager
def _blackhole() -> Iterator[tuple[int, list[socket.socket]]]:
    """A loopback TCP listener that accepts every connection and never says a word (a
    blackholed host, as a probe sees it); yields its port and the connections it took."""
    taken: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0), backlog=64) as listener:
        listener.settimeout(0.1)

        def accept() -> None:
            while listener.fileno() != -1:
                with suppress(OSError):
                    taken.append(listener.accept()[0])

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            yield listener.getsockname()[1], taken
        finally:
            for conn in taken:
                conn.close()
    thread.join(5)


def test_a_blackholed_replica_costs_reads_one_probe_timeout_in_all(database_url: str) -> None:
    """A replica that accepts connections and never answers was probed inline once a
    second, each probe waiting its full timeout: about every other read waited seconds for
    nothing. Only the first probe is on a request's path now; the replica is probed again in
    the background after a growing back-off, and reads meanwhile go to the primary at once."""
    primary = Database(database_url)
    with _blackhole() as (port, taken):
        router = ReadRouter(
            primary, [f"postgresql://postgres@127.0.0.1:{port}/ragstore"], max_lag_s=5, wait_s=0
        )
        try:
            t0 = time.monotonic()
            assert router.choose() is primary  # the one probe a request waits for
            first = time.monotonic() - t0
            assert first >= PROBE_SLOW_S, first  # it timed out (not refused)
            reads, waited, end = 0, 0.0, time.monotonic() + 2 * first + 0.5
            while time.monotonic() < end:
                t = time.monotonic()
                assert router.choose() is primary
                waited += time.monotonic() - t
                reads += 1
                time.sleep(0.02)
            # unfixed, a read a second past the first probe's end waited a whole timeout
            assert waited < first / 2, (reads, waited, first)
            assert len(taken) >= 2  # still probed (in the background), not given up on
            [status] = router.statuses()
            assert status.up is False and status.error
        finally:
            router.close()
            primary.close()


def test_a_probe_of_a_blackholed_host_waits_the_probe_timeout_no_less() -> None:
    """``PROBE_TIMEOUT_S`` said 1 s, and a probe of a host that never answers waited 2 s
    (psycopg, like libpq, takes a connect timeout under 2 s as 2 s): the back-off threshold
    and the shutdown's wait were reckoned from a timeout the probe never had. The constant is
    now what the probe waits."""
    with _blackhole() as (port, taken):
        t0 = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            routing._connect(f"postgresql://postgres@127.0.0.1:{port}/ragstore")
        waited = time.monotonic() - t0
    assert taken  # it connected, and was never answered
    assert PROBE_TIMEOUT_S - 0.1 <= waited < PROBE_TIMEOUT_S + 0.9, waited


def test_the_primary_listed_as_its_own_replica_twice_is_not_read_from(database_url: str) -> None:
    """``RAGSTORE_READ_DATABASE_URLS`` naming the primary itself (twice): not a standby, so
    never read from as one (its reads are the primary's anyway), and each entry says why."""
    primary = Database(database_url)
    router = ReadRouter(primary, [database_url, database_url], max_lag_s=5, wait_s=0.1)
    try:
        assert router.choose() is primary
        assert router.choose(min_lsn=lsn.parse("0/10")) is primary
        statuses = router.statuses()
        assert len(statuses) == 2
        for status in statuses:
            assert status.up is False and status.error is not None, status
            assert "not a hot standby" in status.error, status.error
    finally:
        router.close()
        primary.close()


def test_lag_dates_the_oldest_unreplayed_wal(database_url: str) -> None:
    router = ReadRouter(Database(database_url), [], max_lag_s=5, wait_s=0)
    now = time.monotonic()
    router._history.extend([(now - 9, 100), (now - 4, 200), (now - 1, 300)])
    behind = lsn.ReplayState(in_recovery=True, replay_lsn=150, replay_age_s=60.0)
    assert router._lag(behind, 300) == pytest.approx(4, abs=0.5)  # 200 appeared 4 s ago
    caught_up = lsn.ReplayState(in_recovery=True, replay_lsn=300, replay_age_s=60.0)
    assert router._lag(caught_up, 300) == 0.0  # an idle primary is not a lagging replica
    older = lsn.ReplayState(in_recovery=True, replay_lsn=50, replay_age_s=60.0)
    assert router._lag(older, 300) == pytest.approx(60)  # WAL older than what we watched
    in_transit = lsn.ReplayState(
        in_recovery=True, replay_lsn=250, replay_age_s=60.0, receive_lsn=250, streaming=True
    )
    # replayed all it received: what it lacks appeared 1 s ago (the last sample)
    assert router._lag(in_transit, 300) == pytest.approx(1, abs=0.5)
    stalled = lsn.ReplayState(
        in_recovery=True, replay_lsn=150, replay_age_s=60.0, receive_lsn=150, streaming=True
    )
    # streaming, all received replayed, yet 200 appeared 4 s ago: a slow or stalled link
    assert router._lag(stalled, 300) == pytest.approx(4, abs=0.5)
    fresh = ReadRouter(Database(database_url), [], max_lag_s=5, wait_s=0)
    fresh._history.append((now - 9, 300))
    assert fresh._lag(in_transit, 300) == 0.0  # no sample dates the gap: in transit
    cut_off = lsn.ReplayState(
        in_recovery=True, replay_lsn=150, replay_age_s=60.0, receive_lsn=150, streaming=False
    )
    assert router._lag(cut_off, 300) == pytest.approx(4, abs=0.5)  # its stream broke: behind
    # cut off before the first sample: none dates the gap, and only its broken stream tells
    # it from the in-transit one above (0.0 on the same history)
    assert fresh._lag(cut_off, 300) == pytest.approx(60)


# pg_current_wal_insert_lsn() (lsn.current's) shadowed for the database's new sessions: it
# fails while the count of its calls is at most lsnfault.failing.until, then answers the real
# position
_LSN_FAULT = """
    CREATE SCHEMA lsnfault;
    CREATE SEQUENCE lsnfault.calls;
    CREATE TABLE lsnfault.failing (until bigint NOT NULL);
    INSERT INTO lsnfault.failing VALUES (0);
    CREATE FUNCTION lsnfault.pg_current_wal_insert_lsn() RETURNS pg_lsn LANGUAGE plpgsql AS $$
    BEGIN
        IF nextval('lsnfault.calls') <= (SELECT until FROM lsnfault.failing) THEN
            RAISE EXCEPTION 'the WAL position cannot be read (a test fault)';
        END IF;
        RETURN pg_catalog.pg_current_wal_insert_lsn();
    END $$;
"""


@pytest.fixture()
def lsn_fault(pg_admin_uri: str, template_url: str) -> Iterator[str]:
    """A migrated database whose sessions read the WAL position through _LSN_FAULT."""
    url = create_database(pg_admin_uri, TEMPLATE)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_LSN_FAULT)
        name = conn.info.dbname
        conn.execute(
            sql.SQL(
                'ALTER DATABASE {} SET search_path = lsnfault, pg_catalog, "$user", public'
            ).format(sql.Identifier(name))
        )
    yield url


def _fail_next(url: str, calls: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT setval('lsnfault.calls', 1000)")
        conn.execute("UPDATE lsnfault.failing SET until = %s", (1000 + calls,))


def test_a_write_whose_position_cannot_be_read_says_so(lsn_fault: str, tmp_path: Path) -> None:
    """A write's ``RAGStore-LSN`` is read after its commit; where that read failed the
    answer went without the header, the client kept its earlier position, and its next
    read could be served by a replica without the write. The read is now tried again, and
    where it keeps failing the header says ``primary``: the client sends that back and is
    served by the primary until a later write answers a position."""
    settings = Settings(database_url=lsn_fault, data_dir=tmp_path, profile="test", auth="off")
    with running_server(settings) as url, Client(url) as c:
        c.create_collection("kb")
        first = c.last_lsn
        assert first is not None and lsn.parse(first) > 0
        _fail_next(lsn_fault, 1)  # one failed read: the next one gives the position
        c.add_document("kb", "a.md", "# A\n\nalpha text")
        assert c.last_lsn is not None and lsn.parse(c.last_lsn) > lsn.parse(first)
        _fail_next(lsn_fault, 100)  # every read fails
        r = c.request("POST", "/v1/collections/kb/documents", json={"name": "b.md", "text": "b"})
        assert r.status_code == 201 and r.headers["RAGStore-LSN"] == "primary"
        assert c.last_lsn == "primary"
        listing = c.list_documents("kb")  # sent back, it is a valid request
        assert sorted(d["name"] for d in listing["data"]) == ["a.md", "b.md"]
        _fail_next(lsn_fault, 0)
        c.add_document("kb", "c.md", "# C\n\ncharlie text")  # a position again
        assert c.last_lsn is not None and lsn.parse(c.last_lsn) > 0


def test_an_upload_error_after_stored_files_says_primary_where_its_position_is_unread(
    lsn_fault: str, tmp_path: Path
) -> None:
    """A two-file upload whose one file fails is answered that file's error, the other
    stored (``stored``). Its position is read with one short try; where that failed (the
    pool full, say) the answer went without ``RAGStore-LSN``, and the client's next read
    could be served by a replica without the stored file. It says ``primary`` now; an
    error that stored nothing still carries no position."""
    settings = Settings(database_url=lsn_fault, data_dir=tmp_path, profile="test", auth="off")
    with running_server(settings) as url, httpx.Client(base_url=url, timeout=60) as h:
        assert h.post("/v1/collections", json={"name": "kb"}).status_code == 201
        _fail_next(lsn_fault, 100)  # every read of the position fails
        upload = "/v1/collections/kb/documents/upload"
        good = ("files", ("glaze.md", b"# Glaze\n\nA glassy coat on pottery.", "text/markdown"))
        bad = ("files", ("x.xyz", b"", "application/octet-stream"))
        r = h.post(upload, files=[good, bad])
        assert r.status_code >= 400 and r.json()["stored"], r.text
        assert r.headers.get("RAGStore-LSN") == "primary", r.headers
        alone = h.post(upload, files=[("files", ("y.xyz", b"", "application/octet-stream"))])
        assert alone.status_code >= 400 and "stored" not in alone.json(), alone.text
        assert "RAGStore-LSN" not in alone.headers, alone.headers
        _fail_next(lsn_fault, 0)


def test_a_finished_job_whose_position_cannot_be_read_says_primary(
    lsn_fault: str, tmp_path: Path
) -> None:
    """A finished job's answer carries the WAL position past its writes. It was read once,
    on the job's own connection: where that failed, ``GET /v1/jobs/{id}`` (and the
    listing) answered 503 for a job that was read, and a client waiting for it never saw
    it end. It is read as a write's position is: again, else ``primary``."""
    settings = Settings(database_url=lsn_fault, data_dir=tmp_path, profile="test", auth="off")
    with running_server(settings) as url, Client(url) as c:
        c.create_collection("kb")
        job = c.upload("kb", [("j.md", b"# J\n\njob text")], background=True)
        run_worker(settings, burst=True, signals=False)
        _fail_next(lsn_fault, 100)  # every read fails
        r = c.request("GET", f"/v1/jobs/{job['id']}")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "succeeded" and r.headers["RAGStore-LSN"] == "primary"
        listing = c.request("GET", "/v1/jobs")
        assert listing.status_code == 200 and listing.headers["RAGStore-LSN"] == "primary"
        _fail_next(lsn_fault, 0)
        r = c.request("GET", f"/v1/jobs/{job['id']}")
        assert lsn.parse(r.headers["RAGStore-LSN"]) > 0


class _HeldAnswer(httpx.BaseTransport):
    """A real transport to the test server that hands the client the answer to the first
    request to ``path`` only once ``release`` is set (its bytes already read off the
    server's socket): the order two answers arrive in, fixed; nothing in them changed.
    ``headers`` records each request's ``RAGStore-LSN``."""

    def __init__(self, path: str) -> None:
        self.inner = httpx.HTTPTransport()
        self.path, self.held = path, False
        self.answered, self.release = threading.Event(), threading.Event()
        self.headers: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(request.headers.get("RAGStore-LSN"))
        response = self.inner.handle_request(request)
        if request.url.path == self.path and not self.held:
            self.held = True
            response.read()
            self.answered.set()
            assert self.release.wait(60), "the held answer was never released"
        return response

    def close(self) -> None:
        self.inner.close()


class _HeldAnswerAsync(httpx.AsyncBaseTransport):
    """:class:`_HeldAnswer` for the AsyncClient."""

    def __init__(self, path: str) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.path, self.held = path, False
        self.answered, self.release = asyncio.Event(), asyncio.Event()
        self.headers: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(request.headers.get("RAGStore-LSN"))
        response = await self.inner.handle_async_request(request)
        if request.url.path == self.path and not self.held:
            self.held = True
            await response.aread()
            self.answered.set()
            await asyncio.wait_for(self.release.wait(), 60)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_an_earlier_writes_position_does_not_replace_a_later_primary(
    lsn_fault: str, tmp_path: Path
) -> None:
    """Writes sent at once: B commits and its position P_B is read; A commits after it,
    its position cannot be read, and it answers ``primary``; A's answer reaches the client
    first, B's second. ``primary`` held no position, so B's replaced it, and the next read
    carried P_B: a replica at P_B, without A, could serve it. B's request was sent before
    ``primary`` arrived, so its position says nothing of A's write: ``primary`` is kept
    until a write sent after it answers. A real server answers both; the client's
    transport only holds B's answer back until A's has been noted (the order of arrival
    cannot be fixed otherwise)."""
    settings = Settings(database_url=lsn_fault, data_dir=tmp_path, profile="test", auth="off")
    documents = "/v1/collections/kb/documents"
    held = _HeldAnswer(documents)
    with running_server(settings) as url, Client(url, transport=held) as c:
        c.create_collection("kb")
        b_answer: list[str | None] = []

        def write_b() -> None:
            r = c.request("POST", documents, json={"name": "b.md", "text": "# B\n\nbeta"})
            b_answer.append(r.headers.get("RAGStore-LSN"))

        b = threading.Thread(target=write_b)
        b.start()
        assert held.answered.wait(60)  # B committed, its position read
        _fail_next(lsn_fault, 100)  # A's position cannot be read
        c.add_document("kb", "a.md", "# A\n\nalpha")
        assert c.last_lsn == "primary"
        held.release.set()  # B's answer arrives now
        b.join(60)
        assert b_answer and lsn.parse(b_answer[0] or "") > 0, b_answer  # B: a position
        assert c.last_lsn == "primary"
        names = sorted(d["name"] for d in c.list_documents("kb")["data"])
        assert names == ["a.md", "b.md"] and held.headers[-1] == "primary", held.headers
        _fail_next(lsn_fault, 0)
        c.add_document("kb", "c.md", "# C\n\ncharlie")  # sent after: its position replaces
        assert c.last_lsn is not None and lsn.parse(c.last_lsn) > lsn.parse(b_answer[0] or "")


def test_an_earlier_writes_position_does_not_replace_a_later_primary_async(
    lsn_fault: str, tmp_path: Path
) -> None:
    """:func:`test_an_earlier_writes_position_does_not_replace_a_later_primary` for the
    AsyncClient, the writes sent at once with ``asyncio.gather``."""
    settings = Settings(database_url=lsn_fault, data_dir=tmp_path, profile="test", auth="off")
    documents = "/v1/collections/kb/documents"

    async def scenario(url: str) -> tuple[str | None, str | None, str | None]:
        held = _HeldAnswerAsync(documents)
        async with AsyncClient(url, transport=held) as c:
            await c.create_collection("kb")

            async def write_a() -> str | None:
                await held.answered.wait()  # B committed, its position read
                await asyncio.to_thread(_fail_next, lsn_fault, 100)
                await c.add_document("kb", "a.md", "# A\n\nalpha")
                noted = c.last_lsn
                held.release.set()  # B's answer arrives now
                return noted

            async def write_b() -> str | None:
                body = {"name": "b.md", "text": "# B\n\nbeta"}
                r = await c.request("POST", documents, json=body)
                return r.headers.get("RAGStore-LSN")

            after_a, b_answer = await asyncio.gather(write_a(), write_b())
            await c.list_documents("kb")
            return after_a, b_answer, held.headers[-1]

    with running_server(settings) as url:
        after_a, b_answer, read_sent = asyncio.run(scenario(url))
    assert after_a == "primary" and lsn.parse(b_answer or "") > 0, (after_a, b_answer)
    assert read_sent == "primary"


def test_a_position_read_after_an_asynchronous_commit_is_past_it(database_url: str) -> None:
    """A write's position was ``pg_current_wal_lsn()``, how far WAL is written out. With
    ``synchronous_commit = off`` (a server's or role's setting) a commit returns before
    its record is written, so the position answered was before the commit: a replica
    that had replayed that far, without the write, served the writer's next read."""
    url = database_url
    with psycopg.connect(url, autocommit=True) as writer, psycopg.connect(url) as other:
        writer.execute("SET synchronous_commit = off")
        writer.execute("CREATE TEMP TABLE async_commits (x int)")
        for _ in range(20):
            writer.execute("INSERT INTO async_commits VALUES (1)")
            row = writer.execute(
                "SELECT pg_current_wal_insert_lsn()::text,"
                " current_setting('wal_block_size')::int,"
                " pg_size_bytes(current_setting('wal_segment_size'))"
            ).fetchone()
            assert row is not None
            # at or past the insert's commit record, as the record's end: an insert position
            # just past a page's header is the same place as the page's start, the form
            # current() answers (comparing the raw position failed when a commit filled
            # its page exactly)
            committed = lsn.record_end(
                lsn.parse(str(row[0])), block_size=int(row[1]), segment_size=int(row[2])
            )
            assert lsn.current(other) >= committed
            other.rollback()


@pytest.mark.parametrize(
    ("insert", "end"),
    [
        ("0/3020B60", "0/3020B60"),  # inside a page: as it is
        ("0/3022018", "0/3022000"),  # just past a page's header: the page's start
        ("1/1000028", "1/1000000"),  # just past a segment's (long) header: its start
        ("0/3022020", "0/3022020"),  # a record of its own on the page
    ],
)
def test_an_insert_position_past_a_page_header_is_the_page_start(insert: str, end: str) -> None:
    """The insert position after a record that filled its page points past the next
    page's header, where a standby's replay position (the record's end) is the page's
    start: the write's reads would wait for more WAL than the write made."""
    value = lsn.record_end(lsn.parse(insert), block_size=8192, segment_size=16 * 1024 * 1024)
    assert lsn.format_lsn(value) == end


def test_replica_connections_get_keepalives_unless_their_url_sets_them() -> None:
    """The TCP settings that end a silent replica's connection in seconds (see
    test_standby's silent read) are defaults: what the URL says itself is kept."""
    params = conninfo_to_dict(with_keepalives("postgresql://u@db.example:5433/rag"))
    assert {k: int(params[k]) for k in REPLICA_TCP} == REPLICA_TCP
    assert (params["host"], params["port"], params["dbname"]) == ("db.example", "5433", "rag")
    mine = conninfo_to_dict(
        with_keepalives("postgresql://u@db.example/rag?keepalives_idle=30&tcp_user_timeout=0")
    )
    assert mine["keepalives_idle"] == "30" and mine["tcp_user_timeout"] == "0"
    assert mine["keepalives_count"] == str(REPLICA_TCP["keepalives_count"])


def _open_probe_conns(router: ReadRouter) -> list[psycopg.Connection[object]]:
    conns = [router._primary_conn, *(r.probe_conn for r in router._replicas)]
    return [c for c in conns if c is not None and not c.closed]


def test_closing_the_router_mid_probe_of_several_blackholed_replicas_leaves_nothing_open(
    database_url: str,
) -> None:
    """A request's probe holds the probe lock across every stale replica, a probe timeout
    for each that does not answer; ``close()`` waited for it a bounded while (two probes'
    length) and closed beside it: the probe went on after the close, connected the
    replica after the blackholed ones and left that connection open. The probe stops at
    the next replica now, so the close waits for one replica's probe, not the list."""
    primary = Database(database_url)
    with _blackhole() as (port, taken):
        down = [f"postgresql://postgres@127.0.0.1:{port}/r{i}" for i in range(6)]
        # the last one answers (the primary, not a standby): its probe connects
        router = ReadRouter(primary, [*down, database_url], max_lag_s=5, wait_s=0)
        reader = threading.Thread(target=router.choose, daemon=True)
        try:
            reader.start()
            deadline = time.monotonic() + 5
            while not taken and time.monotonic() < deadline:
                time.sleep(0.01)
            assert taken  # the probe of the first blackholed replica is under way
            t0 = time.monotonic()
            router.close()
            closing = time.monotonic() - t0
            reader.join(len(down) * PROBE_TIMEOUT_S + 5)
            assert not reader.is_alive()
            assert _open_probe_conns(router) == []
            assert closing < PROBE_TIMEOUT_S + 1, closing  # one replica's probe, not six
        finally:
            router.close()
            primary.close()


def test_a_probe_that_connects_after_close_gave_up_waiting_closes_what_it_opened(
    database_url: str,
) -> None:
    """A multi-host replica URL whose first hosts never answer costs one probe a probe
    timeout per host: longer than ``close()`` waits for it. The probe connected the last
    host after the close and kept the connection; it closes it as it ends now."""
    primary = Database(database_url)
    with _blackhole() as (port, taken):
        dead = 6  # 12 s of connecting: past the close's wait (PROBE_TIMEOUT_S + query, twice)
        router = ReadRouter(primary, [_multi_host(database_url, port, dead)], max_lag_s=5, wait_s=0)
        reader = threading.Thread(target=router.choose, daemon=True)
        try:
            reader.start()
            deadline = time.monotonic() + 5
            while not taken and time.monotonic() < deadline:
                time.sleep(0.01)
            assert taken  # the probe is connecting through the blackholed hosts
            router.close()
            reader.join(dead * PROBE_TIMEOUT_S + 5)
            assert not reader.is_alive()
            assert _open_probe_conns(router) == []
        finally:
            router.close()
            primary.close()


def _multi_host(database_url: str, port: int, dead: int) -> str:
    """``database_url`` reached through ``dead`` blackholed hosts first: a probe timeout
    apiece before libpq (psycopg) tries the one that answers."""
    params = conninfo_to_dict(database_url)
    return make_conninfo(
        database_url,
        host=",".join(["127.0.0.1"] * dead + [str(params.get("host") or "")]),
        port=",".join([str(port)] * dead + [str(params.get("port") or 5432)]),
    )


def _hung_up(conn: socket.socket, within: float) -> bool:
    """Whether the client at the other end of a blackhole's connection closed it (what it
    sent first, a startup or SSL request, read and ignored)."""
    conn.settimeout(within)
    try:
        while conn.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:
        return True  # reset: closed as well
    return True


def _probe_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ragstore-replica-probe"]


def test_closing_the_router_mid_connect_of_a_multi_host_replica_is_prompt(
    database_url: str,
) -> None:
    """A request's probe connecting a multi-host URL whose first hosts never answer (a
    probe timeout each): ``close()`` waited up to 10 s for it (a hung shutdown of serve, the
    worker, the client), then returned with the probe still connecting. The connect gives
    up as soon as the router is closed now: close returns at once, nothing left open."""
    primary = Database(database_url)
    with _blackhole() as (port, taken):
        router = ReadRouter(primary, [_multi_host(database_url, port, 6)], max_lag_s=5, wait_s=0)
        reader = threading.Thread(target=router.choose, daemon=True)
        try:
            reader.start()
            deadline = time.monotonic() + 5
            while not taken and time.monotonic() < deadline:
                time.sleep(0.01)
            assert taken  # the probe is connecting through the blackholed hosts
            t0 = time.monotonic()
            router.close()
            closing = time.monotonic() - t0
            assert closing < 3, closing  # unfixed: 10 s (the close's wait ran out)
            reader.join(1)
            assert not reader.is_alive()  # the probe ended with the close, not after it
            assert _open_probe_conns(router) == []
            assert len(taken) < 6  # it gave up the hosts it had not tried yet
            assert all(_hung_up(conn, 1) for conn in taken)  # and closed the one it was on
        finally:
            router.close()
            primary.close()


def test_closing_the_router_mid_background_probe_ends_the_probe_thread(
    database_url: str,
) -> None:
    """A blackholed replica is probed again in a thread of its own (its back-off); that
    probe connects without the probe lock, so ``close()`` returned at once and left the
    thread connecting (a probe timeout per host) to set statuses and close the replica's
    pool after the close. The thread ends with the close now, its connection closed."""
    primary = Database(database_url)
    with _blackhole() as (port, taken):
        url = _multi_host(database_url, port, 3)
        router = ReadRouter(primary, [url], max_lag_s=5, wait_s=0, probe_interval_s=0.01)
        try:
            router._replicas[0].slow_failures = 1  # as after a first probe that timed out
            router.choose()  # starts the background probe, and is not held by it
            deadline = time.monotonic() + 5
            while not taken and time.monotonic() < deadline:
                time.sleep(0.01)
            assert taken and _probe_threads()  # the background probe is connecting
            t0 = time.monotonic()
            router.close()
            closing = time.monotonic() - t0
            assert closing < 3, closing
            assert _probe_threads() == []  # unfixed: still connecting after the close
            assert _open_probe_conns(router) == []
            assert all(_hung_up(conn, 1) for conn in taken)
        finally:
            router.close()
            primary.close()


def test_closing_the_router_mid_query_of_a_probe_cuts_the_query(database_url: str) -> None:
    """A probe whose query waits on a server that stopped answering holds the probe lock
    until its deadline (PROBE_QUERY_TIMEOUT_S): ``close()`` waited that long for it. Closing
    shuts the query's socket down now, and the probe ends with the close."""
    primary = Database(database_url)
    # the primary as its own replica: probed (not a standby), its probe connection kept
    router = ReadRouter(primary, [database_url], max_lag_s=5, wait_s=0, probe_interval_s=0.05)
    pid = None
    try:
        router.choose()
        probe = router._replicas[0].probe_conn
        assert probe is not None
        pid = probe.info.backend_pid
        os.kill(pid, signal.SIGSTOP)  # this backend no longer answers; the server runs on
        time.sleep(0.1)  # its status is stale: the next read probes it again
        reader = threading.Thread(target=router.choose, daemon=True)
        reader.start()
        time.sleep(0.5)
        assert reader.is_alive()  # its probe's query is waiting
        t0 = time.monotonic()
        router.close()
        closing = time.monotonic() - t0
        assert closing < 1.5, closing  # unfixed: until the query's deadline, 3 s after it began
        reader.join(1)
        assert not reader.is_alive()
        assert _open_probe_conns(router) == []
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        router.close()
        primary.close()


@pytest.mark.parametrize(
    ("exc", "fault"),
    [
        (_ours(_state("58P01")), True),  # could not access file (a library not copied)
        (_state("58030"), True),  # an I/O error
        (_ours(_state("XX001")), True),  # corrupted data
        (_ours(_state("XX000")), True),
        (_ours(_state("57014")), False),  # a cancel: the read's
        (_ours(_state("40001")), False),  # a recovery conflict: told apart
        (_ours(_state("08006")), False),  # no answer: replica_unusable's
        (psycopg.OperationalError("server closed the connection unexpectedly"), False),
        (InputError("bad filter"), False),
    ],
    ids=lambda v: type(v).__name__ + (f"-{v.sqlstate}" if getattr(v, "sqlstate", None) else ""),
)
def test_a_failure_the_server_reports_of_itself_is_the_replicas(
    exc: BaseException, fault: bool
) -> None:
    """Classes 58 (system error) and XX (internal error) are the replica's fault: the read
    is run on the primary and the replica backed off (they were the read's own: a 500)."""
    assert (routing.server_fault(exc) is not None) is fault
