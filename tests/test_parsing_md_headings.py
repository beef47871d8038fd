"""A Markdown heading's text, section path and title as a reader sees the heading:
emphasis, links, permalinks, images and attribute blocks gone, code spans kept with their
backticks; an HTML heading block is a heading. Both ways Markdown is read: the line-by-line
fast path (headings and paragraphs only) and markdown-it (anything else)."""

from __future__ import annotations

import pytest

from ragstore.models import ChunkType, ParsedDocument
from ragstore.parsing import parse_bytes

HEADINGS = """\
# The `pxctl` CLI {#pxctl}

Manage volumes.

## Configuring **flow limits** [¶](#flow)

Limits per volume.

### Use ![icon](i.png) the [*admin* guide](guide.md "Guide") and `__init__` with snake_case_names

Read it.

## Escaped \\*stars\\* &amp; _words_ {.unnumbered}

Text.
"""


def _outline(doc: ParsedDocument) -> list[tuple[str, str, int, tuple[str, ...]]]:
    return [(b.type.value, b.text, b.level, b.section_path) for b in doc.blocks]


@pytest.mark.parametrize("tail", ["", "\n- a list sends the file to markdown-it\n"])
def test_heading_markup_is_gone_code_spans_stay(tail: str) -> None:
    doc = parse_bytes((HEADINGS + tail).encode(), "pxctl.md")
    cli, flow = "The `pxctl` CLI", "Configuring flow limits"
    guide = "Use the admin guide and `__init__` with snake_case_names"
    assert doc.title == cli
    assert _outline(doc)[:8] == [
        ("heading", cli, 1, ()),
        ("paragraph", "Manage volumes.", 0, (cli,)),
        ("heading", flow, 2, (cli,)),
        ("paragraph", "Limits per volume.", 0, (cli, flow)),
        ("heading", guide, 3, (cli, flow)),
        ("paragraph", "Read it.", 0, (cli, flow, guide)),
        ("heading", "Escaped *stars* & words", 2, (cli,)),
        ("paragraph", "Text.", 0, (cli, "Escaped *stars* & words")),
    ]


def test_an_html_heading_block_is_a_heading_and_other_html_stays_text() -> None:
    text = (
        '<h1 align="center">Depot <em>manual</em></h1>\n\nIntro.\n\n'
        '<h2 id="q">Limits &amp; quotas</h2>\n\nPer tenant.\n\n'
        '<div class="note">Not a heading</div>\n\n<h2>Two</h2>\n<p>headings and a paragraph</p>\n'
    )
    doc = parse_bytes(text.encode(), "depot.md")
    assert doc.title == "Depot manual"
    assert _outline(doc)[:4] == [
        ("heading", "Depot manual", 1, ()),
        ("paragraph", "Intro.", 0, ("Depot manual",)),
        ("heading", "Limits & quotas", 2, ("Depot manual",)),
        ("paragraph", "Per tenant.", 0, ("Depot manual", "Limits & quotas")),
    ]
    rest = doc.blocks[4:]
    assert [b.type for b in rest] == [ChunkType.PARAGRAPH, ChunkType.PARAGRAPH]
    assert rest[1].text.startswith("<h2>Two</h2>\n<p>")
