"""Building a parsed document from blocks found one by one: extracted text, spans and
section paths kept in step. Shared by the parsers whose libraries hand out elements
rather than offsets into one text (HTML, DOCX, PDF)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ragstore.models import Block, ChunkType
from ragstore.parsing.limits import check_text_size


class BlockBuilder:
    """Appends blocks to a virtual extracted text (blocks joined by a blank line), and
    counts their text against the parse's limit (:func:`~ragstore.parsing.limits.text_limit`)
    as it grows: a file that unpacks into gigabytes stops at the limit."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self._pos = 0
        self._chars = 0  # what the blocks' texts add up to, as ingest.prepare counts it
        self._path: list[tuple[int, str]] = []  # (level, heading) of the open sections
        self.title: str | None = None

    @property
    def section(self) -> tuple[str, ...]:
        return tuple(h for _, h in self._path)

    def close_sections(self) -> None:
        """Close every open section: what comes next is at the top of the tree (an EPUB
        chapter of a book without a table of contents starts its own)."""
        self._path.clear()

    def add(
        self,
        kind: ChunkType,
        text: str,
        *,
        level: int = 0,
        page: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        text = text.strip()
        if not text:
            return
        self._chars += len(text)
        check_text_size(self._chars)
        start = self._pos
        self._pos = start + len(text) + 2
        if kind is ChunkType.HEADING:
            level = max(1, level)
            while self._path and self._path[-1][0] >= level:
                self._path.pop()
            self.blocks.append(
                Block(
                    kind,
                    text,
                    start,
                    start + len(text),
                    section_path=self.section,
                    level=level,
                    page=page,
                    metadata=metadata or {},
                )
            )
            self._path.append((level, " ".join(text.split())))
            if self.title is None and level == 1:
                self.title = " ".join(text.split())
            return
        self.blocks.append(
            Block(
                kind,
                text,
                start,
                start + len(text),
                section_path=self.section,
                page=page,
                metadata=metadata or {},
            )
        )

    def extend_last(self, text: str) -> None:
        """Make ``text`` the last block's text: it is that text carried on (a PDF's
        paragraph running on to the next page), so its span grows where it stands."""
        text = text.strip()
        last = self.blocks[-1]
        grown = len(text) - len(last.text)
        self._chars += grown
        check_text_size(self._chars)
        self._pos += grown
        self.blocks[-1] = replace(last, text=text, char_end=last.char_start + len(text))


def pipe_table(rows: list[list[str]]) -> tuple[str, dict[str, Any]]:
    """Rows of cell texts as a Markdown pipe table (first row = header), with its shape.

    One line per row, so the chunker can split a long table between rows and repeat
    the two header lines on every piece.
    """
    width = max((len(r) for r in rows), default=0)

    def line(cells: list[str]) -> str:
        cells = [" ".join(c.split()).replace("|", "\\|") for c in cells]
        cells += [""] * (width - len(cells))
        return "| " + " | ".join(cells) + " |"

    if not rows or width == 0:
        return "", {}
    out = [line(rows[0]), "|" + "---|" * width, *(line(r) for r in rows[1:])]
    return "\n".join(out), {"rows": len(rows), "columns": width, "header_lines": 2}
