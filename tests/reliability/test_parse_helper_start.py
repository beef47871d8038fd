"""A parse helper that fails to start, or is interrupted while it starts, leaves nothing
behind: no descriptor, no process, and :func:`stop_helpers` reaches it.

Before, a failed start kept two pipe descriptors each time and raised the raw OSError (the
ingest then called the file unreadable); an interrupt during the half second a helper takes
to start left its process running; and ``stop_helpers()`` (an interrupted ingest) did not
see a helper starting, so the interrupted ingest waited for its whole parse.

The helpers here are real processes whose start is held: a ``sitecustomize`` on their path
blocks before they say they are ready. The test sees a thread waiting for one through the
sandbox's pipe (its ``poll``), and interrupts or stops it there.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
import pytest

from ragstore.errors import ParseHelperUnavailableError, RagstoreError
from ragstore.parsing import sandbox

MARKDOWN = b"# A title\n\n" + b"A paragraph of some words.\n\n" * 800  # 20 KB: in a helper


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _children() -> set[int]:
    """This process's child processes, zombies too (a helper killed but not reaped)."""
    return {p.pid for p in psutil.Process().children()}


@pytest.fixture
def fresh_helpers(monkeypatch: pytest.MonkeyPatch) -> Iterator[sandbox._Helpers]:
    """A pool of helpers of the test's own, stopped after it."""
    helpers = sandbox._Helpers()
    monkeypatch.setattr(sandbox, "_helpers", helpers)
    yield helpers
    helpers.stop()


def test_a_helper_that_cannot_start_leaves_no_descriptor_and_says_why(
    monkeypatch: pytest.MonkeyPatch, fresh_helpers: sandbox._Helpers
) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    before = _open_fds()
    for _ in range(5):
        with pytest.raises(RagstoreError) as caught:
            sandbox.parse_file(b"%PDF-1.4 junk", "x.pdf", "pdf", timeout_s=5)
        error = caught.value
        # one ragstore error, not the OSError (which the ingest took for an unreadable
        # file), and its own: an internal_error read as a bug of ragstore
        assert type(error) is ParseHelperUnavailableError
        assert str(error) == (
            "x.pdf: not parsed, so not stored: the parse helper (/nonexistent/python3 -m "
            "ragstore.parsing.sandbox) could not start: its Python cannot be run ([Errno 2] "
            "No such file or directory: '/nonexistent/python3'); check that this Python (the "
            "ingesting process's own) exists and runs, or set RAGSTORE_PARSE_TIMEOUT_S=0 to "
            "parse in the ingesting process (without a time limit)"
        )
        assert error.retry_after is None  # waiting does not bring an interpreter
        assert isinstance(error.__cause__, FileNotFoundError)
    assert _open_fds() == before
    assert not fresh_helpers.busy and not fresh_helpers.idle


# parse_file of a file for a helper, with no descriptor left for the helper's pipes
_NO_DESCRIPTOR_FOR_PIPES = """
import json, os, resource
from ragstore.parsing import sandbox

fd = os.open(os.devnull, os.O_RDONLY)
os.close(fd)  # the lowest free descriptor: with the limit there, the next open fails
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (fd, hard))
try:
    sandbox.parse_file(b"# A title\\n\\n" * 2000, "big.md", "markdown", 60.0)
    got = None
except Exception as exc:
    got = exc
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
print(json.dumps({"code": getattr(got, "code", None), "message": str(got),
                  "retry_after": getattr(got, "retry_after", None)}))
"""


def test_a_helper_with_no_descriptor_left_says_so_and_when_to_retry() -> None:
    """No descriptor left for a helper's pipes (EMFILE: a low ``ulimit -n``, many files
    at once): an ``internal_error``, the words of a bug. Its own error now, naming the
    OS's reason and the remedy, and retryable (it passes as other work ends)."""
    run = subprocess.run(
        [sys.executable, "-c", _NO_DESCRIPTOR_FOR_PIPES],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["code"] == "parse_helper_unavailable", got
    assert got["message"] == (
        f"big.md: not parsed, so not stored: the parse helper ({sys.executable} -m "
        "ragstore.parsing.sandbox) could not start: no file descriptor left for its pipes "
        "([Errno 24] Too many open files); raise the open-files limit (ulimit -n; "
        "LimitNOFILE for a service) or ingest fewer files at once, or set "
        "RAGSTORE_PARSE_TIMEOUT_S=0 to parse in the ingesting process (without a time limit)"
    ), got
    assert got["retry_after"] == 5.0  # sandbox.START_RETRY_AFTER_S


@pytest.mark.parametrize(
    ("ending", "how", "retry_after"),
    [
        ("os._exit(3)", "exit status 3", None),  # it will exit again: no retry
        ("os.kill(os.getpid(), 9)", "killed by signal 9", 5.0),
    ],
)
def test_a_helper_that_ends_before_it_is_ready_says_how(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_helpers: sandbox._Helpers,
    ending: str,
    how: str,
    retry_after: float | None,
) -> None:
    """A helper that ended before it said it was ready (it cannot import ragstore; the
    out-of-memory killer) was "did not start within 120 s (exit status 3)", an
    ``internal_error``: neither the time nor the code was true."""
    ends_at_start(tmp_path, monkeypatch, ending)
    with pytest.raises(ParseHelperUnavailableError) as caught:
        sandbox.parse_file(MARKDOWN, "big.md", "markdown", 60.0)
    assert str(caught.value).startswith(
        f"big.md: not parsed, so not stored: the parse helper ({sys.executable} -m "
        f"ragstore.parsing.sandbox) ended before it was ready ({how}; its traceback, if any, "
        "is on standard error); check that this Python runs and can import ragstore"
    ), caught.value
    assert caught.value.retry_after == retry_after
    assert not fresh_helpers.busy and not fresh_helpers.idle


def ends_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ending: str) -> None:
    """Parse helpers started from here on end (``ending``: a statement) before they are
    ready: a ``sitecustomize`` on their path runs it as their interpreter starts."""
    site = tmp_path / "ending-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"import os\n{ending}\n")
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(site), path) if p))


