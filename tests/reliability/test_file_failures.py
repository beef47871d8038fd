"""One bad file fails alone: a parser crash is ``corrupt_document``, an unreadable file is
``file_unreadable`` (``path_not_found`` only when it is gone), and the rest is ingested."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from ragstore.config import Settings
from ragstore.ingest import ingest_paths, prepare
from ragstore.ingest.service import Item
from ragstore.parsing import registry, sandbox
from ragstore.runtime import Runtime
from tests.conftest import run_cli


def test_a_parser_crash_fails_one_file_and_the_rest_ingests(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parser that crashes inside a library fails its file alone. The real inputs that
    did it (HTML nested thousands deep, Python nested past the compiler's limits) are read
    now, so the crash is put in the HTML parser's place."""

    def crash(text: str, name: str) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setitem(registry.TEXT_PARSERS, "html", crash)
    (tmp_path / "page.html").write_text("<html><body><p>fine</p></body></html>")
    (tmp_path / "good.md").write_text("# Good\n\nKittens sleep all day.\n")
    report = ingest_paths(rt, [tmp_path], collection="parsers")
    by_name = {Path(o.source).name: o for o in report.outcomes}
    assert by_name["good.md"].status == "added"
    assert by_name["page.html"].status == "failed"
    assert by_name["page.html"].code == "corrupt_document"
    assert "nested too deeply" in (by_name["page.html"].error or "")


def test_inputs_nested_past_a_parsers_limits_are_read(rt: Runtime, tmp_path: Path) -> None:
    """HTML nested 50,000 deep and Python nested past ``ast``'s limits: text to read, not
    files to fail (each failed as "nested too deeply" or MemoryError before)."""
    (tmp_path / "deep.html").write_bytes(
        b"<html><body>" + b"<div>" * 50000 + b"deep words" + b"</div>" * 50000 + b"</body></html>"
    )
    (tmp_path / "deep.py").write_text("def f():\n    return " + "-" * 200000 + "1\n")
    report = ingest_paths(rt, [tmp_path], collection="nested")
    assert {Path(o.source).name: o.status for o in report.outcomes} == {
        "deep.html": "added",
        "deep.py": "added",
    }


def test_an_unreadable_file_is_not_called_missing(rt: Runtime, tmp_path: Path) -> None:
    (tmp_path / "good.md").write_text("# Fine\n\nreadable\n")
    report = ingest_paths(
        rt, [Path("/proc/self/mem"), tmp_path / "good.md"], collection="unreadable"
    )
    by_name = {Path(o.source).name: o for o in report.outcomes}
    assert by_name["mem"].status == "failed"
    assert by_name["mem"].code == "file_unreadable"
    assert by_name["good.md"].status == "added"


def test_oserror_labels() -> None:
    from ragstore.files import unreadable

    path = Path("/data/x.md")
    assert (
        unreadable(path, PermissionError(errno.EACCES, "Permission denied")).code
        == "file_unreadable"
    )
    assert unreadable(path, OSError(errno.EIO, "Input/output error")).code == "file_unreadable"
    assert (
        unreadable(path, FileNotFoundError(errno.ENOENT, "No such file")).code == "path_not_found"
    )


@pytest.mark.parametrize(
    ("err", "hint"),
    [
        (errno.EMFILE, "raise the open-files limit (ulimit -n) or upload fewer files at once"),
        (errno.ENFILE, "raise the open-files limit (ulimit -n) or upload fewer files at once"),
        (errno.ENOMEM, "free memory or upload fewer files at once"),
    ],
)
def test_the_process_out_of_descriptors_or_memory_is_resources_exhausted(
    err: int, hint: str
) -> None:
    """Not the file's fault and not a bug: a state that passes, said as such (503 with
    ``Retry-After``, exit 75: try again later), where it was ``internal_error``."""
    from ragstore.errors import ResourcesExhaustedError
    from ragstore.files import unreadable
    from ragstore.http.problems import problem_response

    got = unreadable(Path("/data/x.md"), OSError(err, os.strerror(err)), "upload")
    assert type(got) is ResourcesExhaustedError and got.code == "resources_exhausted"
    assert got.exit_code == 75
    assert str(got).startswith(
        "/data/x.md: reading it failed in this process, not because of the file (OSError: "
    ), got
    assert str(got).endswith(f"it was not stored: upload it again; {hint}"), got
    answer = problem_response(got, request_id="r-1", instance="/v1/x")
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"


