"""HTML through BeautifulSoup on lxml: headings, paragraphs, lists, tables, code, quotes.

Boilerplate that is not the document (scripts, styles, navigation, site headers and
footers, asides, forms, and what ARIA marks as navigation, banner, footer or search) is
dropped before the walk; ``<main>`` (or ``role="main"``) or ``<article>``, when present,
is taken as the document. ``role="heading"`` with ``aria-level`` is a heading, and the
permalinks documentation generators put after every heading ("¶") are not its text.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import PurePath
from typing import Any, AnyStr

from bs4 import BeautifulSoup, XMLParsedAsHTMLWarning
from bs4.element import NavigableString, PageElement, Tag

from ragstore.errors import EmptyDocumentError
from ragstore.models import ChunkType, ParsedDocument
from ragstore.parsing.structure import BlockBuilder, pipe_table

_DROP = (
    "script",
    "style",
    "noscript",
    "template",
    "nav",
    "header",
    "footer",
    "aside",
    "form",
    "iframe",
    "svg",
    "button",
    "select",
    "head",
)
# ARIA landmarks that are site chrome whatever element carries them: Sphinx marks its
# sidebar (table of contents, "This Page", "Quick search") a div role="navigation".
_DROP_ROLES = frozenset({"navigation", "banner", "contentinfo", "search", "complementary"})
# a header or footer inside these is the document's own (a title, a byline), not the site's
_OWNERS = frozenset({"article", "main", "section"})
_OWNER_ROLES = frozenset({"article", "main", "region"})
# the permalink after a heading: Sphinx and MkDocs "¶" (headerlink), Jupyter (anchor-link),
# Docusaurus (hash-link); section paths read "Configuration¶" with them
_PERMALINKS = frozenset({"headerlink", "anchor-link", "hash-link"})
_ARIA_LEVEL_DEFAULT = 2  # WAI-ARIA: a role="heading" without aria-level is level 2
_ANCHOR_CLIMB = 200  # how far up an anchor's block is looked for (see walk_page)
# XHTML (every EPUB chapter, pages saved as .xhtml) is read by the HTML parser on purpose:
# it forgives what real pages get wrong, and expands no entity and fetches nothing. Saying
# so on stderr for each page, as BeautifulSoup does, is noise in an ingest's output.
warnings.filterwarnings("ignore", category=XMLParsedAsHTMLWarning)

# A DOCTYPE with an internal subset, <!DOCTYPE html [<!ENTITY ...>]>: the HTML parser ends
# the doctype at its first ">" and kept the rest, "]>" at least, as the page's first
# paragraph. Its entities are never expanded (no billion laughs, no file or URL read),
# so such a doctype is dropped before parsing and a use of one stays the text "&name;".
_SUBSET_START = re.compile(r"<!DOCTYPE\s[^\[>]*\[", re.IGNORECASE)
_SUBSET_START_B = re.compile(rb"<!DOCTYPE\s[^\[>]*\[", re.IGNORECASE)
_SUBSET_END, _SUBSET_END_B = re.compile(r"\]\s*>"), re.compile(rb"\]\s*>")
_SUBSET_WITHIN = 4096  # a doctype comes first, after an XML declaration and comments

_HEADINGS = {f"h{i}": i for i in range(1, 7)}
# what _walk reads whole (its text), not entered: an anchor inside one is reached with it
_LEAVES = frozenset({*_HEADINGS, "p", "table", "pre", "blockquote", "ul", "ol", "dl", "menu"})
_LISTS = {"ul", "ol", "dl", "menu"}
_ITEMS = {"li", "dt", "dd"}
_MAX_LIST_INDENT = 8  # nesting deeper than this is indented as this deep
_INLINE = {
    "a",
    "abbr",
    "b",
    "bdi",
    "bdo",
    "br",
    "cite",
    "code",
    "data",
    "dfn",
    "em",
    "i",
    "kbd",
    "mark",
    "q",
    "s",
    "samp",
    "small",
    "span",
    "strong",
    "sub",
    "sup",
    "time",
    "u",
    "var",
    "wbr",
    "img",
    "label",
    "del",
    "ins",
}


def _flat(el: Tag, skip: frozenset[str] | set[str] = frozenset()) -> str:
    """The element's text as a reader sees it: inline markup joins its neighbours
    (``<code>Vec</code>s`` is ``Vecs``), block-level children are set apart by spaces (two
    ``<p>`` in a table cell are two sentences, not one glued word). Comments and child
    elements named in ``skip``, at any depth, are left out.

    Walked with a stack, not recursion: a page of thousands of nested (often unclosed)
    elements is still a page to read, not a RecursionError."""
    parts: list[str] = []
    # a plain str on the stack is a separator to emit; a node is expanded in place
    stack: list[Any] = list(reversed(list(el.children)))
    while stack:
        node = stack.pop()
        if type(node) is str:
            parts.append(node)
        elif isinstance(node, Tag):
            if node.name in skip:
                continue
            children = list(node.children)
            if node.name in _INLINE:
                stack.extend(reversed(children))
            else:
                stack.append(" ")
                stack.extend(reversed(children))
                stack.append(" ")
        elif type(node) is NavigableString:
            parts.append(str(node))
    return "".join(parts)


def _text(el: Tag) -> str:
    return " ".join(_flat(el).split())


text_of = _text  # an element's text, words joined by single spaces (the EPUB's contents)


def _list_text(el: Tag) -> str:
    """One line a list item, indented by the lists it is nested in (up to
    ``_MAX_LIST_INDENT``), holding the item's own text: nested lists and items are lines
    of their own, wherever they sit in it.

    Each element is visited once, on a stack carrying its depth. Counting each item's
    list ancestors, indenting without a cap and flattening every item with its nested
    items cost the square of the depth in time and in text: 64 KB of ``<ul><li>`` nested
    8,000 deep took 103 s and gave a 64-million-character block, and a page under the size
    parsed in a memory-capped helper would have taken gigabytes in the ingesting process."""
    lines: list[str] = []
    found = False
    # (element, depth): depth counts the lists between the element and ``el``
    stack = [(c, 0) for c in reversed(list(el.children)) if isinstance(c, Tag)]
    while stack:
        node, depth = stack.pop()
        if node.name in _ITEMS:
            found = True
            own = " ".join(_flat(node, skip=_LISTS | _ITEMS).split())
            if own:
                lines.append("  " * min(depth, _MAX_LIST_INDENT) + "- " + own)
        inner = depth + 1 if node.name in _LISTS else depth
        stack.extend((c, inner) for c in reversed(list(node.children)) if isinstance(c, Tag))
    return "\n".join(lines) if found else _text(el)


def _table(el: Tag) -> tuple[str, dict[str, Any]]:
    rows = []
    for tr in el.find_all("tr"):
        if tr.find_parent("table") is not el:
            continue  # rows of a nested table belong to that table
        cells = [_text(c) for c in tr.find_all(["th", "td"], recursive=False)]
        if any(cells):
            rows.append(cells)
    return pipe_table(rows)


def _roles(tag: Tag) -> list[str]:
    role = tag.get("role")
    return role.lower().split() if isinstance(role, str) else []


def _aria_heading(tag: Tag) -> int | None:
    """The level of a ``role="heading"`` element (``aria-level``, 1 to 6), else None."""
    if "heading" not in _roles(tag):
        return None
    raw = tag.get("aria-level")
    try:
        level = int(raw) if isinstance(raw, str) else _ARIA_LEVEL_DEFAULT
    except ValueError:
        level = _ARIA_LEVEL_DEFAULT
    return min(max(level, 1), 6)


def _is_heading(tag: Tag) -> bool:
    return tag.name in _HEADINGS or _aria_heading(tag) is not None


def _permalink(link: Tag) -> bool:
    classes = link.get("class")
    return isinstance(classes, list) and any(c in _PERMALINKS for c in classes)


def _chrome(tag: Tag) -> bool:
    """Whether ``tag`` is boilerplate to drop before the walk. A header or footer is the
    document's own inside an article, main or section (``<section><header><h2>`` is how
    many pages title a section: it was dropped, heading and text), and so is a header
    holding a heading outside any (the page's title), unless ARIA calls it the banner."""
    roles = _roles(tag)
    if any(r in _DROP_ROLES for r in roles):
        return True
    if tag.name not in _DROP:
        return False
    if tag.name in ("header", "footer"):
        for parent in tag.parents:
            if parent.name in _OWNERS or any(r in _OWNER_ROLES for r in _roles(parent)):
                return False
        if tag.name == "header" and tag.find(_is_heading) is not None:
            return False
    return True


def _walk(
    root: Tag, out: BlockBuilder, marks: Mapping[int, list[Callable[[], None]]] | None = None
) -> None:
    """Blocks of ``root`` in document order. Loose inline text between blocks becomes a
    paragraph of its own level; a container that is not a block (``div``, ``section``) is
    entered. Depth-first with an explicit stack of levels (see ``_flat``). ``marks``: what
    to call on reaching an element (by ``id()``), before its blocks (see ``walk_page``)."""
    # one level: the children still to visit and the loose text gathered at that level
    levels: list[tuple[Iterator[PageElement], list[str]]] = [(iter(root.children), [])]
    while levels:
        children, loose = levels[-1]
        child = next(children, None)
        if child is None:
            _flush(loose, out)
            levels.pop()
            continue
        if isinstance(child, NavigableString):
            if type(child) is NavigableString:
                loose.append(str(child))
            continue
        if not isinstance(child, Tag):
            continue
        if marks and id(child) in marks:
            _flush(loose, out)
            for call in marks[id(child)]:
                call()
        name = child.name
        aria_level = _aria_heading(child) if "role" in child.attrs else None
        if name in _INLINE and aria_level is None:
            loose.append(_flat(child))
            continue
        _flush(loose, out)
        if aria_level is not None:
            out.add(ChunkType.HEADING, _text(child), level=aria_level)
        elif name in _HEADINGS:
            out.add(ChunkType.HEADING, _text(child), level=_HEADINGS[name])
        elif name == "p":
            out.add(ChunkType.PARAGRAPH, _text(child))
        elif name in _LISTS:
            out.add(ChunkType.LIST, _list_text(child))
        elif name == "table":
            text, shape = _table(child)
            out.add(ChunkType.TABLE, text, metadata=shape)
        elif name == "pre":
            code = child.find("code")
            classes: list[str] | str = (code.get("class") if isinstance(code, Tag) else None) or []
            langs = [c[9:] for c in classes if isinstance(c, str) and c.startswith("language-")]
            out.add(
                ChunkType.CODE, child.get_text(), metadata={"language": langs[0]} if langs else {}
            )
        elif name == "blockquote":
            out.add(ChunkType.QUOTE, _text(child))
        else:
            levels.append((iter(child.children), []))


def _flush(loose: list[str], out: BlockBuilder) -> None:
    if loose:
        out.add(ChunkType.PARAGRAPH, " ".join("".join(loose).split()))
        loose.clear()


def _subset_span(page: str | bytes) -> tuple[int, int] | None:
    """Where the DOCTYPE's internal subset is, from "<!DOCTYPE" to its "]>"."""
    if isinstance(page, bytes):
        start_b = _SUBSET_START_B.search(page, 0, _SUBSET_WITHIN)
        end_b = _SUBSET_END_B.search(page, start_b.end()) if start_b else None
        return (start_b.start(), end_b.end()) if start_b and end_b else None
    start = _SUBSET_START.search(page, 0, _SUBSET_WITHIN)
    end = _SUBSET_END.search(page, start.end()) if start else None
    return (start.start(), end.end()) if start and end else None


def without_internal_subset(page: AnyStr) -> AnyStr:
    """``page`` without its DOCTYPE when that declares an internal subset (see
    ``_SUBSET_START``); found in linear time, the page unchanged otherwise."""
    span = _subset_span(page)
    return page if span is None else page[: span[0]] + page[span[1] :]


def walk_page(
    soup: BeautifulSoup,
    out: BlockBuilder,
    anchors: Mapping[str, Callable[[], None]] | None = None,
) -> None:
    """Add a parsed page's blocks to ``out``: boilerplate (scripts, navigation, site
    headers and footers, forms; see ``_chrome``) dropped, ``<main>`` (or ``role="main"``)
    or ``<article>`` taken as the page when present. An EPUB's chapters are pages walked
    into one builder.

    ``anchors``: element id -> what to call when the walk reaches that element, before its
    text (an EPUB's table of contents opens its sections there). An anchor inside a block
    read whole (a heading, a paragraph) is reached with that block; one on the part read
    or outside it is called before the page's first block; one dropped with the page's
    boilerplate is not called."""
    headings = []
    for tag in soup.find_all(True):  # one pass; a decomposed tag has lost its name
        if not tag.name:
            continue
        if _chrome(tag) or (tag.name == "a" and _permalink(tag)):
            tag.decompose()
        elif tag.name == "br":
            tag.replace_with("\n")
        elif _is_heading(tag):
            headings.append(tag)
    for heading in headings:  # an icon or "#" hidden from screen readers is no title
        for hidden in heading.find_all(True, attrs={"aria-hidden": "true"}):
            hidden.decompose()
    root = (
        soup.find("main")
        or soup.find(lambda t: "main" in _roles(t))
        or soup.find("article")
        or soup.find("body")
        or soup
    )
    if not isinstance(root, Tag):
        return
    marks = _marks(soup, root, anchors) if anchors else None
    _walk(root, out, marks)


def _marks(
    soup: BeautifulSoup, root: Tag, anchors: Mapping[str, Callable[[], None]]
) -> dict[int, list[Callable[[], None]]]:
    """``anchors`` keyed by the ``id()`` of the element ``_walk`` meets them at: the
    outermost block read whole or inline element holding the anchor, else the anchor's
    element itself. Those on or outside ``root`` are called here, first."""
    marks: dict[int, list[Callable[[], None]]] = {}
    found: set[str] = set()
    first: list[Callable[[], None]] = []
    for el in soup.find_all(id=True):
        key = el.get("id")
        if not isinstance(key, str) or key not in anchors or key in found:
            continue
        node: Tag | None = el
        for steps, parent in enumerate(el.parents):
            if parent is root:
                break
            if steps >= _ANCHOR_CLIMB:
                break  # nested past any real page: met here or not at all
            if parent.name in _INLINE or parent.name in _LEAVES:
                node = parent
        else:
            node = None  # root itself, or outside it
        found.add(key)
        if node is None or node is root:
            first.append(anchors[key])
        else:
            marks.setdefault(id(node), []).append(anchors[key])
    for call in first:
        call()
    return marks


def parse_html(text: str, name: str) -> ParsedDocument:
    soup = BeautifulSoup(without_internal_subset(text), "lxml")
    title_tag = soup.find("title")
    title = _text(title_tag) if isinstance(title_tag, Tag) else None
    metadata: dict[str, Any] = {}
    html_tag = soup.find("html")
    if isinstance(html_tag, Tag) and isinstance(html_tag.get("lang"), str):
        metadata["lang"] = html_tag["lang"]
    for meta in soup.find_all("meta"):
        key, value = meta.get("name"), meta.get("content")
        if (
            isinstance(key, str)
            and isinstance(value, str)
            and key.lower() in ("description", "author", "keywords")
        ):
            metadata[key.lower()] = value
    out = BlockBuilder()
    walk_page(soup, out)
    if not out.blocks:
        raise EmptyDocumentError(f"{name}: the HTML page holds no text outside boilerplate")
    return ParsedDocument(
        format="html",
        title=title or out.title or PurePath(name).stem or None,
        blocks=out.blocks,
        metadata=metadata,
    )
