"""PowerPoint (PPTX) through python-pptx: one section a slide, its text in reading order.

Each slide is a top-level section named by its title (``Slide N`` when it has none), and
its blocks carry the slide number as their page, so a chunk never spans two slides and a
hit says which slide it came from. Within a slide, shapes are read top to bottom, then
left to right (grouped shapes in place of their group): a text frame whose paragraphs are
indented, or a body placeholder of several lines, is a list; any other text frame a
paragraph; a table a pipe table with its first row as the header. The speaker notes follow
the slide's own text, as paragraphs: they are often where the explanation is.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from pathlib import PurePath
from typing import Any

from pptx import Presentation
from pptx.enum.shapes import PP_PLACEHOLDER
from pptx.exc import PackageNotFoundError
from pptx.shapes.base import BaseShape
from pptx.shapes.group import GroupShape
from pptx.slide import Slide

from ragstore.errors import EmptyDocumentError
from ragstore.models import ChunkType, ParsedDocument
from ragstore.parsing.ooxml import parse_archive
from ragstore.parsing.structure import BlockBuilder, pipe_table

_TITLES = (PP_PLACEHOLDER.TITLE, PP_PLACEHOLDER.CENTER_TITLE, PP_PLACEHOLDER.VERTICAL_TITLE)
_BODIES = (PP_PLACEHOLDER.BODY, PP_PLACEHOLDER.OBJECT, PP_PLACEHOLDER.VERTICAL_BODY)


def _placeholder_type(shape: BaseShape) -> Any:
    if not shape.is_placeholder:
        return None
    try:
        return shape.placeholder_format.type
    except ValueError:  # a placeholder element without its type
        return None


def _in_reading_order(shapes: Iterable[BaseShape]) -> Iterator[BaseShape]:
    """Shapes top to bottom, then left to right; a group's members in its place, in the
    same order (iteratively: groups nest)."""

    def key(shape: BaseShape) -> tuple[int, int]:
        return (shape.top or 0, shape.left or 0)

    stack: list[BaseShape] = sorted(shapes, key=key, reverse=True)
    while stack:
        shape = stack.pop()
        if isinstance(shape, GroupShape):
            stack.extend(sorted(shape.shapes, key=key, reverse=True))
        else:
            yield shape


def _text_block(shape: BaseShape) -> tuple[ChunkType, str] | None:
    frame = shape.text_frame  # type: ignore[attr-defined]
    # a paragraph's text with its line breaks (``\v``) and fields, as the slide shows it
    lines = [(p.level, " ".join(p.text.split())) for p in frame.paragraphs]
    lines = [(level, text) for level, text in lines if text]
    if not lines:
        return None
    body = _placeholder_type(shape) in _BODIES
    if any(level > 0 for level, _ in lines) or (body and len(lines) > 1):
        return ChunkType.LIST, "\n".join("  " * level + "- " + text for level, text in lines)
    return ChunkType.PARAGRAPH, "\n".join(text for _, text in lines)


def _table(shape: BaseShape) -> tuple[str, dict[str, Any]]:
    rows = [[cell.text for cell in row.cells] for row in shape.table.rows]  # type: ignore[attr-defined]
    return pipe_table([r for r in rows if any(c.strip() for c in r)])


def _slide(slide: Slide, number: int, out: BlockBuilder) -> bool:
    """Add one slide's blocks; whether it holds any text (a title, a shape, notes)."""
    title_shape = next(
        (s for s in slide.placeholders if _placeholder_type(s) in _TITLES and s.has_text_frame),
        None,
    )
    title = " ".join(title_shape.text_frame.text.split()) if title_shape is not None else ""
    out.add(ChunkType.HEADING, title or f"Slide {number}", level=1, page=number)
    before = len(out.blocks)
    for shape in _in_reading_order(slide.shapes):
        if title_shape is not None and shape.shape_id == title_shape.shape_id:
            continue  # python-pptx hands out a new proxy each time: compare ids
        if getattr(shape, "has_table", False):
            text, meta = _table(shape)
            out.add(ChunkType.TABLE, text, page=number, metadata=meta)
        elif getattr(shape, "has_text_frame", False):
            block = _text_block(shape)
            if block is not None:
                out.add(block[0], block[1], page=number)
    if slide.has_notes_slide:
        notes = slide.notes_slide.notes_text_frame
        if notes is not None:
            for paragraph in notes.text.split("\n"):
                out.add(ChunkType.PARAGRAPH, " ".join(paragraph.split()), page=number)
    return bool(title) or len(out.blocks) > before


def _slides(deck: Any) -> list[Slide]:
    """The deck's slides in order, each once: ``ppt/presentation.xml`` may list one slide
    part many times (a 31 KB deck listing a slide of 2 MB of text 1,500 times was read as
    3 GB of text); PowerPoint never writes that, and a repeat adds nothing to read."""
    seen: set[str] = set()
    slides: list[Slide] = []
    for slide in deck.slides:
        part = str(slide.part.partname)
        if part not in seen:
            seen.add(part)
            slides.append(slide)
    return slides


def _parse(data: bytes, name: str) -> ParsedDocument:
    deck = Presentation(io.BytesIO(data))
    out = BlockBuilder()
    slides = _slides(deck)
    has_text = [_slide(slide, number, out) for number, slide in enumerate(slides, 1)]
    if not any(has_text):
        raise EmptyDocumentError(f"{name}: the presentation holds no text; nothing to ingest")
    props = deck.core_properties
    metadata: dict[str, Any] = {"slides": len(slides)}
    for key in ("author", "subject", "keywords", "category"):
        value = getattr(props, key, None)
        if value:
            metadata[key] = str(value)
    return ParsedDocument(
        format="pptx",
        title=(props.title or "").strip() or out.title or PurePath(name).stem or None,
        blocks=out.blocks,
        metadata=metadata,
    )


def parse_pptx(data: bytes, name: str) -> ParsedDocument:
    """Parse a PPTX; a damaged archive or XML part is ``corrupt_document`` for this file."""
    return parse_archive(
        _parse,
        data,
        name,
        fmt="PPTX",
        program="PowerPoint or LibreOffice",
        not_a_package=PackageNotFoundError,
        main_part="a slide",
    )
