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
  ``4.2.7`` and a title starting with a capital letter or a letter of a script without
  case: ``1. 概要``, ``1. مقدمة``; or ``Chapter 3``, ``PART II``, ``Appendix B`` with an
  optional title, and the same words in the major European languages, ``Kapitel 3``,
  ``Глава 2``, and ``第3章``, ``제3장``), alone on its line between blank lines, at most
  :data:`MAX_TITLE_CHARS` characters and :data:`MAX_TITLE_WORDS` words, not ending as a
  clause or (in a script without case) a sentence does. A numbered title is one level
  deeper per number after the first; the keywords (``part``, ``chapter``, ...) and ``N.``
  rank by first appearance, like adornments. A title's runs of spaces are one space
  (``2.  Message Format``, as RFCs type them).

A numbered line only counts where a section follows it: another numbered line at the same
or a higher level straight after it means a list (``1. Install``, ``2. Run``), and then
none of that run counts. Everything else stays a paragraph, so text without such titles
parses exactly as before.

Text printed in pages (RFCs, man pages, reports saved as text) has a footer and a header
at each form feed; those lines go (:func:`_page_furniture`), and a form feed starts a
new paragraph.

Texts handed over as strings (``Store.add_texts``, ``POST .../texts``) are the caller's
own passages: :func:`parse_plain` keeps them as paragraphs without looking for titles.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePath

from ragstore.models import Block, ChunkType, ParsedDocument

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n+")
# a line of one punctuation character (reStructuredText's adornment characters), 3 or more
_ADORNMENT = re.compile(r"([!-/:-@\[-`{-~])\1{2,}[ \t]*")
_NUMBERED = re.compile(r"(\d{1,3}(?:\.\d{1,3}){0,5})([.．]?)[ \t]+(\S.*)")
# the words for part, book, chapter, section and appendix in English, French, German,
# Spanish, Italian, Portuguese, Dutch, Polish, the Scandinavian languages and Russian
_KEYWORDS = (
    "part|book|chapter|section|appendix"
    "|partie|livre|chapitre|annexe"
    "|teil|buch|kapitel|abschnitt|anhang"
    "|parte|libro|cap[ií]tulo|secci[oó]n|ap[eé]ndice|anexo"
    "|capitolo|sezione|appendice"
    "|livro|se[cç][cç][aã]o|ap[eê]ndice"
    "|deel|boek|hoofdstuk|sectie|bijlage"
    "|cz[eę][sś][cć]|rozdzia[lł]|dodatek"
    "|bilaga|bilag|vedlegg"
    "|часть|книга|глава|раздел|приложение"
)
_KEYWORD = re.compile(
    rf"({_KEYWORDS})[ \t]+"
    r"(\d{1,3}|[ivxlcdm]{1,7}|[^\W\d_]|one|two|three|four|five|six|seven|eight|nine|ten)"
    r"\b[.:]?(?:[ \t]+(\S.*))?",
    re.IGNORECASE,
)
# Chinese and Japanese 第3章 / 第三章 (part 部 or 編, chapter 章, section 節), Korean 제3장
# (part 부 or 편, chapter 장, section 절), and the appendix 付録 A / 附录 A / 부록 A
_CJK_KEYWORD = re.compile(
    r"(?:第[ \t]*(?:\d{1,3}|[一二三四五六七八九十百〇零两]{1,4})[ \t]*([部編编章節节])"
    r"|제[ \t]*\d{1,3}[ \t]*([부편장절])"
    r"|(付録|附录|附錄|부록)[ \t]*(?:\d{1,3}|[A-Za-zＡ-Ｚ]))"
    r"(?:[ \t]*[:：.．]?[ \t]*(\S.*))?"
)
# a line ending in one of these goes on: a clause, not a title
_CLAUSE_ENDS = (",", ";", ":", "，", "；", "：", "、", "،", "؛")
# a title of a caseless script ending in a full stop is a sentence ("1. 電源を切ります。")
_FULL_STOPS = (".", "。", "．", "۔", "।")
# page furniture: "Smith   Standards Track   [Page 3]", the footer of an RFC page
_PAGE_FOOTER = re.compile(r".*\[Page #\]")  # as _form writes it
_DIGITS = re.compile(r"\d+")
MIN_PAGE_CHARS = 200  # fewer characters a page on average: no page furniture looked for
FURNITURE_REACH = 3  # lines looked at either side of a form feed for its footer and header
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
    text = _page_furniture(text)
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


