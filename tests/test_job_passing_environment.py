"""A background job's document not stored because the worker ran out of file descriptors
(a real EMFILE: the open-files limit lowered as the worker reads the document's staged
file) or because its parse helper could not start for a cause that passes (a real helper
killed by a signal as it starts) is run again, as for an unreachable database, and,
still not stored after the job's last run, fails the job naming the cause. On the real
database, with the real model, through :func:`run_job`.

Before, the job took either for the document's own failure: it ran once and was
recorded ``succeeded`` with the document never stored, and nothing sent it again. A
helper that will not start whatever the wait (it exits as it starts) is still not run
again for."""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ragstore.db import jobs as store
from ragstore.errors import ParseHelperUnavailableError, ResourcesExhaustedError
from ragstore.ingest import prepare
from ragstore.jobs import runner
from ragstore.jobs.queue import build_queue
from ragstore.jobs.runner import run_job
from ragstore.jobs.service import submit_ingest
from ragstore.parsing import sandbox
from ragstore.runtime import Runtime
from ragstore.store import Store
from tests.test_job_passing_errors import _stored, _text

# over the size from which Markdown is parsed in a helper (RAGSTORE_PARSE_TIMEOUT_S)
BIG = b"# A title\n\n" + b"A paragraph of some words.\n\n" * 800


def _queue(rt: Runtime, collection: str, files: dict[str, bytes]) -> int:
    queue = build_queue(rt.db.conninfo, sync=True)
    with queue.open():
        jobs = [store.JobFile(n, content) for n, content in files.items()]
        return submit_ingest(rt, queue, collection, jobs).id


def _job(rt: Runtime, job_id: int) -> store.JobRecord:
    with rt.db.connection() as conn:
        return store.get(conn, job_id)


def _counted_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The runs of the job's ingest, one entry each."""
    ingest = runner._ingest
    runs: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        runs.append(1)
        return ingest(*args, **kwargs)

    monkeypatch.setattr(runner, "_ingest", counted)
    return runs


def _no_descriptor_for(monkeypatch: pytest.MonkeyPatch, name: str, times: int) -> list[str]:
    """The worker's read of document ``name``'s staged file meets a real EMFILE its first
    ``times`` reads: the open-files limit is lowered to the lowest free descriptor for the
    read and put back after it. The errors met, by code."""
    read = prepare.read_with_stat
    met: list[str] = []

    def tight(path: Path, limit: int, label: str | None = None) -> Any:
        if label != name or len(met) >= times:
            return read(path, limit, label)
        fd = os.open(os.devnull, os.O_RDONLY)
        os.close(fd)  # the lowest free descriptor: with the limit there, the open fails
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (fd, hard))
        try:
            return read(path, limit, label)
        except OSError as exc:
            met.append(os.strerror(exc.errno or 0))
            raise
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    monkeypatch.setattr(prepare, "read_with_stat", tight)
    return met


