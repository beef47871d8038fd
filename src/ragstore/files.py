"""Finding the files to ingest and reading them within the size limit.

Explicit files are taken as given, folders are walked for known suffixes; a file is
never read past ``max_file_bytes`` (plus one byte to notice it is longer), so a file
that is huge, or grows while it is read, cannot take the process's memory with it.

Both sides of the wire walk a folder alike: ``ragstore ingest`` (the ingest service) and
the HTTP client's uploads (``_requests.py``, the CLI's ``--server``), and both name an
unreadable or not ingestible path with the same error. So this module stands below both,
on the standard library, :mod:`ragstore.errors` and the suffix table
(:mod:`ragstore.formats`) only: it was ``ragstore.ingest.files``, and the client's upload
of a folder loaded the ingest service, the database layer and the parsers with it.

A folder's walk stays inside the folder: it does not descend into linked folders
(``os.walk``'s default) and it passes over a linked file whose target lies outside.
Followed, such a link pulled files from elsewhere into the collection (a link to
``/etc/passwd`` was ingested, or uploaded to a remote server, as that file), stored
under a source outside the folder that ``--sync`` then never looked at, so the document
outlived the link. A link named explicitly is still followed: that is the user's choice.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO, NamedTuple

from ragstore.errors import (
    FileTooLargeError,
    FileUnreadableError,
    InputError,
    PathNotFoundError,
    RagstoreError,
    ResourcesExhaustedError,
)
from ragstore.formats import supported_suffixes


class Discovered(NamedTuple):
    """What :func:`discover` found: ``files`` to ingest (resolved, sorted, each once),
    ``missing`` paths (neither file nor folder), ``outside``: links inside a walked
    folder whose target lies outside it, as (link, target), not followed, and
    ``unlisted``: folders that could not be listed, each with its error
    (:func:`unlisted_error`), and ``passed``: entries of a walked folder with a supported
    suffix that are not files to read (a pipe, socket or device; a link to nothing, to
    one of those, or round in a loop), to be reported as skipped with
    :func:`not_ingestible`'s reason: they were passed over without a word, so a document
    expected from the folder was silently missing from it."""

    files: list[Path]
    missing: list[Path]
    outside: list[tuple[Path, Path]]
    unlisted: list[tuple[Path, OSError]]
    passed: list[Path]


def discover(paths: Iterable[Path]) -> Discovered:
    """The files under ``paths``: a file named explicitly is always taken (its format is
    checked when it is parsed); inside folders only files with a supported suffix are
    taken, hidden ones and links leaving the folder skipped (see the module's text)."""
    suffixes = supported_suffixes()
    found: dict[Path, None] = {}
    missing: list[Path] = []
    outside: list[tuple[Path, Path]] = []
    unlisted: list[tuple[Path, OSError]] = []
    passed: list[Path] = []

    def cannot_list(exc: OSError) -> None:
        """``os.walk`` passes over a folder it cannot list: the folder's files were left
        out of the ingest without a word (a subfolder without read permission, the folder
        named itself). A folder removed meanwhile is simply gone."""
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            unlisted.append((Path(os.path.abspath(exc.filename or path)), exc))

    for path in paths:
        mode = stat_mode(path)
        if stat.S_ISREG(mode):
            found[path.resolve()] = None
        elif stat.S_ISDIR(mode):
            top = path.resolve()
            for root, dirs, names in os.walk(path, onerror=cannot_list):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                # the walk enters no linked folder, so this is where root really is: a
                # plain file needs no resolving (a path's every part looked up again)
                here = top / os.path.relpath(root, path)
                for name in sorted(names):
                    if name.startswith(".") or os.path.splitext(name)[1].lower() not in suffixes:
                        continue
                    p = Path(root, name)
                    try:
                        mode = os.lstat(p).st_mode
                    except OSError:
                        continue  # gone since the folder was listed
                    if stat.S_ISREG(mode):
                        found[here / name] = None
                    elif stat.S_ISLNK(mode) and stat.S_ISREG(stat_mode(p)):
                        target = p.resolve()
                        if target.is_relative_to(top):
                            found[target] = None
                        else:
                            outside.append((Path(os.path.abspath(p)), target))
                    else:
                        passed.append(here / name)
        else:
            missing.append(path)
    # a target another of ``paths`` holds is ingested from there: no need to mention it;
    # a folder given twice (or inside another given) is walked twice, and what it holds
    # that is not ingested was reported once per walk
    return Discovered(
        sorted(found),
        missing,
        list(dict.fromkeys(o for o in outside if o[1] not in found)),
        unlisted,
        list(dict.fromkeys(passed)),
    )


def unlisted_error(folder: Path, exc: OSError) -> FileUnreadableError:
    """The error of a folder :func:`discover` could not list: none of its files was read."""
    return FileUnreadableError(
        f"{printable(str(folder))}: cannot list this folder ({exc.strerror or exc}), so "
        "none of its files was ingested; check its permissions for the user running ragstore"
    )


def stat_mode(path: Path) -> int:
    """``path``'s mode, its links followed; 0 (neither file nor folder) where it cannot be
    looked at for any reason. ``Path.is_file()`` and ``is_dir()`` raise on errors other
    than a missing path or a loop: a name too long for the file system, a folder on the way
    without search permission, an I/O error. Such a path, named or the target of a link in
    a folder, crashed the whole ingest (local or remote) with a traceback; it is now one
    input that fails, saying why (:func:`not_ingestible`)."""
    try:
        return os.stat(path).st_mode
    except OSError:
        return 0


LINK_OUTSIDE_FOLDER = "link_outside_folder"  # the code a skipped link is reported with


def link_outside_detail(link: str, target: str, verb: str = "ingest") -> str:
    """What a report says of a link :func:`discover` did not follow; ``verb`` is what
    naming the file itself would do with it (ingest, upload)."""
    return (
        f"{link}: a link to {target}, outside the folder being ingested; not followed "
        f"(name the file itself to {verb} it)"
    )


def resolved(path: Path) -> Path:
    """``path`` made absolute with its links followed, as ``Path.resolve()`` does, except
    that a link loop (``a -> b -> a``) comes back as the path itself instead of raising:
    ``resolve()`` raises ``RuntimeError`` on one (before Python 3.13), which crashed an
    ingest that named such a link with a traceback instead of failing that path alone."""
    return Path(os.path.realpath(path))


def link_loops(path: Path) -> bool:
    """Whether following ``path``'s links goes round in a circle (``ELOOP``)."""
    try:
        path.stat()
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def sync_scopes(paths: Iterable[Path]) -> tuple[list[str], list[str]]:
    """(folder prefixes, exact file sources) a sync of ``paths`` is responsible for.

    A stored document under one of the folders, or named exactly, that is no longer on
    disk has vanished. Paths are resolved the way :func:`discover` resolves them. A file
    named is also covered under its own name (its folder resolved): one stored while it
    was a file and since replaced by a link is ingested under the link's target, and its
    old document, content and all, was out of the sync's reach, kept and never reported.
    """
    prefixes: list[str] = []
    exact: list[str] = []
    for path in paths:
        full = resolved(path)
        if stat.S_ISDIR(stat_mode(path)):
            prefixes.append(str(full).rstrip(os.sep) + os.sep)
        else:
            exact.append(str(full))
            own = str(resolved(path.parent) / path.name) if path.name else str(full)
            if own != str(full):
                exact.append(own)
    return prefixes, exact


def _open_nonblocking(path: str, flags: int) -> int:
    """``open``'s opener that does not wait for a pipe's writer (see :func:`read_bounded`)."""
    return os.open(path, flags | os.O_NONBLOCK)


def read_bounded(path: Path, limit: int, label: str | None = None) -> bytes:
    """The file's bytes; FileTooLargeError when it holds more than ``limit`` bytes.

    ``label`` is what messages call the file (an upload's name rather than its staging path).
    """
    return read_with_stat(path, limit, label)[0]


READ_TRIES = 3  # reads of a file that keeps changing under them before it is refused


def _version(st: os.stat_result) -> tuple[int, int, int]:
    """What changes when a file is written (or truncated, or replaced in place)."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_with_stat(
    path: Path, limit: int, label: str | None = None
) -> tuple[bytes, os.stat_result]:
    """The file's bytes (as :func:`read_bounded`) and its status as of those bytes.

    The status is taken on the open file before the read and compared after it: a file
    written meanwhile is read again (up to :data:`READ_TRIES` times), then refused. Its
    time used to be looked up by name after the content was parsed, so a file changed in
    between was stored with the old content and the new ``modified_at``; a file changed
    during the read was stored half old, half new, as if it were whole.
    """
    name = label or str(path)
    size = path.stat().st_size
    if size > limit:
        raise FileTooLargeError(
            f"{name}: {size} bytes is over the limit of {limit} bytes; "
            "raise RAGSTORE_MAX_FILE_BYTES to ingest it"
        )
    # opened without waiting, and checked to be a regular file before it is read: a file
    # replaced by a pipe after the folder was listed (or named through a link retargeted
    # meanwhile) blocked the open, and the whole ingest, until something wrote to the pipe
    with open(path, "rb", opener=_open_nonblocking) as fh:
        before = os.fstat(fh.fileno())
        if not stat.S_ISREG(before.st_mode):
            raise FileUnreadableError(
                f"{name}: not a regular file (a device, pipe or socket; replaced "
                "since the folder was listed?); copy its content to a file and ingest that"
            )
        os.set_blocking(fh.fileno(), True)
        for _ in range(READ_TRIES):
            data = _read_upto(fh, min(max(size, before.st_size), limit), limit)
            if len(data) > limit:
                raise FileTooLargeError(
                    f"{name}: grew past the limit of {limit} bytes while being read; "
                    "raise RAGSTORE_MAX_FILE_BYTES to ingest it"
                )
            after = os.fstat(fh.fileno())
            if _version(after) == _version(before):
                return data, before
            before = after
            fh.seek(0)
    raise FileUnreadableError(
        f"{name}: it kept changing while it was read ({READ_TRIES} tries), so no whole "
        "version of it could be stored; ingest it again once it is written"
    )


def _read_upto(fh: BinaryIO, size: int, limit: int) -> bytes:
    """Up to ``limit + 1`` bytes of ``fh``: what stat said plus a byte to notice growth,
    then the rest up to the limit (a read of limit + 1 bytes allocates them up front: a
    third of reading a small file went to that)."""
    want = size + 1
    data = fh.read(want)
    if len(data) == want and want <= limit:
        data += fh.read(limit + 1 - want)
    return data


def printable(name: str) -> str:
    """``name`` with the bytes a file system gave that are not UTF-8 escaped as ``\\xNN``
    (and any other lone surrogate, as a JSON body can carry, as ``\\udNNN``)."""
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return name.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def not_ingestible(path: Path, shown: str) -> InputError:
    """Why a named path that is neither a file nor a folder was not read: it is missing,
    a link to nothing or round in a loop, or a device, pipe or socket (reading a pipe
    could wait forever), or it cannot be looked at (a name too long, a folder on the way
    without search permission: ``Path.exists()`` raised those)."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return FileUnreadableError(
                f"{shown}: cannot look at it: {exc.strerror or exc}; check the path, and "
                "the permissions of the folders on the way for the user running ragstore"
            )
    if link_loops(path):
        return PathNotFoundError(
            f"{shown}: a symbolic link that loops (its links lead back to themselves); "
            "point it at a file or folder, or remove it"
        )
    if path.is_symlink() and not path.exists():
        target = printable(str(os.readlink(path)))
        return PathNotFoundError(f"{shown}: a symbolic link to {target}, which does not exist")
    if path.exists():
        return FileUnreadableError(
            f"{shown}: not a regular file or folder (a device, pipe or socket); "
            "copy its content to a file and ingest that"
        )
    return PathNotFoundError(f"{shown}: no such file or directory")


