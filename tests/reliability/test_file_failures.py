"""One bad file fails alone: a parser crash is ``corrupt_document``, an unreadable file is
``file_unreadable`` (``path_not_found`` only when it is gone), and the rest is ingested."""

from __future__ import annotations

import errno
from pathlib import Path

from ragstore.ingest import ingest_paths
from ragstore.runtime import Runtime

DEEP_HTML = b"<html><body>" + b"<div>" * 50000 + b"x" + b"</div>" * 50000 + b"</body></html>"


def test_a_parser_crash_fails_one_file_and_the_rest_ingests(rt: Runtime, tmp_path: Path) -> None:
    (tmp_path / "deep.html").write_bytes(DEEP_HTML)
    (tmp_path / "good.md").write_text("# Good\n\nKittens sleep all day.\n")
    report = ingest_paths(rt, [tmp_path], collection="parsers")
    by_name = {Path(o.source).name: o for o in report.outcomes}
    assert by_name["good.md"].status == "added"
    assert by_name["deep.html"].status == "failed"
    assert by_name["deep.html"].code == "corrupt_document"
    assert "nested too deeply" in (by_name["deep.html"].error or "")


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
    from ragstore.ingest.service import unreadable

    path = Path("/data/x.md")
    assert (
        unreadable(path, PermissionError(errno.EACCES, "Permission denied")).code
        == "file_unreadable"
    )
    assert unreadable(path, OSError(errno.EIO, "Input/output error")).code == "file_unreadable"
    assert (
        unreadable(path, FileNotFoundError(errno.ENOENT, "No such file")).code == "path_not_found"
    )
