"""Which format a file's suffix names: the one table the parsers and a folder's walk read.

A folder's walk (:func:`ragstore.files.discover`) takes the files whose suffix is listed
here, and the parsing registry proposes a parser by the same table. It lived in the
parsing package, so the HTTP client, which walks a folder to upload it, imported the
parsers (and the ingest service around the walk) only to learn which files to send. Plain
values, standard library only: the client and the parsers both stand on it.
"""

from __future__ import annotations

# suffix -> Pygments lexer alias (also the language name stored in a code chunk's metadata)
CODE_SUFFIXES: dict[str, str] = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".tsx": "typescript",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
    ".kt": "kotlin",
    ".scala": "scala",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hpp": "cpp",
    ".cs": "csharp",
    ".swift": "swift",
    ".rb": "ruby",
    ".php": "php",
    ".sql": "sql",
    ".sh": "bash",
    ".bash": "bash",
    ".zsh": "bash",
    ".lua": "lua",
    ".r": "r",
}

# suffix (lower case, with its dot; "" for a name without one) -> the format it proposes
SUFFIXES: dict[str, str] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".mdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".rst": "text",
    "": "text",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".pdf": "pdf",
    ".docx": "docx",
    ".epub": "epub",
    ".pptx": "pptx",
    ".ipynb": "notebook",
    **{suffix: "code" for suffix in CODE_SUFFIXES},
}


def supported_suffixes() -> set[str]:
    """The suffixes a folder's walk takes: every suffix of the table (a name without one is
    read as text when named, but a folder's walk passes over it)."""
    return {s for s in SUFFIXES if s}
