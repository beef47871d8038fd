"""TROUBLESHOOTING.md explains every error code, with the right status and exit code."""

from __future__ import annotations

import re
from pathlib import Path

from ragstore.errors import all_error_classes

DOC = (Path(__file__).resolve().parents[2] / "TROUBLESHOOTING.md").read_text(encoding="utf-8")


def test_every_error_code_has_a_section_with_cause_and_fix() -> None:
    sections = dict(re.findall(r"^### `([a-z_]+)`\n(.*?)(?=^##|\Z)", DOC, re.M | re.S))
    for cls in all_error_classes():
        assert cls.code in sections, f"{cls.code} ({cls.__name__}) has no section"
        body = sections[cls.code]
        assert "**Cause.**" in body and "**Fix.**" in body, f"{cls.code}: cause or fix missing"


def test_the_table_gives_each_code_its_http_status_and_exit_code() -> None:
    rows = {
        code: (int(http), int(exit_code))
        for code, http, exit_code in re.findall(r"^\| `([a-z_]+)` \| (\d+) \| (\d+) \|", DOC, re.M)
    }
    for cls in all_error_classes():
        assert rows.get(cls.code) == (cls.http_status, cls.exit_code), cls.code
