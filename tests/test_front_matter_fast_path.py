"""Front matter of plain ``key: value`` lines, read without YAML, equals what YAML reads.

The reference is PyYAML's safe loader (what ``parse_markdown`` uses), on generated lines
mixing the shapes the short path takes (words, decimal numbers) with those it must leave
to YAML: YAML 1.1's booleans and nulls (``yes``, ``On``, ``NULL``) as keys or values,
octal and sexagesimal numbers, dates, floats, quotes, comments, odd spacing.
"""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ragstore.parsing import markdown
from ragstore.parsing.markdown import parse_markdown

_KEYS = st.sampled_from(
    ["title", "bucket", "a", "_x", "Key_2", "on", "Off", "yes", "NO", "null", "y", "n", "2", "x-y"]
)
_VALUES = st.sampled_from(
    [
        "0", "1", "17", "01", "010", "1_000", "1:20", "1.5", ".5", "5.", "1e5", "0x1F", "-3",
        "Hello", "Hello World", "hello  world", "e1", "inf", "nan", ".inf", "x.", "a_b",
        "yes", "Yes", "on", "OFF", "true", "False", "null", "Null", "NULL", "~", "", "y",
        "2020-01-01", "12abc", "'quoted'", '"dq"', "a # comment", "a: b", "[1, 2]", "{a: 1}",
        "Hello World ", " Hello", "Hello 2", "x 010", "Hello_World 2020", "On and on",
        "123456789012345678901234567890", "yes no",
    ]
)  # fmt: skip
_LINES = st.tuples(_KEYS, st.sampled_from([": ", ":", ":  ", " : "]), _VALUES).map("".join)


def _reference(content: str) -> Any:
    try:
        data = yaml.load(content, Loader=markdown._YAML_LOADER) or {}
    except yaml.YAMLError:
        return "error"
    return {str(k): v for k, v in data.items()} if isinstance(data, dict) else "not a mapping"


@settings(max_examples=1500, deadline=None)
@given(st.lists(_LINES, min_size=1, max_size=6).map("\n".join))
def test_simple_front_matter_reads_as_yaml_does(content: str) -> None:
    simple = markdown._simple_front_matter(content)
    if simple is not None:
        assert simple == _reference(content)
        assert [type(v) for v in simple.values()] == [type(v) for v in _reference(content).values()]


def test_the_usual_shapes_take_the_short_path_and_the_document_keeps_its_metadata() -> None:
    for content, want in [
        ("bucket: 0", {"bucket": 0}),
        ("title: Hello World\nweight: 10", {"title": "Hello World", "weight": 10}),
        ("layout: post\nlayout: page", {"layout": "page"}),
    ]:
        assert markdown._simple_front_matter(content) == want
        doc = parse_markdown(f"---\n{content}\n---\n# Head\n\nBody text.\n", "a.md")
        assert doc.metadata == want
    for content in ["draft: yes", "on: 1", "n: 010", "date: 2020-01-01", "a: 1:20", "t: 'x'"]:
        assert markdown._simple_front_matter(content) is None