def test_a_job_whose_worker_runs_out_of_descriptors_runs_again_and_stores_it(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker has no descriptor left as it reads one document (a low ``ulimit -n``,
    many jobs at once): ``resources_exhausted``, a state that passes. The job ran once,
    ``succeeded`` with {'added': 1, 'failed': 1} and the document never stored; it runs
    again now and stores it."""
    monkeypatch.setattr(runner, "RETRY_S", 0.01)
    met = _no_descriptor_for(monkeypatch, "tight.md", times=1)
    runs = _counted_runs(monkeypatch)
    name = "pass-emfile"
    Store.from_runtime(rt).create_collection(name)
    done = run_job(rt, _queue(rt, name, {"tight.md": _text("tight"), "calm.md": _text("calm")}))
    assert met == ["Too many open files"]  # the real error was met, in the first run
    assert (done.status, done.errors, len(runs)) == ("succeeded", [], 2), done.errors
    assert done.summary.get("added") == 2, done.summary
    assert _stored(rt, name) == ["calm.md", "tight.md"]


def test_a_job_whose_worker_stays_out_of_descriptors_fails_naming_the_cause(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of descriptors in every run of the job: the job fails (it was ``succeeded``,
    the document never stored), with ``resources_exhausted`` saying which document was
    not stored, why, and to send it again; its record of the document says to upload it
    again (the client uploaded it: not "ingest it again")."""
    monkeypatch.setattr(runner, "RETRY_S", 0.01)
    monkeypatch.setattr(runner, "ATTEMPTS", 2)
    met = _no_descriptor_for(monkeypatch, "tight.md", times=2)
    runs = _counted_runs(monkeypatch)
    name = "pass-emfile-always"
    Store.from_runtime(rt).create_collection(name)
    job_id = _queue(rt, name, {"tight.md": _text("tight"), "calm.md": _text("calm")})
    with pytest.raises(ResourcesExhaustedError):  # recorded, and told the queue
        run_job(rt, job_id)
    failed = _job(rt, job_id)
    assert (met, len(runs)) == (["Too many open files"] * 2, 2)
    assert failed.status == "failed", (failed.summary, failed.errors)
    assert [(e["document"], e["code"]) for e in failed.errors] == [
        ("tight.md", "resources_exhausted"),
        (None, "resources_exhausted"),
    ]
    document, whole = (e["detail"] for e in failed.errors)
    assert document.startswith(
        "tight.md: reading it failed in this process, not because of the file (OSError: "
        "[Errno 24] Too many open files); it was not stored: upload it again; raise the "
        "open-files limit (ulimit -n) or upload fewer files at once"
    ), document
    assert whole == (
        "1 of the job's 2 documents were not stored ('tight.md'): the worker ran out of file "
        "descriptors or memory reading them (Too many open files, Cannot allocate memory: "
        "raise its open-files limit, ulimit -n or LimitNOFILE, or free memory), in 2 runs "
        "of the job; send them again (the documents that were stored stay stored)"
    ), whole
    assert failed.summary.get("added") == 1 and failed.summary.get("failed") == 1
    assert _stored(rt, name) == ["calm.md"]


@pytest.fixture
def helpers(monkeypatch: pytest.MonkeyPatch) -> Iterator[sandbox._Helpers]:
    """A pool of parse helpers of the test's own, stopped after it."""
    pool = sandbox._Helpers()
    monkeypatch.setattr(sandbox, "_helpers", pool)
    yield pool
    pool.stop()


def _helpers_end_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ending: str, times: int
) -> Path:
    """The next ``times`` parse helpers started end (``ending``: a statement) before they
    are ready: a ``sitecustomize`` on their path runs it as their interpreter starts, in
    each that takes one of the tokens in the folder returned (removing it: one each)."""
    site = tmp_path / "ending-site"
    site.mkdir()
    tokens = tmp_path / "ends-left"
    tokens.mkdir()
    for i in range(times):
        (tokens / str(i)).touch()
    (site / "sitecustomize.py").write_text(
        "import os\n"
        f"_tokens = {str(tokens)!r}\n"
        "def _took():\n"
        "    for t in os.listdir(_tokens):\n"
        "        try:\n"
        "            os.remove(os.path.join(_tokens, t))\n"
        "            return True\n"
        "        except FileNotFoundError:\n"
        "            pass\n"
        "    return False\n"
        "if _took():\n"
        f"    {ending}\n"
    )
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(site), path) if p))
    return tokens


def test_a_job_whose_parse_helper_is_killed_as_it_starts_runs_again_and_stores_it(
    rt: Runtime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    helpers: sandbox._Helpers,
) -> None:
    """The parse helper for the job's large document is killed as it starts (SIGKILL:
    the out-of-memory killer): ``parse_helper_unavailable`` with a retry hint, a cause
    that passes. The job ran once and ``succeeded`` with the document never stored; it
    runs again now and stores it."""
    monkeypatch.setattr(runner, "RETRY_S", 0.01)
    left = _helpers_end_at_start(tmp_path, monkeypatch, "os.kill(os.getpid(), 9)", times=1)
    runs = _counted_runs(monkeypatch)
    name = "pass-helper-killed"
    Store.from_runtime(rt).create_collection(name)
    done = run_job(rt, _queue(rt, name, {"big.md": BIG, "calm.md": _text("calm")}))
    assert not any(left.iterdir())  # a helper was killed as it started
    assert (done.status, done.errors, len(runs)) == ("succeeded", [], 2), done.errors
    assert done.summary.get("added") == 2, done.summary
    assert _stored(rt, name) == ["big.md", "calm.md"]


