"""A parser that runs out of memory in its helper fails its file as too large to parse
within the helper's memory cap (``payload_too_large``), as a helper that a MemoryError
ends does, and the helper goes on with the next file. It was ``corrupt_document`` ("the
epub parser could not read it (MemoryError: Unable to allocate output buffer.)"), which
sent users looking for a fault in a healthy file.

The MemoryError is real: a real helper, its address-space cap lowered from outside (as
``prlimit`` would) to a little more than it holds, and an EPUB of 100 KB whose chapter
zlib inflates to 96 MiB in one block.
"""

from __future__ import annotations

import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragstore.errors import FileTooLargeError
from ragstore.parsing import sandbox
from tests.fixtures.builders import EPUB_CHAPTER2_SENTENCE, epub_book

HEADROOM = 32 << 20  # what the helper may take past what it holds once started
CHAPTER = 96 << 20  # ... and what the chapter inflates to: three times more


@pytest.fixture
def helpers(monkeypatch: pytest.MonkeyPatch) -> Iterator[sandbox._Helpers]:
    """A pool of helpers of this test's own (its helper's cap is lowered), stopped after."""
    pool = sandbox._Helpers()
    monkeypatch.setattr(sandbox, "_helpers", pool)
    yield pool
    pool.stop()


def _read(data: bytes, name: str) -> list[str]:
    """The texts of the blocks of EPUB ``data``, parsed in a helper."""
    return [b.text for b in sandbox.parse_file(data, name, "epub", 300.0).blocks]


def _address_space(pid: int) -> int:
    """What process ``pid`` has mapped, in bytes (the measure RLIMIT_AS caps)."""
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmSize:"))
    return int(line.split()[1]) * 1024


def test_a_parser_out_of_memory_is_the_limits_error_and_its_helper_goes_on(
    helpers: sandbox._Helpers,
) -> None:
    small = epub_book()
    assert EPUB_CHAPTER2_SENTENCE in _read(small, "small.epub")
    (helper,) = helpers.idle
    pid = helper.proc.pid
    _, hard = resource.prlimit(pid, resource.RLIMIT_AS)
    cap = _address_space(pid) + HEADROOM
    resource.prlimit(pid, resource.RLIMIT_AS, (cap, hard))
    big = epub_book([("big.xhtml", "<h1>Big</h1><p>" + " " * CHAPTER + "end</p>")])
    assert len(big) < CHAPTER // 500  # small on disk: it is the parse that needs memory
    with pytest.raises(FileTooLargeError) as err:
        sandbox.parse_file(big, "big.epub", "epub", 300.0)
    assert err.value.code == "payload_too_large"
    assert str(err.value) == (
        f"big.epub: the epub parser ran out of memory reading it (the parse helper may take "
        f"{cap / (1 << 30):.1f} GiB: at most 4 GiB, and half the machine's memory); check "
        "the file, or split it"
    )
    # the parser raised MemoryError and the helper lived: the same one reads the next file
    assert helpers.idle == [helper] and helper.usable()
    assert EPUB_CHAPTER2_SENTENCE in _read(small, "next.epub")
    assert helpers.idle == [helper]
