"""PDF through pypdf: the text of each page, page numbers kept on every block.

PDFs carry no reliable paragraph structure, so each page's text becomes ``page_text``
blocks split at blank lines; the outline (bookmarks), when there is one, becomes
headings, so chunks still get section paths. A bookmark points at a page, not at a place
on it, and a manual's page often opens two or three sections: each heading goes where its
title starts a line of the page's text (:func:`_title_at`; the title line itself is the
heading, not text), so the text above it stays in the section before. A title not found
on its page opens the section at the top of the page, as before.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import PurePath
from typing import Any

from pypdf import PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, PyPdfError

from ragstore.errors import CorruptDocumentError, EmptyDocumentError, EncryptedDocumentError
from ragstore.models import ChunkType, ParsedDocument
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
            title = " ".join(str(getattr(item, "title", "") or "").split())
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


def _page_blocks(
    out: BlockBuilder, text: str, bookmarks: list[tuple[int, str]], number: int
) -> None:
    """The page's bookmarks as headings where their titles are, its text between them."""
    pos = 0
    for level, bookmark in bookmarks:
        found = _title_at(text, bookmark, pos)
        if found is not None:
            _add_text(out, text[pos : found.start()], number)
            pos = found.end()
        out.add(ChunkType.HEADING, bookmark, level=level, page=number)
    _add_text(out, text[pos:], number)


def _add_text(out: BlockBuilder, text: str, number: int) -> None:
    for a, b in paragraph_spans(text):
        out.add(ChunkType.PAGE_TEXT, text[a:b], page=number)


def _open(data: bytes, name: str) -> PdfReader:
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
    outline = _outline(reader)
    out = BlockBuilder()
    for number, page in enumerate(reader.pages, start=1):
        try:
            text = page.extract_text() or ""
        except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise CorruptDocumentError(
                f"{name}: page {number} cannot be read ({type(exc).__name__}: {exc}); "
                "re-export the PDF from the program that made it"
            ) from None
        _page_blocks(out, text, outline.get(number, []), number)
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
        title = str(info.title) if info.title else None
        if info.author:
            metadata["author"] = str(info.author)
    return ParsedDocument(
        format="pdf",
        title=title or PurePath(name).stem or None,
        blocks=out.blocks,
        metadata=metadata,
    )
