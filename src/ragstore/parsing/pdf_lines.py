"""The lines of a PDF page as pypdf's text extraction reports them, with how they are set.

This module owns the line collector: the ``visitor_text`` callback that turns pypdf's
text runs (each with its font, size and matrices) into :class:`PdfLine` objects, one per
line of the page text, each with the size holding most of its characters (of those outside
monospace fonts when it has any), whether it is bold, how many characters it has, how
many of them are code (in a monospace font) and at what size, and where its baseline is.
It reads fonts (bold by name, weight or flag; monospace by name or flag) and matrices (the
size a run is seen at, its baseline) and nothing more; what the lines mean (which are
titles, the size code stands in for) is :mod:`ragstore.parsing.pdf_headings`'s business.
It also owns :func:`storable`, which every text taken from a PDF passes through.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from pypdf.errors import PyPdfError

LINE_SHARE = 0.8  # of a line's characters in its dominant size (and bold, for bold lines)
_BOLD_NAME = re.compile(
    r"bold|black|heavy|demi|semibd|extrabd|ultrabd|-bd\b|,bd\b|\bcmbx|\bcmb\d|\bbx\d", re.I
)
_MONO_NAME = re.compile(
    r"mono(?!type)|courier|code|consolas|menlo|nimbusmon|\bcm(?:sl|i)?tt|\b(?:sf|ec)tt", re.I
)
_FORCE_BOLD = 1 << 18  # FontDescriptor /Flags bit 19
_FIXED_PITCH = 1  # FontDescriptor /Flags bit 1
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """``text`` with NUL and lone surrogates as U+FFFD. A PDF's strings and glyphs can
    decode to either (a NUL shown in a code sample, a broken UTF-16 title); PostgreSQL's
    text holds neither, and a file that reads fine must not fail at the database after its
    chunks were embedded."""
    return _UNSTORABLE.sub("\ufffd", text) if _UNSTORABLE.search(text) else text


@dataclass(slots=True)
class PdfLine:
    page: int  # 1-based
    index: int  # its place among the page's lines
    text: str
    size: float  # the size holding most of its characters (0: no characters)
    bold: bool  # nearly all its characters bold
    chars: int  # non-space characters
    key: str | None = None  # lower-cased, digits as "#" (:func:`_edge_key` fills it in)
    y: float | None = None  # where its first run starts, up the page (None: not known)
    code: int = 0  # of its characters, those in a monospace font
    code_size: float = 0.0  # the size of most of those, to a hundredth of a point


@dataclass
class _Collector:
    """The ``visitor_text`` callback of one page: its lines with their size and weight,
    both judged from the characters of a line outside monospace fonts when it has any (a
    title with a name in code: "Class: EventEmitter"), from its code when it has none."""

    page: int
    lines: list[PdfLine] = field(default_factory=list)
    _parts: list[str] = field(default_factory=list)
    _sizes: dict[tuple[float, bool, bool], int] = field(default_factory=dict)  # size, bold, mono
    _fonts: dict[int, tuple[Any, bool, bool]] = field(default_factory=dict)  # id -> font's
    _y: float | None = None  # the baseline of the line being collected

    def __call__(self, text: Any, cm: Any, tm: Any, font: Any, size: Any) -> None:
        if not isinstance(text, str) or not text:
            return
        for i, piece in enumerate(text.split("\n") if "\n" in text else (text,)):
            if i:
                self.end_line()
            if piece:
                if not self._parts:
                    # the line starts here: where is known only for the text's first piece
                    self._y = None if i else _baseline(cm, tm)
                self._parts.append(piece)
                n = len(piece) - piece.count(" ")
                if n:
                    key = (_seen(cm, tm, size), *self._style(font))
                    self._sizes[key] = self._sizes.get(key, 0) + n

    def end_line(self) -> None:
        text = storable(" ".join("".join(self._parts).split()))
        if text:
            chars = sum(self._sizes.values())
            code = sum(n for (_, _, mono), n in self._sizes.items() if mono)
            by_code: dict[float, int] = {}
            for (seen, _, mono), n in self._sizes.items():
                if mono:
                    by_code[seen] = by_code.get(seen, 0) + n
            by_size: dict[float, int] = {}
            bold = 0
            for (seen, is_bold, mono), n in self._sizes.items():
                if mono == (code == chars):  # text when there is any, else code
                    size = round(seen * 2) / 2
                    by_size[size] = by_size.get(size, 0) + n
                    bold += n if is_bold else 0
            judged = sum(by_size.values())
            size = max(by_size, key=by_size.__getitem__) if by_size else 0.0
            n = by_size.get(size, 0)
            self.lines.append(
                PdfLine(
                    page=self.page,
                    index=len(self.lines),
                    text=text,
                    size=size if judged and n >= LINE_SHARE * judged else 0.0,
                    bold=bool(judged) and bold >= LINE_SHARE * judged,
                    chars=chars,
                    y=self._y,
                    code=code,
                    code_size=max(by_code, key=by_code.__getitem__) if by_code else 0.0,
                )
            )
        self._parts.clear()
        self._sizes.clear()
        self._y = None

    def _style(self, font: Any) -> tuple[bool, bool]:
        if font is None:
            return False, False
        known = self._fonts.get(id(font))
        if known is None:  # the font is kept with its answer, so its id is not reused
            known = self._fonts[id(font)] = (font, *_font_style(font))
        return known[1], known[2]


def _seen(cm: Any, tm: Any, size: Any) -> float:
    """The size a run is seen at: its Tf size scaled by the text and current matrices
    (generators that set ``1 Tf`` and scale the matrix are many), to a hundredth of a
    point; a line's size is rounded to half a point."""
    try:
        c = float(tm[2]) * float(cm[0]) + float(tm[3]) * float(cm[2])
        d = float(tm[2]) * float(cm[1]) + float(tm[3]) * float(cm[3])
        seen = abs(float(size)) * math.hypot(c, d)
    except (TypeError, ValueError, IndexError):
        return 0.0
    if not math.isfinite(seen) or seen > 1000:
        return 0.0
    return round(seen, 2)


