"""No other user of the machine reaches the embedded server.

The package's initdb trusts every local connection, so whoever can open the server's socket
is its superuser. The socket must be closed to other users wherever it lies: in the data
directory's folder, or in the shared runtime folder the package picks (and opens to all)
when the data directory's path is too long for a socket; nor can it swap that socket for
its own; and a server an older ragstore started open to all is closed when ragstore joins
it. Checked by connecting as ``nobody`` (root only: CI runs as root)."""

from __future__ import annotations

import contextlib
import os
import pwd
import socket as sock
import stat
import threading
from pathlib import Path

import psycopg
import pytest

from ragstore.db import embedded

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")


def nobody_can_open(socket: Path) -> bool:
    """Whether the user ``nobody`` can connect to the Unix socket ``socket``: on a server
    that trusts local connections, being able to connect is being its superuser. A forked
    child drops to ``nobody`` and tries (no new program runs: CI's virtual environment is
    in a folder ``nobody`` cannot read)."""
    nobody = pwd.getpwnam("nobody")
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 2
        try:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            with sock.socket(sock.AF_UNIX, sock.SOCK_STREAM) as s:
                s.connect(str(socket))
            code = 0
        except PermissionError:
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, 3), f"the check as nobody failed ({code})"
    return code == 0


def nobody_can_move(socket: Path) -> bool:
    """Whether ``nobody`` can rename the socket ``socket`` (and so put its own listener
    in its place, to be connected to as the server); a child that could moves it back."""
    nobody = pwd.getpwnam("nobody")
    aside = socket.with_name(socket.name + ".aside")
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 2
        try:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            os.rename(socket, aside)
            os.rename(aside, socket)
            code = 0
        except PermissionError:
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if aside.exists():
        os.rename(aside, socket)
    assert code in (0, 3), f"the check as nobody failed ({code})"
    return code == 0


def _socket(data_dir: Path) -> Path:
    lines = (data_dir / "pg" / "postmaster.pid").read_text().splitlines()
    return Path(lines[4]) / f".s.PGSQL.{lines[3]}"


@pytest.mark.parametrize("long_path", [False, True], ids=["in-data-dir", "in-runtime-dir"])
def test_another_user_cannot_connect_to_the_embedded_server(
    tmp_path: Path, long_path: bool
) -> None:
    data_dir = tmp_path / ("d" * 100 if long_path else "d") / "data"
    uri = embedded.start(data_dir)
    try:
        socket = _socket(data_dir)
        assert (socket.parent == data_dir / "pg") is not long_path, socket
        with psycopg.connect(uri) as conn:  # this process still connects
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert stat.S_IMODE(socket.stat().st_mode) & 0o007 == 0, oct(socket.stat().st_mode)
        assert not nobody_can_open(socket)
        # nor can it swap the socket for its own (ragstore would then talk to that one)
        assert not nobody_can_move(socket)
        assert stat.S_IMODE(socket.parent.stat().st_mode) & 0o022 == 0, socket.parent
    finally:
        embedded.stop(data_dir)
        embedded.release(data_dir)


def test_a_server_started_open_to_all_is_closed_when_ragstore_joins_it(tmp_path: Path) -> None:
    data_dir = tmp_path / ("d" * 100) / "data"
    embedded.start(data_dir)
    try:
        socket = _socket(data_dir)
        os.chmod(socket, 0o777)  # what PostgreSQL's default made of it before
        os.chmod(socket.parent, 0o777)  # and the package of its folder
        assert nobody_can_open(socket)  # in the shared runtime folder: open to all
        assert nobody_can_move(socket)
        uri = embedded.start(data_dir)  # another ragstore process joins the running server
        assert stat.S_IMODE(socket.stat().st_mode) & 0o007 == 0
        assert not nobody_can_open(socket)
        assert not nobody_can_move(socket)
        with psycopg.connect(uri) as conn:  # and this process still connects
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        embedded.stop(data_dir)
        embedded.release(data_dir)


def test_the_socket_folder_is_never_open_to_all_while_the_server_starts(tmp_path: Path) -> None:
    """The package opens the runtime socket folder to all (0777, no sticky bit) before it
    starts the server, and ragstore made it private only once the server was up: for the
    whole start, any user could put its own socket in the folder, to be connected to as
    the database. The folder is the server user's own (0700) from before the start."""
    data_dir = tmp_path / ("d" * 100) / "data"
    embedded.start(data_dir)
    folder = _socket(data_dir).parent
    embedded.stop(data_dir)
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            with contextlib.suppress(FileNotFoundError):  # between two starts
                seen.add(stat.S_IMODE(folder.stat().st_mode))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        embedded.start(data_dir)
        assert _socket(data_dir).parent == folder
    finally:
        done.set()
        watcher.join()
        embedded.stop(data_dir)
        embedded.release(data_dir)
    assert seen and all(mode & 0o022 == 0 for mode in seen), sorted(map(oct, seen))
