"""The private files an upload's bytes wait in before ingest reads them.

The bytes of each uploaded document are streamed to a staging file unique to the request
(``<data dir>/staging``), read from there by ingest and removed when the request (or the
background job) is done, whatever its outcome, so concurrent uploads of one name never
share a file and failed uploads leave nothing behind. Where such a document is then
stored is :mod:`ragstore.uploads.names`'.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from ragstore.config import Settings
from ragstore.errors import (
    ConfigError,
    DiskFullError,
    NotReadyError,
    RagstoreError,
)

log = logging.getLogger(__name__)


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
        with suppress(OSError):  # a folder we may not write: the next sweep tries again
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
            sweep(self._settings)


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
