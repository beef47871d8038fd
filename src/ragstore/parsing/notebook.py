"""Jupyter notebooks (``.ipynb``): the author's cells, in order, read as one Markdown text.

Markdown cells are the notebook's prose and headings, so they keep their Markdown (a
``## Results`` cell opens a section that the code cells after it belong to); each code
cell becomes a fenced block in the kernel's language; raw cells are paragraphs. The text is
then parsed by the Markdown parser, so a notebook gets the same sections, code blocks and
chunking as any Markdown file.

Outputs are left out: they are what one run computed (logs, reprs, plots as base64), not
the author's words, and they change on every run while the cells stay the same, so the
cells' chunks, and their vectors, are reused when a re-run notebook is ingested again.
Formats 4 (``cells``) and 3 (``worksheets``, code in ``input``) are read.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

from ragstore.errors import CorruptDocumentError, EmptyDocumentError
from ragstore.models import ParsedDocument
from ragstore.parsing.markdown import parse_markdown

_BACKTICKS = re.compile(r"`{3,}")
_LANGUAGE = re.compile(r"[A-Za-z0-9_+.#-]+")


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    return "an object" if isinstance(value, dict) else "a list"


def _source(cell: dict[str, Any], key: str) -> str:
    """A cell's text: a string, or a list of strings (its lines). Anything else is refused
    (ValueError saying what it holds): ``str()`` of an object or a NaN stored "{'a': 1}"
    or "nan" as the cell's text, which no notebook writes."""
    value = cell.get(key, "")
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, list):
        for part in value:
            if not isinstance(part, str):
                raise ValueError(f"its {key} holds {_json_kind(part)} among its lines")
        return "".join(value)
    raise ValueError(f"its {key} is {_json_kind(value)}, not text")


def _fenced(code: str, language: str) -> str:
    """``code`` in a fence longer than any run of backticks inside it."""
    longest = max((len(m.group()) for m in _BACKTICKS.finditer(code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{code.rstrip()}\n{fence}"


def _language(notebook: dict[str, Any]) -> str:
    meta = notebook.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    for holder, key in (("language_info", "name"), ("kernelspec", "language")):
        section = meta.get(holder)
        if isinstance(section, dict) and isinstance(section.get(key), str):
            found = _LANGUAGE.fullmatch(section[key].strip().lower())
            if found:
                return found.group()
    return ""


def _cells(notebook: dict[str, Any]) -> list[dict[str, Any]]:
    if isinstance(notebook.get("cells"), list):
        return [c for c in notebook["cells"] if isinstance(c, dict)]
    sheets = notebook.get("worksheets")  # nbformat 3
    if isinstance(sheets, list):
        return [
            c
            for sheet in sheets
            if isinstance(sheet, dict) and isinstance(sheet.get("cells"), list)
            for c in sheet["cells"]
            if isinstance(c, dict)
        ]
    raise ValueError("it has no cells")


def notebook_markdown(text: str, name: str) -> str:
    """The notebook's cells as one Markdown text (what :func:`parse_notebook` parses)."""
    try:
        notebook = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptDocumentError(
            f"{name}: not a readable notebook (invalid JSON at line {exc.lineno}, column "
            f"{exc.colno}: {exc.msg}); save it again from Jupyter"
        ) from None
    except ValueError as exc:
        # Python's limit on the digits of an integer (4300): the parser's own message told
        # the user to call sys.set_int_max_str_digits(); no notebook writes such a number
        if "digits" not in str(exc):
            raise
        raise CorruptDocumentError(
            f"{name}: not a readable notebook (its JSON holds a number of thousands of "
            "digits, which no notebook writes); save it again from Jupyter"
        ) from None
    try:
        if not isinstance(notebook, dict):
            raise ValueError("its JSON is not an object")
        cells = _cells(notebook)
    except ValueError as exc:
        raise CorruptDocumentError(
            f"{name}: not a Jupyter notebook ({exc}); save it again from Jupyter"
        ) from None
    language = _language(notebook)
    parts: list[str] = []
    for number, cell in enumerate(cells, 1):
        try:
            body = _cell_markdown(cell, language)
        except ValueError as exc:
            raise CorruptDocumentError(
                f"{name}: not a Jupyter notebook (cell {number}: {exc}); save it again from Jupyter"
            ) from None
        if body.strip():
            parts.append(body.strip("\n"))
    return "\n\n".join(parts) + "\n"


def _cell_markdown(cell: dict[str, Any], language: str) -> str:
    """One cell as Markdown (see the module docstring); ValueError when its text is not
    text."""
    kind = cell.get("cell_type")
    if kind == "markdown" or kind == "heading":  # nbformat 3 had heading cells
        body = _source(cell, "source")
        if kind == "heading" and body.strip():
            level = cell.get("level")
            depth = level if isinstance(level, int) and 1 <= level <= 6 else 1
            body = "#" * depth + " " + " ".join(body.split())
        return body
    if kind == "code":
        code = _source(cell, "source") or _source(cell, "input")
        return _fenced(code, language) if code.strip() else ""
    return _source(cell, "source")  # raw cells, and any kind a later format adds


def parse_notebook(text: str, name: str) -> ParsedDocument:
    markdown = notebook_markdown(text, name)
    if not markdown.strip():
        raise EmptyDocumentError(f"{name}: the notebook has no cells with text; nothing to ingest")
    return replace(parse_markdown(markdown, name), format="notebook")
