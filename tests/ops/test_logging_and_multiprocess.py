"""Log rendering and redaction rules, and metrics merged across worker processes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ragstore.observability.logging import bind_request, configure_logging, get_logger


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def test_secrets_are_masked_and_queries_dropped_by_default() -> None:
    out = io.StringIO()
    configure_logging("info", log_format="json", stream=out)
    try:
        with bind_request("req-7", collection="handbook"):
            get_logger("ragstore.test").info(
                "searched",
                query="where is the payroll file",
                api_key="rsk_abc",
                database_url="postgresql://u:pw@h/db",
                note="connecting to postgresql://app:hunter2@db:5432/x failed",
            )
    finally:
        configure_logging("warning", log_format="json")
    [line] = _lines(out)
    assert line["request_id"] == "req-7" and line["collection"] == "handbook"
    assert "query" not in line
    assert line["api_key"] == "**********" and line["database_url"] == "**********"
    assert line["note"] == "connecting to postgresql://app:**********@db:5432/x failed"
    assert list(line)[:3] == ["timestamp", "level", "event"]


def test_a_keyword_conninfo_loses_its_password_as_a_url_does() -> None:
    """libpq's other form (``host=db password=s3cret``, which RAGSTORE_DATABASE_URL and
    the replicas' list take) kept its password in a log line, a URL's was masked; in a
    message (a standard-library logger's too) and in any field."""
    import logging

    out = io.StringIO()
    configure_logging("info", log_format="json", stream=out)
    try:
        get_logger("ragstore.test").info(
            "could not connect to host=db user=app password=hunter2 dbname=x",
            note="tried host=db password = 'two words\\' here' port=5432 and PGPASSWORD=pw3",
            url="postgresql://db/x?user=app&password=pw4",
        )
        logging.getLogger("ragstore.test").warning("replica %s down", "host=r1 password=pw5")
    finally:
        configure_logging("warning", log_format="json")
    raw = out.getvalue()
    for secret in ("hunter2", "two words", "here'", "pw3", "pw4", "pw5"):
        assert secret not in raw, raw
    first, second = _lines(out)
    assert first["event"] == "could not connect to host=db user=app password=********** dbname=x"
    assert (
        first["note"] == "tried host=db password = ********** port=5432 and PGPASSWORD=**********"
    )
    assert second["event"] == "replica host=r1 password=********** down"


def test_a_password_holding_an_at_sign_is_masked_whole_in_a_url() -> None:
    """An embedding endpoint's URL in an error (``cannot reach http://u:p@ss@host/...``)
    kept what followed the password's first ``@``: the host starts after the last one,
    as httpx reads it, and the whole password is masked (in a traceback too)."""
    import logging

    out = io.StringIO()
    configure_logging("info", log_format="json", stream=out)
    url = "http://embed:p@ss-Hunter2@127.0.0.1:9/v1/embeddings"
    try:
        get_logger("ragstore.test").warning("embedding failed", error=f"cannot reach {url}")
        try:
            raise RuntimeError(f"{url} answered HTTP 503")
        except RuntimeError:
            logging.getLogger("ragstore.test").exception("batch failed")
    finally:
        configure_logging("warning", log_format="json")
    assert "Hunter2" not in out.getvalue(), out.getvalue()
    first, second = _lines(out)
    assert first["error"] == "cannot reach http://embed:**********@127.0.0.1:9/v1/embeddings"
    assert "http://embed:**********@127.0.0.1:9/v1/embeddings answered" in str(second["exception"])


def test_a_field_holding_a_dict_list_or_object_is_masked_inside() -> None:
    """Only string fields were masked: a dict's (or list's) URL password and its secret
    keys' values, and an object whose repr shows a URL password, were logged whole. The
    rest is kept as it was (numbers stay numbers), and a list holding itself ends."""

    class Endpoint:
        def __repr__(self) -> str:
            return "Endpoint('http://embed:Hunter2@127.0.0.1:9/v1')"

    looped: list[object] = [1]
    looped.append(looped)
    out = io.StringIO()
    configure_logging("info", log_format="json", stream=out)
    try:
        get_logger("ragstore.test").info(
            "sent",
            options={"base_url": "http://embed:Hunter2@127.0.0.1:9/v1", "batch_size": 64},
            headers=[{"authorization": "Bearer Hunter2"}, ("dsn", "postgresql://u:Hunter2@db/x")],
            endpoint=Endpoint(),
            looped=looped,
        )
    finally:
        configure_logging("warning", log_format="json")
    assert "Hunter2" not in out.getvalue(), out.getvalue()
    (line,) = _lines(out)
    assert line["options"] == {
        "base_url": "http://embed:**********@127.0.0.1:9/v1",
        "batch_size": 64,
    }
    assert line["headers"] == [
        {"authorization": "**********"},
        ["dsn", "postgresql://u:**********@db/x"],
    ]
    assert line["endpoint"] == "Endpoint('http://embed:**********@127.0.0.1:9/v1')"
    assert str(line["looped"]).startswith("[1, [1, [1, ")


def test_queries_are_logged_when_turned_on() -> None:
    out = io.StringIO()
    configure_logging("info", log_format="json", log_queries=True, stream=out)
    try:
        get_logger("ragstore.test").info("searched", query="where is the payroll file")
    finally:
        configure_logging("warning", log_format="json")
    assert _lines(out)[0]["query"] == "where is the payroll file"


def test_a_terminal_gets_readable_lines_not_json() -> None:
    out = _Terminal()
    configure_logging("info", stream=out)
    try:
        get_logger("ragstore.test").info("ingested", documents=3)
    finally:
        configure_logging("warning", log_format="json")
    text = out.getvalue()
    assert "ingested" in text and "documents=3" in text
    assert not text.lstrip().startswith("{")


_CHILD = """
import sys
from ragstore.observability import metrics
metrics.observe_http("POST", "/v1/collections/{name}/search", 200, 0.02)
metrics.observe_search("vector", 0.01, 5)
metrics.POOL_MAX.set(10)
if len(sys.argv) > 1:
    metrics.mark_process_dead_at_exit()
"""


def test_metrics_of_several_processes_are_merged(tmp_path: Path) -> None:
    folder = tmp_path / "prom"
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(folder))
    # two writers exit cleanly (their live gauges go); one stays "alive" (its file stays)
    for argv in (["dead"], ["dead"], []):
        subprocess.run([sys.executable, "-c", _CHILD, *argv], env=env, check=True, timeout=120)
    render = (
        "import sys; from ragstore.observability import metrics; "
        "sys.stdout.write(metrics.render().decode())"
    )
    text = subprocess.run(
        [sys.executable, "-c", render],
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    ).stdout
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    key = (
        "ragstore_http_requests_total",
        (("method", "POST"), ("route", "/v1/collections/{name}/search"), ("status", "200")),
    )
    assert samples[key] == 3
    assert samples[("ragstore_search_duration_seconds_count", (("mode", "vector"),))] == 3
    # livesum gauges count live processes only: the two that exited are gone
    assert samples[("ragstore_db_pool_max_connections", ())] == 10


