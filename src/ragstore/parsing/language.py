"""The language a document is written in: the programming language for source code, the
natural language for everything else.

Prose in English (most documents) is recognised by its function words: in English prose
"the", "of", "and", "to", "that" ... are 13% or more of the words (at least 12.7% in each
of 3,064 SciFact abstracts, scale-corpus files and Node.js API pages), in French, German,
Spanish, Italian, Portuguese or Dutch at most 1% (docs/benchmarks.md, "Language
detection"). Any other text goes to charset-normalizer's coherence detector, which reads a
few hundred characters of it several times over: on a short Markdown file it was most of
the CPU of preparing it for an ingest, and it called 1% of English abstracts Italian,
Spanish or Dutch, and a third of the Node.js API pages nothing at all.
"""

from __future__ import annotations

import re

from charset_normalizer import from_bytes

from ragstore.models import ChunkType, ParsedDocument

SAMPLE_CHARS = 4096
# English words that French, German, Spanish, Italian, Portuguese and Dutch prose does not
# use ("a", "in", "is", "was", "on", "an", "so", "die" ... are left out: they do)
ENGLISH_WORDS = frozenset(
    (  # noqa: SIM905 (a list literal would take 43 lines)
        "the and of to that for with are this be by from which it or at these we were has"
        " been their they not can but have its than more would there when what about into"
        " such between other our may each how"
    ).split()
)
ENGLISH_SHARE = 0.08  # of the sample's words: English prose has 0.13+, the others 0.01
MIN_WORDS = 20  # fewer say too little; the detector decides
_WORD = re.compile(r"[a-z]+")
# an ASCII text's words: every character that is not a lower-case letter made a space
_NOT_LETTER = str.maketrans({chr(c): " " for c in range(128) if not chr(c).islower()})


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
    if is_english(text):
        return "English"
    best = from_bytes(text.encode("utf-8")).best()
    if best is None:
        return None
    ranked = best.languages
    language = ranked[0] if ranked else best.language
    return None if not language or language == "Unknown" else language


def is_english(text: str) -> bool:
    """Whether ``text`` is English prose by its share of English function words."""
    lower = text.lower()
    # the runs of a-z: in ASCII text (most), a translation and a split find them at 0.6
    # of the regular expression's cost, which was a tenth of preparing a SciFact abstract
    words = lower.translate(_NOT_LETTER).split() if lower.isascii() else _WORD.findall(lower)
    if len(words) < MIN_WORDS:
        return False
    return sum(map(ENGLISH_WORDS.__contains__, words)) >= ENGLISH_SHARE * len(words)
