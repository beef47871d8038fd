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
from docx.text.paragraph import Paragraph

from ragstore.errors import EmptyDocumentError
from ragstore.models import ChunkType, ParsedDocument
from ragstore.parsing.ooxml import parse_archive
from ragstore.parsing.structure import BlockBuilder, pipe_table

_HEADING = re.compile(r"^heading\s*(\d)$", re.IGNORECASE)


def _kind(p: Paragraph, style_names: dict[str, str]) -> tuple[ChunkType, int]:
    # the style id read straight from the XML, named through a table built once: asking
    # python-docx for ``p.style`` resolves the styles part again for every paragraph
    style_id = p._p.style
    style = style_names.get(style_id, style_id) if style_id else ""
    lowered = style.lower()
    match = _HEADING.match(style)
    if match:
        return ChunkType.HEADING, int(match.group(1))
    if lowered == "title":
        return ChunkType.HEADING, 1
    if lowered.startswith("list") or (p._p.pPr is not None and p._p.pPr.numPr is not None):
        return ChunkType.LIST, 0
    if "quote" in lowered:
        return ChunkType.QUOTE, 0
    if "code" in lowered or "preformatted" in lowered:
        return ChunkType.CODE, 0
    return ChunkType.PARAGRAPH, 0


_P, _TBL, _R = qn("w:p"), qn("w:tbl"), qn("w:r")
_WRAPPERS = {qn("w:sdt"), qn("w:sdtContent"), qn("w:customXml")}  # block content inside
_TEXT_BOX = qn("w:txbxContent")
# text that is not the document's: deleted or moved away, a drawing's fallback copy
_NOT_TEXT = {
    qn("w:del"),
    qn("w:moveFrom"),
    "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback",
}


def _block_elements(container: Any) -> Iterator[Any]:
    """The ``w:p`` and ``w:tbl`` elements of a body or cell, in order, content controls
    and custom XML opened."""
    for child in container.iterchildren():
        if child.tag in (_P, _TBL):
            yield child
        elif child.tag in _WRAPPERS:
            yield from _block_elements(child)


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
    style_names = {str(st.style_id): str(st.name) for st in doc.styles if st.style_id}
    out = BlockBuilder()
    pending: list[str] = []  # consecutive list items
    for el in _block_elements(doc.element.body):
        if el.tag == _P:
            item = Paragraph(el, doc)
            kind, level = _kind(item, style_names)
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