def gone_from_disk(source: str) -> bool:
    """Whether a stored source is known to be gone: nothing at its path (``ENOENT``, or a
    parent that is no longer a folder), or no longer a file of its own there. One that
    cannot be looked at (a folder whose search permission was taken away, an I/O error, a
    link loop) is not known to be gone, so ``--sync`` does not call it vanished and
    ``--prune`` does not delete it; with ``Path.exists()`` such a source raised
    ``PermissionError`` out of the whole ingest.

    A stored source is a real path (links resolved). Where the path now leads through a
    symbolic link (the file, or a folder on its way, replaced by a link) or ends at
    something that is not a regular file (a pipe, a folder), a folder's walk no longer
    ingests anything under that name: the document was kept, old content and all, and
    neither reported nor pruned, as if the file were still there."""
    try:
        st = os.stat(source)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return not stat.S_ISREG(st.st_mode) or os.path.realpath(source) != source


# an open or read that fails with these ran out of this process's or the system's
# descriptors or memory: another file fails the same, and this one is not to blame
NOT_THE_FILE = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})


def unreadable(path: Path | str, exc: OSError, verb: str = "ingest") -> RagstoreError:
    """The error for a file whose open or read failed with ``exc``: ``path_not_found``
    only when it is gone (ENOENT), ``file_unreadable`` for permissions, I/O errors and the
    like, and :func:`not_the_file`'s where the process ran out of descriptors or memory
    (:data:`NOT_THE_FILE`). ``verb`` is what the caller does with the file (ingest,
    upload, import), for what to do again. One judgement for every surface that reads a
    file: an ingest, the client's upload and an import; the upload and the import called
    an EMFILE "check the file's permissions", sending the user to a healthy file."""
    if exc.errno in NOT_THE_FILE:
        return not_the_file(str(path), "reading", exc, verb)
    if exc.errno == errno.ENOENT:
        return PathNotFoundError(f"{path}: no such file or directory (removed meanwhile?)")
    return FileUnreadableError(
        f"{path}: cannot read: {exc.strerror or exc}; check the "
        "file's permissions for the user running ragstore"
    )


