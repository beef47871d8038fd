"""Checks of caller-supplied values at the edge, before they reach PostgreSQL.

PostgreSQL refuses a NUL byte in any text or JSON value and integers beyond 64 bits, and
JSON ``NaN``/``Infinity`` are not JSON to it; a lone surrogate (``"\\ud800"`` in JSON, a
valid escape that decodes to no character) cannot even be encoded to UTF-8 to send.
Refused there, they would surface as a database error; refused here, the caller learns
which value is wrong and where. The API schemas, the filter compiler and the CLI all use
these, so both answer the same.
"""

from __future__ import annotations

import json
import math
import numbers
import operator
import re
import sys
from collections.abc import Iterable, Mapping, Sequence, Set, Sized
from typing import TYPE_CHECKING, Any, Literal

from ragstore.errors import EmptyDocumentError, InputError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# NumPy is imported only by the one check that needs it (float32_array): the HTTP client
# runs these checks on every call that names ids, a limit or metadata, and loaded NumPy
# (~90 ms, tens of MB) into a thin client that never touches an array.
# float(np.finfo(np.float32).max), written out so that reading it needs no NumPy
FLOAT32_MAX = 3.4028234663852886e38

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
MAX_JSON_DEPTH = 64
# A search's ``context``: a number of neighbouring chunks on each side of a hit, at most
# MAX_NEIGHBOURS (the HTTP API's schema, ``SearchRequest.context``), or its section
ContextMode = int | Literal["section"]
MAX_NEIGHBOURS = 50
# The longest query text a search takes, in characters: the HTTP API's schema
# (``SearchRequest.query``) and every search (search/service.py ``_check_query``) alike
MAX_QUERY_CHARS = 10_000
# The longest key a JSON object (metadata, a filter) may hold, in characters: the longest
# metadata path a search filter names (search/filters.py ``MAX_PATH_LENGTH``). A longer
# metadata key was stored (one of 1 MB in every chunk's row) though no filter could name it
MAX_KEY_CHARS = 256
_SURROGATE = re.compile("[\ud800-\udfff]")


def a_type(value: Any) -> str:
    """``value``'s type as a message names it, its article before it: "an int", "a list",
    "an ndarray", and "None" for None. Messages wrote "a {type}" (``metadatas is a int``,
    ``texts is a NoneType``), which reads badly wherever the name starts with a vowel."""
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' or name.startswith('nd') else 'a'} {name}"


def _text_problem(text: str, where: str) -> str | None:
    if "\x00" in text:
        return f"a NUL byte (\\u0000){where}; remove it"
    return surrogate_problem(text, where)


def surrogate_problem(text: str, where: str) -> str | None:
    """A lone surrogate in ``text``, described as :func:`problem_in` does (``where``: as
    `` at 'name'``); ``None`` when there is none."""
    lone = _SURROGATE.search(text)
    if lone is not None:
        return (
            f"a lone surrogate (U+{ord(lone.group()):04X}){where}, which is not valid "
            "Unicode; fix the text or the \\u escape that made it"
        )
    return None


def unicode_text(text: str, what: str) -> None:
    """Refuse a string that is not valid Unicode: a lone surrogate (``"\\ud800"``, from a
    bad ``\\u`` escape or a file name decoded with surrogate escapes) has no UTF-8 form,
    so the database could not store it and the encoder would fail deep in the write."""
    lone = _SURROGATE.search(text)
    if lone is not None:
        raise InputError(
            f"{what} holds a lone surrogate (U+{ord(lone.group()):04X}) at character "
            f"{lone.start()}, which is not valid Unicode; fix the text (or the \\u escape "
            "that made it)"
        )


def storable_text(text: str, what: str) -> None:
    """:func:`unicode_text`, and no NUL: valid Unicode that PostgreSQL's text cannot hold
    (the parser would call the text a binary file, which it is not)."""
    unicode_text(text, what)
    if "\x00" in text:
        raise InputError(
            f"{what} holds a NUL character (\\u0000) at character {text.index(chr(0))}, "
            "which PostgreSQL text cannot store; remove it"
        )


MAX_ID_LENGTH = 1000  # characters of a text's id (add_texts)


