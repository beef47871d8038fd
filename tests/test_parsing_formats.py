"""Each format parsed from real files: block types, section paths, pages, metadata, and
the bad inputs each format can bring (no database, no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pypdf.generic import DictionaryObject, NameObject, NumberObject

from ragstore.errors import (
    BinaryFileError,
    CorruptDocumentError,
    DecodeError,
    EmptyDocumentError,
    EncryptedDocumentError,
    InputError,
)
from ragstore.models import ChunkType
from ragstore.parsing import detect_format, parse_bytes
from ragstore.parsing.language import detect_language
from ragstore.parsing.pdf_lines import _font_style, storable
from tests.conftest import SHARED_DATA
from tests.fixtures.builders import (
    DOCX_TABLE_SENTENCE,
    EPUB_CHAPTER2_SENTENCE,
    MIXED,
    PDF_PAGE3_PARAGRAPH,
    PPTX_NOTES_SENTENCE,
    REPORT_SAMPLING_SENTENCE,
    PdfLine,
    Run,
    epub_book,
    handbook_pdf,
    pdf_bytes,
    report_pdf,
    write_inventory_docx,
    write_roadmap_pptx,
)


def _types(doc: object) -> list[str]:
    return [b.type.value for b in doc.blocks]  # type: ignore[attr-defined]


def test_markdown_front_matter_is_document_metadata_and_tables_have_a_shape() -> None:
    doc = parse_bytes((MIXED / "guide.md").read_bytes(), "guide.md")
    assert doc.format == "markdown"
    assert doc.metadata == {
        "title": "Field guide to the office",
        "team": "facilities",
        "tags": ["office", "onboarding"],
    }
    assert _types(doc) == ["heading", "heading", "paragraph", "heading", "list", "quote", "table"]
    table = doc.blocks[-1]
    assert table.section_path == ("Field guide to the office", "Meeting rooms")
    assert table.metadata == {"rows": 3, "columns": 3, "header_lines": 2}


def test_html_drops_scripts_navigation_and_footer_and_keeps_structure() -> None:
    doc = parse_bytes((MIXED / "coffee.html").read_bytes(), "coffee.html")
    assert doc.format == "html" and doc.title == "Coffee machine manual"
    assert doc.metadata == {"lang": "en", "description": "How to run the espresso machine"}
    assert _types(doc) == ["heading", "paragraph", "heading", "list", "code"]
    text = " ".join(b.text for b in doc.blocks)
    for boilerplate in ("tracking", "Home", "Copyright", "font-family"):
        assert boilerplate not in text
    assert doc.blocks[1].text == (
        "Descale the espresso machine every two weeks with citric acid, or the boiler clogs."
    )
    assert doc.blocks[3].text == "- Fill the water tank.\n- Purge the steam wand after use."
    assert doc.blocks[4].metadata == {"language": "bash"}
    assert doc.blocks[4].section_path == ("Espresso machine", "Daily routine")


def test_pdf_keeps_page_numbers_and_turns_the_outline_into_sections() -> None:
    doc = parse_bytes(handbook_pdf(), "handbook.pdf")
    assert doc.format == "pdf" and doc.title == "Climate handbook"
    assert doc.metadata == {"pages": 4}
    pages = [(b.type.value, b.page) for b in doc.blocks]
    assert pages == [
        ("heading", 1),
        ("page_text", 1),
        ("heading", 2),
        ("page_text", 2),
        ("heading", 3),
        ("page_text", 3),
        ("heading", 4),
        ("page_text", 4),
    ]
    page3 = doc.blocks[5]
    assert PDF_PAGE3_PARAGRAPH in " ".join(page3.text.split())
    assert page3.section_path == ("Ice",)


def test_pdf_bookmarks_open_their_sections_where_the_title_is_on_the_page() -> None:
    data = pdf_bytes(
        [
            ["Pumps", "A pump moves water.", "", "2.1 Seals", "Seals keep the water in."],
            ["Seals wear out after a year.", "", "Filters", "Filters catch the sand."],
        ],
        outline=[("Pumps", 0), ("Seals", 0), ("Filters", 1), ("Index", 1)],
    )
    doc = parse_bytes(data, "manual.pdf")
    got = [(b.type.value, " ".join(b.text.split()), b.section_path, b.page) for b in doc.blocks]
    assert got == [
        ("heading", "Pumps", (), 1),
        ("page_text", "A pump moves water.", ("Pumps",), 1),
        ("heading", "Seals", (), 1),  # "2.1 Seals" on the page: the number is not the title
        ("page_text", "Seals keep the water in.", ("Seals",), 1),
        ("page_text", "Seals wear out after a year.", ("Seals",), 2),  # still that section
        ("heading", "Filters", (), 2),
        ("heading", "Index", (), 2),  # not on the page: opens where the text has got to
        ("page_text", "Filters catch the sand.", ("Index",), 2),
    ]


def _headings(data: bytes) -> list[tuple[int, str, int | None]]:
    doc = parse_bytes(data, "doc.pdf")
    return [(b.level, b.text, b.page) for b in doc.blocks if b.type.value == "heading"]


def test_pdf_without_outline_gets_sections_from_title_sizes_with_levels() -> None:
    doc = parse_bytes(report_pdf(), "report.pdf")
    got = [(b.type.value, b.level, " ".join(b.text.split())[:25], b.page) for b in doc.blocks]
    assert got == [
        ("heading", 1, "Field station report", 1),
        ("page_text", 0, "Prepared by the hydrology", 1),
        ("heading", 2, "1 Introduction", 1),
        ("page_text", 0, "The station on the river ", 1),
        ("heading", 3, "1.1 Scope", 1),
        # the caption, equation, drop cap and page number set large stay text, in order
        ("page_text", 0, "This report covers the sp", 1),
        ("heading", 2, "2 Methods", 2),
        ("page_text", 0, "Every gauge was read twic", 2),
        ("heading", 3, "2.1 Sampling", 2),
        ("page_text", 0, "Water samples were drawn ", 2),
        ("heading", 3, "2.2 Analysis", 2),
        ("page_text", 0, "Sediment was weighed afte", 2),
        ("heading", 2, "3 Results", 3),
        ("page_text", 0, "Spring flow peaked in the", 3),
    ]
    sampling = doc.blocks[9]
    assert " ".join(sampling.text.split()) == REPORT_SAMPLING_SENTENCE
    assert sampling.section_path == ("Field station report", "2 Methods", "2.1 Sampling")
    scope = " ".join(doc.blocks[5].text.split())
    assert scope.endswith(
        "Figure 1 Flow at the north gauge x = 2y + 3 T he gauges were "
        "calibrated before the season began. 1"
    )
    assert doc.title == "report", "the title still comes from the metadata or the name"


def test_pdf_in_one_size_or_in_big_print_has_no_sections() -> None:
    lines = ["Dear members,", "", "The hall is closed on Monday", "for the floor to be"]
    lines += ["sanded and oiled again.", "", "Thank you", "The committee"]
    assert _headings(pdf_bytes([lines])) == []
    big = [(line, 20) for line in lines]  # everything big: a big-print letter
    assert _headings(pdf_bytes([big, big])) == []
    # a large-print passage in a normal document is text, short lines and all, and so is
    # the one short line of that size
    notice = [
        "The club meets on Fridays in the hall behind the library on Mill Street.",
        ("Notice", 18),
        "The annual dues are collected at the first meeting of the year.",
        ("Please bring", 18),
        ("your own cup", 18),
        ("and a plate", 18),
        ("for the supper", 18),
        ("after the talk", 18),
        "Visitors are welcome at every meeting and pay nothing the first time.",
    ]
    assert _headings(pdf_bytes([notice])) == []


def test_pdf_running_headers_and_footers_are_not_sections() -> None:
    def page(n: int, title: str) -> list[str | tuple[str, float]]:
        return [
            ("Acme Quarterly", 16),
            (title, 16),
            f"The {title.lower()} of the quarter are set out on this page in full detail.",
            "Each figure was checked by the finance office before it was printed.",
            (f"Page {n} of 4", 14),
        ]

    titles = ["Revenue", "Costs", "Outlook", "Staff"]
    data = pdf_bytes([page(n, t) for n, t in enumerate(titles, start=1)])
    assert _headings(data) == [(1, t, n) for n, t in enumerate(titles, start=1)]
    doc = parse_bytes(data, "quarterly.pdf")
    # nor are they text: the page's furniture is taken out of what is chunked
    assert next(b.text for b in doc.blocks if b.type is ChunkType.PAGE_TEXT).startswith("The rev")
    assert not any("Acme" in b.text or "of 4" in b.text for b in doc.blocks)
    # "Chapter N" over each chapter's title repeats like a running header; the title stays
    book = [
        [(f"Chapter {n}", 20), (title, 24), f"The {title.lower()} are told in this chapter."]
        for n, title in enumerate(["Early years", "The war", "Later life"], start=1)
    ]
    assert _headings(pdf_bytes(book)) == [
        (1, "Early years", 1),
        (1, "The war", 2),
        (1, "Later life", 3),
    ]


def test_pdf_bold_numbered_titles_at_body_size_are_sections() -> None:
    data = pdf_bytes(
        [
            [
                ("1 Scope", 11, True),
                "This standard covers the storage of spare parts in the depots.",
                ("1.1 Terms", 11, True),
                "A part is anything with a stock number.",
                ("Note", 11, True),  # bold but not numbered: emphasis, not a title
                "Parts without a number are consumables.",
                "2 Methods",  # numbered but not bold: a list item or a line of text
                ("3. Counting is done every quarter.", 11, True),  # a bold sentence
                ("2 Storage", 11, True),
                "Parts are kept on racks.",
                ("Depot Racks Parts", 11, True),  # a table's bold header row, then its rows
                "North 12 400",
                ("South 3 75", 11, True),
            ]
        ]
    )
    assert _headings(data) == [(1, "1 Scope", 1), (2, "1.1 Terms", 1), (1, "2 Storage", 1)]
    # below sizes: a larger title over them comes first
    racks = "Parts are kept on racks sorted by their stock number."
    with_title = pdf_bytes([[("Depot standard", 18), ("1 Scope", 11, True), racks]])
    assert _headings(with_title) == [(1, "Depot standard", 1), (2, "1 Scope", 1)]


def test_pdf_titles_may_be_api_names_in_lower_case_but_not_addresses() -> None:
    text = "Joins all given path segments together using the separator of the platform."
    data = pdf_bytes(
        [
            [
                ("Path", 22),
                ("Jane Roe (jane.roe@example.org)", 16.5),  # the title page's author
                ("https://nodejs.org/api", 16.5),
                text,
                ("path.join([...paths])", 16.5),
                text,
                ("path.resolve([...paths])", 16.5),
                text,
                ("path.relative(from, to)", 16.5),
                text,
            ]
        ]
    )
    assert _headings(data) == [
        (1, "Path", 1),
        (2, "path.join([...paths])", 1),
        (2, "path.resolve([...paths])", 1),
        (2, "path.relative(from, to)", 1),
    ]


def test_pdf_bold_titles_a_little_larger_than_the_body_are_sections() -> None:
    text = "Counts are made by two people who sign the sheet together at the end."
    data = pdf_bytes(
        [
            [
                ("Stock rules", 16),  # Word's default heading sizes over 11 pt text
                text,
                ("Counting", 13),
                text,
                ("Who counts", 12, True),
                text,
                ("When to count", 12, True),
                text,
                ("Some words in 12 pt but not bold", 12),  # not bold: text
                text,
            ]
        ]
    )
    assert _headings(data) == [
        (1, "Stock rules", 1),
        (2, "Counting", 1),
        (3, "Who counts", 1),
        (3, "When to count", 1),
    ]


def test_pdf_titles_in_a_row_are_sections_of_their_own_and_a_wrapped_title_is_one() -> None:
    text = "Spare parts are counted by two people at the end of every quarter."
    data = pdf_bytes(
        [
            [
                ("Depot manual", 20),
                ("Counting", 15),  # an h2 right over an h3
                ("Who counts", 13),
                text,
                ("When to count", 13),  # two h3s with nothing between them
                "",
                ("Where to count", 13),
                text,
                ("Storage of spare parts in the", 15),  # one h2 wrapped onto two lines
                ("northern and eastern depots", 15),
                text,
                ("Racks", 15, True),  # one size, two weights: a title and a subtitle
                ("Shelves and bins", 15),
                text,
            ]
        ]
    )
    assert _headings(data) == [
        (1, "Depot manual", 1),
        (2, "Counting", 1),
        (3, "Who counts", 1),
        (3, "When to count", 1),
        (3, "Where to count", 1),
        (2, "Storage of spare parts in the northern and eastern depots", 1),
        (2, "Racks", 1),
        (2, "Shelves and bins", 1),
    ]
    # a title page's authors, their names in bold over or under their addresses in the
    # same size, are no titles when set apart from the addresses either
    authors = [
        ("Depot manual", 20),
        ("Ann Lee", 15, True),
        ("Bob Day (bob.day@example.org)", 15),
        "",
        ("Depot Services Group (https://example.org/depots)", 15),
        "",
        ("Carl Fox", 15),
        *[text] * 3,
    ]
    assert _headings(pdf_bytes([authors])) == [(1, "Depot manual", 1)]


def test_pdf_titles_may_end_in_a_full_stop_a_colon_or_a_comma_but_sentences_are_text() -> None:
    text = "The depot keeps spare parts for the pumps of the northern district."
    data = pdf_bytes(
        [
            [
                ("Depot manual", 20),
                ("1. Overview.", 15),
                text,
                ("Introduction:", 15),
                text,
                ("Cell death: the significance of apoptosis.", 15),
                text,
                ("Pumps, valves and seals,", 15),
                text,
                # a sentence set large, and a large line that runs on into the text
                ("The pumps are checked by the staff every week and after each storm.", 15),
                text,
                ("Before a pump is opened,", 15),
                "the power is switched off at the main board by the electrician.",
                text,
            ]
        ]
    )
    assert _headings(data) == [
        (1, "Depot manual", 1),
        (2, "1. Overview.", 1),
        (2, "Introduction:", 1),
        (2, "Cell death: the significance of apoptosis.", 1),
        (2, "Pumps, valves and seals,", 1),
    ]


def test_pdf_bold_lines_at_body_size_set_apart_are_the_lowest_sections() -> None:
    text = ["Counts are made by two people who sign the sheet", "together at the end of the day."]
    data = pdf_bytes(
        [
            [
                ("Stock rules", 16),
                *text,
                ("Counting", 13),
                *text,
                ("event.bubbles", 11, True),  # Chromium's h4: bold, body size, space around
                "",
                *text,
                ("Who counts", 11, True),
                "",
                *text,
                # bold that is no title: a lead-in right over its text, a paragraph in
                # bold, a table's header row over its rows, a bold sentence, a bold row
                ("Note", 11, True),
                "Parts without a number are consumables.",
                ("Do not stack the crates more than", 11, True),
                ("three high in the north depot", 11, True),
                "",
                *text,
                ("Depot Racks Parts", 11, True),
                "North 12 400",
                "",
                ("Always count twice.", 11, True),
                "",
                *text,
                ("Total 15 475", 11, True),
                "",
                *text,
            ]
        ]
    )
    assert _headings(data) == [
        (1, "Stock rules", 1),
        (2, "Counting", 1),
        (3, "event.bubbles", 1),
        (3, "Who counts", 1),
    ]
    # alone under the sizes and numbered titles: one level below the deepest of them
    numbered = pdf_bytes([[("1 Scope", 11, True), *text, ("Terms", 11, True), "", *text]])
    assert _headings(numbered) == [(1, "1 Scope", 1), (2, "Terms", 1)]


_TEXT = ["An emitter calls its listeners in the order they were added to it,", "one by one."]
_CODE = [
    ("const { EventEmitter } = require('node:events');", 9, False, True),
    ("const emitter = new EventEmitter();", 9, False, True),
    ("emitter.on('event', (a, b) => console.log(a, b, this));", 9, False, True),
    ("emitter.emit('event', 'a', 'b');", 9, False, True),
]


def test_pdf_body_size_is_the_text_size_when_code_samples_hold_more_characters() -> None:
    # an API reference printed with default styles: more characters in its code
    # samples (9 pt Courier) than in its text; the body is still the 11 pt text, so a
    # bold line at that size set apart is a title and the text is no title size
    data = pdf_bytes(
        [
            [
                ("Events", 20),
                *_TEXT,
                *_CODE,
                *_CODE,
                ("Listeners", 15),
                *_TEXT,
                *_CODE,
                *_CODE,
                ("Error events", 11, True),
                "",
                *_TEXT,
                *_CODE,
                *_CODE,
            ]
        ]
    )
    assert _headings(data) == [(1, "Events", 1), (2, "Listeners", 1), (3, "Error events", 1)]
    # a code listing with a few words of text (its footer) keeps the code as its body
    listing: list[PdfLine] = []
    for name, op in [("add", "+"), ("sub", "-"), ("mul", "*"), ("div", "/"), ("mod", "%")]:
        listing += [(f"def {name}(a, b):", 9, False, True), (f"return a {op} b", 9, False, True)]
        listing.append("")
    assert _headings(pdf_bytes([[*listing, *listing, ("Printed from calc.py", 7)]])) == []


def test_pdf_titles_with_names_in_code_are_sections_at_the_level_of_their_size() -> None:
    # Chromium's default styles set code at 13/16 of the size around it, titles too: a
    # title in code is smaller than one in text at the same level, and a title that
    # mixes both has no one size; code samples (regular code lines) stay text
    inline = 11 * 13 / 16

    def prose(name: str) -> list[Run]:
        return [
            ("The ", 11, False, False),
            (name, inline, False, True),
            (" method adds a listener at the end of the listeners array.", 11, False, False),
        ]

    def h(text: str, size: float, code: bool = False) -> Run:
        return (text, size * 13 / 16 if code else size, True, code)

    data = pdf_bytes(
        [
            [
                h("Events", 22),
                prose("emitter.on()"),
                *_CODE,
                [h("Class: ", 16.5), h("EventEmitter", 16.5, code=True)],
                prose("emitter.once()"),
                *_CODE,
                h("emitter.on(eventName, listener)", 12.87, code=True),
                prose("emitter.on()"),
                h("event.bubbles", 11, code=True),
                "",
                prose("emitter.off()"),
                *_CODE,
                h("Error events", 12.87),
                prose("emitter.emit()"),
                *_CODE,
            ]
        ]
    )
    assert _headings(data) == [
        (1, "Events", 1),
        (2, "Class: EventEmitter", 1),
        (3, "emitter.on(eventName, listener)", 1),
        (4, "event.bubbles", 1),
        (3, "Error events", 1),
    ]


def test_pdf_title_levels_are_capped_at_four() -> None:
    text = "Each level of this outline has a paragraph of its own under it."
    sizes = [26, 22, 18, 15, 13]
    data = pdf_bytes(
        [[line for n, size in enumerate(sizes) for line in ((f"Part {n}", size), text)]]
    )
    assert [level for level, _, _ in _headings(data)] == [1, 2, 3, 4, 4]


def test_pdf_outline_wins_over_title_sizes() -> None:
    data = pdf_bytes(
        [[("Big title", 20), "Some text on the page.", ("Rainfall", 15), "Rain text."]],
        outline=[("Rainfall", 0)],
    )
    assert _headings(data) == [(1, "Rainfall", 1)]


def test_a_text_file_named_pdf_is_refused_as_not_a_pdf() -> None:
    with pytest.raises(CorruptDocumentError) as err:
        parse_bytes(b"Meeting notes\nBring the slides.\n", "notes.pdf")
    assert str(err.value) == (
        "notes.pdf: not a PDF: it has no %PDF- header and starts with "
        "'Meeting notes\\nBring the slides.\\n' (text); if it is text, give it its real "
        "extension (.txt, .md, .html), else re-export the PDF from the program that made it"
    )
    with pytest.raises(CorruptDocumentError, match=r"starts with .* \(binary data\)"):
        parse_bytes(b"\x89PNG\r\n\x1a\n\x00\x00", "image.pdf")
    with pytest.raises(EmptyDocumentError, match="the file is empty"):
        parse_bytes(b"", "empty.pdf")
    assert detect_format("page.pdf", b"<!doctype html><p>hi</p>") == "html"


def test_docx_reads_headings_lists_quotes_and_tables_in_body_order(tmp_path: Path) -> None:
    path = write_inventory_docx(tmp_path / "inventory.docx")
    doc = parse_bytes(path.read_bytes(), "inventory.docx")
    assert doc.format == "docx" and doc.title == "Inventory"
    assert doc.metadata["author"] == "ragstore tests"
    assert _types(doc) == [
        "heading",
        "heading",
        "paragraph",
        "heading",
        "paragraph",
        "heading",
        "list",
        "quote",
        "table",
        "paragraph",
    ]
    table = doc.blocks[8]
    assert table.text.split("\n") == [
        "| Site | Notes |",
        "|---|---|",
        f"| North | {DOCX_TABLE_SENTENCE} |",
        "| South | The south depot keeps pallets of copper cable. |",
    ]
    assert table.metadata == {"rows": 3, "columns": 2, "header_lines": 2}
    assert table.section_path == ("Inventory", "Reference")
    assert doc.blocks[6].text == (
        "- Sign out every part you take.\n- Report damaged parts the same day."
    )


def test_python_is_split_at_top_level_definitions_with_their_comments() -> None:
    source = (
        "import os\n\nLIMIT = 3\n\n\n# the helper\n@cache\ndef helper(x):\n"
        "    return x\n\n\nclass Thing:\n    def method(self):\n        return 1\n"
    )
    doc = parse_bytes(source.encode(), "mod.py")
    assert doc.format == "code" and doc.metadata == {"language": "python"}
    assert [b.text for b in doc.blocks] == [
        "import os\n\nLIMIT = 3",
        "# the helper\n@cache\ndef helper(x):\n    return x",
        "class Thing:\n    def method(self):\n        return 1",
    ]
    assert [b.metadata.get("symbol") for b in doc.blocks] == [None, "helper", "Thing"]
    assert doc.blocks[1].metadata["lines"] == [6, 9]
    for b in doc.blocks:
        assert source[b.char_start : b.char_end] == b.text


def test_go_is_split_at_top_level_functions_ignoring_braces_in_strings_and_comments() -> None:
    doc = parse_bytes((MIXED / "src" / "server.go").read_bytes(), "server.go")
    assert [b.metadata.get("symbol") for b in doc.blocks] == [None, "healthHandler", "main"]
    assert doc.blocks[1].text.startswith("// healthHandler answers")
    assert doc.blocks[1].text.endswith("}")
    tricky = 'func a() {\n\ts := "}"\n\t// }\n\n\treturn\n}\n\nfunc b() {}\n'
    blocks = parse_bytes(tricky.encode(), "t.go").blocks
    assert [b.metadata.get("symbol") for b in blocks] == ["a", "b"]


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("report.txt", b"%PDF-1.7\n...", "pdf"),
        ("page.md", b"<!DOCTYPE html><html><body><p>x</p></body></html>", "html"),
        ("deploy", b"#!/usr/bin/env bash\necho hi\n", "code"),
        ("notes.txt", b"#!/usr/bin/env python3\nprint(1)\n", "code"),
        ("README", b"just words\n", "text"),
        ("data.csv", b"a,b\n1,2\n", "text"),
        ("guide.md", b"# Title\n", "markdown"),
        ("lib.rs", b"fn main() {}\n", "code"),
    ],
)
def test_format_comes_from_the_content_as_well_as_the_extension(
    name: str, data: bytes, expected: str
) -> None:
    assert detect_format(name, data) == expected


_W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
_MC = 'xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006"'


def _run(text: str) -> str:
    return f'<w:r><w:t xml:space="preserve">{text}</w:t></w:r>'


def test_docx_text_that_word_wraps_is_read_and_deleted_text_is_not(tmp_path: Path) -> None:
    """python-docx's own walk saw a body's and a cell's direct paragraphs and a
    paragraph's direct runs and links: the text of a nested table, a content control,
    a tracked insertion, a field and a text box was dropped without a word."""
    import docx
    from docx.oxml import parse_xml

    document = docx.Document()
    document.add_paragraph("Intro paragraph.")
    outer = document.add_table(rows=1, cols=2)
    outer.cell(0, 0).text = "outer cell"
    inner = outer.cell(0, 1).add_table(rows=1, cols=2)
    inner.cell(0, 0).text = "inner left"
    inner.cell(0, 1).text = "inner right"
    body = document.element.body
    control = (
        f"<w:sdt {_W}><w:sdtPr/><w:sdtContent><w:p>{_run('Contract number 42')}</w:p>"
        "</w:sdtContent></w:sdt>"
    )
    tracked = (
        f'<w:p {_W}>{_run("Kept, ")}<w:ins w:id="1" w:author="a">{_run("inserted, ")}</w:ins>'
        f'<w:del w:id="2" w:author="a"><w:r><w:delText>deleted, </w:delText></w:r></w:del>'
        f'<w:moveFrom w:id="3" w:author="a">{_run("moved away, ")}</w:moveFrom>'
        f'<w:fldSimple w:instr="PAGE">{_run("page 7")}</w:fldSimple></w:p>'
    )
    box = f"<w:txbxContent><w:p>{_run('Sidebar note')}</w:p></w:txbxContent>"
    boxed = (
        f"<w:p {_W} {_MC}>{_run('Anchor text.')}<w:r><mc:AlternateContent>"
        f'<mc:Choice Requires="wps"><w:drawing>{box}</w:drawing></mc:Choice>'
        f"<mc:Fallback><w:pict>{box}</w:pict></mc:Fallback></mc:AlternateContent></w:r></w:p>"
    )
    section = body[-1]  # w:sectPr stays last
    for xml in (control, tracked, boxed):
        section.addprevious(parse_xml(xml))
    path = tmp_path / "wrapped.docx"
    document.save(str(path))
    doc = parse_bytes(path.read_bytes(), "wrapped.docx")
    texts = [b.text for b in doc.blocks]
    assert texts == [
        "Intro paragraph.",
        "| outer cell | inner left \\| inner right |\n|---|---|",  # escaped in the pipe table
        "Contract number 42",
        "Kept, inserted, page 7",
        "Anchor text.",
        "Sidebar note",
    ]


def test_docx_content_is_recognised_under_another_name(tmp_path: Path) -> None:
    data = write_inventory_docx(tmp_path / "x.docx").read_bytes()
    assert detect_format("inventory.bin", data) == "docx"
    assert parse_bytes(data, "inventory.bin").format == "docx"


def test_corrupt_pdf_is_refused_with_the_reason() -> None:
    with pytest.raises(CorruptDocumentError, match=r"^broken.pdf: not a readable PDF \("):
        parse_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog", "broken.pdf")
    with pytest.raises(CorruptDocumentError, match="not a readable PDF"):
        parse_bytes(handbook_pdf()[:300], "truncated.pdf")


def test_encrypted_pdf_is_refused_unless_its_password_is_empty() -> None:
    with pytest.raises(EncryptedDocumentError) as err:
        parse_bytes(pdf_bytes([["secret plans"]], password="hunter2"), "locked.pdf")
    assert err.value.code == "encrypted_document"
    assert str(err.value) == (
        "locked.pdf: the PDF is encrypted with a password; save an "
        "unencrypted copy (e.g. qpdf --decrypt) and ingest that"
    )
    doc = parse_bytes(pdf_bytes([["open to all"]], password=""), "open.pdf")
    assert "open to all" in doc.blocks[0].text


def test_pdf_without_text_is_empty() -> None:
    with pytest.raises(EmptyDocumentError, match="no extractable text"):
        parse_bytes(pdf_bytes([[]]), "scan.pdf")


def test_docx_that_is_not_a_zip_is_refused() -> None:
    with pytest.raises(CorruptDocumentError) as err:
        parse_bytes(b"this is plain text pretending to be a docx", "fake.docx")
    assert str(err.value) == (
        "fake.docx: not a valid DOCX file (not a zip archive); re-save "
        "it from Word or LibreOffice as .docx"
    )


def test_mixed_encodings_are_refused_with_the_offset() -> None:
    data = "naïve café\n".encode() + "crème brûlée\n".encode("latin-1")
    with pytest.raises(DecodeError) as err:
        parse_bytes(data, "menu.txt")
    assert str(err.value).startswith(
        "menu.txt: mixed encodings: valid UTF-8 before, invalid UTF-8 at byte 15 (line 2)"
    )


def test_unknown_binary_file_is_refused() -> None:
    with pytest.raises(BinaryFileError, match=r"unsupported binary file type '\.bin'"):
        parse_bytes(b"\x00\x01\x02garbage", "blob.bin")


def test_binary_bytes_without_a_nul_under_an_unknown_suffix_are_refused_not_stored() -> None:
    """Binary data with no NUL byte that still decodes as UTF-8 (control bytes) was read
    as plain text under a suffix that names no format and stored, control bytes and
    all; it is refused as binary. Text under such a suffix is still read, a terminal log
    coloured with escapes and a man page overstruck with backspaces among it."""
    junk = b"MZ" + bytes([*range(1, 9), *range(14, 32)]) * 200
    with pytest.raises(BinaryFileError, match=r"^a\.exe: unsupported binary file type '\.exe'"):
        parse_bytes(junk, "a.exe")
    with pytest.raises(BinaryFileError, match=r"unsupported binary file type '\.exe'"):
        parse_bytes(b"MZ\x90\x00\x03" + bytes(range(256)) * 40, "a.exe")
    log = b"\x1b[32mok\x1b[0m step one\n\x1b[31mfail\x1b[0m step two\n" * 50
    assert "step two" in parse_bytes(log, "build.out").blocks[0].text
    man = b"N\bNA\bAM\bME\bE\n     ls - list directory contents\f\n" * 50
    assert "list directory contents" in parse_bytes(man, "ls.1").blocks[0].text


def test_undecodable_binary_under_an_unknown_suffix_is_binary_legacy_text_is_not() -> None:
    """Binary bytes without a NUL that are not UTF-8 either (a twentieth control bytes,
    under the tenth that passes for text in UTF-8) were refused ``invalid_encoding`` with
    "re-save the file as UTF-8", which no binary file can do; they are binary now. Prose
    in a legacy encoding (CP1252, CP1251, a DOS file ending in ^Z) is still told to be
    re-saved as UTF-8."""
    junk = (bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100)) + bytes(range(1, 15))) * 30
    with pytest.raises(BinaryFileError, match=r"^blob\.dat: unsupported binary file type"):
        parse_bytes(junk, "blob.dat")
    prose = "Café crème, naïve façade — résumé à la carte.\n" * 40
    for data in (
        prose.encode("cp1252"),
        prose.encode("cp1252") + b"\x1a",
        ("Съешь же ещё этих мягких французских булок.\n" * 40).encode("cp1251"),
    ):
        with pytest.raises(DecodeError, match="re-save the file as UTF-8"):
            parse_bytes(data, "notes.dat")


def test_detected_language_is_the_programming_or_the_natural_language() -> None:
    code = parse_bytes((MIXED / "src" / "billing.py").read_bytes(), "billing.py")
    assert detect_language(code) == "python"
    french = parse_bytes(
        "Le chat est assis sur le tapis. Il a plu toute la journée à "
        "Paris, et les rues étaient mouillées.".encode(),
        "chat.txt",
    )
    assert detect_language(french) == "French"
    english = parse_bytes((MIXED / "notes.txt").read_bytes(), "notes.txt")
    assert detect_language(english) == "English"


# news-like paragraphs in six languages that write with the Latin alphabet, and Russian
OTHER_LANGUAGES = {
    "French": "Le conseil municipal s'est réuni hier soir pour discuter du nouveau plan de "
    "circulation du centre-ville. Les habitants des quartiers voisins craignent que la "
    "fermeture de plusieurs rues aux voitures ne déplace le trafic vers leurs propres rues, "
    "déjà encombrées aux heures de pointe. Le maire a rappelé que le projet vise surtout à "
    "réduire la pollution et à rendre les places plus agréables pour les piétons.",
    "German": "Die Stadtverwaltung hat gestern Abend die Pläne für den Umbau des "
    "Bahnhofsviertels vorgestellt. Nach den Vorstellungen der Planer sollen auf dem "
    "ehemaligen Güterbahnhof neue Wohnungen, eine Schule und ein großer Park entstehen. "
    "Viele Anwohner begrüßen das Vorhaben, befürchten aber steigende Mieten und mehr Verkehr "
    "während der jahrelangen Bauzeit.",
    "Spanish": "El ayuntamiento presentó ayer el nuevo plan para mejorar el transporte "
    "público en la ciudad. Según el proyecto, se crearán tres nuevas líneas de autobús que "
    "conectarán los barrios periféricos con el centro, y se ampliará el horario del metro "
    "durante los fines de semana. Los vecinos han recibido la noticia con optimismo.",
    "Italian": "Il consiglio comunale ha approvato ieri sera il nuovo regolamento per la "
    "gestione dei rifiuti urbani. A partire dal prossimo anno, la raccolta differenziata "
    "sarà estesa a tutti i quartieri della città e verranno installati nuovi cassonetti "
    "intelligenti che riconoscono gli utenti tramite una tessera.",
    "Portuguese": "A prefeitura anunciou ontem um novo programa para recuperar as praças e "
    "os parques da cidade. Segundo o projeto, os espaços receberão nova iluminação, bancos, "
    "árvores e equipamentos de ginástica ao ar livre, além de banheiros públicos reformados.",
    "Dutch": "De gemeenteraad heeft gisteravond besloten om het oude stadhuis te verbouwen "
    "tot een bibliotheek en cultureel centrum. Het gebouw staat al enkele jaren leeg en "
    "verkeert in slechte staat, maar volgens de architecten is de constructie nog steeds "
    "gezond. De verbouwing gaat naar verwachting twee jaar duren.",
    "Russian": "Городской совет вчера вечером обсудил новый план развития общественного "
    "транспорта. Согласно проекту, в ближайшие годы в городе появятся три новые линии "
    "трамвая, а старые автобусы будут заменены на электрические.",
}


def test_english_prose_is_known_by_its_function_words_and_other_prose_is_left_to_the_detector() -> (
    None
):
    from ragstore.parsing.language import is_english

    for language, text in OTHER_LANGUAGES.items():
        assert not is_english(text), language
    for language in ("French", "German", "Spanish", "Italian", "Portuguese", "Russian"):
        doc = parse_bytes(OTHER_LANGUAGES[language].encode(), "news.txt")
        assert detect_language(doc) == language
    # SciFact abstracts charset-normalizer alone called Italian and Dutch, and a Node.js API
    # page it gave no language (a third of them)
    abstracts = {}
    with (SHARED_DATA / "scifact" / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["_id"] in ("1569031", "301866"):
                title, text = (" ".join(row[k].split()) for k in ("title", "text"))
                abstracts[row["_id"]] = f"{title}\n{text}"
    page = (SHARED_DATA / "nodejs-api" / "docs" / "events.md").read_bytes()
    for name, data in [
        *((f"{k}.txt", v.encode()) for k, v in abstracts.items()),
        ("events.md", page),
    ]:
        assert detect_language(parse_bytes(data, name)) == "English", name
    assert len(abstracts) == 2
    assert not is_english("The end."), "too few words to tell"


def test_html_keeps_an_articles_own_header_but_drops_the_sites() -> None:
    page = (
        b"<html><body><header>Site menu</header><article><header><h1>Post title</h1>"
        b"</header><p>Body text.<br>Second line.</p></article><footer>site foot</footer>"
        b"</body></html>"
    )
    doc = parse_bytes(page, "post.html")
    assert [(b.type.value, b.text) for b in doc.blocks] == [
        ("heading", "Post title"),
        ("paragraph", "Body text. Second line."),
    ]
    assert doc.blocks[1].section_path == ("Post title",)


def test_html_inline_markup_joins_its_words_and_blocks_stay_apart() -> None:
    page = (
        b"<html><body><h1>The <code>Vec</code>s chapter</h1><ul>"
        b"<li>Use <a href='#'><code>Vec</code></a>s, or <code>get_unchecked</code>, which"
        b" is fast.<!-- hidden --></li><li><p>First para.</p><p>Second <em>one</em>.</p>"
        b"<ul><li>nested <b>bold</b>ly</li></ul></li></ul>"
        b"<table><tr><th>key</th><th>value</th></tr>"
        b"<tr><td><p>one</p><p>two</p></td><td>x<code>y</code></td></tr></table></body></html>"
    )
    doc = parse_bytes(page, "page.html")
    texts = {b.type: b.text for b in doc.blocks}
    assert texts[ChunkType.HEADING] == "The Vecs chapter"
    assert texts[ChunkType.LIST] == (
        "- Use Vecs, or get_unchecked, which is fast.\n- First para. Second one.\n  - nested boldly"
    )
    assert "| one two | xy |" in texts[ChunkType.TABLE]


def test_html_nested_thousands_deep_is_read_not_failed() -> None:
    """Generated pages nest unclosed elements thousands deep; the walk is not recursive,
    so such a page is read like any other (it failed as 'nested too deeply' before)."""
    page = (
        "<html><body><h1>Deep</h1>"
        + "<div>" * 5000
        + "<p>whales <b>"
        + "<span>" * 3000
        + "sing</span></b> loud</p><div>tail text</div>"
    ).encode()
    doc = parse_bytes(page, "deep.html")
    assert [(b.type, b.text) for b in doc.blocks] == [
        (ChunkType.HEADING, "Deep"),
        (ChunkType.PARAGRAPH, "whales sing loud"),
        (ChunkType.PARAGRAPH, "tail text"),
    ]


def test_pdf_fonts_are_code_by_name_or_by_the_fixed_pitch_flag() -> None:
    def font(name: str, flags: int = 32) -> DictionaryObject:
        descriptor = DictionaryObject({NameObject("/Flags"): NumberObject(flags)})
        return DictionaryObject(
            {NameObject("/BaseFont"): NameObject(name), NameObject("/FontDescriptor"): descriptor}
        )

    styles = {
        name: _font_style(font(name))
        for name in [
            "/CAAAAA+DejaVuSansMono",  # Chromium's default monospace
            "/DAAAAA+DejaVuSansMono-Bold",
            "/Courier",
            "/AKEQKS+CMTT10",  # TeX's typewriter
            "/JNNPWA+NimbusMonL-Regu",  # DocBook's
            "/SourceCodePro-Regular",
            "/Helvetica-Bold",
            "/PWNLKT+CMR10",
            "/Monotype-Corsiva",  # "Mono" as in Monotype: no code
        ]
    }
    assert styles == {
        "/CAAAAA+DejaVuSansMono": (False, True),
        "/DAAAAA+DejaVuSansMono-Bold": (True, True),
        "/Courier": (False, True),
        "/AKEQKS+CMTT10": (False, True),
        "/JNNPWA+NimbusMonL-Regu": (False, True),
        "/SourceCodePro-Regular": (False, True),
        "/Helvetica-Bold": (True, False),
        "/PWNLKT+CMR10": (False, False),
        "/Monotype-Corsiva": (False, False),
    }
    assert _font_style(font("/F00", flags=1 | 32)) == (False, True)  # FixedPitch
    assert _font_style(font("/F00", flags=32 | 1 << 18)) == (True, False)  # ForceBold


def test_pdf_text_with_nul_or_lone_surrogates_is_stored_with_replacement_characters() -> None:
    # Chromium printed Node's buffer docs with console.log('\0\0') as NUL glyphs: the file
    # parsed, then failed at the database after its chunks were embedded
    data = pdf_bytes([["Intro", "console.log('\x00\x00') sends two NUL bytes"]], title="a\x00b")
    doc = parse_bytes(data, "nul.pdf")
    assert doc.title == "a\ufffdb"
    assert "console.log('\ufffd\ufffd') sends two NUL bytes" in doc.blocks[0].text
    assert not any("\x00" in b.text for b in doc.blocks)
    assert storable("x\ud800y\x00") == "x\ufffdy\ufffd"


def test_bad_front_matter_is_one_line_with_its_place_in_the_file() -> None:
    page = b"---\ntitle: Notes\nsummary: a: b\n---\n# Notes\n\nbody\n"
    with pytest.raises(CorruptDocumentError) as err:
        parse_bytes(page, "notes.md")
    message = str(err.value)
    assert "\n" not in message and "<unicode string>" not in message
    assert message.startswith("notes.md: invalid YAML front matter at line 3, column 11 (")
    assert "mapping values are not allowed" in message and "remove the block" in message


def test_front_matter_keys_are_held_to_the_limits_of_every_other_metadata_write() -> None:
    """A front matter key of 300 characters, or nested keys whose dotted path is past 256,
    was stored where no search filter could name it; every other write refuses them."""
    long_key = "---\n" + "k" * 300 + ": v\n---\n# Doc\n\nbody\n"
    with pytest.raises(InputError) as err:
        parse_bytes(long_key.encode(), "notes.md")
    assert err.value.code == "invalid_input"
    assert str(err.value).startswith("notes.md: the YAML front matter holds a key of 300 ")
    assert "at most 256 characters" in str(err.value) and "shorten it" in str(err.value)
    deep = "---\n" + "a" * 200 + ":\n  " + "b" * 100 + ": v\n---\n# Doc\n\nbody\n"
    with pytest.raises(InputError) as err:
        parse_bytes(deep.encode(), "deep.md")
    assert str(err.value).startswith("deep.md: the YAML front matter holds a key path of 301 ")
    fine = "---\n" + "a" * 200 + ":\n  " + "b" * 55 + ": v\n---\n# Doc\n\nbody\n"
    assert parse_bytes(fine.encode(), "ok.md").metadata == {"a" * 200: {"b" * 55: "v"}}


def test_front_matter_aliases_cannot_blow_up_and_a_self_reference_ends() -> None:
    """Eight lines of YAML aliases stand for 9**8 (43 million) strings: turned into the
    document's metadata they took minutes and 4 GB; a list holding itself never ended."""
    levels = ["a: &a [" + ", ".join(["lol"] * 9) + "]"]
    for prev, name in zip("abcdefg", "bcdefgh", strict=True):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    page = ("---\n" + "\n".join(levels) + "\n---\n# Doc\n\nbody\n").encode()
    with pytest.raises(CorruptDocumentError) as err:
        parse_bytes(page, "bomb.md")
    assert str(err.value).startswith("bomb.md: the YAML front matter expands to more than 10000")
    with pytest.raises(CorruptDocumentError) as err:
        parse_bytes(b"---\na: &a [*a]\n---\n# Doc\n\nbody\n", "loop.md")
    assert "nested more than 32 levels deep (or an alias refers to itself)" in str(err.value)
    fine = "---\ntags: &t [x, y]\nalso: *t\nlist: [" + ", ".join(["t"] * 5000) + "]\n---\nbody\n"
    assert parse_bytes(fine.encode(), "ok.md").metadata["also"] == ["x", "y"]


