"""DOCX headings as Word sees them (style inheritance, outline levels, localised names) and
tables of contents left out.

Headings were known only by the style names "Heading N" and "Title": a manual whose
chapters used a corporate style based on Heading 1 came out as one section under its title,
each chapter's title inside the previous chapter's text; a table of contents was indexed as
body text and ranked for its entries' words."""

from __future__ import annotations

from pathlib import Path

import docx
from docx.enum.style import WD_STYLE_TYPE
from docx.oxml import parse_xml

from ragstore.parsing import parse_bytes

_W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'


def _outline(element: object, level: int) -> None:
    """Set ``w:outlineLvl`` on a style's or a paragraph's properties."""
    ppr = element.get_or_add_pPr()  # type: ignore[attr-defined]
    ppr.append(parse_xml(f'<w:outlineLvl {_W} w:val="{level}"/>'))


def _style(document: object, name: str, base: str | None = None) -> object:
    style = document.styles.add_style(name, WD_STYLE_TYPE.PARAGRAPH)  # type: ignore[attr-defined]
    if base is not None:
        style.base_style = document.styles[base]  # type: ignore[attr-defined]
    return style


def _parse(document: object, tmp_path: Path) -> list[tuple[str, str, int, tuple[str, ...]]]:
    path = tmp_path / "doc.docx"
    document.save(str(path))  # type: ignore[attr-defined]
    parsed = parse_bytes(path.read_bytes(), "doc.docx")
    return [(b.type.value, b.text, b.level, b.section_path) for b in parsed.blocks]


def test_chapters_in_a_style_based_on_heading_1_are_sections(tmp_path: Path) -> None:
    """The reproduction: a Title and six chapters in a template's style based on
    Heading 1 gave every body block the section path ['PX-9 Pump Manual']."""
    document = docx.Document()
    _style(document, "Manual Chapter", base="Heading 1")
    document.add_paragraph("PX-9 Pump Manual", style="Title")
    for n in range(1, 7):
        document.add_paragraph(f"Chapter {n}", style="Manual Chapter")
        document.add_paragraph(f"Body of chapter {n}.")
    blocks = _parse(document, tmp_path)
    assert blocks[0] == ("heading", "PX-9 Pump Manual", 1, ())
    for n in range(1, 7):
        assert ("heading", f"Chapter {n}", 1, ()) in blocks
        assert ("paragraph", f"Body of chapter {n}.", 0, (f"Chapter {n}",)) in blocks


def test_outline_levels_and_localised_names_make_headings(tmp_path: Path) -> None:
    document = docx.Document()
    kapitel = _style(document, "Kapitel")  # no base: its own outline level says level 1
    _outline(kapitel.element, 0)  # type: ignore[attr-defined]
    _style(document, "Überschrift 2")  # a hand-made template's localised name, no level
    body_like = _style(document, "Boxed Heading", base="Heading 1")
    _outline(body_like.element, 9)  # based on Heading 1 but set to body text
    document.add_paragraph("Einleitung", style="Kapitel")
    document.add_paragraph("Zweck", style="Überschrift 2")
    direct = document.add_paragraph("Outlined by hand")  # Normal, its own outline level 2
    _outline(direct._p, 2)
    document.add_paragraph("Text under it.")
    document.add_paragraph("Not a heading after all", style="Boxed Heading")
    named = document.add_paragraph("Named heading wins", style="Heading 2")
    _outline(named._p, 9)  # a stray level on a paragraph styled Heading 2
    blocks = _parse(document, tmp_path)
    assert blocks == [
        ("heading", "Einleitung", 1, ()),
        ("heading", "Zweck", 2, ("Einleitung",)),
        ("heading", "Outlined by hand", 3, ("Einleitung", "Zweck")),
        ("paragraph", "Text under it.", 0, ("Einleitung", "Zweck", "Outlined by hand")),
        ("paragraph", "Not a heading after all", 0, ("Einleitung", "Zweck", "Outlined by hand")),
        ("heading", "Named heading wins", 2, ("Einleitung",)),
    ]


