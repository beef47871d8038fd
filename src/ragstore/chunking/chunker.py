"""Turn a parsed document's blocks into chunks that never exceed the model's token limit.

A block that fits becomes one chunk. A block that does not is cut at token boundaries
found with the model's own tokenizer, preferring (in order) a line break for code and
tables, a sentence end, then whitespace. Every chunk records its section path and its
parent: the heading chunk of the section it sits in.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Protocol

from ragstore.models import Chunk, ChunkType, ParsedDocument

_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s")
_LINE_TYPES = {ChunkType.CODE, ChunkType.TABLE, ChunkType.LIST}


class TokenCounter(Protocol):
    """The part of an embedder the chunker needs."""

    @property
    def special_tokens(self) -> int: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def token_spans(self, text: str) -> list[tuple[int, int]]: ...


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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
    out = []
    for a, b in pieces:
        seg = text[a:b]
        lead = len(seg) - len(seg.lstrip())
        body = seg.strip()
        if body:
            out.append((a + lead, a + lead + len(body)))
    return out


def _context(section_path: tuple[str, ...], counter: TokenCounter, budget: int,
             cache: dict[tuple[str, ...], tuple[str, int]]) -> tuple[str, int]:
    """The section path as read by the model, and its tokens; long paths lose their top."""
    if section_path not in cache:
        parts = list(section_path)
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


def chunk_document(doc: ParsedDocument, counter: TokenCounter, max_tokens: int) -> list[Chunk]:
    """Chunks for every block of ``doc``, each within ``max_tokens`` (special tokens included).

    The limit holds for what the model reads (:attr:`Chunk.embed_text`): the section path
    (at most a quarter of the budget) followed by the chunk's text.
    """
    limit = max_tokens - counter.special_tokens
    contexts: dict[tuple[str, ...], tuple[str, int]] = {}
    chunks: list[Chunk] = []
    headings: list[tuple[int, int]] = []  # (level, chunk ordinal) of open headings
    blocks = doc.blocks
    ctx = [("", 0) if b.type is ChunkType.HEADING
           else _context(b.section_path, counter, limit // 4, contexts) for b in blocks]
    counts = counter.count_tokens([f"{c}\n{b.text}" if c else b.text
                                   for b, (c, _) in zip(blocks, ctx, strict=True)])

    for block, (context, ctx_tokens), count in zip(blocks, ctx, counts, strict=True):
        if block.type is ChunkType.HEADING:
            while headings and headings[-1][0] >= block.level:
                headings.pop()
        parent = headings[-1][1] if headings else None
        if count <= max_tokens:
            pieces = [(0, len(block.text))]
            piece_counts: list[int] | None = [count]
        else:
            pieces = split_to_fit(block.text, limit - ctx_tokens - 1, counter,
                                  block.type in _LINE_TYPES)
            piece_counts = None
        texts = [block.text[a:b] for a, b in pieces]
        if piece_counts is None:
            piece_counts = counter.count_tokens([f"{context}\n{t}" if context else t
                                                 for t in texts])
        for part, ((a, b), text, tokens) in enumerate(
                zip(pieces, texts, piece_counts, strict=True), start=1):
            meta = dict(block.metadata)
            if len(pieces) > 1:
                meta["part"] = part
            chunk = Chunk(
                ordinal=len(chunks), chunk_type=block.type, text=text,
                section_path=block.section_path, parent_ordinal=parent,
                char_start=block.char_start + a, char_end=block.char_start + b,
                token_count=tokens, content_hash="", page=block.page, metadata=meta,
                context=context,
            )
            chunk.content_hash = content_hash(chunk.embed_text)
            chunks.append(chunk)
        if block.type is ChunkType.HEADING:
            headings.append((block.level, len(chunks) - 1))
    return chunks
