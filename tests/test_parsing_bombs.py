"""Small files that parse into far more text than they hold: the text is counted as it is
built and the parse stops at the limit, in the helper or in process; a slide or chapter
listed many times is read once; a result too large to hand back from the helper is the
file's error, not a crash; a part nested past libxml2's depth limit (a DOCX's, an EPUB's
container or package) is named as such."""

from __future__ import annotations

import io
import threading
import zipfile
from multiprocessing import Pipe
from pathlib import Path
from typing import Any

import pytest

from ragstore.errors import CorruptDocumentError, FileTooLargeError
from ragstore.models import ParsedDocument
from ragstore.parsing import parse_bytes, sandbox
from tests.fixtures.builders import (
    epub_book,
    pdf_shared_stream,
    repeated_chapter_epub,
    repeated_slide_pptx,
    write_docx,
)


def _many_slides(slides: int, words: int) -> bytes:
    """A deck of ``slides`` distinct slides of ``words`` words each."""
    from pptx import Presentation

    deck = Presentation()
    for n in range(slides):
        slide = deck.slides.add_slide(deck.slide_layouts[1])
        slide.shapes.title.text = f"Slide {n}"
        slide.placeholders[1].text = f"word{n} " * words
    buf = io.BytesIO()
    deck.save(buf)
    return buf.getvalue()


@pytest.mark.parametrize("timeout_s", [300.0, 0.0], ids=["helper", "in-process"])
def test_text_past_the_limit_stops_the_parse_as_it_grows(timeout_s: float) -> None:
    # the review's 31 KB deck made 3 GB of text in its helper, which died pickling it
    # (MemoryError, "corrupt_document ... killed by signal 9", 214 s); text is now counted
    # as each block and each PDF page is read
    deck = _many_slides(40, 2_000)  # about 300,000 characters
    pdf = pdf_shared_stream(500, 20)  # every page draws one stream: 120,000 characters
    for data, name, fmt in ((deck, "deck.pptx", "pptx"), (pdf, "shared.pdf", "pdf")):
        assert sandbox.parse_file(data, name, fmt, timeout_s)  # no limit: read whole
        with pytest.raises(FileTooLargeError) as err:
            sandbox.parse_file(data, name, fmt, timeout_s, max_chars=20_000)
        assert str(err.value) == (
            f"{name}: its text unpacks to more than 20000 characters, the limit "
            "(RAGSTORE_MAX_FILE_BYTES); check the file, or raise the limit to ingest it"
        )
        assert err.value.code == "payload_too_large"
        whole = parse_bytes(data, name, fmt)
        assert sum(len(b.text) for b in whole.blocks) > 100_000  # ... which it is
    # the count is the blocks' text, as ingest counts it: a deck at the limit is read whole
    whole = parse_bytes(deck, "deck.pptx")
    exact = sum(len(b.text) for b in whole.blocks)
    assert parse_bytes(deck, "deck.pptx", max_chars=exact) == whole
    with pytest.raises(FileTooLargeError):
        parse_bytes(deck, "deck.pptx", max_chars=exact - 1)
    if timeout_s:
        assert sandbox._helpers.idle, "the file's own error leaves its helper in service"


def test_a_pdf_stops_reading_pages_once_its_text_is_past_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # every page of a shared-stream PDF reads the whole stream again: the pages are
    # counted as they are read, not once all of them are
    from pypdf import PageObject

    read: list[int] = []
    extract = PageObject.extract_text

    def counted(page: PageObject, *args: Any, **kwargs: Any) -> str:
        read.append(1)
        return extract(page, *args, **kwargs)

    monkeypatch.setattr(PageObject, "extract_text", counted)
    pdf = pdf_shared_stream(500, 20)  # 6,000 characters a page
    with pytest.raises(FileTooLargeError, match="more than 20000 characters"):
        parse_bytes(pdf, "shared.pdf", max_chars=20_000)
    assert len(read) == 4


def test_a_slide_listed_many_times_is_read_once() -> None:
    data = repeated_slide_pptx(50, 300)  # one slide, listed 300 times
    doc = parse_bytes(data, "repeated.pptx")
    assert doc.metadata["slides"] == 1
    assert [b.text for b in doc.blocks] == ["Repeated", "body " * 49 + "body"]


def test_a_chapter_listed_many_times_in_the_spine_is_read_once() -> None:
    data = repeated_chapter_epub(300, words=20)
    doc = parse_bytes(data, "repeated.epub")
    assert doc.metadata["chapters"] == 1
    assert [b.text for b in doc.blocks] == ["Once", "word " * 19 + "word"]


