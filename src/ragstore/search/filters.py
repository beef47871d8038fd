"""The JSON filter language, compiled to a parameterised ``psycopg.sql`` condition.

A filter is a JSON object. Each key is a field and each value either a literal (equality)
or an object of operators; several keys are ANDed::

    {"chunk_type": "table", "year": {"$gte": 2020}, "$or": [{"team": "a"}, {"team": "b"}]}

Fields are the built-ins (``collection``, ``source``, ``title``, ``chunk_type``,
``created_at``, ``page``) or metadata paths with dots for nesting (``author.name``); a dot
within a key is escaped with a backslash, and a backslash doubled (``version\\.major``
names the key ``version.major``, as kubectl's JSONPath and Helm's ``--set`` do). A bare
path reads the chunk's metadata first and falls back to its document's; ``chunk.PATH`` and
``document.PATH`` read only one of them. Operators: ``$eq $ne $in $nin $gt $gte $lt $lte
$exists`` on fields and ``$and $or $not`` on filters. ``$ne`` and ``$nin`` also match
chunks that lack the field, as in MongoDB.

Compilation is pure: it returns SQL over the aliases ``c`` (chunks) and ``d`` (documents)
in which every key and every value is a bound parameter, never text spliced into the
statement, so no filter can change the query's shape. Anything malformed raises
:class:`~ragstore.errors.InvalidFilterError` naming the operator or path at fault.

The condition itself can use no index: a bare path reads the chunk's metadata and falls
back to the document's (``coalesce``), which no index holds. So where a filter pins a
metadata path or ``source`` to values (``$eq``, ``$in``, through ``$and`` and ``$or``),
compilation also gives :attr:`CompiledFilter.candidates`: a statement of the chunk ids
that can pass, found through the GIN indexes of ``chunks.metadata`` and
``documents.metadata`` (containment, ``@>``) or the documents' unique source index. A
value at a path implies containment of that path and value, so the set holds every chunk
the condition keeps (and some it does not: the condition is still applied). Search uses
it to rank a selective filter's chunks exactly instead of reading an index deep for them
(search/service.py). A range (``$gt``, ``$gte``, ``$lt``, ``$lte``) on a metadata path gives
candidates only where the path is an indexed field of the operand's kind
(db/field_indexes.py): the chunks whose own value is in range, and the chunks of the
documents whose value is. A range of ``source`` (a folder) or of ``created_at`` gives the
chunks of the documents in it, through the documents' indexes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from ragstore.db.field_indexes import CASTS, FieldIndex, typed, typed_value
from ragstore.errors import InvalidFilterError
from ragstore.metadata_paths import (
    FIELD_OPERATORS,
    LOGICAL_OPERATORS,
    names_operator,
    split_path,
)
from ragstore.models import ChunkType
from ragstore.validation import (
    INT32_MAX,
    INT32_MIN,
    check_int_range,
    check_value,
    json_form,
    loads_json,
)

COMPARISONS = {"$eq": "=", "$ne": "<>", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
RANGES = ("$gt", "$gte", "$lt", "$lte")
MAX_DEPTH = 32
# The planner's cost grows faster than linearly with a statement's conditions: 2,000 ANDed
# keys plan in about a second, 20,000 (300 kB of JSON, under the request limit) kept two
# backends busy for minutes. These bounds keep a filter's statement within a second.
MAX_CONDITIONS = 1000
MAX_VALUES = 10_000


@dataclass(frozen=True)
class _Builtin:
    column: sql.Composable
    kind: str  # text | int | timestamp
    nullable: bool

    @property
    def cast(self) -> str:
        return {"text": "text", "int": "integer", "timestamp": "timestamptz"}[self.kind]

    @property
    def array_cast(self) -> str:
        return self.cast + "[]"


BUILTINS: dict[str, _Builtin] = {
    "collection": _Builtin(
        sql.SQL("(SELECT name FROM collections WHERE id = c.collection_id)"), "text", False
    ),
    "source": _Builtin(sql.SQL("d.source"), "text", False),
    "title": _Builtin(sql.SQL("d.title"), "text", True),
    "chunk_type": _Builtin(sql.SQL("c.chunk_type"), "text", False),
    "created_at": _Builtin(sql.SQL("d.created_at"), "timestamp", False),
    "page": _Builtin(sql.SQL("c.page"), "int", True),
}
_CHUNK_TYPES = tuple(t.value for t in ChunkType)
_TRUE = sql.SQL("TRUE")


def parse_filter(text: str) -> dict[str, Any]:
    """A filter from its JSON text (the CLI's ``--where``)."""
    try:
        value = loads_json(text)
    except json.JSONDecodeError as exc:
        raise InvalidFilterError(
            f"the filter is not valid JSON: {exc.msg} at character "
            f'{exc.pos}; e.g. \'{{"chunk_type": "table"}}\''
        ) from None
    if not isinstance(value, dict):
        raise not_an_object(value)
    return value


def not_an_object(value: Any, field: str | None = None) -> InvalidFilterError:
    """The error for a filter ``value`` that is no JSON object; ``field``: the request's
    field that held it (``where``), named with how to send it."""
    said = f"the filter must be a JSON object, got {_json_type(value)}"
    if field is not None:
        said += f': send {field!r} as an object, e.g. {{"team": "ops"}}'
    return InvalidFilterError(said)


@dataclass
class CompiledFilter:
    """A SQL condition and the values bound to its named placeholders; ``candidates``,
    where the filter pins metadata values or sources, a ``SELECT`` of chunk ids (``id``)
    holding every chunk of collection ``%(cid)s`` that the condition keeps (see the module
    docstring)."""

    condition: sql.Composable
    params: dict[str, Any]
    candidates: sql.Composable | None = None
    # the candidates are documents chosen by their source or creation time alone: the
    # planner already ranks a vector list over them well (the columns have statistics
    # and indexes), so only the full-text list needs them
    by_document: bool = False
    # the most times one chunk can come in ``candidates``: once a UNION ALL branch (a
    # bare path's chunk and document branches both find a chunk of add_texts, which
    # stores its metadata on both)
    candidate_repeats: int = 1

    @property
    def restricts_nothing(self) -> bool:
        """Whether the filter keeps everything (``{}``, an ``$and`` of empty objects): a
        delete by it empties the collection."""
        return self.condition == _TRUE


def compile_filter(
    spec: Mapping[str, Any] | None,
    prefix: str = "w",
    indexed: Collection[FieldIndex] = (),
) -> CompiledFilter:
    """The SQL condition for ``spec`` over aliases ``c`` and ``d``; ``TRUE`` for no filter.

    Values are bound to placeholders named ``{prefix}0``, ``{prefix}1`` ...; pass
    :attr:`CompiledFilter.params` with the statement. ``indexed``: the indexed metadata
    fields, whose ranges give candidates.
    """
    if spec is None:
        return CompiledFilter(_TRUE, {})
    if not isinstance(spec, Mapping):
        raise not_an_object(spec)
    check_value(spec, "the filter", InvalidFilterError, json_only=True)
    spec = json_form(spec)  # a tuple is an array, as the HTTP client sends it
    _check_size(spec)
    compiler = _Compiler(prefix)
    condition = compiler.compile_object(spec, "", 0)
    probes = _probes(spec, frozenset(indexed))
    if probes is None:
        return CompiledFilter(condition, compiler.params)
    candidates, repeats = _candidates_sql(compiler, probes)
    by_document = all(s in _DOCUMENT_COLUMNS for s, _ in probes)
    return CompiledFilter(condition, compiler.params, candidates, by_document, repeats)


_DOCUMENT_COLUMNS = ("source", "range-source", "range-created")


# A probe: where to look ("chunk", "document" or "either") and an object the metadata
# must contain, or ("source", a document's source), or ("range-" and a scope, (an indexed
# field, its bounds as (operator, operand) pairs)), or ("range-source", the bounds of the
# documents' sources; "range-created", those of their creation times). A filter gives at
# most this many (an $in of more values is not probed).
Probe = tuple[str, Any]
MAX_PROBES = 100
# A path key that #> may read as an array position: PostgreSQL parses it with strtol, which
# takes leading white space and a sign, so "+0" and " 0" step into an array as "0" does.
# Probed by containment, such a key matched no array and a filter on it found no chunk.
_ARRAY_INDEX = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]+")