def test_a_job_whose_parse_helper_is_killed_in_every_run_fails_naming_the_cause(
    rt: Runtime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    helpers: sandbox._Helpers,
) -> None:
    monkeypatch.setattr(runner, "RETRY_S", 0.01)
    monkeypatch.setattr(runner, "ATTEMPTS", 2)
    left = _helpers_end_at_start(tmp_path, monkeypatch, "os.kill(os.getpid(), 9)", times=2)
    runs = _counted_runs(monkeypatch)
    name = "pass-helper-killed-always"
    Store.from_runtime(rt).create_collection(name)
    job_id = _queue(rt, name, {"big.md": BIG, "calm.md": _text("calm")})
    with pytest.raises(ParseHelperUnavailableError):  # recorded, and told the queue
        run_job(rt, job_id)
    failed = _job(rt, job_id)
    assert not any(left.iterdir())  # a helper killed as it started, in each run
    assert failed.status == "failed" and len(runs) == 2, (failed.summary, failed.errors)
    assert [(e["document"], e["code"]) for e in failed.errors] == [
        ("big.md", "parse_helper_unavailable"),
        (None, "parse_helper_unavailable"),
    ]
    document, whole = (e["detail"] for e in failed.errors)
    assert document.startswith(
        f"big.md: not parsed, so not stored: the parse helper ({sys.executable} -m "
        "ragstore.parsing.sandbox) ended before it was ready (killed by signal 9"
    ), document
    assert whole == (
        "1 of the job's 2 documents were not stored ('big.md'): the worker could not start "
        "a parse helper for them (no descriptor, memory or process slot left, or the "
        "helper killed or slow to start: raise the worker's limits or free memory, or set "
        "RAGSTORE_PARSE_TIMEOUT_S=0), in 2 runs of the job; send them again (the documents "
        "that were stored stay stored)"
    ), whole
    assert _stored(rt, name) == ["calm.md"]


def test_a_job_whose_parse_helper_exits_as_it_starts_is_not_run_again(
    rt: Runtime,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    helpers: sandbox._Helpers,
) -> None:
    """A helper that exits with a status as it starts (it cannot import ragstore) will
    exit again: the ingest stops there (``stops_reading``) and the job is not run again
    for it; it ends as before, its documents' errors listed."""
    monkeypatch.setattr(runner, "RETRY_S", 0.01)
    left = _helpers_end_at_start(tmp_path, monkeypatch, "os._exit(3)", times=5)
    runs = _counted_runs(monkeypatch)
    name = "pass-helper-exits"
    Store.from_runtime(rt).create_collection(name)
    done = run_job(rt, _queue(rt, name, {"big.md": BIG}))
    assert len(list(left.iterdir())) == 4 and len(runs) == 1  # one helper start, one run
    assert [(e["document"], e["code"]) for e in done.errors] == [
        ("big.md", "parse_helper_unavailable")
    ], done.errors
    assert _stored(rt, name) == []


def test_the_passing_causes_of_environment_faults() -> None:
    """The cause of each error, as the job reads it: a helper's error with a retry hint
    passes, one without (it will fail the same way) does not."""
    assert runner.passing_cause(ResourcesExhaustedError("x: out of descriptors")) == "resources"
    assert (
        runner.passing_cause(ParseHelperUnavailableError("x: killed", retry_after=5.0))
        == "parse_helper"
    )
    assert runner.passing_cause(ParseHelperUnavailableError("x: no Python")) is None