def _page_furniture(text: str) -> str:
    """``text`` with the footer and header lines around its form feeds (pages printed to
    text: RFCs, man pages, reports) as spaces and the form feeds as line breaks: the same
    length, so blocks still index the file's text. A line is furniture when the line in
    its place at another page break reads the same but for its numbers ("Smith  Standards
    Track  [Page 3]", "RFC 9999  Foo  June 2024"); an RFC footer ("... [Page N]") is
    furniture on its own, and so is the header after it. Left in, they were a chunk of
    their own or glued to a section's text at every page."""
    if "\f" not in text:
        return text
    if text.count("\f") * MIN_PAGE_CHARS > len(text):  # not pages: form feeds as text
        return text.replace("\f", "\n")
    breaks: list[tuple[_Span | None, _Span | None]] = []
    at, end = text.find("\f"), 0
    while at >= 0:
        start = text.rfind("\n", end, at) + 1  # back to the last line's end at most
        end = text.find("\n", at)
        end = len(text) if end < 0 else end
        after = text.rfind("\f", at, end) + 1
        foot = (start, at) if text[start:at].strip() else _beside(text, start, -1)
        head = (after, end) if text[after:end].strip() else _beside(text, end, 1)
        breaks.append((foot, head))
        at = text.find("\f", end)
    forms = [(_form(text, foot), _form(text, head)) for foot, head in breaks]
    feet = Counter(f for f, _ in forms if f)
    heads = Counter(h for _, h in forms if h)
    furniture: set[str] = set()
    spans: list[_Span] = []
    for (foot, head), (f, h) in zip(breaks, forms, strict=True):
        rfc = _PAGE_FOOTER.fullmatch(f) is not None
        if foot is not None and (rfc or feet[f] > 1) and _furniture(text, foot, -1):
            spans.append(foot)
            furniture.add(f)
        if head is not None and (rfc or heads[h] > 1) and _furniture(text, head, 1):
            spans.append(head)
    end = len(text.rstrip("\n \t"))
    last = _beside(text, text.rfind("\n", 0, end) + 1, 0)  # the last page's footer
    if last is not None and _form(text, last) in furniture and _furniture(text, last, -1):
        spans.append(last)
    out: list[str] = []
    pos = 0
    for a, b in sorted(spans):
        a = max(a, pos)
        out += [text[pos:a], " " * max(b - a, 0)]
        pos = max(pos, b)
    out.append(text[pos:])
    return "".join(out).replace("\f", "\n")  # a new page starts a new paragraph


_Span = tuple[int, int]  # a line's text: its first character and the one past its last


def _beside(text: str, edge: int, step: int) -> _Span | None:
    """The first line with text, within FURNITURE_REACH lines, before the line starting
    at ``edge`` (``step`` -1), after the line ending there (1), or that line itself (0)."""
    for _ in range(FURNITURE_REACH + 1 if step else 1):
        if step < 0:
            if edge == 0:
                return None
            a, b = text.rfind("\n", 0, edge - 1) + 1, edge - 1
        elif step > 0:
            if edge >= len(text):
                return None
            a, b = edge + 1, text.find("\n", edge + 1)
            b = len(text) if b < 0 else b
        else:
            a, b = edge, text.find("\n", edge)
            b = len(text) if b < 0 else b
        line = text[a:b]
        if "\f" in line:
            return None
        if line.strip():
            return (a, b)
        edge = a if step < 0 else b
    return None


