"""How a filter names a metadata path: the grammar of a field that is no built-in.

A path is dot-separated keys (``author.name``); a dot within a key is escaped with a
backslash and a backslash doubled (``version\\.major`` names the key ``version.major``);
a key starting with ``$`` is read as an operator, never as a field; ``chunk.PATH`` and
``document.PATH`` read only one table's metadata; a bare path equal to a built-in's name
reads the built-in column. The filter compiler (search/filters.py) reads paths by these
rules, and an index of a field (db/field_indexes.py) takes only a path a filter can name,
by the same rules: the grammar lives here, below both, so that the database layer need
not import search to check a field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ragstore.errors import InvalidFilterError
from ragstore.validation import MAX_KEY_CHARS

FIELD_OPERATORS = ("$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$exists")
LOGICAL_OPERATORS = ("$and", "$or", "$not")
MAX_PATH_LENGTH = MAX_KEY_CHARS
# the built-in fields' names (search/filters.py's BUILTINS maps each to its column): a
# bare path equal to one reads the column, never the metadata
BUILTIN_FIELDS = ("collection", "source", "title", "chunk_type", "created_at", "page")
SCOPES = ("chunk", "document")  # the prefixes that read one table's metadata only


def names_operator(key: str) -> bool:
    """Whether a filter reads ``key`` (a key of a filter object) as an operator, never as a
    field: a key that starts with ``$``. The one rule, so that nothing else (an index of a
    field, db/field_indexes.py) takes a name that no filter could address."""
    return key.startswith("$")


def metadata_path(field: str) -> list[str]:
    """The keys of the metadata path ``field`` as a filter names it (a key of a filter
    object), or InvalidFilterError when no filter could name that field: one that starts
    with ``$`` (read as an operator) or is no dot-separated path of non-empty keys (a dot
    within a key escaped, ``version\\.major``)."""
    if names_operator(field):
        raise InvalidFilterError(
            f"invalid filter path {field!r}: a key starting with '$' is read as an operator "
            f"({', '.join(LOGICAL_OPERATORS + FIELD_OPERATORS)}), never as a field; "
            "name the metadata key without a leading '$' (e.g. 'price')"
        )
    return split_path(field)


def field_name(keys: Sequence[str], scope: str) -> str | None:
    """The field by which a filter names the metadata path ``keys`` seen in the metadata
    of ``scope`` (``document`` or ``chunk``): the dotted path where a bare path reads it,
    else the path under ``scope.``; None where no filter can name it at all.

    A bare path equal to a built-in's name (``source``, ``page``) reads the built-in
    column, one whose first key starts with ``$`` is read as an operator, and one whose
    first key is ``chunk`` or ``document`` (``document.x``) as a prefixed path, so those
    are named ``document.PATH`` or ``chunk.PATH``, which read the metadata key itself. A
    key holding a dot or a backslash is escaped (:func:`join_path`: ``v1\\.2``). An empty
    key cannot be named: ``a..b`` is refused, not read as a key ``""``. Nor can a name
    longer than :data:`MAX_PATH_LENGTH`, prefix included: a filter refuses a key of its
    object that long, so ``document.`` and a path of 250 characters were offered as a
    field that no filter took."""
    if not keys or any(not k for k in keys):
        return None
    name = filter_name(keys, scope)
    return name if len(name) <= MAX_PATH_LENGTH else None


def filter_name(keys: Sequence[str], scope: str) -> str:
    """The field by which a filter would name the metadata path ``keys`` of ``scope``, as
    :func:`field_name` spells it, however long (validation.py measures it against
    :data:`MAX_PATH_LENGTH` to say by how much a path is too long)."""
    path = join_path(keys)
    if path in BUILTIN_FIELDS or names_operator(path) or (len(keys) > 1 and keys[0] in SCOPES):
        return f"{scope}.{path}"
    return path


def escape_key(key: str) -> str:
    """``key`` as one key of a filter's dotted path: each backslash doubled and each dot
    escaped (``version.major`` -> ``version\\.major``), so that the dot is read as part of
    the key rather than as the step into a nested object."""
    return key.replace("\\", "\\\\").replace(".", "\\.")


def join_path(keys: Sequence[str]) -> str:
    """The dotted path of ``keys`` as a filter names it, each key escaped (the inverse of
    the filter's own reading of a path)."""
    return ".".join(escape_key(k) for k in keys)


def split_path(field: str) -> list[str]:
    """The keys of the dotted path ``field``. A dot separates keys; a backslash escapes the
    character after it, a dot (``version\\.major``: the one key ``version.major``) or a
    backslash (``\\\\``), so that a metadata key holding a dot can be named. Before the
    escape such a key could not be filtered at all: ``version.major`` read the key
    ``version``, then ``major``. A backslash before anything else, or at the end, is
    refused rather than guessed at."""
    if len(field) > MAX_PATH_LENGTH:
        raise _bad_path(field)
    parts: list[str] = []
    key: list[str] = []
    i = 0
    while i < len(field):
        char = field[i]
        if char == "\\":
            escaped = field[i + 1 : i + 2]
            if escaped not in (".", "\\"):
                raise _bad_escape(field, escaped)
            key.append(escaped)
            i += 2
            continue
        if char == ".":
            parts.append("".join(key))
            key = []
        else:
            key.append(char)
        i += 1
    parts.append("".join(key))
    if any(not p for p in parts):
        raise _bad_path(field)
    return parts


def _bad_path(field: str) -> InvalidFilterError:
    return InvalidFilterError(
        f"invalid filter path {field!r}: use dot-separated, non-empty "
        f"keys of at most {MAX_PATH_LENGTH} characters (e.g. "
        "'author.name'; a dot within a key is escaped: 'version\\.major')"
    )


def _bad_escape(field: str, escaped: str) -> InvalidFilterError:
    """The error for a backslash in ``field`` before ``escaped`` (neither a dot nor a
    backslash; empty at the end), with the path as it was likely meant: every backslash
    that escapes nothing doubled, a literal backslash."""
    found = f"a backslash before {escaped!r}" if escaped else "a lone backslash at its end"
    meant = re.sub(r"\\(\\|\.)|\\", lambda m: m.group(0) if m.group(1) else "\\\\", field)
    return InvalidFilterError(
        # the path unquoted by repr(), which doubles each backslash: the fix would look
        # like the mistake
        f"invalid filter path '{field}': {found}; in a path a backslash escapes a dot "
        "within a key (\\.) or a backslash (\\\\), nothing else, e.g. version\\.major for "
        f"the key 'version.major'; for a key holding a backslash write {meant}"
    )
