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
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any, Protocol

from ragstore.embedding.base import TokenEncoding, TokenIndex
from ragstore.models import Block, Chunk, ChunkType, ParsedDocument

_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s")
# a header rule: "---", "| --- |", ":--"; the bar's own whitespace is taken after it only
# (r"^\s*\|?\s*..." tried every split of a run of spaces between its two \s*: minutes
# for a line of 100,000 spaces)
_TABLE_RULE = re.compile(r"^\s*(?:\|\s*)?:?-{3,}")
_LINE_TYPES = {ChunkType.CODE, ChunkType.TABLE, ChunkType.LIST}
CHARS_PER_TOKEN_CAP = 16  # no chunk is longer than this many characters per token of budget
WINDOW_CHARS = 1 << 16  # prose is tokenized at most this many characters at a time
CHUNKING_VERSION = 12  # in every document's content hash (document_hash): bump on any change


class TokenCounter(Protocol):
    """The part of an embedder the chunker needs."""

    @property
    def special_tokens(self) -> int: ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def token_spans(self, text: str) -> list[tuple[int, int]]: ...


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def document_hash(
    data: bytes, metadata: Mapping[str, Any] | None = None, passage_prefix: str = ""
) -> str:
    """The stored content hash of a document: its bytes and the chunking version, so that
    after an upgrade that chunks differently an unchanged file is not skipped as
    unchanged but re-chunked (and only its chunks whose text changed are re-embedded).

    ``metadata``: what its writer said of it (``ingest --meta``, an upload's metadata).
    A write decides "unchanged" by this hash alone, so new metadata on the same bytes
    was answered as stored and dropped; now it makes the write an update, whose chunks
    keep their vectors. Without any, the hash is that of the bytes, as before.

    ``passage_prefix``: the collection's model's (``passage: `` for e5), which takes part
    of every chunk's token budget. Chunks stored before the chunker counted it were cut
    to the full limit and the model cuts their tails off; with the prefix in the hash, an
    unchanged file of such a collection is cut again at its next ingest instead of
    being skipped as unchanged (its chunks whose text is the same keep their vectors).
    Without a prefix (most models) the hash is as before."""
    digest = hashlib.sha256(f"ragstore-chunking-{CHUNKING_VERSION}\n".encode())
    if passage_prefix:
        digest.update(b"passage-prefix\0" + passage_prefix.encode("utf-8", "surrogatepass"))
    digest.update(data)
    if metadata:
        said = json.dumps(
            metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
        )
        digest.update(b"\0metadata\0" + said.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


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


def split_to_fit(
    text: str,
    limit: int,
    counter: TokenCounter,
    prefer_lines: bool,
    tokens: TokenIndex | None = None,
) -> list[tuple[int, int]]:
    """Char spans of ``text`` pieces with at most ``limit`` content tokens each.

    ``tokens`` index ``counter.token_spans(text)`` when the caller has them already.
    Else they are read from the counter's :meth:`token_encodings` where it has them (a
    BERT tokenizer's word cache: an eighth of the cost of the spans made token by token,
    the most of splitting a block of 64 KB of ``[`` or of other one-character tokens),
    and asked of :meth:`token_spans` otherwise.
    """
    if tokens is None:
        encs = _encodings(counter, [text], [True])
        tokens = encs[0].index if encs is not None else TokenIndex(counter.token_spans(text))
    n = len(tokens)
    pieces: list[tuple[int, int]] = []
    t = 0
    start = 0
    while t < n:
        if n - t <= limit:
            pieces.append((start, len(text)))
            break
        # the piece may end at the start of token t+limit at the latest
        hard_end = tokens.start(t + limit)
        end = _cut_point(text, start, hard_end, prefer_lines)
        if end <= start:
            end = hard_end
        pieces.append((start, end))
        start = end
        t = tokens.advance(t, end)
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


def split_prose(
    text: str,
    limit: int,
    counter: TokenCounter,
    max_chars: int,
    prefer_lines: bool = False,
    tokens: TokenIndex | None = None,
) -> list[tuple[int, int]]:
    """:func:`split_to_fit` over bounded windows, then capped at ``max_chars``.

    ``tokens``: the index of ``counter.token_spans(text)`` if known (used when one window
    holds it all).
    """
    known = tokens if len(text) <= WINDOW_CHARS else None
    spans: list[tuple[int, int]] = []
    pos = 0
    while pos < len(text):
        end = min(len(text), pos + WINDOW_CHARS)
        if end < len(text):
            ws = max(
                text.rfind("\n", pos + WINDOW_CHARS // 2, end),
                text.rfind(" ", pos + WINDOW_CHARS // 2, end),
            )
            if ws > 0:
                end = ws + 1
        window = text if known is not None else text[pos:end]
        spans.extend(
            (pos + a, pos + b) for a, b in split_to_fit(window, limit, counter, prefer_lines, known)
        )
        pos = end
    return _cap_chars(text, spans, max_chars)


def _lines(text: str, start: int = 0) -> list[tuple[int, int]]:
    """(start, end) of each line of ``text[start:]``, newline excluded.

    From one ``split`` and the lines' lengths: a loop of ``find`` calls was a fifth of
    the time of chunking a file of two-character lines (4 MB of ``{``)."""
    if start > len(text):
        return []
    lines = text[start:].split("\n")
    starts = accumulate((len(line) + 1 for line in lines), initial=start)
    return [(a, a + len(line)) for a, line in zip(starts, lines, strict=False)]  # one more start


def _unit_tokens(
    text: str, units: Sequence[tuple[int, int]], counter: TokenCounter, max_chars: int
) -> list[int]:
    """Content tokens of each unit; units too long to fit anyway are not tokenized."""
    big = max_chars * 2
    small = [i for i, (a, b) in enumerate(units) if b - a <= big]
    counts = counter.count_tokens([text[units[i][0] : units[i][1]] for i in small])
    out = [1 << 30] * len(units)
    special = counter.special_tokens  # a property: read once, not once a line
    for i, n in zip(small, counts, strict=True):
        out[i] = n - special
    return out


def _pack(
    text: str, units: list[tuple[int, int]], budget: int, counter: TokenCounter, max_chars: int
) -> list[_Piece]:
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
                pieces.append(_Piece(a + x, a + y, text[a + x : a + y], {"line_split": True}))
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
    if len(lines) > 2 and _TABLE_RULE.match(block.text[lines[1][0] : lines[1][1]]):
        return 2
    return 0


def _split_table(block: Block, budget: int, counter: TokenCounter, max_chars: int) -> list[_Piece]:
    """Rows packed into pieces, the header lines repeated at the top of each."""
    text = block.text
    lines = _lines(text)
    h = _table_header(block, lines)
    header = text[: lines[h - 1][1]] if h else ""
    header_tokens = (counter.count_tokens([header])[0] - counter.special_tokens) if h else 0
    if not h or header_tokens > budget // 2 or len(header) > max_chars // 2:
        return _pack(text, lines, budget, counter, max_chars)
    pieces = _pack(
        text, lines[h:], budget - header_tokens - 1, counter, max_chars - len(header) - 1
    )
    # line breaks before each piece, counted on from the last piece's start (pieces are in
    # order): counting from the top for each piece took minutes on a table of many rows
    seen = breaks = 0
    for piece in pieces:
        rows = text[piece.start : piece.end].count("\n") + 1
        piece.text = f"{header}\n{piece.text}"
        breaks += text.count("\n", seen, piece.start)
        seen = piece.start
        if not piece.metadata.get("line_split"):
            row_no = breaks + 1 - h
            piece.metadata.update(
                {"header_repeated": True, "row_range": [row_no, row_no + rows - 1]}
            )
    return pieces


def _split_block(
    block: Block,
    budget: int,
    counter: TokenCounter,
    max_chars: int,
    enc: TokenEncoding | None = None,
) -> list[_Piece]:
    if block.type is ChunkType.TABLE:
        return _split_table(block, budget, counter, max_chars)
    if block.type in _LINE_TYPES:
        return _pack(block.text, _lines(block.text), budget, counter, max_chars)
    index = enc.index if enc is not None else None
    return [
        _Piece(a, b, block.text[a:b])
        for a, b in split_prose(block.text, budget, counter, max_chars, tokens=index)
    ]


def _tokens_between(enc: TokenEncoding, a: int, b: int) -> int | None:
    """Content tokens of ``text[a:b]`` read from the whole text's encoding, or None when a
    cut falls inside a word (a token straddles it, or the tokens on its two sides belong
    to one word): only a text cut between words tokenizes alone as it does in place."""
    index = enc.index
    ka, kb = index.before(a), index.before(b)
    for cut, k in ((a, ka), (b, kb)):
        if k > 0 and index.end(k - 1) > cut:
            return None
        if 0 < k < len(index) and index.joined(k):
            return None
    return kb - ka


def _encodings(
    counter: TokenCounter, texts: list[str], indexed: list[bool]
) -> list[TokenEncoding] | None:
    """The counter's :meth:`token_encodings` of ``texts`` if it has them; ``indexed``
    says which of them the chunker may read the index of."""
    encode: Callable[[list[str], list[bool]], list[TokenEncoding] | None] | None = getattr(
        counter, "token_encodings", None
    )
    return encode(texts, indexed) if encode is not None and texts else None


def _context(
    section_path: tuple[str, ...],
    counter: TokenCounter,
    budget: int,
    cache: dict[tuple[str, ...], tuple[str, int]],
) -> tuple[str, int]:
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


PACK_SEPARATOR = "\n\n"


TINY_SECTION_SHARE = 4  # a section under 1/4 of the budget may join the chunk before it


@dataclass
class _Part:
    """A block, a piece of one, or a heading line inside a merged chunk, with its content
    tokens (no special tokens, no context)."""

    block: int
    piece: _Piece
    tokens: int
    part: int = 0  # 1-based number of this piece in its block; 0 for a whole block
    heading: bool = False
    alone: bool = False  # kept a chunk of its own (see _stands_alone)


def _stands_alone(block: Block) -> bool:
    """Tables, and blocks a parser gave an identity of their own (a code file's function
    with its symbol, ...), stay chunks of their own: merging would lose what they are."""
    return block.type is ChunkType.TABLE or not set(block.metadata) <= {"language"}


def _heading_line(block: Block) -> str:
    """A heading as a merged chunk shows it: a Markdown heading line of its level."""
    return f"{'#' * max(1, min(block.level, 6))} {' '.join(block.text.split())}"


def _reserve(context: tuple[str, int]) -> int:
    """Tokens a chunk gives its context: the path and one for the line break after it."""
    return context[1] + 1 if context[0] else 0


def _block_parts(
    doc: ParsedDocument,
    counter: TokenCounter,
    ctx: list[tuple[str, int]],
    limit: int,
    max_chars: int,
) -> list[_Part]:
    """Every block as one part when it fits with its context, else its pieces; headings
    as the line a merged chunk would show.

    Blocks are counted in one tokenizer call; pieces of split blocks in one more.
    """
    blocks = doc.blocks
    texts = [_heading_line(b) if b.type is ChunkType.HEADING else b.text for b in blocks]
    countable = [i for i, t in enumerate(texts) if len(t) <= max_chars]
    counts = [limit + 1] * len(blocks)
    # only a prose block split here has its index read: one of no more characters than
    # its budget has no more tokens (a plain text's tokens cover a character or more)
    # and fits; this only spares the tokenizer preparing what is not read
    indexed = [
        blocks[i].type not in _LINE_TYPES
        and blocks[i].type is not ChunkType.HEADING
        and len(texts[i]) + _reserve(ctx[i]) > limit
        for i in countable
    ]
    encs = _encodings(counter, [texts[i] for i in countable], indexed)
    enc_of: dict[int, TokenEncoding] = {}
    special = counter.special_tokens  # a property: read once, not once a block
    if encs is not None:
        for i, enc in zip(countable, encs, strict=True):
            counts[i] = enc.count - special
            enc_of[i] = enc
    else:
        for i, n in zip(
            countable, counter.count_tokens([texts[i] for i in countable]), strict=True
        ):
            counts[i] = n - special
    parts: list[_Part] = []
    split: dict[int, list[_Piece]] = {}
    for i, block in enumerate(blocks):
        if block.type is ChunkType.HEADING:
            parts.append(_Part(i, _Piece(0, len(block.text), texts[i]), counts[i], heading=True))
        elif counts[i] + _reserve(ctx[i]) <= limit:
            parts.append(
                _Part(
                    i, _Piece(0, len(block.text), block.text), counts[i], alone=_stands_alone(block)
                )
            )
        else:
            split[i] = _split_block(block, limit - ctx[i][1] - 1, counter, max_chars, enc_of.get(i))
    if not split:
        return parts
    flat = [(i, p) for i, pieces in split.items() for p in pieces]
    sizes = _piece_sizes(blocks, flat, enc_of, ctx, counter)
    first = 0  # where this block's pieces start in sizes (not sizes[n:]: a copy per block)
    for i, pieces in split.items():
        n = len(pieces)
        pieces, piece_counts = _enforce(
            pieces,
            sizes[first : first + n],
            ctx[i][0],
            ctx[i][1],
            limit,
            limit + special,
            counter,
            max_chars,
        )
        first += n
        alone = _stands_alone(blocks[i])
        parts.extend(
            _Part(
                i,
                p,
                c - special - ctx[i][1],
                j if len(pieces) > 1 else 0,
                alone=alone,
            )
            for j, (p, c) in enumerate(zip(pieces, piece_counts, strict=True), 1)
        )
    parts.sort(key=lambda p: (p.block, p.piece.start))
    return parts


def _piece_sizes(
    blocks: list[Block],
    flat: list[tuple[int, _Piece]],
    enc_of: dict[int, TokenEncoding],
    ctx: list[tuple[str, int]],
    counter: TokenCounter,
) -> list[int]:
    """Tokens of each split piece with its context, as the model reads it.

    Where joins add up (:attr:`Embedder.joins_add_up`), a prose piece cut between words
    takes its context's tokens plus its own, counted off its block's encoding; any other
    piece is tokenized (one call for all of them).
    """
    known: dict[int, int] = {}
    special = counter.special_tokens
    if getattr(counter, "joins_add_up", False):
        for k, (i, p) in enumerate(flat):
            enc = enc_of.get(i)
            block = blocks[i]
            if enc is None or block.type in _LINE_TYPES or p.text != block.text[p.start : p.end]:
                continue
            n = _tokens_between(enc, p.start, p.end)
            if n is not None:
                known[k] = special + ctx[i][1] + n
    rest = [k for k in range(len(flat)) if k not in known]
    counted = counter.count_tokens(
        [_with_context(ctx[flat[k][0]][0], flat[k][1].text) for k in rest]
    )
    known.update(zip(rest, counted, strict=True))
    return [known[k] for k in range(len(flat))]


def _packs(
    parts: list[_Part],
    paths: list[tuple[str, ...]],
    pages: list[int | None],
    ctx: list[tuple[str, int]],
    limit: int,
    max_chars: int,
) -> list[list[_Part]]:
    """Consecutive parts merged greedily up to ``limit`` tokens with their context (and
    ``max_chars`` characters: a tokenizer may read a huge unbroken word as one token).

    A heading ends the chunk before it unless the whole section it opens (up to the next
    heading) is tiny (under a ``TINY_SECTION_SHARE``-th of the budget) and fits in the
    chunk, and the chunk lies in a section whose parent holds the new one too (its
    sibling, a subsection, or one of a subsection's). A run of short sections then reads
    as one passage instead of a string of fragments, under the section path of its first
    part, naming the others (``metadata["headings"]`` and their heading lines).

    A section that is not tiny is never taken into the chunk before it, however small
    that chunk: its text would be labelled with the section the chunk began in (the
    one-line intro of a document, no section at all), its heading chunk left with
    nothing under it, and section context, section ranking and the chunk's path would
    all point elsewhere. Nor is a tiny section taken into a chunk outside every section
    or one of a deeper section than its parent's (a subsection's tail does not take in
    the next top-level section). ``paths`` is each block's section path (a heading's
    excludes itself) and ``pages`` its page: a chunk never spans a page break, nor holds
    a part that stands alone.
    """
    tiny = limit // TINY_SECTION_SHARE
    body = [0] * len(parts)  # for a heading part: tokens of its section's own body
    run = 0
    for j in range(len(parts) - 1, -1, -1):
        if parts[j].heading:
            body[j], run = run, 0
        else:
            run += parts[j].tokens
    packs: list[list[_Part]] = []
    open_pack = False
    used = chars = 0
    for j, part in enumerate(parts):
        size = len(part.piece.text) + len(PACK_SEPARATOR)
        if part.heading:
            home = paths[packs[-1][0].block] if open_pack else ()
            if (
                home
                and body[j] < tiny
                and paths[part.block][: len(home) - 1] == home[:-1]
                and pages[part.block] == pages[packs[-1][0].block]
                and chars + size <= max_chars
                and used + part.tokens + body[j] <= limit
            ):
                packs[-1].append(part)
                used += part.tokens
                chars += size
            else:
                open_pack = False
            continue
        if (
            open_pack
            and not part.alone
            and used + part.tokens <= limit
            and chars + size <= max_chars
            and pages[part.block] == pages[packs[-1][-1].block]
        ):
            packs[-1].append(part)
        else:
            packs.append([part])
            open_pack = True
            used, chars = _reserve(ctx[part.block]), -len(PACK_SEPARATOR)
        used += part.tokens
        chars += size
        open_pack = not part.alone
    for pack in packs:  # a heading that ended up last in a chunk opens the next one instead
        while pack[-1].heading:
            pack.pop()
    return packs


def _pack_text(pack: list[_Part]) -> str:
    return PACK_SEPARATOR.join(p.piece.text for p in pack)


def _pack_chunk(
    doc: ParsedDocument,
    pack: list[_Part],
    context: str,
    parent: int | None,
    ordinal: int,
    tokens: int,
) -> Chunk:
    first = doc.blocks[pack[0].block]
    last = doc.blocks[pack[-1].block]
    body = [p for p in pack if not p.heading]
    types = {doc.blocks[p.block].type for p in body}
    if len(pack) == 1:
        meta = dict(first.metadata)
        meta.update(pack[0].piece.metadata)
        if pack[0].part:
            meta["part"] = pack[0].part
    else:
        meta = {"blocks": len({p.block for p in body})}
        languages = {
            doc.blocks[p.block].metadata.get("language")
            for p in body
            if doc.blocks[p.block].type is ChunkType.CODE
        }
        if len(languages) == 1 and None not in languages:
            meta["language"] = languages.pop()
        heads = [doc.blocks[p.block].text for p in pack if p.heading]
        if heads:
            meta["headings"] = heads
    return Chunk(
        ordinal=ordinal,
        chunk_type=types.pop() if len(types) == 1 else ChunkType.PARAGRAPH,
        text=_pack_text(pack),
        section_path=first.section_path,
        parent_ordinal=parent,
        char_start=first.char_start + pack[0].piece.start,
        char_end=last.char_start + pack[-1].piece.end,
        token_count=tokens,
        content_hash="",
        page=first.page,
        metadata=meta,
        context=context,
    )


def _pack_tokens(
    packs: list[list[_Part]], ctx: list[tuple[str, int]], counter: TokenCounter, max_tokens: int
) -> tuple[list[list[_Part]], list[int]]:
    """Packs with their tokens as the model reads them. A single part's count is known;
    merged packs are summed where the counter's ``joins_add_up`` (a tokenizer that never
    reads across whitespace), else counted in one tokenizer call, and one that a tokenizer
    counts over the limit after all (joins can tokenize differently) falls back to its
    parts alone."""
    merged = [j for j, p in enumerate(packs) if len(p) > 1]
    special = counter.special_tokens
    if getattr(counter, "joins_add_up", False):
        # whitespace ends every token (BERT's WordPiece): a join's count is the sum
        exact = {
            j: special + ctx[packs[j][0].block][1] + sum(p.tokens for p in packs[j]) for j in merged
        }
    else:
        texts = [_with_context(ctx[packs[j][0].block][0], _pack_text(packs[j])) for j in merged]
        exact = dict(zip(merged, counter.count_tokens(texts), strict=True))
    out: list[list[_Part]] = []
    counts: list[int] = []
    for j, pack in enumerate(packs):
        n = exact.get(j)
        if n is not None and n <= max_tokens:
            out.append(pack)
            counts.append(n)
            continue
        for part in pack:
            if not part.heading:
                out.append([part])
                counts.append(part.tokens + ctx[part.block][1] + special)
    return out, counts


def chunk_document(doc: ParsedDocument, counter: TokenCounter, max_tokens: int) -> list[Chunk]:
    """Chunks for ``doc``, each within ``max_tokens`` (special tokens included).

    Headings stay chunks of their own (structure: parents and context, never embedded).
    The blocks between two headings are merged in reading order up to the model's budget,
    so a question meets a passage rather than a fragment; a block too long to fit is split
    by its kind first. The limit holds for what the model reads (:attr:`Chunk.embed_text`):
    the section path (at most a quarter of the budget) followed by the chunk's text.
    """
    limit = max_tokens - counter.special_tokens
    max_chars = max_tokens * CHARS_PER_TOKEN_CAP
    contexts: dict[tuple[str, ...], tuple[str, int]] = {}
    blocks = doc.blocks
    paths = list(
        {b.section_path: None for b in blocks if b.type is not ChunkType.HEADING and b.section_path}
    )
    heading_blocks = [i for i, b in enumerate(blocks) if b.type is ChunkType.HEADING]
    # one tokenizer call for the section paths and the heading chunks' own texts
    counted = counter.count_tokens(
        [" > ".join(p[:200] for p in path) for path in paths]
        + [blocks[i].text for i in heading_blocks]
    )
    full = counted[: len(paths)]
    heading_tokens = dict(zip(heading_blocks, counted[len(paths) :], strict=True))
    for path, n in zip(paths, full, strict=True):  # one tokenizer call for the usual case
        if n - counter.special_tokens <= limit // 4:
            contexts[path] = (" > ".join(p[:200] for p in path), n - counter.special_tokens)
    ctx = [
        ("", 0)
        if b.type is ChunkType.HEADING
        else _context(b.section_path, counter, limit // 4, contexts)
        for b in blocks
    ]
    parts = _block_parts(doc, counter, ctx, limit, max_chars)
    packs = _packs(
        parts, [b.section_path for b in blocks], [b.page for b in blocks], ctx, limit, max_chars
    )
    packs, pack_tokens = _pack_tokens(packs, ctx, counter, max_tokens)

    chunks: list[Chunk] = []
    headings: list[tuple[int, int]] = []  # (level, chunk ordinal) of open headings
    next_pack = 0
    for i, block in enumerate(blocks):
        if block.type is ChunkType.HEADING:
            while headings and headings[-1][0] >= block.level:
                headings.pop()
            chunk = Chunk(
                ordinal=len(chunks),
                chunk_type=block.type,
                text=block.text,
                section_path=block.section_path,
                parent_ordinal=headings[-1][1] if headings else None,
                char_start=block.char_start,
                char_end=block.char_end,
                token_count=heading_tokens[i],
                content_hash="",
                page=block.page,
                metadata=dict(block.metadata),
            )
            chunks.append(chunk)
            headings.append((block.level, chunk.ordinal))
            continue
        while next_pack < len(packs) and packs[next_pack][0].block == i:
            chunks.append(
                _pack_chunk(
                    doc,
                    packs[next_pack],
                    ctx[i][0],
                    headings[-1][1] if headings else None,
                    len(chunks),
                    pack_tokens[next_pack],
                )
            )
            next_pack += 1
    for chunk in chunks:
        chunk.content_hash = content_hash(chunk.embed_text)
    return chunks


def _enforce(
    pieces: list[_Piece],
    counts: list[int],
    context: str,
    ctx_tokens: int,
    limit: int,
    max_tokens: int,
    counter: TokenCounter,
    max_chars: int,
) -> tuple[list[_Piece], list[int]]:
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
                out.append(
                    _Piece(
                        piece.start + min(a, piece.end - piece.start),
                        piece.start + min(b, piece.end - piece.start),
                        piece.text[a:b],
                        dict(piece.metadata),
                    )
                )
        pieces = out
        counts = counter.count_tokens([_with_context(context, p.text) for p in pieces])
    return pieces, counts
