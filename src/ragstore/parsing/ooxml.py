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
# ... and each member costs memory and time whether or not it holds anything (a ZipInfo,
# a name in every lookup): 50 MiB of empty members is over 600,000 of them (200,000 in
# 24 MB took 3.6 s to open on a loaded machine), bounded only by the helper's time and
# memory limits, whose errors do not say why.
# Real documents hold far fewer: a DOCX or PPTX a few dozen parts and one per image, an
# EPUB of a big illustrated book a few thousand chapters, images and fonts.
MAX_ARCHIVE_MEMBERS = 20_000
# libxml2's depth limit without XML_PARSE_HUGE, which python-docx and python-pptx leave off
MAX_XML_DEPTH = 256


def check_archive(data: bytes, name: str, fmt: str, program: str) -> None:
    """Refuse an archive of more than :data:`MAX_ARCHIVE_MEMBERS` members or that declares
    more than :data:`MAX_UNPACKED_BYTES` of content, from its central directory alone
    (before any member is read)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile:
        return  # the parser reports it, in the words it uses for every non-zip
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise CorruptDocumentError(
            f"{name}: holds {len(members)} files in its archive, over the "
            f"{MAX_ARCHIVE_MEMBERS} a {fmt} may hold (not a real document, or one padded "
            f"with empty entries); open it in {program} and save a copy, or split it"
        )
    total = sum(info.file_size for info in members)
    if total > MAX_UNPACKED_BYTES:
        raise CorruptDocumentError(
            f"{name}: unpacks to {total} bytes, over the {MAX_UNPACKED_BYTES} bytes a {fmt} "
            f"may hold (a zip bomb, or not a real document); open it in {program} and save a "
            "copy without the oversized content"
        )


def _entity_bomb(exc: etree.XMLSyntaxError) -> bool:
    """Whether libxml2 stopped because the part's entities expand too far or in a loop:
    its own message ("Maximum entity amplification factor exceeded, see
    xmlCtxtSetMaxAmplification") names a C function, which tells a user nothing. Office
    documents declare no entities at all."""
    if exc.code == etree.ErrorTypes.ERR_ENTITY_LOOP:
        return True
    return exc.code == etree.ErrorTypes.ERR_RESOURCE_LIMIT and "entity" in str(exc.msg).lower()


def too_deep(exc: etree.XMLSyntaxError) -> bool:
    """Whether libxml2 stopped because the part nests elements past its depth limit
    (:data:`MAX_XML_DEPTH`): its message ("Excessive depth in document: 256, use
    XML_PARSE_HUGE option") names a parser flag, and "not well-formed" would be wrong.
    The EPUB reader asks too, of its container and package documents."""
    return exc.code == etree.ErrorTypes.ERR_RESOURCE_LIMIT and "depth" in str(exc.msg).lower()


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
    """``parse(data, name)`` after the member-count and unpacked-size checks, with what
    python-docx or python-pptx raise on a damaged archive turned into one
    ``corrupt_document`` error that names the file, the format and how to fix it
    (``not_a_package`` is the library's own "not a package" error, ``main_part`` the part a
    reader would suspect first)."""
    check_archive(data, name, fmt, program)
    ext = fmt.lower()
    try:
        return parse(data, name)
    except (zipfile.BadZipFile, not_a_package):
        raise CorruptDocumentError(
            f"{name}: not a valid {fmt} file (not a zip archive); "
            f"re-save it from {program} as .{ext}"
        ) from None
    except etree.XMLSyntaxError as exc:
        if _entity_bomb(exc):
            raise CorruptDocumentError(
                f"{name}: not a document {program} writes ({main_part} or another part "
                "declares XML entities that expand far beyond the file's size, or refer to "
                f"themselves: an entity bomb); open it in {program} and save a copy as .{ext}"
            ) from None
        if too_deep(exc):
            raise CorruptDocumentError(
                f"{name}: nested too deeply to read ({main_part} or another part nests "
                f"elements more than {MAX_XML_DEPTH} levels deep: content controls, tables "
                f"or shapes inside one another); remove some of the nesting in {program} "
                f"and save it again as .{ext}"
            ) from None
        raise CorruptDocumentError(
            f"{name}: damaged {fmt} ({main_part} or another part is not well-formed XML: "
            f"{exc}); re-save it from {program} as .{ext}"
        ) from None
    except (KeyError, ValueError, AttributeError, zipfile.LargeZipFile) as exc:
        raise CorruptDocumentError(
            f"{name}: damaged {fmt} ({type(exc).__name__}: {exc}); re-save it as .{ext}"
        ) from None
