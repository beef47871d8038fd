"""Section structure of long HTML pages and EPUB books, as documentation generators and
e-book tools write them: sections titled in their own <header>, ARIA headings and
landmarks, permalinks after headings, and a book's table of contents."""

from __future__ import annotations

from ragstore.models import ChunkType, ParsedDocument
from ragstore.parsing import parse_bytes
from tests.fixtures.builders import epub_book


def _outline(doc: ParsedDocument) -> list[tuple[ChunkType, tuple[str, ...], str]]:
    return [(b.type, b.section_path, b.text) for b in doc.blocks]


def _html(body: str) -> ParsedDocument:
    page = f"<!DOCTYPE html><html><head><title>t</title></head><body>{body}</body></html>"
    return parse_bytes(page.encode(), "page.html")


H, P = ChunkType.HEADING, ChunkType.PARAGRAPH


def test_a_section_titled_in_its_own_header_keeps_its_heading_and_text() -> None:
    doc = _html(
        "<header>Site menu</header>"
        "<section><header><h1>Kettle manual</h1><p>Model K-2</p></header>"
        "<p>Fill to the line.</p>"
        "<section><header><h2>Descaling</h2></header><p>Use citric acid.</p>"
        "<footer>See also: cleaning.</footer></section>"
        "<section><header><h2>Boil-dry protection</h2></header><p>It switches off.</p>"
        "</section></section>"
        "<footer>© Example Ltd</footer>"
    )
    assert _outline(doc) == [
        (H, (), "Kettle manual"),
        (P, ("Kettle manual",), "Model K-2"),
        (P, ("Kettle manual",), "Fill to the line."),
        (H, ("Kettle manual",), "Descaling"),
        (P, ("Kettle manual", "Descaling"), "Use citric acid."),
        (P, ("Kettle manual", "Descaling"), "See also: cleaning."),
        (H, ("Kettle manual",), "Boil-dry protection"),
        (P, ("Kettle manual", "Boil-dry protection"), "It switches off."),
    ]  # the site's header and footer, outside any section, still dropped


def test_a_page_header_holding_its_title_is_kept_but_a_banner_is_not() -> None:
    doc = _html(
        '<header role="banner"><h1>Example Ltd</h1></header>'
        "<header><h1>Kettle manual</h1></header><p>Fill to the line.</p>"
    )
    assert _outline(doc) == [(H, (), "Kettle manual"), (P, ("Kettle manual",), "Fill to the line.")]


def test_aria_headings_and_landmarks_are_read_as_a_screen_reader_reads_them() -> None:
    doc = _html(
        '<div role="banner">Example Ltd home</div>'
        '<div role="navigation"><a href="/">Home</a> <a href="/shop">Shop</a></div>'
        '<div role="search"><input name="q"/> Search the site</div>'
        '<div class="content"><div class="wrap" role="main">'
        '<div role="heading" aria-level="1">Kettle manual</div><p>Fill to the line.</p>'
        '<span role="heading" aria-level="3">Descaling</span><p>Use citric acid.</p>'
        '<div role="heading">Boil-dry protection</div><p>It switches off.</p>'
        "</div></div>"
        '<div class="footer">Loose text outside the main part</div>'
        '<div role="contentinfo">© Example Ltd</div>'
    )
    assert _outline(doc) == [
        (H, (), "Kettle manual"),
        (P, ("Kettle manual",), "Fill to the line."),
        (H, ("Kettle manual",), "Descaling"),
        (P, ("Kettle manual", "Descaling"), "Use citric acid."),
        (H, ("Kettle manual",), "Boil-dry protection"),  # no aria-level: level 2
        (P, ("Kettle manual", "Boil-dry protection"), "It switches off."),
    ]
    assert [b.level for b in doc.blocks if b.type is H] == [1, 3, 2]


