"""How much text one file may unpack to, counted while it is parsed.

A compressed format unpacks a few kilobytes into far more text: a PDF's content stream
drawn on every page, a deck that lists one slide 1,500 times (31 KB: 3 GB of text, which
the parse helper ran out of memory handing back), a book whose spine repeats a chapter.
Counting the text once the parse is done (``ingest.prepare``) came after the parser had
built all of it. So the parse runs within :func:`text_limit`, and the parsers that build
their text piece by piece (:class:`~ragstore.parsing.structure.BlockBuilder`, the PDF
reader's pages) call :func:`check_text_size` as it grows: the file fails with
``payload_too_large`` as soon as it is past the limit, not minutes and gigabytes later.

The limit is context (a :class:`~contextvars.ContextVar`) rather than an argument of every
parser: it belongs to the parse call, not to the format, and the parsers build their text
inside library callbacks and shared walkers (the EPUB reader walks chapters with the HTML
parser's walker).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ragstore.errors import FileTooLargeError

__all__ = ["check_text_size", "text_limit", "text_too_large"]

_LIMIT: ContextVar[tuple[str, int] | None] = ContextVar("ragstore_text_limit", default=None)


@contextmanager
def text_limit(name: str, limit: int | None) -> Iterator[None]:
    """Within this block, a parse of file ``name`` may produce at most ``limit``
    characters of text (None: no limit)."""
    token = _LIMIT.set((name, limit) if limit is not None else None)
    try:
        yield
    finally:
        _LIMIT.reset(token)


def check_text_size(chars: int) -> None:
    """Raise :class:`FileTooLargeError` when the ``chars`` characters of text the file has
    produced so far are over the limit of the enclosing :func:`text_limit`."""
    current = _LIMIT.get()
    if current is not None and chars > current[1]:
        raise text_too_large(current[0], current[1])


def text_too_large(name: str, limit: int, chars: int | None = None) -> FileTooLargeError:
    """The error of a file whose text is over ``limit`` characters (``chars`` when known:
    a parse stopped early knows only that it is more)."""
    over = (
        f"{chars} characters, over the limit of {limit}"
        if chars is not None
        else f"more than {limit} characters, the limit"
    )
    return FileTooLargeError(
        f"{name}: its text unpacks to {over} (RAGSTORE_MAX_FILE_BYTES); check the file, "
        "or raise the limit to ingest it"
    )
