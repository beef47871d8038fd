"""The embedded PostgreSQL killed under a running server: requests fail fast with 503,
Retry-After and no address or pool-size blame; the next request after the back-off starts
the postmaster again and the server serves on; `ragstore db stop` stops it."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from ragstore import integrity
from ragstore.config import Settings
from ragstore.db import embedded
from ragstore.runtime import Runtime
from tests.api.conftest import running_server
from tests.conftest import run_cli


def _postmaster(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().splitlines()[0])


def test_killed_postmaster_fails_fast_then_comes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"
    local = Settings(
        data_dir=data_dir, profile="test", auth="off", connect_timeout_s=5.0, model="no-such-model"
    )  # no model needed: collections only
    with running_server(local) as url, httpx.Client(base_url=url, timeout=30) as h:
        assert (
            h.post(
                "/v1/collections", json={"name": "kept", "model": "all-MiniLM-L6-v2"}
            ).status_code
            == 201
        )
        pid = _postmaster(data_dir / "pg")
        os.kill(pid, signal.SIGKILL)
        psutil.Process(pid).wait(timeout=10) if psutil.pid_exists(pid) else None
        answers = []
        t0 = time.monotonic()
        for _ in range(10):
            answers.append(h.get("/v1/collections"))
        took = time.monotonic() - t0
        assert all(r.status_code == 503 for r in answers), [r.text for r in answers]
        assert took < 5.0, f"10 requests took {took:.1f}s: not failing fast"
        for r in answers:
            body = r.json()
            assert body["code"] == "database_unavailable"
            assert int(r.headers["Retry-After"]) >= 1
            assert str(data_dir) not in r.text and "postgresql://" not in r.text
            assert "POOL_MAX_SIZE" not in r.text
        deadline = time.monotonic() + 60
        status = 0
        while time.monotonic() < deadline and status != 200:
            time.sleep(1)
            status = h.get("/v1/collections").status_code
        assert status == 200, "the server did not bring the embedded database back"
        assert _postmaster(data_dir / "pg") != pid
        assert [c["name"] for c in h.get("/v1/collections").json()["data"]] == ["kept"]
    # the server was its last user: its shutdown stopped the embedded PostgreSQL
    assert not (data_dir / "pg" / "postmaster.pid").exists()
    # a user killed with -9 never unregisters; the next process to start drops it, so the
    # last one that exits normally stops the server
    user = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            " from ragstore.db import embedded; embedded.start(Path(sys.argv[1]));"
            " print('joined', flush=True); time.sleep(120)",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert user.stdout is not None and user.stdout.readline().strip() == "joined"
    users = data_dir / "pg" / ".handle_pids.json"
    assert user.pid in json.loads(users.read_text())
    user.kill()
    user.wait()
    user.stdout.close()
    embedded.start(data_dir)
    assert user.pid not in json.loads(users.read_text())
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(data_dir))
    monkeypatch.delenv("RAGSTORE_DATABASE_URL", raising=False)
    assert run_cli("db", "stop") == 0
    assert not embedded.stop(data_dir)  # already stopped
    embedded.release(data_dir)  # and this process is no longer a user


def _wait_held(admin: psycopg.Connection[tuple[object, ...]], n: int) -> bool:
    """Wait until ``n`` backends of the database wait on a lock; whether none is a delete."""
    deadline = time.monotonic() + 60
    while True:
        held = admin.execute(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        ).fetchall()
        if len(held) >= n:
            return not any(str(q).lstrip().upper().startswith("DELETE") for (q,) in held)
        assert time.monotonic() < deadline, "the writers were not held by the lock"
        time.sleep(0.05)


_DOC = "\n\n".join(
    f"## Part {j}\n\n" + f"Rollback {j} restores the previous index of the vector store. " * 12
    for j in range(3)
)  # several chunks: a document cut short by the kill would show fewer


def test_writes_in_flight_when_the_postmaster_is_killed_are_whole_or_absent(
    tmp_path: Path,
) -> None:
    """SIGKILL the embedded postmaster while uploads, text batches and deletes are in
    flight: every write answered 2xx is stored whole, every other one is whole or absent,
    no answer is a 500 (503 problem+json with Retry-After while it is away), /readyz says
    not ready, and the server serves again on its own once the postmaster is back."""
    data_dir = tmp_path / "data"
    local = Settings(data_dir=data_dir, profile="test", auth="off", connect_timeout_s=5.0)
    answers: list[tuple[str, str, httpx.Response]] = []  # (operation, key, answer)
    stop = threading.Event()
    acked = threading.Semaphore(0)  # one release per write answered 2xx

    def write(h: httpx.Client, wid: int) -> None:
        stored = ""  # the text batch this writer sent last, when answered 2xx
        for i in itertools.count():
            if stop.is_set():
                return
            key = f"w{wid}-{i}"
            # one writer uploads, the other adds text batches and deletes those stored
            # again (one that failed keeps both texts, to be found whole or absent)
            op = "upload" if wid == 0 else "delete" if stored else "texts"
            if op == "upload":
                r = h.post(
                    "/v1/collections/c/documents/upload",
                    files=[("files", (f"{key}.md", _DOC.encode(), "text/markdown"))],
                )
            elif op == "texts":
                texts = [f"{key} rollback note a", f"{key} rollback note b"]
                r = h.post(
                    "/v1/collections/c/texts",
                    json={"texts": texts, "ids": [f"{key}-a", f"{key}-b"]},
                )
            else:
                key = f"{stored}-a"
                r = h.post("/v1/collections/c/texts/delete", json={"ids": [key]})
            answers.append((op, key, r))
            stored = key if op == "texts" and r.is_success else ""
            if r.is_success:
                acked.release()
            else:  # as a client told Retry-After would, if not for as long
                stop.wait(0.2)

    def wait_acked(n: int) -> None:
        for _ in range(n):
            assert acked.acquire(timeout=120), "the writers stopped being answered"

    with running_server(local) as url, httpx.Client(base_url=url, timeout=120) as h:
        assert h.post("/v1/collections", json={"name": "c"}).status_code == 201
        conninfo = embedded.start(data_dir)  # joined: the server's own, running
        with ThreadPoolExecutor(2) as pool:
            writers = [pool.submit(write, h, wid) for wid in range(2)]
            try:
                wait_acked(2)
                # both writers held inside their transactions (an upload's rows written,
                # its vectors' COPY waiting; a text batch, not a delete) when the
                # postmaster dies
                with psycopg.connect(conninfo, autocommit=True) as admin:
                    table = admin.execute(
                        "SELECT s.table_name FROM collections c JOIN embedding_spaces s"
                        " ON s.id = c.active_space_id WHERE c.name = 'c'"
                    ).fetchone()
                    assert table is not None
                    holder = psycopg.connect(conninfo)
                    while True:
                        holder.execute(f"LOCK TABLE {table[0]} IN EXCLUSIVE MODE")
                        if _wait_held(admin, 2):
                            break
                        holder.rollback()  # let the delete through, hold the next batch
                pid = _postmaster(data_dir / "pg")
                os.kill(pid, signal.SIGKILL)
                psutil.Process(pid).wait(timeout=10) if psutil.pid_exists(pid) else None
                holder.close()
                ready = h.get("/readyz")
                assert ready.status_code == 503 and ready.json()["code"] == "not_ready"
                deadline = time.monotonic() + 60
                while h.get("/readyz").status_code != 200:
                    assert time.monotonic() < deadline, "the server did not come back"
                    time.sleep(0.5)
                while acked.acquire(blocking=False):  # the writes answered before now
                    pass
                wait_acked(1)  # and writes are answered again
            finally:
                stop.set()
            for w in writers:
                w.result(timeout=300)

        failed = [(op, key, r) for op, key, r in answers if not r.is_success]
        assert {op for op, _, _ in failed} >= {"upload"}, "the kill landed on no upload"
        for op, key, r in failed:
            assert r.status_code == 503, (op, key, r.status_code, r.text)
            assert r.headers["content-type"] == "application/problem+json", r.headers
            assert r.json()["code"] == "database_unavailable" and int(r.headers["Retry-After"])

        docs = h.get("/v1/collections/c/documents", params={"limit": 500}).json()["data"]
        chunks = {d["name"]: d["chunks"] for d in docs}
        sent = {f"{key}.md": r.is_success for op, key, r in answers if op == "upload"}
        assert {n for n, ok in sent.items() if ok} <= set(chunks)
        full = {chunks[n] for n in sent if n in chunks}  # the same text: the same chunks
        assert len(full) == 1 and full != {0}, chunks
        ids = [f"{key}-{s}" for op, key, _ in answers if op == "texts" for s in "ab"]
        got = h.post("/v1/collections/c/texts/get", json={"ids": ids}).json()["data"]
        stored = {t["id"] for t in got}
        deleted = {key for op, key, r in answers if op == "delete" and r.is_success}
        tried = {key for op, key, _ in answers if op == "delete"}  # refused: gone or not
        for op, key, r in answers:
            if op != "texts":
                continue
            pair = {f"{key}-a", f"{key}-b"} - tried  # a failed batch: both
            if r.is_success:
                assert pair <= stored, (key, r.text)
            else:
                assert pair <= stored or not pair & stored, f"{key}: half of a batch stored"
        assert not deleted & stored
    with Runtime(local) as rt:
        report = integrity.check(rt)
    assert report.findings == [] and report.collections[0].chunks > 0
