"""Searches served by a real streaming hot standby: routed reads, a read-only server,
read-your-writes, lag and a standby that goes away under load."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ragstore import Client
from ragstore.api.app import create_app
from ragstore.db import embedded, errors, lsn, migrations, native, routing, standby
from ragstore.db.database import Database, describe
from ragstore.db.routing import ReadRouter, Route, routed
from ragstore.errors import (
    DatabaseUnavailableError,
    RagstoreError,
    ReadOnlyError,
    ReplicaBehindError,
)
from ragstore.jobs.worker import run_worker
from ragstore.observability import metrics
from ragstore.search import service
from tests.api.conftest import running_server
from tests.conftest import TEMPLATE, create_database, run_cli
from tests.replica.conftest import Pair

TEXTS = {
    "tides.md": "# Tides\n\nThe moon's gravity raises two bulges of ocean water, the tides.",
    "bread.md": "# Bread\n\nYeast ferments the dough; carbon dioxide makes the loaf rise.",
    "rust.md": "# Rust\n\nIron oxidises in damp air and the metal flakes away as rust.",
}


def _served_by(response: httpx.Response) -> str:
    return response.headers.get("RAGStore-Read-From", "")


@pytest.fixture(scope="module")
def kb(pair: Pair) -> str:
    """Collection ``kb`` with TEXTS, ingested on the primary and replayed by the standby."""
    with running_server(pair.settings()) as url, Client(url) as c:
        c.create_collection("kb")
        for name, text in TEXTS.items():
            doc = c.add_document("kb", name, text)
            assert doc["chunks"] >= 1
        assert c.last_lsn is not None  # writes answer with their WAL position
    pair.wait_caught_up()
    return "kb"


class Spare:
    """An extra standby of the pair's primary, handed from test to test while each leaves it
    a standby of the primary: making one (``pg_basebackup`` of the session's whole server,
    every test's database with it) took tens of seconds each on a loaded machine."""

    def __init__(self, pair: Pair, root: Path) -> None:
        self.pair = pair
        self.root = root
        self.node: standby.Standby | None = None
        self.made = 0

    @contextmanager
    def take(self, *, keep: bool = True) -> Iterator[standby.Standby]:
        """The spare (made when there is none); its ``primary_conninfo`` is put back after
        (``keep``), or it is removed (``keep=False``: a test that promotes it, or one that
        failed and may have left it in any state)."""
        if self.node is None:
            self.made += 1
            self.node = standby.create(self.pair.primary_url, self.root / f"spare-{self.made}")
        node = self.node
        with psycopg.connect(node.conninfo, autocommit=True) as conn:
            original = str(conn.execute("SHOW primary_conninfo").fetchone()[0])  # type: ignore[index]
        kept = False
        try:
            yield node
            kept = keep
        finally:
            if kept:
                try:
                    with psycopg.connect(node.conninfo, autocommit=True) as conn:
                        conn.execute(
                            sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(
                                sql.Literal(original)
                            )
                        )
                        conn.execute("SELECT pg_reload_conf()")
                except psycopg.Error:
                    kept = False
            if not kept:
                self.node = None
                node.remove()


@pytest.fixture(scope="module")
def spare(pair: Pair) -> Iterator[Spare]:
    # not under pytest's basetemp, as the pair's (tests/replica/conftest.py)
    root = Path(tempfile.mkdtemp(prefix="ragstore-spare-"))
    spares = Spare(pair, root)
    try:
        yield spares
    finally:
        if spares.node is not None:
            spares.node.remove()
        shutil.rmtree(root, ignore_errors=True)


def test_ingest_on_primary_search_on_standby(pair: Pair, kb: str) -> None:
    with running_server(pair.settings()) as url, Client(url) as c:
        r = c.request(
            "POST", "/v1/collections/kb/search", json={"query": "why does bread rise", "k": 2}
        )
        assert _served_by(r) == "replica"
        assert r.json()["data"][0]["title"] == "Bread"
        listing = c.request("GET", "/v1/collections/kb/documents")
        assert _served_by(listing) == "replica"
        assert listing.json()["count"] == 3
        ready = c.ready()
        assert ready["checks"]["role"] == "primary"
        assert ready["replicas"][0]["up"] is True
        metrics = c.request("GET", "/metrics").text
        assert "ragstore_db_replica_up{" in metrics
        assert 'ragstore_db_reads_total{target="replica"}' in metrics


def test_a_hybrid_search_read_in_one_snapshot_runs_on_the_standby(
    pair: Pair, kb: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the last resort of a hybrid search whose lists saw a document at two writes reads
    # both in one REPEATABLE READ READ ONLY transaction: allowed on a hot standby, and on
    # the one server the request was routed to (search/service.py _hybrid_lists)
    body = {"query": "why does bread rise", "k": 3, "mode": "hybrid", "explain": True}
    with running_server(pair.settings()) as url, Client(url) as c:
        normal = c.request("POST", "/v1/collections/kb/search", json=body)
        assert _served_by(normal) == "replica"
        monkeypatch.setattr(service, "_mixed_writes", lambda *lists: True)
        snapshot = c.request("POST", "/v1/collections/kb/search", json=body)
        assert _served_by(snapshot) == "replica"
        assert snapshot.json()["data"] == normal.json()["data"]


def test_read_only_server_answers_searches_and_refuses_writes(pair: Pair, kb: str) -> None:
    pair.wait_caught_up()
    with running_server(pair.read_only_settings()) as url, Client(url) as c:
        hits = c.search("kb", "ocean tides and the moon", k=1)
        assert hits["data"][0]["title"] == "Tides"
        assert c.ready()["checks"]["role"] == "replica (read-only)"
        with pytest.raises(ReadOnlyError) as refused:
            c.add_document("kb", "new.md", "# New\n\nnever stored")
        assert refused.value.status == 403  # type: ignore[attr-defined]
        with pytest.raises(ReadOnlyError):
            c.create_collection("other")
        bad = httpx.post(
            f"{url}/v1/collections/kb/search",
            json={"query": "x"},
            headers={"RAGStore-LSN": "not-a-position"},
        )
        assert bad.status_code == 422 and bad.json()["code"] == "invalid_input"
        r = httpx.delete(f"{url}/v1/collections/kb")
        assert r.status_code == 403
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == "read_only"


def test_a_read_only_server_with_keys_checks_the_key_before_routing(pair: Pair, kb: str) -> None:
    """The read routing ran before the key check of a request without a body: an anonymous
    read with a position ahead of the standby held a worker thread for
    RAGSTORE_REPLICA_WAIT_S and was answered 503 ``replica_behind``, and an anonymous
    DELETE learnt that the server was read-only. Both are 401 now, at once; a key holder's
    requests are routed as before."""
    from ragstore.auth import KeyStore

    db = Database(pair.primary_url)
    try:
        reader = KeyStore(db).create("read", name="ro-reader").secret
    finally:
        db.close()
    pair.wait_caught_up()
    ahead = {"RAGStore-LSN": lsn.format_lsn(2**62)}
    with running_server(pair.read_only_settings(auth="on", replica_wait_s=0.3)) as url:
        for method, path, headers in (
            ("GET", "/v1/collections/kb", ahead),
            ("HEAD", "/v1/collections/kb", ahead),
            ("GET", "/v1/jobs", ahead),
            ("DELETE", "/v1/collections/kb", {}),
            ("DELETE", "/v1/collections/kb/documents/tides.md", {}),
        ):
            r = httpx.request(method, f"{url}{path}", headers=headers)
            assert r.status_code == 401, (method, path, r.status_code, r.text[:200])
            if method != "HEAD":
                assert r.json()["code"] == "unauthorized", r.text[:200]
        keyed = {"Authorization": f"Bearer {reader}"}
        behind = httpx.get(f"{url}/v1/collections/kb", headers={**ahead, **keyed})
        assert behind.status_code == 503 and behind.json()["code"] == "replica_behind"
        r = httpx.get(f"{url}/v1/collections/kb", headers=keyed)
        assert r.status_code == 200 and r.json()["name"] == "kb"


def test_read_your_writes_waits_for_replay_or_uses_the_primary(pair: Pair, kb: str) -> None:
    with (
        running_server(pair.settings(replica_wait_s=0.3)) as url,
        running_server(pair.read_only_settings(replica_wait_s=0.3)) as ro_url,
        Client(url) as c,
        Client(ro_url) as ro,
        Client(ro_url, retries=0) as ro_once,  # a refusal at once, not after retries
    ):
        # replay running: the write is visible at once, and the read may well be the replica's
        c.add_document("kb", "glass.md", "# Glass\n\nSand melted with soda ash becomes glass.")
        r = c.request("POST", "/v1/collections/kb/search", json={"query": "how glass is made"})
        assert r.json()["data"][0]["title"] == "Glass"
        pair.pause_replay(True)
        try:
            c.add_document("kb", "comet.md", "# Comets\n\nA comet's icy nucleus grows a tail.")
            r = c.request(
                "POST",
                "/v1/collections/kb/search",
                json={"query": "icy comet nucleus tail", "k": 1},
            )
            assert r.json()["data"][0]["title"] == "Comets"  # the caller sees its write ...
            assert _served_by(r) == "primary"  # ... from the primary: the standby is paused
            blind = c.request(
                "POST",
                "/v1/collections/kb/search",
                json={"query": "icy comet nucleus tail", "k": 1},
                headers={"RAGStore-LSN": "0/0"},
            )
            assert _served_by(blind) == "replica"  # without the position: the standby
            assert blind.json()["data"][0]["title"] != "Comets"
            ro.last_lsn = ro_once.last_lsn = c.last_lsn  # the search-only fleet: 503
            with pytest.raises(ReplicaBehindError) as behind:
                ro_once.search("kb", "comet")
            assert behind.value.status == 503  # type: ignore[attr-defined]
        finally:
            pair.pause_replay(False)
        hits = ro.search("kb", "icy comet nucleus tail", k=1)  # replayed now
        assert hits["data"][0]["title"] == "Comets"


def test_a_finished_job_carries_its_writes_position(pair: Pair, kb: str) -> None:
    """A background upload's 202 carries the position before the job wrote anything; a
    client that waited for the job to succeed then read the collection from a replica that
    had replayed the 202 but not the job, and did not find the documents the job stored."""
    with running_server(pair.settings(replica_wait_s=0.3)) as url, Client(url) as c:
        job = c.upload("kb", [("later.md", b"# Later\n\nstored by a worker")], background=True)
        pair.wait_caught_up()
        pair.pause_replay(True)
        try:
            run_worker(pair.settings(), burst=True, signals=False)
            assert c.wait_for_job(job["id"], timeout=5)["status"] == "succeeded"
            listing = c.request("GET", "/v1/collections/kb/documents")
            assert "later.md" in [d["name"] for d in listing.json()["data"]]
            assert _served_by(listing) == "primary"  # the standby has not replayed the job
        finally:
            pair.pause_replay(False)


def test_a_read_only_server_shows_a_job_once_it_has_replayed_it(pair: Pair, kb: str) -> None:
    """A job accepted by the primary and polled on a read-only server with the 202's
    position: job reads skipped the wait every other read does, so the standby answered
    404 job_not_found, the job as good as lost, until it had replayed the row. The read
    now waits for the position as any read does (503 replica_behind past the wait), and a
    ``primary`` position is refused as for other reads."""
    with (
        running_server(pair.settings()) as url,
        running_server(pair.read_only_settings(replica_wait_s=0.3)) as ro_url,
        Client(url) as c,
        Client(ro_url) as ro,
        Client(ro_url, retries=0) as ro_once,  # a refusal at once, not after retries
    ):
        pair.wait_caught_up()
        pair.pause_replay(True)
        try:
            job = c.upload("kb", [("polled.md", b"# Polled\n\npolled text")], background=True)
            ro_once.last_lsn = c.last_lsn
            with pytest.raises(ReplicaBehindError):
                ro_once.get_job(job["id"])
            ro_once.last_lsn = "primary"
            with pytest.raises(ReplicaBehindError):
                ro_once.list_jobs()
        finally:
            pair.pause_replay(False)
        ro.last_lsn = c.last_lsn
        assert ro.get_job(job["id"])["status"] == "queued"  # replayed now
        run_worker(pair.settings(), burst=True, signals=False)


def test_lagging_replica_is_skipped_until_it_catches_up(pair: Pair, kb: str) -> None:
    settings = pair.settings(max_replica_lag_s=0.3)
    with running_server(settings) as url, Client(url, read_your_writes=False) as c:
        pair.pause_replay(True)
        try:
            c.add_document("kb", "lag.md", "# Lag\n\nWritten while the standby is paused.")
            time.sleep(1.5)  # the probe sees the unreplayed WAL age past the limit
            c.add_document("kb", "lag2.md", "# Lag two\n\nStill paused.")
            r = c.request("POST", "/v1/collections/kb/search", json={"query": "paused"})
            assert _served_by(r) == "primary"
            replica = c.ready()["replicas"][0]
            assert replica["up"] is False and replica["lag_s"] > 0.3
            assert "RAGSTORE_MAX_REPLICA_LAG_S" in replica["error"]
            assert "ragstore_db_replica_up{" in c.request("GET", "/metrics").text
        finally:
            pair.pause_replay(False)
        pair.wait_caught_up()
        time.sleep(1.1)  # next probe
        r = c.request("POST", "/v1/collections/kb/search", json={"query": "paused"})
        assert _served_by(r) == "replica"


def test_standby_stopped_mid_load_searches_fall_back(pair: Pair, kb: str) -> None:
    pair.wait_caught_up()
    statuses: list[int] = []
    served: list[str] = []
    stop = threading.Event()

    def load(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                r = http.post(
                    "/v1/collections/kb/search", json={"query": "tides of the ocean", "k": 3}
                )
                statuses.append(r.status_code)
                served.append(_served_by(r))

    with running_server(pair.settings(connect_timeout_s=2.0)) as url:
        workers = [threading.Thread(target=load, args=(url,)) for _ in range(4)]
        for w in workers:
            w.start()
        try:
            time.sleep(1.0)
            pair.standby.stop("fast")
            time.sleep(2.0)
        finally:
            stop.set()
            for w in workers:
                w.join(timeout=60)
            pair.standby.start()
        with Client(url) as c:
            replica = c.ready()["replicas"][0]
    assert statuses and set(statuses) == {200}, sorted(set(statuses))
    assert "replica" in served and "primary" in served
    assert served[-1] == "primary"
    assert replica["up"] in (True, False)  # restarted meanwhile: either is fine here


def test_a_standby_cut_off_from_the_primary_counts_as_lagging(pair: Pair, spare: Spare) -> None:
    """A standby whose WAL stream broke (the primary unreachable from it, a bad
    primary_conninfo) has replayed all it received, which the router took for "in transit,
    not behind": it stayed up with lag 0 while the primary's writes never reached it.

    Two routers, for the router's two checks: one that saw it caught up dates its lag by
    the primary's positions (from the first write it lacks, not from when it was cut off);
    one started after it fell behind has no such sample, and only the stopped WAL receiver
    tells it from a standby whose WAL is in transit. Either passed with the other gone."""
    primary = Database(pair.primary_url)
    with spare.take() as node:
        router = ReadRouter(primary, [node.conninfo], max_lag_s=0.5, wait_s=0.1)
        late: ReadRouter | None = None
        try:
            # caught up with the router's last sample of the primary before it is cut off
            # (no probe runs until the write: WAL the primary logs meanwhile is not sampled)
            deadline = time.monotonic() + 10
            while True:
                [status] = router.statuses()
                replayed, sampled = status.replay_lsn, router._history[-1][1]
                if status.up and replayed is not None and replayed >= sampled:
                    break
                assert time.monotonic() < deadline, (status, sampled)
                time.sleep(0.2)
            with psycopg.connect(node.conninfo, autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET primary_conninfo = 'host=/nonexistent port=1'")
                conn.execute("SELECT pg_reload_conf()")
                deadline = time.monotonic() + 30
                while conn.execute("SELECT pid FROM pg_stat_wal_receiver").fetchone():
                    assert time.monotonic() < deadline, "the WAL receiver did not stop"
                    time.sleep(0.1)
            time.sleep(1.5)  # cut off well before the write it lacks: not part of its lag
            written = time.monotonic()
            with psycopg.connect(pair.primary_url, autocommit=True) as conn:
                conn.execute("CREATE TABLE cut_off_probe (x int)")
                conn.execute("DROP TABLE cut_off_probe")
            deadline = time.monotonic() + 10
            while router.statuses()[0].up:
                assert time.monotonic() < deadline, router.statuses()
                time.sleep(0.2)
            [status] = router.statuses()
            assert status.error is not None and "RAGSTORE_MAX_REPLICA_LAG_S" in status.error
            # dated by the primary's samples: at most the time since the write (the age of
            # its last replayed commit, or of the router's first sample, is 1.5 s more)
            assert status.lag_s is not None and status.lag_s <= time.monotonic() - written, (
                status,
                time.monotonic() - written,
            )
            assert router.choose() is primary

            late = ReadRouter(primary, [node.conninfo], max_lag_s=0.5, wait_s=0.1)
            deadline = time.monotonic() + 10
            while late.statuses()[0].up:
                assert time.monotonic() < deadline, late.statuses()
                time.sleep(0.2)
            [status] = late.statuses()
            assert status.error is not None and "RAGSTORE_MAX_REPLICA_LAG_S" in status.error
            assert late.choose() is primary
        finally:
            if late is not None:
                late.close()
            router.close()
            primary.close()


@contextmanager
def _silenceable(url: str) -> Iterator[tuple[str, Callable[[], None]]]:
    """A URL of the server behind ``url`` through a Unix-socket relay, and what silences
    it: every relayed connection cut, new ones refused (the server itself runs on)."""
    parts = conninfo_to_dict(url)
    port = parts.get("port", "5432")
    target = f"{parts['host']}/.s.PGSQL.{port}"
    folder = Path(tempfile.mkdtemp(prefix="rss-", dir="/tmp"))
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(folder / f".s.PGSQL.{port}"))
    listener.listen()
    relayed: list[socket.socket] = []

    def pump(a: socket.socket, b: socket.socket) -> None:
        with suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)

    def serve() -> None:
        with suppress(OSError):
            while True:
                c, _ = listener.accept()
                u = socket.socket(socket.AF_UNIX)
                u.connect(target)
                relayed.extend((c, u))
                threading.Thread(target=pump, args=(c, u), daemon=True).start()
                threading.Thread(target=pump, args=(u, c), daemon=True).start()

    def silence() -> None:
        for sock in (listener, *relayed):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield make_conninfo(url, host=str(folder)), silence
    finally:
        silence()
        for sock in relayed:
            sock.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_a_caught_up_standby_of_a_primary_gone_silent_has_an_unknown_lag(
    pair: Pair, spare: Spare
) -> None:
    """When the primary stopped answering (and the standby's stream with it), a standby
    that had replayed every position sampled was dated by the router's oldest sample or
    its last replayed commit: "48.3s behind, over RAGSTORE_MAX_REPLICA_LAG_S" a second
    after, in /readyz and the lag gauge. Its lag is unknown (-1 in the gauge), and says
    why; it is still not read from (no primary position to check it against)."""
    with spare.take() as node, _silenceable(pair.primary_url) as (via, silence):
        primary = Database(via)
        router = ReadRouter(primary, [node.conninfo], max_lag_s=0.5, wait_s=0.1)
        try:
            deadline = time.monotonic() + 10
            while True:  # caught up with the last sample of the primary
                [status] = router.statuses()
                replayed, sampled = status.replay_lsn, router._history[-1][1]
                if status.up and replayed is not None and replayed >= sampled:
                    break
                assert time.monotonic() < deadline, (status, sampled)
                time.sleep(0.2)
            # no probe from here until both are gone: no sample dates a gap
            with psycopg.connect(node.conninfo, autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET primary_conninfo = 'host=/nonexistent port=1'")
                conn.execute("SELECT pg_reload_conf()")
                deadline = time.monotonic() + 30
                while conn.execute("SELECT pid FROM pg_stat_wal_receiver").fetchone():
                    assert time.monotonic() < deadline, "the WAL receiver did not stop"
                    time.sleep(0.1)
            silence()
            deadline = time.monotonic() + 10
            while router.statuses()[0].up:  # until a probe (at most a second apart)
                assert time.monotonic() < deadline, router.statuses()
                time.sleep(0.2)
            [status] = router.statuses()
            assert status.lag_s is None, status
            assert status.error is not None and "primary does not answer" in status.error
            assert metrics.REPLICA_LAG.labels(status.name)._value.get() == -1
            assert router.choose() is primary
        finally:
            router.close()
            primary.close()


def test_a_standby_whose_stream_stalls_counts_as_lagging(pair: Pair, spare: Spare) -> None:
    """A standby whose WAL stream stalls while its receiver stays connected (a slow or
    congested link) has replayed all it received, which the router took for "in
    transit, not behind": it was read from at lag 0 while the primary's writes did not
    arrive. Its lag is now dated by the primary's positions, as any other's."""
    with spare.take() as node:
        proxy_dir = Path(tempfile.mkdtemp(prefix="rsp-", dir="/tmp"))
        primary_parts = conninfo_to_dict(pair.primary_url)
        port = primary_parts.get("port", "5432")
        target = f"{primary_parts['host']}/.s.PGSQL.{port}"
        flowing = threading.Event()
        flowing.set()
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(proxy_dir / f".s.PGSQL.{port}"))
        # the servers may run as another user than the tests (never root): theirs
        owner = os.stat(primary_parts["host"])
        for path in (proxy_dir, proxy_dir / f".s.PGSQL.{port}"):
            with suppress(PermissionError):  # not root: the servers run as the tests' user
                os.chown(path, owner.st_uid, owner.st_gid)
        listener.listen()

        def pump(a: socket.socket, b: socket.socket, gated: bool) -> None:
            with suppress(OSError):
                while data := a.recv(65536):
                    while gated and not flowing.wait(0.1):
                        pass
                    b.sendall(data)

        def serve() -> None:
            with suppress(OSError):
                while True:
                    c, _ = listener.accept()
                    u = socket.socket(socket.AF_UNIX)
                    try:
                        u.connect(target)
                    except OSError:
                        c.close()
                        continue
                    threading.Thread(target=pump, args=(c, u, False), daemon=True).start()
                    threading.Thread(target=pump, args=(u, c, True), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()
        primary = Database(pair.primary_url)
        router = ReadRouter(primary, [node.conninfo], max_lag_s=1, wait_s=0.1, probe_interval_s=0.2)
        try:
            with psycopg.connect(node.conninfo, autocommit=True) as conn:
                via = make_conninfo(
                    str(conn.execute("SHOW primary_conninfo").fetchone()[0]),  # type: ignore[index]
                    host=str(proxy_dir),
                )
                conn.execute(sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(via))
                conn.execute("SELECT pg_reload_conf()")
                deadline = time.monotonic() + 30
                while (
                    conn.execute(
                        "SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming'"
                        " AND sender_host = %s",
                        (str(proxy_dir),),
                    ).fetchone()
                    is None
                ):
                    assert time.monotonic() < deadline, (
                        "the standby did not stream via the proxy",
                        conn.execute(
                            "SELECT status, sender_host FROM pg_stat_wal_receiver"
                        ).fetchall(),
                    )
                    time.sleep(0.1)
            deadline = time.monotonic() + 10
            while router.choose() is primary:  # caught up while the stream flows
                assert time.monotonic() < deadline, router.statuses()
                time.sleep(0.1)
            flowing.clear()  # the link stalls; the receiver stays connected
            with psycopg.connect(pair.primary_url, autocommit=True) as conn:
                conn.execute("CREATE TABLE stalled_probe (x int)")
                conn.execute("DROP TABLE stalled_probe")
            deadline = time.monotonic() + 10
            while router.statuses()[0].up:
                assert time.monotonic() < deadline, router.statuses()
                time.sleep(0.2)
            [status] = router.statuses()
            assert status.error is not None and "RAGSTORE_MAX_REPLICA_LAG_S" in status.error, status
            assert router.choose() is primary
        finally:
            flowing.set()
            router.close()
            primary.close()
            listener.close()
            shutil.rmtree(proxy_dir, ignore_errors=True)


def test_a_promoted_standby_is_not_read_from(pair: Pair, spare: Spare) -> None:
    """A standby promoted while the primary runs on (a failover half done, a split brain)
    no longer receives the primary's writes. It answered as "not in recovery", which the
    router took for a replica exactly up to date, and every read without a write position
    was served from a copy that fell further behind with each write, with no error."""
    with spare.take(keep=False) as node:  # promoted: no standby any more
        with psycopg.connect(node.conninfo, autocommit=True) as conn:
            conn.execute("SELECT pg_promote(true, 30)")
        primary = Database(pair.primary_url)
        router = ReadRouter(primary, [node.conninfo], max_lag_s=5, wait_s=0.1)
        try:
            assert router.choose() is primary
            [status] = router.statuses()
            assert status.up is False and status.error is not None
            assert "not a hot standby" in status.error, status.error
        finally:
            router.close()
            primary.close()


def test_a_worker_on_a_standby_is_one_clear_error(
    pair: Pair, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ragstore worker`` with RAGSTORE_DATABASE_URL naming a hot standby died with
    procrastinate's ConnectorException (no message, a traceback): a worker writes (its
    registration, every job), so it is refused at start as a read-only server's writes are."""
    settings = pair.read_only_settings()
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", settings.database_url.get_secret_value())
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("RAGSTORE_PROFILE", "test")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        assert run_cli("worker", "--burst") == 77
    finally:
        # the worker configures logging onto this test's captured stderr, closed after it:
        # left in place, a later test's INFO line (httpx's) failed on the closed stream
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capsys.readouterr().err
    assert err.startswith("error[read_only]: ") and "hot standby" in err, err
    assert err.count("\n") == 1, err


def test_a_read_after_a_write_of_unknown_position_is_the_primarys(pair: Pair, kb: str) -> None:
    """``RAGStore-LSN: primary`` (a write whose position could not be read) has the next
    read served by the primary, never a replica that may not have the write; a read-only
    server, which cannot tell, refuses it (503) instead of answering without the write."""
    with (
        running_server(pair.settings(replica_wait_s=0.3)) as url,
        running_server(pair.read_only_settings(replica_wait_s=0.3)) as ro_url,
        Client(url) as c,
        Client(ro_url, retries=0) as ro,  # a refusal at once, not after retries
    ):
        pair.wait_caught_up()
        pair.pause_replay(True)
        try:
            c.add_document("kb", "kiln.md", "# Kilns\n\nA kiln fires clay into hard pottery.")
            c.last_lsn = "primary"
            before = _reads()
            r = c.request("GET", "/v1/collections/kb/documents")
            assert "kiln.md" in [d["name"] for d in r.json()["data"]]
            assert _served_by(r) == "primary"
            # counted where it ran (it was not counted at all)
            assert _reads() == (before[0], before[1] + 1)
            ro.last_lsn = "primary"
            with pytest.raises(ReplicaBehindError) as behind:
                ro.search("kb", "kiln")
            assert behind.value.status == 503  # type: ignore[attr-defined]
        finally:
            pair.pause_replay(False)


def _reads() -> tuple[float, float]:
    """``ragstore_db_reads_total`` of this process: (replica, primary)."""
    return (
        metrics.DB_READS.labels("replica")._value.get(),
        metrics.DB_READS.labels("primary")._value.get(),
    )


@contextmanager
def _native_on_primary_only(pair: Pair, pg_data_dir: Path) -> Iterator[None]:
    """The native BM25 kernel put in place on the pair's primary after the standby was
    copied: its functions replay to the standby, its library file is not there."""
    db = Database(pair.primary_url)
    folder = pg_data_dir / "pg" / f"ragstore_native_after_copy_{os.getpid()}"
    try:
        assert native.sync(db, folder), "the native kernel did not install"
        pair.wait_caught_up()
        yield
    finally:
        native.uninstall(db)
        db.close()
        shutil.rmtree(folder, ignore_errors=True)
        pair.wait_caught_up()


def test_a_standby_without_the_native_library_is_skipped_with_how_to_fix_it(
    pair: Pair, kb: str, pg_data_dir: Path
) -> None:
    """A standby copied before the primary's native BM25 kernel was put in place has its
    functions (replayed) and not its library (a file in the primary's data directory):
    every hybrid and full-text search routed there answered 500 ``database_error``
    ("could not access file"), the replica shown up at lag 0 and kept in use. Its probe
    runs the kernel now: the replica is skipped, and says how to mend it."""
    with (
        _native_on_primary_only(pair, pg_data_dir),
        running_server(pair.settings()) as url,
        Client(url, retries=0) as c,
    ):
        for mode in ("hybrid", "fulltext"):
            r = c.request(
                "POST", "/v1/collections/kb/search", json={"query": "bread", "k": 2, "mode": mode}
            )
            assert r.status_code == 200, r.text
            assert r.json()["data"][0]["title"] == "Bread"
            assert _served_by(r) == "primary"
        [replica] = c.ready()["replicas"]
        assert replica["up"] is False
        assert "RAGSTORE_NATIVE_BM25=false" in replica["error"], replica
        assert "ragstore_native" in replica["error"], replica


def test_a_replica_whose_server_fails_a_read_of_itself_is_backed_off(
    pair: Pair, pg_data_dir: Path
) -> None:
    """A routed read the replica's server failed of itself (SQLSTATE class 58: here the
    native library it cannot open, put in place after the probe; class XX) was the read's
    own: answered 500 with the primary free, and the replica kept for the next read. It
    is the replica's now: the read is flagged to run again on the primary, and the replica
    skipped for a while, down with the reason."""
    primary = Database(pair.primary_url)
    router = ReadRouter(
        primary,
        [pair.standby.conninfo],
        max_lag_s=5,
        wait_s=0.1,
        probe_interval_s=600,  # probed once, before the kernel: the status is the read's
    )
    try:
        assert router.choose() is not primary, router.statuses()
        with _native_on_primary_only(pair, pg_data_dir):
            route = Route(router)
            with routed(route):
                replica = route.database()
                assert route.on_replica, router.statuses()
                with (
                    pytest.raises(RagstoreError),
                    replica.connection() as conn,
                    errors.translated("searching"),  # as the search code
                ):
                    conn.execute(native._CALL_ON_NOTHING).fetchone()
            assert route.lost, "not run again on the primary"
            assert router.choose() is primary
            [status] = router.statuses()
            assert status.up is False
            assert status.error is not None and "58P01" in status.error, status
    finally:
        router.close()
        primary.close()


def test_an_upload_answered_an_error_with_files_stored_carries_their_position(
    pair: Pair, kb: str
) -> None:
    """A two-file upload whose one file fails is answered that file's error, the other
    stored (listed in ``stored``). The answer carried no ``RAGStore-LSN`` (errors had
    none, and the client read none from them), so the client's next read was served by a
    replica that had not replayed the stored file."""
    with running_server(pair.settings(replica_wait_s=0.3)) as url, Client(url) as c:
        pair.wait_caught_up()
        pair.pause_replay(True)
        try:
            with pytest.raises(RagstoreError):
                c.upload(
                    "kb", [("glaze.md", b"# Glaze\n\nA glassy coat on pottery."), ("x.xyz", b"")]
                )
            assert c.last_lsn is not None
            r = c.request("GET", "/v1/collections/kb/documents")
            assert "glaze.md" in [d["name"] for d in r.json()["data"]]
            assert _served_by(r) == "primary"
        finally:
            pair.pause_replay(False)


def test_a_collection_recreated_is_read_your_writes_after_a_replica_read(
    pair: Pair, kb: str
) -> None:
    """The search path's collection cache was keyed by name alone, whichever server the
    lookup ran on. A collection deleted and made anew (a new id) while the standby had
    not replayed it: a search another client sent without a position ran on the standby
    and cached the old collection; the writer's own search right after, served by the
    primary, then searched the old id there and found nothing of what it had just stored."""
    with (
        running_server(pair.settings(replica_wait_s=0.3)) as url,
        Client(url) as writer,
        Client(url, read_your_writes=False) as other,
    ):
        writer.create_collection("remade")
        writer.add_document("remade", "old.md", "# Old\n\nAn old note about sailing boats.")
        pair.wait_caught_up()
        pair.pause_replay(True)
        try:
            writer.delete_collection("remade")
            writer.create_collection("remade")
            writer.add_document("remade", "new.md", "# New\n\nA new note about sailing boats.")
            seen = other.request(
                "POST", "/v1/collections/remade/search", json={"query": "sailing boats"}
            )
            assert _served_by(seen) == "replica"
            assert [h["title"] for h in seen.json()["data"]] == ["Old"]  # the standby's copy
            r = writer.request(
                "POST", "/v1/collections/remade/search", json={"query": "sailing boats"}
            )
            assert _served_by(r) == "primary"
            assert [h["title"] for h in r.json()["data"]] == ["New"], r.json()
        finally:
            pair.pause_replay(False)


def test_a_replica_url_naming_another_database_is_not_read_from(
    pair: Pair, kb: str, pg_admin_uri: str
) -> None:
    """``RAGSTORE_READ_DATABASE_URLS`` naming the right standby but another database on it
    (a typo, another deployment's database on the same cluster), or a standby of another
    cluster altogether: the probe asked only "in recovery, how far replayed", so it was
    taken for a replica and every read without a position was answered from that other
    database (200, its collections and documents, none of ours). It is now skipped, with
    why, as a promoted standby is."""
    other = create_database(pg_admin_uri, TEMPLATE)  # on the primary: the standby has it too
    with psycopg.connect(other, autocommit=True) as conn:
        other_db = conn.info.dbname
    pair.wait_caught_up()
    wrong = make_conninfo(pair.standby.conninfo, dbname=other_db)
    with running_server(pair.settings(read_database_urls=wrong)) as url, Client(url) as c:
        r = c.request("GET", "/v1/collections/kb/documents")
        assert r.status_code == 200, r.text
        assert _served_by(r) == "primary"
        assert len(r.json()["data"]) >= 3
        [replica] = c.ready()["replicas"]
        assert replica["up"] is False
        assert "another database" in replica["error"], replica


def test_a_standby_of_another_cluster_is_not_read_from(pair: Pair, tmp_path: Path) -> None:
    """A hot standby of another cluster altogether (a URL pointing at the wrong fleet):
    in recovery, streaming and caught up with its own primary, it was taken for a replica
    of ours with lag 0 (its positions compared with our primary's mean nothing)."""
    stranger = embedded.start(tmp_path / "stranger")
    try:
        node = standby.create(stranger, tmp_path / "stranger-standby")
        primary = Database(pair.primary_url)
        router = ReadRouter(primary, [node.conninfo], max_lag_s=5, wait_s=0.1)
        try:
            assert router.choose() is primary
            [status] = router.statuses()
            assert status.up is False and status.error is not None
            assert "another cluster" in status.error, status.error
        finally:
            router.close()
            primary.close()
            node.remove()
    finally:
        embedded.stop(tmp_path / "stranger")


def test_a_replica_is_not_read_from_before_the_primary_has_answered(pair: Pair) -> None:
    """The probe compares a replica's cluster and database with the primary's, learned on
    the router's connection to the primary. While the primary had not answered since the
    start (down, a wrong address) there was nothing to compare with, the check was
    skipped, and any hot standby (another cluster's, another database) was read from. It
    is now left out, with why, until the primary answers and it matches."""
    primary = Database("postgresql://postgres@127.0.0.1:1/ragstore", connect_timeout_s=1)
    router = ReadRouter(primary, [pair.standby.conninfo], max_lag_s=5, wait_s=0.1)
    try:
        assert router.choose() is primary
        [status] = router.statuses()
        assert status.up is False and status.error is not None, status
        assert "the primary does not answer" in status.error, status.error
    finally:
        router.close()
        primary.close()


def test_a_standby_restarted_between_reads_is_skipped_then_read_from_again(
    pair: Pair, kb: str
) -> None:
    """The replica's postmaster stopped between two requests: the next read is answered
    by the primary with no error to the caller, and once it runs again reads go back to
    it (its pool is opened afresh, not its connections to the stopped server reused)."""
    pair.wait_caught_up()
    with running_server(pair.settings()) as url, Client(url) as c:
        search = {"query": "tides of the ocean", "k": 2}
        r = c.request("POST", "/v1/collections/kb/search", json=search)
        assert r.status_code == 200 and _served_by(r) == "replica", r.text
        pair.standby.stop("fast")
        try:
            r = c.request("POST", "/v1/collections/kb/search", json=search)
            assert r.status_code == 200 and _served_by(r) == "primary", r.text
            r = c.request("GET", "/v1/collections/kb/documents")
            assert r.status_code == 200 and _served_by(r) == "primary", r.text
        finally:
            pair.standby.start()
        served = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            r = c.request("POST", "/v1/collections/kb/search", json=search)
            assert r.status_code == 200, r.text
            served.append(_served_by(r))
            if served[-1] == "replica":
                break
            time.sleep(0.2)
        assert served[-1] == "replica", served
        assert c.ready()["replicas"][0]["up"] is True


def test_a_read_your_writes_read_is_checked_on_the_server_it_runs_on(
    pair: Pair, spare: Spare
) -> None:
    """A multi-host replica URL (``host=h1,h2``, ``load_balance_hosts=random``) is one
    replica whose connections may each reach another host: the probe's connection, asked
    how far the replica had replayed, need not reach the server a pooled connection then
    ran the read on. A read carrying the caller's position was served by a host without
    that write. The position is now checked on the read's own connection, and a read
    there behind it is run again on the primary (the probe's connection is put on the
    caught-up standby here, the pool's URL naming a paused one: the hosts such a URL
    reaches, side by side)."""
    with spare.take() as node:
        pair.wait_caught_up()
        with psycopg.connect(node.conninfo, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
        primary = Database(pair.primary_url)
        router = ReadRouter(primary, [node.conninfo], max_lag_s=60, wait_s=1.0)
        try:
            assert router.choose() is not primary  # probed: up
            probe = router._replicas[0].probe_conn
            router._replicas[0].probe_conn = psycopg.connect(pair.standby.conninfo, autocommit=True)
            _drop_conn(probe)
            with psycopg.connect(pair.primary_url, autocommit=True) as conn:
                conn.execute("SELECT pg_logical_emit_message(true, 'ragstore-test', 'w')")
                position = lsn.current(conn)
            pair.wait_caught_up()
            route = Route(router, position)
            with routed(route):
                db = route.database()
                assert db is not primary  # the probe's host has the write
                with (
                    pytest.raises(ReplicaBehindError, match="not replayed your last write"),
                    db.connection() as conn,
                ):
                    reached = lsn.replayed(conn)
                    assert reached is not None and reached >= position, (
                        "a read carrying the caller's position ran on a server without it"
                    )
            assert route.lost  # the API runs it again on the primary
            assert router.statuses()[0].up is True  # the replica stays in use
        finally:
            with psycopg.connect(node.conninfo, autocommit=True) as conn:
                conn.execute("SELECT pg_wal_replay_resume()")
            router.close()
            primary.close()


def _drop_conn(conn: psycopg.Connection[object] | None) -> None:
    if conn is not None:
        with suppress(psycopg.Error):
            conn.close()


def test_a_replica_behind_a_schema_upgrade_is_not_read_from(pair: Pair, pg_admin_uri: str) -> None:
    """After ``ragstore db upgrade`` on the primary, a replica within its lag bound that
    had not replayed the upgrade was read from at the old revision, by code written for
    the new one: a query on a column or table the upgrade adds failed there (500
    ``database_error``), or read the old layout. A replica is now read from only at the
    revision the code expects; until it has replayed the upgrade, reads go to the primary."""
    url = create_database(pg_admin_uri, TEMPLATE)
    head = migrations.head_revision()
    older = migrations.known_revisions()[-2]
    db = Database(url)
    try:
        migrations.downgrade(db, older)
        with psycopg.connect(url, autocommit=True) as conn:
            name = conn.info.dbname
        pair.wait_caught_up()
        router = ReadRouter(
            db,
            [make_conninfo(pair.standby.conninfo, dbname=name)],
            max_lag_s=60,
            wait_s=0.1,
            probe_interval_s=0.1,
        )
        try:
            pair.pause_replay(True)
            try:
                migrations.upgrade(db)
                [status] = router.statuses()
                assert status.up is False and status.error is not None, status
                assert older in status.error and head in status.error, status.error
                assert router.choose() is db
            finally:
                pair.pause_replay(False)
            pair.wait_caught_up()
            time.sleep(0.2)
            assert router.statuses()[0].up is True
            assert router.choose() is not db
        finally:
            router.close()
    finally:
        db.close()


def test_a_replica_that_stops_answering_mid_connection_is_skipped(pair: Pair) -> None:
    """A replica whose server stops answering on a connection already open (a network
    path that drops packets, a stopped or wedged backend): the probe's query waited for an
    answer for good. ``/readyz`` hung in it, and every read carrying a write position
    (read-your-writes) hung behind it on the probe's lock, none falling back to the
    primary. The probe's queries now have a deadline: past it the replica is marked down
    and the reads go to the primary."""
    primary = Database(pair.primary_url)
    router = ReadRouter(
        primary, [pair.standby.conninfo], max_lag_s=5, wait_s=0.5, probe_interval_s=0.1
    )
    pid = None
    try:
        assert router.choose() is not primary
        probe = router._replicas[0].probe_conn
        assert probe is not None
        pid = probe.info.backend_pid
        os.kill(pid, signal.SIGSTOP)  # this backend no longer answers; the server runs on
        time.sleep(0.2)
        answers: list[object] = []
        asked = threading.Thread(target=lambda: answers.append(router.statuses()), daemon=True)
        t0 = time.monotonic()
        asked.start()
        time.sleep(0.3)  # the probe is waiting: a read-your-writes read meanwhile
        chosen: list[Database] = []
        read = threading.Thread(target=lambda: chosen.append(router.choose(min_lsn=1)), daemon=True)
        read.start()
        read.join(15)
        assert chosen == [primary], "the read waited for the probe for good"
        asked.join(15)
        assert answers, "the probe waited for good"
        [status] = answers[0]  # type: ignore[misc]
        assert status.up is False and status.error, status
        assert time.monotonic() - t0 < 10
        assert router.choose(min_lsn=1) is primary
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        router.close()
        primary.close()


def test_a_read_only_server_whose_standby_was_promoted_does_not_skip_the_wait(
    pair: Pair, kb: str, tmp_path: Path
) -> None:
    """A read-only server's standby promoted (a failover half done, a split brain) while
    the primary takes writes on: the wait for a read's position took "not in recovery"
    for "has every write", and the read was answered at once without the caller's write,
    which the promoted server never receives. The position is now compared with the
    promoted server's own WAL position, so the read waits and is refused (503) instead."""
    node = standby.create(pair.primary_url, tmp_path / "promoted-ro")
    try:
        ro_settings = pair.read_only_settings(database_url=node.conninfo, replica_wait_s=0.3)
        with (
            running_server(pair.settings()) as url,
            running_server(ro_settings) as ro_url,
            Client(url) as c,
            Client(ro_url, retries=0) as ro,  # a refusal at once, not after retries
        ):
            assert ro.ready()["checks"]["role"] == "replica (read-only)"
            with psycopg.connect(node.conninfo, autocommit=True) as conn:
                conn.execute("SELECT pg_promote(true, 30)")
            c.add_document("kb", "fork.md", "# Fork\n\nA fork in the road of a split brain.")
            ro.last_lsn = c.last_lsn
            with pytest.raises(ReplicaBehindError):
                hits = ro.search("kb", "fork in the road split brain", k=1)
                assert hits["data"][0]["title"] == "Fork", hits  # never: not there
    finally:
        node.remove()


@contextmanager
def _standby_setting(pair: Pair, name: str, value: str) -> Iterator[None]:
    """``name`` set to ``value`` on the shared standby (ALTER SYSTEM + reload), reset after."""
    with psycopg.connect(pair.standby.conninfo, autocommit=True) as s:
        s.execute(
            sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
        )
        s.execute("SELECT pg_reload_conf()")
    try:
        yield
    finally:
        with psycopg.connect(pair.standby.conninfo, autocommit=True) as s:
            s.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
            s.execute("SELECT pg_reload_conf()")


def _lock_on_primary(url: str, table: str, hold_s: float, after_s: float = 0.0) -> None:
    """Take ``table``'s ACCESS EXCLUSIVE lock on the primary for ``hold_s``: the standby's
    replay must take it too, and cancels the standby's queries that hold it meanwhile (a
    recovery conflict; ``hot_standby_feedback`` spares snapshots, not locks)."""
    time.sleep(after_s)
    with psycopg.connect(url) as p:
        p.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(table)))
        time.sleep(hold_s)
        p.commit()


def test_a_read_cancelled_by_a_recovery_conflict_is_run_again_on_the_primary(
    pair: Pair, pg_admin_uri: str
) -> None:
    """A replica's read cancelled by its standby's replay ("canceling statement due to
    conflict with recovery", SQLSTATE 40001 or 40P01: replay needed a lock or rows the
    query held) was answered 409 ``conflict``, "collided with a concurrent change", as if
    the caller had raced a write of its own, and never run on the primary. The replica's
    conflict now flags the route as lost (the API runs the read again on the primary) and
    is a 503 with Retry-After where it is answered at all; the replica stays in use."""
    url = create_database(pg_admin_uri, TEMPLATE)
    with psycopg.connect(url, autocommit=True) as p:
        p.execute("CREATE TABLE replayed (x int)")
        p.execute("INSERT INTO replayed VALUES (1)")
        name = p.info.dbname
    pair.wait_caught_up()
    primary = Database(url)
    router = ReadRouter(
        primary, [make_conninfo(pair.standby.conninfo, dbname=name)], max_lag_s=5, wait_s=0.1
    )
    try:
        with _standby_setting(pair, "max_standby_streaming_delay", "100ms"):
            route = Route(router)
            with routed(route):
                db = route.database()
                assert db is not primary and route.on_replica
                locker = threading.Thread(target=_lock_on_primary, args=(url, "replayed", 0.2, 1))
                locker.start()
                try:
                    with pytest.raises(RagstoreError) as failed, db.connection() as conn:
                        conn.execute("SELECT count(*) FROM replayed, pg_sleep(30)")
                finally:
                    locker.join(30)
        err = failed.value
        assert "conflict with recovery" in str(err), err
        # told by the source file the standby names, not by its (translatable) words
        cause = routing.recovery_conflict(err)  # psycopg's error behind ours
        assert cause is not None and errors.recovery_conflict(cause), cause
        assert err.http_status == 503, (type(err), err)
        assert getattr(err, "retry_after", None)
        assert route.lost, "the API would not run the read again on the primary"
        assert router.statuses()[0].up is True  # the replica is fine: not skipped
    finally:
        router.close()
        primary.close()


def test_a_replica_that_keeps_cancelling_reads_is_backed_off(
    pair: Pair, pg_admin_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica whose standby kept cancelling reads (recovery conflicts) had every one
    of them run twice, on the replica and again on the primary, for as long as the
    primary's writes went on. After ``CONFLICT_BACKOFF_COUNT`` conflicts in a row the
    router sends reads to the primary for ``CONFLICT_BACKOFF_S``, then tries it again."""
    monkeypatch.setattr(routing, "CONFLICT_BACKOFF_S", 3.0)
    url = create_database(pg_admin_uri, TEMPLATE)
    with psycopg.connect(url, autocommit=True) as p:
        p.execute("CREATE TABLE replayed (x int)")
        name = p.info.dbname
    pair.wait_caught_up()
    primary = Database(url)
    router = ReadRouter(
        primary, [make_conninfo(pair.standby.conninfo, dbname=name)], max_lag_s=5, wait_s=0.1
    )
    try:
        with _standby_setting(pair, "max_standby_streaming_delay", "100ms"):
            for _ in range(routing.CONFLICT_BACKOFF_COUNT):
                route = Route(router)
                with routed(route):
                    db = route.database()
                    assert route.on_replica, router.statuses()
                    locker = threading.Thread(
                        target=_lock_on_primary, args=(url, "replayed", 0.2, 0.5)
                    )
                    locker.start()
                    try:
                        with pytest.raises(RagstoreError), db.connection() as conn:
                            conn.execute("SELECT count(*) FROM replayed, pg_sleep(30)")
                    finally:
                        locker.join(30)
                assert route.lost
        assert router.choose() is primary, "still read from after repeated conflicts"
        # skipped, and shown so (it was shown up, with no error, and its gauge read 1)
        [status] = router.statuses()
        assert status.up is False
        assert status.error is not None and "recovery conflicts" in status.error, status
        assert metrics.REPLICA_UP.labels(status.name)._value.get() == 0
        time.sleep(3.2)
        assert router.choose() is not primary, "not tried again after the back-off"
    finally:
        router.close()
        primary.close()


def test_a_read_on_a_wedged_replica_ends_and_goes_to_the_primary(
    pair: Pair, pg_admin_uri: str
) -> None:
    """A replica whose server is up but whose query does not move (here: replay paused
    while it holds a lock the primary took and has since released; a frozen server is
    another) was not caught by keepalives, whose probes the kernel answers: a routed read
    there waited for good, with the primary free. The router's ``read_timeout_s`` bounds
    it now: the connection is cut, the replica marked down and the route flagged for the
    primary, which answers."""
    url = create_database(pg_admin_uri, TEMPLATE)
    with psycopg.connect(url, autocommit=True) as p:
        p.execute("CREATE TABLE replayed (x int)")
        p.execute("INSERT INTO replayed VALUES (1)")
        name = p.info.dbname
    pair.wait_caught_up()
    primary = Database(url)
    router = ReadRouter(
        primary,
        [make_conninfo(pair.standby.conninfo, dbname=name)],
        max_lag_s=60,
        wait_s=0.1,
        read_timeout_s=2,
    )
    out: list[str] = []
    route = Route(router)
    with routed(route):
        replica = route.database()
        assert route.on_replica, router.statuses()

    def read() -> None:
        started = time.monotonic()
        try:
            with routed(route), replica.connection() as conn:
                conn.execute("SELECT count(*) FROM replayed")
            out.append("answered")
        except RagstoreError as exc:
            out.append(f"{type(exc).__name__} after {time.monotonic() - started:.1f}s")

    reader = threading.Thread(target=read, daemon=True)
    try:
        with psycopg.connect(url) as p:
            p.execute("LOCK TABLE replayed IN ACCESS EXCLUSIVE MODE")
            p.execute("SELECT pg_switch_wal()")
            pair.wait_caught_up()  # the standby's replay holds the lock ...
            pair.pause_replay(True)
            p.commit()  # ... and keeps it: its release is not replayed
        reader.start()
        reader.join(15)
        assert out, "the replica's read still waits"
        assert out[0].startswith("DatabaseUnavailableError"), out
        assert route.lost, "the API would not run the read again on the primary"
        with primary.connection() as conn:  # the primary answers at once
            assert conn.execute("SELECT count(*) FROM replayed").fetchone() == (1,)
    finally:
        pair.pause_replay(False)
        if reader.is_alive():
            reader.join(30)
        router.close()
        primary.close()


@contextmanager
def _standby_search_cancelled(pair: Pair) -> Iterator[None]:
    """A vector search on the standby sent in the block is cancelled by replay: it reads
    the vector table, then chunks, then waits for documents (locked on the primary,
    replayed there); the primary then locks the vector tables, whose replay waits for the
    search, and the standby cancels it. The locks go 3 s after the block's start (a run
    on the primary waits for them). Needs ``max_standby_streaming_delay`` short."""
    with psycopg.connect(pair.primary_url, autocommit=True) as p:
        tables = [
            str(row[0])
            for row in p.execute(
                "SELECT relname FROM pg_class WHERE relname LIKE 'emb\\_%' AND relkind = 'r'"
            )
        ]
    assert tables
    replay_waits = threading.Event()

    def hold_locks() -> None:
        with psycopg.connect(pair.primary_url) as p:
            p.execute("LOCK TABLE documents IN ACCESS EXCLUSIVE MODE")
            p.execute("SELECT pg_switch_wal()")  # flushed: the standby replays the lock
            replay_waits.set()
            time.sleep(1.5)  # the search starts and waits on the standby
            for table in tables:
                p.execute(
                    sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(table))
                )
            p.execute("SELECT pg_switch_wal()")
            time.sleep(1.5)
            p.commit()

    pair.wait_caught_up()
    locker = threading.Thread(target=hold_locks, daemon=True)
    locker.start()
    try:
        assert replay_waits.wait(10)
        pair.wait_caught_up()
        yield
    finally:
        locker.join(30)


def test_a_search_cancelled_by_a_recovery_conflict_is_answered_by_the_primary(
    pair: Pair, kb: str
) -> None:
    """The API's side of it: a search whose statement the standby's replay cancelled
    (replay needed the vector table the search was reading) was answered 409 ``conflict``
    ("collided with a concurrent change"); it is now run again on the primary and answered
    there, as a search on a replica that fails is."""
    with (
        _standby_setting(pair, "max_standby_streaming_delay", "100ms"),
        running_server(pair.settings(search_timeout_s=30)) as url,
        Client(url, timeout=60) as c,
    ):
        with _standby_search_cancelled(pair):
            r = c.request(
                "POST",
                "/v1/collections/kb/search",
                json={"query": "why does bread rise", "k": 2, "mode": "vector"},
            )
        assert r.status_code == 200, r.text
        assert _served_by(r) == "primary", r.headers
        assert r.json()["data"][0]["title"] == "Bread"


# Run as ``unshare -n python -c SILENT_READ <standby conninfo> <primary conninfo>``: in a
# network namespace of its own, a replica read over TCP (a proxy on its loopback to the
# standby's socket), then the loopback taken down under it: nothing more is heard.
SILENT_READ = r"""
import socket, subprocess, sys, threading, time
from psycopg.conninfo import conninfo_to_dict
from ragstore.db.database import Database
from ragstore.db.routing import ReadRouter, Route, routed
from ragstore.errors import RagstoreError

subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
standby = conninfo_to_dict(sys.argv[1])
path = f"{standby['host']}/.s.PGSQL.{standby.get('port', 5432)}"
listener = socket.create_server(("127.0.0.1", 0))

def pump(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass

def serve():
    while True:
        c, _ = listener.accept()
        u = socket.socket(socket.AF_UNIX)
        u.connect(path)
        threading.Thread(target=pump, args=(c, u), daemon=True).start()
        threading.Thread(target=pump, args=(u, c), daemon=True).start()

threading.Thread(target=serve, daemon=True).start()
url = (f"postgresql://{standby.get('user', 'postgres')}@127.0.0.1:"
       f"{listener.getsockname()[1]}/{standby.get('dbname', 'postgres')}")
primary = Database(sys.argv[2])
router = ReadRouter(primary, [url], max_lag_s=60, wait_s=0.1)
route = Route(router)
out = []

def read():
    t0 = time.monotonic()
    try:
        with routed(route), route.database().connection() as conn:
            conn.execute("SELECT pg_sleep(20)")
        out.append(f"answered after {time.monotonic() - t0:.1f} s")
    except RagstoreError as exc:  # the replica's failure as the router reports it
        took = time.monotonic() - t0
        out.append(f"failed after {took:.1f} s: {type(exc).__name__} lost={route.lost}")

with routed(route):
    assert route.database() is not primary, router.statuses()
reader = threading.Thread(target=read, daemon=True)
reader.start()
time.sleep(1)
subprocess.run(["ip", "link", "set", "lo", "down"], check=True)
reader.join(30)
print(out[0] if out else "still waiting after 30 s", flush=True)
"""


def test_a_replica_read_whose_network_goes_silent_fails_in_seconds(pair: Pair, kb: str) -> None:
    """A read sent to a replica over TCP whose network path then went silent (a host
    gone, packets dropped): the read waited until the system's TCP gave up (no
    keepalives: for good, for a connection only waiting for its answer), since its
    ``statement_timeout`` is the silent server's to enforce. The replica's connections
    now carry TCP keepalives and ``tcp_user_timeout``: the read fails in seconds, the
    replica is marked down and the route flagged for the primary."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip to silence a connection")
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs a network namespace of its own (unshare -n: root or user namespaces)")
    pair.wait_caught_up()
    done = subprocess.run(
        [
            "unshare",
            "-n",
            sys.executable,
            "-c",
            SILENT_READ,
            pair.standby.conninfo,
            pair.primary_url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = done.stdout.strip()
    assert line.startswith("failed after") and "DatabaseUnavailableError lost=True" in line, line
    assert float(line.split()[2]) < 20, line


def test_a_read_only_servers_search_cancelled_by_a_recovery_conflict_is_a_503(
    pair: Pair, kb: str
) -> None:
    """On a read-only server (its database a hot standby, no primary to run it on), a
    search its standby cancelled to replay the primary's changes was answered 409
    ``conflict``, "collided with a concurrent change", blaming the caller; it is a 503
    ``statement_cancelled`` with Retry-After now."""
    with (
        _standby_setting(pair, "max_standby_streaming_delay", "100ms"),
        running_server(pair.read_only_settings(search_timeout_s=30)) as url,
    ):
        with _standby_search_cancelled(pair):
            r = httpx.post(
                f"{url}/v1/collections/kb/search",
                json={"query": "why does bread rise", "k": 2, "mode": "vector"},
                timeout=60,
            )
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "statement_cancelled", r.text
        assert "conflict with recovery" in r.json()["detail"], r.text
        assert r.headers.get("Retry-After"), r.headers


# Reads a healthy standby refuses for themselves: (their statements, whether the read is
# run again on the primary: a database_unavailable is)
REFUSED_READS = {
    "statement_timeout": (["SET LOCAL statement_timeout = 50", "SELECT pg_sleep(5)"], False),
    "wal_function": (["SELECT pg_switch_wal()"], False),  # 55000, recovery is in progress
    "temp_file_limit": (
        [
            "SET LOCAL temp_file_limit = '64kB'",
            "SELECT count(*) FROM (SELECT g FROM generate_series(1, 300000) g ORDER BY g DESC) s",
        ],
        True,
    ),  # 53400
    "session_terminated": (["SELECT pg_terminate_backend(pg_backend_pid())"], True),  # 57P01
    "write": (["CREATE TABLE written (x int)"], True),  # 25006, read-only
}


@pytest.mark.parametrize("case", list(REFUSED_READS))
def test_a_read_a_healthy_replica_refuses_leaves_it_in_use(pair: Pair, case: str) -> None:
    """A routed read the standby refused for itself (its statement_timeout, a WAL function
    during recovery, its temp_file_limit, its session terminated by an administrator, a
    write) marked the replica down whenever it came as a ``database_unavailable``: its
    pool closed and every read sent to the primary until the next probe. The replica is
    only marked down when the server cannot serve; here the next read still goes to it,
    on the same pool, and a ``database_unavailable`` read is run again on the primary."""
    statements, rerun = REFUSED_READS[case]
    primary = Database(pair.primary_url)
    router = ReadRouter(
        primary,
        [pair.standby.conninfo],
        max_lag_s=5,
        wait_s=0.1,
        probe_interval_s=600,  # no probe in the test: the status is what the read left
    )
    try:
        route = Route(router)
        with routed(route):
            replica = route.database()
            assert route.on_replica, router.statuses()
            with pytest.raises(RagstoreError) as failed, replica.connection() as conn:
                for statement in statements:
                    with errors.translated("reading"):  # as the catalog and search code
                        conn.execute(statement)
        assert route.lost is rerun, failed.value
        [status] = router.statuses()
        assert status.up is True, (status, failed.value)
        assert router.choose() is replica, "the next read does not go to the replica"
        with routed(Route(router)), replica.connection() as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    finally:
        router.close()
        primary.close()


def test_a_write_on_a_replica_outside_translated_is_run_again_on_the_primary(
    pair: Pair,
) -> None:
    """A routed read that writes on the standby without ``translated()`` around it got
    psycopg's raw ``ReadOnlySqlTransaction`` (25006, an InternalError that the pool's
    connection does not translate): the API answered 500 and never ran the read on the
    primary. It is the ``database_unavailable`` a translated one is: the route is lost
    (run again on the primary), the replica left in use."""
    primary = Database(pair.primary_url)
    router = ReadRouter(
        primary, [pair.standby.conninfo], max_lag_s=5, wait_s=0.1, probe_interval_s=600
    )
    try:
        route = Route(router)
        with routed(route):
            replica = route.database()
            assert route.on_replica, router.statuses()
            with pytest.raises(RagstoreError) as failed, replica.connection() as conn:
                conn.execute("CREATE TABLE written_raw (x int)")  # no translated() around it
        assert type(failed.value) is DatabaseUnavailableError, repr(failed.value)
        assert isinstance(failed.value.__cause__, psycopg.errors.ReadOnlySqlTransaction)
        assert "the database refuses writes: it is read-only" in str(failed.value)
        assert route.lost, "the API would not run the read again on the primary"
        [status] = router.statuses()
        assert status.up is True, status
        assert router.choose() is replica, "the next read does not go to the replica"
    finally:
        router.close()
        primary.close()


def test_a_replica_stopped_under_a_read_is_marked_down(pair: Pair) -> None:
    """The counterpart: a standby shut down (fast) while a read runs on it ends the read's
    session with the same 57P01 an administrator's pg_terminate_backend sends, and takes
    no connection after it: the replica is marked down and the read run on the primary."""
    pair.wait_caught_up()
    primary = Database(pair.primary_url)
    router = ReadRouter(
        primary, [pair.standby.conninfo], max_lag_s=5, wait_s=0.1, probe_interval_s=600
    )
    route = Route(router)
    failures: list[BaseException] = []

    def read() -> None:
        with routed(route):
            try:
                with route.database().connection() as conn:
                    conn.execute("SELECT pg_sleep(30) /* the read under way */")
            except RagstoreError as exc:
                failures.append(exc)

    reader = threading.Thread(target=read)
    stopped = False
    try:
        assert router.choose() is not primary, router.statuses()
        reader.start()
        with psycopg.connect(pair.standby.conninfo, autocommit=True) as s:
            deadline = time.monotonic() + 15
            while not s.execute(
                "SELECT 1 FROM pg_stat_activity WHERE query LIKE '%the read under way%'"
                " AND pid <> pg_backend_pid()"
            ).fetchone():
                assert time.monotonic() < deadline, "the read did not start on the standby"
                time.sleep(0.02)
        pair.standby.stop("fast")
        stopped = True
        reader.join(30)
        assert not reader.is_alive()
        assert route.on_replica and route.lost, failures
        assert failures and isinstance(failures[0], DatabaseUnavailableError), failures
        [status] = router.statuses()  # what the read left (no probe: the interval)
        assert status.up is False, status
        assert router.choose() is primary
    finally:
        if stopped:
            pair.standby.start()
        reader.join(30)
        router.close()
        primary.close()


def test_a_replica_whose_pool_is_busy_is_not_marked_down(pair: Pair) -> None:
    """A replica whose pool lends no connection within the pool timeout (every one in use:
    load, not a failure) was marked down like a failed replica: its pool closed, every
    read sent to the primary until the next probe reopened it (under load, pools churned
    and all reads moved to the primary). The read is still run again on the primary
    (``Route.lost``), but the replica stays in use and its pool open. And the read waited
    the whole pool timeout before it went to the primary (which could serve it at once):
    it waits ``BUSY_REPLICA_WAIT_S`` now."""
    primary = Database(pair.primary_url)
    router = ReadRouter(
        primary,
        [pair.standby.conninfo],
        max_lag_s=5,
        wait_s=0.1,
        pool_min_size=1,
        pool_max_size=1,
        connect_timeout_s=10,
        probe_interval_s=600,  # no probe in the test: the status is what the read left
    )
    try:
        route = Route(router)
        with routed(route):
            replica = route.database()
            assert route.on_replica
            with replica.connection() as held:  # the pool's one connection, in use
                assert held.execute("SELECT 1").fetchone() == (1,)
                started = time.monotonic()
                with pytest.raises(RagstoreError) as busy, replica.connection():
                    pass
                took = time.monotonic() - started
        assert "busy" in str(busy.value), busy.value
        assert took < 5, took  # the pool timeout is 10 s
        assert route.lost, "the API would not run the read again on the primary"
        [status] = router.statuses()
        assert status.up is True, status  # busy, not down
        assert router.choose() is replica
        with replica.connection() as conn:  # the same pool, still open
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        router.close()
        primary.close()


def _sample(text: str, name: str, labels: str = "") -> float | None:
    """The value of ``name{labels}`` in an exposition, None when absent."""
    pattern = "^" + re.escape(name) + (re.escape("{" + labels + "}") if labels else "") + " (\\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else None


def _scraped_when(c: Client, name: str, labels: str, value: float) -> str:
    """The first ``/metrics`` exposition (within 10 s) where ``name{labels}`` reads
    ``value``: a connection just given back to its pool is counted in use until the
    pool's own thread has reset it, and the replica's lag probe borrows one now and then."""
    deadline = time.monotonic() + 10
    while True:
        text = c.request("GET", "/metrics").text
        if _sample(text, name, labels) == value or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def test_each_replica_pool_and_the_api_queue_pool_reach_the_metrics(pair: Pair, kb: str) -> None:
    """The ``ragstore_db_pool_*`` gauges are the primary's pool alone (unlabelled, as the
    alerts read them): a replica's pool, its size, in-use and waiting figures, showed
    nowhere, nor the API's own job-queue pool it defers jobs on (a worker's port served
    only the worker's). Now each replica's pool is ``ragstore_db_replica_pool_*`` by
    ``replica`` (its URL without the password), absent while that pool is not open, and
    the API serves its queue's ``ragstore_job_queue_pool_*``."""
    settings = pair.settings(pool_max_size=3)
    app = create_app(settings)
    label = f'replica="{describe(pair.standby.conninfo)}"'
    with running_server(settings, app) as url, Client(url) as c:
        unopened = c.request("GET", "/metrics").text
        r = c.request("POST", "/v1/collections/kb/search", json={"query": "tides", "k": 1})
        assert _served_by(r) == "replica"
        opened = _scraped_when(c, "ragstore_db_replica_pool_connections_in_use", label, 0)
        state = app.state.ragstore
        replica = state.runtime.router.choose()
        assert isinstance(replica, routing.ReplicaDatabase)
        with replica.pool.connection(), state.queue.connector.pool.connection():
            held = c.request("GET", "/metrics").text
        freed = _scraped_when(c, "ragstore_db_replica_pool_connections_in_use", label, 0)
    assert "ragstore_db_replica_pool_connections{" not in unopened  # no read yet: not open
    assert _sample(opened, "ragstore_db_replica_pool_max_connections", label) == 3
    assert (_sample(opened, "ragstore_db_replica_pool_connections", label) or 0) >= 1
    assert _sample(opened, "ragstore_db_replica_pool_connections_in_use", label) == 0
    assert _sample(opened, "ragstore_db_replica_pool_requests_waiting", label) == 0
    assert (_sample(held, "ragstore_db_replica_pool_connections_in_use", label) or 0) >= 1
    assert _sample(freed, "ragstore_db_replica_pool_connections_in_use", label) == 0
    # one series per configured replica; the primary's gauges stay unlabelled
    assert opened.count("ragstore_db_replica_pool_max_connections{") == 1
    assert _sample(opened, "ragstore_db_pool_max_connections") == 3
    assert _sample(opened, "ragstore_job_queue_pool_max_connections") == 4
    assert _sample(held, "ragstore_job_queue_pool_connections_in_use") == 1
    assert _sample(freed, "ragstore_job_queue_pool_connections_in_use") == 0