_KILLED = """
import os
from ragstore.observability import metrics
metrics.mark_process_dead_at_exit()
metrics.POOL_MAX.set(10)
metrics.HTTP_IN_FLIGHT.inc()
metrics.observe_replica("r1", False, 99.0)
os._exit(0)  # like SIGKILL or the OOM killer: no atexit hook runs
"""

_LIVE = """
import sys
from ragstore.observability import metrics
metrics.mark_process_dead_at_exit()  # a worker starting: what install_observability runs
metrics.POOL_MAX.set(10)
metrics.observe_replica("r1", True, 0.5)
print("ready", flush=True)
sys.stdin.read()
"""


def test_a_killed_worker_leaves_no_gauges_behind(tmp_path: Path) -> None:
    """A worker that died without its atexit hook (killed, OOM) and was replaced must not
    keep its gauges in every scrape: its pool and in-flight figures summed forever, its
    last view of a replica (down, far behind) shown in place of the live workers'."""
    folder = tmp_path / "prom"
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(folder))
    subprocess.run([sys.executable, "-c", _KILLED], env=env, check=True, timeout=120)
    live = subprocess.Popen(
        [sys.executable, "-c", _LIVE],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert live.stdout is not None and live.stdout.readline().strip() == "ready"
        render = (
            "import sys; from ragstore.observability import metrics; "
            "sys.stdout.write(metrics.render().decode())"
        )
        text = subprocess.run(
            [sys.executable, "-c", render],
            env=env,
            check=True,
            timeout=120,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        live.communicate("", timeout=60)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[("ragstore_db_pool_max_connections", ())] == 10
    assert samples.get(("ragstore_http_requests_in_flight", ()), 0) == 0
    assert samples[("ragstore_db_replica_up", (("replica", "r1"),))] == 1
    assert samples[("ragstore_db_replica_lag_seconds", (("replica", "r1"),))] == 0.5


_STARTS = """
from ragstore.observability import metrics
metrics.mark_process_dead_at_exit()  # a worker starting: what install_observability runs
"""


def _render_in(env: dict[str, str]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    code = (
        "import sys; from ragstore.observability import metrics; "
        "sys.stdout.write(metrics.render().decode())"
    )
    text = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    ).stdout
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_exited_workers_totals_are_archived_not_kept_file_by_file(tmp_path: Path) -> None:
    """Every worker that exited (cleanly or killed) left its counter and histogram files
    in the multiprocess folder, read by every scrape for the life of the folder: a server
    whose workers were replaced over months piled up files without bound. A worker
    starting now folds those of exited processes into one archive per type, every total
    unchanged."""
    folder = tmp_path / "prom"
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(folder))
    search = (
        "ragstore_http_requests_total",
        (("method", "POST"), ("route", "/v1/collections/{name}/search"), ("status", "200")),
    )
    for round_ in (1, 2):
        for argv in (["dead"], []):  # one exits through atexit, one without
            subprocess.run([sys.executable, "-c", _CHILD, *argv], env=env, check=True, timeout=120)
        subprocess.run([sys.executable, "-c", _STARTS], env=env, check=True, timeout=120)
        names = sorted(p.name for p in folder.glob("*.db"))
        per_pid = [n for n in names if n.startswith(("counter_", "histogram_"))]
        assert {"counter_archive.db", "histogram_archive.db"} <= set(per_pid), names
        # besides, only the starter's own files (it defined the metrics), until the next start
        assert len({n.split("_")[1] for n in per_pid} - {"archive.db"}) == 1, names
        samples = _render_in(env)
        assert samples[search] == 2 * round_
        assert samples[("ragstore_search_duration_seconds_count", (("mode", "vector"),))] == (
            2 * round_
        )
        assert samples[
            ("ragstore_search_duration_seconds_sum", (("mode", "vector"),))
        ] == pytest.approx(0.01 * 2 * round_)
        bucket = ("ragstore_search_duration_seconds_bucket", (("le", "0.01"), ("mode", "vector")))
        assert samples[bucket] == 2 * round_
        assert (
            samples[
                ("ragstore_search_duration_seconds_bucket", (("le", "0.005"), ("mode", "vector")))
            ]
            == 0
        )


_GAUGES = """
import os, sys
from prometheus_client import Gauge
from ragstore.observability import metrics
metrics.observe_http("GET", "/healthz", 200, 0.01)
metrics.set_build_info("v" + sys.argv[1], "test")
metrics.POOL_MAX.set(10)
for mode in ("sum", "max", "min", "all", "mostrecent"):
    Gauge("t_" + mode, "a gauge merged by " + mode, multiprocess_mode=mode, registry=None).set(
        float(sys.argv[1])
    )
os._exit(0)  # like SIGKILL: no atexit hook runs
"""


def test_exited_processes_gauges_are_folded_or_dropped_by_mode(tmp_path: Path) -> None:
    """The gauge files of exited processes stayed for good: the folder and every scrape
    grew with each worker ever started, and a max-merged gauge (the build info) went on
    reporting a dead worker's version. Now live gauges (all of ragstore's, build info
    included) and per-process (``all``) series go with their process; sum, max, min and
    mostrecent gauges are folded into one archive each, every figure unchanged."""
    folder = tmp_path / "prom"
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(folder))
    for value in ("3", "7", "5"):
        subprocess.run([sys.executable, "-c", _GAUGES, value], env=env, check=True, timeout=120)
    before = _render_in(env)
    assert before[("t_sum", ())] == 15 and before[("t_max", ())] == 7
    assert before[("t_min", ())] == 3 and before[("t_mostrecent", ())] == 5
    subprocess.run([sys.executable, "-c", _STARTS], env=env, check=True, timeout=120)
    names = sorted(p.name for p in folder.iterdir())
    gauges = [n for n in names if n.startswith("gauge_")]
    assert sorted(gauges) == [f"gauge_{m}_archive.db" for m in ("max", "min", "mostrecent", "sum")]
    # one lock and one set of files: the starter's own (the renderer's were swept too)
    assert len([n for n in names if n.startswith(".ragstore-alive-")]) == 1, names
    after = _render_in(env)
    for name in ("t_sum", "t_max", "t_min", "t_mostrecent"):
        assert after[(name, ())] == before[(name, ())], name
    assert not [k for k in after if k[0] == "t_all"]
    assert not [k for k in after if k[0] == "ragstore_build_info"]
    assert after.get(("ragstore_db_pool_max_connections", ()), 0) == 0
    assert (
        after[
            (
                "ragstore_http_requests_total",
                (("method", "GET"), ("route", "/healthz"), ("status", "200")),
            )
        ]
        == 3
    )