def _probes(spec: Mapping[str, Any], indexed: frozenset[FieldIndex]) -> list[Probe] | None:
    """Probes whose matches hold every chunk ``spec`` keeps, or None where the filter
    pins no metadata value or source and ranges no indexed field, source or creation
    time (``$ne``, ``$nin``, other ranges, ``$exists``, ``$not`` and the other built-in
    fields give none). Of several ANDed conditions, the one of fewest probes, values
    before ranges; an ``$or`` only where each alternative has probes. ``spec`` is
    already validated."""
    options: list[list[Probe] | None] = []
    for key, value in spec.items():
        if key == "$and":
            options.append(_fewest([_probes(item, indexed) for item in value]))
        elif key == "$or":
            each = [_probes(item, indexed) for item in value]
            if all(e is not None for e in each):
                options.append([p for e in each for p in e or ()])
        elif key == "source":
            options.append(_source_probes(value))
        elif key == "created_at":
            options.append(_created_probes(value))
        elif not key.startswith("$") and key not in BUILTINS:
            options.append(_field_probes(key, value, indexed))
    return _fewest(options)


def _fewest(options: list[list[Probe] | None]) -> list[Probe] | None:
    """The option of fewest probes; one without ranges first (a value found through the
    GIN indexes is usually the narrower condition, and a range's width is unknown)."""
    found = [o for o in options if o is not None and len(o) <= MAX_PROBES]
    return min(found, key=lambda o: (_ranges(o), len(o))) if found else None