def _notebook(cells: list[dict[str, object]], **extra: object) -> bytes:
    return json.dumps(
        {"cells": cells, "metadata": {"language_info": {"name": "python"}}, "nbformat": 4, **extra}
    ).encode()


def test_a_notebook_is_its_cells_as_markdown_sections_code_in_the_kernels_language() -> None:
    doc = parse_bytes((MIXED / "forecast.ipynb").read_bytes(), "forecast.ipynb")
    assert doc.format == "notebook" and doc.title == "Warehouse demand forecast"
    assert [(b.type, b.section_path) for b in doc.blocks] == [
        (ChunkType.HEADING, ()),
        (ChunkType.PARAGRAPH, ("Warehouse demand forecast",)),
        (ChunkType.CODE, ("Warehouse demand forecast",)),
        (ChunkType.HEADING, ("Warehouse demand forecast",)),
        (ChunkType.PARAGRAPH, ("Warehouse demand forecast", "Seasonality")),
        (ChunkType.CODE, ("Warehouse demand forecast", "Seasonality")),
        (ChunkType.PARAGRAPH, ("Warehouse demand forecast", "Seasonality")),
    ]
    code = [b for b in doc.blocks if b.type is ChunkType.CODE]
    assert all(b.metadata == {"language": "python"} for b in code)
    assert "orders.resample" in code[1].text
    text = "\n".join(b.text for b in doc.blocks)
    assert "checksum 7f3a" not in text and "iVBOR" not in text, "outputs are left out"
    # a cell holding a fence keeps it: the cell's fence is longer
    inner = parse_bytes(
        _notebook([{"cell_type": "code", "source": "print('```')\nx = 1", "outputs": []}]),
        "fence.ipynb",
    )
    assert [b.type for b in inner.blocks] == [ChunkType.CODE]
    assert "print('```')\nx = 1" in inner.blocks[0].text


