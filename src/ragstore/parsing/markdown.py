"""Markdown through markdown-it-py (CommonMark + tables), YAML front matter as metadata."""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any

import yaml
from markdown_it import MarkdownIt
from markdown_it.token import Token
from mdit_py_plugins.front_matter import front_matter_plugin

from ragstore.errors import CorruptDocumentError
from ragstore.models import Block, ChunkType, ParsedDocument
from ragstore.parsing.md_inline import heading_text, html_heading
from ragstore.validation import check_value

_NEWLINE = re.compile("\n")
# a comment's body is "anything but -->", not ``.*?``, which let a run of n comments split
# 2**(n-1) ways when the block is not all comments: "<!---->" * 30 + "x" never finished
_ONLY_COMMENTS = re.compile(r"\s*(?:<!--(?:(?!-->).)*-->\s*)+", re.DOTALL)
# Block structure only: the core "inline" rule (emphasis, links, code spans inside each
# paragraph and heading) is off. Blocks are cut from the source text and a heading's text
# is its inline token's ``content``, so nothing here reads inline children; and inline
# parsing is where markdown-it is superlinear on hostile text: 200 KB of "[" took 13.7 s
# (four times 100 KB's), 800 KB of "*a" 23 s, in the ingesting process, under the size
# that sends a text to a time-limited helper.
_md = MarkdownIt("commonmark").enable("table").use(front_matter_plugin).disable("inline")
# libyaml's parser when PyYAML has it: the same safe constructor, about 10x faster than the
# pure-Python scanner, which took a third of parsing a short Markdown file
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_CONTAINERS = {
    "bullet_list_open": ChunkType.LIST,
    "ordered_list_open": ChunkType.LIST,
    "blockquote_open": ChunkType.QUOTE,
    "table_open": ChunkType.TABLE,
}


def _line_offsets(text: str) -> list[int]:
    return [0, *(m.end() for m in _NEWLINE.finditer(text)), len(text)]


# a front matter line YAML reads as a string key and a decimal integer or a plain string
_SIMPLE_LINE = re.compile(
    r"([A-Za-z_][A-Za-z0-9_]*): (?:(0|[1-9][0-9]*)|([A-Za-z][A-Za-z0-9_]*(?: [A-Za-z0-9_]+)*))"
)
# what YAML 1.1 resolves a word starting with a letter to, when not a string
_YAML_WORDS = frozenset(
    {"yes", "Yes", "YES", "no", "No", "NO", "true", "True", "TRUE", "false", "False", "FALSE"}
    | {"on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL"}
)


