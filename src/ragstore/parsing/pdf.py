"""PDF through pypdf: the text of each page, page numbers kept on every block.

PDFs carry no reliable paragraph structure, so each page's text becomes ``page_text``
blocks split at blank lines; the outline (bookmarks), when there is one, becomes
headings, so chunks still get section paths. A bookmark points at a page, not at a place
on it, and a manual's page often opens two or three sections: each heading goes where its
title starts a line of the page's text (:func:`_title_at`; the title line itself is the
heading, not text), so the text above it stays in the section before. A title not found
on its page opens the section at the top of the page, as before.

A PDF without an outline (most papers, reports and exported manuals) gets its headings
from how its lines are set (:mod:`ragstore.parsing.pdf_headings`: short lines in a size
clearly larger than the body, bold numbered titles), placed the same way; one whose title
is not found as a line of the page text is left out. The outline, when there is one, wins.

What is not the document's text is taken out of the pages' (:mod:`ragstore.parsing.pdf_text`):
running headers and footers (:func:`~ragstore.parsing.pdf_headings.page_furniture`), the
entries of a contents page; words broken at a line's end are joined, and a paragraph
running on to the next page is one block, on the page it starts on.

A file named ``.pdf`` that does not start like one (plain text saved under that name) is
refused as not a PDF, saying what it starts with, rather than with pypdf's "Stream has
ended unexpectedly".
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from pypdf import PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, PyPdfError

from ragstore.errors import CorruptDocumentError, EmptyDocumentError, EncryptedDocumentError
from ragstore.models import ChunkType, ParsedDocument
from ragstore.parsing.decode import empty_error, looks_binary
from ragstore.parsing.limits import check_text_size
from ragstore.parsing.pdf_headings import find_headings, page_furniture
from ragstore.parsing.pdf_lines import PdfLine, page_collector, plain_lines, storable
from ragstore.parsing.pdf_text import Words, clean_page, continues
from ragstore.parsing.structure import BlockBuilder
from ragstore.parsing.text import paragraph_spans

logging.getLogger("pypdf").setLevel(logging.ERROR)


def _outline(reader: PdfReader) -> dict[int, list[tuple[int, str]]]:
    """page number (1-based) -> [(level, title)] of the bookmarks pointing at it."""
    found: dict[int, list[tuple[int, str]]] = {}

    def walk(items: list[Any], level: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, level + 1)
                continue
            try:
                number = reader.get_destination_page_number(item)
            except (PyPdfError, KeyError, TypeError, ValueError, AttributeError):
                continue
            title = storable(" ".join(str(getattr(item, "title", "") or "").split()))
            if title and number is not None and number >= 0:
                found.setdefault(number + 1, []).append((level, title))

    try:
        walk(list(reader.outline), 1)
    except (PyPdfError, KeyError, TypeError, ValueError, AttributeError):
        return {}
    return found


def _title_at(text: str, title: str, start: int) -> re.Match[str] | None:
    """Where ``title`` starts a line of ``text`` at or after ``start`` (case, spacing and
    a leading section number like ``2.1`` or ``IV.`` aside), up to its line's end."""
    words = [re.escape(w) for w in title.split()]
    if not words:
        return None
    pattern = re.compile(
        r"^[ \t]*(?:(?:\d+(?:\.\d+)*|[IVXLC]+)\.?[ \t]+)?" + r"\s+".join(words) + r"[ \t]*$",
        re.IGNORECASE | re.MULTILINE,
    )
    return pattern.search(text, start)


def _lines_at(text: str, title: str, start: int) -> tuple[int, int] | None:
    """Where the lines that read ``title`` (spacing aside, as :mod:`pdf_lines` joined
    them) start at or after ``start``, up to the end of the last. A scan of the page's
    lines: a detected title is its lines verbatim, and a regex compiled per title (as
    for bookmarks) cost a fifth of the parse of a long report."""
    n = len(text)
    pos = start
    while pos < n:
        end = text.find("\n", pos)
        end = n if end < 0 else end
        got = " ".join(text[pos:end].split())
        if got and title.startswith(got) and title[len(got) : len(got) + 1] in ("", " "):
            last = end
            while len(got) < len(title) and last < n:
                following = text.find("\n", last + 1)
                following = n if following < 0 else following
                piece = " ".join(text[last + 1 : following].split())
                got = f"{got} {piece}" if piece else got
                last = following
            if got == title:
                return pos, last
        pos = end + 1
    return None


@dataclass
class _Flow:
    """The text read so far: how words are joined, and the text block still open (the
    last one added, when a paragraph of the next page may carry it on): its parts, one a
    page, joined once it is closed (joining each page's onto the whole would copy it
    again for every page), and the page its last part is on. A block carried on over a
    page break stays on the page it started on."""

    words: Words
    parts: list[str] = field(default_factory=list)
    page: int = 0

    def close(self, out: BlockBuilder) -> None:
        """The open block's text made whole; call before adding any other block."""
        if len(self.parts) > 1:
            out.extend_last("".join(self.parts))
        self.parts = []


def _page_blocks(
    out: BlockBuilder,
    text: str,
    headings: list[tuple[int, str]],
    number: int,
    flow: _Flow,
    *,
    detected: bool = False,
) -> None:
    """The page's headings where their titles are, its text between them. A bookmark not
    found opens its section where the text has got to; a detected title not found (it is
    made of the page's own lines, so only a surprise of the extraction) is left out."""
    pos = 0
    for level, heading in headings:
        if detected:
            span = _lines_at(text, heading, pos)
        else:
            found = _title_at(text, heading, pos)
            span = None if found is None else (found.start(), found.end())
        if span is not None:
            _add_text(out, text[pos : span[0]], number, flow)
            pos = span[1]
        elif detected:
            continue
        flow.close(out)
        out.add(ChunkType.HEADING, heading, level=level, page=number)
    _add_text(out, text[pos:], number, flow)


