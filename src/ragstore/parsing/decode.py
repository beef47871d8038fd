"""Turning file bytes into text, refusing binary files and invalid UTF-8 with a clear reason.

UTF-8 is the encoding; a byte-order mark says otherwise without guessing, so UTF-16 and
UTF-32 files that start with one (what Windows Notepad's "Unicode" and PowerShell's ``>``
write) are read in their encoding. A byte-order mark after the first (files joined with
``cat``, an editor that added one to a file that had one) is dropped wherever it is: as
text it is an invisible character that hid front matter and landed in titles. Line
endings are made ``\\n`` whatever they were (Windows ``\\r\\n``, old Mac ``\\r``), so every
parser counts lines the same way.
"""

from __future__ import annotations

import codecs
import re

from ragstore.errors import BinaryFileError, DecodeError, EmptyDocumentError

SNIFF_BYTES = 8192
# a text of only whitespace and characters that show nothing (zero-width spaces and
# joiners, word joiners) holds no text either
_BLANK = re.compile(r"[\s\u200b\u200c\u200d\u2060]*")

# longest first: the UTF-32-LE mark starts with the UTF-16-LE one
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def declared_encoding(data: bytes) -> tuple[str, int] | None:
    """(encoding, BOM length) when the bytes start with a byte-order mark."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return encoding, len(bom)
    return None


def _utf32_without_bom(data: bytes) -> str | None:
    """ "little"/"big" when the head is text in UTF-32: of every four bytes the most
    significant is NUL, the next one too for any character but emoji and other planes,
    and the least significant is not (it was called a binary file, with no way out)."""
    head = data[: SNIFF_BYTES - SNIFF_BYTES % 4]
    if len(head) < 8:
        return None
    quarter = len(head) // 4
    # the NUL third byte also tells it from ASCII in UTF-16, where it is a character
    if head[3::4].count(0) == quarter and head[2::4].count(0) > 0.9 * quarter:
        return "little" if head[0::4].count(0) < 0.1 * quarter else None
    if head[0::4].count(0) == quarter and head[1::4].count(0) > 0.9 * quarter:
        return "big" if head[3::4].count(0) < 0.1 * quarter else None
    return None


def _utf16_without_bom(data: bytes) -> str | None:
    """ "little"/"big" when the head is ASCII text in UTF-16 (every other byte NUL)."""
    head = data[: SNIFF_BYTES - SNIFF_BYTES % 2]
    if len(head) < 4:
        return None
    if head[1::2].count(0) > 0.9 * len(head[1::2]) and b"\x00" not in head[0::2]:
        return "little"
    if head[0::2].count(0) > 0.9 * len(head[0::2]) and b"\x00" not in head[1::2]:
        return "big"
    return None


def looks_binary(data: bytes) -> bool:
    """NUL bytes in the first 8 KiB (how git and grep tell binary from text), unless a
    byte-order mark declares a UTF-16 or UTF-32 text."""
    return declared_encoding(data) is None and b"\x00" in data[:SNIFF_BYTES]


# C0 control bytes no text uses (all but tab, the line breaks, form feed, backspace and
# escape: man pages overstrike with backspace, logs colour with escape), and DEL
_CONTROLS = bytes([*range(0x01, 0x08), 0x0B, *range(0x0E, 0x1B), *range(0x1C, 0x20), 0x7F])
MAX_CONTROL_SHARE = 0.1


# Bytes that are not UTF-8 to begin with need fewer control bytes to be taken for binary:
# text in a legacy 8-bit or double-byte encoding (Latin-1, CP1252, CP1251, Shift JIS)
# holds next to none, where compressed or random bytes hold one in ten
MAX_CONTROL_SHARE_NOT_UTF8 = 0.02
MIN_CONTROLS_NOT_UTF8 = 8


def mostly_controls(data: bytes) -> bool:
    """Whether more than a tenth of the first 8 KiB are control bytes no text uses: binary
    data without a NUL that still decodes as UTF-8 (a file named ``a.exe`` of such bytes
    was read as plain text and stored, control bytes and all). For a file whose name says
    nothing of its format; a .txt file is read as its name says.

    A head that is no UTF-8 is held to a fiftieth (and at least 8 such bytes, so a short
    legacy file ending in a DOS ``^Z`` is still text): binary bytes without a NUL that
    did not decode were refused ``invalid_encoding`` with "re-save the file as UTF-8",
    advice no binary file can take, where legacy-encoded prose is still refused that way,
    since re-saving is its fix."""
    head = data[:SNIFF_BYTES]
    if not head or declared_encoding(data) is not None:
        return False
    controls = len(head) - len(head.translate(None, _CONTROLS))
    if controls > MAX_CONTROL_SHARE * len(head):
        return True
    if controls < MIN_CONTROLS_NOT_UTF8 or controls <= MAX_CONTROL_SHARE_NOT_UTF8 * len(head):
        return False
    try:  # incremental: the head may end inside a character
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return True
    return False


def empty_error(data: bytes, name: str) -> EmptyDocumentError:
    """The refusal of a file of no bytes but white space (``not data.strip()``), the same
    for every format. One of a few blank bytes was told "the file is empty" as well, which
    ``ls -l`` then contradicted: it says which it is."""
    if not data:
        return EmptyDocumentError(f"{name}: the file is empty; nothing to ingest")
    return EmptyDocumentError(
        f"{name}: the file is empty: its {len(data)} byte(s) are only white space; "
        "nothing to ingest"
    )


def decode_text(data: bytes, name: str) -> str:
    """Strict UTF-8, or the encoding a BOM declares; the error names the first bad byte."""
    if not data.strip():
        raise empty_error(data, name)
    declared = declared_encoding(data)
    encoding, skip = declared if declared else ("utf-8", 0)
    if looks_binary(data):
        order = _utf32_without_bom(data)
        if order is not None:
            raise DecodeError(
                f"{name}: looks like UTF-32 without a byte-order mark ({order}-endian); "
                f"re-save it as UTF-8 (e.g. iconv -f utf-32{order[0]}e -t utf-8)"
            )
        order = _utf16_without_bom(data)
        if order is not None:
            raise DecodeError(
                f"{name}: looks like UTF-16 without a byte-order mark ({order}-endian); "
                f"re-save it as UTF-8 (e.g. iconv -f utf-16{order[0]}e -t utf-8)"
            )
        raise BinaryFileError(
            f"{name}: looks like a binary file (NUL bytes), not text; "
            "convert it to a supported format first"
        )
    try:
        text = data[skip:].decode(encoding)
    except UnicodeDecodeError as exc:
        raise _decode_error(data, skip + exc.start, encoding, name) from None
    if "\x00" in text:
        at = text.index("\x00")
        raise BinaryFileError(
            f"{name}: holds a NUL character at character {at}, which text cannot; "
            "check the file is what its extension says, or remove the NUL bytes "
            "(e.g. tr -d '\\000')"
        )
    if "\ufeff" in text:
        text = text.replace("\ufeff", "")
    if _BLANK.fullmatch(text):
        raise EmptyDocumentError(f"{name}: the file holds only whitespace; nothing to ingest")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _decode_error(data: bytes, at: int, encoding: str, name: str) -> DecodeError:
    if encoding != "utf-8":
        return DecodeError(
            f"{name}: invalid {encoding.upper()} at byte {at} (its byte-order mark declares "
            f"{encoding.upper()}); re-save the file as UTF-8"
        )
    line = data[:at].count(b"\n") + 1
    mixed = not data[:at].isascii()
    kind = "mixed encodings: valid UTF-8 before, " if mixed else ""
    return DecodeError(
        f"{name}: {kind}invalid UTF-8 at byte {at} (line {line}); "
        "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
    )
