"""Turn a parsed document's blocks into chunks that never exceed the model's token limit.

A block that fits becomes one chunk. One that does not is split by its kind:

- tables between rows, the header lines repeated on every piece;
- code and lists between lines (a single line longer than the limit is the only thing
  ever cut inside a line, and its pieces say so in ``metadata["line_split"]``);
- prose at a sentence end, a line break, then whitespace, found with the model's own
  tokenizer.

Huge blocks (a multi-megabyte line with no breaks) are tokenized in bounded windows and
no chunk is longer than ``max_tokens * CHARS_PER_TOKEN_CAP`` characters, so memory stays
proportional to a window, not to the file. Every chunk records its section path and its
parent: the heading chunk of the section it sits in. The limit is checked on what the
model reads (:attr:`Chunk.embed_text`) and re-checked after every split.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ragstore.models import Block, Chunk, ChunkType, ParsedDocument

_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}")
_LINE_TYPES = {ChunkType.CODE, ChunkType.TABLE, ChunkType.LIST}
CHARS_PER_TOKEN_CAP = 16  # no chunk is longer than this many characters per token of budget
WINDOW_CHARS = 1 << 16  # prose is tokenized at most this many characters at a time


class TokenCounter(Protocol):
    """The part of an embedder the chunker needs."""

    @property
    def special_tokens(self) -> int: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def token_spans(self, text: str) -> list[tuple[int, int]]: ...


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class _Piece:
    start: int  # span in the block's text
    end: int
    text: str  # what the chunk holds (a table piece adds the repeated header)
    metadata: dict[str, Any] = field(default_factory=dict)


def _cut_point(text: str, lo: int, hi: int, prefer_lines: bool) -> int:
    """Best place to end a piece within text[lo:hi]; ``hi`` when none is better."""
    window = text[lo:hi]
    half = len(window) // 3
    nl = window.rfind("\n")
    if prefer_lines and nl > 0:
        return lo + nl + 1
    if not prefer_lines:
        ends = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() > half]
        if ends:
            return lo + ends[-1]
        if nl > half:
            return lo + nl + 1
    ws = max(window.rfind(" "), window.rfind("\t"))
    if ws > 0:
        return lo + ws + 1
    return hi


def split_to_fit(text: str, limit: int, counter: TokenCounter,
                 prefer_lines: bool) -> list[tuple[int, int]]:
    """Char spans of ``text`` pieces with at most ``limit`` content tokens each."""
    spans = counter.token_spans(text)
    pieces: list[tuple[int, int]] = []
    t = 0
    start = 0
    while t < len(spans):
        if len(spans) - t <= limit:
            pieces.append((start, len(text)))
            break
        # the piece may end at the start of token t+limit at the latest
        hard_end = spans[t + limit][0]
        end = _cut_point(text, start, hard_end, prefer_lines)
        if end <= start:
            end = hard_end
        pieces.append((start, end))
        start = end
        while t < len(spans) and spans[t][0] < end:
            t += 1
    return _trimmed(text, pieces)


def _trimmed(text: str, pieces: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for a, b in pieces:
        seg = text[a:b]
        lead = len(seg) - len(seg.lstrip())
        body = seg.strip()
        if body:
            out.append((a + lead, a + lead + len(body)))
    return out


def _cap_chars(text: str, spans: list[tuple[int, int]], max_chars: int) -> list[tuple[int, int]]:
    """Spans no longer than ``max_chars``, cut at whitespace where there is any."""
    out: list[tuple[int, int]] = []
    for a, b in spans:
        while b - a > max_chars:
            cut = a + max_chars
            ws = max(text.rfind(" ", a, cut), text.rfind("\n", a, cut))
            if ws > a + max_chars // 2:
                cut = ws + 1
            out.append((a, cut))
            a = cut
        out.append((a, b))
    return _trimmed(text, out)


def split_prose(text: str, limit: int, counter: TokenCounter, max_chars: int,
                prefer_lines: bool = False) -> list[tuple[int, int]]:
    """:func:`split_to_fit` over bounded windows, then capped at ``max_chars``."""
    spans: list[tuple[int, int]] = []
    pos = 0
    while pos < len(text):
        end = min(len(text), pos + WINDOW_CHARS)
        if end < len(text):
            ws = max(text.rfind("\n", pos + WINDOW_CHARS // 2, end),
                     text.rfind(" ", pos + WINDOW_CHARS // 2, end))
            if ws > 0:
                end = ws + 1
        spans.extend((pos + a, pos + b)
                     for a, b in split_to_fit(text[pos:end], limit, counter, prefer_lines))
        pos = end
    return _cap_chars(text, spans, max_chars)


def _lines(text: str, start: int = 0) -> list[tuple[int, int]]:
    """(start, end) of each line of ``text[start:]``, newline excluded."""
    out = []
    pos = start
    while pos <= len(text):
        nl = text.find("\n", pos)
        end = len(text) if nl < 0 else nl
        out.append((pos, end))
        if nl < 0:
            break
        pos = nl + 1
    return out


def _unit_tokens(text: str, units: Sequence[tuple[int, int]], counter: TokenCounter,
                 max_chars: int) -> list[int]:
    """Content tokens of each unit; units too long to fit anyway are not tokenized."""
    big = max_chars * 2
    small = [i for i, (a, b) in enumerate(units) if b - a <= big]
    counts = counter.count_tokens([text[units[i][0]:units[i][1]] for i in small])
    out = [1 << 30] * len(units)
    for i, n in zip(small, counts, strict=True):
        out[i] = n - counter.special_tokens
    return out


def _pack(text: str, units: list[tuple[int, int]], budget: int, counter: TokenCounter,
          max_chars: int) -> list[_Piece]:
    """Whole units (lines, rows) packed greedily into pieces of at most ``budget`` tokens.

    A unit that alone is over the budget is split inside itself, flagged ``line_split``.
    """
    tokens = _unit_tokens(text, units, counter, max_chars)
    pieces: list[_Piece] = []
    group: list[int] = []
    used = 0

    def close() -> None:
        nonlocal used
        if group:
            a, b = units[group[0]][0], units[group[-1]][1]
            if text[a:b].strip():
                pieces.append(_Piece(a, b, text[a:b]))
        group.clear()
        used = 0

    for i, (a, b) in enumerate(units):
        n = tokens[i]
        if n > budget or b - a > max_chars:
            close()
            for x, y in split_prose(text[a:b], budget, counter, max_chars):
                pieces.append(_Piece(a + x, a + y, text[a + x:a + y], {"line_split": True}))
            continue
        span = units[group[0]][0] if group else a
        if group and (used + n > budget or b - span > max_chars):
            close()
        group.append(i)
        used += n
    close()
    return pieces


def _table_header(block: Block, lines: list[tuple[int, int]]) -> int:
    declared = block.metadata.get("header_lines")
    if isinstance(declared, int) and 0 < declared < len(lines):
        return declared
    if len(lines) > 2 and _TABLE_RULE.match(block.text[lines[1][0]:lines[1][1]]):
        return 2
    return 0


def _split_table(block: Block, budget: int, counter: TokenCounter,
                 max_chars: int) -> list[_Piece]:
    """Rows packed into pieces, the header lines repeated at the top of each."""
    text = block.text
    lines = _lines(text)
    h = _table_header(block, lines)
    header = text[:lines[h - 1][1]] if h else ""
    header_tokens = (counter.count_tokens([header])[0] - counter.special_tokens) if h else 0
    if not h or header_tokens > budget // 2 or len(header) > max_chars // 2:
        return _pack(text, lines, budget, counter, max_chars)
    pieces = _pack(text, lines[h:], budget - header_tokens - 1, counter,
                   max_chars - len(header) - 1)
    for piece in pieces:
        rows = text[piece.start:piece.end].count("\n") + 1
        piece.text = f"{header}\n{piece.text}"
        if not piece.metadata.get("line_split"):
            row_no = text[:piece.start].count("\n") + 1 - h
            piece.metadata.update({"header_repeated": True,
                                   "row_range": [row_no, row_no + rows - 1]})
    return pieces


def _split_block(block: Block, budget: int, counter: TokenCounter,
                 max_chars: int) -> list[_Piece]:
    if block.type is ChunkType.TABLE:
        return _split_table(block, budget, counter, max_chars)
    if block.type in _LINE_TYPES:
        return _pack(block.text, _lines(block.text), budget, counter, max_chars)
    return [_Piece(a, b, block.text[a:b])
            for a, b in split_prose(block.text, budget, counter, max_chars)]


def _context(section_path: tuple[str, ...], counter: TokenCounter, budget: int,
             cache: dict[tuple[str, ...], tuple[str, int]]) -> tuple[str, int]:
    """The section path as read by the model, and its tokens; long paths lose their top."""
    if section_path not in cache:
        parts = [p[:200] for p in section_path]
        while True:
            text = " > ".join(parts)
            tokens = counter.count_tokens([text])[0] - counter.special_tokens if text else 0
            if tokens <= budget or len(parts) <= 1:
                break
            parts.pop(0)
        if tokens > budget:
            text, tokens = "", 0
        cache[section_path] = (text, tokens)
    return cache[section_path]


def _with_context(context: str, text: str) -> str:
    return f"{context}\n{text}" if context else text


def chunk_document(doc: ParsedDocument, counter: TokenCounter, max_tokens: int) -> list[Chunk]:
    """Chunks for every block of ``doc``, each within ``max_tokens`` (special tokens included).

    The limit holds for what the model reads (:attr:`Chunk.embed_text`): the section path
    (at most a quarter of the budget) followed by the chunk's text.
    """
    limit = max_tokens - counter.special_tokens
    max_chars = max_tokens * CHARS_PER_TOKEN_CAP
    contexts: dict[tuple[str, ...], tuple[str, int]] = {}
    chunks: list[Chunk] = []
    headings: list[tuple[int, int]] = []  # (level, chunk ordinal) of open headings
    blocks = doc.blocks
    paths = list({b.section_path: None for b in blocks
                  if b.type is not ChunkType.HEADING and b.section_path})
    full = counter.count_tokens([" > ".join(p[:200] for p in path) for path in paths])
    for path, n in zip(paths, full, strict=True):  # one tokenizer call for the usual case
        if n - counter.special_tokens <= limit // 4:
            contexts[path] = (" > ".join(p[:200] for p in path), n - counter.special_tokens)
    ctx = [("", 0) if b.type is ChunkType.HEADING
           else _context(b.section_path, counter, limit // 4, contexts) for b in blocks]
    # blocks far too long to fit are not tokenized whole: they are split in windows
    countable = [i for i, b in enumerate(blocks) if len(b.text) <= max_chars]
    counts = [max_tokens + 1] * len(blocks)
    for i, n in zip(countable, counter.count_tokens(
            [_with_context(ctx[i][0], blocks[i].text) for i in countable]), strict=True):
        counts[i] = n

    for block, (context, ctx_tokens), count in zip(blocks, ctx, counts, strict=True):
        if block.type is ChunkType.HEADING:
            while headings and headings[-1][0] >= block.level:
                headings.pop()
        parent = headings[-1][1] if headings else None
        if count <= max_tokens:
            pieces = [_Piece(0, len(block.text), block.text)]
            piece_counts = [count]
        else:
            pieces = _split_block(block, limit - ctx_tokens - 1, counter, max_chars)
            piece_counts = counter.count_tokens([_with_context(context, p.text) for p in pieces])
            pieces, piece_counts = _enforce(pieces, piece_counts, context, ctx_tokens, limit,
                                            max_tokens, counter, max_chars)
        for part, (piece, tokens) in enumerate(zip(pieces, piece_counts, strict=True), start=1):
            meta = dict(block.metadata)
            meta.update(piece.metadata)
            if len(pieces) > 1:
                meta["part"] = part
            chunk = Chunk(
                ordinal=len(chunks), chunk_type=block.type, text=piece.text,
                section_path=block.section_path, parent_ordinal=parent,
                char_start=block.char_start + piece.start,
                char_end=block.char_start + piece.end,
                token_count=tokens, content_hash="", page=block.page, metadata=meta,
                context=context,
            )
            chunk.content_hash = content_hash(chunk.embed_text)
            chunks.append(chunk)
        if block.type is ChunkType.HEADING:
            headings.append((block.level, len(chunks) - 1))
    return chunks


def _enforce(pieces: list[_Piece], counts: list[int], context: str, ctx_tokens: int, limit: int,
             max_tokens: int, counter: TokenCounter,
             max_chars: int) -> tuple[list[_Piece], list[int]]:
    """Re-split any piece the tokenizer still counts over the limit (a join of lines can
    tokenize differently from the lines alone); loops until every piece fits."""
    budget = limit - ctx_tokens - 1
    while any(n > max_tokens for n in counts):
        budget = max(1, budget - max(1, budget // 8))
        out: list[_Piece] = []
        for piece, n in zip(pieces, counts, strict=True):
            if n <= max_tokens:
                out.append(piece)
                continue
            for a, b in split_prose(piece.text, budget, counter, max_chars, prefer_lines=True):
                out.append(_Piece(piece.start + min(a, piece.end - piece.start),
                                  piece.start + min(b, piece.end - piece.start),
                                  piece.text[a:b], dict(piece.metadata)))
        pieces = out
        counts = counter.count_tokens([_with_context(context, p.text) for p in pieces])
    return pieces, counts