def _simple_front_matter(content: str) -> dict[str, Any] | None:
    """Front matter made only of ``key: words`` and ``key: number`` lines as YAML reads
    it, without YAML (a third of parsing a short file went to building its loader); None
    for anything else (any other line, a word YAML reads as a boolean or null)."""
    out: dict[str, Any] = {}
    for line in content.split("\n"):
        m = _SIMPLE_LINE.fullmatch(line)
        if m is None:
            return None
        key, number, words = m.groups()
        if key in _YAML_WORDS or words in _YAML_WORDS:
            return None
        out[key] = words if number is None else int(number)
    return out or None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a front matter PyYAML cannot read: where in the file, what, how to fix
    (PyYAML's own message spans several lines and points into "<unicode string>")."""
    mark = getattr(exc, "problem_mark", None)
    # the block starts on the file's second line, after the opening ---
    where = f" at line {mark.line + 2}, column {mark.column + 1}" if mark is not None else ""
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    what = f"{context}: {what}" if context else what
    return (
        f"invalid YAML front matter{where} ({what}); fix the lines between the opening and "
        "closing --- (quote values holding ': ', '#', '[' or '{'), or remove the block"
    )


def _front_matter(token: Token, name: str) -> dict[str, Any]:
    simple = _simple_front_matter(token.content)
    if simple is not None:
        return simple
    try:
        data = yaml.load(token.content, Loader=_YAML_LOADER) or {}
    except yaml.YAMLError as exc:
        raise CorruptDocumentError(f"{name}: {_yaml_problem(exc)}") from None
    if not isinstance(data, dict):
        raise CorruptDocumentError(f"{name}: front matter must be a YAML mapping")
    return {str(k): v for k, v in data.items()}


# what front matter may expand to: real ones hold tens of values (a few hundred tags at
# most); YAML's aliases let a few hundred bytes stand for billions of them
MAX_FRONT_MATTER_VALUES = 10_000
MAX_FRONT_MATTER_DEPTH = 32


class _Budget:
    """Values left while front matter is turned into JSON; an alias counts each time it
    is used, as the JSON will hold it each time."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.left = MAX_FRONT_MATTER_VALUES

    def spend(self, depth: int) -> None:
        self.left -= 1
        if self.left < 0:
            raise CorruptDocumentError(
                f"{self.name}: the YAML front matter expands to more than "
                f"{MAX_FRONT_MATTER_VALUES} values (aliases repeating aliases); ragstore "
                "keeps front matter as the document's metadata: write the values out, or "
                "remove the block"
            )
        if depth > MAX_FRONT_MATTER_DEPTH:
            raise CorruptDocumentError(
                f"{self.name}: the YAML front matter is nested more than "
                f"{MAX_FRONT_MATTER_DEPTH} levels deep (or an alias refers to itself); "
                "flatten it, or remove the block"
            )


def _jsonable(value: Any, budget: _Budget, depth: int = 0) -> Any:
    """Front matter as JSON values, within ``budget``: PyYAML builds an alias once and
    shares it, so ``a: &a [x, x, x]``, ``b: &b [*a, *a, *a]`` ... eight lines deep loaded
    at once and then took minutes and 4 GB to copy out (a 500-byte upload), and a list
    holding itself never ended."""
    budget.spend(depth)
    if isinstance(value, dict):
        return {str(k): _jsonable(v, budget, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, budget, depth + 1) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)  # dates and other YAML scalars


_HEADING = re.compile(r"(#{1,6})(?: |$)")
_ORDERED = re.compile(r"[0-9]{1,9}[.)](?: |$)")
_OTHER_STARTS = frozenset("*-+_=>`~<[ ")  # a block other than a paragraph may start here


def _plain_tokens(text: str) -> list[Token] | None:
    """The tokens markdown-it gives a text made only of YAML front matter, ATX headings and
    paragraphs, found line by line; None when a line could start anything else (a list,
    quote, fence, table, HTML, indented code, setext heading, link definition, a closing
    ``#`` sequence), and markdown-it parses the text. Plain prose files (notes, abstracts,
    exported text) are most of a large load; markdown-it took about a quarter of their
    parse and chunk time, this a tenth of that."""
    if "|" in text or "\t" in text or "\r" in text or "\0" in text:
        return None
    lines = text.split("\n")
    tokens: list[Token] = []
    first = 0
    if lines[0] == "---":  # front matter: up to the first line that is exactly ---
        for n in range(1, len(lines)):
            if lines[n] == "---":
                break
            if lines[n].lstrip(" ").startswith(("-", "...")):
                return None
        else:
            return None
        content = "\n".join(lines[1:n])
        tokens.append(Token("front_matter", "", 0, map=[0, n + 1], content=content, block=True))
        first = n + 1
    para = -1  # first line of the open paragraph
    for n in range(first, len(lines) + 1):
        line = lines[n] if n < len(lines) else ""
        blank = not line.strip(" ")
        heading = None
        if not blank:
            if line[0] == "#":
                heading = _HEADING.match(line)
                if heading is None or line.rstrip().endswith("#"):
                    return None
            elif line[0] in _OTHER_STARTS or _ORDERED.match(line):
                return None
        if para >= 0 and (blank or heading is not None):
            tokens.append(Token("paragraph_open", "p", 1, map=[para, n], block=True))
            tokens.append(Token("inline", "", 0, map=[para, n], block=True))
            tokens.append(Token("paragraph_close", "p", -1, block=True))
            para = -1
        if heading is not None:
            level = len(heading.group(1))
            tag = f"h{level}"
            tokens.append(Token("heading_open", tag, 1, map=[n, n + 1], block=True))
            tokens.append(
                Token("inline", "", 0, map=[n, n + 1], content=line[level:].strip(), block=True)
            )
            tokens.append(Token("heading_close", tag, -1, block=True))
        elif not blank and para < 0:
            para = n
    return tokens


def parse_markdown(text: str, name: str) -> ParsedDocument:
    plain = _plain_tokens(text)
    tokens = _md.parse(text) if plain is None else plain
    lines = _line_offsets(text)
    blocks: list[Block] = []
    metadata: dict[str, Any] = {}
    path: list[tuple[int, str]] = []  # (level, heading text) of the open sections
    title: str | None = None

    def span(tok: Token) -> tuple[int, int]:
        assert tok.map is not None
        start, end = lines[tok.map[0]], lines[min(tok.map[1], len(lines) - 1)]
        return start, start + len(text[start:end].rstrip())

    def section() -> tuple[str, ...]:
        return tuple(h for _, h in path)

    def add_heading(level: int, heading: str, a: int, b: int) -> None:
        nonlocal title
        while path and path[-1][0] >= level:
            path.pop()
        blocks.append(
            Block(
                ChunkType.HEADING, heading or text[a:b], a, b, section_path=section(), level=level
            )
        )
        path.append((level, heading))
        if title is None and level == 1:
            title = heading

    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.type == "front_matter":
            metadata = _jsonable(_front_matter(tok, name), _Budget(name))
            # checked as every other write's metadata is: a key of 300 characters, or
            # nested keys whose dotted path is past MAX_KEY_CHARS, was stored where no
            # search filter could name it
            check_value(metadata, f"{name}: the YAML front matter", paths=True)
        elif tok.type == "heading_open" and tok.map:
            a, b = span(tok)
            add_heading(int(tok.tag[1:]), heading_text(tokens[i + 1].content), a, b)
            i += 3
            continue
        elif tok.level == 0 and tok.map and tok.type in ("paragraph_open", "html_block"):
            a, b = span(tok)
            if tok.type == "html_block" and _ONLY_COMMENTS.fullmatch(text[a:b]):
                i += 1  # an HTML comment is not shown to a reader: not indexed either
                continue
            html = html_heading(text[a:b]) if tok.type == "html_block" else None
            if html is not None:  # <h2>Limits</h2> is a heading, not a paragraph of markup
                add_heading(*html, a, b)
            else:
                blocks.append(Block(ChunkType.PARAGRAPH, text[a:b], a, b, section_path=section()))
        elif tok.level == 0 and tok.map and tok.type in ("fence", "code_block"):
            a, b = span(tok)
            lang = tok.info.strip().split()
            blocks.append(
                Block(
                    ChunkType.CODE,
                    text[a:b],
                    a,
                    b,
                    section_path=section(),
                    metadata={"language": lang[0]} if lang else {},
                )
            )
        elif tok.level == 0 and tok.map and tok.type in _CONTAINERS:
            a, b = span(tok)
            meta: dict[str, Any] = {}
            if tok.type == "table_open":
                rows = [ln for ln in text[a:b].split("\n") if ln.strip()]
                header = rows[0].strip().strip("|")
                meta = {
                    "rows": max(1, len(rows) - 1),
                    "columns": len(header.split("|")),
                    "header_lines": 2,
                }
            blocks.append(
                Block(_CONTAINERS[tok.type], text[a:b], a, b, section_path=section(), metadata=meta)
            )
            # skip to the matching close token
            close = tok.type.replace("_open", "_close")
            depth = 0
            while i < len(tokens):
                if tokens[i].type == tok.type:
                    depth += 1
                elif tokens[i].type == close:
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
        i += 1

    if isinstance(metadata.get("title"), str):
        title = metadata["title"]
    return ParsedDocument(
        format="markdown",
        title=title or PurePath(name).stem or None,
        blocks=[b for b in blocks if b.text.strip()],
        metadata=metadata,
    )
