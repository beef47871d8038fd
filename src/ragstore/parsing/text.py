"""Plain text: paragraphs are separated by blank lines."""

from __future__ import annotations

import re
from pathlib import PurePath

from ragstore.models import Block, ChunkType, ParsedDocument

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n+")


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each non-blank paragraph, trimmed of surrounding whitespace."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for match in [*_PARAGRAPH_BREAK.finditer(text), None]:
        end = match.start() if match else len(text)
        piece = text[pos:end]
        stripped = piece.strip()
        if stripped:
            start = pos + (len(piece) - len(piece.lstrip()))
            spans.append((start, start + len(stripped)))
        if match:
            pos = match.end()
    return spans


def parse_text(text: str, name: str) -> ParsedDocument:
    blocks = [Block(ChunkType.PARAGRAPH, text[a:b], a, b) for a, b in paragraph_spans(text)]
    return ParsedDocument(format="text", title=PurePath(name).stem or None, blocks=blocks)