def text_list(texts: Any) -> list[Any]:
    """An add's ``texts`` as a list, or InputError saying what was given instead.

    ``None``, a dict and a generator failed deep in the add with a bare TypeError
    (``object of type 'NoneType' has no len()``), which no ``except RagstoreError``
    caught; one string is refused rather than added as one text per character (the
    LangChain store's ``add_texts("abc")`` stored "a", "b" and "c"), and a set rather
    than paired with ``ids`` and ``metadatas`` in an order it does not have. Any other
    iterable (a tuple, a generator, a pandas Series) is taken as the list of its items."""
    if isinstance(texts, (str, bytes)):
        raise InputError("texts is one string, not a list of texts; pass [text] to add one")
    return per_text_list(texts, "texts", "pass a list of strings")


def per_text_list(value: Any, what: str, hint: str) -> list[Any]:
    """``value``, an add's list of one entry per text (``texts``, ``metadatas``,
    ``vectors``), as a list, or InputError naming it with ``hint``: a string, a dict, a
    set or no iterable at all is refused (``metadatas=5`` failed with a bare TypeError, a
    dict was read as the list of its keys), any other iterable is listed, once (a
    generator of ids was used up by the first of the add's two checks, and the add was
    refused as giving no ids)."""
    if isinstance(value, (str, bytes, Mapping, Set)) or not isinstance(value, Iterable):
        raise InputError(f"{what} is {a_type(value)}, not a list; {hint}")
    return list(value)


def check_text_items(texts: Sequence[Any]) -> None:
    """Each of an ``add_texts``' texts a string with some text that PostgreSQL can store,
    else InputError naming it (``texts[3]``), for the Store and the Client alike: the
    Client sent a single request's texts unchecked, and a NUL came back in the server's
    words for the whole request, not the Store's for the text."""
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"texts[{i}] is {a_type(text)}, not a string")
        # a leading byte-order mark is dropped when the text is parsed: a text of one
        # alone passed here and failed there, after the batches before it were stored
        if not text.removeprefix("\ufeff").strip():
            raise EmptyDocumentError(f"texts[{i}] is empty; give it some text")
        storable_text(text, f"texts[{i}]")


def check_texts(
    texts: Sequence[Any], ids: Sequence[str], others: Mapping[str, Sized | None]
) -> None:
    """What an ``add_texts`` refuses in its texts and ids, in one place for the Store and
    the Client (which checks a whole call before the first of several requests: found by
    the server in a later one, it was refused after the earlier ones stored). ``others``
    are the lists that must hold one entry per text (metadatas, vectors), by name."""
    n = len(texts)
    for name, seq in others.items():
        if seq is not None and len(seq) != n:
            raise InputError(f"{name} has {len(seq)} entries for {n} texts; give one per text")
    check_text_items(texts)
    seen: set[str] = set()
    for i, doc_id in enumerate(ids):
        storable_text(doc_id, f"ids[{i}]")
        if not doc_id or len(doc_id) > MAX_ID_LENGTH:
            # the length, not the id: an id of 10 KB was quoted whole in the message
            got = f"{len(doc_id)} characters ({doc_id[:20]!r}...)" if doc_id else "''"
            raise InputError(f"ids[{i}] must be 1-{MAX_ID_LENGTH} characters, got {got}")
        if doc_id in seen:
            raise InputError(f"id {doc_id!r} appears twice in one call; ids must be unique")
        seen.add(doc_id)


def _magnitude(value: int) -> str:
    """A short form of an integer too large to show whole: ``1e+30``, or, past a float's
    range (a JSON number of 309 digits or more), its sign and its count of digits:
    ``{:.3g}`` converts to float and raised ``OverflowError`` there, a 500 instead of the
    422. The digits are counted from the bit length, since ``str()`` refuses an integer of
    more than 4,300 digits."""
    try:
        return f"{value:.3g}"
    except OverflowError:
        digits = int(value.bit_length() * math.log10(2)) + 1
        return f"a {'negative ' if value < 0 else ''}number of about {digits} digits"


# what to do with a Python value that has no JSON form, by its type's name
_JSON_HINTS = {
    "Decimal": "give a float or an int (float(value))",
    "bytes": "give text (value.decode())",
    "bytearray": "give text (value.decode())",
    "datetime": "give ISO 8601 text (value.isoformat())",
    "date": "give ISO 8601 text (value.isoformat())",
    "set": "give a list (sorted(value))",
    "frozenset": "give a list (sorted(value))",
}


