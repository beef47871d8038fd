"""Zipped documents: what one may unpack to before a parser opens it (DOCX, PPTX, EPUB), and
the one error a damaged DOCX or PPTX gets."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable

from lxml import etree

from ragstore.errors import CorruptDocumentError
from ragstore.models import ParsedDocument

# python-docx and python-pptx read every part into memory and lxml builds a tree several
# times the size of the XML, so a small archive of a huge, well-compressed part (a zip
# bomb) would take gigabytes; real documents unpack to a few megabytes of XML and their
# images. The sizes checked are those the archive declares, which zipfile never reads past.
MAX_UNPACKED_BYTES = 256 * 1024 * 1024


def check_unpacked_size(data: bytes, name: str, fmt: str, program: str) -> None:
    """Refuse an archive that declares more than :data:`MAX_UNPACKED_BYTES` of content."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            total = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile:
        return  # the parser reports it, in the words it uses for every non-zip
    if total > MAX_UNPACKED_BYTES:
        raise CorruptDocumentError(
            f"{name}: unpacks to {total} bytes, over the {MAX_UNPACKED_BYTES} bytes a {fmt} "
            f"may hold (a zip bomb, or not a real document); open it in {program} and save a "
            "copy without the oversized content"
        )


def parse_archive(
    parse: Callable[[bytes, str], ParsedDocument],
    data: bytes,
    name: str,
    *,
    fmt: str,
    program: str,
    not_a_package: type[Exception],
    main_part: str,
) -> ParsedDocument:
    """``parse(data, name)`` after the unpacked-size check, with what python-docx or
    python-pptx raise on a damaged archive turned into one ``corrupt_document`` error that
    names the file, the format and how to fix it (``not_a_package`` is the library's own
    "not a package" error, ``main_part`` the part a reader would suspect first)."""
    check_unpacked_size(data, name, fmt, program)
    ext = fmt.lower()
    try:
        return parse(data, name)
    except (zipfile.BadZipFile, not_a_package):
        raise CorruptDocumentError(
            f"{name}: not a valid {fmt} file (not a zip archive); "
            f"re-save it from {program} as .{ext}"
        ) from None
    except etree.XMLSyntaxError as exc:
        raise CorruptDocumentError(
            f"{name}: damaged {fmt} ({main_part} or another part is not well-formed XML: "
            f"{exc}); re-save it from {program} as .{ext}"
        ) from None
    except (KeyError, ValueError, AttributeError, zipfile.LargeZipFile) as exc:
        raise CorruptDocumentError(
            f"{name}: damaged {fmt} ({type(exc).__name__}: {exc}); re-save it as .{ext}"
        ) from None
