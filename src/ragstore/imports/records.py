"""What every reader yields: one :class:`Record` per stored vector, and the reader protocol.

Readers only translate a store's layout into records; they judge nothing. Validation
(:mod:`ragstore.imports.validate`) decides what is wrong with a record, so every store is
held to the same rules and reported the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ragstore.errors import ImportSourceError
from ragstore.validation import INT64_MAX, INT64_MIN

Vector = npt.NDArray[np.float32]


@dataclass
class Record:
    """One vector of the source store with its id, text and metadata as the store had them."""

    id: str | None
    text: str | None
    # None for a record the store holds without a vector (a NULL column, a JSON null: an
    # embedding still to be made), which validation counts as ``missing_vector``
    vector: Vector | None
    metadata: dict[str, Any] = field(default_factory=dict)
    # what the source's model was given to make the vector, where that is not ``text``
    # (LlamaIndex embeds a node's metadata with its text); only the model check reads it
    embedded_text: str | None = None


class Source(Protocol):
    """A readable legacy store."""

    @property
    def description(self) -> str:
        """What is read, for the report (``JSONL file /x/a.jsonl``); never a password."""

    def records(self) -> Iterator[Record]:
        """Every record in the store's own order."""


def to_vector(value: Any, where: str) -> Vector | None:
    """A 1-D float32 array from a list/array of numbers; ``null`` entries become NaN.

    Values too large for float32 become inf (what pgvector would refuse), so validation
    sees them as non-finite instead of the cast failing later. No vector at all (None) is
    None, for validation to count as ``missing_vector``: it was an error that stopped the
    whole import, whatever ``--on-invalid`` said, so a table with some embeddings still to
    be made could only be imported through a view of the others.
    """
    if value is None:
        return None
    if isinstance(value, str):
        raise ImportSourceError(
            f"{where}: the vector is a string ({_clip(value)}), not a list of numbers; give "
            "it as a JSON array of numbers ([0.1, 0.2, ...]), not a string holding one"
        )
    if isinstance(value, (list, tuple)):
        _refuse_words(value, where)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            try:
                arr = np.asarray(value, dtype=np.float64).astype(np.float32)
            except OverflowError:  # an integer beyond float64: infinite, like 1e400
                arr = np.asarray(_huge_to_inf(value), dtype=np.float64).astype(np.float32)
    except (TypeError, ValueError) as exc:
        raise ImportSourceError(f"{where}: the vector is not a list of numbers ({exc})") from None
    if arr.ndim != 1:
        raise ImportSourceError(
            f"{where}: the vector has shape {arr.shape}; expected a flat list of numbers"
        )
    return arr


def _refuse_words(value: list[Any] | tuple[Any, ...], where: str) -> None:
    """ImportSourceError for a vector holding a string or a boolean: NumPy parsed
    ``["0.5", "1e3"]`` and made ``true`` 1.0, and such a vector was imported and called
    verified as if the store had held those numbers (a string ``"nan"`` became NaN)."""
    for position, item in enumerate(value):
        if isinstance(item, (str, bool)):
            kind = "a boolean" if isinstance(item, bool) else "a string"
            raise ImportSourceError(
                f"{where}: the vector's value {position + 1} is {kind} ({_clip(item)}), not a "
                "number; give the vector as a JSON array of numbers"
            )


