"""Reader for a Chroma persistent directory, through the ``chromadb`` package itself.

Reading through Chroma's own client (not its SQLite files) is what keeps this working
across Chroma's storage-format changes. Install it with ``pip install 'ragstore[chroma]'``.

Chroma's client writes to every directory it opens, even to read it: it applies the
migrations its version knows to ``chroma.sqlite3`` (a directory of an older Chroma is
upgraded in place, after which that Chroma may no longer open it), records a write lock
in it, and rewrites the HNSW segment files. So the client is given a private copy
(:func:`_private_copy`), taken by reading only, and the source is never written.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ragstore.errors import ImportSourceError, PathNotFoundError, RagstoreError
from ragstore.imports.records import Record, json_safe, to_id, to_text, to_vector

PAGE = 1000
DB_NAME = "chroma.sqlite3"
# SQLite's own files beside the database: copied with it where it needs them, or read
# through it by the backup API
DB_SIDE_FILES = (f"{DB_NAME}-journal", f"{DB_NAME}-wal", f"{DB_NAME}-shm")
# copies taken while something kept changing the directory, before the import gives up
COPY_TRIES = 3

_FileState = dict[str, tuple[int, int]]


def _chromadb() -> tuple[Any, Any]:
    """The chromadb package and its Settings class; ImportSourceError saying how to
    install it where it is not (checked before the directory is copied: a copy of many
    gigabytes was taken first, to be told then to install a package)."""
    try:
        import chromadb
        from chromadb.config import Settings as ChromaSettings
    except ImportError:
        raise ImportSourceError(
            "reading a Chroma directory needs the chromadb package: pip install 'ragstore[chroma]'"
        ) from None
    return chromadb, ChromaSettings


def _client(path: Path) -> Any:
    """A Chroma client of ``path``, which it writes to: only ever a private copy."""
    chromadb, settings = _chromadb()
    return chromadb.PersistentClient(
        path=str(path), settings=settings(anonymized_telemetry=False, allow_reset=False)
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
    return path.is_dir() and (path / DB_NAME).exists()


def _file_state(path: Path) -> _FileState:
    """Every file under ``path`` with its size and mtime; a folder linked into it (a
    segment moved to another disk) followed, as Chroma follows it."""
    state: _FileState = {}
    for root, _dirs, files in os.walk(path, followlinks=True):
        for name in files:
            full = Path(root, name)
            rel = str(full.relative_to(path))
            st = full.stat()
            state[rel] = (st.st_size, st.st_mtime_ns)
    return state


def _copy_once(path: Path, dest: Path) -> bool:
    """Copy the directory into ``dest`` by reading it only; False where it changed meanwhile.

    The database through SQLite's backup API from a read-only connection (one consistent
    state, nothing written beside it), every other file by its bytes into a writable
    copy (the source's permissions are not carried: Chroma must be able to write its
    copy). A file removed meanwhile (a collection deleted) is a change too."""
    try:
        before = _file_state(path)
        for rel in before:
            if rel == DB_NAME or rel in DB_SIDE_FILES:
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path / rel, target)
    except FileNotFoundError as exc:
        if exc.filename is not None and Path(exc.filename).is_relative_to(dest):
            raise
        return False
    if _in_wal_mode(path / DB_NAME):
        # a connection to a database in WAL mode, even a read-only one, creates its -wal
        # and -shm files beside it and leaves them: the database and its log copied as
        # they are, for the copy's first connection to recover
        _copy_database_files(path, dest, f"{DB_NAME}-wal")
        return _file_state(path) == before
    try:
        _backup(path / DB_NAME, dest / DB_NAME)
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode != sqlite3.SQLITE_READONLY_ROLLBACK:
            raise
        # a journal left by a writer that stopped mid-transaction, which a read-only
        # connection may not roll back: the database and its journal copied as they are,
        # for the copy's first connection to roll back (the source keeps its journal)
        (dest / DB_NAME).unlink(missing_ok=True)
        _copy_database_files(path, dest, f"{DB_NAME}-journal")
    return _file_state(path) == before


def _in_wal_mode(database: Path) -> bool:
    """Whether the database's header says WAL mode (its read and write versions, bytes 18
    and 19, are 2), read from the file's first bytes without opening it in SQLite."""
    with database.open("rb") as fh:
        header = fh.read(20)
    return (
        len(header) == 20 and header.startswith(b"SQLite format 3\0") and header[18:20] == b"\2\2"
    )


def _copy_database_files(path: Path, dest: Path, side: str) -> None:
    """The database and its ``side`` file (where there is one), byte for byte."""
    for name in (DB_NAME, side):
        if name == DB_NAME or (path / name).exists():
            shutil.copyfile(path / name, dest / name)


def _backup(database: Path, target: Path) -> None:
    """SQLite's backup of ``database``, read through a read-only connection, into ``target``."""
    source = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
    try:
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)
        finally:
            copy.close()
    finally:
        source.close()


