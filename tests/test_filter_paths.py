"""A metadata key holding a dot or a backslash is named in a filter's dotted path with a
backslash escape (``version\\.major``, ``back\\\\slash``): filters, their index probes, the
indexed fields and the fields sample all read and write the same form, while a plain
dotted path still reads the nested keys. A bad escape is refused, saying how to write it."""

from __future__ import annotations

from typing import Any

import pytest

from ragstore.db import field_indexes
from ragstore.db.field_indexes import FieldIndex, parse_field
from ragstore.errors import InputError, InvalidFilterError
from ragstore.integrations.backend import metadata_field
from ragstore.metadata_paths import BUILTIN_FIELDS, field_name
from ragstore.runtime import Runtime
from ragstore.search import compile_filter, search
from ragstore.search.fields import describe_fields
from ragstore.search.filters import BUILTINS
from tests.search_helpers import Doc, make_collection, write_docs

COLL = "dotted-keys"


@pytest.fixture(scope="module")
def dotted(rt: Runtime) -> Runtime:
    coll = make_collection(rt, COLL)
    write_docs(
        rt,
        coll,
        [
            Doc("literal.md", ["Release three."], metadata={"version.major": 3, "a.b": 1}),
            Doc("nested.md", ["Release two."], metadata={"version": {"major": 2}, "a": {"b": 2}}),
            # the literal key and the nested path of the same spelling, in one document
            Doc("both.md", ["Release one."], metadata={"a.b": 1, "a": {"b": 2}}),
            Doc(
                "slash.md", ["Release for Windows."], metadata={"back\\slash": "x", "c\\": {"d": 5}}
            ),
        ],
    )
    return rt


def sources(rt: Runtime, where: dict[str, Any], mode: str = "vector") -> set[str]:
    hits = search(rt, "release", collection=COLL, k=20, where=where, mode=mode)  # type: ignore[arg-type]
    return {h.source for h in hits}


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"version\\.major": 3}, {"literal.md"}),
        ({"version.major": 2}, {"nested.md"}),
        ({"version\\.major": 2}, set()),
        ({"a\\.b": 1}, {"literal.md", "both.md"}),
        ({"a.b": 2}, {"nested.md", "both.md"}),
        ({"a\\.b": {"$in": [1, 7]}, "a.b": {"$exists": True}}, {"both.md"}),
        ({"document.version\\.major": {"$gte": 3}}, {"literal.md"}),
        ({"$not": {"a\\.b": {"$exists": True}}}, {"nested.md", "slash.md"}),
        ({"back\\\\slash": "x"}, {"slash.md"}),
        ({"c\\\\.d": 5}, {"slash.md"}),
    ],
)
def test_an_escaped_dot_names_the_literal_key(
    dotted: Runtime, where: dict[str, Any], expected: set[str]
) -> None:
    """Both search lists: the vector one through the candidates' containment probes
    (``{"version.major": 3}``, not ``{"version": {"major": 3}}``), the full-text one
    through the condition alone."""
    assert sources(dotted, where) == expected
    assert sources(dotted, where, "fulltext") == expected


def test_a_field_index_takes_an_escaped_key_and_lists_it_escaped(dotted: Runtime) -> None:
    """The index is of the one key ``version.major`` (not of ``version`` -> ``major``), is
    listed by the field a filter names, and a range on that field is found through it."""
    index = parse_field("version\\.major", "number")
    assert index == FieldIndex(("version.major",), "number")
    assert index.field == "version\\.major"
    where = {"version\\.major": {"$gt": 2}}
    assert compile_filter(where, indexed=[index]).candidates is not None
    with dotted.db.connect(autocommit=True) as conn:
        assert field_indexes.add(conn, index)
    try:
        assert index in field_indexes.listed(dotted.db)
        assert sources(dotted, where) == {"literal.md"}
    finally:
        with dotted.db.connect(autocommit=True) as conn:
            field_indexes.drop_indexes(conn, index)


def test_the_fields_sample_names_a_dotted_key_by_its_escaped_field(dotted: Runtime) -> None:
    """Before the escape a dotted key was left out as a path no filter can name."""
    got = describe_fields(dotted, dotted.collection(COLL))
    fields = {m["field"]: m["keys"] for m in got["metadata"]}
    assert fields["version\\.major"] == ["version.major"]
    assert fields["a\\.b"] == ["a.b"] and fields["a.b"] == ["a", "b"]
    assert fields["back\\\\slash"] == ["back\\slash"] and fields["c\\\\.d"] == ["c\\", "d"]
    assert got["unfilterable"]["count"] == 0


@pytest.mark.parametrize(
    ("field", "found", "meant"),
    [
        ("version\\major", "a backslash before 'm'", "version\\\\major"),
        ("a.b\\", "a lone backslash at its end", "a.b\\\\"),
    ],
)
def test_a_bad_escape_is_refused_with_the_right_form(field: str, found: str, meant: str) -> None:
    with pytest.raises(InvalidFilterError) as caught:
        compile_filter({field: 1})
    message = caught.value.message
    assert f"invalid filter path '{field}': {found}" in message
    assert "version\\.major for the key 'version.major'" in message
    assert message.endswith(f"for a key holding a backslash write {meant}")
    with pytest.raises(InputError, match="no filter could name it"):
        parse_field(field, "number")


def test_a_framework_key_too_long_once_escaped_is_refused_not_read_nested() -> None:
    """A LangChain or LlamaIndex key is one top-level key: one whose escaped field is over
    the path limit (each dot doubles) was passed on raw, and read as a nested path."""
    key = "a." * 100 + "b"  # 201 characters, 301 escaped
    with pytest.raises(InvalidFilterError, match="at most 256 characters"):
        compile_filter({metadata_field(key): 1})
    assert compile_filter({metadata_field("v1.2"): 1}).params["w0"] == ["v1.2"]


def test_a_prefixed_field_too_long_with_its_prefix_is_named_by_none() -> None:
    """A key read as an operator is named ``document.KEY``: one of 251 characters was
    listed as a field (``field_name`` measured the path without its prefix) that every
    filter refused, its key being 260 characters."""
    long, short = ("$" + "x" * 250,), ("$" + "x" * 246,)
    assert field_name(long, "document") is None
    with pytest.raises(InvalidFilterError, match="at most 256 characters"):
        compile_filter({"document." + long[0]: 1})
    name = field_name(short, "document")
    assert name == "document." + short[0] and len(name) == 256
    assert compile_filter({name: 1}).params["w0"] == list(short)


def test_the_path_grammar_knows_every_built_in() -> None:
    # a built-in the grammar (metadata_paths.py) does not name would be taken as a metadata
    # path: indexed (db/field_indexes.py) and named bare (field_name) where a filter reads
    # the column instead
    assert tuple(BUILTINS) == BUILTIN_FIELDS
