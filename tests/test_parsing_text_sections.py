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
