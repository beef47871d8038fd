"""docs/python.md runs: its ```` ```python runnable ```` blocks, in order, as one notebook;
so does README.md's.

They run in this process (the model is already loaded) with ``RAGSTORE_DATABASE_URL``
pointing at the test module's fresh database, so ``Store()`` there is a user's
``Store()`` here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ragstore.config import Settings

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "python.md"
_BLOCK = re.compile(r"^```python runnable[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def test_python_page_runs_as_a_notebook(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = _BLOCK.findall(PAGE.read_text(encoding="utf-8"))
    assert len(blocks) >= 4, "docs/python.md lost its runnable examples"
    assert settings.database_url is not None
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", settings.database_url.get_secret_value())
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(settings.data_dir))
    namespace: dict[str, object] = {"__name__": "docs_python"}
    try:
        for n, block in enumerate(blocks, 1):
            exec(compile(block, f"docs/python.md block {n}", "exec"), namespace)
    finally:
        for value in namespace.values():
            close = getattr(value, "close", None)
            if callable(close) and type(value).__name__ == "Store":
                close()
    assert "This is a document about pineapple" in capsys.readouterr().out


def test_readme_python_runs(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's in-process example (the HTTP client's needs a server: checked by hand)."""
    blocks = _BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    assert blocks, "README.md lost its runnable Python example"
    assert settings.database_url is not None
    monkeypatch.setenv("RAGSTORE_DATABASE_URL", settings.database_url.get_secret_value())
    monkeypatch.setenv("RAGSTORE_DATA_DIR", str(settings.data_dir))
    namespace: dict[str, object] = {"__name__": "readme_python"}
    for n, block in enumerate(blocks, 1):
        exec(compile(block, f"README.md block {n}", "exec"), namespace)
    hits = namespace["hits"]
    assert isinstance(hits, list)
    assert [h["metadata"] for h in hits] == [{"team": "db"}]