def test_a_style_chain_that_loops_ends(tmp_path: Path) -> None:
    document = docx.Document()
    a = _style(document, "Loop A")
    b = _style(document, "Loop B", base="Loop A")
    a.base_style = b  # type: ignore[attr-defined]
    document.add_paragraph("Round and round", style="Loop A")
    assert _parse(document, tmp_path) == [("paragraph", "Round and round", 0, ())]


def _field(kind: str) -> str:
    return f'<w:r><w:fldChar w:fldCharType="{kind}"/></w:r>'


def _instr(text: str) -> str:
    return f'<w:r><w:instrText xml:space="preserve">{text}</w:instrText></w:r>'


def _run(text: str) -> str:
    return f'<w:r><w:t xml:space="preserve">{text}</w:t></w:r>'


def test_a_table_of_contents_is_left_out(tmp_path: Path) -> None:
    """Word's (TOC Heading and toc N styles), a TOC field over plain paragraphs with a
    PAGEREF inside each entry, and pandoc's / LibreOffice's content control."""
    document = docx.Document()
    _style(document, "toc 1")  # not in python-docx's template; Word adds them with a TOC
    _style(document, "toc 2", base="toc 1")
    document.add_paragraph("Contents", style="TOC Heading")
    document.add_paragraph("Installation\t3", style="toc 1")
    document.add_paragraph("Wiring\t4", style="toc 2")
    body = document.element.body
    pageref, toc = _instr(" PAGEREF _Toc1 \\h "), _instr(' TOC \\o "1-3" ')
    entry = f"{_run('Maintenance')}{_field('begin')}{pageref}"
    entry += f"{_field('separate')}{_run('9')}{_field('end')}"
    fielded = [
        f"<w:p {_W}>{_field('begin')}{toc}{_field('separate')}{entry}</w:p>",
        f"<w:p {_W}>{_run('Troubleshooting 12')}</w:p>",
        f"<w:p {_W}>{_field('end')}</w:p>",
        f"<w:p {_W}>{_run('After the contents.')}</w:p>",
        f'<w:p {_W}><w:fldSimple w:instr=" TOC \\o ">{_run("Simple entry 2")}</w:fldSimple></w:p>',
        f"<w:sdt {_W}><w:sdtPr><w:docPartObj><w:docPartGallery w:val='Table of Contents'/>"
        f"</w:docPartObj></w:sdtPr><w:sdtContent><w:p>{_run('Table of Contents')}</w:p>"
        f"<w:p>{_run('Pandoc entry 5')}</w:p></w:sdtContent></w:sdt>",
        f"<w:p {_W}>{_run('See page ')}{_field('begin')}{_instr(' PAGEREF x ')}"
        f"{_field('separate')}{_run('7')}{_field('end')}</w:p>",
    ]
    section = body[-1]  # w:sectPr stays last
    for xml in fielded:
        section.addprevious(parse_xml(xml))
    document.add_heading("Installation", level=1)
    document.add_paragraph("Bolt the pump down.")
    blocks = _parse(document, tmp_path)
    assert blocks == [
        ("paragraph", "After the contents.", 0, ()),
        ("paragraph", "See page 7", 0, ()),
        ("heading", "Installation", 1, ()),
        ("paragraph", "Bolt the pump down.", 0, ("Installation",)),
    ]


def test_a_toc_field_that_never_ends_leaves_no_text_but_is_still_total(tmp_path: Path) -> None:
    """A damaged field (a begin with no end) is read as Word reads it: all that follows is
    the field's result. The parse ends; nothing raises but the empty document."""
    document = docx.Document()
    document.add_heading("Kept", level=1)
    body = document.element.body
    for _ in range(2000):  # many nested begins: the parse stays linear
        body[-1].addprevious(parse_xml(f"<w:p {_W}>{_field('begin')}{_instr('TOC')}</w:p>"))
    document.add_paragraph("swallowed by the field")
    blocks = _parse(document, tmp_path)
    assert blocks == [("heading", "Kept", 1, ())]
