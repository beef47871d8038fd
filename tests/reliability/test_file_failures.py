"""One bad file fails alone: a parser crash is ``corrupt_document``, an unreadable file is
``file_unreadable`` (``path_not_found`` only when it is gone), and the rest is ingested."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from ragstore.ingest import ingest_paths
from ragstore.parsing import registry
from ragstore.runtime import Runtime


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
