"""The first ragstore command on a new data directory, killed while PostgreSQL makes the
embedded server's folder (initdb): the next command works.

initdb writes ``PG_VERSION`` early, and the package took a folder holding it for a made
one: a first command killed in that second or two (a process-group kill, a container
stopped, a power cut) left a ``pg/`` that never started again, and every later command
exited 69 blaming the disk until ``pg/`` was deleted by hand.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ragstore.db import embedded
from ragstore.errors import DatabaseUnavailableError


def _ragstore() -> list[str]:
    return [sys.executable, "-c", "from ragstore.cli import main; main()", "db", "status"]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGSTORE_")}
    return {**env, "RAGSTORE_DATA_DIR": str(data_dir), "PYTHONWARNINGS": "ignore"}


@pytest.mark.parametrize("at", ["PG_VERSION", "global/pg_control"])
def test_a_first_start_killed_during_initdb_leaves_a_data_dir_the_next_one_starts(
    tmp_path: Path, at: str
) -> None:
    """Killed once initdb wrote ``PG_VERSION``, and once in its single-user bootstrap
    (``global/pg_control``: a ``postmaster.pid`` with a negative pid was left)."""
    data_dir = tmp_path / "data"
    log = tmp_path / "first.log"
    with log.open("wb") as out:
        first = subprocess.Popen(
            _ragstore(),
            env=_env(data_dir),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # wherever initdb works (pg/ in place, or a folder beside it): polled, the moment
        # lasts a fraction of a second
        while not list(data_dir.glob(f"pg*/{at}")):
            assert first.poll() is None, log.read_text()[-3000:]
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        assert first.returncode == -signal.SIGKILL, log.read_text()[-3000:]
        done = subprocess.run(
            _ragstore(), env=_env(data_dir), capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert "collation: C" in done.stdout  # the new server's, in byte order
        assert sorted(p.name for p in data_dir.glob("pg*")) == ["pg"]  # the cut-short one swept
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        embedded.stop(data_dir)


def test_a_half_made_folder_of_an_older_ragstore_is_named_with_what_to_do(
    tmp_path: Path,
) -> None:
    """A ``pg/`` an older ragstore's cut-short initdb left (``PG_VERSION``, no
    ``global/pg_control``) is not touched, and the error says what it is."""
    pg = tmp_path / "data" / "pg"
    (pg / "global").mkdir(parents=True, mode=0o700)
    (pg / "PG_VERSION").write_text("18\n")
    with pytest.raises(DatabaseUnavailableError) as raised:
        embedded.start(tmp_path / "data")
    assert "looks half-made" in str(raised.value), raised.value
    assert f"delete {pg} and run the command again" in str(raised.value)
    assert (pg / "PG_VERSION").exists()  # left as it was
