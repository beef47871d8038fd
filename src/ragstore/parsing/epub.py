"""EPUB books: the chapters of the spine, in reading order, through the HTML parser.

An EPUB is a zip of XHTML chapters and a package document (``content.opf``, found through
``META-INF/container.xml``) whose spine gives the reading order. Each chapter is walked
as an HTML page into one builder. The book's table of contents (the EPUB 3 navigation
document, else the EPUB 2 NCX) gives its sections: each entry opens one, at its level,
at the top of its chapter file or at its anchor, and the headings of the text nest under
the entry they follow, whatever h1-h6 each chapter file happens to use. A book without
a table of contents starts a section tree at each chapter file. The navigation document
is not read as text, and neither are spine items marked ``linear="no"`` (covers, notes
pages read out of order). The title, authors, language and publisher come from the
package's Dublin Core.

Nothing is read from outside the archive (chapter paths are names inside the zip), an
archive past the OOXML limits (what it unpacks to, how many members it holds) is refused
as DOCX and PPTX are, and a book whose chapters are encrypted (DRM) is refused with that
reason rather than read as noise.
"""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any
from urllib.parse import unquote

from bs4 import BeautifulSoup
from bs4.element import Tag
from lxml import etree

from ragstore.errors import CorruptDocumentError, EmptyDocumentError
from ragstore.models import ChunkType, ParsedDocument
from ragstore.parsing.decode import declared_encoding
from ragstore.parsing.html import text_of as _text
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
_NCX_TYPE = "application/x-dtbncx+xml"
_XML_DECLARATION = re.compile(r"\A\s*<\?xml[^>]{0,200}\?>")
_MAX_TOC_LEVEL = 6  # deeper entries of a table of contents open sections at this level


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


@dataclass(frozen=True)
class _Entry:
    """One entry of the table of contents: the section it opens."""

    title: str
    level: int


# chapter file -> its entries in the table's order, each with its anchor (None: the top)
_Toc = dict[str, list[tuple[str | None, _Entry]]]


def _target(href: str, base: str) -> tuple[str, str | None] | None:
    """The archive member and anchor an entry's link names, relative to ``base`` (the
    folder of the file holding the link); None for a link out of the book."""
    path, _, anchor = href.strip().partition("#")
    if not path or ":" in path.split("/")[0]:
        return None  # a link within the table itself, or a URL
    member = posixpath.normpath(posixpath.join(base, unquote(path)))
    return member, (unquote(anchor) or None)


def _add_entry(toc: _Toc, target: tuple[str, str | None] | None, title: str, level: int) -> None:
    title = " ".join(title.split())
    if target is not None and title and level >= 1:
        member, anchor = target
        toc.setdefault(member, []).append((anchor, _Entry(title, min(level, _MAX_TOC_LEVEL))))


def _nav_toc(archive: zipfile.ZipFile, member: str) -> _Toc:
    """The entries of an EPUB 3 navigation document's ``toc`` nav (its first nav if none
    says so): each link, at the depth of the lists it sits in."""
    soup = BeautifulSoup(_markup(archive.read(member)), "lxml")
    navs = soup.find_all("nav")
    nav = next(
        (
            n
            for n in navs
            if "toc" in str(n.get("epub:type", "")).split() or n.get("role") == "doc-toc"
        ),
        navs[0] if navs else None,
    )
    toc: _Toc = {}
    if not isinstance(nav, Tag):
        return toc
    base = posixpath.dirname(member)
    stack = [(c, 0) for c in reversed(list(nav.children)) if isinstance(c, Tag)]
    while stack:  # a stack, not recursion: lists nested thousands deep are still a list
        node, depth = stack.pop()
        if node.name == "a":
            href = node.get("href")
            if isinstance(href, str):
                _add_entry(toc, _target(href, base), _text(node), depth)
            continue
        inner = depth + 1 if node.name in ("ol", "ul") else depth
        stack.extend((c, inner) for c in reversed(list(node.children)) if isinstance(c, Tag))
    return toc


def _local(el: Any) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def _ncx_toc(archive: zipfile.ZipFile, member: str) -> _Toc:
    """The entries of an EPUB 2 NCX: its ``navPoint``s, at their nesting depth."""
    root = _xml(archive, member)
    nav_map = next((el for el in root if _local(el) == "navMap"), None)
    toc: _Toc = {}
    if nav_map is None:
        return toc
    base = posixpath.dirname(member)
    stack = [(el, 1) for el in reversed(list(nav_map)) if _local(el) == "navPoint"]
    while stack:
        point, depth = stack.pop()
        label = next((el for el in point if _local(el) == "navLabel"), None)
        title = "".join(label.itertext()) if label is not None else ""
        content = next((el for el in point if _local(el) == "content"), None)
        src = content.get("src") if content is not None else None
        if isinstance(src, str):
            _add_entry(toc, _target(src, base), title, depth)
        stack.extend((el, depth + 1) for el in reversed(list(point)) if _local(el) == "navPoint")
    return toc


