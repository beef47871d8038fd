"""The language a document is written in: the programming language for source code, the
natural language (charset-normalizer's coherence detector) for everything else."""

from __future__ import annotations

from charset_normalizer import from_bytes

from ragstore.models import ChunkType, ParsedDocument

SAMPLE_CHARS = 4096


def detect_language(doc: ParsedDocument) -> str | None:
    """``python``, ``go`` ... for code; ``English``, ``German`` ... for prose; None if unsure."""
    declared = doc.metadata.get("language")
    if doc.format == "code" and isinstance(declared, str):
        return declared
    sample: list[str] = []
    size = 0
    for block in doc.blocks:
        if block.type in (ChunkType.CODE, ChunkType.TABLE):
            continue
        sample.append(block.text)
        size += len(block.text)
        if size >= SAMPLE_CHARS:
            break
    text = "\n".join(sample)[:SAMPLE_CHARS]
    if not text.strip():
        return None
    best = from_bytes(text.encode("utf-8")).best()
    if best is None:
        return None
    ranked = best.languages
    language = ranked[0] if ranked else best.language
    return None if not language or language == "Unknown" else language
