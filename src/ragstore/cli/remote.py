"""The CLI through a running server: with ``RAGSTORE_URL`` set, search and ingest are sent
to it, so a command pays one HTTP round trip instead of loading the model itself."""

from __future__ import annotations

import re
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from ragstore._requests import StreamedFile
    from ragstore.client import Client
    from ragstore.config import Settings
    from ragstore.errors import RagstoreError


def remote_client(settings: Settings) -> Client | None:
    """An HTTP client for ``RAGSTORE_URL``, or None when the CLI works on the database.

    It retries as ``RAGSTORE_CLIENT_RETRIES`` and ``RAGSTORE_CLIENT_MAX_RETRY_WAIT_S`` say:
    the CLI always used the client's defaults (3 retries within 30 s), so a script that
    wanted a failure at once (its own retry loop, a health check) waited through them,
    and one that wanted to ride out a longer restart could not.

    It reads its own writes across commands: a command starts from the write position
    the last one through the same server kept, and keeps its own
    (:mod:`ragstore.cli.positions`): ``ragstore search`` right after ``ragstore ingest``
    was served by a replica that had not replayed the ingest yet, and found nothing."""
    if not settings.url:
        return None
    from ragstore.cli.positions import PositionKeepingClient

    key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    return PositionKeepingClient(
        settings.url,
        api_key=key or None,
        retries=settings.client_retries,
        max_retry_wait=settings.client_max_retry_wait_s,
    )


def refuse_remote(command: str, hint: str = "") -> None:
    """ConfigError when ``RAGSTORE_URL`` is set, for ``ragstore COMMAND`` that works on the
    database itself (its schema, backups, keys, pinned models, an import, a scratch
    collection...): the CLI then sends search, ingest, collections and documents to that
    server, so the user means the server's data, while this command would open whatever
    database this machine's settings name (often a fresh embedded one, initialised for
    the occasion) and report success on it. Called before anything opens a database, so
    that a refusal leaves nothing behind. ``hint`` is appended to the message (e.g. the
    HTTP route that does the same thing)."""
    from ragstore.errors import ConfigError
    from ragstore.profiles import get_settings
    from ragstore.urls import shown_url

    url = get_settings().url
    if url:
        raise ConfigError(
            f"`ragstore {command}` works on the database itself, not through a server, and "
            f"RAGSTORE_URL is set ({shown_url(url)}); run it where the server's database is "
            "reachable, with RAGSTORE_DATABASE_URL (or RAGSTORE_DATA_DIR) naming it and "
            f"RAGSTORE_URL unset, e.g. `RAGSTORE_URL= ragstore {command} ...`{hint}"
        )


# Uploads are sent in requests of at most this many files / bytes, below the server's
# default RAGSTORE_BACKGROUND_INGEST_BYTES, so that they are ingested during the request.
BATCH_FILES = 64
BATCH_BYTES = 200 * 1024
JOB_TIMEOUT_S = 600.0


@dataclass
class RemoteIngest:
    """What an ingest through the server did: counts per status and each failure."""

    collection: str
    server: str
    counts: dict[str, int] = field(default_factory=dict)
    failed: list[dict[str, str | None]] = field(default_factory=list)
    skipped: list[dict[str, str | None]] = field(default_factory=list)  # links not followed
    # jobs the server accepted (202) whose end was not seen: their files are counted
    # "queued", neither stored nor failed (:func:`_record_job`)
    unfinished_jobs: list[int] = field(default_factory=list)
    # an upload was sent again after a send of it got no answer: files that send stored
    # are counted "unchanged" by the answer to the next (``ragstore._requests.RESENT``)
    resent: bool = False
    seconds: float = 0.0

    def add(self, status: str, n: int = 1) -> None:
        self.counts[status] = self.counts.get(status, 0) + n

    def fail(self, name: str, code: str | None, detail: str | None) -> None:
        self.failed.append({"document": name, "code": code, "detail": detail})
        self.add("failed")


class RemoteInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped an ingest through the server: ``result`` counts what the
    server acknowledged; the request in flight may have been stored too (the server goes
    on with a request whose client left). ``total`` is the number of inputs."""

    def __init__(self, result: RemoteIngest, total: int) -> None:
        super().__init__(f"ingest into {result.collection!r} through the server interrupted")
        self.result = result
        self.total = total


class RemoteFailed(Exception):
    """A :class:`~ragstore.errors.RagstoreError` (the server gone, a key refused, rate
    limited...) stopped an ingest through the server after it had acknowledged some of
    it: ``result`` counts that, ``error`` is the error and ``total`` the number of inputs.
    The error alone said nothing of what the server had already stored."""

    def __init__(self, result: RemoteIngest, error: RagstoreError, total: int) -> None:
        super().__init__(error.message)
        self.result = result
        self.error = error
        self.total = total


def upload_names(paths: list[Path], files: list[Path]) -> dict[Path, str]:
    """The name each file is uploaded under: a folder's files keep their path below the
    folder (prefixed with its name), a file named directly its base name. A path that
    cannot be looked at is no folder here (``Path.is_dir()`` raised on it: discover)."""
    from ragstore.files import stat_mode

    names: dict[Path, str] = {}
    roots = [p.resolve() for p in paths if stat.S_ISDIR(stat_mode(p))]
    for f in files:
        root = next((r for r in roots if f.is_relative_to(r)), None)
        names[f] = (
            PurePosixPath(root.name, *f.relative_to(root).parts).as_posix()
            if root is not None
            else f.name
        )
    return names


def _without_name_clashes(
    files: list[Path], names: dict[Path, str], result: RemoteIngest
) -> list[Path]:
    """``files`` less those that share their upload name with another file, each of which
    fails: the server keeps one document per name, so ``ingest x/a.md y/a.md`` (or two
    folders of one name) stored the second over the first and said "1 added, 1 updated"
    where a local ingest stores both."""
    from ragstore.errors import InputError

    by_name: dict[str, list[Path]] = {}
    for f in files:
        by_name.setdefault(names[f], []).append(f)
    clashing = {f for same in by_name.values() if len(same) > 1 for f in same}
    for f in files:
        if f in clashing:
            others = [str(o) for o in by_name[names[f]] if o != f]
            err = InputError(
                f"{f}: would be uploaded as {names[f]!r}, as {', '.join(others)} would, and "
                "the server keeps one document per name; ingest the folders that hold them "
                "(ragstore ingest DIR1 DIR2) so that each keeps its folder in its name"
            )
            result.fail(str(f), err.code, err.message)
    return [f for f in files if f not in clashing]


def _batches(files: list[Path]) -> Iterator[list[Path]]:
    batch: list[Path] = []
    size = 0
    for f in files:
        try:
            n = f.stat().st_size
        except OSError:
            n = 0  # gone or unreadable since the walk: its read fails it (_read_batch)
        if batch and (len(batch) >= BATCH_FILES or size + n > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(f)
        size += n
    if batch:
        yield batch


def _read_batch(
    batch: list[Path], names: dict[Path, str], result: RemoteIngest
) -> list[tuple[str, StreamedFile]]:
    """The batch's files as (upload name, file sent as it is read). A file that cannot be
    read (permissions, an I/O error, removed since the folder was walked) fails alone, as
    in a local ingest: the error ended the whole run with a traceback, and with it the
    count of what the server had already stored.

    Each file is streamed into its request (:class:`~ragstore._requests.StreamedFile`), as
    the Python client's uploads are: read whole first, a batch (and one huge file is a
    batch of its own) took its size in memory, more while the body was built."""
    from ragstore._requests import StreamedFile
    from ragstore.errors import DecodeError, FileUnreadableError
    from ragstore.files import printable

    parts: list[tuple[str, StreamedFile]] = []
    for f in batch:
        try:  # a name of bytes that are not UTF-8 fails alone, as in a local ingest:
            names[f].encode("utf-8")  # httpx's multipart encoder raised a traceback
        except UnicodeEncodeError:
            shown = printable(str(f))
            bad_name = DecodeError(
                f"{shown}: the file name is not valid UTF-8, which ragstore cannot store; "
                "rename the file (e.g. convmv -f latin1 -t utf-8 --notest FILE)"
            )
            result.fail(shown, bad_name.code, bad_name.message)
            continue
        try:  # opened and read from here, closed: unreadable now, it fails alone
            parts.append((names[f], StreamedFile(f)))
        except FileUnreadableError as err:
            result.fail(str(f), err.code, err.message)
    return parts


def _ensure_collection(client: Client, name: str) -> None:
    from ragstore.errors import CollectionNotFoundError

    try:
        client.get_collection(name)
    except CollectionNotFoundError:
        client.create_collection(name)  # as a local ingest does: created with the default


def _record(result: RemoteIngest, client: Client, answer: dict[str, Any]) -> None:
    """Count an upload's answer: its documents, and its jobs once they are done (an
    upload sent in several requests has one job per request answered 202, under
    ``jobs``, beside the documents the others stored: they went uncounted)."""
    if answer.get("resent"):
        result.resent = True
    if "data" in answer:
        for doc in answer["data"]:
            result.add(str(doc.get("status") or "added"))
        for job in answer.get("jobs") or []:
            _record_job(result, client, job)
        return
    _record_job(result, client, answer)


def _record_job(result: RemoteIngest, client: Client, answer: dict[str, Any]) -> None:
    """Wait for a job the server accepted and count what it did.

    A job still queued or running after :data:`JOB_TIMEOUT_S` (no ``ragstore worker``
    running, a slow one) ended the ingest with a ``TimeoutError`` traceback, and so did
    an error while it was being waited for (the server restarting): neither what the
    earlier requests had stored nor the job's own files were said, though the server
    holds those and its worker stores them. They are counted ``queued`` now, the job
    named (``unfinished_jobs``); a timeout lets the run go on, an error still stops it
    (:class:`RemoteFailed`, which says them)."""
    from ragstore.errors import RagstoreError

    job_id = int(answer["id"])
    try:
        job = client.wait_for_job(job_id, timeout=JOB_TIMEOUT_S)
    except TimeoutError:
        _unfinished(result, job_id, answer)
        return
    except RagstoreError:
        _unfinished(result, job_id, answer)
        raise
    for key in ("added", "updated", "unchanged"):
        result.add(key, int(job["summary"].get(key, 0)))
    if job["summary"].get("superseded"):  # left for a later write (jobs/runner.py)
        result.add("superseded", int(job["summary"]["superseded"]))
    for e in job["errors"]:
        result.fail(e.get("document") or "(job)", e.get("code"), e.get("detail"))


def _unfinished(result: RemoteIngest, job_id: int, answer: dict[str, Any]) -> None:
    """Count the files of job ``job_id`` (its 202 ``answer``) as queued, not seen done."""
    result.add("queued", int(answer.get("total_documents") or 0))
    result.unfinished_jobs.append(job_id)


def ingest_remote(
    client: Client,
    server: str,
    paths: list[Path],
    collection: str,
    metadata: dict[str, Any],
    update: Callable[[int, int | None, str], None],
) -> RemoteIngest:
    """Upload ``paths`` (files and folders) to the server, a batch per request; a batch
    the server refuses is retried file by file so that each failure names its file."""
    from ragstore.errors import RagstoreError
    from ragstore.files import (
        LINK_OUTSIDE_FOLDER,
        discover,
        link_outside_detail,
        not_ingestible,
        unlisted_error,
    )
    from ragstore.interrupts import deferred

    start = time.monotonic()
    files, missing, outside, unlisted, passed = discover(paths)
    result = RemoteIngest(collection, server)
    for folder, exc in unlisted:  # none of its files is uploaded: said, as locally
        why = unlisted_error(folder, exc)
        result.fail(str(folder), why.code, why.message)
    for m in missing:  # as a local ingest says it: missing, a broken link, a pipe...
        err = not_ingestible(m, str(m))
        result.fail(str(m), err.code, err.message)
    for link, target in outside:  # never uploaded: a file from elsewhere on this machine
        result.skipped.append(
            {
                "document": str(link),
                "code": LINK_OUTSIDE_FOLDER,
                "detail": link_outside_detail(str(link), str(target), "upload"),
            }
        )
        result.add("skipped")
    for entry in passed:  # a pipe, device or broken link in a folder: not uploaded, said
        reason = not_ingestible(entry, str(entry))
        result.skipped.append(
            {"document": str(entry), "code": reason.code, "detail": reason.message}
        )
        result.add("skipped")
    names = upload_names(paths, files)
    total = len(files) + len(missing)
    files = _without_name_clashes(files, names, result)
    done = 0
    batch: list[Path] = []
    try:
        if files:
            _ensure_collection(client, collection)
        for batch in _batches(files):
            with deferred():  # an interrupt between open and close would leave a file open
                parts = _read_batch(batch, names, result)
            if parts:
                _send(client, collection, parts, metadata, result)
            done += len(batch)
            update(done, len(files), f"{result.counts.get('failed', 0)} failed")
    except KeyboardInterrupt as exc:
        result.seconds = time.monotonic() - start
        raise RemoteInterrupted(result, total) from exc
    except RagstoreError as exc:
        if not result.counts:  # nothing done or refused yet: the error says it all
            raise
        unsent = len(files) - done - len(batch)  # the batches after the one that failed
        if unsent > 0:
            result.add("not_attempted", unsent)
        result.seconds = time.monotonic() - start
        raise RemoteFailed(result, exc, total) from exc
    result.seconds = time.monotonic() - start
    return result


def _fail_file(result: RemoteIngest, name: str, exc: RagstoreError) -> None:
    """A file the server refused, its detail naming it (a 413's message does not), with
    control characters of the name escaped so that the failure stays one line."""
    if name in exc.message:
        detail = exc.message
    else:
        shown = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", name)
        detail = f"{shown}: {exc.message}"
    result.fail(name, exc.code, detail)


def _send(
    client: Client,
    collection: str,
    parts: list[tuple[str, StreamedFile]],
    metadata: dict[str, Any],
    result: RemoteIngest,
) -> None:
    """Upload one batch. When some of its files fail, the server's problem lists what it
    stored and what failed; a server that does not (before those lists) is sent the
    batch again file by file so that each failure names its file.

    A batch over the server's RAGSTORE_MAX_UPLOAD_BYTES (413 request_too_large) is sent
    again file by file too, and a file over it alone fails alone, as a file over
    RAGSTORE_MAX_FILE_BYTES does in a local ingest: the 413 ended the whole ingest, the
    files after it never sent and what the server had stored not counted."""
    from ragstore.errors import InputError, RagstoreError, RequestTooLargeError

    refused = (InputError, RequestTooLargeError)
    try:
        # a StreamedFile where Client.upload's type says bytes: upload_plan takes both
        _record(result, client, client.upload(collection, cast(Any, parts), metadata=metadata))
    except RagstoreError as exc:
        # the files' fates, whatever the error (``Client.upload`` sends a batch over the
        # server's limit in several requests, and says so of every file when one of them
        # fails outright): counted before the error stops the ingest, they were not
        problem = getattr(exc, "problem", None) or exc.problem_members
        if isinstance(problem.get("stored"), list) and isinstance(problem.get("failed"), list):
            _record(result, client, {"data": problem["stored"], "jobs": problem.get("jobs")})
            # the server stopped at an error that fails every write (its disk full): the
            # files it did not attempt are counted, not listed one failure line each
            unattempted = problem.get("not_attempted")
            skip = set(unattempted) if isinstance(unattempted, list) else set()
            for f in problem["failed"]:
                if f.get("name") in skip:
                    result.add("not_attempted")
                else:
                    result.fail(str(f.get("name")), f.get("code"), f.get("detail"))
            if "not_sent" in problem or "unknown" in problem or skip:
                raise  # stopped part way: the run stops, saying what it had done
            return
        if not isinstance(exc, refused):
            raise
        if len(parts) == 1:  # already its own request: sending it again tells nothing new
            _fail_file(result, parts[0][0], exc)
            return
        for part in parts:
            try:
                answer = client.upload(collection, cast(Any, [part]), metadata=metadata)
                _record(result, client, answer)
            except refused as exc:
                _fail_file(result, part[0], exc)