def _not_json(value: Any, where: str) -> str:
    """A value of a type JSON has no form of, described with a way to write it."""
    kind = type(value).__name__
    hint = _JSON_HINTS.get(kind)
    if hint is None:
        # a NumPy scalar can only exist once NumPy is loaded: look, don't import
        numpy = sys.modules.get("numpy")
        hint = (
            "give a Python number or bool (value.item())"
            if numpy is not None and isinstance(value, numpy.generic)
            else "give a string, number, boolean, None, list or dict"
        )
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"{a_type(value)} ({shown}){where}, which is not JSON-serialisable; {hint}"


def problem_in(
    value: Any,
    at: str = "",
    depth: int = 0,
    *,
    json_only: bool = False,
    paths: bool = False,
    _keys: tuple[str, ...] = (),
) -> str | None:
    """The first value in ``value`` PostgreSQL would refuse, described with its path
    (``None``: all fine). Walks dict keys, strings, numbers, lists and nested objects. A
    key longer than :data:`MAX_KEY_CHARS` is one too: stored, no filter could name it.

    ``paths`` (``value`` is metadata): so is a path of keys through nested objects longer
    than :data:`MAX_KEY_CHARS` in all, joined by dots as a filter names it. Keys of 200
    and 100 characters each passed the key rule, and the path no filter could name was
    stored: a filter names a path in one key of its JSON object, which the key rule caps.
    The path is measured as a filter names it (:func:`ragstore.metadata_paths.field_name`:
    a dot or backslash within a key escaped, ``document.`` before a path read as a
    built-in or an operator): a key of a dot and 200 more passed, measured unescaped, and
    no filter could name it. An empty key is one too: stored, while a filter naming it
    (``""``, ``a..b``) is refused. (Not for a filter or a request body, whose keys are
    operators or fields around the metadata; nor inside a list, where a filter names no
    path.) ``_keys``: the keys of the metadata path to ``value``, for the walk alone.

    ``json_only``: a value of any other type (``Decimal``, ``bytes``, ``datetime``, a
    set, a numpy scalar) is one too. In-process, such a value in a search filter got past
    this walk and failed in ``json.dumps`` with a bare ``TypeError``, where the HTTP
    client named it (as not JSON-serialisable); a ``Decimal`` is refused rather than
    taken as a number, since the HTTP client cannot send one either."""
    where = f" at {at!r}" if at else ""
    if depth > MAX_JSON_DEPTH:
        return f"nested deeper than {MAX_JSON_DEPTH} levels{where}"
    if isinstance(value, str):
        return _text_problem(value, where)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            return f"an integer out of the 64-bit range{where}: {_magnitude(value)}"
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return f"a non-finite number ({value}){where}; JSON numbers must be finite"
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                # JSON turns it into a string on the way: 1 became "1" and, beside a "1"
                # of its own, one of the two values was dropped unsaid
                return (
                    f"a key that is not a string ({key!r}, of type {type(key).__name__}){where}; "
                    "JSON object keys are strings: write it as one"
                )
            if found := _text_problem(key, f" in a key{where}"):
                return found
            if len(key) > MAX_KEY_CHARS:
                return (
                    f"a key of {len(key)} characters ({key[:40]!r}...){where}; a key may have "
                    f"at most {MAX_KEY_CHARS} characters, the longest a search filter can "
                    "name: shorten it"
                )
            path = f"{at}.{key}" if at else str(key)
            keys = (*_keys, key)
            if paths and (found := _path_problem(keys, where)):
                return found
            found = problem_in(item, path, depth + 1, json_only=json_only, paths=paths, _keys=keys)
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = problem_in(item, f"{at}[{i}]", depth + 1, json_only=json_only)  # no paths
            if found:
                return found
        return None
    return _not_json(value, where) if json_only else None


def _path_problem(keys: tuple[str, ...], where: str) -> str | None:
    """Why no search filter can name the metadata path ``keys`` (``where``: the path to
    the object holding its last key), or None: a filter names it by
    :func:`ragstore.metadata_paths.field_name`, in one key of its JSON object, which
    :data:`MAX_KEY_CHARS` caps."""
    from ragstore.metadata_paths import filter_name  # it imports this module

    if not keys[-1]:
        return (
            f"an empty key{where}; a search filter cannot name an empty key "
            "(it refuses '' and 'a..b'): give the key a name"
        )
    name = filter_name(keys, "document")
    if len(name) <= MAX_KEY_CHARS:
        return None
    return (
        f"a key path of {len(name)} characters ({name[:40]!r}...{name[-20:]!r}) as a "
        f"search filter names it; a path of keys, joined by dots, may have at most "
        f"{MAX_KEY_CHARS} characters, the longest a search filter can name (a dot or "
        "backslash within a key counts twice, escaped by a backslash, and a path read as "
        "a built-in or an operator is named with 'document.' before it): shorten its "
        "keys or nest them less deeply"
    )


