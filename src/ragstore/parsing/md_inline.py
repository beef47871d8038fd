"""A Markdown heading's text as a reader sees it, without markdown-it's inline parser.

Markdown is parsed for its block structure only (markdown.py: inline parsing is where
markdown-it is superlinear on hostile text), so a heading's text came as typed:
``Configuring **flow limits** [¶](#flow)``, ``The `pxctl` CLI {#pxctl}``. That text is the
heading chunk's text, every section path under it and the document's title, read by the
model, BM25 and whoever reads a hit. Here emphasis markers, images, links (their text kept;
a permalink such as ``[¶](#flow)`` dropped), inline HTML tags and ``{#id}`` / ``{.class}``
attribute blocks go, entities and backslash escapes are read. Code spans stay as they are,
backticks included: the model reads them as a sign of an API name (nodejs-api's headings
are full of them; dropping them moved its figures).

Every pattern here scans from an opening mark to the next mark of its kind at most, so a
heading costs time in proportion to its length; past :data:`MAX_HEADING_CHARS` (no real
heading) only its white space is collapsed.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable
from html import unescape

MAX_HEADING_CHARS = 2000

_BACKTICKS = re.compile(r"`+")
_MARKUP = re.compile(r"[\\`{\[<*_~&]")
# placeholders for code spans and escaped characters: Unicode's private use plane 15
_PRIVATE = re.compile("[\U000f0000-\U000fffff]")
_ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")
# {#id}, {.class}, {#id .class key=value} (Pandoc, MkDocs), {: #id} (kramdown) at the end
_ATTRIBUTES = re.compile(r"\{:?[ \t]*[#.][^{}]*\}[ \t]*$")
_IMAGE = re.compile(r"!\[[^\[\]]*\](?:\([^()]*\)|\[[^\[\]]*\])")
_LINK = re.compile(r"\[([^\[\]]*)\](?:\([^()]*\)|\[[^\[\]]*\])")
_TAG = re.compile(
    r"</?(?:a|abbr|b|big|br|cite|code|del|em|i|img|ins|kbd|mark|q|s|samp|small|span|strong"
    r"|sub|sup|tt|u|var|wbr)\b[^<>]*>",
    re.IGNORECASE,
)
_STARS = re.compile(r"(\*{1,3})([^*\s](?:[^*]*[^*\s])?)\1")
# "_" emphasis only between words, as CommonMark has it: snake_case_names stay whole
_UNDERSCORES = re.compile(r"(?<![^\W_])(_{1,3})([^_\s](?:[^_]*[^_\s])?)\1(?![^\W_])")
_TILDES = re.compile(r"~~([^~\s](?:[^~]*[^~\s])?)~~")
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_HTML_HEADING = re.compile(
    r"\s*<h([1-6])(?:\s[^<>]*)?>([^<]*(?:<(?!/h[1-6]\s*>)[^<]*)*)</h\1\s*>\s*", re.IGNORECASE
)
_ANY_TAG = re.compile(r"<[^<>]*>")


def heading_text(raw: str) -> str:
    """``raw`` (a heading's inline content) without its inline markup, code spans kept."""
    if (
        len(raw) > MAX_HEADING_CHARS
        or _MARKUP.search(raw) is None  # most headings: nothing to do but this look
        or _PRIVATE.search(raw)
    ):
        return " ".join(raw.split())
    kept: list[str] = []

    def keep(piece: str) -> str:
        kept.append(piece)
        return chr(0xF0000 + len(kept) - 1)

    text = _code_spans(raw, keep) if "`" in raw else raw
    if "\\" in text:
        text = _ESCAPED.sub(lambda m: keep(m.group(1)), text)
    if "{" in text:
        text = _ATTRIBUTES.sub("", text)
    if "[" in text:
        text = _IMAGE.sub("", text)
        text = _LINK.sub(lambda m: m.group(1) if _readable(m.group(1)) else "", text)
    if "<" in text:
        text = _TAG.sub("", text)
    for _ in range(3):  # ***a**, **a *b***: one layer a pass
        before = text
        if "*" in text:
            text = _STARS.sub(r"\2", text)
        if "_" in text:
            text = _UNDERSCORES.sub(r"\2", text)
        if "~" in text:
            text = _TILDES.sub(r"\1", text)
        if text == before:
            break
    if "&" in text:
        text = _ENTITY.sub(lambda m: unescape(m.group(0)), text)
    if kept:
        text = _PRIVATE.sub(lambda m: kept[ord(m.group(0)) - 0xF0000], text)
    return " ".join(text.split()) or " ".join(raw.split())


def html_heading(block: str) -> tuple[int, str] | None:
    """(level, text) when an HTML block is one ``<h1>`` ... ``<h6>`` element of a
    heading's length; None for any other block, which stays a paragraph."""
    if len(block) > MAX_HEADING_CHARS:
        return None
    m = _HTML_HEADING.fullmatch(block)
    if m is None:
        return None
    text = " ".join(unescape(_ANY_TAG.sub("", m.group(2))).split())
    return (int(m.group(1)), text) if text else None


def _code_spans(text: str, keep: Callable[[str], str]) -> str:
    """``text`` with each code span (a run of backticks to the next run as long) replaced
    by ``keep(span)``; a run with no partner is literal backticks, as CommonMark says."""
    runs = [(m.start(), m.end()) for m in _BACKTICKS.finditer(text)]
    if len(runs) < 2:
        return text
    by_length: dict[int, list[int]] = {}
    for n, (a, b) in enumerate(runs):
        by_length.setdefault(b - a, []).append(n)
    out: list[str] = []
    pos = n = 0
    while n < len(runs):
        a, b = runs[n]
        same = by_length[b - a]
        at = bisect_right(same, n)
        if at == len(same):
            n += 1
            continue
        close = same[at]
        out.append(text[pos:a])
        out.append(keep(text[a : runs[close][1]]))
        pos = runs[close][1]
        n = close + 1
    out.append(text[pos:])
    return "".join(out)


def _readable(link_text: str) -> bool:
    """Whether a link's text says something: ``[¶](#id)``, ``[#](#id)`` only point."""
    return any(ch.isalnum() or ch >= "\U000f0000" for ch in link_text)
