"""Text files of degenerate structure do not take the ingesting process's memory: one that
breaks into more blocks than one per ``BYTES_PER_BLOCK`` bytes is refused, and a large one
is parsed in a helper whose address space is capped (``parsing.sandbox``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ragstore.errors import FileTooLargeError
from ragstore.parsing import parse_bytes, sandbox
from tests.fixtures.builders import pdf_bytes


def test_a_small_text_of_tiny_paragraphs_is_refused_in_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_helper() -> None:
        raise AssertionError("a small text file was sent to a helper")

    monkeypatch.setattr(sandbox._helpers, "lent", no_helper)
    data = b"a\n\n" * 20_000  # 60 KB, 20,000 paragraphs: over max(1000, 60,000 / 32)
    with pytest.raises(FileTooLargeError, match="20000 paragraphs, headings and other blocks"):
        sandbox.parse_file(data, "words.txt", "text", 300.0)


def test_a_large_text_of_tiny_paragraphs_is_refused_in_its_helper() -> None:
    data = b"a\n\n" * 360_000  # 1.08 MB: a large text, parsed in a helper
    assert len(data) >= sandbox.LARGE_TEXT_BYTES
    with pytest.raises(FileTooLargeError, match="360000 paragraphs"):
        sandbox.parse_file(data, "words.txt", "text", 300.0)
    assert sandbox._helpers.idle, "the file's own error leaves its helper in service"


def test_a_large_real_document_reads_the_same_in_its_helper() -> None:
    section = (
        "## Section {n}\n\nThe octopus tastes with its arms; each sucker holds chemical "
        "receptors, so touching is tasting. Section {n} repeats the point in other words "
        "so that the file is large and its paragraphs have the length of real prose.\n\n"
        "- a list item about arms\n- another about suckers\n\n"
    )
    data = ("# Octopuses\n\n" + "".join(section.format(n=n) for n in range(4_500))).encode()
    assert len(data) >= sandbox.LARGE_TEXT_BYTES
    isolated = sandbox.parse_file(data, "octopus.md", "markdown", 300.0)
    assert isolated == parse_bytes(data, "octopus.md", "markdown")
    assert len(isolated.blocks) > 9_000


def test_the_helpers_address_space_is_capped() -> None:
    sandbox.parse_file(pdf_bytes([["start a helper"]]), "x.pdf", "pdf", 300.0)
    helper = sandbox._helpers.idle[-1]
    limits = Path(f"/proc/{helper.proc.pid}/limits").read_text()
    line = next(x for x in limits.splitlines() if x.startswith("Max address space"))
    soft = int(line.split()[3])
    machine = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert soft == min(sandbox.HELPER_MEMORY_BYTES, machine // 2)
