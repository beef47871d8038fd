"""Section titles in plain text and reStructuredText: underlined, overlined, numbered and
chapter titles found with their levels and paths; lists, numbered sentences and texts
sent as strings stay paragraphs; a text file's sections reach search."""

from __future__ import annotations

from pathlib import Path

from ragstore.ingest import ingest_paths
from ragstore.models import ChunkType, ParsedDocument
from ragstore.parsing import parse_bytes
from ragstore.runtime import Runtime
from ragstore.search.service import SearchParams, run
from ragstore.store import Store

RST = """\
=============
 Espresso Kit
=============

Everything about the espresso kit.

Setup
=====

Unpack the machine.

Water tank
----------
Fill the tank with cold water.

Cleaning
========

Descale monthly.
"""

TXT = """\
Service manual

1. Introduction

This manual covers the pump.

1.1 Safety

Unplug the pump first.

1.2 Tools

Needed: a wrench.

3.1 Not a title
but the first line of a paragraph.

2. Maintenance

Steps to follow:

1. Drain the pump

2. Open the cover

3. Replace the seal

1. The owner replaces the seal once a year at the latest.

CHAPTER IV.

It was the best of times.
"""


WATER = " ".join(["Fill the tank with cold water, never warm."] * 30)


def _outline(doc: ParsedDocument) -> list[tuple[str, str, int, tuple[str, ...]]]:
    return [(b.type.value, b.text, b.level, b.section_path) for b in doc.blocks]


def test_rst_titles_take_levels_in_the_order_their_adornments_appear() -> None:
    doc = parse_bytes(RST.encode(), "kit.rst")
    kit, setup = ("Espresso Kit",), ("Espresso Kit", "Setup")
    assert _outline(doc) == [
        ("heading", "Espresso Kit", 1, ()),
        ("paragraph", "Everything about the espresso kit.", 0, kit),
        ("heading", "Setup", 2, kit),
        ("paragraph", "Unpack the machine.", 0, setup),
        ("heading", "Water tank", 3, setup),
        ("paragraph", "Fill the tank with cold water.", 0, (*setup, "Water tank")),
        ("heading", "Cleaning", 2, kit),
        ("paragraph", "Descale monthly.", 0, ("Espresso Kit", "Cleaning")),
    ]
    for b in doc.blocks:  # spans index the file's text; a title's covers its adornment
        assert RST[b.char_start : b.char_end].strip("=- \n").startswith(b.text[:5])


def test_numbered_and_chapter_titles_in_text_but_not_lists_or_sentences() -> None:
    doc = parse_bytes(TXT.encode(), "manual.txt")
    heads = [(b.text, b.level, b.section_path) for b in doc.blocks if b.type is ChunkType.HEADING]
    assert heads == [
        ("1. Introduction", 1, ()),
        ("1.1 Safety", 2, ("1. Introduction",)),
        ("1.2 Tools", 2, ("1. Introduction",)),
        ("2. Maintenance", 1, ()),
        ("CHAPTER IV.", 2, ("2. Maintenance",)),  # a new style: one level down
    ]
    paragraphs = [b.text for b in doc.blocks if b.type is ChunkType.PARAGRAPH]
    # a list (numbered lines one after another) and a numbered sentence stay text
    at = paragraphs.index("Steps to follow:")
    assert paragraphs[at + 1 : at + 4] == [
        "1. Drain the pump",
        "2. Open the cover",
        "3. Replace the seal",
    ]
    assert paragraphs[at + 4].startswith("1. The owner replaces")
    assert paragraphs[at - 1].startswith("3.1 Not a title\n"), "a title is a line of its own"
    tools = next(b for b in doc.blocks if b.text == "1.2 Tools")
    assert TXT[tools.char_start : tools.char_end] == "1.2 Tools"


def test_numbered_lines_are_list_items_in_rst_and_text_without_titles_is_unchanged() -> None:
    doc = parse_bytes(b"Notes\n\n1. Introduction\n\nSome words.\n", "notes.rst")
    assert all(b.type is ChunkType.PARAGRAPH for b in doc.blocks)
    plain = "First paragraph.\n\nSecond one, with 2. numbers in it.\n\n---\n"
    assert _outline(parse_bytes(plain.encode(), "a.txt")) == _outline(
        parse_bytes(plain.encode(), "a.txt", "plain")
    )


def test_a_text_files_sections_reach_the_chunks_and_search(rt: Runtime, tmp_path: Path) -> None:
    # sections long enough to be chunks of their own (tiny ones share a chunk)
    long = RST
    for line, topic in (("Unpack the machine.", "unpacking"), ("Descale monthly.", "descaling")):
        long = long.replace(line, " ".join([f"{line} Read this about {topic}."] * 30))
    long = long.replace("Fill the tank with cold water.", WATER)
    (tmp_path / "kit.rst").write_text(long)
    assert ingest_paths(rt, [tmp_path], "rst").count("added") == 1
    hits = run(rt, "cold water tank", "rst", SearchParams(k=3, mode="fulltext"))
    assert hits[0].section_path == ["Espresso Kit", "Setup", "Water tank"]
    assert hits[0].text in WATER


def test_texts_sent_as_strings_stay_paragraphs(rt: Runtime) -> None:
    store = Store.from_runtime(rt)
    store.add_texts("texts", ["1. Introduction"], ids=["t1"])
    (hit,) = store.search("texts", "introduction", mode="fulltext", k=1)["data"]
    assert hit["text"] == "1. Introduction", "a one-line text is not a title with no body"
    assert hit["section_path"] == []


def _heads(text: str, name: str = "manual.txt") -> list[tuple[str, int, tuple[str, ...]]]:
    doc = parse_bytes(text.encode(), name)
    return [(b.text, b.level, b.section_path) for b in doc.blocks if b.type is ChunkType.HEADING]


