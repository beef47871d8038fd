"""What a document's chunks were cut from, kept so a model migration can cut them again.

A chunk may merge several blocks and drop the text between them, so stored chunks cannot
be re-cut into what a fresh ingest would make. :func:`encode` packs the chunker's input
(the parser's blocks) and the metadata a writer laid over every chunk into compact,
zlib-compressed JSON (``documents.parsed``); :func:`rechunk` turns it back into chunks
for any model's budget, exactly as ingest would have cut them for that model.

Documents stored without it (before schema revision 0010, imports, texts sent with their
vectors) are re-cut from their stored chunks taken as blocks (:func:`blocks_from_chunks`):
every chunk then fits, but packing may differ from a fresh ingest's.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from ragstore.chunking.chunker import TokenCounter, chunk_document
from ragstore.models import Block, Chunk, ChunkType, ParsedDocument

VERSION = 1
CHUNKER_KEYS = ("blocks", "headings", "part", "line_split")  # metadata the chunker adds


def encode(
    doc: ParsedDocument,
    chunk_metadata: Mapping[str, Any] | None = None,
    text: str | None = None,
) -> bytes:
    """The blocks of ``doc`` (section paths stored once each) and the per-chunk metadata;
    with ``text``, the text exactly as a caller sent it (see :func:`original_text`)."""
    paths: dict[tuple[str, ...], int] = {}
    blocks = []
    for b in doc.blocks:
        path = paths.setdefault(b.section_path, len(paths))
        blocks.append(
            [b.type.value, b.text, b.char_start, b.char_end, path, b.level, b.page, b.metadata]
        )
    body = {
        "v": VERSION,
        "format": doc.format,
        "title": doc.title,
        "paths": [list(p) for p in paths],
        "blocks": blocks,
        "chunk_metadata": dict(chunk_metadata or {}),
    }
    if text is not None:
        body["text"] = text
    return zlib.compress(json.dumps(body, separators=(",", ":")).encode(), 1)


def original_text(data: bytes) -> str | None:
    """The text a caller sent (``add_texts``), when the recipe kept it: its chunks joined
    are not that text (edges stripped, blank lines collapsed, a long text's cuts given
    separators of their own), and a framework's ``get_by_ids`` must hand back what was
    added. None for documents stored without it (files, and texts stored before it)."""
    text = json.loads(zlib.decompress(data)).get("text")
    return text if isinstance(text, str) else None


def decode(data: bytes) -> tuple[ParsedDocument, dict[str, Any]]:
    """The parsed document and the per-chunk metadata :func:`encode` stored."""
    body = json.loads(zlib.decompress(data))
    paths = [tuple(p) for p in body["paths"]]
    blocks = [
        Block(ChunkType(t), text, start, end, paths[p], level, page, dict(meta))
        for t, text, start, end, p, level, page, meta in body["blocks"]
    ]
    return ParsedDocument(body["format"], body["title"], blocks), dict(body["chunk_metadata"])


def rechunk(data: bytes, counter: TokenCounter, max_tokens: int) -> list[Chunk]:
    """The chunks ingest would make of the stored document for a model of ``max_tokens``."""
    doc, overlay = decode(data)
    chunks = chunk_document(doc, counter, max_tokens)
    if overlay:
        for ch in chunks:
            ch.metadata = {**ch.metadata, **overlay}
    return chunks


def blocks_from_chunks(format: str, title: str | None, chunks: Sequence[Chunk]) -> ParsedDocument:
    """A parsed document rebuilt from stored chunks, one block per chunk, for documents
    that kept no blocks: a heading's level is its depth in the section paths."""
    blocks = [
        Block(
            ch.chunk_type,
            ch.text,
            ch.char_start,
            ch.char_end,
            tuple(ch.section_path),
            len(ch.section_path) + 1 if ch.chunk_type is ChunkType.HEADING else 0,
            ch.page,
            {k: v for k, v in ch.metadata.items() if k not in CHUNKER_KEYS},
        )
        for ch in chunks
    ]
    return ParsedDocument(format, title, blocks)