def _ranges(probes: list[Probe]) -> bool:
    return any(scope.startswith("range-") for scope, _ in probes)


def _field_probes(field: str, value: Any, indexed: frozenset[FieldIndex]) -> list[Probe] | None:
    scope, path = "either", field
    for prefix in ("chunk.", "document."):
        if field.startswith(prefix):
            scope, path = prefix[:-1], field[len(prefix) :]
    keys = split_path(path)
    ranged = _range_probes(scope, keys, field, value, indexed)
    if any(_ARRAY_INDEX.fullmatch(k) for k in keys):
        return ranged  # #> may step into an array there, where containment would not match
    options: list[list[Probe] | None] = [
        [(scope, _nested(keys, v)) for v in values]
        for values in _pinned(field, value)
        if all(_indexable(v) for v in values)
    ]
    return _fewest([*options, ranged])


def _range_probes(
    scope: str, keys: list[str], field: str, value: Any, indexed: frozenset[FieldIndex]
) -> list[Probe] | None:
    """One probe for a field's bounds of one kind (number or string) where that kind of
    the path is indexed. The bounds are ANDed, so those of either kind hold every chunk
    that passes; the index reads the same typed value as the condition
    (``metadata_condition``), with the same path operator."""
    bounds = [(op, v) for op, v in _operators(field, value) if op in RANGES]
    for kind in ("number", "string"):
        index = FieldIndex(tuple(keys), kind)
        mine = [(op, v) for op, v in bounds if _kind(v) == kind]
        if mine and index in indexed:
            return [(f"range-{scope}", (index, mine))]
    return None


def ranges_metadata(spec: Any, depth: int = 0) -> bool:
    """Whether ``spec`` bounds a metadata path with a range operator somewhere (only then
    do the indexed fields matter to its compilation).

    Search asks this before :func:`compile_filter` has checked the filter, so a filter of
    any shape gives an answer here and is refused by the compilation: ``{"$and": 5}``
    raised a TypeError (a 500 through the API), a list or a string as the whole filter
    an AttributeError from ``Store.search``, and a filter nested a thousand deep in
    process a RecursionError, each before the filter's own error could be raised."""
    if not isinstance(spec, Mapping) or not spec or depth > MAX_DEPTH:
        return False
    for key, value in spec.items():
        if key in ("$and", "$or"):
            if isinstance(value, (list, tuple)) and any(
                ranges_metadata(v, depth + 1) for v in value
            ):
                return True
        elif key == "$not":
            continue  # a negated range gives no candidates
        elif (
            key not in BUILTINS and isinstance(value, Mapping) and any(op in RANGES for op in value)
        ):
            return True
    return False