def id_list(ids: Any, what: str) -> list[str]:
    """``ids`` as a list of strings, or InputError naming the one that is not.

    One bare string is refused rather than taken as the list of its characters
    (``delete_texts(c, "abc")`` deleted the texts "a", "b" and "c"), and an id that is no
    string rather than turned into one (``None`` was stored under the id "None"); the HTTP
    API refuses both, so the Store and the Client answer alike. An id no text can be
    stored under is refused too, naming it: a lone surrogate (``"a\\ud800"``) failed
    in the database driver with a bare UnicodeEncodeError, and a NUL with a database
    error that named neither the id nor where it was. A dict (any mapping) is refused as
    no iterable is, not taken as the list of its keys: ``delete_texts(c, {"a": 1})``
    deleted the text "a", where the HTTP API refuses an object for its ids. A set
    (frozenset, dict view: any ``Set``) is refused as ``per_text_list`` refuses one, for
    it has no order: ``add_texts(texts, ids={"a", "b"})`` paired the ids with the texts in
    whatever order the set iterated in, a different one from run to run."""
    if isinstance(ids, (str, bytes)):
        raise InputError(f"{what} is one string, not a list of ids; pass [{ids!r}] for one id")
    if isinstance(ids, Mapping):
        raise InputError(f"{what} is {a_type(ids)}, not a list of ids")
    if isinstance(ids, Set):
        raise InputError(
            f"{what} is {a_type(ids)}, not a list of ids; a set has no order: "
            "pass a list (sorted(ids)) in the order of the texts"
        )
    try:
        out = list(ids)
    except TypeError:
        raise InputError(f"{what} is {a_type(ids)}, not a list of ids") from None
    for i, value in enumerate(out):
        if not isinstance(value, str):
            raise InputError(
                f"{what}[{i}] is {value!r} (of type {type(value).__name__}), not a string; "
                "ids are strings"
            )
        storable_text(value, f"{what}[{i}]")
    return out


def integral(value: Any) -> bool:
    """Whether ``value`` is an integer, Python's or NumPy's (``np.int64(5)``, from an
    array's ``argmax`` or ``len``: any ``numbers.Integral``), and not a bool (True is no
    count of 1). The checks below take one as the int it is (``operator.index``), so that
    the Store and the HTTP clients, which must send JSON, take the same values."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_context(value: object) -> ContextMode | None:
    """A search's ``context`` as the HTTP API's schema takes it: an integer (not a bool)
    from 0 to 50, or exactly ``"section"`` (``None``: no context). Anything else is an
    InputError naming ``context``. The Store and MCP read it through ``parse_context``
    (``str(context)`` stripped and lower-cased), so ``"2"``, ``" 2 "``, ``"02"`` and
    ``"Section"`` worked there and were refused 422 through the Client: code moved from
    a Store to a Client failed. The CLI's ``--context`` text is parsed first (by
    :func:`ragstore.search.context.parse_context`) and comes here as the int or
    ``"section"`` it means.

    Here, not in ``search/context.py`` (which imports the database layer), so that the
    HTTP client runs it before sending too: a bad ``context`` got the Store's words in
    process and pydantic's 422 wording through the Client."""
    if value is None:
        return None
    if isinstance(value, str) and value == "section":
        return "section"
    if integral(value) and 0 <= value <= MAX_NEIGHBOURS:  # type: ignore[operator]
        return operator.index(value)  # type: ignore[arg-type]
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise InputError(
        f"context {shown} is invalid: give a number of neighbouring chunks "
        f"(an integer, 0-{MAX_NEIGHBOURS}) or 'section'"
    )


