"""DOCX through python-docx: headings, paragraphs, lists, quotes and tables in body order.

The Word styles say what a paragraph is (``Heading 2``, ``List Bullet``, ``Quote``);
consecutive list paragraphs form one list block, and each table becomes one pipe table
with its first row as the header.

The body is walked in its XML, not through python-docx's ``iter_inner_content`` and
``text``, which see only a body's or cell's own paragraphs and a paragraph's own runs and
links. Their text was dropped without a word wherever Word wraps it: a table inside a
table cell (forms, layouts), a content control (``w:sdt``, templates' fields, a cover
page), a tracked insertion not yet accepted (``w:ins``), a field (``w:fldSimple``) or a
smart tag, and a text box, whose paragraphs now follow the paragraph anchoring it. Deleted
and moved-away text (``w:del``, ``w:moveFrom``) stays out, as does the fallback copy of a
drawing (``mc:Fallback``) that repeats its text box.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import PurePath
from typing import Any

from docx import Document
from docx.opc.exceptions import PackageNotFoundError
from docx.oxml.ns import qn
from docx.table import Table

from ragstore.errors import EmptyDocumentError
from ragstore.models import ChunkType, ParsedDocument
from ragstore.parsing.ooxml import parse_archive
from ragstore.parsing.structure import BlockBuilder, pipe_table

# a heading style's name: Word writes built-in names in English ("heading 1") whatever the
# language, and its style ids in the user's ("berschrift1", "Titre1"); templates made by
# hand carry the localised name itself
_HEADING = re.compile(
    r"^(?:heading|überschrift|titre|titolo|título|encabezado|kop|nagłówek|rubrik|overskrift)"
    r"\s*(\d)$",
    re.IGNORECASE,
)
_TITLE = {"title", "titel", "titre", "titolo", "título", "tytuł"}
_OUTLINE = qn("w:outlineLvl")
_PPR, _PSTYLE, _NUMPR, _VAL = qn("w:pPr"), qn("w:pStyle"), qn("w:numPr"), qn("w:val")
# a table of contents' own paragraphs (Word: "toc 1", "TOC Heading"; LibreOffice:
# "Contents 1", "Contents Heading")
_TOC_STYLE = re.compile(r"^(?:toc|contents)\s*(?:\d+|heading)$", re.IGNORECASE)
_STYLE_DEPTH = 16  # basedOn links followed at most (a chain can loop in a damaged file)


class _Styles:
    """What a paragraph style makes of its paragraphs, read once from the styles part.

    A style is a heading when it or a style it is based on is named ``Heading N`` (a
    corporate template's "Chapter" based on Heading 1), or when the nearest of them that
    sets an outline level (``w:outlineLvl``, what Word's Navigation pane and TOC read)
    sets 0-8: level 1-9; 9 is body text. A table of contents' styles are ``None``: their
    paragraphs are left out."""

    def __init__(self, styles_element: Any) -> None:
        self._styles: dict[str, tuple[str, str | None, int | None]] = {}
        for st in styles_element.iterchildren(qn("w:style")):
            sid = st.get(qn("w:styleId"))
            if not sid:
                continue
            name = st.find(qn("w:name"))
            based = st.find(qn("w:basedOn"))
            self._styles[sid] = (
                (name.get(qn("w:val")) if name is not None else None) or sid,
                based.get(qn("w:val")) if based is not None else None,
                _outline(st.find(qn("w:pPr"))),
            )
        self._cache: dict[str, tuple[ChunkType, int, bool] | None] = {}

    def kind(self, style_id: str) -> tuple[ChunkType, int, bool] | None:
        """(kind, level, named: the style's own name says heading or title), or ``None``
        for a table of contents' style."""
        if style_id not in self._cache:
            self._cache[style_id] = self._resolve(style_id)
        return self._cache[style_id]

    def _resolve(self, style_id: str) -> tuple[ChunkType, int, bool] | None:
        name = self._styles.get(style_id, (style_id, None, None))[0]
        lowered = name.lower()
        if lowered in _TITLE or style_id.lower() == "title":
            return ChunkType.HEADING, 1, True
        sid: str | None = style_id
        seen: set[str] = set()
        while sid is not None and sid not in seen and len(seen) < _STYLE_DEPTH:
            seen.add(sid)
            sname, based, outline = self._styles.get(sid, (sid, None, None))
            if _TOC_STYLE.match(sname) or _TOC_STYLE.match(sid):
                return None
            match = _HEADING.match(sname) or _HEADING.match(sid)
            if match:
                return ChunkType.HEADING, int(match.group(1)), sid == style_id
            if outline is not None:
                if outline < 9:
                    return ChunkType.HEADING, outline + 1, False
                break  # body text, whatever the styles it is based on say
            sid = based
        if lowered.startswith("list"):
            return ChunkType.LIST, 0, False
        if "quote" in lowered:
            return ChunkType.QUOTE, 0, False
        if "code" in lowered or "preformatted" in lowered:
            return ChunkType.CODE, 0, False
        return ChunkType.PARAGRAPH, 0, False


def _outline(ppr: Any) -> int | None:
    """A ``w:pPr``'s outline level (0-9), or ``None`` where it sets none (or nonsense)."""
    lvl = ppr.find(_OUTLINE) if ppr is not None else None
    if lvl is None:
        return None
    try:
        value = int(lvl.get(_VAL, ""))
    except ValueError:
        return None
    return value if 0 <= value <= 9 else None


def _kind(p: Any, styles: _Styles) -> tuple[ChunkType, int] | None:
    """A ``w:p``'s kind and heading level, ``None`` for a table of contents' paragraph.

    The style id is read straight from the XML (lxml's ``find``, not python-docx's
    accessors: a third of the parse) and resolved through a table built once.
    The paragraph's own outline level overrides its style's, except where the style is
    named Heading N or Title."""
    ppr = p.find(_PPR)
    style = ppr.find(_PSTYLE) if ppr is not None else None
    style_id = style.get(_VAL) if style is not None else None
    resolved = styles.kind(style_id) if style_id else (ChunkType.PARAGRAPH, 0, False)
    if resolved is None:
        return None
    kind, level, named = resolved
    direct = _outline(ppr)
    if direct is not None and not named:
        if direct < 9:
            return ChunkType.HEADING, direct + 1
        if kind is ChunkType.HEADING:
            return ChunkType.PARAGRAPH, 0
    if kind is not ChunkType.HEADING and ppr is not None and ppr.find(_NUMPR) is not None:
        return ChunkType.LIST, 0
    return kind, level


_P, _TBL, _R = qn("w:p"), qn("w:tbl"), qn("w:r")
_WRAPPERS = {qn("w:sdt"), qn("w:sdtContent"), qn("w:customXml")}  # block content inside
_TEXT_BOX = qn("w:txbxContent")
_SDT = qn("w:sdt")
_GALLERY = f"{qn('w:sdtPr')}/{qn('w:docPartObj')}/{qn('w:docPartGallery')}"
_FLD_CHAR, _INSTR, _FLD_SIMPLE = qn("w:fldChar"), qn("w:instrText"), qn("w:fldSimple")
_TOC_FIELD = re.compile(r"\s*TOC\b", re.IGNORECASE)
# text that is not the document's: deleted or moved away, a drawing's fallback copy
_NOT_TEXT = {
    qn("w:del"),
    qn("w:moveFrom"),
    "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback",
}


def _block_elements(container: Any) -> Iterator[Any]:
    """The ``w:p`` and ``w:tbl`` elements of a body or cell, in order, content controls
    and custom XML opened; a table of contents' control (Word's, LibreOffice's and
    pandoc's) left out."""
    for child in container.iterchildren():
        if child.tag in (_P, _TBL):
            yield child
        elif child.tag in _WRAPPERS and not _is_toc_control(child):
            yield from _block_elements(child)


def _is_toc_control(element: Any) -> bool:
    if element.tag != _SDT:
        return False
    gallery = element.find(_GALLERY)
    return gallery is not None and gallery.get(qn("w:val"), "").lower() == "table of contents"


class _TocField:
    """Follows Word's fields (``w:fldChar`` begin/separate/end, ``w:instrText``) through
    the body's paragraphs, to say which lie in a table of contents' field (``TOC \\o``):
    its entries are copies of the headings with page numbers, and as body text they
    outranked the sections they name. Fields nest (each entry holds a PAGEREF); only a
    count of the open TOC fields is kept, so a file of a million fields costs no more."""

    def __init__(self) -> None:
        self._open: list[list[Any]] = []  # per open field: [instruction start, separated, toc]
        self._toc = 0  # open fields that are a TOC

    def holds(self, p: Any) -> bool:
        """Whether a TOC field is open anywhere in paragraph ``p`` (read in order)."""
        inside = self._toc > 0
        for node in p.iter(_FLD_CHAR, _INSTR, _FLD_SIMPLE):
            if node.tag == _FLD_SIMPLE:
                inside = inside or _is_toc(node.get(qn("w:instr"), ""))
            elif node.tag == _INSTR:
                top = self._open[-1] if self._open else None
                if top is not None and not top[1] and not top[2] and len(top[0]) < 16:
                    top[0] += (node.text or "")[:16]
                    if _is_toc(top[0]):
                        top[2] = True
                        self._toc += 1
            else:
                what = node.get(qn("w:fldCharType"))
                if what == "begin":
                    self._open.append(["", False, False])
                elif what == "separate" and self._open:
                    self._open[-1][1] = True
                elif what == "end" and self._open:
                    self._toc -= self._open.pop()[2]
            inside = inside or self._toc > 0
        return inside


def _is_toc(instruction: str) -> bool:
    return _TOC_FIELD.match(instruction) is not None


def _runs(element: Any, runs: list[Any], boxes: list[Any]) -> None:
    """A paragraph's runs wherever they sit (links, insertions, fields, inline controls),
    and its text boxes, which hold paragraphs of their own."""
    for child in element.iterchildren():
        if child.tag == _R:
            runs.append(child)
            for box in child.iter(_TEXT_BOX):
                if not any(a.tag in _NOT_TEXT for a in box.iterancestors()):
                    boxes.append(box)
        elif child.tag == _TEXT_BOX:
            boxes.append(child)
        elif child.tag not in _NOT_TEXT:
            _runs(child, runs, boxes)


def _paragraph_text(p: Any) -> tuple[str, list[Any]]:
    """A paragraph's text (each run as python-docx reads one) and its text boxes."""
    runs: list[Any] = []
    boxes: list[Any] = []
    _runs(p, runs, boxes)
    return "".join(r.text for r in runs), boxes


def _cell_text(tc: Any, parent: Any) -> str:
    """A cell's paragraphs and the tables inside it (a row a line, cells split by ``|``)."""
    lines = []
    for el in _block_elements(tc):
        if el.tag == _P:
            text, boxes = _paragraph_text(el)
            lines.append(text)
            lines.extend(_cell_text(box, parent) for box in boxes)
        else:
            for row in _rows(Table(el, parent)):
                lines.append(" | ".join(c.strip() for c in row))
    return "\n".join(lines)


def _rows(table: Table) -> list[list[str]]:
    rows = []
    for row in table.rows:
        cells: list[str] = []
        seen: set[int] = set()
        for cell in row.cells:
            if id(cell._tc) in seen:
                continue  # a merged cell is reported once per grid column it spans
            seen.add(id(cell._tc))
            cells.append(_cell_text(cell._tc, table))
        if any(c.strip() for c in cells):
            rows.append(cells)
    return rows


def parse_docx(data: bytes, name: str) -> ParsedDocument:
    """Parse a DOCX; a damaged archive or XML part is ``corrupt_document`` for this file."""
    return parse_archive(
        _parse,
        data,
        name,
        fmt="DOCX",
        program="Word or LibreOffice",
        not_a_package=PackageNotFoundError,
        main_part="word/document.xml",
    )


def _parse(data: bytes, name: str) -> ParsedDocument:
    doc = Document(io.BytesIO(data))
    styles = _Styles(doc.styles.element)
    toc = _TocField()
    out = BlockBuilder()
    pending: list[str] = []  # consecutive list items
    for el in _block_elements(doc.element.body):
        if el.tag == _P:
            found = _kind(el, styles)
            if toc.holds(el) or found is None:
                continue  # a table of contents' entry: a copy of a heading
            kind, level = found
            text, boxes = _paragraph_text(el)
            if kind is ChunkType.LIST:
                if text.strip():
                    pending.append("- " + text.strip())
            else:
                if pending:
                    out.add(ChunkType.LIST, "\n".join(pending))
                    pending = []
                out.add(kind, text, level=level)
            for box in boxes:
                out.add(ChunkType.PARAGRAPH, _cell_text(box, doc))
        else:
            if pending:
                out.add(ChunkType.LIST, "\n".join(pending))
                pending = []
            text, shape = pipe_table(_rows(Table(el, doc)))
            out.add(ChunkType.TABLE, text, metadata=shape)
    if pending:
        out.add(ChunkType.LIST, "\n".join(pending))
    if not out.blocks:
        raise EmptyDocumentError(f"{name}: the DOCX holds no text; nothing to ingest")
    props = doc.core_properties
    metadata: dict[str, Any] = {}
    for key in ("author", "subject", "keywords", "category"):
        value = getattr(props, key, None)
        if value:
            metadata[key] = str(value)
    if props.created is not None:
        metadata["created"] = props.created.isoformat()
    return ParsedDocument(
        format="docx",
        title=props.title or out.title or PurePath(name).stem or None,
        blocks=out.blocks,
        metadata=metadata,
    )