# prepare() on one file with no descriptor left: the file's open fails with EMFILE
_NO_DESCRIPTOR_LEFT = """
import json, os, resource, sys
from pathlib import Path
from ragstore.ingest.prepare import Job, prepare
from ragstore.ingest.service import Item

path, label, origin = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
job = Job(counter=None, max_tokens=512, max_file_bytes=1 << 20, user_meta={})
item = Item(str(path), path, label, origin=origin)
fd = os.open(os.devnull, os.O_RDONLY)
os.close(fd)  # the lowest free descriptor: with the limit there, the next open fails
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (fd, hard))
got = prepare(job, item, None)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
print(json.dumps({"code": got.error.code, "message": str(got.error),
                  "retry_after": getattr(got.error, "retry_after", None)}))
"""


def _outcome_of(script: str, *args: str) -> dict[str, Any]:
    """What ``script`` (run in a Python of its own, its open-files limit lowered) prints:
    the error the file failed with, as JSON."""
    run = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    return cast(dict[str, Any], json.loads(run.stdout))


def test_a_process_out_of_descriptors_does_not_call_the_file_unreadable(tmp_path: Path) -> None:
    """A file that could not be opened because the ingesting process had no descriptor
    left (EMFILE: too many files open at once, a low ``ulimit -n``) failed as
    ``file_unreadable``, "check the file's permissions": a healthy file blamed, the cause
    unsaid; then an ``internal_error``, which TROUBLESHOOTING.md calls a bug to report.
    It is ``resources_exhausted`` (a state that passes: 503 with Retry-After, exit 75),
    naming the process's error and its remedy."""
    f = tmp_path / "healthy.md"
    f.write_text("# Fine\n\nA healthy file.\n")
    got = _outcome_of(_NO_DESCRIPTOR_LEFT, str(f), str(f), "file")
    assert got["code"] == "resources_exhausted", got
    assert got["retry_after"] == 5.0, got
    assert got["message"] == (
        f"{f}: reading it failed in this process, not because of the file (OSError: "
        "[Errno 24] Too many open files); it was not stored: ingest it again; raise "
        "the open-files limit (ulimit -n) or ingest fewer files at once"
    ), got


def test_an_uploaded_file_out_of_descriptors_says_to_upload_it_again(tmp_path: Path) -> None:
    """The server (or a worker) reading an upload's staged file with no descriptor left:
    its detail said "it was not stored: ingest it again; ... or ingest fewer files at
    once" to a client that had uploaded it. It says upload now, naming the client's name
    for the file, not the server's staging path."""
    staged = tmp_path / "staged-0001"
    staged.write_text("# Fine\n\nA healthy upload.\n")
    got = _outcome_of(_NO_DESCRIPTOR_LEFT, str(staged), "notes.md", "upload")
    assert got["code"] == "resources_exhausted", got
    assert got["message"] == (
        "notes.md: reading it failed in this process, not because of the file (OSError: "
        "[Errno 24] Too many open files); it was not stored: upload it again; raise "
        "the open-files limit (ulimit -n) or upload fewer files at once"
    ), got


def _item(path: Path) -> Item:
    return Item(str(path), path, str(path))


def _job(timeout_s: float) -> prepare.Job:
    # the counter is never reached: the file fails before it is chunked
    return prepare.Job(None, 512, 1 << 20, {}, parse_timeout_s=timeout_s)  # type: ignore[arg-type]


