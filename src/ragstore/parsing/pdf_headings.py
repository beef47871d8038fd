"""Section titles of a PDF without an outline, found from how its lines are set.

Most PDFs people have (papers, reports, exported manuals) carry no bookmarks, so without
this every chunk of them had an empty section path: nothing for the model or BM25 to read
as a heading and nothing for search to rank sections by. pypdf reports each text run with
its font and size (``visitor_text``) during the same extraction that gives the page text,
so the cost is the bookkeeping of one callback per run (:mod:`ragstore.parsing.pdf_lines`
collects the lines; this module reads titles from them).

The rules, for one document (:func:`find_headings`):

- the body size is the size (rounded to half a point) holding most characters outside
  monospace fonts (code samples, which may hold more, set smaller), unless those are
  under a tenth of all (a code listing);
- a line's size and weight are those of its characters outside monospace fonts when it
  has any (a title with a name in code: "Class: EventEmitter"), of its code when it has
  none; where the document sets code smaller than the text around it (a browser's default
  styles: 13/16 of it, in titles too), as its lines of body text with inline code show,
  a line all in code is read at the size of the text it stands in (a title in code is at
  its level; a code sample is at the body size, not a title);
- a heading is a run of at most three adjacent lines set in one size and weight clearly
  larger than the body (x1.15 and a point more; in bold, x1.04 and half a point more) at
  a wrapped line's spacing (baselines at most 1.6 sizes apart: two titles in a row, an h3
  right under an h2 or two h3s, have the space between them that sets titles apart from
  what is around them, and are two headings), short (at most 100 characters a line, 20
  words in all), not ending like a sentence (in ``;`` or a hyphen; in ``.``, ``,`` or
  ``:`` only when it has at most 12 words and the next line does not carry it on in lower
  case: "Introduction:" and "1. Overview." are titles), mostly letters (not a number, an
  equation, a single letter or a drop cap), not a caption (``Figure 2``, ``Table 1``), a
  table-of-contents line with leader dots, nor a line with an e-mail address or a web
  address (authors on a title page), nor next to one in its size (an author's name over
  the address);
- a size whose characters are mostly in runs that read like running text (more lines,
  longer lines, more words, a sentence's end) is a text size (a big-print document, a
  large-print passage), never a title size; a document set in one size has no titles;
- a line repeated in one size on several pages (digits aside) at the top or bottom of
  the page at one height, or in the same words on many pages anywhere, is a running
  header or footer, not a heading (so is "Chapter 3" over each chapter's title: the
  title below it still is one); numbered titles that differ only in their numbers
  ("Section 1.2", "Article 5") on many pages are titles, not one running line;
- a bold line at about the body size that starts with a section number (``2.1 Methods``)
  is a heading too (report styles often set sub-sections so);
- a short bold line at about the body size, mostly letters, set apart from the lines
  over and under it by a paragraph's break (1.5 times the body's leading or more), is a
  heading too (Chromium prints Markdown's h4 so); a bold lead-in right over its text, a
  paragraph in bold, a table's bold header row over its rows are not;
- levels: the distinct heading sizes, largest first, at most :data:`MAX_LEVELS`; numbered
  bold titles at body size come below them, deeper by their number's depth, and bold
  lines set apart one level below the deepest of all.

It works on what pypdf extracts, in the order of the page's content stream: a heading is
placed where its text starts a line of the page text, as a bookmark is (``parsing/pdf.py``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

from ragstore.parsing.pdf_lines import PdfLine

MAX_LEVELS = 4  # heading levels at most (sizes beyond the fourth share the last level)
LARGER = 1.15  # a heading size is at least this many times the body size ...
LARGER_BY = 1.0  # ... and this many points more
BOLD_LARGER = 1.04  # a bold line needs only this (12 pt bold over 11 pt text)
MAX_RUN_LINES = 3  # a heading wraps onto at most this many lines
WRAP_GAP = 1.6  # baselines further apart than this many times the size: not one title
MAX_LINE_CHARS = 100
MAX_WORDS = 20
MAX_ALONE_CHARS = 80  # a bold line at body size set apart (an h4): at most this long
MAX_ALONE_WORDS = 10
APART = 1.5  # leadings between two baselines with a paragraph's break between them
MAX_END_WORDS = 12  # a large title ending in a full stop, a colon or a comma: at most this
HEADING_SHARE = 0.5  # of a size's characters in title-shaped runs (against running text)
TEXT_SHARE = 0.1  # of all characters, in fonts that are not monospace: the body is text
CODE_SCALE = (0.6, 0.97)  # code set this much smaller than its text is set relative to it

_SENTENCE_END = re.compile(r"[.,;:]['\")\]]*$|-$")
_CAPTION = re.compile(
    r"^(?:fig(?:ure)?|table|tab|listing|algorithm|equation|eq|chart|plate|exhibit)\.?\s*"
    r"[\dIVX]",
    re.IGNORECASE,
)
_CONTACT = re.compile(r"https?://|\bwww\.|[\w.+-]+@[\w-]+\.\w")  # title-page lines
_LEADER = re.compile(r"\.{4,}|(?:\. ){3,}|…{2,}|_{4,}")
_NUMBERED = re.compile(r"^(?:(\d{1,2}(?:\.\d{1,2}){0,4})\.?|([IVXLC]{1,6})\.)\s+(?=[^\W\d_])")
_DIGITS = re.compile(r"\d+")
SAME_Y = 2.0  # points: lines this close in height on their pages are at one place
MANY_PAGES = 0.4  # of the pages: one text on this many, wherever it stands, is running
FURNITURE_PAGES = 3  # a running line is taken out of the text when on this many pages


def _gap(above: PdfLine, below: PdfLine) -> float | None:
    """How far the baseline of ``below`` is under that of ``above``, the line before it
    on its page (None: not known, or not under it: another column, a stream out of
    reading order)."""
    if above.y is None or below.y is None or above.page != below.page:
        return None
    gap = above.y - below.y
    return gap if gap > 0 else None


def _prose(run: _Run, *, large: bool = False, following: PdfLine | None = None) -> bool:
    """Whether a run reads like running text: too many lines or words, a line too long,
    a sentence's end. Such runs make their size a text size (see :func:`find_headings`).
    A ``large`` run (set in a title size) may end in ``.``, ``:`` or ``,`` ("Introduction:",
    "1. Overview.") when it is short (:data:`MAX_END_WORDS`) and the line ``following``
    it does not carry on its sentence (starts in lower case)."""
    text = run.text
    words = len(text.split())
    if (
        len(run.lines) > MAX_RUN_LINES
        or any(len(line.text) > MAX_LINE_CHARS for line in run.lines)
        or words > MAX_WORDS
    ):
        return True
    end = _SENTENCE_END.search(text)
    if end is None:
        return False
    return not (
        large
        and end.group()[0] in ".:,"
        and words <= MAX_END_WORDS
        and not (following is not None and following.text[:1].islower())
    )


def _title_like(text: str) -> bool:
    """Whether a short text can be a title: mostly letters (not a number, an equation, a
    single letter), not a caption, a contents line with leader dots, an e-mail address or
    a web address (an author's on a title page)."""
    if _CAPTION.match(text) or _LEADER.search(text) or _CONTACT.search(text):
        return False
    words = text.split()
    letters = sum(ch.isalpha() for ch in text)
    visible = len(text) - text.count(" ")
    return letters >= 2 and letters * 2 >= visible and max(len(w) for w in words) >= 2


def _following(run: _Run, pages: list[list[PdfLine]]) -> PdfLine | None:
    """The line after the run on its page, if any."""
    lines = pages[run.page - 1]
    i = run.lines[-1].index + 1
    return lines[i] if i < len(lines) else None


def _beside_address(run: _Run, pages: list[list[PdfLine]]) -> bool:
    """Whether the line over or under the run, in its size, has an e-mail or a web
    address: a title page's authors (names in bold over their addresses, a group's name
    and address over its member's name) are no titles."""
    lines = pages[run.page - 1]
    size = run.lines[0].size
    for i in (run.lines[0].index - 1, run.lines[-1].index + 1):
        if 0 <= i < len(lines) and lines[i].size == size and _CONTACT.search(lines[i].text):
            return True
    return False


def _shaped(run: _Run, *, large: bool = False) -> bool:
    return not _prose(run, large=large) and _title_like(run.text)


def _numbered_depth(text: str) -> int:
    m = _NUMBERED.match(text)
    if m is None:
        return 0
    return m.group(1).count(".") + 1 if m.group(1) else 1


def _edge_key(line: PdfLine) -> tuple[str, float]:
    """A line's text with its digits as ``#`` (page numbers, dates) and its size: the
    title of a document repeated small as the running header is still its title."""
    if line.key is None:
        line.key = _DIGITS.sub("#", line.text.lower())
    return line.key, line.size


def _same_place(ys: list[float]) -> bool:
    """Whether most (two thirds) of the baselines ``ys`` lie within :data:`SAME_Y` points
    of each other: a running header or footer is printed at one place on every page."""
    known = sorted(ys)
    best = start = 0
    for end, y in enumerate(known):
        while y - known[start] > SAME_Y:
            start += 1
        best = max(best, end - start + 1)
    return best * 3 >= len(ys) * 2


@dataclass
class _Seen:
    """Where the lines of one key were found."""

    pages: set[int]
    count: int = 0
    at_edge: int = 0
    ys: list[float] | None = None  # None once a line of the key has no known baseline


def _running_lines(
    candidates: list[list[PdfLine]],
    page_lines: list[int],
    *,
    anywhere: bool = True,
    others: list[list[PdfLine]] | None = None,
) -> set[int]:
    """The ids of the candidate lines that are running headers or footers (see the module
    docstring); ``page_lines`` is how many lines each page has. Lines of ``others`` (all
    away from the page's edges) count only as more lines of a candidate's key.

    A key (a line's text and size) is running when its lines are on two pages or more,
    mostly among the first or last two lines of their page and mostly at one height
    there, or (with ``anywhere``, for the exact text only) on :data:`MANY_PAGES` of the
    pages wherever they stand. Lines whose texts differ only in their numbers share a
    key too ("Page 3 of 40", "Chapter 3" over each chapter's title), but for them only
    the place counts: numbered titles ("Section 1.2", "Article 5", "Step 3") recur on
    most pages of a long manual, rarely at one place at the page's edge, and are titles.
    """
    seen: dict[tuple[bool, str, float], _Seen] = {}
    for lines, count in zip(candidates, page_lines, strict=True):
        for line in lines:
            masked, size = _edge_key(line)
            exact = line.text.lower()
            edge = line.index < 2 or line.index >= count - 2
            keys = [(False, exact, size)]
            if masked != exact:
                keys.append((True, masked, size))
            for key in keys:
                got = seen.get(key)
                if got is None:
                    got = seen[key] = _Seen(set(), ys=[])
                got.pages.add(line.page)
                got.count += 1
                got.at_edge += edge
                if line.y is None:
                    got.ys = None
                elif got.ys is not None:
                    got.ys.append(line.y)
    for lines in others or ():
        for line in lines:
            exact = line.text.lower()
            for key in ((False, exact, line.size), (True, *_edge_key(line))):
                got = seen.get(key)
                if got is not None and (key[0] is False or key[1] != exact):
                    got.pages.add(line.page)
                    got.count += 1
    many = max(3, math.ceil(MANY_PAGES * len(page_lines)))
    running = {
        key
        for key, got in seen.items()
        if len(got.pages) >= 2
        and (
            (got.at_edge * 3 >= got.count * 2 and (got.ys is None or _same_place(got.ys)))
            or (anywhere and not key[0] and len(got.pages) >= many)
        )
    }
    return {
        id(line)
        for lines in candidates
        for line in lines
        if (False, line.text.lower(), line.size) in running or (True, *_edge_key(line)) in running
    }


def page_furniture(pages: list[list[PdfLine]]) -> list[set[int]]:
    """For each page, the indices of its lines that are its running headers and footers
    (page numbers, the document's title, a browser's date and address): lines of one
    text (numbers aside) and size among the first or last two lines of
    :data:`FURNITURE_PAGES` pages or more (of two, in a document of two), at one height
    there, that either repeat word for word or carry the page's number. They are the
    page's furniture, not its text: kept in it, they were split into chunks of their own
    and ran through the chunks of the text around them. "Chapter 3" over a chapter's
    title at the top of its first page stays: it is neither; so does a page that is
    nothing else (every page reads the same)."""
    if len(pages) < 2:
        return [set() for _ in pages]
    edges = [[ln for ln in lines if ln.index < 2 or ln.index >= len(lines) - 2] for lines in pages]
    within = [lines[2:-2] for lines in pages]
    running = _running_lines(edges, [len(lines) for lines in pages], anywhere=False, others=within)
    groups: dict[tuple[str, float], list[PdfLine]] = {}
    for lines in edges:
        for line in lines:
            if id(line) in running:
                groups.setdefault(_edge_key(line), []).append(line)
    need = min(FURNITURE_PAGES, len(pages))
    out: list[set[int]] = [set() for _ in pages]
    for group in groups.values():
        if len({line.page for line in group}) >= need and (
            len({line.text for line in group}) < len(group) or _page_numbered(group)
        ):
            for line in group:
                out[line.page - 1].add(line.index)
    # furniture stands beside a page's text: a page all of such lines (every page the
    # same) is its text
    return [
        drop if len(drop) < len(lines) else set() for drop, lines in zip(out, pages, strict=True)
    ]


def _page_numbered(lines: list[PdfLine]) -> bool:
    """Whether most (two thirds) of ``lines`` carry a number that is their page's number
    plus one offset ("Page 12 of 40", "- 12 -", "xii" aside): a page number."""
    offsets: Counter[int] = Counter()
    for line in lines:
        numbers = {int(n) - line.page for n in _DIGITS.findall(line.text)[:4] if len(n) <= 6}
        offsets.update(numbers)
    return bool(offsets) and offsets.most_common(1)[0][1] * 3 >= len(lines) * 2


@dataclass
class _Run:
    page: int
    lines: list[PdfLine]

    @property
    def text(self) -> str:
        return " ".join(line.text for line in self.lines)


def _runs(
    lines: list[PdfLine], is_large: Callable[[PdfLine], bool], running: set[int]
) -> list[_Run]:
    """Adjacent lines of one large size and weight at a wrapped line's spacing (a gap
    over :data:`WRAP_GAP` times the size sets two titles in a row apart), split before a
    line that opens with a number (two numbered titles in a row are two headings,
    "Chapter 2" over its name is one), and bold lines of other sizes alone; the rest is
    text."""
    out: list[_Run] = []
    for line in lines:
        if not is_large(line) or id(line) in running:
            if line.bold:  # maybe a numbered title at body size; other lines are text
                out.append(_Run(line.page, [line]))
            continue
        last = out[-1] if out else None
        if (
            last is not None
            and last.lines[-1].index == line.index - 1
            and last.lines[-1].size == line.size
            and last.lines[-1].bold == line.bold
            and (_gap(last.lines[-1], line) or 0.0) <= WRAP_GAP * line.size
            and id(last.lines[-1]) not in running
            and not (_numbered_depth(line.text) and _shaped(last, large=True))
        ):
            last.lines.append(line)
        else:
            out.append(_Run(line.page, [line]))
    return out


def find_headings(pages: list[list[PdfLine]]) -> dict[int, list[tuple[int, str]]]:
    """page number (1-based) -> [(level, title)] in page order, as ``_outline`` gives."""
    body = _body_size(pages)
    if not body:
        return {}
    scale = _code_scale(pages, body)
    if scale != 1.0:  # a line all in code is read at the size of the text it stands in
        for lines in pages:
            for line in lines:
                if line.code == line.chars and line.size:  # (0: no one size)
                    line.size = round(line.code_size / scale * 2) / 2

    def is_large(line: PdfLine) -> bool:
        """Set clearly larger than the body, or bold and larger at all (Word's third
        heading level: 12 pt bold over 11 pt text)."""
        size = line.size
        return (size >= body * LARGER and size >= body + LARGER_BY) or (
            line.bold and size >= body * BOLD_LARGER and size > body
        )

    # only large or bold lines can be titles: the rest is looked at no further
    candidates = [[ln for ln in lines if ln.bold or is_large(ln)] for lines in pages]
    running = _running_lines(candidates, [len(lines) for lines in pages])
    runs = [run for lines in candidates for run in _runs(lines, is_large, running)]
    shaped: set[int] = set()  # ids of the runs shaped like titles at a large size
    in_titles: Counter[float] = Counter()  # characters per size in runs shaped like titles
    in_prose: Counter[float] = Counter()  # ... and in runs that read like running text
    for run in runs:
        size = run.lines[0].size
        if not is_large(run.lines[0]) or any(id(line) in running for line in run.lines):
            continue
        if _prose(run, large=True, following=_following(run, pages)):
            in_prose[size] += sum(line.chars for line in run.lines)
        elif _title_like(run.text) and not _beside_address(run, pages):
            shaped.add(id(run))
            in_titles[size] += sum(line.chars for line in run.lines)
    # a size mostly set in running text is a text size (big print): none of it is a title
    sizes = sorted(
        (s for s in in_titles if in_titles[s] >= HEADING_SHARE * (in_titles[s] + in_prose[s])),
        reverse=True,
    )
    level_of = {s: min(i + 1, MAX_LEVELS) for i, s in enumerate(sizes)}
    numbered = {
        id(run): _numbered_depth(run.text)
        for run in runs
        if id(run) not in shaped and _bold_numbered(run, body, is_large, running)
    }
    lead = _body_leading(pages, body)
    alone = {
        id(run)
        for run in runs
        if id(run) not in shaped
        and id(run) not in numbered
        and _bold_alone(run, pages, body, lead, is_large, running)
    }
    # numbered bold titles at body size go below the sized levels, by their depth
    # relative to the shallowest of them ("2.1" under "2", or alone under the sizes);
    # bold lines set apart at body size one level below the deepest of all
    top = min(numbered.values(), default=1)
    below = min(len(sizes), MAX_LEVELS - 1)
    titles: list[tuple[_Run, int]] = []  # level 0: one below the deepest
    for run in runs:
        size = run.lines[0].size
        if size in level_of and id(run) in shaped:
            titles.append((run, level_of[size]))
        elif id(run) in numbered:
            titles.append((run, min(below + 1 + numbered[id(run)] - top, MAX_LEVELS)))
        elif id(run) in alone:
            titles.append((run, 0))
    lowest = min(max((level for _, level in titles), default=0) + 1, MAX_LEVELS)
    found: dict[int, list[tuple[int, str]]] = {}
    for run, level in titles:
        found.setdefault(run.page, []).append((level or lowest, run.text))
    return found


def _body_size(pages: list[list[PdfLine]]) -> float:
    """The size (rounded to half a point) holding most characters of text: characters in
    a monospace font (code samples, which in an API reference hold more characters than
    its text and are set smaller) count only when text holds less than
    :data:`TEXT_SHARE` of all (a code listing); 0 for no characters at all."""
    text: Counter[float] = Counter()
    every: Counter[float] = Counter()
    for lines in pages:
        for line in lines:
            if line.size:
                text[line.size] += line.chars - line.code
                every[line.size] += line.chars
    if not every:
        return 0.0
    by = text if text.total() >= TEXT_SHARE * every.total() else every
    return max(by, key=by.__getitem__)


def _code_scale(pages: list[list[PdfLine]], body: float) -> float:
    """How much smaller than the text around it code is set, as the lines of body text
    with code in them show (a browser's default styles set code at 13/16 of the text's
    size, in titles too): the ratio most of their code characters are at, when it lies in
    :data:`CODE_SCALE`; 1 when they do not tell (no such lines, no one ratio for most)."""
    ratios: Counter[float] = Counter()
    for lines in pages:
        for line in lines:
            if line.size == body and not line.bold and 0 < line.code < line.chars:
                ratios[round(line.code_size / body, 3)] += line.code
    if not ratios:
        return 1.0
    ratio, n = ratios.most_common(1)[0]
    low, high = CODE_SCALE
    return ratio if low <= ratio <= high and n * 2 > ratios.total() else 1.0


def _body_leading(pages: list[list[PdfLine]], body: float) -> float:
    """The usual distance between the baselines of two lines of regular body text in a
    row (to the half point), or 1.2 body sizes where no two such lines tell."""
    gaps: Counter[float] = Counter()
    for lines in pages:
        for above, below in pairwise(lines):
            if (
                above.size == below.size == body
                and not (above.bold or below.bold)
                and above.code < above.chars  # code samples have a leading of their own
                and below.code < below.chars
            ):
                gap = _gap(above, below)
                if gap is not None and 0.8 * body <= gap <= 3 * body:
                    gaps[round(gap * 2) / 2] += 1
    return gaps.most_common(1)[0][0] if gaps else 1.2 * body


def _bold_alone(
    run: _Run,
    pages: list[list[PdfLine]],
    body: float,
    lead: float,
    is_large: Callable[[PdfLine], bool],
    running: set[int],
) -> bool:
    """A single short bold line at about the body size, mostly letters, not ending like a
    sentence, with the space of a paragraph's break (:data:`APART` leadings) over it (or
    the top of the page) and under it: Chromium prints Markdown's h4 so. A bold lead-in
    right over its text, a paragraph in bold, a table's bold header row over its rows and
    the last line of a page (nothing under it to tell) are not."""
    line = run.lines[0]
    if (
        len(run.lines) != 1
        or not line.bold
        or line.size < body * 0.95
        or is_large(line)
        or len(line.text) > MAX_ALONE_CHARS
        or len(line.text.split()) > MAX_ALONE_WORDS
        or id(line) in running
        or not _shaped(run)
    ):
        return False
    letters = sum(ch.isalpha() for ch in line.text)
    if letters * 3 < (len(line.text) - line.text.count(" ")) * 2:  # a row of figures
        return False
    lines = pages[line.page - 1]
    if line.index + 1 >= len(lines):
        return False
    under = _gap(line, lines[line.index + 1])
    if under is None or under < APART * lead:
        return False
    if line.index == 0:
        return True
    over = _gap(lines[line.index - 1], line)
    return over is not None and over >= APART * lead


def _bold_numbered(
    run: _Run, body: float, is_large: Callable[[PdfLine], bool], running: set[int]
) -> bool:
    """A single bold line at about the body size opening with a section number."""
    line = run.lines[0]
    return (
        len(run.lines) == 1
        and line.bold
        and line.size >= body * 0.95
        and not is_large(line)
        and _numbered_depth(line.text) > 0
        and len(line.text) <= MAX_LINE_CHARS
        and id(line) not in running
        and _shaped(run)
    )