def _baseline(cm: Any, tm: Any) -> float | None:
    """How far up the page a run starts: the text matrix's origin through the current
    matrix (None for a matrix pypdf did not give as numbers)."""
    try:
        y = float(tm[4]) * float(cm[1]) + float(tm[5]) * float(cm[3]) + float(cm[5])
    except (TypeError, ValueError, IndexError):
        return None
    return y if math.isfinite(y) else None


def _font_style(font: Any) -> tuple[bool, bool]:
    """Whether a font is bold and whether it is monospace (code), by its name
    (``Helvetica-Bold``, TeX's ``CMBX12``; ``Courier``, ``DejaVuSansMono``) or its
    descriptor (a weight of 600 or more, the ForceBold flag; the FixedPitch flag):
    generators name the weight in the font name far more often than they fill in the
    descriptor, and the name is what a subset prefix (``ABCDEF+``) leaves readable."""
    bold = mono = False
    try:
        name = str(font.get("/BaseFont", "") or "").split("+")[-1]
        bold, mono = bool(_BOLD_NAME.search(name)), bool(_MONO_NAME.search(name))
        if bold and mono:
            return True, True
        descriptor = font.get("/FontDescriptor")
        if descriptor is None and "/DescendantFonts" in font:
            descriptor = font["/DescendantFonts"][0].get_object().get("/FontDescriptor")
        if descriptor is None:
            return bold, mono
        descriptor = descriptor.get_object()
        weight = descriptor.get("/FontWeight")
        flags = int(descriptor.get("/Flags", 0) or 0)
        heavy = (weight is not None and float(weight) >= 600) or bool(flags & _FORCE_BOLD)
        return bold or heavy, mono or bool(flags & _FIXED_PITCH)
    except (PyPdfError, AttributeError, TypeError, ValueError, KeyError, IndexError):
        return bold, mono  # a font dictionary this odd reads as what its name says


def plain_lines(page: int, text: str) -> list[PdfLine]:
    """The lines of a page's ``text`` with nothing known of how they are set (no size,
    no place): what a PDF with an outline, whose titles come from its bookmarks, is read
    with. Collecting its lines as they are drawn would cost more than its extraction."""
    rows = (" ".join(row.split()) for row in text.split("\n"))
    return [
        PdfLine(page=page, index=i, text=row, size=0.0, bold=False, chars=len(row))
        for i, row in enumerate(row for row in rows if row)
    ]


def page_collector(page: int) -> _Collector:
    """A ``visitor_text`` callback for ``page.extract_text``; call :meth:`end_line` after."""
    return _Collector(page)