def _disk_full(exc: OSError | sqlite3.OperationalError) -> bool:
    """Whether copying failed for want of room: the file copy's ENOSPC (or quota), or
    SQLite's SQLITE_FULL from the database's backup (which was named as Chroma failing to
    read the source, "is it ... written by a compatible Chroma version?")."""
    if isinstance(exc, sqlite3.OperationalError):
        return exc.sqlite_errorcode == sqlite3.SQLITE_FULL
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _private_copy(path: Path) -> Path:
    """A copy of the Chroma directory ``path`` for Chroma's client to open, in a new
    temporary directory (the caller removes it); ``path`` itself is only read.

    Chroma's client writes to what it opens (see the module's docstring). A directory
    that changed while it was copied (a writer at work) is copied again, and refused
    after ``COPY_TRIES`` tries: the copy would mix its states. A copy that does not fit
    (the temporary directory's disk full) says where it was made and how to move it."""
    for _ in range(COPY_TRIES):
        dest = Path(tempfile.mkdtemp(prefix="ragstore-chroma-"))
        try:
            if _copy_once(path, dest):
                return dest
        except (OSError, sqlite3.OperationalError) as exc:
            shutil.rmtree(dest, ignore_errors=True)
            if _disk_full(exc):
                raise ImportSourceError(
                    f"reading {path} without changing it takes a private copy of it, and "
                    f"{dest.parent} has no room for one "
                    f"({exc.strerror if isinstance(exc, OSError) else exc}); set TMPDIR to a "
                    "directory with room for a copy of it"
                ) from None
            if isinstance(exc, sqlite3.OperationalError):
                raise  # the source's database: named by _read_by_chroma
            raise ImportSourceError(
                f"copying {path} into {dest.parent} to read it without changing it: "
                f"{exc.strerror or exc}; check the permissions of both for the user running "
                "ragstore"
            ) from None
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        shutil.rmtree(dest, ignore_errors=True)
    raise ImportSourceError(
        f"{path} kept changing while it was read ({COPY_TRIES} tries); stop what writes "
        "to it and run the import again"
    )


def chroma_space(coll: Any) -> str:
    """The distance Chroma searches ``coll`` by: its configuration's ``hnsw`` space, then
    its ``spann`` space, then the older ``hnsw:space`` metadata key, then Chroma's l2.

    Chroma 1.x keeps the space of a collection made with ``configuration={"hnsw":
    {"space": "cosine"}}`` in its configuration alone (its metadata None): read from the
    metadata only, such a collection was imported as l2 and ranked otherwise, unsaid."""
    config = getattr(coll, "configuration", None)
    if isinstance(config, dict):
        for index in ("hnsw", "spann"):
            space = (config.get(index) or {}).get("space")
            if isinstance(space, str) and space:
                return space
    return str((coll.metadata or {}).get("hnsw:space", "l2"))


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

    def _open_collection(self, client: Any) -> Any:
        names = [c if isinstance(c, str) else c.name for c in client.list_collections()]
        if not names:
            # "choose one with --chroma-collection" sent the user to pick among none
            raise ImportSourceError(
                f"{self.path} holds no Chroma collection: there is nothing to import "
                "(is it the directory the application's PersistentClient writes to?)"
            )
        if self.collection is None:
            if len(names) != 1:
                raise ImportSourceError(
                    f"{self.path} holds {len(names)} Chroma collections "
                    f"({', '.join(sorted(names))}); choose one with "
                    "--chroma-collection NAME"
                )
            self.collection = names[0]
        elif self.collection not in names:
            raise ImportSourceError(
                f"{self.path} has no Chroma collection {self.collection!r} "
                f"(collections: {', '.join(sorted(names))})"
            )
        coll = client.get_collection(self.collection, embedding_function=None)
        self.space = chroma_space(coll)
        return coll

    def records(self) -> Iterator[Record]:
        """Every record, page by page, of the directory as it was when it was copied.

        Chroma's client reads a private copy of the directory (:func:`_private_copy`),
        removed when the reading ends: it would have written to the source. Chroma pages
        by offset, and nothing else holds a collection still (a record deleted between
        two pages shifted the next one past a record that was there all along): the copy
        is one consistent state, taken again where a writer changed the source meanwhile,
        and its count is still compared before and after."""
        _chromadb()
        with _read_by_chroma(self.path):
            copy = _private_copy(self.path)
        client: Any = None
        try:
            with _read_by_chroma(self.path):
                client = _client(copy)
                coll = self._open_collection(client)
            yield from self._pages(coll)
        finally:
            if client is not None:
                client.close()
            shutil.rmtree(copy, ignore_errors=True)

    def _pages(self, coll: Any) -> Iterator[Record]:
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
                    to_id(rid, where),
                    to_text(documents[i], where),
                    to_vector(embeddings[i], where),
                    json_safe(dict(metadatas[i] or {})),
                )
            offset += len(ids)
