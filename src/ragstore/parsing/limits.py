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

A parser that runs out of memory is the same kind of limit: in a parse helper, whose
address space is capped (:data:`HELPER_MEMORY_BYTES`, ``parsing.sandbox``), a library
that meets the cap raises MemoryError and the helper lives on (zlib inflating a 150 MB
chapter: "Unable to allocate output buffer"), or the MemoryError ends the helper; either
way the file fails with :func:`out_of_memory`'s ``payload_too_large``, not as a damaged
file.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ragstore.errors import FileTooLargeError

__all__ = [
    "HELPER_MEMORY_BYTES",
    "check_text_size",
    "helper_memory_cap",
    "mark_parse_helper",
    "out_of_memory",
    "text_limit",
    "text_too_large",
]

HELPER_MEMORY_BYTES = 4 << 30  # a helper's address space, at most half the machine's memory

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


_in_parse_helper = False  # set once in a parse helper's process, by mark_parse_helper()


def mark_parse_helper() -> None:
    """Mark this process as a parse helper (``parsing.sandbox``, once its address space is
    capped): a parser that runs out of memory here met that cap, which its error names."""
    global _in_parse_helper
    _in_parse_helper = True


def helper_memory_cap() -> int | None:
    """The address space this process may take when it is a parse helper (read now, so
    it is the cap in force); None in any other process, or when it has no cap."""
    if not _in_parse_helper:
        return None
    try:
        import resource
    except ImportError:  # not POSIX: the helper has no cap
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


def out_of_memory(name: str, fmt: str, cap: int | None) -> FileTooLargeError:
    """The error of a file whose ``fmt`` parser ran out of memory, in a parse helper whose
    address space is capped at ``cap`` bytes (None: parsed where there is no cap). One
    error whether the parser raised MemoryError or the MemoryError ended the helper: the
    file is too large to parse within the limit, not damaged (a ``corrupt_document``
    here sent users looking for a fault in a healthy file)."""
    within = (
        f" (the parse helper may take {cap / (1 << 30):.1f} GiB: at most "
        f"{HELPER_MEMORY_BYTES >> 30} GiB, and half the machine's memory)"
        if cap is not None
        else ""
    )
    return FileTooLargeError(
        f"{name}: the {fmt} parser ran out of memory reading it{within}; check the file, "
        "or split it"
    )
