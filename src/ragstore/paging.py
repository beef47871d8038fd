"""Keyset pages: the opaque cursors of every listing, and the split of a page from the row
that says whether another follows.

Shared by the HTTP API's listing routes, the in-process ``Store`` and the CLI, so a
cursor one hands out is read alike by the others.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import TypeVar

from ragstore.errors import CursorStaleError, InputError
from ragstore.models import COLLECTION_NAME

_ID = re.compile(r"[0-9]{1,18}")  # a row id (below 2**63)
_NAME = re.compile(f"^{COLLECTION_NAME}$")  # a collection's name (``schemas.NAME_PATTERN``)

_Row = TypeVar("_Row")


def split_page(rows: Sequence[_Row], limit: int) -> tuple[list[_Row], bool]:
    """The page of a listing whose query asked for ``limit + 1`` rows: its first ``limit``
    rows, and whether a row follows them (only then has the page a ``next_cursor``).
    Judged by ``len(rows) == limit``, a page that came back exactly full promised a next
    page that was empty: every client asked once more, and the CLI's ``more:`` line
    pointed at nothing."""
    return list(rows[:limit]), len(rows) > limit


def encode_cursor(last_id: int, scope: int | None = None) -> str:
    """An opaque cursor after the row ``last_id``; ``scope``, the id of the collection
    listed (documents), makes :func:`decode_cursor` refuse it for another collection."""
    kind = "id" if scope is None else f"id.{scope}"
    return base64.urlsafe_b64encode(f"{kind}:{last_id}".encode()).decode().rstrip("=")


def encode_name_cursor(last_name: str) -> str:
    """An opaque cursor after the collection ``last_name`` (the list is keyset on name)."""
    return base64.urlsafe_b64encode(f"name:{last_name}".encode()).decode().rstrip("=")


def decode_name_cursor(cursor: str | None) -> str | None:
    """The last name of the previous page from an opaque cursor; InputError when mangled."""
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        if kind == "name" and _NAME.fullmatch(value):
            return value
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InputError(f"invalid cursor {cursor[:100]!r}; pass the next_cursor of a previous page")


def encode_text_cursor(last_id: str, scope: int) -> str:
    """An opaque cursor after the text ``last_id`` of the collection of id ``scope``
    (``POST .../texts/query`` is keyset on the text id); :func:`decode_text_cursor` refuses
    it for another collection of the name, as :func:`decode_cursor` does documents'."""
    return base64.urlsafe_b64encode(f"text.{scope}:{last_id}".encode()).decode().rstrip("=")


def decode_text_cursor(cursor: str | None, scope: int) -> str | None:
    """The last text id of the previous page from an opaque cursor; InputError when
    mangled.

    ``scope``: the id of the collection queried now. A cursor made for another one (the
    name deleted and made again since its page) raises CursorStaleError: the texts are
    another collection's, even where their ids are the same. A cursor of the format
    before cursors had it (``text:ID``) is taken as it is, so a walk under way while the
    server was upgraded goes on."""
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        name, _, made_for = kind.partition(".")
        if (
            name == "text"
            and (not made_for or _ID.fullmatch(made_for))
            and value
            and "\x00" not in value
        ):
            if made_for and int(made_for) != scope:
                raise _stale(cursor)
            return value
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InputError(f"invalid cursor {cursor[:100]!r}; pass the next_cursor of a previous page")


def _stale(cursor: str) -> CursorStaleError:
    return CursorStaleError(
        f"cursor {cursor[:100]!r} is from another collection of this name: it was deleted "
        "and made again, or switched to another model with its documents cut again (new "
        "ids), since that page; list again from the first page (no cursor)"
    )


def cursor_parts(cursor: str) -> tuple[int | None, int] | None:
    """The collection id a documents cursor was made for (None: made without one, as
    ``ragstore documents list --after ID`` makes it) and the last id of its page; None
    when ``cursor`` is no such cursor. The CLI's ``--cursor`` is checked with it before
    anything is asked."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    kind, _, value = text.partition(":")
    name, _, made_for = kind.partition(".")
    if name != "id" or not _ID.fullmatch(value) or (made_for and not _ID.fullmatch(made_for)):
        return None
    return (int(made_for) if made_for else None), int(value)


def decode_cursor(cursor: str | None, scope: int | None = None) -> int | None:
    """The last id of the previous page from an opaque cursor; InputError when mangled.

    ``scope``: the id of the collection listed now. A cursor made for another one (the
    name deleted and made again, or re-cut for another model, since its page) raises
    CursorStaleError: paged on, the listing went into that collection's rows. A cursor
    without one (``ragstore documents list --after``, or one from before cursors had it)
    is taken as it is."""
    if not cursor:
        return None
    parts = cursor_parts(cursor)
    if parts is None or (parts[0] is not None and scope is None):
        raise InputError(f"invalid cursor {cursor!r}; pass the next_cursor of a previous page")
    made_for, last_id = parts
    if made_for is not None and made_for != scope:
        raise _stale(cursor)
    return last_id
