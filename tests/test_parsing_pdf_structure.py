"""A long PDF read as its reader reads it: numbered titles are sections however many
pages they are on, the page's running header and footer are not its text, words broken
at a line's end are whole, a paragraph running on to the next page is one, and a contents
page's entries are not text."""

from __future__ import annotations

import pytest

from ragstore.chunking import chunk_document
from ragstore.embedding.base import Embedder
from ragstore.embedding.registry import load_embedder, resolve_spec
from ragstore.models import ChunkType, ParsedDocument
from ragstore.parsing import parse_bytes
from tests.fixtures.builders import PdfLine, pdf_bytes

PAGES = 45


def _texts(doc: ParsedDocument) -> list[tuple[str, tuple[str, ...], int | None]]:
    return [
        (" ".join(b.text.split()), b.section_path, b.page)
        for b in doc.blocks
        if b.type is ChunkType.PAGE_TEXT
    ]


def _handbook(*, outline: bool = False) -> bytes:
    """45 pages, each a bold numbered title ("Section 3.2") somewhere on it among
    sentences, under a running header in bold ("Part 1 · Pumps", then "Part 2 · ...")
    and over a page number ("Page 7 of 45") at the foot."""
    pages: list[list[PdfLine]] = []
    for n in range(1, PAGES + 1):
        part = 1 if n <= 22 else 2
        body: list[PdfLine] = [
            f"Step {k} on page {n} is done with the gauge in hand." for k in range(1, 7)
        ]
        at = 1 + n % 6  # the title stands at another place on each page
        body.insert(at - 1, (f"Section {part}.{n}", 13, True))
        pages.append([(f"Part {part} · Pumps", 12, True), *body, (f"Page {n} of {PAGES}", 9)])
    marks = [(f"Section {1 if n <= 22 else 2}.{n}", n - 1) for n in range(1, PAGES + 1)]
    return pdf_bytes(pages, outline=marks if outline else ())


def test_numbered_titles_on_most_pages_are_sections_and_running_lines_are_not() -> None:
    # "Section 1.1", "Section 1.2" ... differ only in their numbers, as page numbers do:
    # on 40% of the pages they were one running line and no title was found at all
    doc = parse_bytes(_handbook(), "handbook.pdf")
    headings = [(b.text, b.level, b.page) for b in doc.blocks if b.type is ChunkType.HEADING]
    assert headings == [(f"Section {1 if n <= 22 else 2}.{n}", 1, n) for n in range(1, PAGES + 1)]
    # each page's text above its title is in the section before, the rest in its own;
    # the running header and the page number are no text of the pages
    expected: list[tuple[str, tuple[str, ...], int | None]] = []
    section: tuple[str, ...] = ()
    for n in range(1, PAGES + 1):
        steps = [f"Step {k} on page {n} is done with the gauge in hand." for k in range(1, 7)]
        at = 1 + n % 6
        if at > 1:
            expected.append((" ".join(steps[: at - 1]), section, n))
        section = (f"Section {1 if n <= 22 else 2}.{n}",)
        expected.append((" ".join(steps[at - 1 :]), section, n))
    assert _texts(doc) == expected
    # a PDF with bookmarks has them for titles, and its furniture goes all the same
    assert _texts(parse_bytes(_handbook(outline=True), "handbook.pdf")) == expected


def _guide_page(n: int, lines: list[str]) -> list[PdfLine]:
    return [("Field guide", 9), *lines, (f"- {n} -", 9)]


def _guide() -> bytes:
    """Five pages in one layout (a running title over them, a page number under them):
    a paragraph runs on from page 1 to page 3, words broken at line ends and over a page
    break; page 3 ends a sentence, page 4 does not, but page 5 starts with a capital."""
    pages = [
        [
            "Intake. The pump draws water",
            "through many con-",
            "nections. Each joint of the well-known design",
            "must be closed before the",
        ],
        [
            "housing is opened, as the im-",
            "peller turns freely. The well-",
            "known seal",
            "needs recali-",
        ],
        ["bration, which a self-", "check confirms. Numbers 3-", "4 and Con-", "Nections stay."],
        ["then nothing is carried on.", "The cover is closed again.", "Then the water", "runs"],
        ["Out of the tank it goes.", "Done.", "End.", "Stop."],
    ]
    return pdf_bytes([_guide_page(n, lines) for n, lines in enumerate(pages, start=1)])


def test_words_broken_at_line_ends_and_over_a_page_break_are_whole() -> None:
    doc = parse_bytes(_guide(), "guide.pdf")
    assert _texts(doc) == [
        (
            "Intake. The pump draws water through many connections. Each joint of the "
            "well-known design must be closed before the housing is opened, as the impeller "
            "turns freely. The well-known seal needs recalibration, which a selfcheck "
            "confirms. Numbers 3- 4 and Con- Nections stay.",
            (),
            1,  # one block, on the page where it starts
        ),
        ("then nothing is carried on. The cover is closed again. Then the water runs", (), 4),
        ("Out of the tank it goes. Done. End. Stop.", (), 5),
    ]
    # the header and page numbers between its pages are gone; line breaks stay
    whole = doc.blocks[0].text
    assert "water\nthrough many connections." in whole and "the\nhousing" in whole


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder(resolve_spec("all-MiniLM-L6-v2"), device="cpu")


def test_a_paragraph_over_a_page_break_is_one_chunk(embedder: Embedder) -> None:
    chunks = chunk_document(parse_bytes(_guide(), "guide.pdf"), embedder, 256)
    found = [c for c in chunks if "recalibration" in c.text]
    assert len(found) == 1 and found[0].page == 1
    assert "before the\nhousing is opened" in found[0].text
    assert "impeller" in found[0].text and "Field guide" not in found[0].text


def test_contents_entries_with_leader_dots_are_not_text() -> None:
    contents: list[PdfLine] = [
        ("Contents", 16),
        "Seal replacement ....... 2",
        "Impeller care . . . . . . . 3",
        "Appendix ____________ iv",
        "Wait.... 12 hours before the seal is tested.",
    ]
    data = pdf_bytes([contents, [("Seal replacement", 16), "Seals are replaced yearly."]])
    doc = parse_bytes(data, "manual.pdf")
    assert [(t, p) for t, _, p in _texts(doc)] == [
        ("Wait.... 12 hours before the seal is tested.", 1),
        ("Seals are replaced yearly.", 2),
    ]