def finite_number(value: Any, name: str) -> float:
    """``value`` as a Python float when it is a finite number, Python's or NumPy's
    (``np.float32(0.7)``, ``np.int64(20)``), else InputError naming option ``name``. The
    HTTP clients refused a NumPy number as "not JSON-serialisable" where the Store took it,
    and NaN reached the range checks, which named a range it was not out of. A float, as
    the HTTP schema reads such an option (``rrf_k=30`` is searched, and planned, as 30.0)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise InputError(f"{name} must be a finite number (not NaN or infinity), got {out}")
    return out


def page_limit(value: Any) -> int:
    """``value`` when it is a page size the API takes (an integer from 1 to 500), else
    InputError. The Store compared it unchecked (``limit="5"`` a TypeError, ``True`` and
    ``2.5`` went on to PostgreSQL's LIMIT) and the Client sent ``"5"`` as a page of 5."""
    if not integral(value):
        raise InputError(f"limit must be an integer, got {value!r}")
    if not 1 <= value <= 500:
        raise InputError(f"limit must be between 1 and 500, got {value}")
    return operator.index(value)


MAX_FORMAT_CHARS = 50  # a list_documents format filter (the longest format name is short)
MAX_SOURCE_CHARS = 1000  # a list_documents source or source_prefix filter


def document_filters(format: Any, source_prefix: Any, source: Any, error: type[InputError]) -> None:
    """What a ``list_documents`` refuses in its text filters, in one place for the Store
    and the HTTP route: a ``format`` of more than :data:`MAX_FORMAT_CHARS` characters or
    a ``source_prefix`` or ``source`` of more than :data:`MAX_SOURCE_CHARS` (InputError,
    422 ``invalid_input``), then what PostgreSQL cannot compare (a NUL, a lone surrogate:
    ``error``, the route's and the Store's ``InvalidFilterError``). The caps were the
    route's alone: ``Store.list_documents`` answered an empty page where the Client got
    422."""
    for name, value, most in (
        ("format", format, MAX_FORMAT_CHARS),
        ("source_prefix", source_prefix, MAX_SOURCE_CHARS),
        ("source", source, MAX_SOURCE_CHARS),
    ):
        if value is None:
            continue
        if not isinstance(value, str):
            raise InputError(f"{name} must be a string, got {a_type(value)}")
        if len(value) > most:
            raise InputError(
                f"{name} is {len(value):,} characters, more than the {most:,} it may have; "
                "give a shorter one"
            )
    check_value(
        {"format": format, "source_prefix": source_prefix, "source": source}, "the query", error
    )


def flag(value: Any, name: str) -> bool:
    """``value`` when it is a bool, else InputError naming option ``name``. In process
    ``explain="yes"`` or ``sections="no"`` were taken by their truth (``"no"`` as True),
    and the HTTP client left out ``sections="no"`` as if True, where the HTTP API's schema
    refuses anything but true or false."""
    if not isinstance(value, bool):
        raise InputError(f"{name} must be True or False, got {value!r}")
    return value


def row_id(value: Any, what: str) -> int:
    """``value`` when it is a row id (an integer from 1 to 2**63-1, as the HTTP API's
    paths take), else InputError. Unchecked, the Store answered ``True`` with a database
    error and ``0``, ``-1`` or ``"1"`` as a document not found, where the Client says the
    id is invalid."""
    if not integral(value) or not 1 <= value <= INT64_MAX:
        raise InputError(f"invalid {what} id {value!r}: give a positive integer")
    return operator.index(value)


class _RepeatedKey(Exception):
    """A JSON object named :attr:`key` twice (:func:`loads_json`)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKey(key)
        out[key] = value
    return out


def repeated_key(body: str | bytes) -> str | None:
    """The first key named twice in one object of the JSON ``body``; ``None`` when none
    is, or when the body does not parse (its reader says that itself)."""
    try:
        json.loads(body, object_pairs_hook=_unique_keys)
    except _RepeatedKey as exc:
        return exc.key
    except (ValueError, RecursionError):
        return None
    return None


def loads_json(text: str) -> Any:
    """``json.loads`` whose every failure is a :class:`json.JSONDecodeError`.

    Past about a thousand levels of nesting the parser raises ``RecursionError``, which
    would slip past ``except json.JSONDecodeError`` and crash the request or command. An
    integer of more digits than Python converts (``sys.get_int_max_str_digits()``, 4,300)
    raised a plain ``ValueError``: ``ragstore search --where '{"a": 999...}'`` ended in
    a traceback.

    An object naming one key twice is refused too (``json.loads`` kept the last): in
    ``--where '{"team": "a", "team": "b"}'`` or an upload's metadata, which of the two the
    user meant is unknowable, and the search or the stored metadata silently used the
    second. (The HTTP API refuses such JSON bodies the same way, before its routes.)
    """
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _RepeatedKey as exc:
        pos = max(text.rfind(json.dumps(exc.key)), 0)
        raise json.JSONDecodeError(
            f"the key {exc.key!r} appears twice in one object (keep one)", text, pos
        ) from None
    except RecursionError:
        raise json.JSONDecodeError(f"nested deeper than {MAX_JSON_DEPTH} levels", text, 0) from None
    except json.JSONDecodeError:
        raise
    except ValueError:  # only the digits limit: everything else is a JSONDecodeError
        raise json.JSONDecodeError(
            f"an integer of more than {sys.get_int_max_str_digits()} digits", text, 0
        ) from None


def json_form(value: Any) -> Any:
    """``value`` as its JSON comes back: a tuple as a list and a mapping as a dict, nested.
    The HTTP client sends a tuple as a JSON array, so in process a filter's
    ``{"$in": (1, 2)}`` was refused ("$in takes an array, got an object") where the
    Client's was taken. For a value :func:`check_value` has passed (its depth bounded)."""
    if isinstance(value, Mapping):
        return {key: json_form(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_form(item) for item in value]
    return value


def check_value(
    value: Any,
    what: str,
    error: type[InputError] = InputError,
    *,
    json_only: bool = False,
    paths: bool = False,
) -> Any:
    """``value`` unchanged, or ``error`` naming ``what`` and the offending part
    (``json_only``, ``paths``: see :func:`problem_in`)."""
    found = problem_in(value, json_only=json_only, paths=paths)
    if found:
        raise error(f"{what} holds {found}")
    return value


def json_value(
    value: Any, what: str, error: type[InputError] = InputError, *, paths: bool = False
) -> Any:
    """``value`` when it is JSON the server takes unchanged, else ``error`` naming the bad
    part (:func:`check_value`, ``json_only``; ``paths``: metadata, see :func:`problem_in`),
    for the HTTP clients before they send and for the Store alike: the Store said of a
    ``bytes`` in metadata only "is not JSON-serialisable: Object of type bytes ...",
    where the Client named where it is and how to write it. Unchecked, NaN or a set
    surfaced as httpx's bare ``ValueError``/``TypeError``, and a key that is no string
    (``1``) was turned into one by the encoder, dropping one of two values when the
    object also held ``"1"``."""
    check_value(value, what, error, json_only=True, paths=paths)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise error(f"{what} is not JSON-serialisable: {exc}") from None
    return value


def check_int_range(
    value: int,
    what: str,
    low: int = INT32_MIN,
    high: int = INT32_MAX,
    error: type[InputError] = InputError,
) -> int:
    """``value`` when ``low <= value <= high``; otherwise ``error`` naming the range."""
    if not low <= value <= high:
        raise error(f"{what}: {value:.3g} is out of range; use an integer from {low} to {high}")
    return value


_NOT_NUMBERS = {
    "b": "true/false values are not numbers",
    "U": 'strings are not numbers (pass 0.5, not "0.5")',
    "S": "bytes are not numbers",
    "O": "values that are not numbers, or integers too large for a vector",
}


def float32_array(values: Any, what: str) -> npt.NDArray[np.float32]:
    """``values`` as float32, refusing what float32 cannot hold.

    A number beyond float32's range (about 3.4e38) would silently become infinity in the
    cast; it, NaN and infinity are refused as input instead of reaching the database.
    So are true/false and strings: numpy's float cast reads ``True`` as 1.0 and ``"0.5"``
    as 0.5, so ``Store.add_texts(vectors=[[True] * 384])`` stored a vector nobody meant,
    where the HTTP API (strict JSON numbers) and ``import`` refuse them.
    """
    import numpy as np  # here, not at the top: see FLOAT32_MAX

    try:
        raw = np.asarray(values)
        if raw.dtype.kind not in "iuf":  # bool, str, bytes, object (not numbers, or huge)
            raise TypeError(_NOT_NUMBERS.get(raw.dtype.kind, f"values of type {raw.dtype}"))
        wide = raw.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must hold only numbers: {exc}") from None
    if not np.isfinite(wide).all() or (np.abs(wide) > FLOAT32_MAX).any():
        raise InputError(
            f"{what} holds NaN, infinite or out-of-range values; "
            f"every number must be finite and within ±{FLOAT32_MAX:.2e}"
        )
    return wide.astype(np.float32)