def _add_text(out: BlockBuilder, text: str, number: int, flow: _Flow) -> None:
    """The paragraphs of ``text`` (on page ``number``), words broken at a line's end
    joined. The first paragraph of a page carries on the last of the page before when
    nothing came between them and it reads as that paragraph's sentence going on
    (:func:`~ragstore.parsing.pdf_text.continues`): it is that block, on its page."""
    for a, b in paragraph_spans(text):
        piece = flow.words.mend(text[a:b])
        if flow.parts and flow.page == number - 1 and continues(flow.parts[-1], piece):
            flow.parts[-1:] = flow.words.join(flow.parts[-1], piece)
        else:
            flow.close(out)
            out.add(ChunkType.PAGE_TEXT, piece, page=number)
            flow.parts = [piece]
        flow.page = number


_PDF_HEADER_WITHIN = 1024  # readers accept the %PDF- header this far into the file


def _check_header(data: bytes, name: str) -> None:
    """Refuse bytes that do not start like a PDF, saying what they start with."""
    if b"%PDF-" in data[:_PDF_HEADER_WITHIN]:
        return
    if not data.strip():
        raise empty_error(data, name)
    head = data.lstrip()[:40]
    try:
        shown = repr(head.decode("utf-8"))
    except UnicodeDecodeError:
        shown = repr(head)
    kind = "binary data" if looks_binary(data) else "text"
    raise CorruptDocumentError(
        f"{name}: not a PDF: it has no %PDF- header and starts with {shown} ({kind}); "
        "if it is text, give it its real extension (.txt, .md, .html), "
        "else re-export the PDF from the program that made it"
    )


def _open(data: bytes, name: str) -> PdfReader:
    _check_header(data, name)
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:  # many PDFs are encrypted with an empty user password
                opened = bool(reader.decrypt(""))
            except (DependencyError, NotImplementedError):
                opened = False
            if not opened:
                raise EncryptedDocumentError(
                    f"{name}: the PDF is encrypted with a password; "
                    "save an unencrypted copy (e.g. qpdf --decrypt) and ingest that"
                )
        _ = len(reader.pages)
    except EncryptedDocumentError:
        raise
    except NotImplementedError as exc:
        # pypdf reads the /Encrypt dictionary as it opens the file: a handler other than
        # the standard password one (Adobe LiveCycle, a certificate) or a version it does
        # not know was "the pdf parser could not read it ... check the file is complete"
        if b"/Encrypt" not in data:
            raise CorruptDocumentError(
                f"{name}: not a readable PDF (NotImplementedError: {exc}); "
                "re-export it from the program that made it"
            ) from None
        raise EncryptedDocumentError(
            f"{name}: the PDF is encrypted in a way that cannot be opened here ({exc}); "
            "save an unencrypted copy (e.g. qpdf --decrypt) and ingest that"
        ) from None
    except FileNotDecryptedError:
        raise EncryptedDocumentError(
            f"{name}: the PDF is encrypted with a password; "
            "save an unencrypted copy (e.g. qpdf --decrypt) and ingest that"
        ) from None
    except (
        PyPdfError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        OSError,
        RecursionError,
    ) as exc:
        raise CorruptDocumentError(
            f"{name}: not a readable PDF ({type(exc).__name__}: {exc}); "
            "re-export it from the program that made it"
        ) from None
    return reader


def parse_pdf(data: bytes, name: str) -> ParsedDocument:
    reader = _open(data, name)
    if len(reader.pages) == 0:
        # not "no extractable text (a scan?); run OCR": there is nothing to run it on
        raise EmptyDocumentError(f"{name}: the PDF has no pages; nothing to ingest")
    outline = _outline(reader)
    texts: list[str] = []
    chars = 0  # pages sharing one content stream repeat its text: count it as it comes
    lines: list[list[PdfLine]] = []
    for number, page in enumerate(reader.pages, start=1):
        collect = None if outline else page_collector(number)
        try:
            texts.append(storable(page.extract_text(visitor_text=collect) or ""))
        except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise CorruptDocumentError(
                f"{name}: page {number} cannot be read ({type(exc).__name__}: {exc}); "
                "re-export the PDF from the program that made it"
            ) from None
        chars += len(texts[-1])
        check_text_size(chars)
        if collect is None:
            lines.append(plain_lines(number, texts[-1]))
        else:
            collect.end_line()
            lines.append(collect.lines)
    furniture = page_furniture(lines)
    texts = [
        clean_page(text, page_lines, drop)
        for text, page_lines, drop in zip(texts, lines, furniture, strict=True)
    ]
    headings = outline or find_headings(lines)
    flow = _Flow(Words(texts))
    out = BlockBuilder()
    for number, text in enumerate(texts, start=1):
        _page_blocks(out, text, headings.get(number, []), number, flow, detected=not outline)
    flow.close(out)
    if not any(b.type is ChunkType.PAGE_TEXT for b in out.blocks):
        raise EmptyDocumentError(
            f"{name}: the PDF has no extractable text (a scan?); run OCR on it first"
        )
    metadata: dict[str, Any] = {"pages": len(reader.pages)}
    title: str | None = None
    try:
        info = reader.metadata
    except PyPdfError:
        info = None
    if info is not None:
        title = storable(str(info.title)) if info.title else None
        if info.author:
            metadata["author"] = storable(str(info.author))
    return ParsedDocument(
        format="pdf",
        title=title or PurePath(name).stem or None,
        blocks=out.blocks,
        metadata=metadata,
    )