_OLD_WRITER = """
import sys
from prometheus_client import Counter  # no ragstore: files named by the bare pid
Counter("t_old", "counted by an older ragstore", registry=None).inc(int(sys.argv[1]))
if len(sys.argv) > 2:  # stays alive, its file mapped, until told
    print("ready", flush=True)
    sys.stdin.readline()
"""


def test_bare_pid_files_and_half_made_locks_of_exited_processes_are_swept(
    tmp_path: Path,
) -> None:
    """Files named by a bare pid (an older ragstore's) were never swept, nor a lock file
    a process killed as it made it left under its temporary ``.lock.new`` name: both
    stayed for good. A bare pid's files go when no process has the pid, or when the one
    that has it (the pid reused) does not map them; a live writer's stay. A half-made
    lock goes when it is old and not locked; a young or locked one stays. Every total
    stays what it was."""
    import fcntl
    import shutil

    folder = tmp_path / "prom"
    folder.mkdir()  # made by ragstore's import, which these writers skip
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(folder))
    old = [sys.executable, "-c", _OLD_WRITER]
    subprocess.run([*old, "3"], env=env, check=True, timeout=120)
    [dead] = list(folder.glob("counter_*.db"))
    subprocess.run([*old, "5"], env=env, check=True, timeout=120)
    [reused] = [p for p in folder.glob("counter_*.db") if p != dead]
    live = subprocess.Popen(
        [*old, "4", "stay"], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    other = subprocess.Popen(["sleep", "120"])  # has a pid, maps no metrics file
    try:
        assert live.stdout is not None and live.stdout.readline() == "ready\n"
        shutil.move(reused, folder / f"counter_{other.pid}.db")
        token = "1-" + "0" * 16
        stale, young, held = (
            folder / f".ragstore-alive-{token[:-1]}{i}.lock.new" for i in range(3)
        )
        for path in (stale, young, held):
            path.touch()
        for path in (stale, held):
            os.utime(path, (time.time() - 600, time.time() - 600))
        before = _render_in(env)
        assert before[("t_old_total", ())] == 12
        with open(held, "rb+") as holder:
            fcntl.flock(holder, fcntl.LOCK_EX)
            subprocess.run([sys.executable, "-c", _STARTS], env=env, check=True, timeout=120)
        names = {p.name for p in folder.iterdir()}
        bare = {n for n in names if n.startswith("counter_") and n[8:-3].isdigit()}
        assert bare == {f"counter_{live.pid}.db"}, names
        assert young.name in names and held.name in names and stale.name not in names
        assert _render_in(env)[("t_old_total", ())] == 12
    finally:
        for proc in (other, live):
            proc.kill()
            proc.communicate()  # waits, and closes its pipes


_NAMESPACED = """
import os, sys
from ragstore.observability import metrics
metrics.mark_process_dead_at_exit()
def count(n):
    for _ in range(n):
        metrics.observe_http("GET", "/healthz", 200, 0.01)
    metrics.POOL_MAX.set(10)
count(int(sys.argv[1]))
print("ready", os.getpid(), flush=True)
sys.stdin.readline()
count(1)
print("done", flush=True)
sys.stdin.readline()
"""


def _in_own_pid_namespace() -> list[str]:
    """The command prefix that runs a process as pid 1 of a pid namespace of its own."""
    # --kill-child: killing unshare kills the process (else it would run on, orphaned)
    prefix = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child"]
    try:
        probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("unshare cannot be run here")
    if probe.returncode != 0:
        pytest.skip(f"no pid namespaces here: {probe.stderr.decode(errors='replace')}")
    return prefix


def test_processes_of_other_pid_namespaces_are_told_apart(tmp_path: Path) -> None:
    """Two containers sharing one multiprocess folder each have a pid 1: both wrote
    ``counter_1.db``, one process's counts overwriting the other's, and a process was
    taken for dead or alive by a pid lookup in the sweeper's own namespace (a dead pid 1
    there looks alive: its files and gauges stayed for good). Files are named by a token
    of each process now, and a process counts as exited once its lock can be taken."""
    prefix = _in_own_pid_namespace()
    folder = tmp_path / "prom"
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(folder))
    writers = [
        subprocess.Popen(
            [*prefix, sys.executable, "-c", _NAMESPACED, n],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in ("3", "5")
    ]
    key = (
        "ragstore_http_requests_total",
        (("method", "GET"), ("route", "/healthz"), ("status", "200")),
    )
    try:
        for writer in writers:
            assert writer.stdout is not None and writer.stdin is not None
            assert writer.stdout.readline().split() == ["ready", "1"]
        # a worker starting on the host while both run: neither is taken for exited
        subprocess.run([sys.executable, "-c", _STARTS], env=env, check=True, timeout=120)
        assert _render_in(env)[key] == 8
        assert _render_in(env)[("ragstore_db_pool_max_connections", ())] == 20
        for writer in writers:
            assert writer.stdin is not None and writer.stdout is not None
            writer.stdin.write("\n")
            writer.stdin.flush()
            assert writer.stdout.readline().strip() == "done"
        writers[0].stdin.write("\n")  # type: ignore[union-attr]
        writers[0].stdin.flush()  # type: ignore[union-attr]
        writers[0].wait(timeout=60)  # exits cleanly
        writers[1].kill()  # killed: no atexit hook
        writers[1].wait(timeout=60)
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait(timeout=60)
            for pipe in (writer.stdin, writer.stdout):
                if pipe is not None:
                    pipe.close()
    subprocess.run([sys.executable, "-c", _STARTS], env=env, check=True, timeout=120)
    names = sorted(p.name for p in folder.iterdir())
    assert not [n for n in names if n.startswith("gauge_")], names
    assert len([n for n in names if n.startswith(".ragstore-alive-")]) == 1, names
    samples = _render_in(env)
    assert samples[key] == 10
    assert samples.get(("ragstore_db_pool_max_connections", ()), 0) == 0


_BROKEN = """
import os, shutil, sys
from ragstore.errors import ConfigError
from ragstore.observability import metrics
metrics.observe_http("GET", "/healthz", 200, 0.01)
folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
if sys.argv[1] == "removed":
    shutil.rmtree(folder)
else:
    with open(os.path.join(folder, "counter_1.db"), "wb") as f:
        f.write(b"\\x10\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\xff\\xff\\xff\\x7f")
try:
    metrics.render()
except ConfigError as exc:
    print("CONFIG", exc.message)
"""


def test_a_broken_multiprocess_folder_is_one_clear_error(tmp_path: Path) -> None:
    """A multiprocess folder removed under the server (a temp cleaner) or holding a
    damaged file failed each scrape with a bare ValueError or struct.error: an internal
    error, a traceback in the log. It is a ConfigError naming the folder now."""
    for how in ("removed", "damaged"):
        folder = tmp_path / how
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(folder))
        done = subprocess.run(
            [sys.executable, "-c", _BROKEN, how],
            env=env,
            timeout=120,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("CONFIG "), (how, done.stdout, done.stderr)
        assert f"PROMETHEUS_MULTIPROC_DIR={folder}" in done.stdout


def test_the_worker_command_logs_structured_json_lines(cli_env: dict[str, str]) -> None:
    """``ragstore worker`` configures the same JSON logging as the API."""
    env = {**os.environ, **cli_env, "RAGSTORE_LOG_FORMAT": "json", "RAGSTORE_LOG_LEVEL": "info"}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from ragstore.cli import main; main()",
            "worker",
            "--burst",
            "--name",
            "w-test",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    events = {line["event"]: line for line in lines}
    assert events["worker started"]["worker"] == "w-test"
    assert events["worker started"]["level"] == "info"
    assert "worker stopped" in events


def test_a_console_line_with_newlines_or_escapes_in_its_message_stays_one_line() -> None:
    """Standard-library messages carry request data in their text (a request path in the
    WAL warning, an error's message): in console format a newline in it started what read
    as a second record, and an ANSI escape reached the operator's terminal."""
    import logging

    out = io.StringIO()
    configure_logging("info", log_format="console", stream=out)
    try:
        forged = "/v1/x\n2026-12-06T00:00:00Z [error    ] forged [ragstore]\x1b[2J\u0085end"
        logging.getLogger("ragstore.api.routing").warning("after %s: failed", forged)
        get_logger("ragstore.test").info(
            "ev\r\nforged", note="a\nb", collection="c\x1b[2J\x1b]0;t\x07\u2028x"
        )
    finally:
        configure_logging("warning", log_format="json")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert "\x1b" not in out.getvalue() and "\u0085" not in out.getvalue()
    assert "/v1/x\\n2026" in lines[0] and "\\x1b[2J" in lines[0]
    assert "\u2028" not in out.getvalue() and "\x07" not in out.getvalue()
    assert "collection=c\\x1b[2J" in lines[1], lines[1]


_NO_STDERR = r"""
import logging, os, sys
from ragstore.observability.logging import configure_logging, get_logger
assert sys.stderr is None  # Python started with fd 2 closed
mode, path = sys.argv[1], sys.argv[2]
if mode == "reopened":  # a service wrapper puts its log file on fd 2 after the start
    assert os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) == 2
configure_logging("info", log_format="json")
if mode == "closed":  # a file opened later (the connection to PostgreSQL)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    print("fd", fd)
get_logger("ragstore.test").info("ours", mode=mode)
logging.getLogger("uvicorn.error").warning("a library's")
print("done")
"""


@pytest.mark.parametrize("mode", ["reopened", "closed"])
def test_logging_without_stderr_uses_fd_2_or_drops_lines_quietly(tmp_path: Path, mode: str) -> None:
    """A process not started through the CLI's ``main`` (``python -m ragstore.api``,
    uvicorn importing the app) with fd 2 closed has no ``sys.stderr``: every log line was
    dropped unsaid, though a service wrapper had put its log file on fd 2 since. Lines go
    to fd 2 now where it is open; where it is closed they are dropped without an error,
    and /dev/null holds fd 2, so a file opened later does not take its number (and what a
    library writes to stderr)."""
    path = tmp_path / "fd2.log"
    done = subprocess.run(
        [sys.executable, "-c", _NO_STDERR, mode, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.close(2),
    )
    assert done.returncode == 0, done.stdout
    assert done.stdout.endswith("done\n"), done.stdout
    written = path.read_text()
    if mode == "reopened":
        events = [json.loads(line)["event"] for line in written.splitlines()]
        assert events == ["ours", "a library's"], written
    else:
        assert "fd 2\n" not in done.stdout, done.stdout
        assert written == ""
