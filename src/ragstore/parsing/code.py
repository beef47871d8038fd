"""Source code: one block per top-level definition, never cut inside a line.

Python is split with the standard library's own parser (:mod:`ast`): each top-level
statement spans exact lines, decorators included. Other languages are lexed with
Pygments, so brackets inside strings and comments do not count: a top-level unit starts
on a line at bracket depth 0 that follows a blank line or a closed block. Runs of small
statements that define nothing (imports, constants) are kept together in one block.
"""

from __future__ import annotations

import ast
import bisect
from dataclasses import dataclass
from pathlib import PurePath

from pygments.lexer import Lexer
from pygments.lexers import get_lexer_by_name
from pygments.token import Comment, Keyword, Name, String, Token
from pygments.util import ClassNotFound

from ragstore.formats import CODE_SUFFIXES
from ragstore.models import Block, ChunkType, ParsedDocument

_SHEBANGS = {
    "python": "python",
    "python3": "python",
    "bash": "bash",
    "sh": "bash",
    "zsh": "bash",
    "node": "javascript",
    "ruby": "ruby",
    "php": "php",
}
_DEFINING_KEYWORDS = {
    "def",
    "class",
    "func",
    "fn",
    "function",
    "struct",
    "enum",
    "trait",
    "impl",
    "interface",
    "type",
    "module",
    "create",
    "procedure",
}
_OPEN, _CLOSE = set("([{"), set(")]}")


def language_from_shebang(first_line: bytes) -> str | None:
    """``#!/usr/bin/env python3`` -> ``python``; None when the interpreter is unknown."""
    words = first_line[2:].decode("utf-8", "replace").split()
    if not words:
        return None
    prog = PurePath(words[0]).name
    if prog == "env" and len(words) > 1:
        prog = words[1]
    return _SHEBANGS.get(prog.rstrip("0123456789.") or prog, _SHEBANGS.get(prog))


def detect_language(name: str, text: str) -> str:
    by_suffix = CODE_SUFFIXES.get(PurePath(name).suffix.lower())
    if by_suffix:
        return by_suffix
    if text.startswith("#!"):
        found = language_from_shebang(text.split("\n", 1)[0].encode())
        if found:
            return found
    return "text"


@dataclass
class _Unit:
    first: int  # first line (0-based)
    last: int  # last line, inclusive
    symbol: str | None  # the name it defines, if any


def _python_units(text: str) -> list[_Unit] | None:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        # not Python the compiler takes (MemoryError and RecursionError: nesting past its
        # parser's limits): cut by lines like any other source
        return None
    units: list[_Unit] = []
    for node in tree.body:
        first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        last = node.end_lineno or node.lineno
        symbol = getattr(node, "name", None)
        units.append(_Unit(first - 1, last - 1, symbol if isinstance(symbol, str) else None))
    return _cover_gaps(units, text.split("\n"))


def _cover_gaps(units: list[_Unit], lines: list[str]) -> list[_Unit]:
    """Comments directly above a unit join it; other lines between units become units."""
    out: list[_Unit] = []
    prev_last = -1
    for unit in units:
        first = unit.first
        while first - 1 > prev_last and lines[first - 1].strip().startswith("#"):
            first -= 1
        gap = [i for i in range(prev_last + 1, first) if lines[i].strip()]
        if gap:
            out.append(_Unit(gap[0], gap[-1], None))
        out.append(_Unit(first, unit.last, unit.symbol))
        prev_last = unit.last
    tail = [i for i in range(prev_last + 1, len(lines)) if lines[i].strip()]
    if tail:
        out.append(_Unit(tail[0], tail[-1], None))
    return out


def _lexed_units(text: str, lexer: Lexer, lines: list[str]) -> list[_Unit]:
    """Top-level units from bracket depth and blank lines, with Pygments telling code from
    strings and comments."""
    n = len(lines)
    depth_at_start = [0] * (n + 1)
    symbol_on: dict[int, str] = {}
    defining_on: set[int] = set()
    depth = 0
    line = 0
    for ttype, value in lexer.get_tokens(text):
        if ttype not in String and ttype not in Comment:
            if ttype in Name.Function or ttype in Name.Class:
                symbol_on.setdefault(line, value)
            elif ttype in Keyword and value.lower() in _DEFINING_KEYWORDS and depth == 0:
                defining_on.add(line)
            elif ttype in Token.Punctuation or ttype in Token.Operator:
                for ch in value:
                    if ch in _OPEN:
                        depth += 1
                    elif ch in _CLOSE:
                        depth = max(0, depth - 1)
        breaks = value.count("\n")
        for _ in range(breaks):
            line += 1
            if line <= n:
                depth_at_start[line] = depth
    units: list[_Unit] = []
    start: int | None = None
    for i, content in enumerate(lines):
        blank = not content.strip()
        if start is None:
            if not blank:
                start = i
            continue
        prev = lines[i - 1].rstrip()
        new_top = (
            depth_at_start[i] == 0
            and not blank
            and not content[:1].isspace()
            and not content.lstrip().startswith(("{", ")", "]"))
            and (not prev.strip() or (depth_at_start[i - 1] > 0 and prev.endswith("}")))
        )
        if new_top:
            last = i - 1
            while last > start and not lines[last].strip():
                last -= 1
            units.append(_Unit(start, last, None))
            start = i
    if start is not None:
        last = n - 1
        while last > start and not lines[last].strip():
            last -= 1
        units.append(_Unit(start, last, None))
    for unit in units:
        for ln in range(unit.first, unit.last + 1):
            if ln in symbol_on:
                unit.symbol = symbol_on[ln]
                break
            if ln in defining_on and unit.symbol is None:
                words = lines[ln].split()
                unit.symbol = words[1].split("(")[0] if len(words) > 1 else words[0]
                break
    return units


def _merge_plain(units: list[_Unit]) -> list[_Unit]:
    """Keep definitions apart; join neighbouring statements that define nothing."""
    out: list[_Unit] = []
    for unit in units:
        if out and unit.symbol is None and out[-1].symbol is None:
            out[-1].last = unit.last
        else:
            out.append(unit)
    return out


def parse_code(text: str, name: str) -> ParsedDocument:
    language = detect_language(name, text)
    lines = text.split("\n")
    offsets = [0]
    for content in lines:
        offsets.append(offsets[-1] + len(content) + 1)
    units = _python_units(text) if language == "python" else None
    if units is None:
        try:
            lexer = get_lexer_by_name(language, stripnl=False, ensurenl=False)
        except ClassNotFound:
            lexer = get_lexer_by_name("text", stripnl=False, ensurenl=False)
        units = _lexed_units(text, lexer, lines)
    blocks: list[Block] = []
    for unit in _merge_plain(units):
        a = offsets[unit.first]
        b = min(offsets[unit.last + 1] - 1, len(text))
        body = text[a:b].rstrip()
        if not body.strip():
            continue
        meta: dict[str, object] = {"language": language, "lines": [unit.first + 1, unit.last + 1]}
        if unit.symbol:
            meta["symbol"] = unit.symbol
        blocks.append(Block(ChunkType.CODE, body, a, a + len(body), metadata=meta))
    return ParsedDocument(
        format="code",
        title=PurePath(name).name or None,
        blocks=blocks,
        metadata={"language": language},
    )


def line_of(offsets: list[int], char: int) -> int:
    """0-based line holding character ``char`` (for callers that map spans back to lines)."""
    return bisect.bisect_right(offsets, char) - 1