def _kind(value: Any) -> str | None:
    if _is_number(value):
        return "number"
    return "string" if isinstance(value, str) else None


def _source_probes(value: Any) -> list[Probe] | None:
    """The documents named by ``source`` (``$eq``, ``$in``), or whose source is in a range
    (a folder: ``{"$gte": "docs/api/", "$lt": "docs/api0"}``): the unique
    ``(collection_id, source)`` btree finds both."""
    bounds = [(op, v) for op, v in _operators("source", value) if op in RANGES]
    ranged: list[Probe] | None = [("range-source", bounds)] if bounds else None
    pinned = [[("source", v) for v in values] for values in _pinned("source", value)]
    return _fewest([*pinned, ranged])


def _created_probes(value: Any) -> list[Probe] | None:
    """The documents created within a range of times, found through the index on
    ``(collection_id, created_at)`` (revision 0027)."""
    builtin = BUILTINS["created_at"]
    bounds = [
        (op, _builtin_value("created_at", builtin, op, v))
        for op, v in _operators("created_at", value)
        if op in RANGES
    ]
    return [("range-created", bounds)] if bounds else None


def _pinned(field: str, value: Any) -> list[list[Any]]:
    """The values each ``$eq`` (one) or ``$in`` (its array) of a field's operators allows."""
    return [
        [operand] if op == "$eq" else operand
        for op, operand in _operators(field, value)
        if op in ("$eq", "$in")
    ]


def _indexable(value: Any) -> bool:
    """Whether jsonb_path_ops can find the value: an empty array or object has no key."""
    return not (isinstance(value, (list, dict)) and not value)


def _nested(keys: list[str], value: Any) -> dict[str, Any]:
    for key in reversed(keys[1:]):
        value = {key: value}
    return {keys[0]: value}


def _candidates_sql(compiler: _Compiler, probes: list[Probe]) -> tuple[sql.Composable, int]:
    """The chunk ids the probes find, and the most times one can come (once a branch):
    one index scan of the chunks' metadata, one of the documents' and one of their
    sources at most, each for all its values (``@> ANY``: a bitmap scan per object,
    OR-ed), and for each range the chunks with their own value in it and the chunks of
    the documents with theirs. (Not a ``UNION``: its de-duplication reads every row
    before the first, and a broad filter's count stops at its bound.)"""
    branches: list[sql.Composable] = []
    for scope, probe in [p for p in probes if p[0].startswith("range-")]:
        if scope == "range-source":
            source = _between(compiler, sql.SQL("d.source"), "text", probe)
            branches.append(_chunks_of_documents(source))
            continue
        if scope == "range-created":
            created = _between(compiler, sql.SQL("d.created_at"), "timestamptz", probe)
            branches.append(_chunks_of_documents(created))
            continue
        index, bounds = probe
        cast = CASTS[index.kind]
        if scope in ("range-chunk", "range-either"):
            # the indexes' own expression (db/field_indexes.py), so that the planner uses them
            own = typed_value(sql.SQL("c.metadata"), index.keys, index.kind)
            branches.append(
                sql.SQL("SELECT c.id FROM chunks c WHERE c.collection_id = %(cid)s AND {}").format(
                    _between(compiler, own, cast, bounds)
                )
            )
        if scope in ("range-document", "range-either"):
            document_value = typed_value(sql.SQL("d.metadata"), index.keys, index.kind)
            branches.append(_chunks_of_documents(_between(compiler, document_value, cast, bounds)))
    chunk = [Jsonb(o) for scope, o in probes if scope in ("chunk", "either")]
    document = [Jsonb(o) for scope, o in probes if scope in ("document", "either")]
    sources = [o for scope, o in probes if scope == "source"]
    if chunk:
        branches.append(
            sql.SQL(
                "SELECT c.id FROM chunks c WHERE c.collection_id = %(cid)s"
                " AND c.metadata @> ANY({})"
            ).format(compiler.bind(chunk, "jsonb[]"))
        )
    if document:
        branches.append(
            _chunks_of_documents(
                sql.SQL("d.metadata @> ANY({})").format(compiler.bind(document, "jsonb[]"))
            )
        )
    if sources:
        branches.append(
            _chunks_of_documents(
                sql.SQL("d.source = ANY({})").format(compiler.bind(sources, "text[]"))
            )
        )
    if not branches:  # an empty $in: nothing passes
        return sql.SQL("SELECT NULL::bigint AS id WHERE FALSE"), 1
    return sql.SQL(" UNION ALL ").join(branches), len(branches)


