"""Plain text and reStructuredText: paragraphs split at blank lines, section titles found
by the conventions people type them in.

A long manual, a book or an RFC saved as text has sections as surely as a Markdown file;
they are typed, not marked up. Without them every chunk of such a file would be a section
of its own with no heading path: the model and BM25 would read fragments without the
title that says what they are about, and search could not rank or return sections
(docs/benchmarks.md, "Plain-text sections"). So a paragraph is a section title when it is:

- **underlined** (and optionally overlined) with one punctuation character repeated, as
  reStructuredText and setext write them (``Title`` over ``=====``). As in
  reStructuredText, levels follow the order in which adornment styles first appear;
- (not in ``.rst`` files, where these are list items) **numbered** (``2.``, ``3.1``,
  ``4.2.7`` and a title starting with a capital letter, or ``Chapter 3``, ``PART II``,
  ``Appendix B`` with an optional title), alone on its line between blank lines, at most
  :data:`MAX_TITLE_CHARS` characters and :data:`MAX_TITLE_WORDS` words. A numbered title
  is one level deeper per number after the first; the keywords (``part``, ``chapter``,
  ...) and ``N.`` rank by first appearance, like adornments.

A numbered line only counts where a section follows it: another numbered line at the same
or a higher level straight after it means a list (``1. Install``, ``2. Run``), and then
none of that run counts. Everything else stays a paragraph, so text without such titles
parses exactly as before.

Texts handed over as strings (``Store.add_texts``, ``POST .../texts``) are the caller's
own passages: :func:`parse_plain` keeps them as paragraphs without looking for titles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePath

from ragstore.models import Block, ChunkType, ParsedDocument

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n+")
# a line of one punctuation character (reStructuredText's adornment characters), 3 or more
_ADORNMENT = re.compile(r"([!-/:-@\[-`{-~])\1{2,}[ \t]*")
_NUMBERED = re.compile(r"(\d{1,3}(?:\.\d{1,3}){0,5})(\.?)[ \t]+(\S.*)")
_KEYWORD = re.compile(
    r"(part|book|chapter|section|appendix)[ \t]+"
    r"(\d{1,3}|[ivxlcdm]{1,7}|[a-z]|one|two|three|four|five|six|seven|eight|nine|ten)"
    r"\b[.:]?(?:[ \t]+(\S.*))?",
    re.IGNORECASE,
)
MAX_TITLE_CHARS = 100
MAX_TITLE_WORDS = 12
SENTENCE_WORDS = 6  # past this, a numbered line ending in a period must be title-cased


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


def parse_plain(text: str, name: str) -> ParsedDocument:
    """Paragraphs only: no section titles looked for."""
    blocks = [Block(ChunkType.PARAGRAPH, text[a:b], a, b) for a, b in paragraph_spans(text)]
    return ParsedDocument(format="text", title=PurePath(name).stem or None, blocks=blocks)


def parse_text(text: str, name: str) -> ParsedDocument:
    """Paragraphs and the section titles of the rules above, with section paths."""
    numbered = PurePath(name).suffix.lower() != ".rst"
    found = _drop_lists([t for a, b in paragraph_spans(text) for t in _split(text, a, b, numbered)])
    styles: dict[object, int] = {}
    path: list[tuple[int, str]] = []
    blocks: list[Block] = []
    for piece in found:
        if piece.title is None:
            section = tuple(h for _, h in path)
            blocks.append(Block(ChunkType.PARAGRAPH, piece.text, piece.start, piece.end, section))
            continue
        level = _level(piece, styles)
        while path and path[-1][0] >= level:
            path.pop()
        section = tuple(h for _, h in path)
        blocks.append(
            Block(ChunkType.HEADING, piece.title, piece.start, piece.end, section, level=level)
        )
        path.append((level, piece.title))
    return ParsedDocument(format="text", title=PurePath(name).stem or None, blocks=blocks)


@dataclass
class _Piece:
    """A paragraph, or a section title (``title``) with the style that sets its level."""

    text: str
    start: int
    end: int
    title: str | None = None
    style: object = None
    depth: int = 0  # numbered titles: how many numbers after the first (3.1.2: 2)


def _split(text: str, a: int, b: int, numbered: bool) -> list[_Piece]:
    """The paragraph ``text[a:b]`` as pieces: a title it opens with, and the rest."""
    para = text[a:b]
    lines = para.split("\n")
    title = _adorned(lines)
    if title is not None:
        head, used = title
        cut = sum(len(line) + 1 for line in lines[:used])
        out = [_Piece(para[: cut - 1], a, a + cut - 1, head[0], head[1])]
        rest = para[cut:]
        if rest.strip():
            lead = len(rest) - len(rest.lstrip())
            out.append(_Piece(rest.strip(), a + cut + lead, b))
        return out
    if numbered and len(lines) == 1:
        piece = _numbered(para, a, b)
        if piece is not None:
            return [piece]
    return [_Piece(para, a, b)]


def _adorned(lines: list[str]) -> tuple[tuple[str, object], int] | None:
    """((title, style), lines used) when the paragraph opens with an adorned title."""
    if len(lines) >= 3 and _ADORNMENT.fullmatch(lines[0]) and _ADORNMENT.fullmatch(lines[2]):
        over, title, under = lines[0].strip(), lines[1].strip(), lines[2].strip()
        if over[0] == under[0] and _title_like(title) and len(under) >= len(title) / 2:
            return (title, (under[0], True)), 3
    if len(lines) >= 2 and _ADORNMENT.fullmatch(lines[1]) and not _ADORNMENT.fullmatch(lines[0]):
        title, under = lines[0].strip(), lines[1].strip()
        if lines[0][:1] not in (" ", "\t") and _title_like(title) and len(under) >= len(title) / 2:
            return (title, (under[0], False)), 2
    return None


def _numbered(line: str, a: int, b: int) -> _Piece | None:
    title = line.strip()
    if len(title) > MAX_TITLE_CHARS or len(title.split()) > MAX_TITLE_WORDS:
        return None
    key = _KEYWORD.fullmatch(title)
    if key is not None:
        rest = key.group(3)
        if rest is None or rest[:1].isupper() or not rest[:1].isalpha():
            return _Piece(line, a, b, title, ("keyword", key.group(1).lower()))
        return None
    num = _NUMBERED.fullmatch(title)
    if num is None or not num.group(3)[:1].isupper() or title.endswith((",", ";", ":")):
        return None
    words = num.group(3).split()
    if title.endswith(".") and len(words) > SENTENCE_WORDS:
        capitals = sum(1 for w in words if w[:1].isupper())
        if capitals * 2 < len(words):  # "1. The tenant pays the rent on the first day."
            return None
    depth = num.group(1).count(".")
    if depth == 0 and not num.group(2):  # "1 Introduction": a number alone is too weak
        return None
    return _Piece(line, a, b, title, ("numbered", 0), depth)


def _title_like(title: str) -> bool:
    return (
        0 < len(title) <= MAX_TITLE_CHARS * 2
        and any(ch.isalnum() for ch in title)
        and not _ADORNMENT.fullmatch(title)
    )


def _drop_lists(pieces: list[_Piece]) -> list[_Piece]:
    """Numbered titles followed straight away by another at the same or a higher level
    are list items: every numbered title of such a run goes back to being a paragraph."""
    out = list(pieces)
    i = 0
    while i < len(out):
        j = i
        while (
            j + 1 < len(out)
            and _is_numbered(out[j])
            and _is_numbered(out[j + 1])
            and out[j + 1].style == out[j].style
            and out[j + 1].depth <= out[j].depth
        ):
            j += 1
        if j > i:
            for n in range(i, j + 1):
                out[n] = _Piece(out[n].text, out[n].start, out[n].end)
        i = j + 1
    return out


def _is_numbered(piece: _Piece) -> bool:
    return isinstance(piece.style, tuple) and piece.style[0] in ("numbered", "keyword")


def _level(piece: _Piece, styles: dict[object, int]) -> int:
    """A style's level is its order of first appearance; a numbered title is its depth
    below that (every other title has depth 0)."""
    return styles.setdefault(piece.style, len(styles) + 1) + piece.depth
