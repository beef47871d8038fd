"""Read-your-writes across CLI commands: the last write position per server.

``ragstore.Client`` sends the ``RAGStore-LSN`` of its last write back on later reads, so
a replica serves them only once it has replayed that write. The CLI through
``RAGSTORE_URL`` made a new client per process: ``ragstore ingest`` then ``ragstore
search`` could be served by a replica that had not replayed the ingest yet, and printed
"no results". Each command now starts from the position the last one through the same
server kept, and keeps its own when it is done, in a small per-user file
(``$XDG_CACHE_HOME/ragstore/client/positions.json``, else ``~/.cache/...``).

The file is a cache: losing it, or finding it unreadable, costs at most a read of the
last moments' writes, so no command fails over it (a debug log says why it was passed
over). It is keyed by the server's URL without its user name, password, query or
fragment (no secret is written), holds at most :data:`MAX_SERVERS` servers (the oldest
dropped) and forgets a position after :data:`KEEP_S` (the largest
``RAGSTORE_MAX_REPLICA_LAG_S``: any replica a server reads from has replayed a write that
old). A position only moves forward (LSNs compared as numbers, as the client does), so
commands that end out of order never step it back; but a write of this command answered
below the position it started from means the server's database is another cluster now
(positions start low again), and its position replaces the old one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from ragstore.client import Client, _lsn_value
from ragstore.wire import LSN_HEADER

log = logging.getLogger(__name__)

MAX_SERVERS = 32
KEEP_S = 86400.0  # RAGSTORE_MAX_REPLICA_LAG_S is at most a day
ON_PRIMARY = "primary"  # a write whose position the server could not read (ragstore.db.lsn)
_VERSION = 1
_DEFAULT_PORTS = {"http": 80, "https": 443}


def state_dir() -> Path:
    """The folder of the file: ``$XDG_CACHE_HOME/ragstore/client``, else
    ``~/.cache/ragstore/client``."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "ragstore" / "client"


def state_file() -> Path:
    return state_dir() / "positions.json"


def server_key(url: str) -> str:
    """``url`` as the file's key: scheme and host in lower case, the default port left
    out, no trailing slash, and without its user name, password (a key written there),
    query or fragment, which are never stored."""
    u = httpx.URL(url.strip())
    scheme, host = u.scheme.lower(), u.host.lower()
    if ":" in host:  # IPv6
        host = f"[{host}]"
    port = "" if u.port in (None, _DEFAULT_PORTS.get(scheme)) else f":{u.port}"
    return f"{scheme}://{host}{port}{u.path.rstrip('/')}"


# what keeping a position can meet: the file system (a folder of another user, a full
# disk, no lock), a file or URL that does not read; each passed over as a debug log, as a
# cache's failure never fails a command; anything else is a bug and surfaces
_CACHE_ERRORS = (OSError, ValueError, httpx.InvalidURL)


def _is_position(value: object) -> bool:
    return isinstance(value, str) and (
        value.strip().lower() == ON_PRIMARY or _lsn_value(value) is not None
    )


