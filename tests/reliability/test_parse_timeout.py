"""A file whose parser would run for minutes, or die, fails alone and the ingest goes on
(``parsing.sandbox``); a file whose text unpacks past ``RAGSTORE_MAX_FILE_BYTES`` is refused.

The slow input is real: a PDF of a few kilobytes whose pages all draw one large deflated
content stream (``pdf_shared_stream``), which pypdf reads again for every page.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragstore.config import Settings
from ragstore.errors import CorruptDocumentError, RagstoreError
from ragstore.ingest import ingest_paths, prepare
from ragstore.ingest.service import FileOutcome, IngestInterrupted
from ragstore.parsing import sandbox
from ragstore.runtime import Runtime
from ragstore.search import search
from tests.fixtures.builders import pdf_bytes, pdf_shared_stream

SLOW_PDF = (20_000, 5)  # about 1.1 MB of text and several seconds of pypdf, from 4 KB
# four times the work (21 s of pypdf on an idle machine, where SLOW_PDF took 5.6 s): sure to
# outlast a limit of seconds that must leave time for another helper's start meanwhile
SLOWER_PDF = (20_000, 20)


@pytest.fixture(scope="module")
def limited(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings.model_copy(update={"parse_timeout_s": 1.0}))
    yield rt
    rt.close()


def _folder(folder: Path) -> Path:
    folder.mkdir()
    (folder / "a-slow.pdf").write_bytes(pdf_shared_stream(*SLOW_PDF))
    (folder / "b-fine.pdf").write_bytes(pdf_bytes([["Octopuses taste with their arms."]]))
    (folder / "c-notes.md").write_text("# Notes\n\nKittens sleep all day.\n")
    return folder


def _by_name(report_outcomes: list[FileOutcome]) -> dict[str, tuple[str, str | None]]:
    return {Path(o.source).name: (o.status, o.code) for o in report_outcomes}


# parses the PDF on stdin in a process of its own, saying when it starts
_PARSE_STDIN = """
import sys
from ragstore.parsing import parse_bytes
data = sys.stdin.buffer.read()
print("parsing", flush=True)
parse_bytes(data, "slow.pdf", "pdf")
"""


def test_a_pdf_parsing_past_the_limit_fails_alone(limited: Runtime, tmp_path: Path) -> None:
    # the slow PDF must outlast the 1 s limit: its parse is still running after 2 s (and is
    # stopped there, where parsing it to the end here took seconds more)
    proc = subprocess.Popen(
        [sys.executable, "-c", _PARSE_STDIN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=False,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(pdf_shared_stream(*SLOW_PDF))
        proc.stdin.close()
        assert proc.stdout.readline() == b"parsing\n"
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=2.0)
        assert proc.poll() is None, f"the slow PDF must outlast the 1 s limit: {proc.poll()}"
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    report = ingest_paths(limited, [_folder(tmp_path / "docs")], collection="slowpdf")
    outcomes = {Path(o.source).name: o for o in report.outcomes}
    assert outcomes["a-slow.pdf"].status == "failed"
    assert outcomes["a-slow.pdf"].code == "parse_timeout"
    assert "RAGSTORE_PARSE_TIMEOUT_S" in (outcomes["a-slow.pdf"].error or "")
    # the PDF after it was parsed by a new helper; both good files are stored and found
    assert outcomes["b-fine.pdf"].status == "added"
    assert outcomes["c-notes.md"].status == "added"
    hits = search(limited, "octopus arms taste", collection="slowpdf", k=3)
    assert hits and Path(hits[0].source).name == "b-fine.pdf"


def test_parse_workers_stop_a_slow_pdf_too(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In forked parse workers (a large ingest) each worker has its own helper."""
    monkeypatch.setattr(prepare, "MIN_POOL_BYTES", 0)
    monkeypatch.setattr(prepare, "FILES_PER_TASK", 1)
    rt = Runtime(settings.model_copy(update={"parse_timeout_s": 1.0, "ingest_workers": 2}))
    try:
        report = ingest_paths(rt, [_folder(tmp_path / "docs")], collection="slowpdf_workers")
    finally:
        rt.close()
    assert _by_name(report.outcomes) == {
        "a-slow.pdf": ("failed", "parse_timeout"),
        "b-fine.pdf": ("added", None),
        "c-notes.md": ("added", None),
    }