def _between(
    compiler: _Compiler, value: sql.Composable, cast: str, bounds: list[tuple[str, Any]]
) -> sql.Composable:
    """``value`` within ``bounds`` ((operator, operand) pairs, ANDed), each operand bound
    as ``cast``: a filter's comparison, and a range probe's."""
    return _and(
        [
            sql.SQL("({} {} {})").format(
                byte_order(value, cast), sql.SQL(COMPARISONS[op]), compiler.bind(v, cast)
            )
            for op, v in bounds
        ]
    )


def byte_order(value: sql.Composable, cast: str) -> sql.Composable:
    """``value COLLATE "C"`` where it is compared as ``text``: a string range compares
    byte by byte whatever the database's collation. Under a language collation
    (``en_US.UTF-8``) punctuation is skipped at first and case folded, so a folder's range
    ``{"$gte": "docs/api/", "$lt": "docs/api0"}`` left out its files and let others in.
    The indexes such a range reads are built in the same collation (revision 0033), or
    the planner would not use them."""
    return sql.SQL('{} COLLATE "C"').format(value) if cast == "text" else value


def _chunks_of_documents(condition: sql.Composable) -> sql.Composable:
    """The chunk ids of the collection's documents that meet ``condition`` (over ``d``),
    document by document through the index on ``document_id``, so that a broad filter's
    count stops at its bound (as a join, the planner hashed every matching document
    against a scan of chunks; ``OFFSET 0`` keeps it from flattening the subquery back
    into that join)."""
    return sql.SQL(
        "SELECT c.id FROM documents d CROSS JOIN LATERAL"
        " (SELECT c.id FROM chunks c WHERE c.document_id = d.id OFFSET 0) c"
        " WHERE d.collection_id = %(cid)s AND {}"
    ).format(condition)


def _check_size(spec: Mapping[str, Any]) -> None:
    """Refuse a filter with more than :data:`MAX_CONDITIONS` field conditions or
    :data:`MAX_VALUES` values in its ``$in``/``$nin`` arrays, before compiling it."""
    conditions = values = 0
    pending: list[Any] = [spec]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
            continue
        if not isinstance(node, Mapping):
            continue
        for key, value in node.items():
            if isinstance(key, str) and key.startswith("$"):
                pending.append(value)  # a logical operator: count the filters inside
                continue
            ops = _operators(str(key), value)
            conditions += len(ops)
            values += sum(len(v) for op, v in ops if op in ("$in", "$nin") and isinstance(v, list))
    if conditions > MAX_CONDITIONS:
        raise InvalidFilterError(
            f"invalid filter: {conditions} conditions, over the limit of {MAX_CONDITIONS}; "
            "put the alternatives of one field in a single $in array"
        )
    if values > MAX_VALUES:
        raise InvalidFilterError(
            f"invalid filter: {values} values in $in/$nin arrays, over the limit of "
            f"{MAX_VALUES}; narrow the filter or split the search"
        )