def test_a_version_3_notebook_reads_its_worksheets_heading_cells_and_inputs() -> None:
    old = json.dumps(
        {
            "nbformat": 3,
            "metadata": {},
            "worksheets": [
                {
                    "cells": [
                        {"cell_type": "heading", "level": 2, "source": ["Setup"]},
                        {"cell_type": "code", "language": "python", "input": ["x = 41 + 1"]},
                        {"cell_type": "markdown", "source": ["The answer is computed."]},
                    ]
                }
            ],
        }
    ).encode()
    doc = parse_bytes(old, "old.ipynb")
    assert [(b.type, b.text.strip("`\n")) for b in doc.blocks] == [
        (ChunkType.HEADING, "Setup"),
        (ChunkType.CODE, "x = 41 + 1"),
        (ChunkType.PARAGRAPH, "The answer is computed."),
    ]


def test_a_broken_or_empty_notebook_fails_with_one_clear_error() -> None:
    with pytest.raises(CorruptDocumentError, match=r"invalid JSON at line 1, column \d+"):
        parse_bytes(b'{"cells": [', "cut.ipynb")
    with pytest.raises(CorruptDocumentError, match="not a Jupyter notebook \\(it has no cells\\)"):
        parse_bytes(b'{"data": []}', "other.ipynb")
    with pytest.raises(CorruptDocumentError, match="its JSON is not an object"):
        parse_bytes(b"[1, 2]", "list.ipynb")
    with pytest.raises(EmptyDocumentError, match="no cells with text"):
        parse_bytes(_notebook([{"cell_type": "code", "source": "  ", "outputs": []}]), "e.ipynb")
    # a source that is not text was stored as its repr: "{'a': 1}", "nan"
    for source, says in (
        ({"a": 1}, "its source is an object, not text"),
        (float("nan"), "its source is a number, not text"),
        (["x = 1\n", 2], "its source holds a number among its lines"),
    ):
        cells = [
            {"cell_type": "markdown", "source": "# Fine"},
            {"cell_type": "code", "source": source},
        ]
        with pytest.raises(CorruptDocumentError) as err:
            parse_bytes(_notebook(cells), "odd.ipynb")
        assert str(err.value) == (
            f"odd.ipynb: not a Jupyter notebook (cell 2: {says}); save it again from Jupyter"
        )


