"""A PDF page's text made into what a reader reads: without the page's furniture, the
entries of a table of contents, and the hyphens that only broke a word at a line's end.

pypdf gives each page's text as the page draws it: the running header and footer (the
document's title, a page number, a browser's date and address) are lines of it, a
contents page is its entries with their leader dots and page numbers, and a word the
typesetter broke at a line's end is two ("im-" / "peller"), so full-text search for
"impeller" missed the paragraph it is in. This module takes those out of the text
(:func:`clean_page`) and joins broken words back (:class:`Words`), within a page and
across a page break, where a paragraph that runs on to the next page is continued
(:func:`continues`): the reader sees one paragraph, and so do the chunks.

Every pattern here is linear in the text (no pattern that can backtrack over a long
run): a page's text can be anything a hostile file makes it.
"""

from __future__ import annotations

import re
from collections import Counter

from ragstore.parsing.pdf_lines import PdfLine

WORD_CHARS = 40  # a broken word's parts are looked at up to this many characters
# a contents entry: leader dots (or an ellipsis run, underscores) then a page number
_LEADER_END = re.compile(r"(?:\.{4}|\. \. \.|…{2}|_{4})\Z")
_PAGE_NUMBER_END = re.compile(r"(?<!\w)(?:\d{1,4}|[ivx]{1,6})\Z", re.IGNORECASE)
# a hyphen that ends a line after a letter, before a line starting with a letter
_BREAK = re.compile(r"(?<=[^\W\d_])-[ \t]*\n[ \t]*(?=[^\W\d_])")
_COMPOUND = re.compile(r"\b([^\W\d_]+)-([^\W\d_]+)\b")
_LAST_WORD = re.compile(r"[^\W\d_]+\Z")
_FIRST_WORD = re.compile(r"[^\W\d_]+")
# a paragraph's end: a full stop, question or exclamation mark or colon, maybe in quotes
_FINISHED = re.compile(r"[.!?:][\"'”’»)\]]*\Z")


def clean_page(text: str, lines: list[PdfLine], furniture: set[int]) -> str:
    """``text`` without the lines of ``lines`` whose indices are in ``furniture`` (see
    :func:`~ragstore.parsing.pdf_headings.page_furniture`) and without contents entries
    (a line ending in leader dots and a page number).

    The collector's lines are the text's non-blank lines one for one when pypdf reported
    the text it returned; where they are not (a font whose text the visitor does not
    see), a furniture line goes only where its words stand as one of the first or last
    two lines of the page."""
    rows = text.split("\n")
    filled = [i for i, row in enumerate(rows) if row.strip()]
    gone: set[int] = set()
    if furniture:
        if len(filled) == len(lines) and all(
            " ".join(rows[i].split()) == line.text for i, line in zip(filled, lines, strict=True)
        ):
            gone = {filled[k] for k in furniture}
        else:
            wanted = Counter(lines[k].text for k in furniture)
            for i in dict.fromkeys(filled[:2] + filled[-2:]):
                words = " ".join(rows[i].split())
                if wanted[words] > 0:
                    wanted[words] -= 1
                    gone.add(i)
    gone.update(i for i in filled if i not in gone and _contents_entry(rows[i]))
    if not gone:
        return text
    return "\n".join(row for i, row in enumerate(rows) if i not in gone)


def _contents_entry(row: str) -> bool:
    """Whether a line reads like an entry of a table of contents: "Seal replacement
    ....... 12" (its words would otherwise rank the contents page with the section)."""
    row = row.rstrip()
    number = _PAGE_NUMBER_END.search(row[-8:])
    if number is None:
        return False
    before = row[: len(row) - (len(row[-8:]) - number.start())].rstrip()
    return _LEADER_END.search(before[-6:]) is not None


class Words:
    """Joins words broken at a line's end by a hyphen ("im-" / "peller" is "impeller"),
    keeping the hyphen where the document writes the joined word with one elsewhere
    ("well-" / "known" is "well-known" where "well-known" is in it), so hyphenated
    compounds split at their hyphen stay whole."""

    def __init__(self, texts: list[str]) -> None:
        self._compounds = {
            f"{m.group(1)}-{m.group(2)}".lower() for text in texts for m in _COMPOUND.finditer(text)
        }

    def _glue(self, left: str, right: str) -> str | None:
        """What goes between ``left`` (ending in the hyphen's word) and ``right`` (the
        rest of it at the start): None when ``right`` does not go on in lower case."""
        head = _FIRST_WORD.match(right[:WORD_CHARS])
        if head is None or not head.group()[0].islower():
            return None
        tail = _LAST_WORD.search(left[-WORD_CHARS:])
        if tail is None:
            return None
        return "-" if f"{tail.group()}-{head.group()}".lower() in self._compounds else ""

    def mend(self, text: str) -> str:
        """``text`` with its words broken at line ends joined."""
        if "-" not in text:
            return text

        def joined(m: re.Match[str]) -> str:
            glue = self._glue(text[max(0, m.start() - WORD_CHARS) : m.start()], text[m.end() :])
            return m.group() if glue is None else glue

        return _BREAK.sub(joined, text)

    def join(self, before: str, after: str) -> list[str]:
        """A paragraph's part ``before`` continued by ``after`` (from the next page), as
        the two parts to put in its place: a word broken over the page break is joined,
        else the two meet as two lines do."""
        before, after = before.rstrip(), after.lstrip()
        if before.endswith("-") and before[-2:-1].isalpha():
            glue = self._glue(before[:-1], after)
            if glue is not None:
                return [before[:-1], glue + after]
        return [before, "\n" + after]


def continues(before: str, after: str) -> bool:
    """Whether the paragraph ``after`` that opens a page carries on ``before``, the one
    that closed the page before it: that one stops short of a sentence's end and this
    one starts in lower case."""
    before, after = before.rstrip(), after.lstrip()
    return bool(before and after[:1].islower() and _FINISHED.search(before[-4:]) is None)
