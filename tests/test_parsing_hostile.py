"""Hostile text files parsed in the ingesting process (under the size sent to a helper):
each costs time and text in proportion to its size, not to its square."""

from __future__ import annotations

import codecs
import io
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from ragstore.errors import (
    CorruptDocumentError,
    DecodeError,
    EmptyDocumentError,
    EncryptedDocumentError,
    ParseTimeoutError,
)
from ragstore.parsing import detect_format, parse_bytes, sandbox
from tests.fixtures.builders import epub_book, pdf_bytes, write_docx, write_roadmap_pptx


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


# without the fix each call below runs for days; "signal": the regex engine holds the GIL
@pytest.mark.timeout(30, method="signal")
def test_a_run_of_html_comments_is_read_in_linear_time_not_split_every_way() -> None:
    # format sniffing and Markdown's comment-only blocks matched "<!--.*?-->" repeated: n
    # comments with no match after them were tried split in 2**(n-1) ways; 22 took 4.4 s
    # and 30 (210 bytes) hours, in every file's format detection, before any size limit
    run = b"<!---->" * 40 + b"<!-- a --->"
    assert detect_format("notes.txt", run + b"x") == "text"
    assert detect_format("page", run + b"<!DOCTYPE html><p>a") == "html"
    # a comment-only block is still dropped, a block with text after its comments kept
    doc = parse_bytes(run + b"x\n\n" + run + b"\n\npara\n", "comments.md")
    assert [b.text for b in doc.blocks] == [(run + b"x").decode(), "para"]


def test_markdown_headings_lose_their_inline_markup_and_blocks_keep_theirs() -> None:
    doc = parse_bytes(b"# The *big* [guide](x)\n\n> Some **bold** text.\n", "g.md")
    assert [b.text for b in doc.blocks] == ["The big guide", "> Some **bold** text."]
    assert doc.title == "The big guide"


