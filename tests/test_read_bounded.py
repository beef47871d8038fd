"""Reading a file within the size limit: its bytes, or FileTooLargeError, also for a file
that grows between the size check and the read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ragstore.errors import FileTooLargeError
from ragstore.files import read_bounded


class _Growing(type(Path())):  # type: ignore[misc]
    """A real file whose stat() is taken before ``extra`` bytes are appended to it."""

    extra = b""

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        st = super().stat(follow_symlinks=follow_symlinks)
        with open(self, "ab") as fh:
            fh.write(self.extra)
        return st


def test_a_file_within_the_limit_is_read_whole(tmp_path: Path) -> None:
    f = tmp_path / "a.md"
    for data in (b"x", b"hello\n" * 600, b"y" * 4096):
        f.write_bytes(data)
        assert read_bounded(f, 4096) == data
    f.write_bytes(b"y" * 4097)
    with pytest.raises(FileTooLargeError, match="4097 bytes is over the limit of 4096"):
        read_bounded(f, 4096)


def test_a_file_that_grows_while_read_is_read_to_the_limit_or_refused(tmp_path: Path) -> None:
    f = _Growing(tmp_path / "g.md")
    f.write_bytes(b"a" * 100)
    f.extra = b"b" * 50  # still within the limit: every byte there at the read
    assert read_bounded(f, 1000) == b"a" * 100 + b"b" * 50
    f.write_bytes(b"a" * 100)
    f.extra = b"c" * 2000  # past the limit
    with pytest.raises(FileTooLargeError, match="grew past the limit of 1000 bytes"):
        read_bounded(f, 1000)


def test_a_file_replaced_by_a_pipe_is_refused_without_waiting(tmp_path: Path) -> None:
    """A file the folder's walk found, replaced by a pipe before it was read (or named
    through a link retargeted meanwhile): the open waited for a writer, and the whole
    ingest with it, forever."""
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as Timeout

    from ragstore.errors import FileUnreadableError

    pipe = tmp_path / "p.md"
    os.mkfifo(pipe)
    with ThreadPoolExecutor(max_workers=1) as pool:
        read = pool.submit(read_bounded, pipe, 1000)
        try:
            with pytest.raises(FileUnreadableError, match=r"p\.md: not a regular file"):
                read.result(timeout=10)
        except Timeout:
            with open(pipe, "wb"):  # lets the stuck open go on, so the test can end
                pass
            pytest.fail("reading a pipe waited for a writer")


def test_a_file_written_during_the_read_is_read_again_with_its_own_stat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bytes come with the status of the version they are: a file written while it
    was read (seen by its status on the open file, after the read) is read again. The
    status used to be looked up by name after the parse, so a file changed in between
    got the new ``modified_at`` with the old content (or half of each)."""
    from ragstore import files

    f = tmp_path / "w.md"
    f.write_bytes(b"old " * 10)
    os.utime(f, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    real = os.fstat
    calls = 0

    def fstat_then_write(fd: int) -> os.stat_result:
        nonlocal calls
        calls += 1
        st = real(fd)
        if calls == 1:  # the status before the read: the file is written right after it
            with open(f, "r+b") as fh:
                fh.write(b"NEW!")
            os.utime(f, ns=(2_000_000_000_000_000_000, 2_000_000_000_000_000_000))
        return st

    monkeypatch.setattr(files.os, "fstat", fstat_then_write)
    data, st = files.read_with_stat(f, 1000)
    assert data == b"NEW!" + b"old " * 9
    assert st.st_mtime_ns == 2_000_000_000_000_000_000


def test_a_file_that_never_stops_changing_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ragstore import files
    from ragstore.errors import FileUnreadableError

    f = tmp_path / "busy.md"
    f.write_bytes(b"x")
    real = os.fstat

    def fstat_then_append(fd: int) -> os.stat_result:
        st = real(fd)
        with open(f, "ab") as fh:
            fh.write(b"y")
        return st

    monkeypatch.setattr(files.os, "fstat", fstat_then_append)
    with pytest.raises(FileUnreadableError, match=r"busy\.md: it kept changing while it was read"):
        files.read_with_stat(f, 1000)
