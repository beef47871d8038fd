"""The embedded PostgreSQL killed under a running server: requests fail fast with 503,
Retry-After and no address or pool-size blame; the next request after the back-off starts
the postmaster again and the server serves on; `ragstore db stop` stops it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from ragstore.config import Settings
from ragstore.db import embedded
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