# the patterns reading a heading's markup scan to the next mark at most; "signal": the
# regex engine holds the GIL
@pytest.mark.timeout(60, method="signal")
def test_headings_of_marks_and_text_of_form_feeds_cost_their_size_not_its_square() -> None:
    for mark in ("*a", "_a ", "`a``", "[a](", "![", "{#", "\\*", "&amp;", "<a>", "~~a"):
        heading = mark * (1900 // len(mark))  # under MAX_HEADING_CHARS: all of it read
        doc = parse_bytes(("\n\n".join([f"## {heading}"] * 300) + "\n\nbody\n").encode(), "m.md")
        assert len(doc.blocks) == 301 and doc.blocks[-1].section_path, mark
    html = b"<h2>" + b"<a" * 200_000 + b"</h2>"  # no heading's length: kept as it is
    assert [b.text.encode() for b in parse_bytes(html, "h.md").blocks] == [html]
    for text in (
        "a\f" * 300_000,
        "\n\f" * 300_000 + "a",
        ("x [Page 1]\n\f\nRFC 1\n\n" + "b" * 190) * 3000,
    ):
        assert parse_bytes(text.encode(), "pages.txt").blocks


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


@pytest.mark.parametrize(
    ("name", "fmt", "unit"),
    [
        ("unclosed.html", "html", b"<p>a"),
        ("braces.js", "code", b"{"),
        ("paragraphs.md", "markdown", b"a\n\n"),
    ],
)
def test_a_markup_or_code_file_under_the_text_size_gets_the_parse_time_limit(
    name: str, fmt: str, unit: bytes
) -> None:
    # BeautifulSoup, Pygments and markdown-it take up to 100 us a byte on hostile input:
    # 255 KB of "<p>a" held the ingesting process for 25 s with no limit, being under the
    # size that sends a plain text to a helper. 96 KB takes seconds, here a helper and its
    # limit (which ends it however fast the machine; in process it would just parse)
    data = unit * (96_000 // len(unit))
    assert sandbox.LARGE_MARKUP_BYTES <= len(data) < sandbox.LARGE_TEXT_BYTES
    with pytest.raises(ParseTimeoutError, match=rf"{name}: parsing this {fmt} file took"):
        sandbox.parse_file(data, name, fmt, 0.01)


def test_a_small_markup_file_and_a_plain_text_under_the_text_size_parse_in_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_helper() -> None:
        raise AssertionError("sent to a helper")

    monkeypatch.setattr(sandbox._helpers, "lent", no_helper)
    small = b"# Notes\n\n" + b"A line of notes.\n" * 100
    assert len(small) < sandbox.LARGE_MARKUP_BYTES
    assert sandbox.parse_file(small, "notes.md", "markdown", 300.0).title == "Notes"
    text = b"A plain paragraph of text, a sentence long, as prose has.\n\n" * 1500
    assert sandbox.LARGE_MARKUP_BYTES < len(text) < sandbox.LARGE_TEXT_BYTES
    assert sandbox.parse_file(text, "notes.txt", "text", 300.0).blocks


def _with_member(archive: bytes, member: str, content: bytes) -> bytes:
    """``archive`` (a zip) with ``member`` holding ``content`` instead."""
    src = zipfile.ZipFile(io.BytesIO(archive))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, content if info.filename == member else src.read(info))
    return out.getvalue()


def test_xml_entities_in_a_page_or_a_chapter_are_not_expanded_read_or_shown_as_text() -> None:
    # the HTML parser expands no entity and reads no file, but its doctype ended at the
    # first ">": the rest of the internal subset ("]>") was the page's first paragraph
    laughs = "".join(f'<!ENTITY l{i} "' + f"&l{i - 1};" * 10 + '">' for i in range(1, 10)).replace(
        "&l0;" * 10, "lol"
    )
    subset = f'<!DOCTYPE html [{laughs}<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    body = "<html><body><p>Hi &l9; and &xxe;.</p><p>Bye</p></body></html>"
    page = f'<?xml version="1.0"?>\n{subset}\n{body}'.encode()
    doc = parse_bytes(page, "lol.xhtml")
    assert [b.text for b in doc.blocks] == ["Hi &l9; and &xxe;.", "Bye"]
    book = _with_member(epub_book(), "OEBPS/ch1.xhtml", page)
    assert [b.text for b in parse_bytes(book, "lol.epub").blocks][:2] == [
        "Hi &l9; and &xxe;.",
        "Bye",
    ]
    # a doctype without a subset, or "]>" later in the page, is left as it was
    plain = b"<!DOCTYPE html><p>a ]> b</p>"
    assert [b.text for b in parse_bytes(plain, "plain.html").blocks] == ["a ]> b"]


def test_an_entity_bomb_in_a_docx_or_pptx_is_named_in_our_words(tmp_path: Path) -> None:
    # libxml2's refusal was quoted as it stands: "Maximum entity amplification factor
    # exceeded, see xmlCtxtSetMaxAmplification", advice for a C programmer
    laughs = "".join(f'<!ENTITY l{i} "' + f"&l{i - 1};" * 10 + '">' for i in range(1, 10))
    bomb = f"<!DOCTYPE x [{laughs.replace('&l0;' * 10, 'lol')}]>"
    loop = '<!DOCTYPE x [<!ENTITY a "&b;"><!ENTITY b "&a;">]>'
    docx = write_docx(tmp_path / "a.docx", title="T", sections=[("H", ["hello"])])
    pptx = write_roadmap_pptx(tmp_path / "b.pptx")
    for path, member, part, program in (
        (docx, "word/document.xml", "word/document.xml", "Word or LibreOffice"),
        (pptx, "ppt/slides/slide1.xml", "a slide", "PowerPoint or LibreOffice"),
    ):
        data = path.read_bytes()
        xml = zipfile.ZipFile(io.BytesIO(data)).read(member).decode()
        head, rest = xml.split("?>", 1)
        for doctype, entity in ((bomb, "&l9;"), (loop, "&a;")):
            tagged = re.sub(r"(<(?:w|a):t(?: [^>]*)?>)", rf"\1{entity}", rest, count=1)
            assert tagged != rest
            hostile = _with_member(data, member, f"{head}?>{doctype}{tagged}".encode())
            with pytest.raises(CorruptDocumentError) as err:
                parse_bytes(hostile, path.name)
            assert str(err.value) == (
                f"{path.name}: not a document {program} writes ({part} or another part "
                "declares XML entities that expand far beyond the file's size, or refer to "
                f"themselves: an entity bomb); open it in {program} and save a copy as "
                f"{path.suffix}"
            )


def test_utf32_without_a_byte_order_mark_is_named_not_called_binary() -> None:
    text = "# Notes\n\nA line of notes, not binary.\n"
    for encoding, order in (("utf-32-le", "little"), ("utf-32-be", "big")):
        with pytest.raises(DecodeError, match=rf"UTF-32 without a byte-order mark \({order}"):
            parse_bytes(text.encode(encoding), "notes.md")
    # UTF-16 of ASCII has a NUL every other byte too, but is still called UTF-16
    with pytest.raises(DecodeError, match=r"UTF-16 without a byte-order mark \(little"):
        parse_bytes(text.encode("utf-16-le"), "notes.md")
    assert parse_bytes(codecs.BOM_UTF32_BE + text.encode("utf-32-be"), "n.md").title == "Notes"


def test_a_byte_order_mark_past_the_first_is_dropped_and_only_marks_are_empty() -> None:
    # a second BOM (files joined with cat) hid the front matter, which became a paragraph,
    # and one inside it ended up in the title; a file of marks stored an invisible chunk
    bom = codecs.BOM_UTF8
    doc = parse_bytes(bom + bom + b"---\ntitle: Hi" + bom + b"\n---\n# T\n\nbody\n", "fm.md")
    assert (doc.title, [b.text for b in doc.blocks]) == ("Hi", ["T", "body"])
    for data in (bom * 2, bom + "\u200b\n\u2060 ".encode(), codecs.BOM_UTF16_LE):
        with pytest.raises(EmptyDocumentError, match="holds only whitespace"):
            parse_bytes(data, "marks.txt")


@pytest.mark.parametrize(
    "name", ["a.md", "a.txt", "a.html", "a.pdf", "a.docx", "a.pptx", "a.epub", "a.xyz", "a"]
)
def test_an_empty_or_blank_file_is_empty_whatever_its_format(name: str) -> None:
    # a DOCX, PPTX or EPUB of no bytes was "not a valid ... file (not a zip archive)", and
    # an unknown suffix's "unsupported file type" while one blank space was "empty"
    for data in (b"", b" \n\t\n"):
        with pytest.raises(EmptyDocumentError, match=rf"^{name}: the file is empty") as err:
            parse_bytes(data, name)
        # which of the two it is: four blank bytes were "empty" too, which ls -l denied
        blank = "its 4 byte(s) are only white space; nothing to ingest"
        assert (blank in str(err.value)) == bool(data), str(err.value)


def test_a_pdf_of_no_pages_or_of_an_unknown_encryption_is_refused_for_that_reason() -> None:
    with pytest.raises(EmptyDocumentError, match=r"^none\.pdf: the PDF has no pages"):
        parse_bytes(pdf_bytes([]), "none.pdf")
    # a security handler other than the password one was "could not read it ... check
    # that the file is complete and well-formed"
    locked = pdf_bytes([["secret"]], password="pw").replace(b"/Standard", b"/Adobe.PP")
    with pytest.raises(EncryptedDocumentError, match=r"^pp\.pdf: the PDF is encrypted in a"):
        parse_bytes(locked, "pp.pdf")


def test_an_xml_page_read_as_html_prints_no_warning() -> None:
    # an XML declaration with no <html> in the next 500 bytes (a licence in a comment, an
    # XHTML fragment) printed BeautifulSoup's multi-line advice to parse it as XML on the
    # ingest's stderr; here in a fresh interpreter, as pytest turns warnings into errors
    page = b'<?xml version="1.0"?><!-- ' + b"licence " * 80 + b"--><html><p>x</p></html>"
    code = "import sys; from ragstore.parsing import parse_bytes; "
    code += "print(parse_bytes(sys.stdin.buffer.read(), 'page.xhtml').blocks[0].text)"
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", code], input=page, capture_output=True
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, b"x\n", b"")