def test_a_sphinx_page_is_its_body_without_sidebar_footer_or_permalinks() -> None:
    doc = _html(
        '<div class="document"><div class="documentwrapper"><div class="bodywrapper">'
        '<div class="body" role="main"><section id="configuration">'
        '<h1>Configuration<a class="headerlink" href="#configuration"'
        ' title="Permalink to this heading">¶</a></h1><p>Settings are read at start.</p>'
        '<section id="flow-limits"><h2>3.2. Flow limits<a class="headerlink"'
        ' href="#flow-limits">¶</a></h2><p>At most 40 litres a minute.</p>'
        '<h3><a aria-hidden="true" class="anchor" href="#burst">#</a>Burst</h3>'
        "<p>Bursts of 60 for ten seconds.</p>"
        "</section></section></div></div></div>"
        '<div class="sphinxsidebar" role="navigation" aria-label="main navigation">'
        "<h3>Table of Contents</h3><ul><li>Configuration</li></ul><h3>This Page</h3>"
        '<ul><li>Show Source</li></ul><div id="searchbox" role="search">'
        "<h3>Quick search</h3></div></div></div>"
        '<div class="footer">©2024, The Kettle Authors. Created using Sphinx.</div>'
    )
    assert _outline(doc) == [
        (H, (), "Configuration"),
        (P, ("Configuration",), "Settings are read at start."),
        (H, ("Configuration",), "3.2. Flow limits"),
        (P, ("Configuration", "3.2. Flow limits"), "At most 40 litres a minute."),
        (H, ("Configuration", "3.2. Flow limits"), "Burst"),
        (P, ("Configuration", "3.2. Flow limits", "Burst"), "Bursts of 60 for ten seconds."),
    ]


def _nav(*entries: str) -> str:
    return f'<nav epub:type="toc"><h1>Contents</h1><ol>{"".join(entries)}</ol></nav>'


def test_an_epub_s_table_of_contents_gives_sections_to_styled_paragraph_titles() -> None:
    # Calibre: the chapter titles are styled paragraphs, only the TOC names the chapters
    book = epub_book(
        [
            ("text/part0001.html", '<p class="calibre3">Spring</p><p>The rail is painted.</p>'),
            ("text/part0002.html", "<p>A quiet week of fog.</p>"),
            (
                "text/part0003.html",
                '<p class="calibre3">Summer</p><p>The wick is trimmed.</p>'
                '<h3 class="calibre5">Visitors</h3><p>Tourists climb the stairs.</p>',
            ),
        ],
        nav=_nav(
            '<li><a href="text/part0001.html">Spring</a></li>',
            '<li><a href="text/part0002.html">Interlude</a></li>',
            '<li><a href="text/part0003.html#top">Summer</a></li>',
        ),
    )
    assert _outline(parse_bytes(book, "year.epub")) == [
        (H, (), "Spring"),
        (P, ("Spring",), "The rail is painted."),
        (H, (), "Interlude"),  # a chapter with no title of its own: the TOC's
        (P, ("Interlude",), "A quiet week of fog."),
        (H, (), "Summer"),  # an anchor the page lacks: the top of the page
        (P, ("Summer",), "The wick is trimmed."),
        (H, ("Summer",), "Visitors"),
        (P, ("Summer", "Visitors"), "Tourists climb the stairs."),
    ]


def test_each_epub_chapter_starts_at_its_toc_level_whatever_heading_it_uses() -> None:
    chapters = [
        (
            "ch1.xhtml",
            '<h1>Spring</h1><p>Paint.</p><h2 id="s">Storms</h2><p>Panes break.</p>',
        ),
        ("ch2.xhtml", "<p>Fog all week.</p>"),
        ("ch3.xhtml", "<h2>Summer</h2><p>Trim.</p><h4>Visitors</h4><p>Stairs.</p>"),
        ("ch4.xhtml", "<h2>Autumn</h2><p>Gales.</p>"),
    ]
    nav = _nav(
        '<li><a href="ch1.xhtml">Spring</a><ol><li><a href="ch1.xhtml#s">Storms</a></li></ol></li>',
        '<li><a href="ch2.xhtml">Interlude</a></li>',
        '<li><a href="ch3.xhtml">Summer</a></li><li><a href="ch4.xhtml">Autumn</a></li>',
    )
    expected = [
        (H, (), "Spring"),
        (P, ("Spring",), "Paint."),
        (H, ("Spring",), "Storms"),
        (P, ("Spring", "Storms"), "Panes break."),
        (H, (), "Interlude"),
        (P, ("Interlude",), "Fog all week."),
        (H, (), "Summer"),
        (P, ("Summer",), "Trim."),
        (H, ("Summer",), "Visitors"),
        (P, ("Summer", "Visitors"), "Stairs."),
        (H, (), "Autumn"),
        (P, ("Autumn",), "Gales."),
    ]
    assert _outline(parse_bytes(epub_book(chapters, nav=nav), "year.epub")) == expected
    # without a table of contents each chapter file is a tree of its own
    plain = _outline(parse_bytes(epub_book(chapters), "plain.epub"))
    assert [(t, p, x) for t, p, x in plain if t is H] == [
        (H, (), "Spring"),
        (H, ("Spring",), "Storms"),
        (H, (), "Summer"),
        (H, ("Summer",), "Visitors"),
        (H, (), "Autumn"),
    ]
    assert (P, (), "Fog all week.") in plain


