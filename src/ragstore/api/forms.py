"""What the multipart parser changed in an upload's text without a word: bytes that were no
text in the upload's charset, and a file name it cut to its last part.

Starlette decodes a form field's value, a part's name and a file's name in the charset the
``Content-Type`` names (UTF-8 unless it names another) and, where the bytes are not text
in it, falls back to latin-1 (one character per byte): an upload whose ``metadata`` held
the bytes of another encoding was stored garbled (``b"\\xe9"`` as ``"é"``), answered 201.
The decoded string no longer tells which happened (``"é"`` is also what valid UTF-8
``b"\\xc3\\xa9"`` decodes to), so :func:`install` makes the fallback's result an
:class:`Undecoded` string, which the upload route refuses (``routes/documents.py``).

python-multipart, for its part, keeps only the last part of a file name that looks like a
Windows path (``C:\\x.md`` is read as ``x.md``, a workaround for old browsers):
:func:`sent_filename` reads the name as the part's header sent it.
"""

from __future__ import annotations

import re

from python_multipart.multipart import parse_options_header
from starlette import formparsers
from starlette.datastructures import UploadFile


class Undecoded(str):
    """Form text whose bytes were not text in the upload's charset, as Starlette's fallback
    read them (latin-1: each byte one character)."""

    __slots__ = ()


def _marked_decode(src: bytes | bytearray, codec: str) -> str:
    """Starlette's ``_user_safe_decode``, its latin-1 fallback marked :class:`Undecoded`."""
    try:
        return src.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return Undecoded(src.decode("latin-1"))


def install() -> None:
    """Mark the multipart parser's latin-1 fallback (once per process; idempotent)."""
    formparsers._user_safe_decode = _marked_decode


# the filename parameter renamed, so that the parser's Windows-path workaround (which only
# looks at a key named "filename") leaves its value whole
_FILENAME_KEY = re.compile(r"(?i)(?<![\w*-])filename(?=\s*=)")


def sent_filename(upload: UploadFile, charset: str = "utf-8") -> str | None:
    """The file name of ``upload`` as its part's ``Content-Disposition`` header sent it
    (``None``: the header names none, or it cannot be read), decoded as the parser
    decodes it: an :class:`Undecoded` string where its bytes are not ``charset`` text."""
    header = upload.headers.get("content-disposition")
    if header is None:
        return None
    _, params = parse_options_header(_FILENAME_KEY.sub("sent-filename", header))
    raw = params.get(b"sent-filename")
    return None if raw is None else _marked_decode(raw, charset)
