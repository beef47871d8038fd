"""How ragstore's connections read stored JSON numbers (``database.stored_json``)."""

from __future__ import annotations

import json

import pytest

from ragstore.db.database import stored_json


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9223372036854775807", 9223372036854775807),  # the 64-bit edges stay integers
        ("-9223372036854775808", -9223372036854775808),
        ("123456789012345678", 123456789012345678),
        ("-0", 0),
        ("9223372036854775808", 9223372036854775808.0),  # beyond: the float it was
        ("100000000000000000000", 1e20),
        ("1" + "0" * 300, 1e300),  # how PostgreSQL writes 1e300 back
        ("9" * 5000, float("inf")),  # past int()'s 4,300 digits: no ValueError
    ],
)
def test_a_stored_number_reads_as_what_was_written(text: str, expected: float) -> None:
    value = stored_json(f'{{"x": {text}}}'.encode())["x"]
    assert value == expected and type(value) is type(expected), value


def test_text_without_long_numbers_reads_as_plain_json() -> None:
    doc = {"ids": list(range(1000)), "s": "1234567890123456789012 in a string", "f": 0.5}
    assert stored_json(json.dumps(doc)) == doc
    assert stored_json(memoryview(json.dumps({"a": [1, 2]}).encode())) == {"a": [1, 2]}
