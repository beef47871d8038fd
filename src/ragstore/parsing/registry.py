"""Which parser reads which file: the extension proposes, the content decides.

Strong signatures in the bytes win over the name (a PDF saved as ``.txt`` is read as a
PDF, an HTML page saved as ``.md`` as HTML); the extension decides among text formats;
content sniffing decides when the extension says nothing. Binary formats (PDF, DOCX)
are parsed from bytes; every other format is decoded as UTF-8 first.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable
from pathlib import PurePath

from ragstore.errors import (
    BinaryFileError,
    CorruptDocumentError,
)
from ragstore.formats import SUFFIXES, supported_suffixes
from ragstore.models import ParsedDocument
from ragstore.parsing.code import language_from_shebang, parse_code
from ragstore.parsing.decode import decode_text, empty_error, looks_binary, mostly_controls
from ragstore.parsing.docx import parse_docx
from ragstore.parsing.epub import parse_epub
from ragstore.parsing.html import parse_html
from ragstore.parsing.limits import helper_memory_cap, out_of_memory, text_limit
from ragstore.parsing.markdown import parse_markdown
from ragstore.parsing.notebook import parse_notebook
from ragstore.parsing.pdf import parse_pdf
from ragstore.parsing.pptx import parse_pptx
from ragstore.parsing.text import parse_plain, parse_text

TextParser = Callable[[str, str], ParsedDocument]
BytesParser = Callable[[bytes, str], ParsedDocument]

TEXT_PARSERS: dict[str, TextParser] = {
    "markdown": parse_markdown,
    "text": parse_text,
    "plain": parse_plain,  # texts sent as strings: paragraphs only (parsing/text.py)
    "html": parse_html,
    "code": parse_code,
    "notebook": parse_notebook,
}
BYTES_PARSERS: dict[str, BytesParser] = {
    "pdf": parse_pdf,
    "docx": parse_docx,
    "epub": parse_epub,
    "pptx": parse_pptx,
}

# A comment's body is "anything but -->" rather than ``.*?``: with a lazy body a run of
# comments can be split into comments in 2**(n-1) ways, each tried when no <html> follows,
# so 30 empty comments ("<!---->" * 30, 210 bytes) held detection for hours; this way each
# comment ends at its first "-->" and a failed match is linear.
_HTML_START = re.compile(
    rb"^\s*(<\?xml[^>]*>\s*)?(<!--(?:(?!-->).)*-->\s*)*(<!doctype\s+html|<html[\s>])",
    re.IGNORECASE | re.DOTALL,
)
_ZIP_MAGIC = b"PK\x03\x04"


def sniff_format(data: bytes) -> str | None:
    """The format the bytes themselves declare, or None when they declare none."""
    head = data[:4096]
    if head.lstrip()[:5] == b"%PDF-":
        return "pdf"
    if head.startswith(_ZIP_MAGIC) and b"word/" in data[:65536]:
        return "docx"
    if head.startswith(_ZIP_MAGIC) and head[30:58] == b"mimetypeapplication/epub+zip":
        return "epub"  # the EPUB container: an uncompressed "mimetype" entry comes first
    if head.startswith(_ZIP_MAGIC) and b"ppt/" in data[:65536]:
        return "pptx"
    if _HTML_START.match(head.lstrip(b"\xef\xbb\xbf")):
        return "html"
    if head.startswith(b"#!") and language_from_shebang(head.split(b"\n", 1)[0]) is not None:
        return "code"
    return None


def detect_format(name: str, data: bytes) -> str:
    """The format of one file from its name and content (see the module docstring)."""
    suffix = PurePath(name).suffix.lower()
    by_name = SUFFIXES.get(suffix)
    sniffed = sniff_format(data)
    if sniffed in ("pdf", "docx", "pptx", "epub", "html") and by_name != "code":
        return sniffed
    if by_name is not None:
        if by_name == "text" and sniffed == "code":
            return "code"
        return by_name
    if sniffed is not None:
        return sniffed
    if looks_binary(data) or mostly_controls(data):
        raise BinaryFileError(
            f"{name}: unsupported binary file type {suffix!r}; supported: "
            f"{', '.join(sorted(supported_suffixes()))}"
        )
    # an unknown suffix on a text file: read it as plain text. An empty one too, so that
    # parse_bytes calls it empty as it does under every other name (it was
    # "unsupported file type" while a file of one space was "empty")
    return "text"


# What third-party parsers raise on files they choke on (besides their own error types,
# which each parser module translates): deep nesting, truncated streams, bad offsets.
# MemoryError is not among them: a parser out of memory is a limit (see parse_bytes).
PARSER_FAILURES: tuple[type[BaseException], ...] = (
    RecursionError,
    RuntimeError,
    ArithmeticError,
    AssertionError,
    AttributeError,
    LookupError,
    TypeError,
    ValueError,
    EOFError,
    NotImplementedError,
    struct.error,
    zlib.error,
)


def parse_bytes(
    data: bytes, name: str, fmt: str | None = None, *, max_chars: int | None = None
) -> ParsedDocument:
    """Parse one file's bytes; ``name`` is used for format detection and in error messages.

    A parser that fails in a way it does not report itself fails this one file as
    ``corrupt_document``; an ingest of many files goes on with the rest. A file whose text
    grows past ``max_chars`` characters fails with ``payload_too_large`` as soon as it
    does (:mod:`ragstore.parsing.limits`), before the rest of it is built, and so does one
    whose parser runs out of memory (a parse helper's cap, usually): the file is too large
    to parse within the limit, not damaged.
    """
    fmt = fmt or detect_format(name, data)
    if not data.strip():
        # said the same way for every format: a DOCX, PPTX or EPUB of no bytes was
        # "not a valid ... file (not a zip archive)", a PDF or text "empty"
        raise empty_error(data, name)
    try:
        with text_limit(name, max_chars):
            if fmt in BYTES_PARSERS:
                return BYTES_PARSERS[fmt](data, name)
            text = decode_text(data, name)
            return TEXT_PARSERS[fmt](text, name)
    except MemoryError:
        raise out_of_memory(name, fmt, helper_memory_cap()) from None
    except PARSER_FAILURES as exc:
        reason = (
            "nested too deeply"
            if isinstance(exc, RecursionError)
            else (f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
        )
        raise CorruptDocumentError(
            f"{name}: the {fmt} parser could not read it ({reason}); check that the file "
            "is complete and well-formed"
        ) from None
