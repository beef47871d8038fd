"""Turning file bytes into text, refusing binary files and invalid UTF-8 with a clear reason."""

from __future__ import annotations

from ragstore.errors import BinaryFileError, DecodeError, EmptyDocumentError

SNIFF_BYTES = 8192


def looks_binary(data: bytes) -> bool:
    """NUL bytes in the first 8 KiB: how git and grep tell binary from text."""
    return b"\x00" in data[:SNIFF_BYTES]


def decode_text(data: bytes, name: str) -> str:
    """Strict UTF-8 (a BOM is dropped); the error names the first bad byte's offset."""
    if not data.strip():
        raise EmptyDocumentError(f"{name}: the file is empty; nothing to ingest")
    if looks_binary(data):
        raise BinaryFileError(
            f"{name}: looks like a binary file (NUL bytes), not text; "
            "convert it to a supported format first"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        mixed = not data[: exc.start].isascii()
        kind = "mixed encodings: valid UTF-8 before, " if mixed else ""
        raise DecodeError(
            f"{name}: {kind}invalid UTF-8 at byte {exc.start} (line {line}); "
            "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None
    if not text.strip():
        raise EmptyDocumentError(f"{name}: the file holds only whitespace; nothing to ingest")
    return text.replace("\r\n", "\n") if "\r\n" in text else text