def _read(path: Path) -> dict[str, dict[str, Any]]:
    """The file's entries still kept; empty (with a debug log) when it is missing,
    unreadable or not what this module writes. Entries that are not a position with its
    time are left out one by one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.debug("read-your-writes positions %s passed over: %s", path, exc)
        return {}
    servers = data.get("servers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        log.debug("read-your-writes positions %s passed over: not a positions file", path)
        return {}
    oldest = time.time() - KEEP_S
    kept: dict[str, dict[str, Any]] = {}
    for key, entry in servers.items():
        if not isinstance(entry, dict) or not _is_position(entry.get("lsn")):
            continue
        at = entry.get("at")
        if isinstance(at, (int, float)) and not isinstance(at, bool) and at >= oldest:
            kept[str(key)] = {"lsn": entry["lsn"], "at": float(at)}
    return kept


def load(url: str) -> str | None:
    """The position the last command through ``url`` kept, or None."""
    try:
        entry = _read(state_file()).get(server_key(url))
    except _CACHE_ERRORS as exc:  # a cache: never a command's failure
        log.debug("read-your-writes position for %s not read: %s", url, exc)
        return None
    return None if entry is None else str(entry["lsn"])


def _merged(current: str | None, new: str, loaded: str | None, replace: bool) -> str | None:
    """What the file should hold after a command that started from ``loaded`` ended
    holding ``new``, while the file holds ``current``; None: leave it.

    ``primary`` (a write of unknown position) wins: reads then go to the primary until a
    later write answers a position. A position replaces ``primary`` only when this
    command started from that very ``primary`` (a later command's would be lost), and
    another position only when it is further on, unless ``replace`` (another cluster)."""
    if new.strip().lower() == ON_PRIMARY:
        return None if current == new else new
    if current is None or replace:
        return new
    if current.strip().lower() == ON_PRIMARY:
        return new if current == loaded else None
    held, mine = _lsn_value(current), _lsn_value(new)
    return new if held is None or (mine is not None and mine > held) else None


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One command at a time reads, merges and writes the file (another server's entry
    written at the same moment is not lost)."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: the atomic replace alone
        yield
        return
    fd = os.open(folder / "positions.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _folder() -> Path:
    """The state folder, made 0700 (and made so again if it was opened up), ours."""
    folder = state_dir()
    folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.mkdir(mode=0o700, exist_ok=True)
    st = folder.stat()
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise OSError(f"{folder} belongs to another user")
    if stat.S_IMODE(st.st_mode) & 0o077:
        folder.chmod(0o700)
    return folder


def save(url: str, position: str, *, loaded: str | None = None, replace: bool = False) -> None:
    """Keep ``position`` for ``url`` (see :func:`_merged`), written atomically into a
    0600 file; any failure is a debug log."""
    try:
        key = server_key(url)
        folder = _folder()
        with _locked(folder):
            path = folder / "positions.json"
            servers = _read(path)
            current = servers.get(key, {}).get("lsn")
            value = _merged(current, position, loaded, replace)
            if value is None:
                return
            servers[key] = {"lsn": value, "at": time.time()}
            newest = sorted(servers.items(), key=lambda kv: kv[1]["at"], reverse=True)
            body = json.dumps({"version": _VERSION, "servers": dict(newest[:MAX_SERVERS])})
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".positions-", suffix=".tmp")
            replaced = False
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(body)
                os.replace(tmp, path)
                replaced = True
            finally:  # a write cut short leaves no temporary file behind
                if not replaced:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
    except _CACHE_ERRORS as exc:  # a cache: never a command's failure
        log.debug("read-your-writes position for %s not kept: %s", url, exc)


class PositionKeepingClient(Client):
    """A :class:`~ragstore.client.Client` for one CLI command: it starts from the
    position the last command through the same server kept and, closed, keeps its own."""

    def __init__(self, base_url: str, **options: Any) -> None:
        super().__init__(base_url, **options)
        self._server = base_url
        self._loaded = load(base_url)
        if self._loaded:
            self.last_lsn = self._loaded
        self._answered: tuple[int, str] | None = None  # the furthest position answered

    def _note_lsn(self, response: httpx.Response, sent: int) -> None:
        super()._note_lsn(response, sent)
        written = response.headers.get(LSN_HEADER) or ""
        value = _lsn_value(written)
        if value is not None and (self._answered is None or value > self._answered[0]):
            self._answered = (value, written)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._keep()

    def _keep(self) -> None:
        held = self.last_lsn
        started = _lsn_value(self._loaded) if self._loaded else None
        if held and held.strip().lower() == ON_PRIMARY:
            if held != self._loaded:
                save(self._server, held, loaded=self._loaded)
        elif started is not None and self._answered and self._answered[0] < started:
            # this command's writes answered below where it started: another cluster
            save(self._server, self._answered[1], loaded=self._loaded, replace=True)
        elif held and held != self._loaded:
            save(self._server, held, loaded=self._loaded)
