"""Hostile text files parsed in the ingesting process (under the size sent to a helper):
each costs time and text in proportion to its size, not to its square."""

from __future__ import annotations

import time

import pytest

from ragstore.errors import ParseTimeoutError
from ragstore.parsing import parse_bytes, sandbox


def test_markdown_of_open_brackets_and_emphasis_is_read_in_linear_time() -> None:
    # markdown-it's inline rules were superlinear here: 200 KB of "[" took 13.7 s, 800 KB
    # of "*a" 23 s; only the block structure is used, so inline parsing is not run
    for name, data in (
        ("brackets.md", b"[" * 300_000),
        ("emphasis.md", b"*a" * 200_000),
        ("links.md", b"[a](" * 100_000),
    ):
        start = time.perf_counter()
        doc = parse_bytes(data, name)
        assert time.perf_counter() - start < 5.0, name
        assert "".join(b.text for b in doc.blocks) == data.decode()


def test_markdown_headings_keep_their_inline_markup_as_written() -> None:
    doc = parse_bytes(b"# The *big* [guide](x)\n\n> Some **bold** text.\n", "g.md")
    assert [b.text for b in doc.blocks] == ["The *big* [guide](x)", "> Some **bold** text."]
    assert doc.title == "The *big* [guide](x)"


def test_html_lists_nested_thousands_deep_cost_their_size_not_its_square() -> None:
    # each item's depth was counted over all its ancestors, its indent was not capped and
    # its text held every item below it: 64 KB nested 8,000 deep took 103 s and gave a
    # 64-million-character block
    for pattern in (b"<ul><li>a", b"<ul><li>a<div>", b"<li>a<div>"):
        data = b"<html><body>" + pattern * 3000 + b"</body></html>"
        start = time.perf_counter()
        doc = parse_bytes(data, "deep.html")
        assert time.perf_counter() - start < 20.0, pattern
        text = "".join(b.text for b in doc.blocks)
        assert text.count("a") >= 3000, pattern
        assert len(text) < 20 * 3000, pattern


def test_html_nested_lists_are_indented_lines_of_their_own() -> None:
    page = (
        b"<ul><li>a<ul><li>b<div><ol><li>c</li></ol></div> tail</li></ul></li><li>d</li></ul>"
        b"<dl><dt>term<dd>meaning</dl>"
    )
    doc = parse_bytes(page, "lists.html")
    assert [b.text for b in doc.blocks] == ["- a\n  - b tail\n    - c\n- d", "- term\n- meaning"]
    deep = b"<ul><li>x" * 12
    (block,) = parse_bytes(deep, "deep.html").blocks
    assert block.text.split("\n")[-1] == "  " * 8 + "- x"  # indents stop at 8 levels


def test_a_slow_html_page_of_a_few_hundred_kilobytes_gets_the_parse_time_limit() -> None:
    # BeautifulSoup is linear but slow on an element every few bytes (750 KB of nested
    # <div>: 24 s); a page that size was parsed in the ingesting process, without a limit
    data = b"<html><body>" + b"<div>" * 60_000 + b"x"
    assert sandbox.LARGE_TEXT_BYTES <= len(data) < 1 << 20
    with pytest.raises(ParseTimeoutError, match=r"deep\.html: parsing this html file took"):
        sandbox.parse_file(data, "deep.html", "html", 0.2)
