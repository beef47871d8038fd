"""Which reader a SOURCE argument means: a URL, a Chroma directory, or a file by suffix."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from ragstore.errors import ImportSourceError, UnsupportedFormatError
from ragstore.imports.chroma import ChromaSource, is_chroma_dir
from ragstore.imports.files import JsonlSource, NumpySource
from ragstore.imports.postgres import (
    LangChainPGVectorSource,
    LlamaIndexPGVectorSource,
    PostgresTableSource,
)
from ragstore.imports.records import Source

FORMATS = ("jsonl", "numpy", "postgres", "chroma", "langchain-pgvector", "llamaindex-pgvector")
URL_FORMATS = ("postgres", "langchain-pgvector", "llamaindex-pgvector")
# a compressed file's suffix, with the command that unpacks it
UNPACK = {
    ".gz": "gunzip -k",
    ".bz2": "bunzip2 -k",
    ".xz": "unxz -k",
    ".zst": "unzstd",
    ".zip": "unzip",
}


@dataclass
class SourceOptions:
    format: str | None = None
    sidecar: Path | None = None
    array: str | None = None
    table: str | None = None
    id_column: str = "id"
    text_column: str | None = None
    vector_column: str | None = None
    metadata_column: str | None = None
    bytea_dtype: str = "float32"
    chroma_collection: str | None = None
    source_collection: str | None = None  # a LangChain PGVector collection


def detect_format(source: str) -> str:
    if source.startswith(("postgresql://", "postgres://")):
        return "postgres"
    path = Path(source)
    if not path.exists():
        from ragstore.files import not_ingestible, printable

        # a link that loops or leads nowhere named as such, not as "no such file"
        raise not_ingestible(path, printable(source))
    if path.is_dir():
        if is_chroma_dir(path):
            return "chroma"
        raise UnsupportedFormatError(
            f"{source} is a directory but not a Chroma persistent directory (no "
            "chroma.sqlite3); give a .jsonl, .npy or .npz file, or a postgresql:// URL"
        )
    suffix = path.suffix.lower()
    if suffix in UNPACK:
        # it was "cannot tell the store's format from .gz", and --format jsonl then read
        # the compressed bytes
        raise UnsupportedFormatError(
            f"{source} is compressed ({suffix}); unpack it first ({UNPACK[suffix]} "
            f"{shlex.quote(source)}) and import the unpacked file"
        )
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".npy", ".npz"):
        return "numpy"
    raise UnsupportedFormatError(
        f"{source}: cannot tell the store's format from {suffix or 'no suffix'}; importable: "
        ".jsonl/.ndjson, .npy/.npz with a sidecar, a Chroma directory, a postgresql:// URL "
        "(or say --format jsonl|numpy|postgres|chroma|langchain-pgvector|llamaindex-pgvector)"
    )


def _refuse_column_flags(fmt: str, opts: SourceOptions) -> None:
    """ImportSourceError for a flag a library's layout does not take: its columns are the
    library's, and a flag that would be ignored (``--text-column``, ``--table`` for
    LangChain's fixed tables) is named instead of importing other columns than asked."""
    given = [
        flag
        for flag, value in (
            ("--id-column", opts.id_column != "id"),
            ("--text-column", opts.text_column is not None),
            ("--vector-column", opts.vector_column is not None),
            ("--metadata-column", opts.metadata_column is not None),
            ("--table", fmt == "langchain-pgvector" and opts.table is not None),
        )
        if value
    ]
    if given:
        raise ImportSourceError(
            f"--format {fmt} reads the library's own columns, so {', '.join(given)} would be "
            "ignored; leave it out, or read another layout with --format postgres --table NAME"
        )


def open_source(source: str, opts: SourceOptions) -> Source:
    fmt = opts.format or detect_format(source)
    if fmt not in FORMATS:
        raise ImportSourceError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    if opts.source_collection is not None and fmt != "langchain-pgvector":
        raise ImportSourceError(
            "--source-collection names a LangChain PGVector collection: give it with "
            "--format langchain-pgvector (a Chroma collection is --chroma-collection)"
        )
    if fmt in URL_FORMATS and not source.startswith(("postgresql://", "postgres://")):
        raise ImportSourceError(
            f"--format {fmt} reads a PostgreSQL database: give its postgresql:// URL, not "
            f"{source!r}"
        )
    if fmt in ("langchain-pgvector", "llamaindex-pgvector"):
        _refuse_column_flags(fmt, opts)
    if fmt == "langchain-pgvector":
        return LangChainPGVectorSource(source, opts.source_collection)
    if fmt == "llamaindex-pgvector":
        if not opts.table:
            raise ImportSourceError(
                "a LlamaIndex PGVectorStore source needs its table_name: --table NAME "
                "(the table read is data_NAME)"
            )
        return LlamaIndexPGVectorSource(source, opts.table)
    if fmt == "postgres":
        if not opts.table:
            raise ImportSourceError(
                "a PostgreSQL source needs the table: --table NAME (LangChain's PGVector "
                "tables are read with --format langchain-pgvector, LlamaIndex's "
                "PGVectorStore with --format llamaindex-pgvector --table NAME)"
            )
        return PostgresTableSource(
            source,
            opts.table,
            id_column=opts.id_column,
            text_column=opts.text_column,
            vector_column=opts.vector_column,
            metadata_column=opts.metadata_column,
            bytea_dtype=opts.bytea_dtype,
        )
    path = Path(source)
    if fmt == "chroma":
        return ChromaSource(path, opts.chroma_collection)
    if fmt == "numpy":
        return NumpySource(path, opts.sidecar, opts.array)
    return JsonlSource(path)
