"""`ragstore serve` as an attacker and an operator meet it: an empty host is every interface
(so keys go on), failed key checks are throttled before scrypt, the per-key rate limit is
shared through PostgreSQL, /metrics needs a key under prod, and SIGTERM stops it all."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from ragstore.api.app import auth_enabled
from ragstore.auth import KeyStore
from ragstore.config import Settings
from ragstore.errors import ConfigError, InputError
from ragstore.profiles import is_loopback
from tests.api.conftest import running_server, with_
from tests.conftest import run_cli


def test_empty_host_is_not_loopback(settings: Settings) -> None:
    assert not is_loopback("")
    embedded = Settings(data_dir=settings.data_dir, profile="test")
    assert auth_enabled(embedded.model_copy(update={"api_host": ""})) is True
    assert auth_enabled(embedded.model_copy(update={"api_bound": "127.0.0.1,::1"})) is False
    assert (
        auth_enabled(embedded.model_copy(update={"api_host": "127.0.0.1", "api_bound": "0.0.0.0"}))
        is True
    )


@pytest.mark.parametrize("profile", ["dev", "test", "prod"])
def test_auth_off_on_any_address_but_loopback_is_refused_in_every_profile(
    settings: Settings, profile: str
) -> None:
    base = Settings(
        data_dir=settings.data_dir, profile=profile, auth="off", allow_embedded_in_prod=True
    )
    assert auth_enabled(base.model_copy(update={"api_bound": "127.0.0.1,::1"})) is False
    for bound in ("0.0.0.0", "127.0.0.1,192.168.1.20", "::"):
        with pytest.raises(ConfigError, match="would serve every collection to anyone"):
            auth_enabled(base.model_copy(update={"api_bound": bound}))


def test_auth_off_refused_names_where_the_host_came_from(
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``ragstore serve --host 0.0.0.0`` with keys off was refused naming
    ``RAGSTORE_API_HOST='0.0.0.0'``, a variable the user never set: the refusal names
    ``--host`` now, and the variable when the host came from it."""
    monkeypatch.setenv("RAGSTORE_AUTH", "off")
    monkeypatch.delenv("RAGSTORE_API_HOST", raising=False)
    assert run_cli("serve", "--host", "0.0.0.0", "--port", "0") == ConfigError.exit_code
    err = capsys.readouterr().err
    assert "error[config_invalid]: RAGSTORE_AUTH=off with --host '0.0.0.0' would serve" in err
    assert "RAGSTORE_API_HOST" not in err
    monkeypatch.setenv("RAGSTORE_API_HOST", "0.0.0.0")
    assert run_cli("serve", "--port", "0") == ConfigError.exit_code
    err = capsys.readouterr().err
    assert "RAGSTORE_AUTH=off with RAGSTORE_API_HOST='0.0.0.0' would serve" in err


@pytest.fixture(scope="module")
def secured(settings: Settings) -> Iterator[str]:
    with running_server(
        with_(
            settings,
            auth="on",
            rate_limit_per_minute=30,
            profile="prod",
            allow_embedded_in_prod=True,
        )
    ) as url:
        yield url


