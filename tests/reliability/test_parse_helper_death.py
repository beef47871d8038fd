"""A parse helper that dies says how: the file's error names its exit status, the signal
that killed it and what that signal means, that it ran out of memory, or that ragstore
stopped it. Before, the helper was killed before its status was read, so a helper ending
after a traceback (Python closes its pipe while it shuts down) was "killed by signal 9".

The helpers here are real processes (``python -m ragstore.parsing.sandbox``) started with a
``sitecustomize`` on their path that replaces their ``parse_bytes``: a file whose first
line names a way to die dies that way in the helper, as a parser library would.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragstore.errors import CorruptDocumentError, FileTooLargeError, RagstoreError
from ragstore.parsing import sandbox
from tests.fixtures.builders import pdf_bytes

# run by the helper's interpreter at its start, before it imports the sandbox module
_SITECUSTOMIZE = """
import os, resource, signal, sys, threading

# a crash here must not leave a core file in the working directory
resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))

import ragstore.parsing.registry as registry

real_parse_bytes = registry.parse_bytes


def parse_bytes(data, name, fmt=None, **kwargs):
    how = data.split(b"\\n", 1)[0]
    if how == b"traceback":  # an error no parser maps: Python exits with status 1
        raise KeyError("a bug in the parser")
    if how == b"system-exit":  # a library calling sys.exit()
        raise SystemExit(0)
    if how == b"os-exit":
        os._exit(3)
    if how == b"segfault":  # a C extension's crash
        os.kill(os.getpid(), signal.SIGSEGV)
    if how == b"sigkill":  # the kernel's out-of-memory killer
        os.kill(os.getpid(), signal.SIGKILL)
    if how == b"memory":  # past the helper's address-space cap, outside any parser
        raise MemoryError
    if how == b"hang":  # its answer pipe closed, and it does not end
        os.close(int(sys.argv[2]))
        threading.Event().wait()
    return real_parse_bytes(data, name, fmt, **kwargs)


registry.parse_bytes = parse_bytes
"""


@pytest.fixture
def dying_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Helpers started from here on run ``_SITECUSTOMIZE``; a pool of their own, stopped
    after the test (other tests' helpers are left as they are)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(site), path) if p))
    helpers = sandbox._Helpers()
    monkeypatch.setattr(sandbox, "_helpers", helpers)
    yield
    helpers.stop()


def _dies(how: str) -> RagstoreError:
    """The error of a PDF whose parse ends its helper ``how``."""
    with pytest.raises(RagstoreError) as caught:
        sandbox.parse_file(how.encode() + b"\n%PDF-1.4", "dies.pdf", "pdf", 60.0)
    return caught.value


ENDED_BY_ITSELF = [
    ("traceback", "exited with status 1 while reading it"),
    ("system-exit", "exited with status 0 while reading it"),
    ("os-exit", "exited with status 3 while reading it"),
    ("segfault", "was killed by signal 11 (SIGSEGV: the parser library crashed)"),
    ("sigkill", "was killed by signal 9 (SIGKILL, not from ragstore: the system's out-of-memory"),
]


@pytest.mark.usefixtures("dying_helpers")
@pytest.mark.parametrize(("how", "said"), ENDED_BY_ITSELF, ids=[h for h, _ in ENDED_BY_ITSELF])
def test_a_helper_that_ends_by_itself_is_reported_as_it_ended(how: str, said: str) -> None:
    error = _dies(how)
    assert type(error) is CorruptDocumentError
    assert error.code == "corrupt_document"
    assert str(error).startswith(f"dies.pdf: the pdf parser's process {said}")
    assert str(error).endswith("check that the file is complete and well-formed")
    if how in ("traceback", "system-exit"):
        assert "its traceback, if any, is on the ingest's standard error" in str(error)
    # the next file gets a new helper and is read
    parsed = sandbox.parse_file(pdf_bytes([["after the death"]]), "next.pdf", "pdf", 60.0)
    assert "after the death" in parsed.blocks[0].text


@pytest.mark.usefixtures("dying_helpers")
def test_a_helper_out_of_memory_is_the_limits_error() -> None:
    error = _dies("memory")
    assert type(error) is FileTooLargeError
    assert error.code == "payload_too_large"
    gib = sandbox._memory_limit() / (1 << 30)
    assert str(error) == (
        f"dies.pdf: the pdf parser ran out of memory reading it (the parse helper may take "
        f"{gib:.1f} GiB: at most 4 GiB, and half the machine's memory); check the file, or "
        "split it"
    )


@pytest.mark.usefixtures("dying_helpers")
def test_a_helper_that_stops_answering_but_lives_is_stopped_and_said_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the helper never ends by itself here: the wait only decides how soon it is killed
    monkeypatch.setattr(sandbox, "EXIT_WAIT_S", 0.5)
    pids: list[int] = []
    real_end = sandbox._Helper.end

    def end(helper: sandbox._Helper) -> bool:
        pids.append(helper.proc.pid)
        return real_end(helper)

    monkeypatch.setattr(sandbox._Helper, "end", end)
    error = _dies("hang")
    assert type(error) is CorruptDocumentError
    assert str(error) == (
        "dies.pdf: the pdf parser's process stopped answering while reading it (its pipe "
        "closed) and had not ended 0.5 s later, so ragstore stopped it; check that the "
        "file is complete and well-formed"
    )
    (pid,) = pids
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running
        os.kill(pid, 0)