def test_an_epub_chapter_is_read_as_utf8_whatever_its_meta_charset_claims() -> None:
    # the HTML parser believed the claim: Latin-1 made "café" "cafÃ©", Shift-JIS dropped
    # the chapter's text without a word (EPUB content documents are UTF-8 or UTF-16)
    for claim in ("iso-8859-1", "shift_jis"):
        page = (
            '<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><head>'
            f'<meta http-equiv="Content-Type" content="text/html; charset={claim}"/></head>'
            "<body><p>Un café — “bien”</p></body></html>"
        ).encode()
        book = _with_member(epub_book(), "OEBPS/ch1.xhtml", page)
        assert parse_bytes(book, "claim.epub").blocks[0].text == "Un café — “bien”", claim
    utf16 = "<html><body><p>Un café</p></body></html>".encode("utf-16")
    book = _with_member(epub_book(), "OEBPS/ch1.xhtml", utf16)
    assert parse_bytes(book, "utf16.epub").blocks[0].text == "Un café"


def test_a_notebook_with_a_number_of_thousands_of_digits_is_refused_in_its_own_words() -> None:
    # the error was Python's: "... use sys.set_int_max_str_digits() to increase the limit"
    data = b'{"cells": [{"cell_type": "heading", "level": ' + b"9" * 5000 + b', "source": "x"}]}'
    with pytest.raises(CorruptDocumentError) as err:
        parse_bytes(data, "big.ipynb")
    assert str(err.value) == (
        "big.ipynb: not a readable notebook (its JSON holds a number of thousands of digits, "
        "which no notebook writes); save it again from Jupyter"
    )