def _form(text: str, span: _Span | None) -> str:
    """A furniture line as every page types it: numbers as ``#``, spaces collapsed."""
    if span is None:
        return ""
    return _DIGITS.sub("#", " ".join(text[span[0] : span[1]].split()))


def _furniture(text: str, span: _Span, away: int) -> bool:
    """Whether a line found at a page break stands apart from the page's text, as page
    furniture does: a blank line (or the file's edge) on its side ``away`` from the break,
    and not a title ("Chapter 3" after every form feed of a book is its chapters')."""
    if away < 0:
        edge = text.rfind("\n", 0, span[0])
        beyond = "" if edge < 0 else text[text.rfind("\n", 0, edge) + 1 : edge]
    else:
        edge = text.find("\n", span[1])
        end = text.find("\n", edge + 1)
        beyond = "" if edge < 0 else text[edge + 1 : len(text) if end < 0 else end]
    line = " ".join(text[span[0] : span[1]].split())
    return (
        not beyond.strip()
        and "\f" not in beyond  # a page of that line alone: the page's text, not furniture
        and _KEYWORD.fullmatch(line) is None
        and _CJK_KEYWORD.fullmatch(line) is None
    )


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
        over, title, under = lines[0].strip(), " ".join(lines[1].split()), lines[2].strip()
        if over[0] == under[0] and _title_like(title) and len(under) >= len(title) / 2:
            return (title, (under[0], True)), 3
    if len(lines) >= 2 and _ADORNMENT.fullmatch(lines[1]) and not _ADORNMENT.fullmatch(lines[0]):
        title, under = " ".join(lines[0].split()), lines[1].strip()
        if lines[0][:1] not in (" ", "\t") and _title_like(title) and len(under) >= len(title) / 2:
            return (title, (under[0], False)), 2
    return None


def _numbered(line: str, a: int, b: int) -> _Piece | None:
    if len(line) > MAX_TITLE_CHARS * 2:
        return None
    title = " ".join(line.split())  # "2.  Message Format", as every RFC types it
    if len(title) > MAX_TITLE_CHARS or len(title.split()) > MAX_TITLE_WORDS:
        return None
    key = _KEYWORD.fullmatch(title)
    if key is not None:
        rest = key.group(3)
        if rest is None or _capital(rest[0]) or not rest[:1].isalpha():
            return _Piece(line, a, b, title, ("keyword", key.group(1).lower()))
        return None
    cjk = _CJK_KEYWORD.fullmatch(title)
    if cjk is not None:
        if (cjk.group(4) or "").endswith(_CLAUSE_ENDS + _FULL_STOPS):
            return None
        kind = cjk.group(1) or cjk.group(2) or cjk.group(3)
        return _Piece(line, a, b, title, ("keyword", kind))
    num = _NUMBERED.fullmatch(title)
    if num is None or not _capital(num.group(3)[0]) or title.endswith(_CLAUSE_ENDS):
        return None
    words = num.group(3).split()
    if title.endswith(_FULL_STOPS) and not words[0][0].isupper():
        return None  # a caseless script: "1. 電源を切ります。", "1. اضغط على الزر."
    if title.endswith(".") and len(words) > SENTENCE_WORDS:
        capitals = sum(1 for w in words if w[:1].isupper())
        if capitals * 2 < len(words):  # "1. The tenant pays the rent on the first day."
            return None
    depth = num.group(1).count(".")
    if depth == 0 and not num.group(2):  # "1 Introduction": a number alone is too weak
        return None
    return _Piece(line, a, b, title, ("numbered", 0), depth)


def _capital(ch: str) -> bool:
    """A letter that may open a title: a capital, or a letter of a script without case
    (Chinese, Japanese, Arabic, Hebrew, Thai ...), whose titles start as its sentences do."""
    return ch.isalpha() and not ch.islower()


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