def test_a_pptx_is_a_section_a_slide_in_reading_order_with_its_notes(tmp_path: Path) -> None:
    deck = write_roadmap_pptx(tmp_path / "roadmap.pptx")
    doc = parse_bytes(deck.read_bytes(), "roadmap.pptx")
    assert doc.format == "pptx" and doc.title == "Depot roadmap"
    assert doc.metadata == {"slides": 4, "author": "Planning team"}
    assert [(b.type, b.page, b.section_path, b.text) for b in doc.blocks] == [
        (ChunkType.HEADING, 1, (), "Depot roadmap 2027"),
        (ChunkType.PARAGRAPH, 1, ("Depot roadmap 2027",), "What the depots change next year"),
        (ChunkType.HEADING, 2, (), "Cold storage"),
        (
            ChunkType.LIST,
            2,
            ("Cold storage",),
            "- Install a second freezer room\n  - Order the compressor in January\n"
            "- Train two night staff",
        ),
        (ChunkType.PARAGRAPH, 2, ("Cold storage",), PPTX_NOTES_SENTENCE),
        (ChunkType.HEADING, 3, (), "Slide 3"),
        (
            ChunkType.TABLE,
            3,
            ("Slide 3",),
            "| Quarter | Goal |\n|---|---|\n| Q1 | Freezer room built |\n"
            "| Q2 | Night shift staffed |",
        ),
        (ChunkType.HEADING, 4, (), "Two columns"),
        (ChunkType.PARAGRAPH, 4, ("Two columns",), "Left column: staffing"),
        (ChunkType.PARAGRAPH, 4, ("Two columns",), "Right column: budget"),
    ]
    # named .zip or without a name's help, the bytes still say PPTX
    assert detect_format("roadmap.bin", deck.read_bytes()) == "pptx"


