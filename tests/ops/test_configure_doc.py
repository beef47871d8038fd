"""docs/operations/configure.md in step with the settings: a row for every setting, and
the bounds it states for each number those of the field's definition.

RAGSTORE_URL and RAGSTORE_API_KEY had no row, and no bound was written anywhere: an
operator learnt that RAGSTORE_SEARCH_K stops at 1000 from the error."""

from __future__ import annotations

import re
from pathlib import Path

from ragstore.config import (
    ENV_PREFIX,
    MAX_SERVER_MEMORY_KB,
    MIN_SERVER_MEMORY_KB,
    SERVE_ONLY,
    Settings,
    field_bounds,
)

PAGE = Path(__file__).resolve().parents[2] / "docs" / "operations" / "configure.md"
_UNITS = {"": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_NUMBER = r"([0-9][0-9,]*(?:\.[0-9]+)?)(?: (KiB|MiB|GiB|TiB))?"
_BOUNDS = re.compile(rf"(above )?{_NUMBER}(?: to|, up to) {_NUMBER}")


def _section(title: str) -> str:
    text = PAGE.read_text(encoding="utf-8")
    start = text.index(f"\n{title}\n")
    end = text.find("\n#", start + len(title) + 2)
    return text[start : end if end != -1 else len(text)]


def _rows(section: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| `")
    ]


def _value(number: str, unit: str | None) -> float:
    return float(number.replace(",", "")) * _UNITS[unit or ""]


def _numeric(name: str) -> bool:
    return Settings.model_fields[name].annotation in (int, float, int | None, float | None)


def test_every_setting_has_a_row() -> None:
    named = {
        variable
        for cells in _rows(_section("## Settings"))
        for variable in re.findall(r"`(RAGSTORE_[A-Z0-9_]+)`", cells[0])
    }
    settings = {
        ENV_PREFIX + name.upper() for name in Settings.model_fields if name not in SERVE_ONLY
    }
    assert settings - named == set()
    assert named - settings == set()  # no row of a setting that is gone


def test_the_bounds_written_are_the_fields() -> None:
    written: dict[str, str] = {}
    for variable, accepted in _rows(_section("### Bounds")):
        written[variable.strip("`").removeprefix(ENV_PREFIX).lower()] = accepted
    numeric = {name for name in Settings.model_fields if _numeric(name)}
    assert numeric - written.keys() == set(), "numbers without written bounds"
    for name in numeric:
        match = _BOUNDS.match(written[name])
        assert match, f"{name}: {written[name]!r} is not 'A to B' or 'above A, up to B'"
        above, low, low_unit, high, high_unit = match.groups()
        assert (
            _value(low, low_unit),
            above is None,
            _value(high, high_unit),
            True,
        ) == field_bounds(name), name
    memory = written["index_build_memory"]
    assert memory.startswith(f"{MIN_SERVER_MEMORY_KB}kB to {MAX_SERVER_MEMORY_KB}kB")


def test_every_number_setting_is_bounded_above() -> None:
    # a 401-digit RAGSTORE_RATE_LIMIT_PER_MINUTE passed and overflowed where it was used
    for name in Settings.model_fields:
        if _numeric(name):
            low, _, high, _ = field_bounds(name)
            assert low is not None and high is not None, name
