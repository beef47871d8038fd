"""Which parser reads which file: by extension, confirmed by sniffing the content."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePath

from ragstore.errors import UnsupportedFormatError
from ragstore.models import ParsedDocument
from ragstore.parsing.decode import decode_text
from ragstore.parsing.markdown import parse_markdown
from ragstore.parsing.text import parse_text

TextParser = Callable[[str, str], ParsedDocument]

SUFFIXES: dict[str, str] = {
    ".md": "markdown", ".markdown": "markdown", ".mdown": "markdown",
    ".txt": "text", ".text": "text", ".rst": "text", "": "text",
}
TEXT_PARSERS: dict[str, TextParser] = {"markdown": parse_markdown, "text": parse_text}


def supported_suffixes() -> set[str]:
    return {s for s in SUFFIXES if s}


def detect_format(name: str, data: bytes) -> str:
    """The format of a file from its suffix; content decides when the suffix says nothing."""
    suffix = PurePath(name).suffix.lower()
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    raise UnsupportedFormatError(
        f"{name}: unsupported file type {suffix!r}; supported: "
        f"{', '.join(sorted(supported_suffixes()))}"
    )


def parse_bytes(data: bytes, name: str, fmt: str | None = None) -> ParsedDocument:
    """Parse one file's bytes; ``name`` is used for format detection and in error messages."""
    fmt = fmt or detect_format(name, data)
    text = decode_text(data, name)
    return TEXT_PARSERS[fmt](text, name)