def test_a_broken_pptx_fails_with_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CorruptDocumentError, match=r"^cut.pptx: not a valid PPTX file"):
        parse_bytes(b"PK\x03\x04 not really a zip", "cut.pptx")
    deck = write_roadmap_pptx(tmp_path / "roadmap.pptx").read_bytes()
    with pytest.raises(CorruptDocumentError, match=r"^half.pptx: (not a valid|damaged) PPTX"):
        parse_bytes(deck[: len(deck) // 2], "half.pptx")


def test_an_epub_is_its_spine_chapters_in_order_as_one_section_tree() -> None:
    book = epub_book()
    assert detect_format("book.zip", book) == "epub"
    doc = parse_bytes(book, "keeper.epub")
    assert doc.format == "epub" and doc.title == "The Keeper's Year"
    assert doc.metadata == {"author": "Ann Wick, Bo Lamp", "lang": "en", "chapters": 2}
    assert [(b.type, b.section_path, b.text) for b in doc.blocks] == [
        (ChunkType.HEADING, (), "Spring"),
        (ChunkType.PARAGRAPH, ("Spring",), "The keeper paints the gallery rail."),
        (ChunkType.HEADING, ("Spring",), "Storms"),
        (
            ChunkType.PARAGRAPH,
            ("Spring", "Storms"),
            "Spring storms break the panes of the lantern room.",
        ),
        (ChunkType.HEADING, (), "Summer"),
        (ChunkType.PARAGRAPH, ("Summer",), EPUB_CHAPTER2_SENTENCE),
    ]  # no table of contents, no cover page (linear="no")


def test_a_broken_locked_or_empty_epub_fails_with_one_clear_error() -> None:
    with pytest.raises(CorruptDocumentError, match="encrypted \\(DRM\\)"):
        parse_bytes(epub_book(encrypted=["ch2.xhtml"]), "locked.epub")
    book = epub_book()
    with pytest.raises(CorruptDocumentError, match=r"^cut.epub: (not a valid|damaged) EPUB"):
        parse_bytes(book[: len(book) // 2], "cut.epub")
    missing = epub_book(chapters=[("ch1.xhtml", "<p>x</p>")]).replace(
        b"OEBPS/ch1.xhtml", b"OEBPS/zz1.xhtml"
    )
    with pytest.raises(CorruptDocumentError, match=r"the spine names OEBPS/ch1\.xhtml"):
        parse_bytes(missing, "missing.epub")
    with pytest.raises(EmptyDocumentError, match="chapters hold no text"):
        parse_bytes(epub_book(chapters=[("ch1.xhtml", "<p> </p>")]), "empty.epub")
