"""EPUB books: the chapters of the spine, in reading order, through the HTML parser.

An EPUB is a zip of XHTML chapters and a package document (``content.opf``, found through
``META-INF/container.xml``) whose spine gives the reading order. Each chapter is walked
as an HTML page into one builder, so a book's headings make one section tree across its
chapters, as a long Markdown file's do. The navigation document (the table of contents)
and spine items marked ``linear="no"`` (covers, notes pages read out of order) are left
out. The title, authors, language and publisher come from the package's Dublin Core.

Nothing is read from outside the archive (chapter paths are names inside the zip), an
archive past the OOXML limits (what it unpacks to, how many members it holds) is refused
as DOCX and PPTX are, and a book whose chapters are encrypted (DRM) is refused with that
reason rather than read as noise.
"""

from __future__ import annotations

import io
import posixpath
import zipfile
from pathlib import PurePath
from typing import Any
from urllib.parse import unquote

from bs4 import BeautifulSoup
from lxml import etree

from ragstore.errors import CorruptDocumentError, EmptyDocumentError
from ragstore.models import ParsedDocument
from ragstore.parsing.decode import declared_encoding
from ragstore.parsing.html import walk_page, without_internal_subset
from ragstore.parsing.ooxml import MAX_XML_DEPTH, check_archive, too_deep
from ragstore.parsing.structure import BlockBuilder

_NS = {
    "c": "urn:oasis:names:tc:opendocument:xmlns:container",
    "opf": "http://www.idpf.org/2007/opf",
    "dc": "http://purl.org/dc/elements/1.1/",
    "enc": "http://www.w3.org/2001/04/xmlenc#",
}
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
_HTML_TYPES = ("application/xhtml+xml", "text/html")


class _Broken(Exception):
    """What is wrong with the archive, in words for the error message."""


class _TooDeep(Exception):
    """A package part (its name, the argument) nests elements past libxml2's depth limit:
    the XML is well-formed, so not "damaged", and libxml2's own message names a parser
    flag ("use XML_PARSE_HUGE option") that tells a user nothing."""


def _xml(archive: zipfile.ZipFile, member: str) -> Any:
    try:
        data = archive.read(member)
    except KeyError:
        raise _Broken(f"{member} is missing") from None
    try:
        return etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        if too_deep(exc):
            raise _TooDeep(member) from None
        raise _Broken(f"{member} is not well-formed XML: {exc}") from None


def _package_path(archive: zipfile.ZipFile) -> str:
    container = _xml(archive, "META-INF/container.xml")
    found = container.find(".//c:rootfile", _NS)
    path = found.get("full-path") if found is not None else None
    if not path:
        raise _Broken("META-INF/container.xml names no package document")
    return str(path)


def _encrypted(archive: zipfile.ZipFile) -> set[str]:
    """Members META-INF/encryption.xml says are encrypted (a font obfuscated by the
    publisher is harmless; a chapter is not readable)."""
    if "META-INF/encryption.xml" not in archive.namelist():
        return set()
    root = _xml(archive, "META-INF/encryption.xml")
    return {
        unquote(str(ref.get("URI")))
        for ref in root.iterfind(".//enc:CipherReference", _NS)
        if ref.get("URI")
    }


def _chapters(package: Any, base: str) -> list[str]:
    """The spine's chapters in reading order, each once: a spine may list one chapter many
    times (a 2 KB book listing a chapter 2,000 times unpacked to 37 million characters);
    e-book tools never write that, and reading it again adds nothing."""
    manifest: dict[str, tuple[str, str, str]] = {}
    for item in package.iterfind("opf:manifest/opf:item", _NS):
        href, media = item.get("href"), item.get("media-type", "")
        if item.get("id") and href:
            member = posixpath.normpath(posixpath.join(base, unquote(href)))
            manifest[item.get("id")] = (member, media, item.get("properties", ""))
    out: list[str] = []
    seen: set[str] = set()
    for ref in package.iterfind("opf:spine/opf:itemref", _NS):
        entry = manifest.get(ref.get("idref", ""))
        if entry is None or ref.get("linear", "yes") == "no":
            continue
        member, media, properties = entry
        if media in _HTML_TYPES and "nav" not in properties.split() and member not in seen:
            seen.add(member)
            out.append(member)
    return out


def _markup(page: bytes) -> str | bytes:
    """A chapter's text: EPUB content documents are UTF-8 or UTF-16 (a byte-order mark says
    which), whatever a ``<meta charset>`` claims. Given bytes, the HTML parser believed the
    claim: a UTF-8 chapter claiming Latin-1 was mojibake ("cafÃ©"), one claiming Shift-JIS
    lost its text without a word. A chapter that is not valid UTF-8 is left to the
    parser's detection (a book from a tool that wrote Latin-1 is still read). Either way
    without a DOCTYPE's internal subset (see :func:`without_internal_subset`)."""
    declared = declared_encoding(page)
    encoding, skip = declared if declared else ("utf-8", 0)
    try:
        text = page[skip:].decode(encoding)
    except UnicodeDecodeError:
        return without_internal_subset(page)
    return without_internal_subset(text)


def _metadata(package: Any) -> tuple[str | None, dict[str, Any]]:
    def texts(tag: str) -> list[str]:
        return [
            " ".join(el.text.split())
            for el in package.iterfind(f"opf:metadata/dc:{tag}", _NS)
            if el.text and el.text.strip()
        ]

    meta: dict[str, Any] = {}
    if authors := texts("creator"):
        meta["author"] = ", ".join(authors)
    for key in ("language", "publisher"):
        if values := texts(key):
            meta[key if key != "language" else "lang"] = values[0]
    titles = texts("title")
    return (titles[0] if titles else None), meta


def _parse(data: bytes, name: str) -> ParsedDocument:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        package_path = _package_path(archive)
        package = _xml(archive, package_path)
        chapters = _chapters(package, posixpath.dirname(package_path))
        locked = _encrypted(archive) & set(chapters)
        if locked:
            raise CorruptDocumentError(
                f"{name}: {len(locked)} of its {len(chapters)} chapters are encrypted (DRM); "
                "ingest a copy without DRM, or export the book's text"
            )
        out = BlockBuilder()
        for member in chapters:
            try:
                page = archive.read(member)
            except KeyError:
                raise _Broken(f"the spine names {member}, which is not in the archive") from None
            walk_page(BeautifulSoup(_markup(page), "lxml"), out)
        title, metadata = _metadata(package)
    if not out.blocks:
        raise EmptyDocumentError(f"{name}: the book's chapters hold no text; nothing to ingest")
    metadata["chapters"] = len(chapters)
    return ParsedDocument(
        format="epub",
        title=title or out.title or PurePath(name).stem or None,
        blocks=out.blocks,
        metadata=metadata,
    )


def parse_epub(data: bytes, name: str) -> ParsedDocument:
    """Parse an EPUB; a damaged archive or package is ``corrupt_document`` for this file."""
    check_archive(data, name, "EPUB", "Calibre or Sigil")
    try:
        return _parse(data, name)
    except zipfile.BadZipFile:
        raise CorruptDocumentError(
            f"{name}: not a valid EPUB file (not a zip archive); export it again as .epub"
        ) from None
    except _Broken as exc:
        raise CorruptDocumentError(
            f"{name}: damaged EPUB ({exc}); open it in Calibre or Sigil and save it again"
        ) from None
    except _TooDeep as exc:
        raise CorruptDocumentError(
            f"{name}: nested too deeply to read ({exc} nests elements more than "
            f"{MAX_XML_DEPTH} levels deep); open it in Calibre or Sigil and save it again"
        ) from None
