"""The names of uploaded documents, and the sources they are stored under.

An upload named ``notes/a.md`` for collection ``docs`` is stored under the source
``<data dir>/uploads/docs/notes/a.md``, the same on every upload of that name: a re-upload
of unchanged bytes is left as it is, a changed one replaces the document. A name is read
in Unicode's composed form (NFC, :func:`name_path`), so one name typed two ways is one
document.

The HTTP API, the in-process ``Store``, the ingest pipeline, search (which names its
hits' uploads), the CLI and the HTTP client all read names here; it imports nothing but
the standard library and :mod:`ragstore.errors`, so ``import ragstore.client`` stays light.
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, TypeVar, cast

from ragstore.errors import InputError

if TYPE_CHECKING:
    from ragstore.config import Settings

M = TypeVar("M")

# a part's limits: 128 characters, and 255 bytes in UTF-8 (what ext4, XFS, APFS and
# most filesystems allow a file name: the stored source is a path, and a part of 128
# CJK characters is 384 bytes)
_MAX_PARTS = 8
_PART_CHARS = 128
_PART_BYTES = 255
# besides letters, marks and digits of any script (Unicode categories L, M and N), a part
# may hold these; it starts with a letter or digit
_PUNCTUATION = frozenset(" _.,()+=@-")
_SEPARATORS = frozenset("/\\")


def nfc(name: str) -> str:
    """``name`` in Unicode's composed form (NFC), the form names are stored in."""
    return unicodedata.normalize("NFC", name)


def name_path(name: str) -> PurePosixPath:
    """``name`` read as the relative path it is stored as (in NFC, a backslash read as a
    slash), unchecked: what :func:`safe_name` checks, and what the client compares a
    listed document's name with to find the one it was asked for."""
    return PurePosixPath(nfc(name).replace("\\", "/"))


def upload_root(settings: Settings, collection: str) -> Path:
    return settings.data_dir / "uploads" / collection


def source_prefix(settings: Settings, collection: str, prefix: str | None) -> str | None:
    """A ``source_prefix`` filter as stored sources start: a relative one is a document's
    name (an upload's path below its folder), resolved under the collection's upload root.
    The HTTP route and ``Store.list_documents`` both use it: the Store matched a relative
    prefix against the stored absolute paths and found nothing where the Client found the
    documents. A relative prefix is a name's start, so it is normalised to NFC as names
    are: ``café`` typed decomposed (NFD) found no ``café.md``."""
    if prefix is not None and not prefix.startswith("/"):
        # in the composed form (NFC) the names are stored in (:func:`safe_name`)
        return str(upload_root(settings, collection).resolve() / nfc(prefix))
    return prefix


def _shown(name: str, most: int = 200) -> str:
    """``name`` quoted for an error, cut: a name made up by a caller (an agent's tool
    call, a script) may be megabytes, and was echoed whole."""
    return repr(name[:most] + "...") if len(name) > most else repr(name)


def safe_name(name: str) -> PurePosixPath:
    """The upload's file name as a relative path, in Unicode's composed form (NFC);
    anything that could escape is refused.

    Letters, marks and digits of every script are allowed (``café.md``, ``日本語/メモ.md``
    were refused: users of most languages could not upload their files under their own
    names). A name is normalised to NFC before it becomes a source, so ``café.md`` sent
    decomposed (NFD, as macOS file names are) and composed is one document, not two; an
    ASCII name is its own NFC, so every name stored before reads as it did. Characters
    that make a name read other than it is (bidi overrides, zero-width characters, other
    controls) or that are no text (surrogates, private use, unassigned code points) stay
    refused."""
    path = name_path(name)
    problem = _problem(name, path)
    if problem:
        raise InputError(
            f"invalid document name {_shown(name)}: {problem}use a relative path of up to "
            f"{_MAX_PARTS} parts made of letters, marks and digits (of any script), "
            "spaces and _.,()+=@-, each part starting with a letter or digit, at most "
            f"{_PART_CHARS} characters and {_PART_BYTES} bytes in UTF-8"
        )
    return path


# Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt) that are
# letters or marks by category, so the category test alone let them in: the combining
# grapheme joiner, variation selectors, Hangul fillers, Khmer inherent vowels, Mongolian
# free variation selectors. Each shows as nothing: ``a\u034f.md`` looked like ``a.md``
# and was another document, and ``\u3164.md`` showed as ``.md``. (The formatting
# characters of that property, zero-width and bidi ones, are category Cf: refused too.)
_IGNORABLE = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)


def _ignorable(char: str) -> bool:
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in _IGNORABLE)


def _allowed(char: str) -> bool:
    """Whether a part may hold ``char``: a letter, mark or digit of any script that shows
    as something (:data:`_IGNORABLE`), or one of the ASCII punctuation allowed (the space
    the only separator)."""
    if char in _PUNCTUATION:
        return True
    return unicodedata.category(char)[0] in "LMN" and not _ignorable(char)


def _problem(name: str, path: PurePosixPath) -> str:
    """What is wrong with ``name`` (read as ``path``), said, or nothing."""
    said = _not_allowed(name)
    if said:
        return said
    parts = path.parts
    if not parts:
        return "it is empty; "
    if path.is_absolute():
        return "it is an absolute path; "
    if len(parts) > _MAX_PARTS:
        return f"it has {len(parts)} parts; "
    for part in parts:
        if len(part) > _PART_CHARS:
            return f"its part {_shown(part, 60)} has {len(part)} characters; "
        size = len(part.encode("utf-8"))
        if size > _PART_BYTES:
            return f"its part {_shown(part, 60)} is {size} bytes in UTF-8; "
        if unicodedata.category(part[0])[0] not in "LN":
            return f"its part {_shown(part, 60)} does not start with a letter or digit; "
        if not all(_allowed(char) for char in part):  # past what _not_allowed reads
            return f"its part {_shown(part, 60)} holds a character that is not allowed; "
    return ""


def _not_allowed(name: str) -> str:
    """The first character of ``name`` no part may hold, said, or nothing: ``café.md`` was
    refused as not "made of letters", with no word of which character; a bidi override
    or a zero-width space is named, since it cannot be seen in the name as shown."""
    for at, char in enumerate(name[:1000]):
        if not (char in _SEPARATORS or _allowed(char)):
            kind = (
                ", a character that shows as nothing"
                if _ignorable(char)
                else _KINDS.get(unicodedata.category(char)[:2], "")
            )
            return (
                f"the character {char!r} (U+{ord(char):04X}{kind}) at position {at} is not "
                "allowed; "
            )
    return ""


# what a character that is not allowed is, for the few categories a user cannot see
_KINDS = {
    "Cc": ", a control character",
    "Cf": ", an invisible formatting character",
    "Cs": ", a lone surrogate",
    "Co": ", a private-use character",
    "Cn": ", an unassigned code point",
    "Zs": ", a space other than the ASCII space",
    "Zl": ", a line separator",
    "Zp": ", a paragraph separator",
}


_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:)?[\\/]")


def new_name(name: str) -> PurePosixPath:
    """:func:`safe_name` for the name of a document being written, which may not end with
    a slash or have a part that ends with white space either: ``x.md/`` was stored as
    ``x.md`` and ``a.md `` as a plain text document (its suffix read as ``.md ``), each
    answered 201 under a name other than the one sent. Names stored before are still
    read by :func:`safe_name` (:func:`source_of`), which takes them."""
    if _ABSOLUTE.match(name):
        raise InputError(
            f"invalid document name {_shown(name)}: it is an absolute path; send the "
            "name relative to a folder of yours, e.g. 'notes/a.md'"
        )
    if name.endswith(("/", "\\")):
        raise InputError(
            f"invalid document name {_shown(name)}: it ends with a slash; name the file "
            f"itself, e.g. {_shown(name.rstrip('/' + chr(92)) or 'a.md')}"
        )
    for part in re.split(r"[\\/]", name):
        if part != part.strip():
            raise InputError(
                f"invalid document name {_shown(name)}: its part {_shown(part)} starts or "
                f"ends with white space; remove it (e.g. {_shown(part.strip())})"
            )
    return safe_name(name)