def test_a_parser_that_dies_fails_its_file_and_the_next_file_is_read() -> None:
    """The helper killed mid-parse (as the OOM killer would): that file is
    ``corrupt_document``, and the next one gets a new helper. A file's own error leaves
    its helper in service."""
    slow = pdf_shared_stream(*SLOW_PDF)
    failure: list[RagstoreError] = []

    def parse() -> None:
        try:
            sandbox.parse_file(slow, "dies.pdf", "pdf", 120.0)
        except RagstoreError as exc:
            failure.append(exc)

    sandbox._helpers.stop()
    with pytest.raises(CorruptDocumentError, match="not a readable PDF"):
        sandbox.parse_file(b"%PDF-1.4 truncated", "broken.pdf", "pdf", 30.0)
    (kept,) = sandbox._helpers.idle
    sandbox.parse_file(pdf_bytes([["warm up"]]), "warm.pdf", "pdf", 30.0)
    (helper,) = sandbox._helpers.idle
    assert helper is kept
    worker = threading.Thread(target=parse)
    worker.start()
    time.sleep(1.0)  # it is parsing
    os.kill(helper.proc.pid, signal.SIGKILL)
    worker.join(30)
    assert not worker.is_alive()
    assert len(failure) == 1 and isinstance(failure[0], CorruptDocumentError)
    assert "killed by signal 9" in str(failure[0])
    parsed = sandbox.parse_file(pdf_bytes([["after the crash"]]), "next.pdf", "pdf", 30.0)
    assert "after the crash" in parsed.blocks[0].text
    assert [h.proc.pid for h in sandbox._helpers.idle] != [helper.proc.pid]


def test_a_slow_file_holds_one_helper_not_every_caller() -> None:
    """While one thread's file runs toward the limit, another thread's PDF is parsed by a
    second helper (an API server parses its uploads side by side)."""
    slow_done = threading.Event()
    failure: list[RagstoreError] = []

    def parse_slow() -> None:
        try:
            sandbox.parse_file(pdf_shared_stream(*SLOWER_PDF), "slow.pdf", "pdf", 5.0)
        except RagstoreError as exc:
            failure.append(exc)
        slow_done.set()

    worker = threading.Thread(target=parse_slow)
    worker.start()
    time.sleep(0.5)
    parsed = sandbox.parse_file(pdf_bytes([["side by side"]]), "quick.pdf", "pdf", 30.0)
    assert not slow_done.is_set(), "the quick file waited for the slow one"
    assert "side by side" in parsed.blocks[0].text
    worker.join(60)
    assert len(failure) == 1 and getattr(failure[0], "code", "") == "parse_timeout"


def test_ctrl_c_does_not_wait_for_a_slow_parse(rt: Runtime, tmp_path: Path) -> None:
    """Ctrl-C during a parse ends the ingest at once: the helper is killed, the file is not
    reported as failed (it was not stored; a re-run reads it again), none is left running.
    The PDF here would take pypdf over a minute."""
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "endless.pdf").write_bytes(pdf_shared_stream(20_000, 40))
    interrupted_at: list[float] = []

    def ctrl_c() -> None:
        deadline = time.monotonic() + 120
        while not sandbox._helpers.busy and time.monotonic() < deadline:
            time.sleep(0.05)  # until the PDF is being parsed
        time.sleep(1.0)
        interrupted_at.append(time.perf_counter())
        # to the main thread, as the kernel delivers a terminal's Ctrl-C
        main = threading.main_thread().ident
        assert main is not None
        signal.pthread_kill(main, signal.SIGINT)

    # Python's own Ctrl-C handler, as `ragstore ingest` has it (a test before this one in
    # the same session may have left another)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=ctrl_c, daemon=True).start()
    try:
        with pytest.raises(IngestInterrupted) as caught:
            ingest_paths(rt, [folder], collection="interrupted")
    finally:
        signal.signal(signal.SIGINT, previous)
    waited = time.perf_counter() - interrupted_at[0]
    assert waited < 20.0, f"the interrupt waited {waited:.1f} s for the parse"
    assert caught.value.report.outcomes == []
    assert not sandbox._helpers.busy
    assert all(h.proc.returncode is not None or h.usable() for h in sandbox._helpers.idle)


def test_text_unpacking_past_the_file_limit_is_refused(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    bomb = pdf_shared_stream(2_000, 5)  # 1.6 KB of file, 110,000 characters of text
    (folder / "bomb.pdf").write_bytes(bomb)
    (folder / "notes.md").write_text("# Notes\n\nKittens sleep all day.\n")
    rt = Runtime(settings.model_copy(update={"max_file_bytes": 50_000}))
    try:
        report = ingest_paths(rt, [folder], collection="textbomb")
    finally:
        rt.close()
    outcomes = {Path(o.source).name: o for o in report.outcomes}
    assert len(bomb) < 50_000
    assert outcomes["bomb.pdf"].code == "payload_too_large"
    # counted while it was parsed, in its helper: stopped past the limit, not at the end
    assert "its text unpacks to more than 50000 characters" in (outcomes["bomb.pdf"].error or "")
    assert outcomes["notes.md"].status == "added"