def json_type(value: Any) -> str:
    """A parsed JSON value's type: null, boolean, number, string, array or object."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _json_type(value: Any) -> str:
    """The type as an error message names it: "a number", "an empty array"."""
    kind = json_type(value)
    if kind == "null":
        return kind
    if kind in ("array", "object") and not value:
        return f"an empty {kind}"
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def _where(at: str) -> str:
    return f"at {at!r}" if at else "at the top level"


def _and(parts: list[sql.Composable]) -> sql.Composable:
    if not parts:
        return _TRUE
    if len(parts) == 1:
        return parts[0]
    return sql.SQL("(") + sql.SQL(" AND ").join(parts) + sql.SQL(")")


class _Compiler:
    """Walks a filter, binding each value to a fresh named placeholder."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.params: dict[str, Any] = {}

    def bind(self, value: Any, cast: str | None = None) -> sql.Composable:
        name = f"{self.prefix}{len(self.params)}"
        self.params[name] = _exact(value) if cast == "numeric" else value
        placeholder: sql.Composable = sql.Placeholder(name)
        if cast:
            # CAST(), not ``::``: the full-text list takes the condition as SQL text with
            # the values quoted client-side (search/service.py), where a negative integer
            # is `` -2147483648``, and ``-2147483648::integer`` is ``-(2147483648::integer)``
            # to PostgreSQL, out of range; bound server-side the two are the same
            placeholder = sql.SQL("CAST({} AS {})").format(placeholder, sql.SQL(cast))
        return placeholder

    def compile_object(self, spec: Mapping[str, Any], at: str, depth: int) -> sql.Composable:
        if depth > MAX_DEPTH:
            raise InvalidFilterError(f"invalid filter {_where(at)}: nested deeper than {MAX_DEPTH}")
        parts: list[sql.Composable] = []
        for key, value in spec.items():
            if not isinstance(key, str):
                raise InvalidFilterError(f"invalid filter {_where(at)}: keys must be strings")
            if names_operator(key):
                parts.append(self.compile_logical(key, value, at, depth))
            else:
                parts.append(self.compile_field(key, value))
        return _and(parts)

    def compile_logical(self, op: str, value: Any, at: str, depth: int) -> sql.Composable:
        here = f"{at}.{op}" if at else op
        if op == "$not":
            if not isinstance(value, Mapping) or not value:
                raise InvalidFilterError(
                    f"invalid filter {_where(here)}: $not takes a non-empty "
                    f"filter object, got {_json_type(value)}"
                )
            return sql.SQL("(NOT coalesce({}, FALSE))").format(
                self.compile_object(value, here, depth + 1)
            )
        if op in ("$and", "$or"):
            if not isinstance(value, list) or not value:
                raise InvalidFilterError(
                    f"invalid filter {_where(here)}: {op} takes a non-empty "
                    f"array of filter objects, got {_json_type(value)}"
                )
            parts = []
            for i, item in enumerate(value):
                if not isinstance(item, Mapping) or not item:
                    # an empty object matched every chunk (in $or, the whole $or) where
                    # $not refused it: refused here too, as most likely a mistake
                    raise InvalidFilterError(
                        f"invalid filter {_where(f'{here}[{i}]')}: expected "
                        f"a non-empty filter object, got {_json_type(item)}; an empty "
                        "one names no condition: remove it or give it one"
                    )
                parts.append(self.compile_object(item, f"{here}[{i}]", depth + 1))
            if op == "$and":
                return _and(parts)
            return sql.SQL("(") + sql.SQL(" OR ").join(parts) + sql.SQL(")")
        if op in FIELD_OPERATORS:
            raise InvalidFilterError(
                f'invalid filter {_where(at)}: {op} needs a field, e.g. {{"year": {{"{op}": ...}}}}'
            )
        raise InvalidFilterError(
            f"invalid filter {_where(at)}: unknown operator {op!r}; use one "
            f"of {', '.join(LOGICAL_OPERATORS + FIELD_OPERATORS)}"
        )

    def compile_field(self, field: str, value: Any) -> sql.Composable:
        if field in BUILTINS:
            builtin = BUILTINS[field]
            return _and(
                [
                    self.builtin_condition(field, builtin, op, operand)
                    for op, operand in _operators(field, value)
                ]
            )
        if field.startswith("chunk."):
            path = self.bind(split_path(field[len("chunk.") :]), "text[]")
            expr: sql.Composable = sql.SQL("(c.metadata #> {})").format(path)
        elif field.startswith("document."):
            path = self.bind(split_path(field[len("document.") :]), "text[]")
            expr = sql.SQL("(d.metadata #> {})").format(path)
        else:
            path = self.bind(split_path(field), "text[]")
            expr = sql.SQL("coalesce(c.metadata #> {p}, d.metadata #> {p})").format(p=path)
        return _and(
            [
                self.metadata_condition(field, expr, op, operand)
                for op, operand in _operators(field, value)
            ]
        )

    def metadata_condition(
        self, field: str, expr: sql.Composable, op: str, operand: Any
    ) -> sql.Composable:
        if op == "$exists":
            return _exists(field, expr, operand)
        if op in ("$in", "$nin"):
            values = self.bind([Jsonb(v) for v in _array(field, op, operand)], "jsonb[]")
            if op == "$in":
                return sql.SQL("({} = ANY({}))").format(expr, values)
            return sql.SQL("({e} IS NULL OR NOT ({e} = ANY({v})))").format(e=expr, v=values)
        if op == "$eq":
            return sql.SQL("({} = {})").format(expr, self.bind(Jsonb(operand), "jsonb"))
        if op == "$ne":
            return sql.SQL("({} IS DISTINCT FROM {})").format(
                expr, self.bind(Jsonb(operand), "jsonb")
            )
        if op in COMPARISONS:
            kind = _kind(operand)
            if kind is not None:
                return _between(self, typed(expr, kind), CASTS[kind], [(op, operand)])
            raise InvalidFilterError(
                f"invalid filter at {field!r}: {op} compares numbers or "
                f"strings, got {_json_type(operand)}"
            )
        raise _unknown_operator(field, op)

    def builtin_condition(
        self, field: str, builtin: _Builtin, op: str, operand: Any
    ) -> sql.Composable:
        col = builtin.column
        if op == "$exists":
            return _exists(field, col, operand)
        if op in ("$in", "$nin"):
            values = self.bind(
                [_builtin_value(field, builtin, op, v) for v in _array(field, op, operand)],
                builtin.array_cast,
            )
            if op == "$in":
                return sql.SQL("({} = ANY({}))").format(col, values)
            return sql.SQL("({c} IS NULL OR NOT ({c} = ANY({v})))").format(c=col, v=values)
        if op == "$eq" and operand is None:
            return sql.SQL("({} IS NULL)").format(col)
        if op == "$ne" and operand is None:
            return sql.SQL("({} IS NOT NULL)").format(col)
        if op == "$ne":
            return sql.SQL("({} IS DISTINCT FROM {})").format(
                col, self.bind(_builtin_value(field, builtin, op, operand), builtin.cast)
            )
        if op in COMPARISONS:
            return sql.SQL("({} {} {})").format(
                byte_order(col, builtin.cast),
                sql.SQL(COMPARISONS[op]),
                self.bind(_builtin_value(field, builtin, op, operand), builtin.cast),
            )
        raise _unknown_operator(field, op)