def unique_names(names: Sequence[str]) -> None:
    """InputError naming the first document name given twice in one request (or call):
    each name is one document, so the second would be stored over the first.

    Names are compared as :func:`safe_name` reads them, which is what their stored source
    is made of (:func:`source_of`): compared as sent, ``notes/a.md`` and ``notes\\a.md``
    (or ``notes//a.md``, ``./notes/a.md``, or ``café.md`` composed and decomposed) passed
    as two documents, were written one over the other, and both were answered as stored."""
    seen: dict[PurePosixPath, str] = {}
    for name in names:
        key = safe_name(name)
        if key in seen:
            same = "" if seen[key] == name else f" (as {seen[key]!r}: both name {str(key)!r})"
            if same and nfc(seen[key]) == nfc(name) and seen[key] != name:
                # the same letters, composed (NFC) once and decomposed (NFD) once: shown
                # alike, so their code points are
                same = (
                    f" (as {seen[key]!a}, written as {name!a}: the same name in "
                    "two Unicode forms, stored as its composed form (NFC))"
                )
            raise InputError(
                f"document name {name!r} appears twice in one request{same}; send it once"
            )
        seen[key] = name


def source_of(settings: Settings, collection: str, name: str) -> str:
    """The source an upload named ``name`` is stored under (checked with :func:`safe_name`)."""
    return str(upload_root(settings, collection).resolve().joinpath(*safe_name(name).parts))


def exact_source(settings: Settings, collection: str, source: str) -> str | None:
    """The stored source a ``source`` filter names: an absolute path is a source as given,
    a relative one an upload's name (in NFC, as :func:`source_of` stores it). ``None`` for
    a name no upload can have (it names no document). The HTTP route and ``Store`` share
    it, so a name finds the same document on the database as through a server (the CLI's
    local ``documents show PATH`` also resolves a relative path against the working folder
    and follows links, which means nothing on a server)."""
    if source.startswith("/"):
        return source
    try:
        return source_of(settings, collection, source)
    except InputError:
        return None


def source_name(settings: Settings, collection: str, source: str) -> str:
    """The name a client gave for a staged source; other sources are returned unchanged."""
    if settings.data_dir.is_absolute():
        root = _upload_prefix(settings.data_dir, collection)
    else:  # resolved against the working directory, which may change
        root = str(upload_root(settings, collection).resolve()) + os.sep
    return source[len(root) :] if source.startswith(root) else source


def answered(source: str, name: str | None, metadata: M) -> tuple[str, M]:
    """An upload's ``source`` and ``metadata`` as every answer gives them (documents and
    search hits, from the Store, the HTTP API, MCP, the CLI and the console): its
    ``name``, and the metadata's ``path`` (which ingest sets to the source) the name too.

    Stored, both are the server's own ``<data dir>/uploads/...`` path: a path the uploader
    never chose, which told every reader where the server keeps its data, and which the
    Store answered where the server answered the name (the CLI's JSON differed on the
    database and through a server). The database keeps the stored path; the name finds
    the same document (:func:`exact_source`, :func:`source_prefix`). A file from disk or
    a text (``name`` is ``None`` or the source itself) is returned as it is."""
    if name is None or name == source:
        return source, metadata
    if isinstance(metadata, dict) and metadata.get("path") == source:
        metadata = cast(M, {**metadata, "path": name})
    return name, metadata


@functools.lru_cache(maxsize=1024)
def _upload_prefix(data_dir: Path, collection: str) -> str:
    """The resolved upload root of ``collection``, a separator after it: every search now
    names its hits' uploads (``search.service.name_uploads``), and resolving the root each
    time asked the file system once per document hit."""
    return str((data_dir / "uploads" / collection).resolve()) + os.sep
