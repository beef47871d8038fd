"""Reader for a Chroma persistent directory, through the ``chromadb`` package itself.

Reading through Chroma's own client (not its SQLite files) is what keeps this working
across Chroma's storage-format changes. Install it with ``pip install 'ragstore[chroma]'``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ragstore.errors import ImportSourceError, PathNotFoundError, RagstoreError
from ragstore.imports.records import Record, json_safe, to_id, to_text, to_vector

PAGE = 1000


def _client(path: Path) -> Any:
    try:
        import chromadb
        from chromadb.config import Settings as ChromaSettings
    except ImportError:
        raise ImportSourceError(
            "reading a Chroma directory needs the chromadb package: pip install 'ragstore[chroma]'"
        ) from None
    return chromadb.PersistentClient(
        path=str(path), settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    )


@contextmanager
def _read_by_chroma(path: Path) -> Iterator[None]:
    """Chroma failing to read the directory (a chroma.sqlite3 that is no database, a
    directory written by another chromadb version) as :class:`ImportSourceError` naming
    the directory and the installed chromadb; it escaped as Chroma's traceback. What it
    raises then: its own ChromaError, SQLite's errors, and ValueError, KeyError or
    TypeError from rows it does not expect; anything else passes through."""
    expected: tuple[type[Exception], ...] = (sqlite3.Error, ValueError, KeyError, TypeError)
    try:
        from chromadb.errors import ChromaError

        expected = (ChromaError, *expected)
    except ImportError:  # not installed: _client says how to install it
        pass
    try:
        yield
    except RagstoreError:
        raise
    except expected as exc:
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = f"chromadb {version('chromadb')} is installed"
        except PackageNotFoundError:  # metadata missing: say nothing of the version
            installed = "see the installed chromadb's version"
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ImportSourceError(
            f"Chroma could not read {path} ({type(exc).__name__}: {first}); is it a Chroma "
            f"persistent directory written by a compatible Chroma version? ({installed})"
        ) from None


def is_chroma_dir(path: Path) -> bool:
    return path.is_dir() and (path / "chroma.sqlite3").exists()


class ChromaSource:
    """One collection of a Chroma persistent directory."""

    def __init__(self, path: Path, collection: str | None = None) -> None:
        if not path.exists():
            raise PathNotFoundError(f"{path}: no such file or directory")
        if not is_chroma_dir(path):
            raise ImportSourceError(
                f"{path} is not a Chroma persistent directory (it has no chroma.sqlite3)"
            )
        self.path = path
        self.collection = collection
        self.space: str | None = None

    @property
    def description(self) -> str:
        return f"Chroma collection {self.collection or '?'} in {self.path}"

    def _collection(self) -> Any:
        with _read_by_chroma(self.path):
            return self._open_collection()

    def _open_collection(self) -> Any:
        client = _client(self.path)
        names = [c if isinstance(c, str) else c.name for c in client.list_collections()]
        if self.collection is None:
            if len(names) != 1:
                raise ImportSourceError(
                    f"{self.path} holds {len(names)} Chroma collections "
                    f"({', '.join(sorted(names)) or 'none'}); choose one with "
                    "--chroma-collection NAME"
                )
            self.collection = names[0]
        elif self.collection not in names:
            raise ImportSourceError(
                f"{self.path} has no Chroma collection {self.collection!r} "
                f"(collections: {', '.join(sorted(names)) or 'none'})"
            )
        coll = client.get_collection(self.collection, embedding_function=None)
        self.space = str((coll.metadata or {}).get("hnsw:space", "l2"))
        return coll

    def records(self) -> Iterator[Record]:
        """Every record, page by page; ImportSourceError where the collection's count moved
        while it was read.

        Chroma pages by offset, and nothing holds the collection still: a record deleted
        (or added) by a writer meanwhile shifted the pages after it, so a record that was
        there all along was never read (or one read twice), and the import verified and
        reported the set it had read as the store."""
        coll = self._collection()
        with _read_by_chroma(self.path):
            before = int(coll.count())
        offset = 0
        while True:
            with _read_by_chroma(self.path):
                page = coll.get(
                    include=["embeddings", "documents", "metadatas"], limit=PAGE, offset=offset
                )
            ids = page["ids"]
            if not ids:
                with _read_by_chroma(self.path):
                    after = int(coll.count())
                if before != after or offset != after:
                    raise ImportSourceError(
                        f"{self.description} changed while it was read ({before} records "
                        f"before, {after} after, {offset} read); stop what writes to it and "
                        "run the import again"
                    )
                return
            embeddings = page["embeddings"]
            documents = page["documents"] or [None] * len(ids)
            metadatas = page["metadatas"] or [None] * len(ids)
            for i, rid in enumerate(ids):
                where = f"Chroma collection {self.collection} id {rid}"
                yield Record(
                    to_id(rid),
                    to_text(documents[i]),
                    to_vector(embeddings[i], where),
                    json_safe(dict(metadatas[i] or {})),
                )
            offset += len(ids)
