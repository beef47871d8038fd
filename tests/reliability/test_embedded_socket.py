"""No other user of the machine reaches the embedded server.

The package's initdb trusts every local connection, so whoever can open the server's socket
is its superuser. The socket must be closed to other users wherever it lies: in the data
directory's folder, or in the shared runtime folder the package picks (and opens to all)
when the data directory's path is too long for a socket; and a server an older ragstore
started open to all is closed when ragstore joins it. Checked by connecting as ``nobody``
(root only: CI runs as root)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from ragstore.db import embedded

_CONNECT = (
    "import sys, psycopg\n"
    "try:\n"
    "    psycopg.connect(sys.argv[1], connect_timeout=5).close()\n"
    "except psycopg.OperationalError as exc:\n"
    "    print('REFUSED', exc); sys.exit(3)\n"
    "print('CONNECTED')\n"
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("su") is None,
    reason="connecting as another user needs root",
)


def _as_nobody(uri: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["su", "nobody", "-s", "/bin/sh", "-c", '"$0" -c "$1" "$2"', sys.executable, _CONNECT, uri],
        capture_output=True,
        text=True,
        timeout=60,
    )


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
        # a user who can reach the folder would still be refused by the socket itself
        os.chmod(tmp_path, 0o755)
        refused = _as_nobody(uri)
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert "Permission denied" in refused.stdout, refused.stdout
    finally:
        embedded.stop(data_dir)
        embedded.release(data_dir)


def test_a_server_started_open_to_all_is_closed_when_ragstore_joins_it(tmp_path: Path) -> None:
    data_dir = tmp_path / ("d" * 100) / "data"
    embedded.start(data_dir)
    try:
        socket = _socket(data_dir)
        os.chmod(socket, 0o777)  # what PostgreSQL's default made of it before
        uri = embedded.start(data_dir)  # another ragstore process joins the running server
        assert stat.S_IMODE(socket.stat().st_mode) & 0o007 == 0
        assert _as_nobody(uri).returncode == 3
    finally:
        embedded.stop(data_dir)
        embedded.release(data_dir)