def not_the_file(label: str, doing: str, exc: OSError, verb: str = "ingest") -> RagstoreError:
    """The error of a file whose ``doing`` (reading, preparing) failed for a reason that
    is not the file's (``exc``), saying so, not ``file_unreadable``; ``verb`` as
    :func:`unreadable`'s. The process out of descriptors or memory (:data:`NOT_THE_FILE`)
    is ``resources_exhausted``, a state that passes (503 with ``Retry-After``, exit 75),
    with its remedy; it was ``internal_error``, which TROUBLESHOOTING.md calls a bug to
    report. Any other OSError (a parser's own, a broken pipe) is still ``internal_error``."""
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        hint = f"; raise the open-files limit (ulimit -n) or {verb} fewer files at once"
    elif exc.errno == errno.ENOMEM:
        hint = f"; free memory or {verb} fewer files at once"
    else:
        hint = ""
    # the OS's words without the path it was given: ``label`` names the file, and an
    # upload's path is the server's staging file, which its API detail told the client
    said = f"[Errno {exc.errno}] {exc.strerror}" if exc.strerror else str(exc)
    message = (
        f"{label}: {doing} it failed in this process, not because of the file "
        f"({type(exc).__name__}: {said}); it was not stored: {verb} it again{hint}"
    )
    if exc.errno in NOT_THE_FILE:
        return ResourcesExhaustedError(message)
    return RagstoreError(message)