def test_key_guessing_is_throttled_before_hashing(secured: str, keys: KeyStore) -> None:
    good = keys.create("read").secret
    key_id = good.split("_")[1]
    wrong = f"rsk_{key_id}_{'x' * 43}"
    with httpx.Client(base_url=secured, timeout=60) as h:
        assert (
            h.get("/v1/collections", headers={"Authorization": f"Bearer {good}"}).status_code == 200
        )  # verified once: later checks skip scrypt

        def guess(_: int) -> int:
            return h.get(
                "/v1/collections", headers={"Authorization": f"Bearer {wrong}"}
            ).status_code

        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(guess, range(120)))
        flood = time.monotonic() - t0
        statuses += [guess(i) for i in range(12)]  # sequential: each one may be hashed
        # per key: 10 failures a minute, plus one for every 6 s the guessing took (the
        # budget refills continuously; a loaded CI machine took over 6 s)
        refilled = int((time.monotonic() - t0) // 6)
        assert statuses.count(401) <= 10 + refilled, statuses
        assert statuses.count(429) >= 120 - refilled, statuses
        r = h.get("/v1/collections", headers={"Authorization": f"Bearer {wrong}"})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        t1 = time.monotonic()
        ok = h.get("/v1/collections", headers={"Authorization": f"Bearer {good}"})
        assert ok.status_code == 200 and time.monotonic() - t1 < 1.0
        assert flood < 20


def test_rate_limit_is_shared_across_servers(
    settings: Settings, secured: str, keys: KeyStore
) -> None:
    key = keys.create("read").secret
    auth = {"Authorization": f"Bearer {key}"}
    other = with_(settings, auth="on", rate_limit_per_minute=30)
    with running_server(other) as second, httpx.Client(timeout=60) as h:
        statuses = [
            h.get(f"{url}/v1/collections", headers=auth).status_code
            for _ in range(20)
            for url in (secured, second)
        ]
    assert statuses.count(200) <= 31, statuses  # one budget of 30 (+1 refill), not 60
    assert statuses.count(429) >= 9


def test_metrics_need_a_key_under_prod(secured: str, keys: KeyStore) -> None:
    assert httpx.get(f"{secured}/metrics").status_code == 401
    key = keys.create("read").secret
    r = httpx.get(f"{secured}/metrics", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and "ragstore_build_info" in r.text


def test_a_metrics_key_reads_the_metrics_and_nothing_else(secured: str, keys: KeyStore) -> None:
    """The scraper's key (deploy/prometheus/prometheus.yml) must not read documents: a
    ``metrics`` key is answered on /metrics and refused (403, naming the scope it lacks) on
    every route that needs ``read`` or more."""
    auth = {"Authorization": f"Bearer {keys.create('metrics', name='prometheus').secret}"}
    with httpx.Client(base_url=secured, headers=auth, timeout=60) as h:
        assert h.get("/metrics").status_code == 200
        refused = [
            h.get("/v1/collections"),
            h.get("/v1/me"),
            h.post("/v1/collections/default/search", json={"query": "anything"}),
            h.post("/v1/collections", json={"name": "by-metrics-key"}),
        ]
    for r in refused:
        assert r.status_code == 403, (r.request.url, r.status_code, r.text)
        assert r.json()["code"] == "forbidden" and "'metrics'" in r.json()["detail"]


def test_a_metrics_key_is_for_every_collection(keys: KeyStore) -> None:
    with pytest.raises(InputError, match="without --collection"):
        keys.create("metrics", collection="default")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _session_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data dir of the session's embedded server (see tests/conftest.py)."""
    base = tmp_path_factory.getbasetemp()
    found = [p.parent.parent for p in base.glob("pg*/pg/PG_VERSION")]
    assert found, "no session embedded server"
    return found[0]


def test_serve_on_every_interface_requires_keys_and_stops_on_sigterm(
    pg_admin_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTORE_")}
    env.update(
        {
            "RAGSTORE_DATA_DIR": str(_session_data_dir(tmp_path_factory)),
            "RAGSTORE_PROFILE": "test",
            "RAGSTORE_AUTH": "auto",
            "RAGSTORE_MODEL": "no-such-model",
        }
    )  # skip loading a model at start
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from ragstore.cli import main; main()",
            "serve",
            "--host",
            "",
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 150
        status = None
        while time.monotonic() < deadline:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/v1/collections", timeout=5).status_code
                break
            except httpx.TransportError:
                assert proc.poll() is None, "serve exited"
                time.sleep(0.5)
        assert status == 401  # all interfaces: the embedded database is not left open
        family = psutil.Process(proc.pid).children(recursive=True)
        assert len(family) >= 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0  # a clean stop, as with one worker (below)
        _gone, alive = psutil.wait_procs(family, timeout=30)
        assert alive == []
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_one_process_serve_stopped_by_a_signal_exits_0_as_several_do(
    pg_admin_uri: str,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
    stop: signal.Signals,
) -> None:
    """``serve --workers 1`` stopped by SIGTERM died of the signal uvicorn raised again
    after its graceful shutdown (status -15, 143 in a shell: "Error" to Kubernetes), and
    exited 130 on SIGINT, while ``--workers 2`` exits 0 on the same stop. Both
    now stop gracefully and exit 0."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTORE_")}
    env.update(
        {
            "RAGSTORE_DATA_DIR": str(_session_data_dir(tmp_path_factory)),
            "RAGSTORE_PROFILE": "test",
            "RAGSTORE_AUTH": "off",
            "RAGSTORE_MODEL": "no-such-model",  # skip loading a model at start
        }
    )
    serve = [sys.executable, "-c", "from ragstore.cli import main; main()", "serve"]
    args = ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    log = tmp_path / "serve.err"
    with log.open("wb") as err:
        proc = subprocess.Popen([*serve, *args], env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 150
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve exited"
                time.sleep(0.5)
        proc.send_signal(stop)
        status = proc.wait(timeout=60)
        assert status == 0, (status, log.read_text(errors="replace")[-2000:])
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_several_workers_without_a_metrics_folder_share_one_set_of_metrics(
    pg_admin_uri: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """``serve --workers 2`` with no ``PROMETHEUS_MULTIPROC_DIR``: each worker counted on
    its own and each scrape showed whichever worker answered, so counters jumped back and
    forth (resets to Prometheus). serve now gives the workers a private folder, every
    scrape sees every request, and the folder goes when the server stops."""
    from prometheus_client.parser import text_string_to_metric_families

    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RAGSTORE_") and k.lower() != "prometheus_multiproc_dir"
    }
    env.update(
        {
            "RAGSTORE_DATA_DIR": str(_session_data_dir(tmp_path_factory)),
            "RAGSTORE_PROFILE": "test",
            "RAGSTORE_AUTH": "off",
            "RAGSTORE_MODEL": "no-such-model",  # skip loading a model at start
            "TMPDIR": str(tmp_path),
        }
    )
    serve = [sys.executable, "-c", "from ragstore.cli import main; main()", "serve"]
    args = ["--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    proc = subprocess.Popen(
        [*serve, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 150
        while True:
            try:
                httpx.get(f"{url}/metrics", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve exited"
                time.sleep(0.5)
        with ThreadPoolExecutor(8) as pool:  # fresh connections, spread over the workers
            statuses = list(pool.map(lambda _: httpx.get(f"{url}/healthz").status_code, range(40)))
        assert statuses == [200] * 40
        seen = []
        for _ in range(6):
            text = httpx.get(f"{url}/metrics", timeout=10).text
            seen.append(
                sum(
                    s.value
                    for f in text_string_to_metric_families(text)
                    for s in f.samples
                    if s.name == "ragstore_http_requests_total" and s.labels["route"] == "/healthz"
                )
            )
        assert seen == [40] * 6, seen
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert not list(tmp_path.glob("ragstore-metrics-*"))