def _huge_to_inf(value: Any) -> Any:
    """``value`` with each integer too large for a float64 as an infinity of its sign.

    NumPy raised OverflowError for one (a JSON ``1`` followed by 400 zeros), which
    escaped as a traceback, where ``1e400`` is read as infinity and refused as
    ``non_finite`` by validation, as every policy allows."""
    if isinstance(value, (list, tuple)):
        return [_huge_to_inf(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    return value


def to_id(value: Any, where: str = "") -> str | None:
    """Ids are kept as text (numbers become their decimal form), exactly as the store had
    them; empty means missing.

    Not stripped: the ids ``"a"`` and ``"a "`` of a Chroma collection were both stored as
    ``"a"`` (refused as a duplicate_id the store did not have, or, skipped, one record
    lost), and an id with an edge space arrived under another id than the one the
    application looks it up by. ``add_texts`` keeps such ids as sent, and so does this.
    """
    if value is None:
        return None
    _refuse_structured(value, "id", where)
    if isinstance(value, float) and not math.isfinite(value):
        # Python's JSON reader takes a JSONL ``"id": NaN``: it was stored as the id
        # ``nan``, no id the source has and no JSON one, and each NaN a distinct record
        spelled = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        raise ImportSourceError(
            f"{where or 'a record'}: the id is {spelled}, which is no JSON value and no "
            f'id; give the id as a string ("{spelled}", or the id the record has)'
        )
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value)
    return text or None


def to_text(value: Any, where: str = "") -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    _refuse_structured(value, "text", where)
    return str(value)


def _refuse_structured(value: Any, field: str, where: str) -> None:
    """ImportSourceError for an id or text that is an object, a list or a boolean.

    Such a value was stored as Python's repr of it (a JSONL ``"text": {"en": "hi"}``
    became the text ``{'en': 'hi'}``, an id ``true`` the id ``True``): neither the store's
    value nor any JSON form of it, and said to be imported and verified. A string or a
    number is what an id or a text is; anything else is named with where it is. So is a
    PostgreSQL ``bytea`` one, which became ``b'\\xde\\xad'``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise ImportSourceError(
            f"{where or 'a record'}: the {field} is a byte string, not a string or a number; "
            f"read the table through a view that gives the {field} as text (for an id, "
            "encode(id, 'hex') AS id)"
        )
    if isinstance(value, (dict, list, tuple, bool)):
        kind = {dict: "an object", bool: "a boolean"}.get(type(value), "a list")
        raise ImportSourceError(
            f"{where or 'a record'}: the {field} is {kind} ({_clip(value)}), not a string or "
            f"a number; give each record's {field} as a string"
        )


def _clip(value: Any) -> str:
    shown = json.dumps(value, default=str)
    return shown if len(shown) <= 60 else shown[:60] + "..."


# the most digits an integer of a numeric is kept exact with (Python's int-to-text limit
# is 4,300 digits: one longer could not be written, even in an error)
_MOST_DIGITS = 4000


def _decimal(value: Decimal) -> int | float | str:
    """A PostgreSQL ``numeric`` (psycopg's Decimal) as the JSON number it is, where one
    holds it exactly: an integer, or a float that reads back as the same decimal. It
    became its string form, so a price 9.99 was stored as ``"9.99"``, which no numeric
    filter matches; only a value with more digits than a float keeps stays a string, as
    the exact text. NaN and infinities stay so, as floats, for validation to refuse
    (``unstorable``, like a float's): JSON has no form of them. An integer beyond 64 bits
    is a float where one holds it exactly (``1e20``), as ragstore reads stored JSON
    (:func:`ragstore.db.database.stored_json`): as an integer, validation refused it.
    Any other integer beyond 64 bits stays the exact integer, for validation to refuse as
    ``unstorable`` (as a jsonb one is, :func:`ragstore.imports.postgres._source_int`, and
    a JSONL one): it became its string form, ``"12345678901234567890"``, stored and called
    imported, a number no numeric filter matches. One of over 4,000 digits (Python writes
    no integer past 4,300) is the float it rounds to, infinite: refused all the same."""
    if not value.is_finite():
        return float(value)
    as_float = float(value)
    if value == value.to_integral_value():
        if INT64_MIN <= value <= INT64_MAX:
            return int(value)
        if Decimal(repr(as_float)) == value or value.adjusted() >= _MOST_DIGITS:
            return as_float
        return int(value)
    return as_float if Decimal(repr(as_float)) == value else str(value)


def json_safe(value: Any) -> Any:
    """Metadata as JSON can hold it: dates and other objects become their string form.

    A NaN or infinite number is kept as it is, for validation to find (``unstorable``,
    naming the record and the key): it became ``null``, so a JSONL ``"score": NaN``
    (Python's JSON reader takes it) was stored as another value than the source's and
    called imported and verified, where ``add_texts``, the HTTP API and the CLI refuse
    such metadata."""
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        pass
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float):
        return value  # NaN / inf: JSON has no form of them; validation refuses them
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Decimal):
        return _decimal(value)
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    return str(value)