def widen_sources(spec: Any, alternative: Callable[[str], str | None], depth: int = 0) -> Any:
    """``spec`` with each ``source`` value that ``alternative`` maps to another stored
    source also matching that one (``$eq``/``$in`` widened, ``$ne``/``$nin`` too).

    Every answer gives an upload's ``source`` as its name while the database keeps the
    server's ``<data dir>/uploads/...`` path (``uploads.names.answered``): a hit's source
    copied into ``where`` named no stored document and the search found nothing. The
    search passes the upload path a name would have; a text of that id still matches.
    Anything not understood is left for :func:`compile_filter` to refuse (nested deeper
    than it takes too: unread here, it was a RecursionError)."""
    if not isinstance(spec, Mapping) or depth > MAX_DEPTH:
        return spec
    out: dict[Any, Any] = {}
    for key, value in spec.items():
        if key in ("$and", "$or") and isinstance(value, list):
            out[key] = [widen_sources(item, alternative, depth + 1) for item in value]
        elif key == "$not":
            out[key] = widen_sources(value, alternative, depth + 1)
        elif key == "source":
            out[key] = _widened_source(value, alternative)
        else:
            out[key] = value
    return out


def _widened_source(value: Any, alternative: Callable[[str], str | None]) -> Any:
    def both(v: Any) -> list[Any]:
        other = alternative(v) if isinstance(v, str) else None
        return [v] if other is None or other == v else [v, other]

    ops: dict[str, Any] = {}
    for op, operand in _operators("source", value):
        if op in ("$eq", "$ne") and len(both(operand)) > 1:
            op, operand = ("$in" if op == "$eq" else "$nin"), both(operand)
        elif op in ("$in", "$nin") and isinstance(operand, list):
            operand = [w for v in operand for w in both(v)]
        if op in ops and op == "$in":  # two ANDed: what both allow
            operand = [v for v in ops[op] if v in operand]
        elif op in ops and op == "$nin":  # two ANDed: what either refuses
            operand = [*ops[op], *operand]
        ops[op] = operand
    return ops


