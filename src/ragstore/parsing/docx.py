"""DOCX through python-docx: headings, paragraphs, lists, quotes and tables in body order.

The Word styles say what a paragraph is (``Heading 2``, ``List Bullet``, ``Quote``);
consecutive list paragraphs form one list block, and each table becomes one pipe table
with its first row as the header.
"""

from __future__ import annotations

import io
import re
from pathlib import PurePath
from typing import Any

from docx import Document
from docx.opc.exceptions import PackageNotFoundError
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


def _rows(table: Table) -> list[list[str]]:
    rows = []
    for row in table.rows:
        cells: list[str] = []
        seen: set[int] = set()
        for cell in row.cells:
            if id(cell._tc) in seen:
                continue  # a merged cell is reported once per grid column it spans
            seen.add(id(cell._tc))
            cells.append(cell.text)
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
    for item in doc.iter_inner_content():
        if isinstance(item, Paragraph):
            kind, level = _kind(item, style_names)
            if kind is ChunkType.LIST:
                if item.text.strip():
                    pending.append("- " + item.text.strip())
                continue
            if pending:
                out.add(ChunkType.LIST, "\n".join(pending))
                pending = []
            out.add(kind, item.text, level=level)
        else:
            if pending:
                out.add(ChunkType.LIST, "\n".join(pending))
                pending = []
            text, shape = pipe_table(_rows(item))
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