def _toc(archive: zipfile.ZipFile, package: Any, base: str) -> _Toc:
    """The book's table of contents, by chapter file: the navigation document's, else the
    NCX's. One that is missing, damaged or names nothing is no table of contents: the book
    is still read, as it was before tables of contents were (a sloppy NCX is common)."""
    nav = ncx = None
    spine = package.find("opf:spine", _NS)
    ncx_id = spine.get("toc") if spine is not None else None
    for item in package.iterfind("opf:manifest/opf:item", _NS):
        href = item.get("href")
        if not href:
            continue
        member = posixpath.normpath(posixpath.join(base, unquote(href)))
        if "nav" in item.get("properties", "").split():
            nav = nav or member
        elif item.get("media-type") == _NCX_TYPE or (ncx_id and item.get("id") == ncx_id):
            ncx = ncx or member
    for part, read in ((nav, _nav_toc), (ncx, _ncx_toc)):
        if part is None:
            continue
        try:
            toc = read(archive, part)
        except (KeyError, _Broken, _TooDeep):
            continue
        if toc:
            return toc
    return {}


class _Book(BlockBuilder):
    """A builder whose sections are the table of contents' entries: ``open`` one, and the
    next block is its heading when it is a heading or reads as the entry's title (a
    chapter title Calibre wrote as a styled paragraph), else the entry's title is put
    before it as one. The text's own headings nest under the entry they follow, by their
    levels relative to each other (``_inner``): a chapter titled in h1 and the next in h2
    are both chapters. Without a table of contents each chapter file is opened as such an
    entry with no title of its own (``start_file``)."""

    def __init__(self) -> None:
        super().__init__()
        self._pending: _Entry | None = None
        self._level = 0  # the level of the entry the text is in; 0 before any
        self._inner: list[int] = []  # the raw levels of the text's open headings under it

    def open(self, entry: _Entry) -> None:
        if self._pending is not None and entry.level > self._pending.level:
            self._heading(self._pending.title, self._pending.level)  # a part above chapters
        self._pending, self._level, self._inner = entry, entry.level, []

    def opener(self, entries: list[_Entry]) -> Callable[[], None]:
        """What opens ``entries`` when the walk reaches their anchor."""

        def call() -> None:
            for entry in entries:
                self.open(entry)

        return call

    def start_file(self) -> None:
        """A chapter file no entry names, before any entry: a tree of its own."""
        self._pending, self._level, self._inner = None, 0, []
        self.close_sections()

    def _heading(self, text: str, level: int, metadata: dict[str, Any] | None = None) -> None:
        super().add(ChunkType.HEADING, text, level=level, metadata=metadata)

    def add(
        self,
        kind: ChunkType,
        text: str,
        *,
        level: int = 0,
        page: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if not text.strip():
            return
        entry, self._pending = self._pending, None
        if entry is not None:
            same = " ".join(text.split()).casefold() == entry.title.casefold()
            if kind is ChunkType.HEADING or same:
                self._heading(text, entry.level, metadata if kind is ChunkType.HEADING else None)
                return
            self._heading(entry.title, entry.level)
        if kind is ChunkType.HEADING:
            while self._inner and self._inner[-1] >= level:
                self._inner.pop()
            self._inner.append(level)
            level = self._level + len(self._inner)
        super().add(kind, text, level=level, page=page, metadata=metadata)


def _markup(page: bytes) -> str | bytes:
    """A chapter's text: EPUB content documents are UTF-8 or UTF-16 (a byte-order mark says
    which), whatever a ``<meta charset>`` claims. Given bytes, the HTML parser believed the
    claim: a UTF-8 chapter claiming Latin-1 was mojibake ("cafÃ©"), one claiming Shift-JIS
    lost its text without a word. A chapter that is not valid UTF-8 is left to the
    parser's detection (a book from a tool that wrote Latin-1 is still read). Either way
    without a DOCTYPE's internal subset (see :func:`without_internal_subset`), and the
    decoded text without its XML declaration: the HTML parser skips it anyway, and seeing
    it with no ``</html>`` in the first 500 characters BeautifulSoup warns that this is
    XML (an error where warnings are, as in the tests)."""
    declared = declared_encoding(page)
    encoding, skip = declared if declared else ("utf-8", 0)
    try:
        text = page[skip:].decode(encoding)
    except UnicodeDecodeError:
        return without_internal_subset(page)
    return without_internal_subset(_XML_DECLARATION.sub("", text, count=1))


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
        toc = _toc(archive, package, posixpath.dirname(package_path))
        out = _Book()
        opened = False  # whether an entry of the table of contents has been reached
        for member in chapters:
            try:
                page = archive.read(member)
            except KeyError:
                raise _Broken(f"the spine names {member}, which is not in the archive") from None
            entries = toc.get(member, [])
            if not entries and not opened:
                out.start_file()  # no table, or front matter before its first entry
            soup = BeautifulSoup(_markup(page), "lxml")
            ids = {el.get("id") for el in soup.find_all(id=True)} if entries else set()
            anchors: dict[str, list[_Entry]] = {}
            for i, (anchor, entry) in enumerate(entries):
                opened = True
                if anchor is None or (i == 0 and anchor not in ids):
                    out.open(entry)  # the top, or an anchor the page lacks for the first entry
                elif anchor in ids:
                    anchors.setdefault(anchor, []).append(entry)
            calls = {a: out.opener(es) for a, es in anchors.items()}
            walk_page(soup, out, calls)
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
