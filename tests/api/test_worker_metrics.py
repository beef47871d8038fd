"""``ragstore worker --metrics-port``: a worker of its own (a container of its own, no
multiprocess folder shared with the server) serves the ingest and model counters of the
background jobs it runs; a port it cannot bind stops it before it takes a job."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import procrastinate
import pytest

from ragstore import Client
from ragstore.config import Settings
from ragstore.jobs.worker import serving_metrics
from tests.api.conftest import with_
from tests.conftest import run_cli

CLI = (sys.executable, "-c", "from ragstore.cli import main; main()")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sample(text: str, name: str, labels: str = "") -> float:
    """The value of ``name{labels}`` in an exposition (0 when absent)."""
    pattern = "^" + re.escape(name) + (re.escape("{" + labels + "}") if labels else "") + " (\\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return str(answer.read().decode())


def test_a_worker_serves_the_ingest_counters_of_its_jobs_and_closes_the_port_on_sigterm(
    open_url: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    port = _free_port()
    env = {**os.environ, **cli_env, "RAGSTORE_LOG_LEVEL": "warning"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the compose worker's case: nothing shared
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [*CLI, "worker", "--metrics-port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert worker.poll() is None, log.read_text()
            try:
                before = _scrape(port)
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "the worker never served its metrics"
                time.sleep(0.2)
        added = 'outcome="added"'
        assert _sample(before, "ragstore_ingest_documents_total", added) == 0
        with Client(open_url) as api:
            api.create_collection("worker-metrics")
            job = api.add_document(
                "worker-metrics", "w.md", "# Worker\n\ncounted by the worker", background=True
            )
            deadline = time.monotonic() + 120
            while (state := api.get_job(job["id"]))["status"] in ("queued", "running"):
                assert worker.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"job not run: {state}"
                time.sleep(0.2)
        assert state["status"] == "succeeded", state
        after = _scrape(port)
        assert _sample(after, "ragstore_ingest_documents_total", added) == 1
        assert _sample(after, "ragstore_embedding_texts_total") >= 1
        assert _sample(after, "ragstore_ingest_chunks_total", 'outcome="embedded"') >= 1
        # its own pool's figures (the job's ingest used it), not the zeros of an idle pool
        assert _sample(after, "ragstore_db_pool_max_connections") >= 1
        assert _sample(after, "ragstore_db_pool_connections") >= 1
        # and the job queue's own pool (procrastinate's: the loop fetches the jobs on it),
        # which its max_size of 4 and its min_size of 1 tell apart from the runtime's
        assert _sample(after, "ragstore_job_queue_pool_max_connections") == 4
        assert _sample(after, "ragstore_job_queue_pool_connections") >= 1
        assert "ragstore_job_queue_pool_connections_in_use " in after
        assert "ragstore_job_queue_pool_requests_waiting " in after
        os.killpg(worker.pid, signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, log.read_text()[-3000:]
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            _scrape(port)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)


def test_a_metrics_port_in_use_stops_the_worker_with_one_clear_error(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = int(taken.getsockname()[1])
        code = run_cli("worker", "--burst", "--metrics-port", str(port))
    err = capsys.readouterr().err
    assert code == 78, err  # EX_CONFIG, before any job is taken
    assert f"cannot serve its metrics on 127.0.0.1:{port}" in err
    assert "pick another --metrics-port" in err
    assert "Traceback" not in err


def test_a_metrics_port_on_loopback_refuses_other_sites_pages() -> None:
    # No key guards the port: a web page of another site whose name it makes resolve to
    # 127.0.0.1 (DNS rebinding) read the metrics as that site; a scraper here is served.
    from ragstore.observability import metrics

    server, thread = metrics.serve_process_metrics("127.0.0.1", 0)
    port = int(server.server_address[1])
    try:
        for host in ("evil.example", f"evil.example:{port}"):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/metrics", headers={"Host": host}
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)
            assert refused.value.code == 403
            assert "evil.example" in refused.value.read().decode()
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "[::1]"):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/metrics", headers={"Host": host}
            )
            with urllib.request.urlopen(request, timeout=5) as answer:
                assert answer.status == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_metrics_port_on_loopback_refuses_a_client_a_proxy_forwards() -> None:
    """A reverse proxy on this machine (Apache's ProxyPass: Host 127.0.0.1, X-Forwarded-For)
    handed the loopback port, which has no key, to the network, where the API refuses such
    a request (keys off) or asks it for a key (/metrics). A request forwarded for another
    machine is refused now; one forwarded for this machine is served."""
    from ragstore.observability import metrics

    server, thread = metrics.serve_process_metrics("127.0.0.1", 0)
    port = int(server.server_address[1])
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        for forwarded in (
            {"X-Forwarded-For": "203.0.113.9"},
            {"X-Real-IP": "2001:db8::1"},
            {"Forwarded": "for=198.51.100.7;proto=https"},
        ):
            request = urllib.request.Request(url, headers=forwarded)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=5)
            assert refused.value.code == 403, forwarded
            said = refused.value.read().decode()
            assert "no proxy may forward others" in said and "--metrics-host" in said
        local = urllib.request.Request(url, headers={"X-Forwarded-For": "127.0.0.1"})
        with urllib.request.urlopen(local, timeout=5) as answer:
            assert answer.status == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_metrics_port_is_never_a_unix_socket(
    cli_env: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The port has no key, and the API answers keyless requests over a Unix socket only
    on the owner-only one ``ragstore serve`` binds. The worker's port cannot be one: it
    listens on TCP only, so a ``unix:`` address stops the worker before it takes a job,
    and no socket file (which every user of the machine could open) is made."""
    path = tmp_path / "metrics.sock"
    code = run_cli("worker", "--burst", "--metrics-port", "0", "--metrics-host", f"unix:{path}")
    err = capsys.readouterr().err
    assert code == 78, err
    assert "metrics port listens on TCP only, not on a Unix socket" in err, err
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


MULTIPROCESS_SCRAPE = """
import urllib.request
from ragstore.observability import metrics
metrics.INGEST_DOCUMENTS.labels("added").inc(3)
server, thread = metrics.serve_process_metrics("127.0.0.1", 0)
port = server.server_address[1]
with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
    print(answer.read().decode())
server.shutdown()
server.server_close()
"""


def test_the_worker_port_merges_the_multiprocess_folder(tmp_path: Path) -> None:
    """With ``PROMETHEUS_MULTIPROC_DIR`` set the port serves the folder's merged samples
    (this process's and those of others sharing it), as the API's /metrics does."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    for _ in range(2):  # the second process sees the first's samples too
        done = subprocess.run(
            [sys.executable, "-c", MULTIPROCESS_SCRAPE],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    assert _sample(done.stdout, "ragstore_ingest_documents_total", 'outcome="added"') == 6


def test_a_metrics_port_beyond_loopback_is_warned_of_and_closed_on_leaving(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """No key guards the worker's port: binding every interface says so in the log; the
    default (loopback) says nothing. Leaving the block (the worker stopping) closes it."""
    for host, warned in (("127.0.0.1", False), ("0.0.0.0", True)):
        caplog.clear()
        chosen = with_(settings, worker_metrics_host=host, worker_metrics_port=0)
        with (
            caplog.at_level(logging.WARNING, logger="ragstore.jobs"),
            serving_metrics(chosen) as port,
        ):
            assert port and "ragstore_ingest_documents_total" in _scrape(port)
        assert ("without authentication" in caplog.text) is warned, caplog.text
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            _scrape(port)


def test_the_job_queue_pool_in_use_and_waiting_reach_the_worker_port(settings: Settings) -> None:
    """The queue's pool (procrastinate's, which the worker's loop fetches, beats and
    records jobs on) is its own, apart from ``ragstore_db_pool_*``: a connection of it held,
    and a second request waiting, show on the port while its app is open; before it is
    built nothing of it is served (no zeros of a pool that does not exist)."""
    assert settings.database_url is not None
    chosen = with_(settings, worker_metrics_port=0)
    built: list[procrastinate.App] = []
    conninfo = settings.database_url.get_secret_value()

    async def hold_and_scrape(port: int) -> tuple[str, str]:
        # the worker's queue app, with a pool of one (build_queue's holds four)
        connector = procrastinate.PsycopgConnector(conninfo=conninfo, min_size=1, max_size=1)
        app = procrastinate.App(connector=connector)
        built.append(app)
        async with app.open_async():
            pool = connector.pool
            async with pool.connection():
                waiter = asyncio.create_task(_borrow(pool))
                for _ in range(100):
                    if pool.get_stats().get("requests_waiting"):
                        break
                    await asyncio.sleep(0.05)
                held = await asyncio.to_thread(_scrape, port)
            await waiter
            freed = await asyncio.to_thread(_scrape, port)
        return held, freed

    with serving_metrics(chosen, queue=lambda: next(iter(built), None)) as port:
        assert port is not None
        assert "ragstore_job_queue_pool" not in _scrape(port)
        held, freed = asyncio.run(hold_and_scrape(port))
        after_close = _scrape(port)
    assert _sample(held, "ragstore_job_queue_pool_max_connections") == 1
    assert _sample(held, "ragstore_job_queue_pool_connections") == 1
    assert _sample(held, "ragstore_job_queue_pool_connections_in_use") == 1
    assert _sample(held, "ragstore_job_queue_pool_requests_waiting") == 1
    assert _sample(freed, "ragstore_job_queue_pool_connections_in_use") == 0
    assert _sample(freed, "ragstore_job_queue_pool_requests_waiting") == 0
    assert "ragstore_job_queue_pool" not in after_close  # its app closed: no pool


async def _borrow(pool: Any) -> None:
    async with pool.connection(timeout=30):
        pass


def test_a_metrics_port_on_loopback_spelled_otherwise_keeps_its_guard(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Loopback was judged from the host as typed, where ``ragstore serve`` judges from the
    address bound: ``--metrics-host 127.1`` or ``LOCALHOST`` bound 127.0.0.1 yet served
    other sites' pages (DNS rebinding), and the worker warned the port reached every
    host. Judged from the address bound, both keep the guard and say nothing."""
    for host in ("127.1", "LOCALHOST"):
        caplog.clear()
        chosen = with_(settings, worker_metrics_host=host, worker_metrics_port=0)
        with (
            caplog.at_level(logging.WARNING, logger="ragstore.jobs"),
            serving_metrics(chosen) as port,
        ):
            url = f"http://127.0.0.1:{port}/metrics"
            rebound = urllib.request.Request(url, headers={"Host": "evil.example"})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(rebound, timeout=5)
            assert refused.value.code == 403, host
            assert "evil.example" in refused.value.read().decode()
            assert "ragstore_ingest_documents_total" in _scrape(int(port or 0))
        assert "without authentication" not in caplog.text, (host, caplog.text)
