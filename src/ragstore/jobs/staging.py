"""Uploaded documents: their stored source, and the private files their bytes wait in.

An upload named ``notes/a.md`` for collection ``docs`` is stored under the source
``<data dir>/uploads/docs/notes/a.md``, the same on every upload of that name: a re-upload
of unchanged bytes is left as it is, a changed one replaces the document. The bytes
themselves are streamed to a staging file unique to the request (``<data dir>/staging``),
read from there by ingest and removed when the request is done, whatever its outcome, so
concurrent uploads of one name never share a file and failed uploads leave nothing behind.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import logging
import os
import re
import tempfile
import threading
import time
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from ragstore.config import Settings
from ragstore.errors import (
    ConfigError,
    DiskFullError,
    InputError,
    NotReadyError,
    RagstoreError,
)

log = logging.getLogger(__name__)

# a part's limits: 128 characters, and 255 bytes in UTF-8 (what ext4, XFS, APFS and
# most filesystems allow a file name: the stored source is a path, and a part of 128
# CJK characters is 384 bytes)
_MAX_PARTS = 8
_PART_CHARS = 128
_PART_BYTES = 255
# besides letters, marks and digits of any script (Unicode categories L, M and N), a part
# may hold these; it starts with a letter or digit
_PUNCTUATION = frozenset(" _.,()+=@-")
_SEPARATORS = frozenset("/\\")


def upload_root(settings: Settings, collection: str) -> Path:
    return settings.data_dir / "uploads" / collection


def source_prefix(settings: Settings, collection: str, prefix: str | None) -> str | None:
    """A ``source_prefix`` filter as stored sources start: a relative one is a document's
    name (an upload's path below its folder), resolved under the collection's upload root.
    The HTTP route and ``Store.list_documents`` both use it: the Store matched a relative
    prefix against the stored absolute paths and found nothing where the Client found the
    documents. A relative prefix is a name's start, so it is normalised to NFC as names
    are: ``café`` typed decomposed (NFD) found no ``café.md``."""
    if prefix is not None and not prefix.startswith("/"):
        # in the composed form (NFC) the names are stored in (:func:`safe_name`)
        return str(upload_root(settings, collection).resolve() / _nfc(prefix))
    return prefix


def _shown(name: str, most: int = 200) -> str:
    """``name`` quoted for an error, cut: a name made up by a caller (an agent's tool
    call, a script) may be megabytes, and was echoed whole."""
    return repr(name[:most] + "...") if len(name) > most else repr(name)


def safe_name(name: str) -> PurePosixPath:
    """The upload's file name as a relative path, in Unicode's composed form (NFC);
    anything that could escape is refused.

    Letters, marks and digits of every script are allowed (``café.md``, ``日本語/メモ.md``
    were refused: users of most languages could not upload their files under their own
    names). A name is normalised to NFC before it becomes a source, so ``café.md`` sent
    decomposed (NFD, as macOS file names are) and composed is one document, not two; an
    ASCII name is its own NFC, so every name stored before reads as it did. Characters
    that make a name read other than it is (bidi overrides, zero-width characters, other
    controls) or that are no text (surrogates, private use, unassigned code points) stay
    refused."""
    path = PurePosixPath(unicodedata.normalize("NFC", name).replace("\\", "/"))
    problem = _problem(name, path)
    if problem:
        raise InputError(
            f"invalid document name {_shown(name)}: {problem}use a relative path of up to "
            f"{_MAX_PARTS} parts made of letters, marks and digits (of any script), "
            "spaces and _.,()+=@-, each part starting with a letter or digit, at most "
            f"{_PART_CHARS} characters and {_PART_BYTES} bytes in UTF-8"
        )
    return path


# Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt) that are
# letters or marks by category, so the category test alone let them in: the combining
# grapheme joiner, variation selectors, Hangul fillers, Khmer inherent vowels, Mongolian
# free variation selectors. Each shows as nothing: ``a\u034f.md`` looked like ``a.md``
# and was another document, and ``\u3164.md`` showed as ``.md``. (The formatting
# characters of that property, zero-width and bidi ones, are category Cf: refused too.)
_IGNORABLE = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)


def _ignorable(char: str) -> bool:
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in _IGNORABLE)


def _allowed(char: str) -> bool:
    """Whether a part may hold ``char``: a letter, mark or digit of any script that shows
    as something (:data:`_IGNORABLE`), or one of the ASCII punctuation allowed (the space
    the only separator)."""
    if char in _PUNCTUATION:
        return True
    return unicodedata.category(char)[0] in "LMN" and not _ignorable(char)


def _problem(name: str, path: PurePosixPath) -> str:
    """What is wrong with ``name`` (read as ``path``), said, or nothing."""
    said = _not_allowed(name)
    if said:
        return said
    parts = path.parts
    if not parts:
        return "it is empty; "
    if path.is_absolute():
        return "it is an absolute path; "
    if len(parts) > _MAX_PARTS:
        return f"it has {len(parts)} parts; "
    for part in parts:
        if len(part) > _PART_CHARS:
            return f"its part {_shown(part, 60)} has {len(part)} characters; "
        size = len(part.encode("utf-8"))
        if size > _PART_BYTES:
            return f"its part {_shown(part, 60)} is {size} bytes in UTF-8; "
        if unicodedata.category(part[0])[0] not in "LN":
            return f"its part {_shown(part, 60)} does not start with a letter or digit; "
        if not all(_allowed(char) for char in part):  # past what _not_allowed reads
            return f"its part {_shown(part, 60)} holds a character that is not allowed; "
    return ""


def _not_allowed(name: str) -> str:
    """The first character of ``name`` no part may hold, said, or nothing: ``café.md`` was
    refused as not "made of letters", with no word of which character; a bidi override
    or a zero-width space is named, since it cannot be seen in the name as shown."""
    for at, char in enumerate(name[:1000]):
        if not (char in _SEPARATORS or _allowed(char)):
            kind = (
                ", a character that shows as nothing"
                if _ignorable(char)
                else _KINDS.get(unicodedata.category(char)[:2], "")
            )
            return (
                f"the character {char!r} (U+{ord(char):04X}{kind}) at position {at} is not "
                "allowed; "
            )
    return ""


# what a character that is not allowed is, for the few categories a user cannot see
_KINDS = {
    "Cc": ", a control character",
    "Cf": ", an invisible formatting character",
    "Cs": ", a lone surrogate",
    "Co": ", a private-use character",
    "Cn": ", an unassigned code point",
    "Zs": ", a space other than the ASCII space",
    "Zl": ", a line separator",
    "Zp": ", a paragraph separator",
}


_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:)?[\\/]")


def new_name(name: str) -> PurePosixPath:
    """:func:`safe_name` for the name of a document being written, which may not end with
    a slash or have a part that ends with white space either: ``x.md/`` was stored as
    ``x.md`` and ``a.md `` as a plain text document (its suffix read as ``.md ``), each
    answered 201 under a name other than the one sent. Names stored before are still
    read by :func:`safe_name` (:func:`source_of`), which takes them."""
    if _ABSOLUTE.match(name):
        raise InputError(
            f"invalid document name {_shown(name)}: it is an absolute path; send the "
            "name relative to a folder of yours, e.g. 'notes/a.md'"
        )
    if name.endswith(("/", "\\")):
        raise InputError(
            f"invalid document name {_shown(name)}: it ends with a slash; name the file "
            f"itself, e.g. {_shown(name.rstrip('/' + chr(92)) or 'a.md')}"
        )
    for part in re.split(r"[\\/]", name):
        if part != part.strip():
            raise InputError(
                f"invalid document name {_shown(name)}: its part {_shown(part)} starts or "
                f"ends with white space; remove it (e.g. {_shown(part.strip())})"
            )
    return safe_name(name)


def unique_names(names: Sequence[str]) -> None:
    """InputError naming the first document name given twice in one request (or call):
    each name is one document, so the second would be stored over the first.

    Names are compared as :func:`safe_name` reads them, which is what their stored source
    is made of (:func:`source_of`): compared as sent, ``notes/a.md`` and ``notes\\a.md``
    (or ``notes//a.md``, ``./notes/a.md``, or ``café.md`` composed and decomposed) passed
    as two documents, were written one over the other, and both were answered as stored."""
    seen: dict[PurePosixPath, str] = {}
    for name in names:
        key = safe_name(name)
        if key in seen:
            same = "" if seen[key] == name else f" (as {seen[key]!r}: both name {str(key)!r})"
            if same and _nfc(seen[key]) == _nfc(name) and seen[key] != name:
                # the same letters, composed (NFC) once and decomposed (NFD) once: shown
                # alike, so their code points are
                same = (
                    f" (as {seen[key]!a}, written as {name!a}: the same name in "
                    "two Unicode forms, stored as its composed form (NFC))"
                )
            raise InputError(
                f"document name {name!r} appears twice in one request{same}; send it once"
            )
        seen[key] = name


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def source_of(settings: Settings, collection: str, name: str) -> str:
    """The source an upload named ``name`` is stored under (checked with :func:`safe_name`)."""
    return str(upload_root(settings, collection).resolve().joinpath(*safe_name(name).parts))


def exact_source(settings: Settings, collection: str, source: str) -> str | None:
    """The stored source a ``source`` filter names: an absolute path is a source as given,
    a relative one an upload's name (in NFC, as :func:`source_of` stores it). ``None`` for
    a name no upload can have (it names no document). The HTTP route and ``Store`` share
    it, so a name finds the same document on the database as through a server (the CLI's
    local ``documents show PATH`` also resolves a relative path against the working folder
    and follows links, which means nothing on a server)."""
    if source.startswith("/"):
        return source
    try:
        return source_of(settings, collection, source)
    except InputError:
        return None


class StagingArea:
    """Staging files of one request; every one is removed when the area closes."""

    def __init__(self, settings: Settings) -> None:
        self.root = settings.data_dir / "staging"
        self.paths: list[Path] = []
        # the area's lock file (made with its first file), held (flock) while it is open:
        # one descriptor per area, not per file (an upload of up to 1000 files held 1000
        # more descriptors, past a default `ulimit -n` of 1024)
        self._lock_fd: int | None = None
        self._lock_path: Path | None = None
        self._prefix = "upload-"

    @contextmanager
    def room(self) -> Iterator[None]:
        """Writes to the staging folder; its disk full (or a quota reached) is one clear
        error naming the folder, not the OSError that reached the API as a 500 with a
        traceback in the log (the staging file itself is removed when the area closes)."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise folder_failed(exc, f"the upload staging folder {self.root}") from None
            raise DiskFullError(
                f"the disk that holds the upload staging folder {self.root} is full "
                f"({exc.strerror}); free space on it (or set RAGSTORE_DATA_DIR to a folder "
                "on a bigger disk), then retry: nothing of this upload was stored"
            ) from None

    def new_file(self) -> Path:
        """A new, empty file that no other request can be handed."""
        with self.room():
            self.root.mkdir(parents=True, exist_ok=True)
            if self._lock_fd is None:
                self._hold_lock()
            fd, name = tempfile.mkstemp(dir=self.root, prefix=self._prefix)
        os.close(fd)
        path = Path(name)
        self.paths.append(path)
        return path

    def _hold_lock(self) -> None:
        """Make and hold (flock) this area's lock file ``area-<id>.lock``; its files are
        named ``upload-<id>-*``. :func:`sweep` removes an area's files only once no live
        process holds its lock, however long its request or job takes."""
        fd, name = tempfile.mkstemp(dir=self.root, prefix="area-", suffix=LOCK_SUFFIX)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._lock_fd, self._lock_path = fd, Path(name)
        area = Path(name).name[len("area-") : -len(LOCK_SUFFIX)]
        self._prefix = f"upload-{area}-"

    def write(self, content: bytes) -> Path:
        path = self.new_file()
        with self.room():
            path.write_bytes(content)
        return path

    def close(self) -> None:
        """Remove the staging files; one that cannot be removed is logged, not raised: it
        would replace the request's own answer (or error) with a traceback."""
        for path in self.paths:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("could not remove the staging file %s: %s", path, exc.strerror)
        self.paths.clear()
        if self._lock_path is not None:
            self._lock_path.unlink(missing_ok=True)  # its files are gone: nothing to sweep
            self._lock_path = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None


def check_writable(settings: Settings) -> None:
    """:class:`ConfigError` unless a file can be made in the staging folder: a worker's
    check at its start, before it takes any job.

    A worker writes each job's files there before ingesting them. Started where it could
    not (a read-only or full filesystem, a file in the folder's place), it took every
    queued job in turn and failed each for good, dropping the uploaded bytes, while the
    clients had been told 202; it now refuses to start and the jobs wait for a worker
    that can run them."""
    root = settings.data_dir / "staging"
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root, prefix="upload-check-") as probe:
            probe.write(b"x")
            probe.flush()
    except OSError as exc:
        raise ConfigError(
            f"the upload staging folder {root} cannot be written "
            f"({exc.strerror or type(exc).__name__}); a worker writes each job's files "
            "there: make it writable by the worker's user (or set RAGSTORE_DATA_DIR to a "
            "writable folder with free space), then start the worker again; no job was taken"
        ) from None


SWEEP_AFTER_S = 60.0  # a staging file no process holds is left this long before a sweep
LOCK_SUFFIX = ".lock"


def sweep(settings: Settings) -> int:
    """Remove the staging files a process that was killed left (SIGKILL, out of memory,
    the machine gone): those of an area whose lock no live process holds
    (:meth:`StagingArea._hold_lock`), and those of no area at all, once unchanged for
    :data:`SWEEP_AFTER_S` (a file or lock just made is left); how many files. Run by the
    server and each worker as they start and every :data:`SWEEP_AFTER_S` while they run
    (:class:`Sweeper`).

    A request or job removes its files when it ends, whatever its outcome; killed, it
    left them, with the uploaded text, in the data folder for good: also after the
    documents, their job or their collection were deleted."""
    root = settings.data_dir / "staging"
    try:
        locks = list(root.glob(f"area-*{LOCK_SUFFIX}"))
        files = list(root.glob("upload-*"))
    except OSError:
        return 0
    live: set[str] = set()  # the areas whose lock a live process holds (or just made)
    dead: dict[str, Path] = {}  # the areas whose lock no process holds
    for lock in locks:
        area = lock.name[len("area-") : -len(LOCK_SUFFIX)]
        if _abandoned(lock):
            dead[area] = lock
        else:
            live.add(area)
    removed = 0
    for path in files:
        area = path.name[len("upload-") :].rsplit("-", 1)[0] if path.name.count("-") >= 2 else ""
        if area in live:
            continue
        try:
            if area not in dead and time.time() - path.stat().st_mtime < SWEEP_AFTER_S:
                # of no area we know (an older version's, or an area made since the
                # locks were listed): left alone while it may still be in use
                continue
            path.unlink(missing_ok=True)
            removed += 1
        except OSError:
            continue
    for lock in dead.values():
        lock.unlink(missing_ok=True)
    if removed:
        log.warning("removed %d staging file(s) left by a process that was killed", removed)
    return removed


class Sweeper:
    """:func:`sweep` at once, then every :data:`SWEEP_AFTER_S` until :meth:`stop`.

    A sweep at start only left for good the files of a process killed less than
    :data:`SWEEP_AFTER_S` before it (too young then: a supervisor restarts a killed
    server within seconds) and of a worker killed while the server ran: the uploaded
    text stayed in the data folder until some later restart."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ragstore-sweep", daemon=True)

    def start(self) -> None:
        sweep(self._settings)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopped.wait(SWEEP_AFTER_S):
            try:
                sweep(self._settings)
            except Exception:  # a sweep that failed is tried again at the next one
                log.warning("sweeping the staging folder failed", exc_info=True)


def _abandoned(lock: Path) -> bool:
    """Whether no live process holds the area lock file ``lock`` and it is older than
    :data:`SWEEP_AFTER_S` (one just made may not be held yet)."""
    try:
        if time.time() - lock.stat().st_mtime < SWEEP_AFTER_S:
            return False
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # held: a live request's or job's
    finally:
        os.close(fd)
    return True


def folder_failed(exc: OSError, where: str) -> RagstoreError:
    """The server's own folder (``where``) refused a write for a reason other than a full
    disk: one clear 5xx naming the folder, the reason and the fix. It was the bare OSError,
    a 500 with a traceback in the log (or, in the form parser, a 422 that blamed the
    caller's body). A folder the server may not write (permission denied, a read-only
    filesystem) is its configuration (``config_invalid``); no descriptor left to open it
    with (EMFILE/ENFILE) is the server's load (``not_ready``, 503 with Retry-After); any
    other failure (an I/O error) is ``internal_error``."""
    reason = exc.strerror or type(exc).__name__
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        # every descriptor the server may open is in use (idle client connections piling
        # up under load, say): the server is saturated, not its disk broken; answered 503
        # with Retry-After, like a pool with no free connection, not a 500 "check the disk"
        return NotReadyError(
            f"{where} could not be written: the server has too many open files ({reason}; "
            "too many connections at once); retry shortly, or raise its limit (ulimit -n, "
            "LimitNOFILE): nothing of this upload was stored"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ConfigError(
            f"{where} cannot be written ({reason}); make it writable by the server's user "
            "(or set RAGSTORE_DATA_DIR, or TMPDIR for the temporary folder, to a writable "
            "folder), then retry: nothing of this upload was stored"
        )
    return RagstoreError(
        f"{where} could not be written ({reason}); check the disk that holds it (the "
        "system log says more), then retry: nothing of this upload was stored"
    )


@contextmanager
def staging_area(settings: Settings) -> Iterator[StagingArea]:
    area = StagingArea(settings)
    try:
        yield area
    finally:
        area.close()


def source_name(settings: Settings, collection: str, source: str) -> str:
    """The name a client gave for a staged source; other sources are returned unchanged."""
    if settings.data_dir.is_absolute():
        root = _upload_prefix(settings.data_dir, collection)
    else:  # resolved against the working directory, which may change
        root = str(upload_root(settings, collection).resolve()) + os.sep
    return source[len(root) :] if source.startswith(root) else source


@functools.lru_cache(maxsize=1024)
def _upload_prefix(data_dir: Path, collection: str) -> str:
    """The resolved upload root of ``collection``, a separator after it: every search now
    names its hits' uploads (``search.service.name_uploads``), and resolving the root each
    time asked the file system once per document hit."""
    return str((data_dir / "uploads" / collection).resolve()) + os.sep