def _operators(field: str, value: Any) -> list[tuple[str, Any]]:
    """``value`` as (operator, operand) pairs: a literal is ``$eq``."""
    if (
        isinstance(value, Mapping)
        and value
        and all(isinstance(k, str) and k.startswith("$") for k in value)
    ):
        return list(value.items())
    if isinstance(value, Mapping) and any(isinstance(k, str) and k.startswith("$") for k in value):
        raise InvalidFilterError(
            f"invalid filter at {field!r}: an object mixes operators and "
            "plain keys; use only operators ($eq, $gt, ...) in it"
        )
    return [("$eq", value)]


def _unknown_operator(field: str, op: str) -> InvalidFilterError:
    return InvalidFilterError(
        f"invalid filter at {field!r}: unknown operator {op!r}; use one of "
        f"{', '.join(FIELD_OPERATORS)}"
    )


def _exists(field: str, expr: sql.Composable, operand: Any) -> sql.Composable:
    if not isinstance(operand, bool):
        raise InvalidFilterError(
            f"invalid filter at {field!r}: $exists takes true or false, got {_json_type(operand)}"
        )
    return sql.SQL("({} IS {} NULL)").format(expr, sql.SQL("NOT" if operand else ""))


def _array(field: str, op: str, operand: Any) -> list[Any]:
    if not isinstance(operand, list):
        raise InvalidFilterError(
            f"invalid filter at {field!r}: {op} takes an array, got {_json_type(operand)}"
        )
    return operand


def _exact(value: Any) -> Any:
    """A float operand as the ``Decimal`` of the digits its JSON has (``repr``, as the
    stored metadata's JSON writes them), for a comparison as ``numeric``.

    psycopg sends a float as ``float8``, and ``float8`` cast to ``numeric`` keeps 15
    significant digits: ``{"$gte": 1717171717.1234567}`` compared as 1717171717.12346,
    so the vector list and the texts' selections kept other chunks than the stored
    (exact) numbers said, and than the full-text list, which takes the condition as
    client-side quoted text with every digit. ``float.__repr__``, not ``repr``: a NumPy
    float's ``repr`` is ``np.float64(...)``. Integers are sent exact already."""
    if isinstance(value, float):
        return Decimal(float.__repr__(value))
    return value


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _builtin_value(field: str, builtin: _Builtin, op: str, value: Any) -> Any:
    """``value`` checked and converted for the built-in column's type."""
    if builtin.kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidFilterError(
                f"invalid filter at {field!r}: {op} needs an integer, got {_json_type(value)}"
            )
        return check_int_range(
            value, f"invalid filter at {field!r}", INT32_MIN, INT32_MAX, InvalidFilterError
        )
    if not isinstance(value, str):
        raise InvalidFilterError(
            f"invalid filter at {field!r}: {op} needs a string, got {_json_type(value)}"
        )
    if builtin.kind == "timestamp":
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidFilterError(
                f"invalid filter at {field!r}: {value!r} is not an ISO 8601 "
                "date or time (e.g. '2026-01-31' or "
                "'2026-01-31T12:00:00+00:00')"
            ) from None
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    if field == "chunk_type" and value not in _CHUNK_TYPES:
        raise InvalidFilterError(
            f"invalid filter at {field!r}: unknown chunk type {value!r}; "
            f"use one of {', '.join(_CHUNK_TYPES)}"
        )
    return value
