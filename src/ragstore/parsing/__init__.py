"""Parsers: bytes of one file in, a :class:`~ragstore.models.ParsedDocument` out.

Each format has its own module and a well-kept parser library behind it; this module
picks the parser from the file name and the content.
"""

from ragstore.parsing.registry import detect_format, parse_bytes

__all__ = ["detect_format", "parse_bytes"]