@dataclass
class HeldStart:
    """Helpers whose start is held; ``waiting`` is set when a thread waits for one."""

    waiting: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def held_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_helpers: sandbox._Helpers
) -> Iterator[HeldStart]:
    """Helpers started from here on block at their start, before they say they are
    ready (as one does for seconds on a loaded machine); one never ready fails after 20 s.
    Any child left after the test is killed (a failure here must not leave it blocked)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import threading\nthreading.Event().wait()\n")
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(site), path) if p))
    monkeypatch.setattr(sandbox, "STARTUP_TIMEOUT_S", 20.0)
    held = HeldStart()

    class SeenConnection(Connection):
        def poll(self, timeout: float | None = 0.0) -> bool:
            held.waiting.set()
            return super().poll(timeout)

    monkeypatch.setattr(sandbox, "Connection", SeenConnection)
    before = _children()
    yield held
    for pid in _children() - before:  # the test failed on it; not left blocked
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()
            psutil.Process(pid).wait(10)


def test_an_interrupt_while_a_helper_starts_leaves_no_process(held_start: HeldStart) -> None:
    before = _children()

    interrupted = threading.Event()

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if not interrupted.is_set():  # once: a second must not cut the cleanup short
            interrupted.set()
            raise KeyboardInterrupt

    main = threading.get_ident()

    def ctrl_c() -> None:  # a Ctrl-C while the helper starts, delivered to this thread
        held_start.waiting.wait(60)
        # sent again until it is handled: a signal that reaches the main thread just
        # before it blocks in poll() can wait there unhandled (CPython 3.11 lets another
        # thread clear the main thread's pending-signal check)
        while not interrupted.wait(0.2):
            signal.pthread_kill(main, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", ResourceWarning)
            got_interrupt = _interrupted_parse(ctrl_c)
            gc.collect()  # a Popen left running says so when it is collected
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert held_start.waiting.is_set()
    assert got_interrupt
    assert _children() == before  # killed and reaped, not left running
    assert [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)] == []


def _interrupted_parse(ctrl_c: Any) -> bool:
    """Whether ``parse_file`` raised KeyboardInterrupt with ``ctrl_c`` running beside it
    (a function of its own: the traceback, and the helper it holds, end with it)."""
    thread = threading.Thread(target=ctrl_c)
    thread.start()
    try:
        sandbox.parse_file(MARKDOWN, "big.md", "markdown", 60.0)
    except KeyboardInterrupt:
        return True
    finally:
        thread.join()
    return False


def test_stop_helpers_stops_a_helper_another_thread_is_starting(held_start: HeldStart) -> None:
    before = _children()
    outcome: list[object] = []

    def parse() -> None:
        try:
            outcome.append(sandbox.parse_file(MARKDOWN, "big.md", "markdown", 60.0))
        except BaseException as exc:  # what the thread got is the outcome
            outcome.append(exc)

    reader = threading.Thread(target=parse)
    reader.start()
    assert held_start.waiting.wait(60)
    sandbox.stop_helpers()  # the ingest's Ctrl-C: Preparer.interrupt
    reader.join(60)
    assert not reader.is_alive()
    (got,) = outcome
    assert type(got) is KeyboardInterrupt, got
    assert _children() == before


def test_stop_helpers_during_a_helpers_spawn_stops_it(
    held_start: HeldStart, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop that comes while the process is being made, before the helper is among the
    busy ones: it is stopped as soon as it is."""
    before = _children()

    class StoppedMeanwhile(subprocess.Popen[bytes]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            sandbox.stop_helpers()

    monkeypatch.setattr(subprocess, "Popen", StoppedMeanwhile)
    with pytest.raises(KeyboardInterrupt):
        sandbox.parse_file(MARKDOWN, "big.md", "markdown", 60.0)
    assert not held_start.waiting.is_set()  # never waited for it to start
    assert _children() == before