def test_numbered_titles_in_scripts_without_capitals_are_titles_but_their_sentences_not() -> None:
    text = (
        "取扱説明書\n\n1. 概要\n\n本製品について説明します。\n\n1.1 安全上の注意\n\n"
        "電源を切ってください。\n\n1. 電源を切ってからカバーを開けます。\n\n2. مقدمة\n\nنص.\n\n"
        "3. מבוא\n\nטקסט.\n\n4. บทนำ\n\nข้อความ\n\n"
        "5. اضغط على الزر الأحمر ثم انتظر قليلا حتى يتوقف.\n\n"
        "手順:\n\n1. 電源を切る\n\n2. カバーを開ける\n"
    )
    assert _heads(text) == [
        ("1. 概要", 1, ()),
        ("1.1 安全上の注意", 2, ("1. 概要",)),
        ("2. مقدمة", 1, ()),
        ("3. מבוא", 1, ()),
        ("4. บทนำ", 1, ()),
    ]
    paragraphs = [b.text for b in parse_bytes(text.encode(), "m.txt").blocks]
    # a numbered sentence (its full stop) and a numbered list stay text
    for line in ("1. 電源を切ってからカバーを開けます。", "1. 電源を切る", "2. カバーを開ける"):
        assert line in paragraphs
    assert any(p.startswith("5. اضغط") for p in paragraphs)


def test_chapter_and_part_words_of_other_languages_open_sections() -> None:
    for title in (
        "Chapitre 2 Entretien",
        "Kapitel 3: Wartung",
        "Capítulo 4 Uso diario",
        "Capitolo 5",
        "Hoofdstuk 6 Onderhoud",
        "Глава 7. Введение",
        "Приложение А",
        "Anhang B",
        "第3章 概要",
        "第二節　安全",
        "제4장 개요",
    ):
        heads = _heads(f"Manual\n\n{title}\n\nSome text.\n")
        assert heads == [(" ".join(title.split()), 1, ())], title
    # lower case after the number: a sentence, not a title
    assert _heads("Manual\n\nParte 2 del contrato\n\nSome text.\n") == []


def test_a_title_typed_with_runs_of_spaces_has_single_spaces() -> None:
    text = "RFC text\n\n2.  Message   Format\n\nThe message.\n\n2.1.  Header\n\nFields.\n"
    assert _heads(text) == [
        ("2. Message Format", 1, ()),
        ("2.1. Header", 2, ("2. Message Format",)),
    ]


RFC = (
    "Internet Engineering Task Force (IETF)                        J. Smith\n"
    "Request for Comments: 9999                                   June 2024\n\n"
    "                            The Foo Protocol\n\n"
    "1.  Introduction\n\n"
    "   Foo moves bytes between two hosts.\n\n\n\n"
    "Smith                        Standards Track                   [Page 1]\n"
    "\f\n"
    "RFC 9999                     The Foo Protocol                 June 2024\n\n\n"
    "   Foo keeps its bytes in order.\n\n"
    "2.  Message  Format\n\n"
    "   A message is a header and a body.\n\n"
    "Smith                        Standards Track                   [Page 2]\n"
    "\fRFC 9999                     The Foo Protocol                 June 2024\n\n"
    "   The header holds the length.\n\n"
    "Smith                        Standards Track                   [Page 3]\n"
)


def test_rfc_page_footers_and_headers_are_not_text_and_spans_still_index_the_file() -> None:
    doc = parse_bytes(RFC.encode(), "rfc9999.txt")
    texts = [b.text for b in doc.blocks]
    assert not [t for t in texts if "[Page" in t or "RFC 9999" in t or "\f" in t]
    assert "Foo keeps its bytes in order." in texts
    assert "The header holds the length." in texts
    assert ("2. Message Format", 1, ()) in _heads(RFC)
    for b in doc.blocks:
        if b.type is ChunkType.PARAGRAPH:
            assert RFC[b.char_start : b.char_end] == b.text
    # each RFC footer and the header after it goes even with one page break
    one = RFC[: RFC.index("   Foo keeps")] + "   Foo keeps its bytes in order.\n"
    assert [b.text for b in parse_bytes(one.encode(), "r.txt").blocks][-1:] == [
        "Foo keeps its bytes in order."
    ]
    assert not [b for b in parse_bytes(one.encode(), "r.txt").blocks if "RFC 9999" in b.text]


def test_lines_at_page_breaks_that_are_titles_or_text_stay() -> None:
    book = "Chapter 1\n\nIt was.\n\fChapter 2\n\nIt is.\n\fChapter 3\n\nDone.\n"
    assert [h[0] for h in _heads(book, "book.txt")] == ["Chapter 1", "Chapter 2", "Chapter 3"]
    # a line repeated at every break but run into the page's text is text
    pages = "\f\n".join(["Price list\nTea 3 euros a cup\n"] * 3)
    texts = [b.text for b in parse_bytes(pages.encode(), "p.txt").blocks]
    assert texts == ["Price list\nTea 3 euros a cup"] * 3


def test_an_rfc_ingested_has_no_page_furniture_in_its_chunks(rt: Runtime, tmp_path: Path) -> None:
    (tmp_path / "rfc9999.txt").write_text(RFC)
    assert ingest_paths(rt, [tmp_path], "rfcs").count("added") == 1
    hits = run(rt, "Foo", "rfcs", SearchParams(k=10, mode="fulltext"))
    stored = "\n".join(h.text for h in hits)
    assert "Foo keeps its bytes in order.\n\n# 2. Message Format\n\nA message is" in stored
    assert "[Page" not in stored and "RFC 9999" not in stored and "\f" not in stored