def test_an_oserror_of_the_parse_is_not_called_an_unreadable_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any OSError below the read (a parser's, a parse helper's pipe broken) was taken for
    "the file is unreadable; check its permissions". Only the read's is the file's now;
    the parse's says it is not (the parse put in its place raises one)."""
    f = tmp_path / "healthy.md"
    f.write_text("# Fine\n\nA healthy file.\n")

    def broken_pipe(*args: object, **kwargs: object) -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(prepare, "parse_file", broken_pipe)
    got = prepare.prepare(_job(0), _item(f), None)
    assert got.error is not None and got.error.code == "internal_error", got.error
    assert str(got.error).startswith(
        f"{f}: preparing it failed in this process, not because of the file "
        "(BrokenPipeError: [Errno 32] Broken pipe); it was not stored"
    ), got.error
    # a read's own error is still the file's
    gone = tmp_path / "gone.md"
    assert prepare.prepare(_job(0), _item(gone), None).error.code == "path_not_found"  # type: ignore[union-attr]


def test_a_parse_helper_that_cannot_start_is_that_error_not_the_files(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No interpreter at ``sys.executable`` for the parse helper: its start failed with a
    raw FileNotFoundError that the ingest called the file unreadable, then with an
    ``internal_error`` (a bug, TROUBLESHOOTING.md says); the ingest reports the helper's
    own error for the file, and the CLI exits non-zero with it."""
    monkeypatch.setattr(sandbox, "_helpers", sandbox._Helpers())
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    big = tmp_path / "big.md"
    big.write_bytes(b"# A title\n\n" + b"A paragraph of some words.\n\n" * 800)
    report = ingest_paths(rt, [tmp_path], collection="helperless")
    (outcome,) = report.outcomes
    assert outcome.status == "failed" and outcome.code == "parse_helper_unavailable", outcome
    assert (outcome.error or "").startswith(
        f"{big}: not parsed, so not stored: the parse helper (/nonexistent/python3 -m "
        "ragstore.parsing.sandbox) could not start: its Python cannot be run"
    ), outcome


def test_the_cli_names_a_parse_helper_that_cannot_start(
    cli_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sandbox, "_helpers", sandbox._Helpers())
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    (tmp_path / "big.md").write_bytes(BIG_MARKDOWN)
    (tmp_path / "later.md").write_bytes(BIG_MARKDOWN)
    # the ingest stopped there, with the helper's own status (69), not "some files failed"
    assert run_cli("ingest", str(tmp_path), "-c", "helperless-cli") == 69
    err = " ".join(capsys.readouterr().err.split())
    assert "failed [parse_helper_unavailable] " in err, err
    assert "could not start: its Python cannot be run" in err, err
    assert "1 failed, 1 not attempted" in err, err
    assert (
        "stopped by an error that fails every later file: 1 file(s) not attempted (nothing "
        "of them stored); fix the error below and run the same command again to resume"
    ) in err, err


BIG_MARKDOWN = b"# A title\n\n" + b"A paragraph of some words.\n\n" * 800  # in a helper


@pytest.mark.parametrize(
    ("bulk_load_bytes", "batch_chunks"),
    [(0, 1), (1, 1024)],  # round by round, one file each; a bulk load, all in one round
    ids=["rounds", "bulk"],
)
def test_a_parse_helper_that_will_not_start_stops_the_ingest(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    bulk_load_bytes: int,
    batch_chunks: int,
) -> None:
    """A helper that cannot start for a cause that does not pass (no interpreter to run):
    every later file parsed in a helper failed the same way, each after a start attempt
    of its own (a second or more each for a helper that exits at start), one line each.
    The ingest now stops at the first, as at a database gone: what it read before is
    stored (a bulk load's transaction, sound, commits), the rest is ``not_attempted``
    with how to resume, and running it again resumes."""
    tuned = settings.model_copy(
        update={"bulk_load_bytes": bulk_load_bytes, "ingest_batch_chunks": batch_chunks}
    )
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# First\n\nParsed in this process.\n")  # small: no helper
    (folder / "b.md").write_bytes(BIG_MARKDOWN)
    (folder / "c.md").write_bytes(BIG_MARKDOWN.replace(b"words", b"others"))
    (folder / "d.md").write_text("# Last\n\nAlso parsed in this process.\n")
    starts: list[int] = []
    spawn = sandbox._spawn

    def counted_spawn() -> Any:
        starts.append(1)
        return spawn()

    name = f"helper-stops-{bulk_load_bytes}"
    helpers = sandbox._Helpers()
    monkeypatch.setattr(sandbox, "_helpers", helpers)
    monkeypatch.setattr(sandbox, "_spawn", counted_spawn)
    with monkeypatch.context() as broken, Runtime(tuned) as rt:
        broken.setattr(sys, "executable", "/nonexistent/python3")
        report = ingest_paths(rt, [folder], collection=name)
    by_name = {Path(o.source).name: o for o in report.outcomes}
    assert {n: o.status for n, o in by_name.items()} == {
        "a.md": "added",
        "b.md": "failed",
        "c.md": "not_attempted",
        "d.md": "not_attempted",
    }, report.outcomes
    assert len(starts) == 1  # c.md was not given a start attempt of its own
    stop = report.stopped_by
    assert stop is not None and stop.code == "parse_helper_unavailable", stop
    assert by_name["b.md"].code == "parse_helper_unavailable"
    assert (by_name["c.md"].error or "").startswith(
        f"{folder / 'c.md'}: not stored: the ingest stopped at an error that fails every "
        f"later file ({folder / 'b.md'}: not parsed, so not stored: the parse helper "
    ), by_name["c.md"]
    assert (by_name["c.md"].error or "").endswith("run the ingest again once it is fixed")
    assert by_name["d.md"].code == "parse_helper_unavailable"
    try:
        with Runtime(tuned) as rt:  # its Python back: the same ingest resumes
            again = ingest_paths(rt, [folder], collection=name)
    finally:
        helpers.stop()  # the ones it started
    assert again.stopped_by is None and not again.failed, again.outcomes
    assert {Path(o.source).name: o.status for o in again.outcomes} == {
        "a.md": "unchanged",
        "b.md": "added",
        "c.md": "added",
        "d.md": "added",
    }


# a file read by the client's upload (planned, or sent) or by an import with no
# descriptor left: its open fails with EMFILE
_NO_DESCRIPTOR_LEFT_FOR = """
import json, os, resource, sys
from pathlib import Path
import ragstore.files
from ragstore._requests import StreamedFile
from ragstore.imports.files import JsonlSource

what, path = sys.argv[1], Path(sys.argv[2])
planned = StreamedFile(path) if what == "upload-send" else None
use = {
    "upload-plan": lambda: StreamedFile(path),
    "upload-send": lambda: planned.read(65536),
    "import": lambda: list(JsonlSource(path).records()),
}[what]
fd = os.open(os.devnull, os.O_RDONLY)
os.close(fd)  # the lowest free descriptor: with the limit there, the next open fails
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (fd, hard))
try:
    use()
    got = None
except Exception as exc:
    got = exc
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
print(json.dumps({"code": getattr(got, "code", None), "message": str(got),
                  "changed_source": hasattr(got, "changed_source")}))
"""


@pytest.mark.parametrize(
    ("what", "verb"), [("upload-plan", "upload"), ("upload-send", "upload"), ("import", "import")]
)
def test_an_upload_or_import_out_of_descriptors_does_not_call_the_file_unreadable(
    tmp_path: Path, what: str, verb: str
) -> None:
    """The client's upload (planning it, or sending the file) and an import of a JSONL
    file shared the ingest's ``files.unreadable`` but not its judgement of an EMFILE: a
    healthy file was "cannot read: Too many open files; check the file's permissions" (or,
    sent, "changed while the upload was being sent"). Each says what an ingest says."""
    f = tmp_path / "healthy.jsonl"
    f.write_text('{"id": "a", "text": "A healthy record.", "vector": [0.5, 0.5]}\n')
    got = _outcome_of(_NO_DESCRIPTOR_LEFT_FOR, what, str(f))
    assert got["code"] == "resources_exhausted", got
    assert got["message"] == (
        f"{f}: reading it failed in this process, not because of the file (OSError: "
        f"[Errno 24] Too many open files); it was not stored: {verb} it again; raise "
        f"the open-files limit (ulimit -n) or {verb} fewer files at once"
    ), got
    # a send cut short names its file to the upload's plan (nothing of the request stored)
    assert got["changed_source"] == (what == "upload-send"), got