def test_an_epub2_ncx_opens_sections_at_anchors_within_one_file() -> None:
    # one file holding two chapters, named by anchors in a nested NCX under a part
    chapters = [
        ("part1.xhtml", '<div class="part">Part One</div>'),
        (
            "body.xhtml",
            '<p>Epigraph before the first chapter.</p><div id="c1"><p class="t">The Rail</p>'
            '<p>Painted green.</p></div><p><a id="c2"/>Fog stays.</p><h3>Horns</h3>'
            "<p>The horn sounds.</p>",
        ),
    ]

    def point(label: str, src: str, inner: str = "") -> str:
        return (
            f'<navPoint id="{src}"><navLabel><text>{label}</text></navLabel>'
            f'<content src="{src}"/>{inner}</navPoint>'
        )

    ncx = (
        "<navMap>"
        + point(
            "Part One",
            "part1.xhtml",
            point("The Rail", "body.xhtml#c1") + point("The Fog", "body.xhtml#c2"),
        )
        + "</navMap>"
    )
    doc = parse_bytes(epub_book(chapters, nav="<p>no nav here</p>", ncx=ncx), "b.epub")
    assert _outline(doc) == [
        (H, (), "Part One"),
        (P, ("Part One",), "Epigraph before the first chapter."),
        (H, ("Part One",), "The Rail"),
        (P, ("Part One", "The Rail"), "Painted green."),
        (H, ("Part One",), "The Fog"),  # the anchor's paragraph is not the title: put before
        (P, ("Part One", "The Fog"), "Fog stays."),
        (H, ("Part One", "The Fog"), "Horns"),
        (P, ("Part One", "The Fog", "Horns"), "The horn sounds."),
    ]
    assert [b.level for b in doc.blocks if b.type is H] == [1, 2, 2, 3]


def test_a_broken_table_of_contents_leaves_the_book_read_as_before() -> None:
    chapters = [("ch1.xhtml", "<h1>Spring</h1><p>Paint.</p>")]
    book = epub_book(chapters, nav="<p>none</p>", ncx="<navMap><navPoint>")
    assert _outline(parse_bytes(book, "b.epub")) == [(H, (), "Spring"), (P, ("Spring",), "Paint.")]


def test_a_table_of_contents_nested_thousands_deep_is_read_to_a_bounded_depth() -> None:
    # 3,000 entries, each a list inside the last, each naming an anchor in a chapter whose
    # elements nest as deep: read (no RecursionError), sections no deeper than six entries
    depth = 3000
    nav = _nav(
        "".join(f'<li><a href="ch1.xhtml#a{i}">Entry {i}</a><ol>' for i in range(depth))
        + "</ol></li>" * depth
    )
    body = "".join(f'<div id="a{i}"><p>Text {i}.</p>' for i in range(depth)) + "</div>" * depth
    doc = parse_bytes(epub_book([("ch1.xhtml", body)], nav=nav), "deep.epub")
    assert max(len(b.section_path) for b in doc.blocks) <= 6
    assert [b.text for b in doc.blocks if b.type is P][:2] == ["Text 0.", "Text 1."]
    assert doc.blocks[-1].section_path[:5] == (
        "Entry 0",
        "Entry 1",
        "Entry 2",
        "Entry 3",
        "Entry 4",
    )