class _TooLargeToPickle:
    """Stands for a document larger than the helper's memory: pickling it runs out."""

    def __reduce__(self) -> Any:
        raise MemoryError


def test_a_result_too_large_to_hand_back_is_the_files_error_and_the_helper_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the helper's loop, on real pipes in a thread (its memory cap and its parser
    # replaced: a real one needs gigabytes); it died here with a MemoryError traceback
    huge = ParsedDocument(format="pptx", title="T", blocks=[], metadata={"x": _TooLargeToPickle()})
    real_parse = sandbox.parse_bytes

    def parse(data: bytes, name: str, fmt: str, **kwargs: Any) -> ParsedDocument:
        return huge if name == "huge.pptx" else real_parse(data, name, fmt, **kwargs)

    monkeypatch.setattr(sandbox, "_limit_memory", lambda: None)
    monkeypatch.setattr(sandbox, "parse_bytes", parse)
    to_helper, helper_in = Pipe()
    helper_out, from_helper = Pipe()
    loop = threading.Thread(target=sandbox._serve, args=(helper_in, helper_out), daemon=True)
    loop.start()
    assert from_helper.recv_bytes() == sandbox.READY
    to_helper.send((b"PK", "huge.pptx", "pptx", None))
    assert from_helper.poll(30), "the helper answered nothing"
    ok, error = from_helper.recv()
    assert not ok and isinstance(error, FileTooLargeError)
    assert str(error) == (
        "huge.pptx: its text (0 characters) is more than the pptx parse helper can hand "
        "back within its memory limit; check the file, or split it"
    )
    to_helper.send((b"# Next\n\nfile", "next.md", "markdown", None))
    assert from_helper.poll(30), "the helper answered nothing"
    ok, doc = from_helper.recv()
    assert ok and [b.text for b in doc.blocks] == ["Next", "file"]
    to_helper.close()
    loop.join(30)
    assert not loop.is_alive()


def test_a_docx_nested_past_the_xml_depth_limit_is_named_in_our_words(tmp_path: Path) -> None:
    # it was "damaged DOCX (... not well-formed XML: Excessive depth in document: 256,
    # use XML_PARSE_HUGE option ...)": the file is well-formed, the advice a libxml2 flag
    path = write_docx(tmp_path / "deep.docx", title="T", sections=[("H", ["hello"])])
    member = "word/document.xml"
    src = zipfile.ZipFile(path)
    xml = src.read(member).decode()
    nest = (
        "<w:sdt><w:sdtContent>" * 300
        + "<w:p><w:r><w:t>deep</w:t></w:r></w:p>"
        + "</w:sdtContent></w:sdt>" * 300
    )
    xml = xml.replace("<w:body>", "<w:body>" + nest, 1)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, xml.encode() if info.filename == member else src.read(info))
    with pytest.raises(CorruptDocumentError) as err:
        parse_bytes(out.getvalue(), "deep.docx")
    assert str(err.value) == (
        "deep.docx: nested too deeply to read (word/document.xml or another part nests "
        "elements more than 256 levels deep: content controls, tables or shapes inside one "
        "another); remove some of the nesting in Word or LibreOffice and save it again as .docx"
    )


@pytest.mark.parametrize(
    ("member", "anchor"),
    [("META-INF/container.xml", "<rootfiles>"), ("OEBPS/content.opf", "<metadata ")],
    ids=["container", "package"],
)
def test_an_epub_nested_past_the_xml_depth_limit_is_named_in_our_words(
    member: str, anchor: str
) -> None:
    # it was "damaged EPUB (META-INF/container.xml is not well-formed XML: Excessive depth
    # in document: 256, use XML_PARSE_HUGE option ...)", as the DOCX above was
    book = epub_book()
    src = zipfile.ZipFile(io.BytesIO(book))
    xml = src.read(member).decode()
    assert anchor in xml
    xml = xml.replace(anchor, "<x>" * 300 + "</x>" * 300 + anchor, 1)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, xml.encode() if info.filename == member else src.read(info))
    with pytest.raises(CorruptDocumentError) as err:
        parse_bytes(out.getvalue(), "deep.epub")
    assert str(err.value) == (
        f"deep.epub: nested too deeply to read ({member} nests elements more than 256 "
        "levels deep); open it in Calibre or Sigil and save it again"
    )
